"""Radial basis families and their per-element-pair parameters.

Every family gives ``R_n(r)``, ``n = 1, 2, ...``, smooth on ``[0, r_cut)`` and
vanishing together with its first derivative at ``r_cut``:

``"agnesi"``
    Chebyshev polynomials ``T_{n-1}(t)`` of a transformed distance times the
    envelope ``(1 + t)^2 / 4``. ``t`` is the Agnesi transform
    ``y(r) = 1 / (1 + a s^q / (1 + s^(q-p)))``, ``s = r / r0``, mapped linearly to
    ``t(r_in) = 1``, ``t(r_cut) = -1``. ``r0`` is a bond length of the element
    pair (sum of covalent radii by default), so resolution concentrates where
    the bonds of that pair are. ACE1.jl's choice for molecules (q = 4, p = 2).
``"bessel"``
    ``sqrt(2 / L) sin(n pi s / L) / s`` with ``s = r - r_in``, ``L = r_cut - r_in``
    (with ``r_in = 0`` the spherical Bessel functions of MACE and NequIP), times
    a polynomial envelope ``1 - 28 x^6 + 48 x^7 - 21 x^8``, ``x = r / r_cut``.
    An inner radius puts the sines' resolution on the distances bonds take;
    below it the functions are mirror images of those above (smooth, but with
    no repulsion for atoms pushed closer).
``"gaussian"``
    Gaussians centred evenly on ``[r_in, r_cut]`` (one per radial function of
    the basis) with a width of ``shape`` spacings, times the same polynomial
    envelope.
``"chebexp"``
    ``T_{n-1}(x)`` of an exponentially scaled distance
    ``x = 1 - 2 (exp(lambda (1 - r / r_cut)) - 1) / (exp(lambda) - 1)``
    times ``(1 - x)^2 / 4`` (after pacemaker's ChebExpCos).
"""

import numpy as np
from ase.data import atomic_numbers, covalent_radii

from ..kernels import radial as _k

FAMILIES = {"agnesi": _k.AGNESI, "bessel": _k.BESSEL, "gaussian": _k.GAUSSIAN, "chebexp": _k.CHEBEXP}

#: Default ``shape`` parameter of each family (Agnesi ``a``, Gaussian width in
#: spacings, ChebExp ``lambda``; unused by Bessel).
DEFAULT_SHAPE = {"agnesi": 1.0, "bessel": 0.0, "gaussian": 1.0, "chebexp": 5.0}


def family_code(name):
    """Integer code of radial family ``name`` for the kernels."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"unknown radial_basis {name!r}; choose one of {sorted(FAMILIES)}"
        ) from None


def pair_r0(symbol_i, symbol_j):
    """Bond length scale of an element pair: the sum of covalent radii (Å)."""
    return covalent_radii[atomic_numbers[symbol_i]] + covalent_radii[atomic_numbers[symbol_j]]


def pair_parameters(elements, family, cutoff, inner_cutoff=0.0, r0="covalent", shape=None, q=4.0, p=2.0,
                    n_radial=1):
    """Parameter table of shape ``(n_elements, n_elements, N_PARAMS)`` for the kernels.

    Parameters
    ----------
    elements : sequence of str
        Chemical symbols, in the order used for species indices.
    family : str
        One of :data:`FAMILIES`.
    cutoff, inner_cutoff : float
        ``r_cut`` and ``r_in`` in Å.
    r0 : "covalent" or float
        Per-pair scale (sum of covalent radii) or one value for all pairs.
    shape : float, optional
        Family shape parameter; :data:`DEFAULT_SHAPE` when None.
    q, p : float
        Agnesi exponents.
    n_radial : int
        Number of radial functions of the basis (sets the Gaussian spacing).
    """
    family_code(family)
    if not 0.0 <= inner_cutoff < cutoff:
        raise ValueError(f"need 0 <= inner_cutoff < cutoff, got {inner_cutoff} and {cutoff}")
    shape = DEFAULT_SHAPE[family] if shape is None else float(shape)
    n = len(elements)
    table = np.zeros((n, n, _k.N_PARAMS))
    for a, za in enumerate(elements):
        for b, zb in enumerate(elements):
            row = table[a, b]
            row[_k.P_RIN] = inner_cutoff
            row[_k.P_RCUT] = cutoff
            row[_k.P_R0] = pair_r0(za, zb) if r0 == "covalent" else float(r0)
            row[_k.P_SHAPE] = shape
            row[_k.P_Q] = q
            row[_k.P_P] = p
            row[_k.P_SPACING] = (cutoff - inner_cutoff) / max(n_radial - 1, 1)
    return table
