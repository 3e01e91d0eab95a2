#!/usr/bin/python3
"""Exports a Causal PETS checkpoint written by cpets-train to PyTorch: the model of
tools/torch_model.py (docs/model.md, the same state_dict names and shapes as ours) with the
checkpoint's weights, saved as a plain `torch.save` file:

  {"state_dict": model.state_dict(), "config": the torch build's config dict,
   "cpets": the checkpoint's JSON state (training config, step, normalisation ranges, tracer)}

so `m = CausalPETS(d["config"]); m.load_state_dict(d["state_dict"])` gives the network in any
PyTorch program (the optimiser states stay behind). Loading is strict: a missing, extra or
misshapen tensor stops the export naming it.

  export_torch.py CHECKPOINT OUT.pt            CHECKPOINT: a .safetensors file or a run folder
  export_torch.py CHECKPOINT --fixture OUT.safetensors
                                               tests/fixtures/interop: fixed random inputs and
                                               PyTorch's synthetic PET (ε = 0) for test_golden.cpp

Only model.kind = causal-pets has a PyTorch build. Runs with the torch venv of `cpets.sh bench`
or Debian's python3-torch.
"""
import argparse
import glob
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model as tm  # noqa: E402

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[h["dtype"]]) if b > a else torch.empty(0)
        tensors[name] = t.reshape(h["shape"]).clone()
    return tensors, meta


def resolve(path):
    if os.path.isdir(path):
        for candidate in (os.path.join(path, "checkpoints", "best.safetensors"),
                          *sorted(glob.glob(os.path.join(path, "checkpoints", "step-*.safetensors")), reverse=True)):
            if os.path.isfile(candidate):
                return candidate
        raise SystemExit(f"export_torch: no checkpoint in {path} (expected checkpoints/best.safetensors)")
    return path


def load(path):
    tensors, meta = read_safetensors(resolve(path))
    if "cpets" not in meta:
        raise SystemExit(f"export_torch: {path} has no 'cpets' metadata: not a cpets-train checkpoint")
    state = json.loads(meta["cpets"])
    mc = state["model_config"]
    if mc.get("kind", "causal-pets") != "causal-pets":
        raise SystemExit(f"export_torch: model.kind {mc['kind']!r} has no PyTorch build (tools/torch_model.py builds "
                         "Causal PETS only)")
    c = tm.preset(mc["preset"], state["tracer"])
    c.update({k: mc[k] for k in c if k in mc})
    model = tm.CausalPETS(c)
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    own = model.state_dict()
    for k, v in weights.items():
        if k in own and own[k].dtype != v.dtype:
            weights[k] = v.to(own[k].dtype)  # BatchNorm's num_batches_tracked is stored as F32
    model.load_state_dict(weights, strict=True)
    model.eval()
    return model, c, state


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out", nargs="?", help="the .pt file to write")
    ap.add_argument("--fixture", metavar="OUT.safetensors")
    a = ap.parse_args()
    model, c, state = load(a.checkpoint)
    if a.out:
        torch.save({"state_dict": model.state_dict(), "config": c, "cpets": state}, a.out)
        print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()):,} parameters, step {state['step']}")
    if a.fixture:
        g = torch.Generator().manual_seed(7)
        d, h, w = c["volume"]
        t1 = torch.rand(2, 1, d, h, w, generator=g)
        csf = torch.rand(2, c["csf_inputs"], generator=g)
        cov = torch.rand(2, c["covariate_inputs"], generator=g)
        with torch.no_grad():
            pet = model(t1, csf, cov, None, None)["pet_syn"]
        tm.save_safetensors(a.fixture, {"t1": t1, "csf": csf, "covariates": cov, "pet_syn": pet},
                            {"checkpoint_step": str(state["step"]), "torch": torch.__version__})
        print(f"wrote {a.fixture}")
    if not a.out and not a.fixture:
        ap.error("give OUT.pt and/or --fixture")


if __name__ == "__main__":
    main()
