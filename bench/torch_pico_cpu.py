"""PyTorch CPU baseline for pico (or another config): training and inference images/s.

Uses the reference model (tests/reference/nalaformer_ref.py), random data;
pico takes 1x28x28 inputs of 10 classes, the ImageNet configs (xt, t, ...)
3x224x224 of 1000. Training step = forward, cross-entropy, backward, AdamW
step. Inference = eval-mode forward under no_grad.

    python3 bench/torch_pico_cpu.py [--threads 2] [--batch 128] [--warmup 3] [--iters 10]
                                    [--model pico] [--img 28] [--modes train,infer]

Output, one parseable line per mode (ms/iter the mean, ms_median the median
of the timed iterations: the latency of one call):
    torch pico train threads=2 batch=128 img=28 img/s=123.4 ms/iter=... ms_median=...
    torch pico infer threads=2 batch=128 img=28 img/s=456.7 ms/iter=... ms_median=...
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
    """(mean, median) seconds per call over `iters` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return sum(times) / iters, times[iters // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--model", default="pico")
    ap.add_argument("--img", type=int, default=0, help="image size (default: the config's, 28 or 224)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ref.build(args.model, img_size=args.img or None)
    img = args.img or (28 if args.model == "pico" else 224)
    chans, classes = (1, 10) if args.model == "pico" else (3, 1000)
    x = torch.randn(args.batch, chans, img, img)
    y = torch.randint(0, classes, (args.batch,))
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
            dt, med = time_loop(train_step, args.warmup, args.iters)
        elif mode == "infer":
            model.eval()
            dt, med = time_loop(infer_step, args.warmup, args.iters)
        else:
            raise SystemExit(f"torch_pico_cpu: unknown mode {mode!r}")
        print(f"torch {args.model} {mode} threads={args.threads} batch={args.batch} img={img} "
              f"img/s={args.batch / dt:.1f} ms/iter={dt * 1e3:.2f} ms_median={med * 1e3:.2f}", flush=True)


if __name__ == "__main__":
    main()
