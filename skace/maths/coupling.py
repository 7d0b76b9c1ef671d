"""Coupling coefficients: O(3)-invariant tensors over products of real harmonics.

A product of atomic-base functions ``prod_t A[v_t, m_t]`` with angular degrees
``l_1 .. l_nu`` is made rotation invariant by contracting its m-indices with an
invariant tensor ``C[m_1, ..., m_nu]``. This module builds an orthonormal basis
of those tensors:

1. complex invariants by recursive Clebsch-Gordan coupling
   ``l_1 (x) l_2 -> L_2, L_2 (x) l_3 -> L_3, ..., -> 0`` (one per path of
   intermediate ``L``), from the exact Racah formula;
2. conversion to the real harmonics of :mod:`skace.maths.spherical_harmonics`;
   the real and imaginary parts of the converted tensors span the real
   invariants, and an SVD returns an orthonormal basis of them;
3. symmetrisation over the permutations that swap equal factors (``v_s = v_t``),
   after which an SVD keeps a basis of what survives, so the features of one
   multiset are linearly independent.

Reflection invariance needs ``sum(l)`` even; callers only ask for such tuples.
"""

import itertools
from fractions import Fraction
from functools import lru_cache
from math import factorial, sqrt

import numpy as np

from .spherical_harmonics import real_from_complex

#: Relative singular-value threshold below which a direction is dropped.
RANK_TOL = 1e-9


@lru_cache(maxsize=None)
def clebsch_gordan(l1, l2, L):
    """Complex Clebsch-Gordan coefficients ``<l1 m1 l2 m2 | L M>``.

    Returns
    -------
    ndarray of shape (2*l1+1, 2*l2+1, 2*L+1)
        Indexed by ``m1 + l1, m2 + l2, M + L``; zero where ``M != m1 + m2``.
    """
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * L + 1))
    if not abs(l1 - l2) <= L <= l1 + l2:
        return out
    f = factorial
    pre = Fraction(
        (2 * L + 1) * f(L + l1 - l2) * f(L - l1 + l2) * f(l1 + l2 - L),
        f(l1 + l2 + L + 1),
    )
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            M = m1 + m2
            if abs(M) > L:
                continue
            norm = pre * f(L + M) * f(L - M) * f(l1 - m1) * f(l1 + m1) * f(l2 - m2) * f(l2 + m2)
            total = Fraction(0)
            for k in range(0, l1 + l2 - L + 1):
                args = (k, l1 + l2 - L - k, l1 - m1 - k, l2 + m2 - k, L - l2 + m1 + k, L - l1 - m2 + k)
                if min(args) < 0:
                    continue
                den = 1
                for a in args:
                    den *= f(a)
                total += Fraction((-1) ** k, den)
            # sqrt(norm) * total, keeping the exact rational as long as possible
            out[m1 + l1, m2 + l2, M + L] = float(total) * sqrt(norm)
    return out


def coupling_paths(ls):
    """All admissible intermediate-``L`` paths that couple ``ls`` to zero.

    A path is a tuple ``(L_2, ..., L_{nu-1})``; for ``nu <= 2`` the only
    possible path is the empty tuple.
    """
    ls = tuple(ls)
    nu = len(ls)
    if nu == 1:
        return [()] if ls[0] == 0 else []
    paths = []

    def extend(path, L, t):
        # coupled l_1..l_t into L; at the last factor L must equal l_nu
        if t == nu - 1:
            if L == ls[-1]:
                paths.append(tuple(path))
            return
        rest = sum(ls[t + 1:])  # largest L the remaining factors can cancel
        for L2 in range(abs(L - ls[t]), L + ls[t] + 1):
            if L2 <= rest or t + 1 == nu - 1:
                extend(path + [L2], L2, t + 1)

    extend([], ls[0], 1)
    return paths


