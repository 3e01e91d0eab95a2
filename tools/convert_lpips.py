#!/usr/bin/python3
"""Converts the LPIPS-squeeze perceptual network's weights into the safetensors file that cpets
loads (models/perceptual.h, load_lpips_squeeze): point the config's train.perceptual_weights at
the output file.

Two inputs, neither of which ships with cpets or can be fetched by it (it runs offline):
  --squeezenet  torchvision's ImageNet SqueezeNet 1.1, the file torchvision downloads for
                squeezenet1_1(weights="IMAGENET1K_V1"):
                  https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth
                (or, where torchvision is installed and online, ~/.cache/torch/hub/checkpoints/
                after `torchvision.models.squeezenet1_1(weights="IMAGENET1K_V1")`).
                A saved lpips.LPIPS(net="squeeze").state_dict() (keys "net.sliceK.…") is
                accepted as well.
  --lpips       the LPIPS v0.1 linear calibration, weights/v0.1/squeeze.pth of the lpips
                package: `pip download --no-deps lpips==0.1.4` and unzip the wheel (the file is
                lpips/weights/v0.1/squeeze.pth), or from github.com/richzhang/PerceptualSimilarity
                (lpips/weights/v0.1/squeeze.pth). Default: the installed lpips package's copy.

Name mapping (the lpips package's own state_dict names, so a cpets file and an lpips model
interchange):
  features.0.{weight,bias}                      -> net.slice1.0.{weight,bias}
  features.N.{squeeze,expand1x1,expand3x3}.*    -> net.sliceK.N.…   with K = 2 for N in 3..4,
                                                   3 for 6..7, 4 for 9, 5 for 10, 6 for 11, 7 for 12
  lin{k}.model.1.weight (k = 0..6)              -> lin{k}.model.1.weight
  classifier.* of torchvision's file            -> dropped (LPIPS uses features only)
Shapes: 2-D conv weights (Cout, Cin, kH, kW) become (Cout, Cin, 1, kH, kW) and the lin weights
(1, C, 1, 1) become (1, C, 1, 1, 1): cpets runs the 2-D network as 3-D convolutions of depth 1.
Checked: every tensor present with the SqueezeNet-1.1 shape, 722,496 trunk and 2,240 lin
parameters, lin weights non-negative. Metadata records the inputs' SHA-256.

Usage: /usr/bin/python3 tools/convert_lpips.py --squeezenet squeezenet1_1-b8a52dc0.pth \\
           --lpips squeeze.pth --out lpips_squeeze.safetensors
Needs python3-torch (to read the .pth pickles) and numpy; writes safetensors itself.
"""
import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np
import torch

# (features index, in, squeeze, expand) of SqueezeNet 1.1's Fire modules.
FIRES = [(3, 64, 16, 64), (4, 128, 16, 64), (6, 128, 32, 128), (7, 256, 32, 128), (9, 256, 48, 192),
         (10, 384, 48, 192), (11, 384, 64, 256), (12, 512, 64, 256)]
SLICE_OF = {0: 1, 3: 2, 4: 2, 6: 3, 7: 3, 9: 4, 10: 5, 11: 6, 12: 7}
LIN_CHANNELS = [64, 128, 256, 384, 384, 512, 512]


