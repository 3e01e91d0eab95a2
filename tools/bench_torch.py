#!/usr/bin/python3
"""PyTorch reference timings for `cpets-bench ops`, in PyTorch's fastest CPU configuration.

Usage: /usr/bin/python3 tools/bench_torch.py [--threads N] [--quick] [--filter TEXT]
Prints ONE JSON object on stdout: {"torch": version, "config": "...", "seconds": {key: median}};
everything else goes to stderr.

Configurations (each measured, the faster one kept per case, and named in "config"):
  conv3d     — oneDNN through mkldnn tensors (x.to_mkldnn(), torch.utils.mkldnn.to_mkldnn on a
               Conv3d) versus the default dense path (which 1.13 also routes to oneDNN for
               large float convolutions). Backward = input + weight (+ bias) gradients, timed
               with torch.autograd.grad on a saved forward, so the forward is not included.
  groupnorm  — torch.nn.functional.group_norm (native kernel).
  attention  — F.scaled_dot_product_attention (PyTorch 2.x); matmul + softmax + matmul per head on 1.13,
               through whatever BLAS torch links (the system libblas.so.3 alternative:
               OpenBLAS if libopenblas0 is installed, else the slow reference BLAS).
The script re-executes itself under /usr/bin/python3 if started by another interpreter without
torch, without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when those are set (they can make OpenBLAS
pick a slower kernel), and with glibc malloc told to keep freed memory (see _MALLOC_ENV; set
CPETS_TORCH_DEFAULT_MALLOC=1 to measure with glibc's defaults). Only this process's
environment is changed.
"""
import argparse
import json
import os
import statistics
import sys
import time

_SCRUB = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# Fresh pages are very slow to first touch on this VM, and PyTorch's CPU allocator is plain
# malloc: with glibc's defaults every large tensor is a new mmap, faulted in again on every
# call. Keeping freed memory in the heap instead is PyTorch's faster configuration here
# (conv3d 2x16 forward ~18 -> ~13 ms), so it is what we measure against.
_MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20),  # glibc's maximum: blocks up to 32 MB from the heap
    "MALLOC_TRIM_THRESHOLD_": str(64 << 30),  # never give freed heap memory back
    "MALLOC_TOP_PAD_": str(1 << 30),
}


def _reexec_if_needed():
    want_python = sys.executable
    try:
        import torch  # noqa: F401
    except ImportError:
        if os.path.realpath(sys.executable) == os.path.realpath("/usr/bin/python3"):
            raise
        want_python = "/usr/bin/python3"
    scrub = [k for k in _SCRUB if k in os.environ] if os.environ.get("CPETS_KEEP_OPENBLAS_ENV") != "1" else []
    add = {} if os.environ.get("CPETS_TORCH_DEFAULT_MALLOC") == "1" else {
        k: v for k, v in _MALLOC_ENV.items() if os.environ.get(k) != v}
    if want_python != sys.executable or scrub or add:
        env = {k: v for k, v in os.environ.items() if k not in scrub}
        env.update(add)
        if scrub:
            print(f"bench_torch: unsetting {', '.join(scrub)} for this process", file=sys.stderr)
        os.execve(want_python, [want_python, os.path.abspath(__file__)] + sys.argv[1:], env)


_reexec_if_needed()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def wanted(text, family, keys):
    """--filter is matched loosely: cpets-bench passes its own case-name filter (e.g. "conv3d
    2x16"), so a family runs when its name occurs in the text, or the text in a key or name."""
    t = text.lower().strip()
    return not t or family in t or t in family or any(t.replace(" ", "_") in k for k in keys)


# ---------------------------------------------------------------------------------------------
# conv3d 3x3x3, padding 1, bias
def conv_cases(quick):
    return [
        (2, 16, 16, (48, 64, 48), True, 5),
        (1, 64, 64, (96, 128, 96), not quick, 1 if quick else 3),
    ]


def bench_conv_dense(B, cin, cout, size, with_bwd, repeats):
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(cin, cout, 3, padding=1, bias=True)
    x = torch.randn(B, cin, *size)
    out = {}
    with torch.no_grad():
        out["fwd"] = median_time(lambda: conv(x), repeats)
    if with_bwd:
        xg = x.clone().requires_grad_(True)
        y = conv(xg)
        g = torch.randn_like(y)
        params = [xg, conv.weight, conv.bias]
        out["bwd"] = median_time(lambda: torch.autograd.grad(y, params, g, retain_graph=True), repeats)
    return out


