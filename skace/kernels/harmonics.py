"""Real spherical harmonics of a direction and their gradient (numba).

Same functions as :mod:`skace.maths.spherical_harmonics`, evaluated with the
Cartesian recurrence on ``Q_l^m(z)`` (the associated Legendre polynomials with
the ``sin^m`` factor taken out) times ``Re/Im (x + i y)^m``. No angles are
used, so there is no singularity at the poles.

The gradient is taken with respect to the (unnormalised) vector ``r``. For any
function ``F`` of ``(x, y, z)`` that equals ``Y`` on the unit sphere,
``dY/dr = (grad F - (u . grad F) u) / |r|`` with ``u = r / |r|``.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True)
def harmonic_prefactors(l_max):
    """Normalisation ``N_l^m * sqrt(2)**(m > 0)`` (no Condon-Shortley sign)."""
    out = np.empty((l_max + 1, l_max + 1))
    for l in range(l_max + 1):
        for m in range(l + 1):
            ratio = 1.0  # (l - m)! / (l + m)!
            for k in range(l - m + 1, l + m + 1):
                ratio /= k
            c = math.sqrt((2 * l + 1) / (4.0 * math.pi) * ratio)
            if m > 0:
                c *= math.sqrt(2.0)
            out[l, m] = c
    return out


@njit(cache=True)
def real_harmonics_with_gradient(r, l_max, prefactors, Y, dY):
    """Fill ``Y[(l_max+1)**2]`` and ``dY[(l_max+1)**2, 3]`` for vector ``r``.

    ``prefactors`` comes from :func:`harmonic_prefactors`. The vector must be
    non-zero; ``Y`` holds the harmonics of its direction.
    """
    rn = math.sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2])
    x = r[0] / rn
    y = r[1] / rn
    z = r[2] / rn
    # Q[l, m] and dQ/dz: Legendre part without the sin^m factor
    Q = np.zeros((l_max + 1, l_max + 1))
    dQ = np.zeros((l_max + 1, l_max + 1))
    Q[0, 0] = 1.0
    for m in range(1, l_max + 1):
        # no Condon-Shortley sign: the real harmonics absorb it
        Q[m, m] = (2 * m - 1) * Q[m - 1, m - 1]
    for m in range(0, l_max):
        Q[m + 1, m] = (2 * m + 1) * z * Q[m, m]
        dQ[m + 1, m] = (2 * m + 1) * Q[m, m]
    for m in range(0, l_max + 1):
        for l in range(m + 2, l_max + 1):
            Q[l, m] = ((2 * l - 1) * z * Q[l - 1, m] - (l + m - 1) * Q[l - 2, m]) / (l - m)
            dQ[l, m] = ((2 * l - 1) * (Q[l - 1, m] + z * dQ[l - 1, m]) - (l + m - 1) * dQ[l - 2, m]) / (l - m)
    # c_m + i s_m = (x + i y)^m
    c = np.empty(l_max + 1)
    s = np.empty(l_max + 1)
    c[0] = 1.0
    s[0] = 0.0
    for m in range(1, l_max + 1):
        c[m] = x * c[m - 1] - y * s[m - 1]
        s[m] = x * s[m - 1] + y * c[m - 1]
    for l in range(l_max + 1):
        base = l * l + l
        for m in range(0, l + 1):
            p = prefactors[l, m]
            q = Q[l, m]
            dq = dQ[l, m]
            if m == 0:
                gx = 0.0
                gy = 0.0
                gz = p * dq
                Y[base] = p * q
                _tangential(Y, dY, base, gx, gy, gz, x, y, z, rn)
            else:
                # cos part at +m, sin part at -m
                Y[base + m] = p * q * c[m]
                gx = p * q * m * c[m - 1]
                gy = -p * q * m * s[m - 1]
                gz = p * dq * c[m]
                _tangential(Y, dY, base + m, gx, gy, gz, x, y, z, rn)
                Y[base - m] = p * q * s[m]
                gx = p * q * m * s[m - 1]
                gy = p * q * m * c[m - 1]
                gz = p * dq * s[m]
                _tangential(Y, dY, base - m, gx, gy, gz, x, y, z, rn)


@njit(cache=True, inline="always")
def _tangential(Y, dY, k, gx, gy, gz, x, y, z, rn):
    radial = gx * x + gy * y + gz * z
    dY[k, 0] = (gx - radial * x) / rn
    dY[k, 1] = (gy - radial * y) / rn
    dY[k, 2] = (gz - radial * z) / rn
