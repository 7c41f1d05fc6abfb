"""NaLaFormer in plain PyTorch: the independent reference for the golden tests.

Written from docs/SPEC.md §1-§6 and §10, composed only from stock torch ops,
so the C++ engine can be checked against it. The C++ project never needs this
file; it only generates the committed files under tests/golden/ and is used by
the PyTorch benchmark scripts under bench/.

Shape letters: B batch, C channels, H x W spatial, N = H*W tokens (row-major,
token index = r*W + c), h heads, d = C/h head dim, P head width.

Also here: the name-seeded deterministic initialisation (`deterministic_init_`)
that the C++ golden test replicates bit for bit (see tests/reference/README.md).

Run directly to print the parameter counts of every config:
    python3 tests/reference/nalaformer_ref.py
"""
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------- configs

CONFIGS = {
    #        dims                  depths          heads           mlp  layer-init               dpr   strides  P
    "xt":   dict(dims=(32, 64, 128, 384), depths=(2, 2, 2, 2), heads=(1, 2, 4, 12), mlp=3.5,
                 layer_init=(1.0, 1.0, 1.0, 1.0), drop_path=0.10, stem_strides=(2, 2), P=1024),
    "t":    dict(dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), heads=(1, 2, 4, 8), mlp=4.0,
                 layer_init=(1.0, 1.0, 1.0, 1.0), drop_path=0.10, stem_strides=(2, 2), P=1024),
    "s":    dict(dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), heads=(1, 2, 5, 8), mlp=3.5,
                 layer_init=(1.0, 1.0, 1.0, 1.0), drop_path=0.15, stem_strides=(2, 2), P=1024),
    "b":    dict(dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), heads=(1, 2, 6, 8), mlp=4.0,
                 layer_init=(1.0, 1.0, 1e-6, 1e-6), drop_path=0.40, stem_strides=(2, 2), P=1024),
    "l":    dict(dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), heads=(1, 2, 7, 10), mlp=3.5,
                 layer_init=(1e-6, 1e-6, 1e-6, 1e-6), drop_path=0.55, stem_strides=(2, 2), P=1024),
    "pico": dict(dims=(32, 64, 128), depths=(2, 2, 2), heads=(1, 2, 4), mlp=3.0,
                 layer_init=(1.0, 1.0, 1.0), drop_path=0.0, stem_strides=(2, 1), P=256),
}

# docs/SPEC.md §5 (BN buffers excluded).
EXPECTED_PARAMS = {"xt": 6.14e6, "t": 15.9e6, "s": 25.6e6, "b": 52.0e6, "l": 95.4e6, "pico": 653194}

# ------------------------------------------------------ RoPE (docs/SPEC.md §4)


class RoPE(nn.Module):
    """2-D rotary embedding for one stage. `angle` (d/2,) is derived, never
    learned, and kept out of the state dict (persistent=False)."""

    def __init__(self, d):
        super().__init__()
        if d % 4 != 0:
            raise ValueError(f"RoPE: head dim {d} must be divisible by 4")
        m = d // 4
        t = torch.arange(m, dtype=torch.float64)
        a = torch.ones(1, dtype=torch.float64) if m == 1 else 10000.0 ** (-t / (m - 1))
        self.register_buffer("angle", a.repeat_interleave(2).float(), persistent=False)  # (d/2,)

    def tables(self, H, W):
        """sin, cos of shape (N, d) for an H x W grid, row-major tokens."""
        A = self.angle
        r = torch.arange(H, dtype=A.dtype, device=A.device)
        c = torch.arange(W, dtype=A.dtype, device=A.device)
        rA = (r[:, None] * A[None, :])[:, None, :].expand(H, W, A.numel())  # (H, W, d/2)
        cA = (c[:, None] * A[None, :])[None, :, :].expand(H, W, A.numel())
        ang = torch.cat([rA, cA], dim=-1).reshape(H * W, 2 * A.numel())      # (N, d)
        return torch.sin(ang), torch.cos(ang)