def expected_trunk():
    """torchvision name -> 4-D (or 1-D) shape, in network order."""
    shapes = {"features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,)}
    for idx, cin, s, e in FIRES:
        for part, ci, co, k in (("squeeze", cin, s, 1), ("expand1x1", s, e, 1), ("expand3x3", s, e, 3)):
            shapes["features.%d.%s.weight" % (idx, part)] = (co, ci, k, k)
            shapes["features.%d.%s.bias" % (idx, part)] = (co,)
    return shapes


def cpets_name(tv_name):
    idx = int(tv_name.split(".")[1])
    return "net.slice%d.%s" % (SLICE_OF[idx], tv_name[len("features."):])


def load_pth(path, what):
    if not os.path.isfile(path):
        sys.exit("convert_lpips: %s file %s does not exist (see --help for where to get it)" % (what, path))
    obj = torch.load(path, map_location="cpu")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        sys.exit("convert_lpips: %s file %s holds a %s, not a state_dict" % (what, path, type(obj).__name__))
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def trunk_from(state, path):
    """The 50 trunk tensors under torchvision names, from a torchvision or an lpips state_dict."""
    if any(k.startswith("net.slice") for k in state):  # an LPIPS state_dict: map back
        inverse = {cpets_name(k): k for k in expected_trunk()}
        state = {inverse[k]: v for k, v in state.items() if k in inverse}
    out, problems = {}, []
    for name, shape in expected_trunk().items():
        if name not in state:
            problems.append("missing " + name)
        elif tuple(state[name].shape) != shape:
            problems.append("%s has shape %s, SqueezeNet 1.1 has %s" % (name, tuple(state[name].shape), shape))
        else:
            out[name] = state[name].float()
    if problems:
        sys.exit("convert_lpips: %s is not torchvision's squeezenet1_1 (1.0 has other shapes):\n  %s"
                 % (path, "\n  ".join(problems[:10] + (["…"] if len(problems) > 10 else []))))
    return out


def lins_from(state, path):
    out, problems = {}, []
    for k, c in enumerate(LIN_CHANNELS):
        name = "lin%d.model.1.weight" % k
        t = state.get(name, state.get("lins.%d.model.1.weight" % k))
        if t is None:
            problems.append("missing " + name)
        elif tuple(t.shape) != (1, c, 1, 1):
            problems.append("%s has shape %s, want (1, %d, 1, 1)" % (name, tuple(t.shape), c))
        elif (t < 0).any():
            problems.append("%s has negative entries; LPIPS's calibration is non-negative" % name)
        else:
            out[name] = t.float()
    if problems:
        sys.exit("convert_lpips: %s is not LPIPS v0.1's squeeze.pth:\n  %s" % (path, "\n  ".join(problems)))
    return out


def save_safetensors(path, tensors, metadata):
    """The safetensors layout (F32, little-endian), tensors sorted by name; atomic rename."""
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name].detach().cpu().numpy().astype("<f4")).tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_lpips_path():
    try:
        import lpips  # noqa: F401  (only to find its bundled weights)
    except Exception:
        return None
    return os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "squeeze.pth")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--squeezenet", required=True, help="torchvision squeezenet1_1 ImageNet weights (.pth)")
    p.add_argument("--lpips", default=None, help="lpips weights/v0.1/squeeze.pth (default: the installed lpips package's)")
    p.add_argument("--out", required=True, help="output .safetensors for cpets")
    args = p.parse_args()
    trunk = trunk_from(load_pth(args.squeezenet, "SqueezeNet"), args.squeezenet)
    lpips_path = args.lpips or default_lpips_path()
    if lpips_path is None:
        sys.exit("convert_lpips: no --lpips given and the lpips package is not installed; see --help for where to get "
                 "squeeze.pth")
    lins = lins_from(load_pth(lpips_path, "LPIPS"), lpips_path)
    out = {}
    for name, t in trunk.items():
        out[cpets_name(name)] = t.unsqueeze(2) if t.dim() == 4 else t
    for name, t in lins.items():
        out[name] = t.unsqueeze(2)
    n_trunk = sum(t.numel() for k, t in out.items() if k.startswith("net."))
    n_lin = sum(t.numel() for k, t in out.items() if k.startswith("lin"))
    assert (n_trunk, n_lin) == (722496, 2240), (n_trunk, n_lin)
    meta = {"format": "cpets lpips-squeeze v1", "squeezenet_sha256": sha256(args.squeezenet),
            "lpips_sha256": sha256(lpips_path)}
    save_safetensors(args.out, out, meta)
    print("wrote %s: %d tensors, %d trunk + %d lin parameters" % (args.out, len(out), n_trunk, n_lin))


if __name__ == "__main__":
    main()
