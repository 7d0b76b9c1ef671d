"""ACE prediction and feature kernels for the CUDA target (numba-cuda).

The same maths as :mod:`skace.kernels.ace`, split into launches that each
compute one thing, with one thread per pair or per atom:

* :func:`molecule_pairs`, :func:`binned_pairs`: the neighbour list (count
  pass, then fill pass into a CSR filled from host-side prefix sums);
* :func:`pair_radial_harmonics`: ``R_n, dR_n/dr, Y_lm, dY_lm/dr`` per pair;
* :func:`atomic_base`: ``A`` per atom, pooled over its pairs;
* :func:`products_forward`: the product tree ``AA`` (density trick);
* :func:`features_from_products`: the coupled features ``B`` per atom;
* :func:`energy_adjoint`: atomic energies from the folded coefficients and,
  for forces, ``dE_i/dAA`` by reverse mode through the tree;
* :func:`pair_forces`: ``dE_i/dr_j`` per pair, scattered into the
  neighbours' forces with float64 atomics;
* :func:`own_forces_and_virials`: the central atoms' forces and per-atom
  virials, summed over their own pairs;
* :func:`feature_gradient_columns`: ``dB_i/dr_j`` for fitting, forward mode
  with one thread per pair and direction (one column of ``dAA``).

Work arrays of a chunk of atoms or pairs are laid out item-last
(``AA[k, atom]``, ``Y[lm, pair]``) so that neighbouring threads touch
neighbouring addresses. This module imports ``numba.cuda`` at import time:
import it only through :mod:`skace.gpu`, which does so lazily.
"""

import math
import types

from numba import cuda

from . import radial as _radial
from .neighbours import _OVERLAP_D2

THREADS_PER_BLOCK = 128


