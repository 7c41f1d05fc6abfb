"""PyTorch DistributedDataParallel baseline for bench/bench_scaling: the same
training step (reference NaLaFormer of tests/reference/nalaformer_ref.py,
random images, cross-entropy, AdamW, fp32, TF32 off) on 1..N GPUs, one
process per GPU, NCCL, 25 MiB buckets (DDP's default, as nala's).

    python3 bench/torch_ddp.py --gpus 2 [--model t] [--img 224] [--batch 128] [--iters 10]

Prints one line, e.g.
    torch t ddp gpus=2 batch/gpu=128 img=224 img/s=1100.0 img/s/gpu=550.0 ms/step=232.7
"""
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import nalaformer_ref as ref  # noqa: E402


def worker(rank, args, port):
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast (shared machines)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.gpus)
    torch.cuda.set_device(rank)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda", rank)
    torch.manual_seed(0)
    model = ref.build(args.model, img_size=args.img).to(dev)
    chans, classes = (1, 10) if args.model == "pico" else (3, 1000)  # ref.build's defaults
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank], bucket_cap_mb=25)
    g = torch.Generator(device=dev).manual_seed(100 + rank)
    x = torch.randn(args.batch, chans, args.img, args.img, device=dev, generator=g)
    y = torch.randint(0, classes, (args.batch,), device=dev, generator=g)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4, weight_decay=0.05)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    torch.cuda.synchronize()
    dist.barrier()
    s = (time.perf_counter() - t0) / args.iters
    if rank == 0:
        print(f"torch {args.model} ddp gpus={args.gpus} batch/gpu={args.batch} img={args.img} "
              f"img/s={args.gpus * args.batch / s:.1f} img/s/gpu={args.batch / s:.1f} ms/step={1e3 * s:.2f}",
              flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--model", default="t")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--port", type=int, default=29533)
    args = ap.parse_args()
    mp.spawn(worker, args=(args, args.port), nprocs=args.gpus, join=True)


if __name__ == "__main__":
    main()
