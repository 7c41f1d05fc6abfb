"""Writes the golden files under tests/golden/ that the C++ model tests compare against.

    python3 tests/reference/make_golden.py            # from the repository root

Outputs (all reproducible; weights are NOT stored, the C++ test rebuilds them
from their names with the procedure in nalaformer_ref.init_values):
    tests/golden/init_vectors.txt          first values of the name-seeded init for a few keys
    tests/golden/param_names_<cfg>.txt     "name shape" per state_dict entry, in order
    tests/golden/pico_golden.safetensors   pico (1 ch, 10 classes): input, labels, eval logits,
                                           train-mode loss, logits and every parameter gradient,
                                           BN running stats after one train forward
    tests/golden/xt_golden.safetensors     xt (3 ch, 1000 classes) at 64x64: input, eval logits
    tests/golden/attn_kinds.safetensors    every attention kind: the core's output and gradients on
                                           small q, k, v; implied weights; pico eval logits per kind

Everything is computed in float64 (model.double()) and stored as float32.
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nalaformer_ref as ref  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "golden")

INIT_VECTOR_KEYS = [
    ("layers.0.blocks.1.attn.qkvg.weight", (128, 32)),  # fan-in rule, fan_in 32
    ("patch_embed.proj.1.running_var", (16,)),
    ("layers.0.blocks.0.gamma_1", (1, 32, 1, 1)),
    ("layers.1.blocks.0.norm1.norm.weight", (64,)),     # 1-D weight rule
    ("head.bias", (10,)),
]

BN_CHECKED = ["patch_embed.proj.1", "layers.1.downsample.norm", "norm"]


def shape_str(shape):
    return ",".join(str(s) for s in shape) if len(shape) else "scalar"


def write_init_vectors():
    path = os.path.join(OUT, "init_vectors.txt")
    with open(path, "w") as f:
        f.write("# Name-seeded init test vectors (see tests/reference/README.md).\n")
        f.write("# key shape fnv1a64(key) splitmix64(h+0) v0 v1 v2 v3 v4   (values float32, %.9e)\n")
        for key, shape in INIT_VECTOR_KEYS:
            h = ref.fnv1a64(key)
            x0 = ref.splitmix64_scalar(h)
            v = ref.init_values(key, shape).reshape(-1)[:5]
            f.write(f"{key} {shape_str(shape)} 0x{h:016x} 0x{x0:016x} "
                    + " ".join(f"{float(a):.9e}" for a in v) + "\n")
    print("wrote", path)


def write_param_names():
    for name in ref.CONFIGS:
        with torch.device("meta"):
            m = ref.build(name)
        path = os.path.join(OUT, f"param_names_{name}.txt")
        with open(path, "w") as f:
            for k, t in m.state_dict().items():
                f.write(f"{k} {shape_str(tuple(t.shape))}\n")
        print(f"wrote {path}  ({name}: {ref.count_params(m):,} parameters)")


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def pico_golden():
    model = ref.deterministic_init_(ref.build("pico")).double()
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    labels = torch.tensor([3, 7], dtype=torch.int64)
    out = {"input": x.contiguous(), "labels": labels}

    model.eval()  # before the train forward, which moves the running stats
    with torch.no_grad():
        logits_eval = model(x.double())
    out["logits_eval"] = f32(logits_eval)

    model.train()
    logits_train = model(x.double())
    loss = F.cross_entropy(logits_train, labels)
    loss.backward()
    out["logits_train"] = f32(logits_train)
    out["loss_train"] = f32(loss.reshape(1))
    for n, p in model.named_parameters():
        out["grad." + n] = f32(p.grad)
    sd = model.state_dict()
    for bn in BN_CHECKED:
        out["running_mean_after." + bn] = f32(sd[bn + ".running_mean"])
        out["running_var_after." + bn] = f32(sd[bn + ".running_var"])

    path = os.path.join(OUT, "pico_golden.safetensors")
    save_file(out, path)  # no metadata: its key order is random, the file would not be byte-stable
    print("wrote", path)
    print("pico logits_eval:\n", logits_eval)
    print("pico logits_train:\n", logits_train.detach())
    print("pico loss_train:", loss.item())

    # How far float32 is from the float64 reference (guides the C++ tolerances).
    m32 = ref.deterministic_init_(ref.build("pico")).eval()
    with torch.no_grad():
        l32 = m32(x)
    rel = ((l32.double() - logits_eval).abs().max() / logits_eval.abs().max()).item()
    print(f"pico float32 vs float64 eval logits: max|diff|/max|ref| = {rel:.2e}")
    m32.train()
    loss32 = F.cross_entropy(m32(x), labels)
    loss32.backward()
    worst, worst_zero = 0.0, 0.0
    for (n, p32), (_, p64) in zip(m32.named_parameters(), model.named_parameters()):
        g, r = p32.grad.double(), p64.grad
        diff, scale = (g - r).abs().max().item(), r.abs().max().item()
        if scale > 1e-12:
            worst = max(worst, diff / scale)
        else:  # biases feeding a train-mode BN: the gradient is exactly zero
            worst_zero = max(worst_zero, diff)
    print(f"pico float32 vs float64 grads: worst per-tensor max|diff|/max|ref| = {worst:.2e}; "
          f"on exactly-zero gradients max|diff| = {worst_zero:.2e}")


def xt_golden():
    model = ref.deterministic_init_(ref.build("xt")).double().eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x.double())
    path = os.path.join(OUT, "xt_golden.safetensors")
    save_file({"input": x.contiguous(), "logits_eval": f32(logits)}, path)
    print("wrote", path)
    print("xt logits_eval[:, :8]:\n", logits[:, :8])
    m32 = ref.deterministic_init_(ref.build("xt")).eval()
    with torch.no_grad():
        l32 = m32(x)
    rel = ((l32.double() - logits).abs().max() / logits.abs().max()).item()
    print(f"xt float32 vs float64 eval logits: max|diff|/max|ref| = {rel:.2e}")


def attn_kinds_golden():
    """Per kind (docs/SPEC.md §11): `<kind>.out` = core(q, k, v) and `<kind>.dq|dk|dv`, the
    gradients of sum(out * w); `<kind>.implied` the weights of queries 0, 5, 11 of
    (batch 0, head 1); `pico.<kind>.logits_eval` the name-seeded pico (input of
    pico_golden) with `kind` in stages 0, 1 (softmax: every stage), and
    `pico.flatten_all.logits_eval` with flatten in every stage."""
    H, W, d = 3, 4, 8
    torch.manual_seed(5)
    q = 0.6 * torch.randn(2, 2, H * W, d)
    k = torch.randn(2, 2, H * W, d)
    v = torch.randn(2, 2, H * W, d)
    w = torch.randn(2, 2, H * W, d)
    out = {"q": q.contiguous(), "k": k.contiguous(), "v": v.contiguous(), "w": w.contiguous()}
    sin, cos = ref.RoPE(d).double().tables(H, W)
    sin, cos = sin.double(), cos.double()
    queries = [0, 5, 11]
    for kind in ref.ATTN_KINDS:
        qd, kd, vd = (t.double().requires_grad_(True) for t in (q, k, v))
        o = ref.ATTN_CORES[kind](qd, kd, vd, sin, cos)
        (o * w.double()).sum().backward()
        out[kind + ".out"] = f32(o)
        out[kind + ".dq"], out[kind + ".dk"], out[kind + ".dv"] = f32(qd.grad), f32(kd.grad), f32(vd.grad)
        with torch.no_grad():
            imp = ref.implied_weights(kind, q[0, 1].double(), k[0, 1].double(), sin, cos)
        out[kind + ".implied"] = f32(imp[queries])
        print(f"{kind:10s} out[0,0,0,:3] = {o[0, 0, 0, :3].tolist()}")
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    runs = [(kind, None) for kind in ref.ATTN_KINDS] + [("flatten_all", ("flatten",) * 3)]
    for name, kinds in runs:
        if kinds is None:
            kinds = (name,) * 3 if name == "softmax" else (name, name, "softmax")
        model = ref.deterministic_init_(ref.build("pico", attn_kinds=kinds)).double().eval()
        with torch.no_grad():
            logits = model(x.double())
        out[f"pico.{name}.logits_eval"] = f32(logits)
    path = os.path.join(OUT, "attn_kinds.safetensors")
    save_file(out, path)
    print("wrote", path)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    write_init_vectors()
    write_param_names()
    pico_golden()
    xt_golden()
    attn_kinds_golden()


if __name__ == "__main__":
    main()
