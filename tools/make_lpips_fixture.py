#!/usr/bin/python3
"""Golden fixture for tests/test_perceptual.cpp: LPIPS v0.1 with a SqueezeNet-1.1 trunk, built
here in PyTorch (torchvision's squeezenet1_1 features when torchvision is installed, else an
equivalent written below with the same parameter names), evaluated in float64.

The ImageNet / LPIPS weights cannot be committed, so every parameter is a formula the C++ test
repeats (it would be 2.9 MB of weights otherwise): for the tensor named `name` (lpips'
state_dict names, e.g. "net.slice2.3.expand3x3.weight") and its flat element i,
  seed = FNV-1a-64(name bytes)
  z    = seed + (i + 1) * 0x9E3779B97F4A7C15               (mod 2^64)
  z    = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^= z >> 31
  u    = (z >> 40) * 2^-24                                  (in [0, 1), exact)
  conv weight: (2u - 1) * sqrt(6 / fan_in)   (He-uniform, so activations neither die nor blow up)
  conv bias:   (2u - 1) * 0.05
  lin weight:  u * 0.1                       (non-negative, as LPIPS's calibration)
each computed in double and rounded once to float32.

Written to tests/fixtures/lpips/lpips_squeeze_golden.safetensors:
  a, b            (3, 1, 40, 32) slices in [0, 1] (taps 19x15, 9x7, 4x3, 2x1 x4: all non-empty, and
                  the last pooling windows are clipped by ceil_mode)
  distance        (3)   LPIPS(a, b) per slice
  per_tap         (7, 3) the seven per-tap terms (their sum is distance)
  grad_a, grad_b  d(sum_n c_n * distance_n)/da, /db with c = (1, -0.5, 2)
  small_a, small_b, small_distance, small_grad_a   the same for (2, 1, 17, 19) slices, the smallest
                  height with a non-empty seventh tap (taps down to 1x1)

Usage: /usr/bin/python3 tools/make_lpips_fixture.py [--out tests/fixtures/lpips]
Needs python3-torch, numpy and `safetensors`; python3-torchvision optional.
"""
import argparse
import os

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

SHIFT = [-0.030, -0.088, -0.188]
SCALE = [0.458, 0.448, 0.450]
CHANNELS = [64, 128, 256, 384, 384, 512, 512]
WEIGHTS_C = [1.0, -0.5, 2.0]
M64 = (1 << 64) - 1


class Fire(nn.Module):
    """torchvision's Fire, same child names."""

    def __init__(self, cin, s, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.expand1x1 = nn.Conv2d(s, e1, 1)
        self.expand3x3 = nn.Conv2d(s, e3, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def squeezenet_features():
    try:
        import torchvision
        return torchvision.models.squeezenet1_1().features, "torchvision " + torchvision.__version__
    except ImportError:
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
        return nn.Sequential(nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), Fire(64, 16, 64, 64), Fire(128, 16, 64, 64),
                             pool(), Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
                             Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
                             Fire(512, 64, 256, 256)), "own Fire modules"


class LpipsSqueeze(nn.Module):
    """lpips.LPIPS(net='squeeze', version='0.1') in eval mode, written out: scaling layer, the
    trunk cut into seven slices, unit normalisation over channels, squared difference, 1x1
    non-negative linear without bias, spatial mean, sum over taps."""

    def __init__(self):
        super().__init__()
        features, self.source = squeezenet_features()
        self.net = nn.Module()
        bounds = [(0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13)]
        for k, (lo, hi) in enumerate(bounds):
            sl = nn.Sequential()
            for x in range(lo, hi):
                sl.add_module(str(x), features[x])
            setattr(self.net, "slice%d" % (k + 1), sl)
        for k, c in enumerate(CHANNELS):
            lin = nn.Module()
            lin.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))
            setattr(self, "lin%d" % k, lin)
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])

    def taps(self, x):
        h = (x.expand(-1, 3, -1, -1) - self.shift) / self.scale
        out = []
        for k in range(7):
            h = getattr(self.net, "slice%d" % (k + 1))(h)
            out.append(h)
        return out

    def forward(self, a, b):
        per_tap = []
        for k, (fa, fb) in enumerate(zip(self.taps(a), self.taps(b))):
            na = fa / (torch.sqrt(torch.sum(fa ** 2, dim=1, keepdim=True)) + 1e-10)
            nb = fb / (torch.sqrt(torch.sum(fb ** 2, dim=1, keepdim=True)) + 1e-10)
            d = getattr(self, "lin%d" % k).model((na - nb) ** 2)
            per_tap.append(d.mean(dim=(2, 3)).flatten())
        return torch.stack(per_tap)


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for byte in name.encode():
        h = ((h ^ byte) * 0x100000001B3) & M64
    return h


def formula_uniform(name, n):
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24


def formula_value(name, shape):
    n = int(np.prod(shape))
    u = formula_uniform(name, n)
    if name.startswith("lin"):
        v = u * 0.1
    elif name.endswith(".bias"):
        v = (2 * u - 1) * 0.05
    else:
        fan_in = int(np.prod(shape[1:]))
        v = (2 * u - 1) * np.sqrt(6.0 / fan_in)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def golden(model, a, b):
    a64 = a.double().requires_grad_(True)
    b64 = b.double().requires_grad_(True)
    per_tap = model(a64, b64)
    dist = per_tap.sum(0)
    (dist * torch.tensor(WEIGHTS_C[: dist.numel()], dtype=torch.float64)).sum().backward()
    assert torch.isfinite(a64.grad).all() and torch.isfinite(b64.grad).all(), "NaN gradient (an all-zero feature pixel)"
    return dist.detach().float(), per_tap.detach().float(), a64.grad.float(), b64.grad.float()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "lpips"))
    args = p.parse_args()
    torch.manual_seed(5)
    model = LpipsSqueeze()
    state = {}
    for name, t in model.state_dict().items():
        if name in ("shift", "scale"):
            continue
        state[name] = formula_value(name, tuple(t.shape))
    model.load_state_dict(state, strict=False)
    n_trunk = sum(v.numel() for k, v in state.items() if k.startswith("net."))
    n_lin = sum(v.numel() for k, v in state.items() if k.startswith("lin"))
    assert (n_trunk, n_lin) == (722496, 2240), (n_trunk, n_lin)
    model = model.double().eval()

    # Smooth-ish slices (a blurred random field) and a perturbed copy, both in [0, 1].
    def slices(n, h, w):
        base = torch.rand(n, 1, h // 4 + 2, w // 4 + 2)
        a = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
        b = (a + 0.15 * torch.randn(n, 1, h, w)).clamp(0, 1)
        return a.clamp(0, 1).float(), b.float()

    a, b = slices(3, 40, 32)
    dist, per_tap, ga, gb = golden(model, a, b)
    sa, sb = slices(2, 17, 19)
    sdist, _, sga, _ = golden(model, sa, sb)
    out = {"a": a, "b": b, "distance": dist, "per_tap": per_tap, "grad_a": ga, "grad_b": gb,
           "small_a": sa, "small_b": sb, "small_distance": sdist, "small_grad_a": sga}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "lpips_squeeze_golden.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path,
              metadata={"trunk": model.source, "torch": torch.__version__})
    print("wrote", os.path.normpath(path), os.path.getsize(path), "bytes; distances", dist.tolist(), sdist.tolist())
    print("per-tap", per_tap.tolist())


if __name__ == "__main__":
    main()
