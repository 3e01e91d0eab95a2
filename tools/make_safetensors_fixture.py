#!/usr/bin/python3
"""Fixtures for tests/test_safetensors.cpp, written by the reference `safetensors` package.

  torch_written.safetensors  tensors of several dtypes and ranks (F32 scalar/1-d/2-d/5-d/empty,
                             F64, F16 incl. subnormal/inf, BF16, I64, I32, U8, BOOL) + metadata;
  torch_written.json         for each tensor its dtype, shape and the float32 bit patterns cpets
                             must produce when converting it (PyTorch's own .float() conversion);
  canonical_f32.safetensors  F32 tensors defined by a formula the C++ test repeats, saved by
                             safetensors.torch.save_file: cpets must write these exact bytes.

Usage: /usr/bin/python3 tools/make_safetensors_fixture.py [--out tests/fixtures/safetensors]
       /usr/bin/python3 tools/make_safetensors_fixture.py --verify FILE   (load a cpets-written
       canonical_f32 file in Python and check its values)
Needs python3-torch (Debian) and `safetensors` (pip install --break-system-packages safetensors).
"""
import argparse
import json
import math
import os

import torch
from safetensors.torch import load_file, save_file


def formula(shape):
    """value(i) = ((i * 7) % 11 - 5) / 8: exact in float32, varied, repeated in the C++ test."""
    n = math.prod(shape)
    return torch.tensor([((i * 7) % 11 - 5) / 8 for i in range(n)], dtype=torch.float32).reshape(shape)


# Names deliberately out of alphabetical order: the writer must sort them like the package does.
CANONICAL_SHAPES = [("encoder.conv.weight", (2, 1, 3, 3, 3)), ("encoder.conv.bias", (2,)),
                    ("bn.running_var", (3,)), ("scalar", ()), ("empty", (0, 4)), ("Zeta", (1, 2, 1))]
CANONICAL_METADATA = {"format": "pt"}  # one entry: the package writes several in hash order


def torch_written_tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "scalar": torch.tensor(3.25),
        "vec": torch.arange(5, dtype=torch.float32) * 0.5 - 1,
        "mat": torch.tensor([[-0.0, 1e-30, 3.4e38], [1.5, -2.75, 1 / 3]], dtype=torch.float32),
        "conv.weight": torch.randn(2, 1, 3, 3, 3, generator=g),
        "empty": torch.zeros(0, 3),
        "f64": torch.tensor([1 / 3, -1e-40, 1e300], dtype=torch.float64),
        "half": torch.tensor([0.333, -2.0 ** -24, 65504.0, -math.inf, 2.0 ** -14, 0.0], dtype=torch.float16),
        "bf16": torch.tensor([1 / 3, -3.0e38, 1e-38, 7.0], dtype=torch.bfloat16),
        "count": torch.tensor([0, -5, 123456789, 2 ** 40 + 1], dtype=torch.int64),
        "i32": torch.tensor([[-2147483648, 7], [16777217, 3]], dtype=torch.int32),
        "u8": torch.tensor([0, 255, 128], dtype=torch.uint8),
        "flags": torch.tensor([True, False, True]),
    }


DTYPE_NAMES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def float32_bits(t):
    return t.to(torch.float32).contiguous().view(torch.int32).flatten().tolist()


def write(out):
    os.makedirs(out, exist_ok=True)
    tensors = torch_written_tensors()
    save_file(tensors, os.path.join(out, "torch_written.safetensors"),
              metadata={"format": "pt", "producer": "make_safetensors_fixture.py"})
    expected = {name: {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                       "float32_bits": [b & 0xFFFFFFFF for b in float32_bits(t)]} for name, t in tensors.items()}
    with open(os.path.join(out, "torch_written.json"), "w") as f:
        json.dump({"metadata": {"format": "pt", "producer": "make_safetensors_fixture.py"}, "tensors": expected}, f, indent=1)
    save_file({name: formula(shape) for name, shape in CANONICAL_SHAPES}, os.path.join(out, "canonical_f32.safetensors"),
              metadata=CANONICAL_METADATA)
    print("wrote fixtures to", out)


def verify(path):
    loaded = load_file(path)
    assert set(loaded) == {n for n, _ in CANONICAL_SHAPES}, sorted(loaded)
    for name, shape in CANONICAL_SHAPES:
        assert loaded[name].dtype == torch.float32 and tuple(loaded[name].shape) == shape, name
        assert torch.equal(loaded[name], formula(shape)), name
    print(path, "loads in Python with the expected values")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "safetensors"))
    ap.add_argument("--verify")
    args = ap.parse_args()
    if args.verify:
        verify(args.verify)
    else:
        write(args.out)
