"""Radial basis functions ``R_n(r)`` and ``dR_n/dr`` (numba).

One kernel for every family, selected by an integer code; the parameters of an
element pair are packed in a small float array (see
:mod:`skace.maths.radial`, which owns the definitions and the packing). Every
family vanishes with its first derivative at the cutoff and is zero beyond it.
"""

import math

from numba import njit

AGNESI = 0
BESSEL = 1
GAUSSIAN = 2
CHEBEXP = 3

# layout of one pair's parameter row
P_RIN, P_RCUT, P_R0, P_SHAPE, P_Q, P_P, P_SPACING = 0, 1, 2, 3, 4, 5, 6
N_PARAMS = 7


@njit(cache=True, inline="always")
def _polynomial_envelope(x):
    """``u(x) = 1 - 28 x^6 + 48 x^7 - 21 x^8``: u(1) = u'(1) = u''(1) = 0; returns (u, du/dx)."""
    x2 = x * x
    x5 = x2 * x2 * x
    u = 1.0 + x5 * x * (-28.0 + x * (48.0 - 21.0 * x))
    du = x5 * (-168.0 + x * (336.0 - 168.0 * x))
    return u, du


@njit(cache=True, inline="always")
def _chebyshev_times_envelope(t, dt_dr, envelope, denvelope_dt, n_max, R, dR):
    """``R_n = T_{n-1}(t) * env(t)`` and its r-derivative, for n = 1 .. n_max."""
    T0, T1 = 1.0, t
    dT0, dT1 = 0.0, 1.0
    for n in range(n_max):
        if n == 0:
            T, dT = T0, dT0
        elif n == 1:
            T, dT = T1, dT1
        else:
            T = 2.0 * t * T1 - T0
            dT = 2.0 * T1 + 2.0 * t * dT1 - dT0
            T0, T1 = T1, T
            dT0, dT1 = dT1, dT
        R[n] = T * envelope
        dR[n] = (dT * envelope + T * denvelope_dt) * dt_dr


@njit(cache=True, inline="always")
def _agnesi(r, r0, a, q, p):
    """Agnesi transform ``y = 1 / (1 + a s^q / (1 + s^(q-p)))``, s = r / r0; returns (y, dy/dr)."""
    s = r / r0
    sq = s ** q
    sqp = s ** (q - p)
    g = a * sq / (1.0 + sqp)
    if s > 0.0:
        dg = a * (q * sq / s * (1.0 + sqp) - sq * (q - p) * sqp / s) / (1.0 + sqp) ** 2
    else:
        dg = 0.0
    y = 1.0 / (1.0 + g)
    return y, -dg * y * y / r0


@njit(cache=True)
def radial_with_derivative(family, params, r, n_max, R, dR):
    """Fill ``R[:n_max]`` and ``dR[:n_max]`` at distance ``r`` for one element pair."""
    rc = params[P_RCUT]
    if r >= rc:
        for n in range(n_max):
            R[n] = 0.0
            dR[n] = 0.0
        return
    r_in = params[P_RIN]
    if family == AGNESI:
        r0, a, q, p = params[P_R0], params[P_SHAPE], params[P_Q], params[P_P]
        y, dy = _agnesi(r, r0, a, q, p)
        y_in, _ = _agnesi(r_in, r0, a, q, p)
        y_cut, _ = _agnesi(rc, r0, a, q, p)
        scale = 2.0 / (y_in - y_cut)
        t = scale * (y - y_cut) - 1.0  # -1 at the cutoff, +1 at r_in
        env = 0.25 * (1.0 + t) * (1.0 + t)
        _chebyshev_times_envelope(t, scale * dy, env, 0.5 * (1.0 + t), n_max, R, dR)
    elif family == CHEBEXP:
        lam = params[P_SHAPE]
        e = math.exp(lam * (1.0 - r / rc))
        denom = math.exp(lam) - 1.0
        x = 1.0 - 2.0 * (e - 1.0) / denom  # -1 at r = 0, +1 at the cutoff
        dx = 2.0 * lam / rc * e / denom
        env = 0.25 * (1.0 - x) * (1.0 - x)
        _chebyshev_times_envelope(x, dx, env, -0.5 * (1.0 - x), n_max, R, dR)
    elif family == BESSEL:
        u, du = _polynomial_envelope(r / rc)
        du /= rc
        length = rc - r_in  # the sines span [r_in, r_cut]: resolution where the bonds are
        norm = math.sqrt(2.0 / length)
        s = r - r_in
        for n in range(n_max):
            k = (n + 1) * math.pi / length
            x = k * s
            if abs(x) > 1e-2:
                f = math.sin(x) / s
                df = (k * math.cos(x) - f) / s
            else:  # Taylor series of sin(ks)/s: the quotients lose digits as s -> 0
                x2 = x * x
                f = k * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0))
                df = -k * k * x / 3.0 * (1.0 - x2 / 10.0 * (1.0 - x2 / 28.0))
            R[n] = norm * f * u
            dR[n] = norm * (df * u + f * du)
    else:  # GAUSSIAN
        u, du = _polynomial_envelope(r / rc)
        du /= rc
        spacing = params[P_SPACING]  # fixed by the full basis, so subsets keep their functions
        sigma = params[P_SHAPE] * spacing
        for n in range(n_max):
            mu = r_in + n * spacing
            d = (r - mu) / sigma
            g = math.exp(-0.5 * d * d)
            R[n] = g * u
            dR[n] = -d / sigma * g * u + g * du