def complex_invariants(ls):
    """Complex invariant tensors, one per coupling path, flattened.

    Returns
    -------
    ndarray of shape (n_paths, prod(2 l + 1))
    """
    ls = tuple(ls)
    if len(ls) == 1:
        return np.ones((1, 1)) if ls[0] == 0 else np.zeros((0, 2 * ls[0] + 1))
    out = []
    for path in coupling_paths(ls):
        T = np.eye(2 * ls[0] + 1)  # (m_1, M)
        L = ls[0]
        for t, L2 in enumerate(list(path) + [0], start=1):
            cg = clebsch_gordan(L, ls[t], L2)  # (M, m_t, M2)
            T = np.einsum("...a,abc->...bc", T, cg)
            L = L2
        out.append(T[..., 0].ravel())
    return np.array(out).reshape(len(out), -1)


def _orthonormal_rows(M, tol=RANK_TOL):
    """Orthonormal basis (rows) of the row space of ``M`` with a relative rank cut."""
    if M.shape[0] == 0:
        return M
    _, s, Vt = np.linalg.svd(M, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return M[:0]
    keep = s > tol * max(s[0], 1.0)
    return _fix_signs(Vt[keep])


def _fix_signs(V):
    """Make each row's largest entry (first in index order among ties) positive."""
    V = V.copy()
    V[np.abs(V) < 1e-14] = 0.0
    for row in V:
        k = np.argmax(np.abs(row) > np.abs(row).max() * (1 - 1e-8))
        if row[k] < 0:
            row *= -1
    return V


@lru_cache(maxsize=None)
def real_invariants(ls):
    """Orthonormal real O(3)-invariant tensors for real harmonics of degrees ``ls``.

    Parameters
    ----------
    ls : tuple of int
        Angular degrees of the factors, with ``sum(ls)`` even.

    Returns
    -------
    ndarray of shape (n_invariants, prod(2 l + 1))
        Each row is one flattened tensor ``C[m_1, ..., m_nu]`` (C order).
    """
    ls = tuple(ls)
    Cc = complex_invariants(ls)
    if Cc.shape[0] == 0:
        return np.zeros((0, int(np.prod([2 * l + 1 for l in ls]))))
    shape = tuple(2 * l + 1 for l in ls)
    T = Cc.reshape((-1,) + shape)
    for t, l in enumerate(ls):
        Uc = real_from_complex(l).conj()  # C_real[m] = sum_mu C_c[mu] conj(U[m, mu])
        T = np.moveaxis(np.tensordot(T, Uc, axes=([t + 1], [1])), -1, t + 1)
    T = T.reshape(T.shape[0], -1)
    return _orthonormal_rows(np.concatenate([T.real, T.imag]))


def _axis_permutations(groups):
    """Permutations of tensor axes that only exchange axes within equal groups."""
    groups = tuple(groups)
    blocks = {}
    for pos, g in enumerate(groups):
        blocks.setdefault(g, []).append(pos)
    per_block = [list(itertools.permutations(pos)) for pos in blocks.values()]
    perms = []
    for choice in itertools.product(*per_block):
        perm = list(range(len(groups)))
        for pos, new in zip(blocks.values(), choice):
            for a, b in zip(pos, new):
                perm[a] = b
        perms.append(tuple(perm))
    return perms


@lru_cache(maxsize=None)
def symmetric_invariants(ls, groups):
    """Invariant tensors symmetrised over exchanges of equal factors.

    Parameters
    ----------
    ls : tuple of int
        Angular degrees of the factors.
    groups : tuple of int
        ``groups[s] == groups[t]`` when factors ``s`` and ``t`` are the same
        one-particle function (then also ``ls[s] == ls[t]``).

    Returns
    -------
    ndarray of shape (n_features, prod(2 l + 1))
        Orthonormal rows; each gives one linearly independent feature.
    """
    ls, groups = tuple(ls), tuple(groups)
    C = real_invariants(ls)
    perms = _axis_permutations(groups)
    if len(perms) == 1 or C.shape[0] == 0:
        return C
    shape = tuple(2 * l + 1 for l in ls)
    T = C.reshape((-1,) + shape)
    S = np.zeros_like(T)
    for perm in perms:
        S += np.transpose(T, (0,) + tuple(p + 1 for p in perm))
    S /= len(perms)
    return _orthonormal_rows(S.reshape(S.shape[0], -1))
