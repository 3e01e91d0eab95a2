#!/usr/bin/python3
"""Fixtures for tests/test_safetensors.cpp, written by the reference `safetensors` package.

  torch_written.safetensors  tensors of several dtypes and ranks (F32 scalar/1-d/2-d/5-d/empty,
                             F64, F16 incl. subnormal/inf, BF16, I64, I32, U8, BOOL) + metadata;
  torch_written.json         for each tensor its dtype, shape and the float32 bit patterns cpets
                             must produce when converting it (PyTorch's own .float() conversion);
  canonical_f32.safetensors  F32 tensors defined by a formula the C++ test repeats, saved by
                             safetensors.torch.save_file: cpets must write these exact bytes.
  toy_module.safetensors     state_dict of a small torch.nn model (convs, BatchNorm3d with its
                             int64 num_batches_tracked, ModuleList, Linear, own parameter and
                             buffer); metadata holds PyTorch's state_dict and named_parameters key
                             orders and the parameter count, for tests/test_module.cpp.
  adam_reference.safetensors torch.optim.Adam on two parameter groups (different lr, one with
                             weight decay) for 5 steps with the stored gradients: initial and
                             final parameters and the final exp_avg / exp_avg_sq, for
                             tests/test_optim.cpp.

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
    # Two metadata entries on purpose (reading several); their order in the file varies per run.
    save_file(tensors, os.path.join(out, "torch_written.safetensors"),
              metadata={"format": "pt", "producer": "make_safetensors_fixture.py"})
    expected = {name: {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                       "float32_bits": [b & 0xFFFFFFFF for b in float32_bits(t)]} for name, t in tensors.items()}
    with open(os.path.join(out, "torch_written.json"), "w") as f:
        json.dump({"metadata": {"format": "pt", "producer": "make_safetensors_fixture.py"}, "tensors": expected}, f, indent=1)
    save_file({name: formula(shape) for name, shape in CANONICAL_SHAPES}, os.path.join(out, "canonical_f32.safetensors"),
              metadata=CANONICAL_METADATA)
    write_toy_module(out)
    write_adam_reference(out)
    print("wrote fixtures to", out)


class ToyBlock(torch.nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(cin, cout, 3, padding=1)
        self.norm = torch.nn.BatchNorm3d(cout)


class Toy(torch.nn.Module):
    """Registration order chosen so that state_dict order differs from attribute order: own
    parameters and buffers come before children in PyTorch's state_dict."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.stem = torch.nn.Conv3d(1, 2, 3, bias=False)
        self.encoder.down = torch.nn.ModuleList([ToyBlock(2, 3), ToyBlock(3, 4)])
        self.register_buffer("scale", torch.ones(1))
        self.head = torch.nn.Linear(4, 1)
        self.gain = torch.nn.Parameter(torch.ones(()))


def write_toy_module(out):
    torch.manual_seed(1)
    model = Toy()
    with torch.no_grad():  # make the buffers non-trivial
        for name, b in model.named_buffers():
            if b.dtype == torch.int64:
                b.fill_(7)
            else:
                b.copy_(torch.rand(b.shape) + 0.5)
    state = model.state_dict()
    # One metadata entry (a JSON object): the package writes several in hash order, which would
    # make the fixture's bytes change from one run of this script to the next.
    meta = {"torch_module": json.dumps({"state_dict_order": list(state),
                                        "named_parameters_order": [n for n, _ in model.named_parameters()],
                                        "num_parameters": sum(p.numel() for p in model.parameters())})}
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out, "toy_module.safetensors"), metadata=meta)


ADAM_STEPS = 5


def write_adam_reference(out):
    g = torch.Generator().manual_seed(3)
    a0 = torch.randn(3, 7, generator=g)
    b0 = torch.randn(11, generator=g)
    grads = [(torch.randn(3, 7, generator=g) * 10 ** (k - 2), torch.randn(11, generator=g)) for k in range(ADAM_STEPS)]
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.Adam([{"params": [a], "lr": 1e-2},
                            {"params": [b], "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}])
    for ga, gb in grads:
        a.grad, b.grad = ga.clone(), gb.clone()
        opt.step()
    tensors = {"a.initial": a0, "b.initial": b0, "a.final": a.detach(), "b.final": b.detach(),
               "a.exp_avg": opt.state[a]["exp_avg"], "a.exp_avg_sq": opt.state[a]["exp_avg_sq"],
               "b.exp_avg": opt.state[b]["exp_avg"], "b.exp_avg_sq": opt.state[b]["exp_avg_sq"]}
    for k, (ga, gb) in enumerate(grads):
        tensors[f"a.grad.{k}"], tensors[f"b.grad.{k}"] = ga, gb
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "adam_reference.safetensors"),
              metadata={"torch": torch.__version__})


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
