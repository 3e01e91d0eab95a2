#!/usr/bin/python3
"""Golden values for eval/metrics and eval/stats (tests/test_metrics.cpp).

Writes tests/fixtures/metrics/metrics.json. The test volumes are not stored: both this script and
the C++ test build them from the same integer formula (`test_volume` below, `test_volume` in the
test), whose values q/1024 are exact in float32, so the fixture holds only numbers.

The reference algorithm is torchmetrics' SSIM / MS-SSIM (reference-implementation.md §5.2, the
current torchmetrics `_ssim_update` and `_multiscale_ssim_update`), written out here with torch
in float64 because torchmetrics itself is not installed: reflect padding by (k − 1)/2, a full
3-D Gaussian kernel (outer product of the normalised 1-D taps, k = 2·int(3.5σ + 0.5) + 1),
conv3d, σ² clamped at 0, SSIM = mean of the full map, cs = mean without the border, ReLU,
avg_pool3d(2) between scales, Π cs_i^β_i · ssim_5^β_5. The C++ code uses separable passes and
reflection by index tables instead, so the two are independent implementations.

Statistics come from scipy (ttest_rel, pearsonr, t.cdf, betainc).

Usage: /usr/bin/python3 tools/make_metric_fixtures.py [--out tests/fixtures/metrics/metrics.json]
"""
import argparse
import json
import math
import os

import numpy as np
import scipy.special
import scipy.stats
import torch
import torch.nn.functional as F

MASK32 = 0xFFFFFFFF
BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def hash32(seed, idx):
    """lowbias32 of (index·0x9E3779B1 + seed·0x85EBCA77) mod 2^32; idx is a uint64 array."""
    x = (idx * np.uint64(0x9E3779B1) + np.uint64((seed * 0x85EBCA77) & MASK32)) & np.uint64(MASK32)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(MASK32)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & np.uint64(MASK32)
    x ^= x >> np.uint64(16)
    return x


