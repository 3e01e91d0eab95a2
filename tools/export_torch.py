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
  export_torch.py CHECKPOINT OUT.pt --names reference
                                               the layout of the paper's reference code (below)
  export_torch.py CHECKPOINT --fixture OUT.safetensors
                                               tests/fixtures/interop: fixed random inputs and
                                               PyTorch's synthetic PET (ε = 0) for test_golden.cpp
  export_torch.py --check [NAMES.json]         the reference names of the T1 decoder and the
                                               discriminator, built on the meta device for every
                                               preset in NAMES.json (default tests/fixtures/
                                               interop/reference_names.json), against GM's

--names reference writes what the reference's causal_synthesis/scripts/train_unify_causal_gen.py
saves, its networks wrapped in DistributedDataParallel (so their keys start with "module."):

  {"pet_decoder": …, "discriminator": …, "t1_encoder": …, "t1_decoder": …,
   "fusion": …, "config": the torch build's config dict, "cpets": the checkpoint's JSON state}

- t1_decoder, discriminator: exact. The reference builds them from MONAI GenerativeModels (GM):
  autoencoderkl.Decoder and PatchDiscriminator; every tensor gets GM's name (78 and 16 tensors at
  every preset; tests/fixtures/interop/reference_names.json, written by
  tools/make_reference_names_fixture.py, holds GM's names and shapes, and --check compares). A GM
  network built with the reference config's arguments loads them strictly once "module." is
  stripped: `{k.removeprefix("module."): v for k, v in d["t1_decoder"].items()}`.
- t1_encoder, pet_decoder: OUR names (torch_model's Encoder, its demographics MLP included, and
  PETGenerator) under the reference's keys. The reference's classes (a fork's
  DiffusionModelEncoder with a spatial head, atten_decoder.DiffusionModelDecoder) have no public
  source, so their names cannot be known; guessing them would make a file that looks loadable.
- fusion: our FusionMLP, under a key of its own without "module.": the paper's fusion MLP does not
  exist in the reference code, whose context is the raw tabular vector.
- "epoch", "g_optimizer", "d_optimizer" stay behind: the reference's optimiser states index
  parameters by their order in networks whose source is missing; the training position is in
  cpets["position"].