def bench_conv_mkldnn(B, cin, cout, size, with_bwd, repeats):
    """Forward on mkldnn (blocked-layout) tensors with a weight-prepacked Conv3d; backward
    through the explicit oneDNN backward op on mkldnn-layout inputs where 1.13 has one."""
    from torch.utils import mkldnn as mkldnn_utils

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(cin, cout, 3, padding=1, bias=True).eval()
    x = torch.randn(B, cin, *size)
    out = {}
    with torch.no_grad():
        mconv = mkldnn_utils.to_mkldnn(conv)
        xm = x.to_mkldnn()
        out["fwd"] = median_time(lambda: mconv(xm), repeats)
    if with_bwd:
        # torch.mkldnn_convolution has an autograd backward (mkldnn_convolution_backward) on
        # dense tensors; this forces the oneDNN kernels for both gradients.
        xg = x.clone().requires_grad_(True)
        w = conv.weight.detach().clone().requires_grad_(True)
        b = conv.bias.detach().clone().requires_grad_(True)
        y = torch.mkldnn_convolution(xg, w, b, (1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
        g = torch.randn_like(y)
        out["bwd"] = median_time(lambda: torch.autograd.grad(y, [xg, w, b], g, retain_graph=True), repeats)
    return out


def run_conv(args, seconds, configs):
    for B, cin, cout, size, with_bwd, repeats in conv_cases(args.quick):
        tag = f"{B}x{cin}x{cout}_{size[0]}x{size[1]}x{size[2]}"
        keys = {"fwd": f"conv3d_fwd_{tag}", "bwd": f"conv3d_bwd_{tag}"}
        if not wanted(args.filter, "conv3d", keys.values()):
            continue
        results = {}
        for name, fn in (("dense", bench_conv_dense), ("mkldnn", bench_conv_mkldnn)):
            try:
                results[name] = fn(B, cin, cout, size, with_bwd, repeats)
                log(f"conv3d {tag} [{name}]: " + ", ".join(f"{k} {v*1e3:.1f} ms" for k, v in results[name].items()))
            except Exception as e:  # a path 1.13 does not support here: keep the other
                log(f"conv3d {tag} [{name}] failed: {e}")
        for phase, key in keys.items():
            best = min(((r[phase], n) for n, r in results.items() if phase in r), default=None)
            if best:
                seconds[key] = best[0]
                configs.append(f"{key}: {best[1]}")


# ---------------------------------------------------------------------------------------------
def run_groupnorm(args, seconds, configs):
    keys = ("groupnorm_fwd_2x32g8_48x64x48", "groupnorm_bwd_2x32g8_48x64x48")
    if not wanted(args.filter, "groupnorm", keys):
        return
    torch.manual_seed(0)
    repeats = 3 if args.quick else 7
    x = torch.randn(2, 32, 48, 64, 48)
    gamma, beta = torch.randn(32), torch.randn(32)
    with torch.no_grad():
        seconds[keys[0]] = median_time(lambda: F.group_norm(x, 8, gamma, beta, 1e-5), repeats)
    xg = x.clone().requires_grad_(True)
    gg, bg = gamma.clone().requires_grad_(True), beta.clone().requires_grad_(True)
    y = F.group_norm(xg, 8, gg, bg, 1e-5)
    g = torch.randn_like(y)
    seconds[keys[1]] = median_time(lambda: torch.autograd.grad(y, [xg, gg, bg], g, retain_graph=True), repeats)
    configs.append("groupnorm: F.group_norm (native)")


# ---------------------------------------------------------------------------------------------
# PyTorch 2.x users get the fused scaled_dot_product_attention (the figure to beat); 1.13 has
# only matmul + softmax + matmul per head.
HAVE_SDPA = hasattr(F, "scaled_dot_product_attention")


def attention(q, k, v, heads):
    B, N, C = q.shape
    d = C // heads
    split = lambda t: t.view(B, N, heads, d).transpose(1, 2)  # (B, h, N, d)
    if HAVE_SDPA:
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))
    else:
        s = torch.matmul(split(q), split(k).transpose(-1, -2)) * (d ** -0.5)
        o = torch.matmul(torch.softmax(s, dim=-1), split(v))
    return o.transpose(1, 2).reshape(B, N, C)


def run_attention(args, seconds, configs):
    keys = ("attention_fwd_2x2304x128h4", "attention_fwdbwd_2x2304x128h4")
    if not wanted(args.filter, "attention", keys):
        return
    torch.manual_seed(0)
    repeats = 3 if args.quick else 7
    q, k, v = (torch.randn(2, 2304, 128) for _ in range(3))
    with torch.no_grad():
        seconds[keys[0]] = median_time(lambda: attention(q, k, v, 4), repeats)
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

    def fwdbwd():
        o = attention(qg, kg, vg, 4)
        torch.autograd.grad(o, [qg, kg, vg], torch.ones_like(o))

    seconds[keys[1]] = median_time(fwdbwd, repeats)
    configs.append("attention: F.scaled_dot_product_attention" if HAVE_SDPA else
                   f"attention: matmul+softmax (no scaled_dot_product_attention in {torch.__version__}), BLAS {blas_name()}")


def cpu_capability():
    """The instruction-set level PyTorch's own CPU kernels run at (2.x), e.g. AVX2 or AVX512."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return "unknown (PyTorch " + torch.__version__ + ")"


def blas_name():
    try:
        return os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds, configs = {}, []
    run_conv(args, seconds, configs)
    run_groupnorm(args, seconds, configs)
    run_attention(args, seconds, configs)
    malloc = "default glibc malloc" if os.environ.get("CPETS_TORCH_DEFAULT_MALLOC") == "1" else \
        "glibc malloc keeping freed memory (" + " ".join(f"{k}={v}" for k, v in _MALLOC_ENV.items()) + ")"
    config = (f"{args.threads} threads; mkldnn enabled={torch.backends.mkldnn.enabled}; {malloc}; " +
              "; ".join(configs))
    print(json.dumps({"torch": torch.__version__, "cpu_capability": cpu_capability(), "config": config,
                      "seconds": seconds}))


if __name__ == "__main__":
    main()
