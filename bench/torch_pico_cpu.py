"""PyTorch CPU baseline for pico: training and inference images/s.

Uses the reference model (tests/reference/nalaformer_ref.py), random data,
1x28x28 inputs, 10 classes. Training step = forward, cross-entropy, backward,
AdamW step. Inference = eval-mode forward under no_grad.

    python3 bench/torch_pico_cpu.py [--threads 2] [--batch 128] [--warmup 3] [--iters 10]

Output, one parseable line per mode:
    torch pico train threads=2 batch=128 img/s=123.4 ms/iter=...
    torch pico infer threads=2 batch=128 img/s=456.7 ms/iter=...
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import nalaformer_ref as ref  # noqa: E402


def time_loop(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--modes", default="train,infer")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ref.build("pico")
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    def infer_step():
        with torch.no_grad():
            model(x)

    for mode in args.modes.split(","):
        if mode == "train":
            model.train()
            dt = time_loop(train_step, args.warmup, args.iters)
        elif mode == "infer":
            model.eval()
            dt = time_loop(infer_step, args.warmup, args.iters)
        else:
            raise SystemExit(f"torch_pico_cpu: unknown mode {mode!r}")
        print(f"torch pico {mode} threads={args.threads} batch={args.batch} "
              f"img/s={args.batch / dt:.1f} ms/iter={dt * 1e3:.2f}", flush=True)


if __name__ == "__main__":
    main()