def rot(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last dim."""
    x2 = x.unflatten(-1, (-1, 2))
    return torch.stack([-x2[..., 1], x2[..., 0]], dim=-1).flatten(-2)


def apply_rope(x, sin, cos):
    """x (..., N, d); sin, cos (N, d)."""
    return x * cos + rot(x) * sin


# ---------------------------------------------------------------- attention cores


def nala_attention(q, k, v, sin, cos):
    """NaLa attention, released-code form (docs/SPEC.md §2). q, k, v (B, h, N, d) -> (B, h, N, d).

    The only deviation from the release: ||q|| is floored at 1e-12 (clamp_min)
    so an all-zero query gives 0 features instead of 0/0 (docs/SPEC.md §7); no effect
    otherwise."""
    N = q.shape[-2]
    k = k ** 3
    n = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-12)  # (B, h, N, 1)
    p = 3.0 * (0.5 + torch.tanh(n))
    fq = torch.cat([(F.relu(q) / n) ** p, (F.relu(-q) / n) ** p], dim=-1)  # (B, h, N, 2d)
    fk = torch.cat([F.relu(k), F.relu(-k)], dim=-1)                         # (B, h, N, 2d)
    d = q.shape[-1]
    rq = torch.cat([apply_rope(fq[..., :d], sin, cos), apply_rope(fq[..., d:], sin, cos)], dim=-1)
    rk = torch.cat([apply_rope(fk[..., :d], sin, cos), apply_rope(fk[..., d:], sin, cos)], dim=-1)
    z = 1.0 / (fq @ fk.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)  # (B, h, N, 1)
    S = (rk.transpose(-2, -1) @ v) / N                                        # (B, h, 2d, d)
    return z * (rq @ S)


def softmax_attention(q, k, v, sin, cos):
    """softmax(rope(q) rope(k)^T / sqrt(d)) v (docs/SPEC.md §3). (B, h, N, d) -> (B, h, N, d)."""
    d = q.shape[-1]
    a = (apply_rope(q, sin, cos) @ apply_rope(k, sin, cos).transpose(-2, -1)) / math.sqrt(d)
    return torch.softmax(a, dim=-1) @ v


def kind_features(kind, x, query):
    """phi_q (query=True) or phi_k of a linear attention kind (docs/SPEC.md §11): the
    d-wide parts of the feature vector, concatenated along the last dim."""
    d = x.shape[-1]
    if kind == "nala":
        if query:
            n = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
            p = 3.0 * (0.5 + torch.tanh(n))
            return [(F.relu(x) / n) ** p, (F.relu(-x) / n) ** p]
        x = x ** 3
        return [F.relu(x), F.relu(-x)]
    if kind == "nala-paper":
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
        u = x / r
        if query:
            a = torch.sign(u) * u.abs() ** (3.0 * (0.5 + torch.tanh(r)))   # signed power p(|q|)
        else:
            a = u ** 3                                                     # lambda = 3, odd
        theta = (math.pi / 4) * a                                          # in [-pi/4, pi/4]
        amp = r / math.sqrt(d)                                             # |phi(x)| = |x|
        return [amp * torch.cos(theta), amp * torch.sin(theta)]
    if kind == "relu":
        return [F.relu(x)]
    if kind == "elu1":
        return [F.elu(x) + 1.0]
    if kind == "flatten":
        r = F.relu(x) + 1e-6
        r3 = r ** 3
        return [r3 * (torch.linalg.vector_norm(r, dim=-1, keepdim=True)
                      / torch.linalg.vector_norm(r3, dim=-1, keepdim=True))]
    raise ValueError(f"kind_features: {kind!r} is not a linear kind")


def linear_attention(kind):
    """The linear attention of `kind` with NaLa's structure (docs/SPEC.md §2.1, §11):
    RoPE on each d-wide feature part, the normaliser from un-rotated features."""
    def core(q, k, v, sin, cos):
        N = q.shape[-2]
        fq, fk = kind_features(kind, q, True), kind_features(kind, k, False)
        rq = torch.cat([apply_rope(t, sin, cos) for t in fq], dim=-1)
        rk = torch.cat([apply_rope(t, sin, cos) for t in fk], dim=-1)
        fq, fk = torch.cat(fq, dim=-1), torch.cat(fk, dim=-1)
        z = 1.0 / (fq @ fk.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        return z * (rq @ ((rk.transpose(-2, -1) @ v) / N))
    return core


def implied_weights(kind, q, k, sin, cos):
    """Attention weights of every query over the keys, q and k (N, d): for a linear kind
    phi_q(q_i).phi_k(k_j) / sum_j (un-rotated features); softmax: the real weights."""
    if kind == "softmax":
        a = apply_rope(q, sin, cos) @ apply_rope(k, sin, cos).transpose(-2, -1)
        return torch.softmax(a / math.sqrt(q.shape[-1]), dim=-1)
    s = torch.cat(kind_features(kind, q, True), -1) @ torch.cat(kind_features(kind, k, False), -1).T
    return s / s.sum(dim=-1, keepdim=True)


ATTN_KINDS = ("nala", "nala-paper", "relu", "elu1", "flatten", "softmax")
ATTN_CORES = {"nala": nala_attention, "softmax": softmax_attention}
ATTN_CORES.update({kind: linear_attention(kind) for kind in ("nala-paper", "relu", "elu1", "flatten")})

# ---------------------------------------------------------------- modules


class ChannelLayerNorm(nn.Module):
    """LayerNorm over C at each pixel of a (B, C, H, W) image; key `<name>.norm`."""

    def __init__(self, C, eps):
        super().__init__()
        self.norm = nn.LayerNorm(C, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def dwconv(C, k):
    return nn.Conv2d(C, C, k, stride=1, padding=k // 2, groups=C, bias=True)


class Attention(nn.Module):
    def __init__(self, C, heads, kind):
        super().__init__()
        if kind not in ATTN_CORES:
            raise ValueError(f"Attention: unknown kind {kind!r}")
        self.C, self.heads, self.kind = C, heads, kind
        self.qkvg = nn.Linear(C, 4 * C)
        self.lepe = dwconv(C, 5)
        self.ln = nn.LayerNorm(C, eps=1e-5)
        self.out_proj = nn.Linear(C, C)

    def forward(self, x, rope):
        """x (B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        N, h = H * W, self.heads
        d = C // h
        X = x.flatten(2).transpose(1, 2)                                # (B, N, C)
        q, k, v, g = self.qkvg(X).chunk(4, dim=-1)                      # (B, N, C) each
        lepe = self.lepe(v.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)
        q, k, v = (t.reshape(B, N, h, d).transpose(1, 2) for t in (q, k, v))  # (B, h, N, d)
        sin, cos = rope.tables(H, W)
        sin, cos = sin.to(x.dtype), cos.to(x.dtype)
        o = ATTN_CORES[self.kind](q, k, v, sin, cos)
        o = o.transpose(1, 2).reshape(B, N, C) + lepe
        o = self.ln(o) * F.silu(g)
        o = self.out_proj(o)
        return o.transpose(1, 2).reshape(B, C, H, W)


class FFN(nn.Module):
    def __init__(self, C, hidden):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.dwconv = dwconv(hidden, 3)
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x):
        B, C, H, W = x.shape
        t = F.gelu(self.fc1(x.flatten(2).transpose(1, 2)))             # (B, N, Hd), erf form
        t = t.transpose(1, 2).reshape(B, -1, H, W)
        t = t + self.dwconv(t)
        t = self.fc2(t.flatten(2).transpose(1, 2))                      # (B, N, C)
        return t.transpose(1, 2).reshape(B, C, H, W)


def drop_path(x, rate, training):
    """Stochastic depth per sample; survivors are scaled by 1/(1-rate)."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class Block(nn.Module):
    def __init__(self, C, heads, mlp, layer_init, dp_rate, kind):
        super().__init__()
        # Parameters owned directly by the block come first in state_dict order.
        self.gamma_1 = nn.Parameter(torch.full((1, C, 1, 1), float(layer_init)))
        self.gamma_2 = nn.Parameter(torch.full((1, C, 1, 1), float(layer_init)))
        self.cpe1 = dwconv(C, 3)
        self.norm1 = ChannelLayerNorm(C, 1e-6)
        self.attn = Attention(C, heads, kind)
        self.cpe2 = dwconv(C, 3)
        self.norm2 = ChannelLayerNorm(C, 1e-6)
        self.ffn = FFN(C, int(mlp * C))
        self.dp_rate = dp_rate

    def forward(self, x, rope):
        x = x + self.cpe1(x)
        x = x + drop_path(self.gamma_1 * self.attn(self.norm1(x), rope), self.dp_rate, self.training)
        x = x + self.cpe2(x)
        x = x + drop_path(self.gamma_2 * self.ffn(self.norm2(x)), self.dp_rate, self.training)
        return x


class Merge(nn.Module):
    def __init__(self, Cin, Cout):
        super().__init__()
        self.reduction = nn.Conv2d(Cin, Cout, 3, stride=2, padding=1, bias=True)
        self.norm = nn.BatchNorm2d(Cout, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return self.norm(self.reduction(x))


class Stage(nn.Module):
    def __init__(self, C, depth, heads, mlp, layer_init, dp_rates, kind, C_next):
        super().__init__()
        self.blocks = nn.ModuleList(
            [Block(C, heads, mlp, layer_init, dp_rates[j], kind) for j in range(depth)])
        self.downsample = Merge(C, C_next) if C_next is not None else None
        self.RoPE = RoPE(C // heads)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x, self.RoPE)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, Cin, C0, strides):
        super().__init__()
        c = C0 // 2
        self.proj = nn.Sequential(
            nn.Conv2d(Cin, c, 3, strides[0], 1), nn.BatchNorm2d(c), nn.GELU(),
            nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.GELU(),
            nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.GELU(),
            nn.Conv2d(c, C0, 3, strides[1], 1), nn.BatchNorm2d(C0))

    def forward(self, x):
        return self.proj(x)


class NaLaFormer(nn.Module):
    def __init__(self, dims, depths, heads, mlp, layer_init, drop_path, stem_strides, P,
                 in_chans=3, num_classes=1000, img_size=224, attn_kinds=None):
        super().__init__()
        S = len(dims)
        if attn_kinds is None:
            attn_kinds = tuple("nala" if i < 2 else "softmax" for i in range(S))
        if len(attn_kinds) != S:
            raise ValueError(f"NaLaFormer: {len(attn_kinds)} attention kinds for {S} stages")
        self.img_size, self.attn_kinds = img_size, tuple(attn_kinds)
        total = sum(depths)
        rates = [drop_path * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.patch_embed = PatchEmbed(in_chans, dims[0], stem_strides)
        layers, off = [], 0
        for i in range(S):
            layers.append(Stage(dims[i], depths[i], heads[i], mlp, layer_init[i],
                                rates[off:off + depths[i]], attn_kinds[i],
                                dims[i + 1] if i + 1 < S else None))
            off += depths[i]
        self.layers = nn.ModuleList(layers)
        self.proj = nn.Linear(dims[-1], P)
        self.norm = nn.BatchNorm1d(P, eps=1e-5, momentum=0.1)
        self.head = nn.Conv2d(P, num_classes, 1)
        self._init_release(layer_init, depths)

    def _init_release(self, layer_init, depths):
        """docs/SPEC.md §6.1: convs trunc-normal std 0.02 cut at +-2, conv bias 0; LN and BN
        weight 1 bias 0; Linear PyTorch default; gamma = layer-init value."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        """x (B, Cin, H, W) -> logits (B, classes)."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        t = self.proj(x.flatten(2).transpose(1, 2))          # (B, N, P)
        t = F.silu(self.norm(t.transpose(1, 2)))             # (B, P, N), BN over P
        t = t.mean(dim=-1)[:, :, None, None]                 # (B, P, 1, 1)
        return self.head(t).flatten(1)


def build(name, in_chans=None, num_classes=None, img_size=None, attn_kinds=None):
    """A config by name; pico defaults to 1 channel / 10 classes / 28 px."""
    cfg = CONFIGS[name]
    small = name == "pico"
    return NaLaFormer(**cfg,
                      in_chans=in_chans if in_chans is not None else (1 if small else 3),
                      num_classes=num_classes if num_classes is not None else (10 if small else 1000),
                      img_size=img_size if img_size is not None else (28 if small else 224),
                      attn_kinds=attn_kinds)


def count_params(model):
    return sum(p.numel() for p in model.parameters())

# ---------------------------------------------------------------- deterministic init

_M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 14695981039346656037
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 1099511628211) & _M64
    return h


