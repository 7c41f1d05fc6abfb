#!/usr/bin/env python3
"""How precise must the six tensor-core products of the NaLa kernels be?

The CUDA NaLa kernels (kernels/cuda/attention_nala.cu) compute six
(N x 2d x d) products per problem: S = rk^T v and o = z (rq S) forward;
W = dO S^T, dS = rq^T (z dO), dv = rk dS / N and drk = v dS^T / N backward.
Today each runs in 3 passes (hi/lo splits: about float32 accuracy). This
script emulates other choices on the CPU in PyTorch: each operand of a
product rounded to tf32 or bf16 (one tensor-core pass), the sum in float32,
everything else in float32. It compares forward output and the three input
gradients with an exact (float64) NaLa on the same inputs and reports, for
each output, the largest error as a fraction of a test tolerance
|err| <= atol + rtol |ref| (1.0 = at the edge; above 1 the test fails).

Inputs as the CUDA tests draw them (tests/test_cuda_bf16.cpp): q ~ N(0, 0.5),
k ~ N(0, 0.8), v, dO ~ N(0, 1), rounded to bf16; and the benchmark's shape.
For the bf16 path the outputs are rounded to bf16 too, as the kernels write
them, and the reference is the exact result rounded once (the CPU op's
contract: its float32 arithmetic on the rounded inputs, rounded once).

    python3 tests/reference/nala_product_precision.py [--quick]

A study, not a test: nala's tests never need PyTorch.
"""
import argparse
import math
import sys
import os

import torch

sys.path.insert(0, os.path.dirname(__file__))
import nalaformer_ref as ref  # noqa: E402


def round_tf32(x):
    """Round float32 to tf32 (10 mantissa bits), to nearest, ties away (cvt.rna)."""
    i = x.contiguous().view(torch.int32)
    i = (i + 0x1000) & ~0x1FFF
    return i.view(torch.float32)


def round_bf16(x):
    return x.to(torch.bfloat16).to(torch.float32)


ROUND = {"exact": lambda x: x, "tf32": round_tf32, "bf16": round_bf16}