Only model.kind = causal-pets has a PyTorch build. Runs with the torch venv of `cpets.sh bench`
(--check needs PyTorch ≥ 2.0 for the meta device) or Debian's python3-torch.
"""
import argparse
import glob
import json
import os
import re
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model as tm  # noqa: E402

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}
REFERENCE_NAMES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                                                "interop", "reference_names.json"))


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


# ---- the reference's names (--names reference) -------------------------------------------------
# Renaming is by module: a tensor keeps its leaf (weight, bias, running_mean, …) and its module
# path is mapped. The mappings follow GM's module structure, position by position; they were
# checked tensor by tensor, shapes included, against GM's classes built with the reference config
# (tools/make_reference_names_fixture.py), and --check keeps checking them against that list.

def gm_decoder_module(ours, n_blocks):
    """Our T1Decoder module -> GM autoencoderkl.Decoder's. GM keeps everything in one ModuleList
    `blocks`: conv_in first, then the ResBlocks and Upsamples in our order (our block i is its
    i + 1), then norm_out and conv_out. Every convolution is MONAI's Convolution, a Sequential
    holding the Conv3d as `.conv`; the GroupNorms are bare."""
    if ours == "conv_in":
        return "blocks.0.conv"
    if ours == "norm_out":
        return f"blocks.{n_blocks + 1}"
    if ours == "conv_out":
        return f"blocks.{n_blocks + 2}.conv"
    m = re.fullmatch(r"blocks\.(\d+)\.(\w+)", ours)
    if m and m[2] in ("norm1", "norm2"):  # a ResBlock's GroupNorms
        return f"blocks.{int(m[1]) + 1}.{m[2]}"
    if m and m[2] in ("conv1", "conv2", "nin_shortcut", "conv"):  # a ResBlock's convs, an Upsample's conv
        return f"blocks.{int(m[1]) + 1}.{m[2]}.conv"
    return None


def gm_discriminator_module(ours):
    """Our PatchDiscriminator module -> GM PatchDiscriminator's. GM's is a Sequential: initial_conv,
    the strided layers named by their index (our conv k / norm k is layer k - 1, a Convolution whose
    BatchNorm sits in its ADN block as `adn.N`), final_conv."""
    if ours in ("initial_conv", "final_conv"):
        return f"{ours}.conv"
    m = re.fullmatch(r"(conv|norm)(\d+)", ours)
    if m and int(m[2]) >= 1:
        return f"{int(m[2]) - 1}." + ("conv" if m[1] == "conv" else "adn.N")
    return None


def renamed(state, rename, network):
    """state (one network's state_dict) under rename's module names; every tensor must map, and
    to a name of its own."""
    out = {}
    for name, tensor in state.items():
        module, leaf = name.rsplit(".", 1)
        target = rename(module)
        if target is None:
            raise SystemExit(f"export_torch: {network}.{name} has no reference name (the mapping in "
                             f"export_torch.py does not know module {module!r}: extend gm_*_module)")
        target = f"{target}.{leaf}"
        if target in out:
            raise SystemExit(f"export_torch: {network}.{name} and another tensor both map to {target!r} "
                             "(fix gm_*_module in export_torch.py)")
        out[target] = tensor
    return out


def reference_networks(model):
    """The networks under the reference's top-level keys, without "module.": t1_decoder and
    discriminator with GM's names, the others with ours. Every tensor of the model lands once."""
    nets = {"t1_encoder": model.encoder.state_dict(), "pet_decoder": model.pet_generator.state_dict(),
            "fusion": model.fusion.state_dict()}
    if model.t1_decoder is not None:
        n_blocks = len(model.t1_decoder.blocks)
        nets["t1_decoder"] = renamed(model.t1_decoder.state_dict(), lambda m: gm_decoder_module(m, n_blocks),
                                     "t1_decoder")
    if model.discriminator is not None:
        nets["discriminator"] = renamed(model.discriminator.state_dict(), gm_discriminator_module, "discriminator")
    total = sum(len(s) for s in nets.values())
    if total != len(model.state_dict()):  # a network added to CausalPETS and not to this export
        raise SystemExit(f"export_torch: --names reference places {total} of the model's {len(model.state_dict())} "
                         "tensors (add the missing network to reference_networks in export_torch.py)")
    return nets


def reference_checkpoint(model, c, state):
    nets = reference_networks(model)
    # The reference saves DistributedDataParallel-wrapped networks (in this order); fusion is no
    # network of its, so it keeps plain names.
    out = {k: {f"module.{n}": t for n, t in nets[k].items()}
           for k in ("pet_decoder", "discriminator", "t1_encoder", "t1_decoder") if k in nets}
    out.update(fusion=nets["fusion"], config=c, cpets=state)
    return out


def check(path):
    """--check: the reference names of every preset in `path` (GM's names and shapes, written by
    tools/make_reference_names_fixture.py), from torch_model built on the meta device (no memory,
    no monai)."""
    try:
        with open(path) as f:
            expected = json.load(f)["presets"]
    except (OSError, KeyError, ValueError) as e:
        raise SystemExit(f"export_torch --check: cannot read {path} ({e}); write it with "
                         "tools/make_reference_names_fixture.py")
    if not hasattr(torch.device("meta"), "__enter__"):
        raise SystemExit(f"export_torch --check: PyTorch {torch.__version__} has no meta-device context; run it "
                         "with PyTorch >= 2.0 (~/.cache/cpets/torch-venv/bin/python)")
    for preset, networks in expected.items():
        with torch.device("meta"):
            nets = reference_networks(tm.CausalPETS(tm.preset(preset)))
        for network, gm in networks.items():
            got = {n: list(t.shape) for n, t in nets[network].items()}
            want = gm["tensors"]
            problems = ([f"missing {n}" for n in want if n not in got] + [f"extra {n}" for n in got if n not in want] +
                        [f"{n}: shape {got[n]}, GM {want[n]}" for n in want if n in got and got[n] != want[n]])
            if problems:
                raise SystemExit(f"export_torch --check: {path}, preset {preset}, {network}: "
                                 f"{'; '.join(problems[:5])} (fix gm_*_module in export_torch.py, or rewrite the "
                                 "fixture with tools/make_reference_names_fixture.py if torch_model changed)")
            print(f"ok {preset} {network}: {len(got)} tensors with GM's names and shapes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("out", nargs="?", help="the .pt file to write")
    ap.add_argument("--names", choices=["ours", "reference"], default="ours",
                    help="state_dict names of OUT.pt: ours (default) or the reference code's layout")
    ap.add_argument("--fixture", metavar="OUT.safetensors")
    ap.add_argument("--check", nargs="?", const=REFERENCE_NAMES, metavar="NAMES.json",
                    help="check the reference names against GM's and exit (default: %(const)s)")
    a = ap.parse_args()
    if a.check:
        return check(a.check)
    if not a.checkpoint:
        ap.error("give CHECKPOINT (or --check)")
    model, c, state = load(a.checkpoint)
    if a.out:
        if a.names == "reference":
            torch.save(reference_checkpoint(model, c, state), a.out)
        else:
            torch.save({"state_dict": model.state_dict(), "config": c, "cpets": state}, a.out)
        naming = "our names" if a.names == "ours" else "the reference code's names"
        n = sum(p.numel() for p in model.parameters())
        print(f"wrote {a.out}: {n:,} parameters, step {state['step']}, {naming}")
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