def splitmix64_scalar(z):
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def key_uniforms(key, n):
    """u_i in [-1, 1) for i = 0..n-1, as float64 (each exactly a float32)."""
    h = np.uint64(fnv1a64(key))
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + h
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * (2.0 ** -24) * 2.0 - 1.0


def key_uniforms_slow(key, n):
    """Scalar python-int version of key_uniforms, used to cross-check it."""
    h = fnv1a64(key)
    return np.array([(splitmix64_scalar((h + i) & _M64) >> 40) * 2.0 ** -24 * 2.0 - 1.0
                     for i in range(n)])


def init_values(key, shape):
    """float32 array of the deterministic init of `key`, or None (not filled).
    All arithmetic in float64, one final rounding to float32."""
    n = int(np.prod(shape)) if len(shape) else 1
    if key.endswith("num_batches_tracked"):
        return None
    u = key_uniforms(key, n)
    if key.endswith("running_var"):
        v = 1.0 + 0.5 * np.abs(u)
    elif key.endswith("running_mean"):
        v = 0.1 * u
    elif "gamma_" in key:
        v = 1.0 + 0.2 * u
    elif len(shape) == 1 and key.endswith(".weight"):
        v = 1.0 + 0.1 * u
    elif key.endswith(".bias"):
        v = 0.1 * u
    else:
        fan_in = n // shape[0]
        v = u * math.sqrt(3.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


@torch.no_grad()
def deterministic_init_(model):
    """Fill every state_dict entry (parameters and persistent buffers) from its name."""
    for key, t in model.state_dict(keep_vars=True).items():
        v = init_values(key, tuple(t.shape))
        if v is not None:
            t.copy_(torch.from_numpy(v).to(t.dtype))
    return model


def f32_hex(x):
    return struct.pack(">f", float(x)).hex()


# ---------------------------------------------------------------- self-check


def _nala_loops(q, k, v, H, W):
    """Token-by-token NaLa straight from docs/SPEC.md §2 and §4 (slow; one batch, one head)."""
    N, d = q.shape
    m = d // 4
    a = [1.0] if m == 1 else [10000.0 ** (-t / (m - 1)) for t in range(m)]
    A = [a[t // 2] for t in range(d // 2)]

    def rope(x, i):
        r, c = divmod(i, W)
        ang = [r * A[t] for t in range(d // 2)] + [c * A[t] for t in range(d // 2)]
        out = []
        for j in range(d):
            rx = -x[j + 1] if j % 2 == 0 else x[j - 1]
            out.append(x[j] * math.cos(ang[j]) + rx * math.sin(ang[j]))
        return out

    k = [[e ** 3 for e in row] for row in k.tolist()]
    q, v = q.tolist(), v.tolist()
    fq, fk = [], []
    for i in range(N):
        n = max(math.sqrt(sum(e * e for e in q[i])), 1e-12)
        p = 3 * (0.5 + math.tanh(n))
        fq.append([(max(e, 0) / n) ** p for e in q[i]] + [(max(-e, 0) / n) ** p for e in q[i]])
        fk.append([max(e, 0) for e in k[i]] + [max(-e, 0) for e in k[i]])
    rq = [rope(f[:d], i) + rope(f[d:], i) for i, f in enumerate(fq)]
    rk = [rope(f[:d], i) + rope(f[d:], i) for i, f in enumerate(fk)]
    kmean = [sum(fk[j][a_] for j in range(N)) / N for a_ in range(2 * d)]
    out = []
    for i in range(N):
        z = 1 / (sum(fq[i][a_] * kmean[a_] for a_ in range(2 * d)) + 1e-6)
        num = [sum(rq[i][a_] * rk[j][a_] * v[j][e] for j in range(N) for a_ in range(2 * d)) / N
               for e in range(d)]
        out.append([z * t for t in num])
    return torch.tensor(out, dtype=torch.float64)


def selfcheck():
    """Composed attention cores against the token loops above and docs/SPEC.md §3."""
    torch.manual_seed(0)
    H, W, d = 3, 5, 8
    q, k, v = (torch.randn(1, 1, H * W, d, dtype=torch.float64) for _ in range(3))
    rope = RoPE(d).double()
    sin, cos = rope.tables(H, W)
    got = nala_attention(q, k, v, sin, cos)[0, 0]
    want = _nala_loops(q[0, 0], k[0, 0], v[0, 0], H, W)
    err = (got - want).abs().max().item()
    print(f"selfcheck nala composed vs loops: max|diff| = {err:.2e}")
    assert err < 1e-10
    # Softmax: with a rotation, <rope_i(q), rope_j(k)> depends only on position offsets.
    a = apply_rope(q, sin, cos) @ apply_rope(k, sin, cos).transpose(-2, -1)
    ref = torch.softmax(a / math.sqrt(d), -1) @ v
    err = (softmax_attention(q, k, v, sin, cos) - ref).abs().max().item()
    assert err < 1e-12
    # rope is a rotation: norms of each (even, odd) pair are preserved
    x = torch.randn(H * W, d, dtype=torch.float64)
    y = apply_rope(x, sin, cos)
    err = ((x.unflatten(-1, (-1, 2)) ** 2).sum(-1) - (y.unflatten(-1, (-1, 2)) ** 2).sum(-1)).abs().max()
    assert err < 1e-12
    # The generic linear core with NaLa's features is the nala core.
    err = (linear_attention("nala")(q, k, v, sin, cos) - got[None, None]).abs().max().item()
    assert err < 1e-12
    # nala-paper: every implied weight is >= 0 (cosines of angle differences within pi/2).
    w = implied_weights("nala-paper", q[0, 0], k[0, 0], sin, cos)
    assert w.min().item() >= 0 and (w.sum(-1) - 1).abs().max().item() < 1e-12
    print("selfcheck ok")


if __name__ == "__main__":
    selfcheck()
    for name in CONFIGS:
        with torch.device("meta"):
            m = build(name)
        n = count_params(m)
        print(f"{name:5s} params={n:,} ({n / 1e6:.3f}M, quoted {EXPECTED_PARAMS[name]:,.0f})")
