"""PyTorch GPU baselines (eager, fp32) for comparison with the engine's CUDA path.

Uses the reference model and attention core of tests/reference/nalaformer_ref.py.
  (a) NaLa attention core (composed torch ops), forward and forward+backward, at
      (B, h, N, d) = (128,1,3136,64), (128,2,784,64), (128,1,196,32), eager and
      through torch.compile (on the GPU; --no-compile skips it)
  (b) pico (1x28x28, 10 classes) training at batch 256 (forward, cross-entropy,
      backward, AdamW step) and inference
  (c) xt and t (3x224x224, 1000 classes) training at batch 128 and inference,
      images/s and torch.cuda.max_memory_allocated
Models run in each of --variants (default eager-fp32): eager-fp32, eager-bf16,
compile-fp32, compile-bf16. bf16 is PyTorch's mixed precision (autocast to
bfloat16 around the forward pass and the loss; float32 weights, gradients and
AdamW state); compile is torch.compile(model, mode=--compile-mode), its
compilation inside the warm-up runs. Every model line also gives the step's
floating-point work: the forward pass counted once on the eager float32
model by torch.utils.flop_counter (matrix products and convolutions, 2
flops a multiply-add), three times that for a training step (the usual MFU
convention: the backward does two products per forward product; the
counter's own figure for the backward of grouped convolutions is not
used, it counts the depthwise ones as dense), the achieved TFLOP/s
and the MFU (achieved over --peak-tflops, default 790: the H200's dense bf16
peak as the issue counts it).
Times are medians over the timed iterations, taken with CUDA events (wall
clock on CPU). TF32 is off unless --tf32.

    python3 bench/torch_gpu.py                       # on the GPU machine
    python3 bench/torch_gpu.py --device cpu --quick  # smoke test at tiny sizes
    python3 bench/torch_gpu.py --parts attn,pico     # a subset
    python3 bench/torch_gpu.py --parts xt,t --variants eager-fp32,eager-bf16,compile-bf16
                                                     # the mixed-precision yardsticks
    python3 bench/torch_gpu.py --parts xt --img 1024 --batch 1 --modes infer --softmax-core sdpa
                                                     # high-resolution inference (stages 3-4 through SDPA)

Output, one parseable line per measurement, e.g.
    torch cuda nala_attn fwd B=128 h=1 N=3136 d=64 ms=1.234
    torch cuda nala_attn_compile fwd B=128 h=1 N=3136 d=64 ms=0.567
    torch cuda pico train batch=256 img/s=12345.6 ms/iter=20.7 max_mem_MiB=1234
    torch cuda xt train batch=128 img=224 img/s=1234.5 ms/iter=103.7 max_mem_MiB=23456 gflop/img=14.2 tflops=17.5 mfu=0.022
    torch cuda xt train-compile-bf16 batch=128 img=224 img/s=3090.0 ms/iter=41.4 max_mem_MiB=4198 gflop/img=14.2 tflops=43.9 mfu=0.056
(the mode field is train or infer, with -VARIANT unless the variant is eager-fp32).
"""
import argparse
import contextlib
import itertools
import math
import os
import statistics
import sys
import time

import torch
import torch._dynamo  # its recompile limit is raised in bench_attn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import nalaformer_ref as ref  # noqa: E402


