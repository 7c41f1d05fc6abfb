# tests/data/make_safetensors_fixture.py - writes tests/data/reference.safetensors
# with the Python `safetensors` package, so that tests/test_safetensors.cpp can
# check that nala reads what the reference implementation writes.
# Values are simple formulas the C++ test recomputes. Run from the repository root:
#   python3 tests/data/make_safetensors_fixture.py
import os

import torch
from safetensors.torch import save_file

tensors = {
    "layers.0.blocks.1.attn.qkvg.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * 0.5 - 3.0,
    "layers.2.downsample.norm.num_batches_tracked": torch.tensor(12345678901, dtype=torch.int64),
    "head.bias": torch.tensor([1.5, -2.25, 1e-3], dtype=torch.float32),
    "empty": torch.zeros(0, 3, dtype=torch.float32),
    "labels": torch.tensor([-1, 0, 7, 2**40], dtype=torch.int64),
    "half": torch.tensor([1.0, -0.5, 65504.0, 2.0**-24], dtype=torch.float16),
    "bfloat": torch.tensor([1.0, -3.0, 0.15625], dtype=torch.bfloat16),
    "double": torch.tensor([0.25, -1e10], dtype=torch.float64),
    "int32": torch.tensor([-5, 2**31 - 1], dtype=torch.int32),
    "bool": torch.tensor([True, False, True]),
    "caf\u00e9.\u03bb": torch.ones(2, 2, dtype=torch.float32),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.safetensors")
save_file(tensors, out, metadata={"format": "pt", "note": "h\u00e9llo \"quoted\"\n"})
print(out, os.path.getsize(out), "bytes")