def test_volume(shape, seed):
    """(real, synthetic) float32 volumes of `shape` (D, H, W): an ellipsoid 'brain' with stripes,
    noise from an integer hash, and a synthetic copy with a bias and more noise; values q/1024."""
    D, H, W = shape
    d, h, w = np.meshgrid(np.arange(D, dtype=np.int64), np.arange(H, dtype=np.int64),
                          np.arange(W, dtype=np.int64), indexing="ij")
    e = (2 * d + 1 - D) ** 2 * (H * H * W * W) + (2 * h + 1 - H) ** 2 * (D * D * W * W) \
        + (2 * w + 1 - W) ** 2 * (D * D * H * H)
    inside = 5 * e < 4 * (D * D * H * H * W * W)
    stripes = (d // 4 + h // 6 + w // 5) % 3
    idx = np.arange(D * H * W, dtype=np.uint64).reshape(shape)
    n1 = (hash32(seed, idx) % np.uint64(61)).astype(np.int64)
    n2 = (hash32(seed + 1, idx) % np.uint64(201)).astype(np.int64)
    q_real = np.where(inside, 300 + 250 * stripes + n1, n1 % 9)
    q_syn = np.clip(q_real + n2 - 100 + np.where(inside, 40, 0), 0, 1024)
    return (q_real / 1024.0).astype(np.float32), (q_syn / 1024.0).astype(np.float32)


def gaussian_window(sigma):
    return int(3.5 * sigma + 0.5) * 2 + 1


def gaussian_kernel_3d(sigma, dtype):
    k = gaussian_window(sigma)
    dist = torch.arange((1 - k) / 2, (1 + k) / 2, 1, dtype=dtype)
    g = torch.exp(-torch.pow(dist / sigma, 2) / 2)
    g = g / g.sum()
    return (g[:, None, None] * g[None, :, None] * g[None, None, :])[None, None]


def gaussian_conv(stack, sigma, dtype, separable):
    """Valid 3-D convolution with the Gaussian: one full k³ kernel as torchmetrics does, or (for
    the large volumes, where PyTorch's float64 conv3d would unfold k³ copies of the volume) the
    same kernel as three 1-D passes."""
    if not separable:
        return F.conv3d(stack, gaussian_kernel_3d(sigma, dtype))
    g = gaussian_kernel_3d(sigma, dtype)[0, 0]
    g1 = g.sum(dim=(1, 2)) / g.sum()
    k = g1.numel()
    out = stack
    for view in ((k, 1, 1), (1, k, 1), (1, 1, k)):
        out = torch.cat([F.conv3d(c, g1.reshape(1, 1, *view)) for c in out.split(1)])
    return out


def ssim_and_cs(x, y, sigma, dtype, k1=0.01, k2=0.03, data_range=1.0, separable=False):
    """torchmetrics' _ssim_update(return_contrast_sensitivity=True) for one 3-D volume."""
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    k = gaussian_window(sigma)
    p = (k - 1) // 2
    x = F.pad(x, (p, p, p, p, p, p), mode="reflect")
    y = F.pad(y, (p, p, p, p, p, p), mode="reflect")
    out = gaussian_conv(torch.cat((x, y, x * x, y * y, x * y)), sigma, dtype, separable)
    mu_x, mu_y, exx, eyy, exy = out.split(1)
    mu_x2, mu_y2, mu_xy = mu_x.pow(2), mu_y.pow(2), mu_x * mu_y
    vx = torch.clamp(exx - mu_x2, min=0.0)
    vy = torch.clamp(eyy - mu_y2, min=0.0)
    cov = exy - mu_xy
    upper = 2 * cov + c2
    lower = vx + vy + c2
    ssim_map = ((2 * mu_xy + c1) * upper) / ((mu_x2 + mu_y2 + c1) * lower)
    cs_map = (upper / lower)[..., p:-p, p:-p, p:-p]
    return ssim_map.mean().item(), cs_map.mean().item()


def ms_ssim(x, y, sigma, dtype):
    mcs = []
    sim = None
    for _ in BETAS:
        sim, cs = ssim_and_cs(x, y, sigma, dtype, separable=x.numel() > 200000)
        mcs.append(max(cs, 0.0))
        x = F.avg_pool3d(x, (2, 2, 2))
        y = F.avg_pool3d(y, (2, 2, 2))
    mcs[-1] = max(sim, 0.0)
    return float(np.prod([m ** b for m, b in zip(mcs, BETAS)]))


def as_tensor(v, dtype):
    return torch.from_numpy(v.astype(np.float64)).to(dtype)[None, None]


def centred_pad(v, target):
    """MONAI SpatialPad(symmetric): before = (target − n)//2 (io::pad_crop_to)."""
    pads = [((t - n) // 2, t - n - (t - n) // 2) for n, t in zip(v.shape, target)]
    return np.pad(v, pads)


def check_separable_equals_full():
    real, syn = test_volume((15, 16, 17), 9)
    for sigma in (1.5, 0.5):
        a = ssim_and_cs(as_tensor(syn, torch.float64), as_tensor(real, torch.float64), sigma, torch.float64)
        b = ssim_and_cs(as_tensor(syn, torch.float64), as_tensor(real, torch.float64), sigma, torch.float64,
                        separable=True)
        assert abs(a[0] - b[0]) < 1e-13 and abs(a[1] - b[1]) < 1e-13, (a, b)


def image_case(shape, seed, sigmas, with_ms):
    real, syn = test_volume(shape, seed)
    diff = syn.astype(np.float64) - real.astype(np.float64)
    case = {"shape": list(shape), "seed": seed, "mae": float(np.abs(diff).mean()),
            "mse": float((diff ** 2).mean()), "checksum_real": float(real.astype(np.float64).sum()),
            "checksum_syn": float(syn.astype(np.float64).sum())}
    case["psnr"] = 10 * math.log10(1.0 / case["mse"])
    for sigma in sigmas:
        key = "sigma_%g" % sigma
        big = real.size > 200000
        s64, cs64 = ssim_and_cs(as_tensor(syn, torch.float64), as_tensor(real, torch.float64), sigma, torch.float64,
                                separable=big)
        s32, _ = ssim_and_cs(as_tensor(syn, torch.float32), as_tensor(real, torch.float32), sigma, torch.float32,
                             separable=big)
        # cs is the mean of an empty map (NaN) when an axis is not longer than 2·pad: JSON null.
        case[key] = {"ssim": s64, "cs": None if math.isnan(cs64) else cs64, "ssim_float32": s32}
        if with_ms:
            case[key]["ms_ssim"] = ms_ssim(as_tensor(syn, torch.float64), as_tensor(real, torch.float64), sigma,
                                           torch.float64)
    return case


def padded_ms_case(shape, seed, sigma, target):
    real, syn = test_volume(shape, seed)
    value = ms_ssim(as_tensor(centred_pad(syn, target), torch.float64),
                    as_tensor(centred_pad(real, target), torch.float64), sigma, torch.float64)
    return {"shape": list(shape), "seed": seed, "sigma": sigma, "padded_shape": list(target), "ms_ssim": value}


def stats_cases():
    rng = np.random.default_rng(5)
    cases = []
    for n, shift in ((5, 0.3), (12, 0.05), (30, -0.02), (3, 1.0)):
        a = np.round(rng.normal(0.1, 0.03, n), 6)
        b = np.round(a + shift * 0.1 + rng.normal(0, 0.02, n), 6)
        t = scipy.stats.ttest_rel(a, b)
        r = scipy.stats.pearsonr(a, b)
        cases.append({"a": a.tolist(), "b": b.tolist(), "t": float(t.statistic), "p": float(t.pvalue),
                      "dof": n - 1, "pearson_r": float(r[0]), "pearson_p": float(r[1]),
                      "mean_a": float(a.mean()), "std_a_pop": float(a.std()), "std_a_sample": float(a.std(ddof=1))})
    t_cdf = [{"t": t, "dof": dof, "cdf": float(scipy.stats.t.cdf(t, dof))}
             for t, dof in ((0.0, 1), (1.0, 1), (-2.5, 3), (2.1, 10), (-0.7, 29), (4.0, 4), (12.0, 7), (-30.0, 2),
                            (1.96, 1000), (0.3, 0.5))]
    betainc = [{"a": a, "b": b, "x": x, "value": float(scipy.special.betainc(a, b, x))}
               for a, b, x in ((0.5, 0.5, 0.3), (2.0, 3.0, 0.4), (5.0, 0.5, 0.9), (0.5, 14.5, 0.01),
                               (10.0, 10.0, 0.5), (30.0, 2.0, 0.97), (1.0, 1.0, 0.25))]
    return {"paired": cases, "t_cdf": t_cdf, "betainc": betainc}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "metrics", "metrics.json"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    check_separable_equals_full()
    fixture = {
        "generator": "tools/make_metric_fixtures.py (torchmetrics SSIM/MS-SSIM algorithm in float64; scipy %s)"
                     % scipy.__version__,
        "betas": list(BETAS),
        "ssim": [image_case((13, 17, 19), 1, (1.5, 0.5), False),
                 image_case((7, 9, 11), 2, (1.5, 0.5), False),
                 image_case((6, 33, 8), 3, (1.5, 0.5), False)],
        "ms_ssim": [image_case((48, 80, 80), 4, (0.5,), True),
                    image_case((49, 81, 83), 5, (0.5,), True),
                    image_case((96, 176, 176), 6, (1.5,), True)],
        "ms_ssim_padded": [padded_ms_case((48, 64, 48), 7, 0.5, (48, 80, 80))],
        "stats": stats_cases(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=1, allow_nan=False)
        f.write("\n")
    print("wrote", os.path.abspath(args.out))


if __name__ == "__main__":
    main()