class Timer:
    """Median milliseconds of fn() over iters after warmup."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, warmup, iters):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device):
    if device.type != "cuda":
        return "na"
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"


def grid(N):
    H = int(round(math.sqrt(N)))
    if H * H != N:
        raise SystemExit(f"torch_gpu: N={N} is not a square grid")
    return H, H


def bench_attn(args, dev, timer, shapes):
    compiled = None
    if args.compile and dev.type == "cuda":
        # One specialised graph per shape and mode (no dynamic shapes); the
        # warm-up runs include the compilation.
        compiled = torch.compile(ref.nala_attention, dynamic=False)
        # Every (shape, dtype, grad mode) is one more specialised graph of the same
        # function; past Dynamo's recompile limit (8 by default) it would silently
        # run eagerly, so the limit is raised to hold them all.
        need = 2 * len(shapes) * len(args.attn_dtypes) + 4
        for name in ("cache_size_limit", "recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), need))
    for (si, (B, h, N, d)), dt in itertools.product(enumerate(shapes), args.attn_dtypes):
        # bf16: q, k, v, the output gradient and the RoPE tables in bf16 (the
        # whole op in bf16, as autocast-free PyTorch runs it); rows named *_bf16.
        sfx = "" if dt == "fp32" else "_bf16"
        dtype = torch.float32 if dt == "fp32" else torch.bfloat16
        impls = [("nala_attn" + sfx, ref.nala_attention)]
        if compiled is not None and (args.compile_shapes < 0 or si < args.compile_shapes):
            impls.append(("nala_attn_compile" + sfx, compiled))
        H, W = grid(N)
        sin, cos = (t.to(dtype) for t in ref.RoPE(d).to(dev).tables(H, W))
        q, k, v = (torch.randn(B, h, N, d, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
        gout = torch.randn(B, h, N, d, device=dev, dtype=dtype)
        for name, attn in impls:

            def fwd():
                with torch.no_grad():
                    attn(q, k, v, sin, cos)

            def fwd_bwd():
                o = attn(q, k, v, sin, cos)
                torch.autograd.backward(o, gout, inputs=[q, k, v])

            for mode, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                reset_peak(dev)
                ms = timer(fn, args.warmup, args.iters)
                print(f"torch {dev.type} {name} {mode} B={B} h={h} N={N} d={d} ms={ms:.3f} "
                      f"max_mem_MiB={peak_mib(dev)}", flush=True)
        del q, k, v, gout


VARIANTS = ("eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16")


def step_flops(fn):
    """Floating-point work of one call of fn (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_model(args, dev, timer, name, batch, img, chans, classes, modes):
    torch.manual_seed(0)
    model = ref.build(name, in_chans=chans, num_classes=classes, img_size=img).to(dev)
    x = torch.randn(batch, chans, img, img, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    flops = {}
    for variant in args.variants:
        compiled = variant.startswith("compile")
        net = torch.compile(model, mode=args.compile_mode) if compiled else model

        def autocast():
            if variant.endswith("bf16"):
                return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
            return contextlib.nullcontext()

        def train_step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()

        def infer_step():
            with torch.no_grad(), autocast():
                net(x)

        for mode in modes:
            model.train(mode == "train")
            fn = train_step if mode == "train" else infer_step
            if mode not in flops:  # once per mode, on the eager float32 model (the same work in every variant)
                fwd = step_flops(lambda: _no_grad(model, x))
                flops[mode] = 3 * fwd if mode == "train" else fwd
            reset_peak(dev)
            if args.peak_after_warmup:  # leave cuDNN's algorithm search (its workspaces) out of the peak
                for _ in range(args.warmup):
                    fn()
                reset_peak(dev)
                ms = timer(fn, 0, args.iters)
            else:
                ms = timer(fn, args.warmup, args.iters)
            tflops = flops[mode] / (ms / 1e3) / 1e12
            tag = mode if variant == "eager-fp32" else f"{mode}-{variant}"
            print(f"torch {dev.type} {name} {tag} batch={batch} img={img} img/s={batch / (ms / 1e3):.1f} "
                  f"ms/iter={ms:.2f} max_mem_MiB={peak_mib(dev)} gflop/img={flops[mode] / batch / 1e9:.2f} "
                  f"tflops={tflops:.1f} mfu={tflops / args.peak_tflops:.3f}", flush=True)
        del net
    del model, opt, x, y


def _no_grad(model, x):
    with torch.no_grad():
        return model(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, few iterations (smoke test)")
    ap.add_argument("--parts", default="attn,pico,xt,t")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in matmul and cuDNN")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="attn: skip the torch.compile rows")
    ap.add_argument("--img", type=int, help="xt, t, ...: image size (default 224)")
    ap.add_argument("--batch", type=int, help="xt, t, ...: batch (default 128)")
    ap.add_argument("--modes", default="train,infer", help="xt, t, ...: train, infer or both")
    ap.add_argument("--peak-after-warmup", action="store_true",
                    help="xt, t, ...: reset the peak after the warm-up runs (cuDNN's algorithm search excluded)")
    ap.add_argument("--softmax-core", choices=("ref", "sdpa"), default="ref",
                    help="softmax attention of stages 3-4: the reference's (materialises N x N) or "
                         "F.scaled_dot_product_attention on the roped q, k (does not)")
    ap.add_argument("--variants", default="eager-fp32",
                    help="models: comma-separated, of " + ", ".join(VARIANTS))
    ap.add_argument("--compile-mode", default="default",
                    help="models: torch.compile's mode (default, reduce-overhead, max-autotune, ...)")
    ap.add_argument("--peak-tflops", type=float, default=790.0,
                    help="models: the peak that MFU divides by (default 790: H200 dense bf16)")
    ap.add_argument("--attn-dtypes", default="fp32",
                    help="attn: comma-separated, of fp32, bf16 (the inputs' and outputs' dtype)")
    ap.add_argument("--compile-shapes", type=int, default=-1,
                    help="attn: torch.compile only the first N shapes (compiling takes a while)")
    args = ap.parse_args()
    args.variants = args.variants.split(",")
    args.attn_dtypes = args.attn_dtypes.split(",")
    for dt in args.attn_dtypes:
        if dt not in ("fp32", "bf16"):
            raise SystemExit(f"torch_gpu: unknown attn dtype {dt!r} (fp32 or bf16)")
    for v in args.variants:
        if v not in VARIANTS:
            raise SystemExit(f"torch_gpu: unknown variant {v!r} (one of {', '.join(VARIANTS)})")

    dev = torch.device(args.device)
    if args.softmax_core == "sdpa":
        ref.ATTN_CORES["softmax"] = lambda q, k, v, sin, cos: F.scaled_dot_product_attention(
            ref.apply_rope(q, sin, cos), ref.apply_rope(k, sin, cos), v)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    if args.quick:
        args.warmup, args.iters = 1, 2
        attn_shapes = [(2, 1, 64, 64), (2, 2, 16, 32), (2, 1, 16, 32)]
        pico_b, big_b, big_img = 4, 2, 64
    else:
        attn_shapes = [(128, 1, 3136, 64), (128, 2, 784, 64), (128, 1, 196, 32)]
        pico_b, big_b, big_img = 256, 128, 224
    big_b, big_img = args.batch or big_b, args.img or big_img
    modes = tuple(args.modes.split(","))
    if dev.type == "cuda":
        print(f"# {torch.cuda.get_device_name(dev)} torch {torch.__version__} tf32={args.tf32}", flush=True)
    else:
        print(f"# cpu threads={torch.get_num_threads()} torch {torch.__version__}", flush=True)

    timer = Timer(dev)
    parts = args.parts.split(",")
    for part in parts:
        if part == "attn":
            bench_attn(args, dev, timer, attn_shapes)
        elif part == "pico":
            bench_model(args, dev, timer, "pico", pico_b, 28, 1, 10, ("train", "infer"))
        elif part in ("xt", "t", "s", "b", "l"):
            bench_model(args, dev, timer, part, big_b, big_img, 3, 1000, modes)
        else:
            raise SystemExit(f"torch_gpu: unknown part {part!r}")


if __name__ == "__main__":
    main()