class Product(torch.autograd.Function):
    """a @ b with each operand of the forward product and of the two backward
    products (grad_a = g b^T, grad_b = a^T g) rounded as asked."""

    @staticmethod
    def forward(ctx, a, b, fwd, bwd_a, bwd_b):
        ctx.save_for_backward(a, b)
        ctx.modes = (bwd_a, bwd_b)
        r = ROUND[fwd]
        return r(a) @ r(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        ra, rb = (ROUND[m] for m in ctx.modes)
        return ra(g) @ ra(b).transpose(-2, -1), rb(a).transpose(-2, -1) @ rb(g), None, None, None


def nala(q, k, v, sin, cos, plan):
    """NaLa attention (tests/reference/nalaformer_ref.py's nala_attention) with its two
    forward products through Product: plan = {"S": (fwd, drk, dv), "o": (fwd, W, dS)}."""
    N = q.shape[-2]
    d = q.shape[-1]
    k3 = k ** 3
    n = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
    p = 3.0 * (0.5 + torch.tanh(n))
    fq = torch.cat([(torch.relu(q) / n) ** p, (torch.relu(-q) / n) ** p], dim=-1)
    fk = torch.cat([torch.relu(k3), torch.relu(-k3)], dim=-1)
    rq = torch.cat([ref.apply_rope(fq[..., :d], sin, cos), ref.apply_rope(fq[..., d:], sin, cos)], dim=-1)
    rk = torch.cat([ref.apply_rope(fk[..., :d], sin, cos), ref.apply_rope(fk[..., d:], sin, cos)], dim=-1)
    z = 1.0 / (fq @ fk.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    S = Product.apply(rk.transpose(-2, -1), v, *plan["S"]) / N
    return z * Product.apply(rq, S, *plan["o"])


PLANS = {
    # today: every product to about float32 accuracy (3 passes)
    "3-pass (today)": {"S": ("exact", "exact", "exact"), "o": ("exact", "exact", "exact")},
    # one tf32 pass where dq is sensitive (S, W), 3 passes elsewhere
    "tf32 x1 for S, W": {"S": ("tf32", "exact", "exact"), "o": ("exact", "tf32", "exact")},
    # one pass everywhere: tf32 for S and W, bf16 for o, dS, dv, drk
    "tf32 x1 S, W; bf16 x1 rest": {"S": ("tf32", "bf16", "bf16"), "o": ("bf16", "tf32", "bf16")},
    # the kernels' one-pass plan (cuda::nala_attention_* with one_pass): one tf32 pass for W, bf16 for the other five
    "tf32 x1 W; bf16 x1 rest": {"S": ("bf16", "bf16", "bf16"), "o": ("bf16", "tf32", "bf16")},
    # one tf32 pass for all six
    "tf32 x1 all": {"S": ("tf32", "tf32", "tf32"), "o": ("tf32", "tf32", "tf32")},
    # one bf16 pass for all six
    "bf16 x1 all": {"S": ("bf16", "bf16", "bf16"), "o": ("bf16", "bf16", "bf16")},
}


STORE = "(exact, stored as bf16)"


def run_case(B, h, H, W, d, seed, bf16_io, tol):
    g = torch.Generator().manual_seed(seed)
    N = H * W
    shape = (B, h, N, d)
    q = torch.randn(shape, generator=g) * 0.5
    k = torch.randn(shape, generator=g) * 0.8
    v = torch.randn(shape, generator=g)
    go = torch.randn(shape, generator=g)
    if bf16_io:
        q, k, v, go = (round_bf16(t) for t in (q, k, v, go))
    rope = ref.RoPE(d)
    sin, cos = rope.tables(H, W)
    out_round = round_bf16 if bf16_io else (lambda x: x)

    def grads(dtype, plan):
        xs = [t.to(dtype).clone().requires_grad_(True) for t in (q, k, v)]
        o = nala(*xs, sin.to(dtype), cos.to(dtype), plan)
        o.backward(go.to(dtype))
        return [o.detach()] + [x.grad for x in xs]

    exact = [out_round(t.float()) if bf16_io else t for t in grads(torch.float64, PLANS["3-pass (today)"])]
    atol, rtol = tol
    res = {}
    exact64 = grads(torch.float64, PLANS["3-pass (today)"])
    for name, plan in list(PLANS.items()) + [(STORE, None)]:
        if plan is None:  # no product error at all: the exact outputs rounded to bf16
            got = [round_bf16(t.float()) for t in exact64]
        else:
            got = [out_round(t) for t in grads(torch.float32, plan)]
        ratios, norms, scaled = [], [], []
        for a, e in zip(got, exact):
            e, err = e.double(), a.double() - e.double()
            ratios.append((err.abs() / (atol + rtol * e.abs())).max().item())
            norms.append((err.norm() / e.norm().clamp_min(1e-300)).item())
            scaled.append((err.abs().max() / e.abs().max().clamp_min(1e-300)).item())
        res[name] = (ratios, norms, scaled)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the test shapes only")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    # (B, h, H, W, d): tests/test_cuda_bf16.cpp's tensor-core cases, then the benchmark's shape (8 of its 128 problems)
    cases = [(2, 3, 7, 11, 16), (1, 1, 2, 3, 32), (2, 2, 9, 13, 64), (32, 3, 5, 5, 32), (1, 1, 40, 41, 64)]
    if not args.quick:
        cases.append((8, 1, 56, 56, 64))
    setups = [("float32 path", False, (1e-4, 1e-3)), ("bf16 path", True, (1e-4, 1e-3 + 1.0 / 128))]
    print("largest |error| / (atol + rtol |exact|) per output (above 1 the CUDA test's tolerance is exceeded),\n"
          "and the normwise relative error ||error|| / ||exact|| of each output")
    for label, bf16_io, tol in setups:
        print(f"\n{label}: atol {tol[0]:g}, rtol {tol[1]:.4g}" + (", outputs rounded to bf16" if bf16_io else ""))
        print(f"{'plan':28s} {'o':>8s} {'dq':>8s} {'dk':>8s} {'dv':>8s}  | normwise relative error"
              f" {'o':>8s} {'dq':>8s} {'dk':>8s} {'dv':>8s}   (worst over the cases)")
        names = list(PLANS) + [STORE]
        worst = {name: [0.0] * 4 for name in names}
        worst_n = {name: [0.0] * 4 for name in names}
        worst_s = {name: [0.0] * 4 for name in names}
        for i, c in enumerate(cases):
            r = run_case(*c, seed=100 + i, bf16_io=bf16_io, tol=tol)
            for name in names:
                worst[name] = [max(a, b) for a, b in zip(worst[name], r[name][0])]
                worst_n[name] = [max(a, b) for a, b in zip(worst_n[name], r[name][1])]
                worst_s[name] = [max(a, b) for a, b in zip(worst_s[name], r[name][2])]
        for name in names:
            print(f"{name:28s} " + " ".join(f"{x:8.3f}" for x in worst[name]) + "  | " + " " * 23
                  + " ".join(f"{x:8.1e}" for x in worst_n[name]))
        print("max |error| / max |exact| of each output (o, dq, dk, dv):")
        for name in names:
            print(f"  {name:28s} " + " ".join(f"{x:8.1e}" for x in worst_s[name]))
    print("\ncases (B, h, H, W, d):", cases)


if __name__ == "__main__":
    main()
