#!/usr/bin/python3
"""Coefficients of the GELU normal-CDF polynomials in kernels/cpu/vmath.h (normal_cdf_near/far).

S(w) ≈ erf(√w)/√w on w = z² ∈ [0, 4.5] and T(u) ≈ √π·z·e^(z²)·erfc(z) on u = 1/z² ∈ [0, 1/4.5],
both degree 12: Chebyshev least squares (4000 and 3000 evenly spaced points) weighted for relative
error against mpmath references, then converted to monomial coefficients (constant term first).
Prints the coefficients and the largest relative error of the monomial form on a dense grid.
"""
import mpmath as mp
import numpy as np
from numpy.polynomial import chebyshev as C
from numpy.polynomial import polynomial as P

mp.mp.dps = 30


def erf_over_z(w):
    return float(2 / mp.sqrt(mp.pi)) if w == 0 else float(mp.erf(mp.sqrt(w)) / mp.sqrt(w))


def scaled_erfc(u):
    if u == 0:
        return 1.0
    z = 1 / mp.sqrt(u)
    return float(z * mp.erfc(z) * mp.exp(z * z) * mp.sqrt(mp.pi))


def fit(f, hi, deg, n=3000):
    w = np.linspace(0, hi, n)
    y = np.array([f(mp.mpf(float(v))) for v in w])
    c = C.chebfit(w * 2 / hi - 1, y, deg, w=1 / y)
    mono = np.zeros(1)
    basis = np.array([1.0])
    for ck in C.cheb2poly(c):  # substitute s = 2w/hi − 1
        mono = P.polyadd(mono, ck * basis)
        basis = P.polymul(basis, [-1.0, 2 / hi])
    check = np.linspace(0, hi, 7001)
    ref = np.array([f(mp.mpf(float(v))) for v in check])
    return mono, np.max(np.abs(P.polyval(check, mono) / ref - 1))


for name, f, hi, n in [("S (near)", erf_over_z, 4.5, 4000), ("T (far)", scaled_erfc, 1 / 4.5, 3000)]:
    coeffs, err = fit(f, hi, 12, n)
    print(f"{name}: max relative error {err:.2e}")
    print("  " + ", ".join(repr(float(v)) for v in coeffs))