def blocks(n_items):
    """Blocks of :data:`THREADS_PER_BLOCK` threads covering ``n_items``."""
    return (n_items + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK


def _device_twin(njit_function, **callees):
    """Compile the Python source of a CPU ``@njit`` function as a CUDA device function.

    Calls to other ``@njit`` helpers are redirected to their device twins
    (``callees``), so the radial families have a single definition for both
    targets and cannot drift apart.
    """
    py = njit_function.py_func
    scope = dict(py.__globals__)
    scope.update(callees)
    twin = types.FunctionType(py.__code__, scope, py.__name__, py.__defaults__, py.__closure__)
    return cuda.jit(device=True)(twin)


_polynomial_envelope = _device_twin(_radial._polynomial_envelope)
_agnesi = _device_twin(_radial._agnesi)
_chebyshev_times_envelope = _device_twin(_radial._chebyshev_times_envelope)
radial_with_derivative = _device_twin(
    _radial.radial_with_derivative,
    _polynomial_envelope=_polynomial_envelope,
    _agnesi=_agnesi,
    _chebyshev_times_envelope=_chebyshev_times_envelope,
)


# ------------------------------------------------------------ neighbour lists
@cuda.jit
def molecule_pairs(positions, molecule_start, molecule_of, global_index, rc2, fill, first, counts,
                   nbr, owner, D, overlap):
    """All-pairs search inside each small non-periodic structure (one thread per atom).

    ``positions`` are the molecules' atoms back to back (local indices);
    ``global_index`` maps them to batch indices. Count pass (``fill`` False)
    writes ``counts[i]``; the fill pass writes pairs from ``first[i]``.
    ``overlap[0]`` keeps the smallest atom with a neighbour closer than ``OVERLAP_DISTANCE``.
    """
    k = cuda.grid(1)
    if k >= positions.shape[0]:
        return
    i = global_index[k]
    s = molecule_of[k]
    c = first[i] if fill else 0
    for m in range(molecule_start[s], molecule_start[s + 1]):
        if m == k:
            continue
        dx = positions[m, 0] - positions[k, 0]
        dy = positions[m, 1] - positions[k, 1]
        dz = positions[m, 2] - positions[k, 2]
        d2 = dx * dx + dy * dy + dz * dz
        if d2 >= rc2:
            continue
        if d2 < _OVERLAP_D2:
            cuda.atomic.min(overlap, 0, i)
        if fill:
            nbr[c] = global_index[m]
            owner[c] = i
            D[c, 0] = dx
            D[c, 1] = dy
            D[c, 2] = dz
        c += 1
    if not fill:
        counts[i] = c


@cuda.jit
def binned_pairs(points, origin, n_atoms, atom0, rc2, n_bins, bin_of, bin_start, order, fill, first, counts,
                 nbr, owner, D, overlap):
    """Pairs of one structure from its binned points (atoms, then periodic ghosts).

    One thread per atom scans the 27 bins around its own (bins are no smaller
    than the cutoff); ``origin`` maps a ghost to its atom; ``atom0`` is the
    structure's first atom in the batch. Count and fill passes as in
    :func:`molecule_pairs`.
    """
    i = cuda.grid(1)
    if i >= n_atoms:
        return
    b = bin_of[i]
    c2 = b % n_bins[2]
    c1 = (b // n_bins[2]) % n_bins[1]
    c0 = b // (n_bins[1] * n_bins[2])
    gi = atom0 + i
    c = first[gi] if fill else 0
    for u in range(max(c0 - 1, 0), min(c0 + 2, n_bins[0])):
        for v in range(max(c1 - 1, 0), min(c1 + 2, n_bins[1])):
            for w in range(max(c2 - 1, 0), min(c2 + 2, n_bins[2])):
                bb = (u * n_bins[1] + v) * n_bins[2] + w
                for s in range(bin_start[bb], bin_start[bb + 1]):
                    p = order[s]
                    if p == i:
                        continue
                    dx = points[p, 0] - points[i, 0]
                    dy = points[p, 1] - points[i, 1]
                    dz = points[p, 2] - points[i, 2]
                    d2 = dx * dx + dy * dy + dz * dz
                    if d2 >= rc2:
                        continue
                    if d2 < _OVERLAP_D2:
                        cuda.atomic.min(overlap, 0, gi)
                    if fill:
                        nbr[c] = atom0 + origin[p]
                        owner[c] = gi
                        D[c, 0] = dx
                        D[c, 1] = dy
                        D[c, 2] = dz
                    c += 1
    if not fill:
        counts[gi] = c


# ------------------------------------------------------------- per-pair basis
@cuda.jit(device=True, inline=True)
def _store_harmonic(Y, dY, k, t, value, gx, gy, gz, x, y, z, rn):
    """``Y[k, t]`` and its gradient: the tangential part of ``(gx, gy, gz)`` over ``|r|``."""
    Y[k, t] = value
    radial = gx * x + gy * y + gz * z
    dY[0, k, t] = (gx - radial * x) / rn
    dY[1, k, t] = (gy - radial * y) / rn
    dY[2, k, t] = (gz - radial * z) / rn


@cuda.jit(device=True, inline=True)
def _store_degree(l, m, q, dq, c, s, c_prev, s_prev, prefactors, Y, dY, t, x, y, z, rn):
    """Store ``Y_l^{+-m}`` from ``Q_l^m = q`` (and ``dQ/dz = dq``), ``(x + i y)^m = c + i s``."""
    p = prefactors[l, m]
    base = l * l + l
    if m == 0:
        _store_harmonic(Y, dY, base, t, p * q, 0.0, 0.0, p * dq, x, y, z, rn)
    else:
        # cos part at +m, sin part at -m
        _store_harmonic(Y, dY, base + m, t, p * q * c, p * q * m * c_prev, -p * q * m * s_prev, p * dq * c,
                        x, y, z, rn)
        _store_harmonic(Y, dY, base - m, t, p * q * s, p * q * m * s_prev, p * q * m * c_prev, p * dq * s,
                        x, y, z, rn)


@cuda.jit(device=True)
def real_harmonics_with_gradient(rx, ry, rz, l_max, prefactors, Y, dY, t):
    """``Y[:, t]`` and ``dY[:, :, t]`` of vector ``r`` (same recurrence as the CPU kernel).

    The CPU kernel tabulates ``Q[l, m]``; here ``m`` is the outer loop and
    only the last two ``Q`` of the ``l`` recurrence are kept, so no thread
    needs a local array whose size depends on ``l_max``.
    """
    rn = math.sqrt(rx * rx + ry * ry + rz * rz)
    x = rx / rn
    y = ry / rn
    z = rz / rn
    q_mm = 1.0
    c = 1.0
    s = 0.0
    c_prev = 0.0
    s_prev = 0.0
    for m in range(l_max + 1):
        if m > 0:
            q_mm = (2 * m - 1) * q_mm
            c_prev = c
            s_prev = s
            c = x * c_prev - y * s_prev
            s = x * s_prev + y * c_prev
        _store_degree(m, m, q_mm, 0.0, c, s, c_prev, s_prev, prefactors, Y, dY, t, x, y, z, rn)
        if m == l_max:
            break
        q0 = q_mm
        dq0 = 0.0
        q1 = (2 * m + 1) * z * q_mm
        dq1 = (2 * m + 1) * q_mm
        _store_degree(m + 1, m, q1, dq1, c, s, c_prev, s_prev, prefactors, Y, dY, t, x, y, z, rn)
        for l in range(m + 2, l_max + 1):
            q2 = ((2 * l - 1) * z * q1 - (l + m - 1) * q0) / (l - m)
            dq2 = ((2 * l - 1) * (q1 + z * dq1) - (l + m - 1) * dq0) / (l - m)
            _store_degree(l, m, q2, dq2, c, s, c_prev, s_prev, prefactors, Y, dY, t, x, y, z, rn)
            q0 = q1
            dq0 = dq1
            q1 = q2
            dq1 = dq2


@cuda.jit
def pair_radial_harmonics(pair0, n_pairs, owner, nbr, D, species, family, params, n_radial, l_max, prefactors,
                          R, dR, Y, dY):
    """``R[n, t], dR[n, t], Y[lm, t], dY[d, lm, t]`` of pairs ``pair0 + t`` (one thread per pair)."""
    t = cuda.grid(1)
    if t >= n_pairs:
        return
    p = pair0 + t
    dx = D[p, 0]
    dy = D[p, 1]
    dz = D[p, 2]
    r = math.sqrt(dx * dx + dy * dy + dz * dz)
    radial_with_derivative(family, params[species[owner[p]], species[nbr[p]]], r, n_radial, R[:, t], dR[:, t])
    real_harmonics_with_gradient(dx, dy, dz, l_max, prefactors, Y, dY, t)


# ------------------------------------------------------------------ per atom
@cuda.jit
def atomic_base(atom0, n_atoms, pair0, first, nbr, species, nl_n, nl_l, nl_offset, n_nlm, n_A, R, Y, AA):
    """``AA[:n_A, t] = A`` of atom ``atom0 + t``: ``sum_j R_n(r_ij) Y_lm(r_ij)`` per neighbour element."""
    t = cuda.grid(1)
    if t >= n_atoms:
        return
    i = atom0 + t
    for a in range(n_A):
        AA[a, t] = 0.0
    for p in range(first[i], first[i + 1]):
        q = p - pair0
        block = species[nbr[p]] * n_nlm
        for k in range(nl_n.shape[0]):
            Rn = R[nl_n[k], q]
            if Rn == 0.0:
                continue
            l = nl_l[k]
            a = block + nl_offset[k]
            for mm in range(2 * l + 1):
                AA[a + mm, t] += Rn * Y[l * l + mm, q]


@cuda.jit
def products_forward(n_atoms, n_A, tree_parent, tree_last, AA):
    """Each stored product is its parent times one ``A``; ``AA[n_AA, t] = 1`` (the constant)."""
    t = cuda.grid(1)
    if t >= n_atoms:
        return
    for k in range(tree_parent.shape[0]):
        AA[n_A + k, t] = AA[tree_parent[k], t] * AA[tree_last[k], t]
    AA[AA.shape[0] - 1, t] = 1.0


@cuda.jit
def features_from_products(atom0, n_atoms, species, row_start, indptr, parent, last, vals, AA, out):
    """Compact features ``out[i, r - row_start[Z_i]] = sum_e vals[e] AA[parent[e]] A[last[e]]``."""
    t = cuda.grid(1)
    if t >= n_atoms:
        return
    i = atom0 + t
    e = species[i]
    lo = row_start[e]
    for c in range(out.shape[1]):
        out[i, c] = 0.0
    for r in range(lo, row_start[e + 1]):
        s = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            s += vals[k] * AA[parent[k], t] * AA[last[k], t]
        out[i, r - lo] = s


@cuda.jit
def energy_adjoint(atom0, n_atoms, species, n_A, tree_parent, tree_last, w_indptr, w_parent, w_last, w_val,
                   with_gradient, AA, gAA, energies):
    """``energies[i] = sum_e w_val[e] AA[w_parent[e]] A[w_last[e]]``; with the gradient,
    ``gAA[:, t] = dE_i / dAA`` by reverse mode through the product tree.
    """
    t = cuda.grid(1)
    if t >= n_atoms:
        return
    i = atom0 + t
    e = species[i]
    energy = 0.0
    for k in range(w_indptr[e], w_indptr[e + 1]):
        energy += w_val[k] * AA[w_parent[k], t] * AA[w_last[k], t]
    energies[i] = energy
    if not with_gradient:
        return
    for k in range(gAA.shape[0]):
        gAA[k, t] = 0.0
    for k in range(w_indptr[e], w_indptr[e + 1]):
        gAA[w_parent[k], t] += w_val[k] * AA[w_last[k], t]
        gAA[w_last[k], t] += w_val[k] * AA[w_parent[k], t]
    for k in range(tree_parent.shape[0] - 1, -1, -1):
        g = gAA[n_A + k, t]
        if g != 0.0:
            gAA[tree_parent[k], t] += g * AA[tree_last[k], t]
            gAA[tree_last[k], t] += g * AA[tree_parent[k], t]


@cuda.jit
def pair_forces(atom0, pair0, n_pairs, owner, nbr, D, species, nl_n, nl_l, nl_offset, n_nlm, R, dR, Y, dY,
                gAA, f_pair, forces):
    """``f = dE_i/dr_j`` of pair ``pair0 + t`` into ``f_pair[:, t]``, and ``F_j -= f``.

    Neighbours are scattered, so ``F_j`` takes an atomic add; the central
    atom's half (``F_i += f``, many consecutive pairs on one address) is left
    to :func:`own_forces_and_virials`, which needs no atomics.
    """
    t = cuda.grid(1)
    if t >= n_pairs:
        return
    p = pair0 + t
    a_col = owner[p] - atom0
    j = nbr[p]
    dx = D[p, 0]
    dy = D[p, 1]
    dz = D[p, 2]
    r = math.sqrt(dx * dx + dy * dy + dz * dz)
    ux = dx / r
    uy = dy / r
    uz = dz / r
    block = species[j] * n_nlm
    fx = 0.0
    fy = 0.0
    fz = 0.0
    for k in range(nl_n.shape[0]):
        Rn = R[nl_n[k], t]
        dRn = dR[nl_n[k], t]
        l = nl_l[k]
        a = block + nl_offset[k]
        for mm in range(2 * l + 1):
            w = gAA[a + mm, a_col]
            lm = l * l + mm
            radial = w * dRn * Y[lm, t]
            wR = w * Rn
            fx += radial * ux + wR * dY[0, lm, t]
            fy += radial * uy + wR * dY[1, lm, t]
            fz += radial * uz + wR * dY[2, lm, t]
    f_pair[0, t] = fx
    f_pair[1, t] = fy
    f_pair[2, t] = fz
    cuda.atomic.add(forces, (j, 0), -fx)
    cuda.atomic.add(forces, (j, 1), -fy)
    cuda.atomic.add(forces, (j, 2), -fz)


@cuda.jit
def own_forces_and_virials(atom0, n_atoms, pair0, first, D, f_pair, with_virial, forces, virials):
    """``F_i += sum_j f_ij`` over the pairs of atom ``atom0 + t`` and, with the virial,
    ``virials[i] = sum_j f_ij (x) D_ij`` (row-major 3 x 3). One thread owns atom ``i``:
    no atomics (kernels on one stream do not overlap, so :func:`pair_forces` is done).
    """
    t = cuda.grid(1)
    if t >= n_atoms:
        return
    i = atom0 + t
    sx = 0.0
    sy = 0.0
    sz = 0.0
    v0 = 0.0
    v1 = 0.0
    v2 = 0.0
    v3 = 0.0
    v4 = 0.0
    v5 = 0.0
    v6 = 0.0
    v7 = 0.0
    v8 = 0.0
    for p in range(first[i], first[i + 1]):
        q = p - pair0
        fx = f_pair[0, q]
        fy = f_pair[1, q]
        fz = f_pair[2, q]
        sx += fx
        sy += fy
        sz += fz
        if with_virial:
            dx = D[p, 0]
            dy = D[p, 1]
            dz = D[p, 2]
            v0 += fx * dx
            v1 += fx * dy
            v2 += fx * dz
            v3 += fy * dx
            v4 += fy * dy
            v5 += fy * dz
            v6 += fz * dx
            v7 += fz * dy
            v8 += fz * dz
    forces[i, 0] += sx
    forces[i, 1] += sy
    forces[i, 2] += sz
    if with_virial:
        virials[i, 0] = v0
        virials[i, 1] = v1
        virials[i, 2] = v2
        virials[i, 3] = v3
        virials[i, 4] = v4
        virials[i, 5] = v5
        virials[i, 6] = v6
        virials[i, 7] = v7
        virials[i, 8] = v8


# ------------------------------------------------------- feature gradients
@cuda.jit(device=True, inline=True)
def _d_base(local, d, u_d, t, a_n, a_lm, R, dR, Y, dY):
    """``d A[block + local] / d r_j[d]`` for pair ``t`` (``u_d``: component ``d`` of its unit vector)."""
    n = a_n[local]
    lm = a_lm[local]
    return dR[n, t] * Y[lm, t] * u_d + R[n, t] * dY[d, lm, t]


@cuda.jit(device=True, inline=True)
def _d_product(k, n_A, n_AA, lo, n_nlm, d, u_d, t, c, a_n, a_lm, R, dR, Y, dY, dAA):
    """Derivative of ``AA[k]`` along column ``c``: stored (tree), on the fly (``A`` of the
    neighbour's element block ``lo:lo + n_nlm``), or zero (other blocks, the constant ``k = n_AA``)."""
    if k >= n_AA:
        return 0.0
    if k >= n_A:
        return dAA[k - n_A, c]
    if lo <= k < lo + n_nlm:
        return _d_base(k - lo, d, u_d, t, a_n, a_lm, R, dR, Y, dY)
    return 0.0


@cuda.jit
def feature_gradient_columns(atom0, pair0, n_pairs, owner, nbr, D, species, n_nlm, n_A, n_AA, a_n, a_lm, tree_parent,
                             tree_last, row_start, indptr, parent, last, vals, R, dR, Y, dY, AA, dAA, out):
    """``out[j, d, r] += dB_i[r]/dr_j[d]`` and ``out[i, d, r] -= ...`` for column ``c = 3 t + d``.

    Forward mode as in the CPU kernel, but one thread per (pair ``t``,
    direction ``d``): ``dAA[k - n_A, c]`` holds the derivative of stored product
    ``k`` (the ``A`` part is recomputed, non-zero on the neighbour's element
    block only). Several pairs share ``i`` and ``j``, hence atomic adds.
    """
    c = cuda.grid(1)
    if c >= 3 * n_pairs:
        return
    t = c // 3
    d = c - 3 * t
    p = pair0 + t
    i = owner[p]
    j = nbr[p]
    col = i - atom0
    r = math.sqrt(D[p, 0] * D[p, 0] + D[p, 1] * D[p, 1] + D[p, 2] * D[p, 2])
    u_d = D[p, d] / r
    lo = species[j] * n_nlm
    for k in range(tree_parent.shape[0]):
        pa = tree_parent[k]
        la = tree_last[k]
        dAA[k, c] = (_d_product(pa, n_A, n_AA, lo, n_nlm, d, u_d, t, c, a_n, a_lm, R, dR, Y, dY, dAA) * AA[la, col]
                     + AA[pa, col] * _d_product(la, n_A, n_AA, lo, n_nlm, d, u_d, t, c, a_n, a_lm, R, dR, Y, dY, dAA))
    e = species[i]
    for row in range(row_start[e], row_start[e + 1]):
        s = 0.0
        for q in range(indptr[row], indptr[row + 1]):
            pa = parent[q]
            la = last[q]
            s += vals[q] * (
                _d_product(pa, n_A, n_AA, lo, n_nlm, d, u_d, t, c, a_n, a_lm, R, dR, Y, dY, dAA) * AA[la, col]
                + AA[pa, col] * _d_product(la, n_A, n_AA, lo, n_nlm, d, u_d, t, c, a_n, a_lm, R, dR, Y, dY, dAA))
        if s != 0.0:
            cuda.atomic.add(out, (j, d, row), s)
            cuda.atomic.add(out, (i, d, row), -s)


@cuda.jit
def fill_zero(x):
    """``x[:] = 0`` for a flat device array."""
    k = cuda.grid(1)
    if k < x.shape[0]:
        x[k] = 0.0
