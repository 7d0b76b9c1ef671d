"""ACE evaluation kernels (numba): atomic base, products, features, gradients, adjoint.

Every kernel works on a batch of atoms given by a CSR neighbour list
(``first``, ``nbr``, ``D``) over global atom indices and a species index per
atom. The basis arrays are those of :class:`skace.maths.basis.CompiledBasis`.

Per central atom ``i``:

* :func:`atomic_base` pools ``R_n(r_ij) Y_lm(r_ij)`` over neighbours into
  ``A`` and keeps each pair's ``R, dR, Y, dY`` for derivatives;
* :func:`products_forward` forms every product ``AA`` as parent times one
  ``A`` (the density trick);
* :func:`features_from_products` applies the sparse coupling map;
* :func:`atomic_base_gradient` gives ``dA/dr_j`` for all neighbours, and
  :func:`atoms_feature_gradient` contracts it with the sparse Jacobian
  ``dB/dA`` (:func:`jacobian_row`) of several atoms at once, for fitting
  with bases whose rows share few ``A`` (high ``l``); small low-``l``
  bases take :func:`atom_feature_gradient_forward`, forward mode through
  the product tree (``skace.maths.basis.gradient_route`` chooses);
* :func:`atoms_energy_adjoint` evaluates a fitted energy and back-propagates
  it to ``dE_i/dA`` (reverse mode) for up to :data:`ENERGY_LANES` atoms of
  one element at once, and :func:`pair_forces` contracts that with
  ``dA/dr_j`` for every neighbour: forces cost a small multiple of the
  energy.
"""

import math

import numpy as np
from numba import njit, prange

from .harmonics import harmonic_prefactors, real_harmonics_with_gradient
from .radial import radial_with_derivative


@njit(cache=True)
def _chunk_bounds(n_items, n_chunks, c):
    return (n_items * c) // n_chunks, (n_items * (c + 1)) // n_chunks


@njit(cache=True)
def _environment_buffers(n_A, n_AA, max_pairs, n_radial, l_max):
    """Per-thread work arrays: A, AA (with the constant slot), and per-pair R, dR, Y, dY."""
    n_lm = (l_max + 1) ** 2
    return (np.empty(n_A), np.empty(n_AA + 1), np.empty((max_pairs, n_radial)), np.empty((max_pairs, n_radial)),
            np.empty((max_pairs, n_lm)), np.empty((max_pairs, n_lm, 3)))


@njit(cache=True)
def atomic_base(i, first, nbr, D, species, family, params, n_radial, l_max, prefac,
                nl_n, nl_l, nl_offset, n_nlm, A, R, dR, Y, dY):
    """Fill ``A`` for atom ``i`` and the per-pair buffers ``R, dR, Y, dY``."""
    A[:] = 0.0
    ei = species[i]
    for q in range(first[i + 1] - first[i]):
        p = first[i] + q
        ej = species[nbr[p]]
        r = math.sqrt(D[p, 0] ** 2 + D[p, 1] ** 2 + D[p, 2] ** 2)
        radial_with_derivative(family, params[ei, ej], r, n_radial, R[q], dR[q])
        real_harmonics_with_gradient(D[p], l_max, prefac, Y[q], dY[q])
        block = ej * n_nlm
        for k in range(nl_n.shape[0]):
            Rn = R[q, nl_n[k]]
            if Rn == 0.0:
                continue
            l = nl_l[k]
            a = block + nl_offset[k]
            for mm in range(2 * l + 1):
                A[a + mm] += Rn * Y[q, l * l + mm]


@njit(cache=True)
def products_forward(A, AA, tree_parent, tree_last, n_A):
    """``AA[:n_A] = A``; each stored product is its parent times one ``A``; ``AA[-1] = 1``."""
    AA[:n_A] = A
    for k in range(tree_parent.shape[0]):
        AA[n_A + k] = AA[tree_parent[k]] * A[tree_last[k]]
    AA[AA.shape[0] - 1] = 1.0


@njit(cache=True)
def features_from_products(A, AA, indptr, parent, last, vals, row_lo, row_hi, out):
    """``out[r - row_lo] = sum_e vals[e] AA[parent[e]] A[last[e]]`` for rows ``row_lo:row_hi``."""
    for r in range(row_lo, row_hi):
        s = 0.0
        for e in range(indptr[r], indptr[r + 1]):
            s += vals[e] * AA[parent[e]] * A[last[e]]
        out[r - row_lo] = s


#: Atoms of one element whose gradients :func:`atoms_feature_gradient` computes in one pass over
#: the coupling entries: each entry's indices are read, and its loop overhead paid, once for all
#: of them (rMD17 benzene, 40 configurations, 2 threads: 2.2 s, against 5.6 s one atom at a time
#: and 13.2 s for the forward mode through the product tree that this replaced).
ATOMS_PER_PASS = 8


@njit(cache=True)
def atomic_base_gradient(i, first, nbr, D, species, R, dR, Y, dY, nl_n, nl_l, nl_offset, n_nlm, dA):
    """``dA[a, 3 q + d]``: derivative of ``A_a`` of atom ``i`` with respect to coordinate ``d``
    of its neighbour ``q``, from the per-pair buffers of :func:`atomic_base`."""
    p0 = first[i]
    n_q = first[i + 1] - p0
    dA[:, :3 * n_q] = 0.0
    for q in range(n_q):
        p = p0 + q
        r = math.sqrt(D[p, 0] ** 2 + D[p, 1] ** 2 + D[p, 2] ** 2)
        u0, u1, u2 = D[p, 0] / r, D[p, 1] / r, D[p, 2] / r
        block = species[nbr[p]] * n_nlm
        for k in range(nl_n.shape[0]):
            Rn = R[q, nl_n[k]]
            dRn = dR[q, nl_n[k]]
            l = nl_l[k]
            a = block + nl_offset[k]
            for mm in range(2 * l + 1):
                y = dRn * Y[q, l * l + mm]
                dA[a + mm, 3 * q] = y * u0 + Rn * dY[q, l * l + mm, 0]
                dA[a + mm, 3 * q + 1] = y * u1 + Rn * dY[q, l * l + mm, 1]
                dA[a + mm, 3 * q + 2] = y * u2 + Rn * dY[q, l * l + mm, 2]


@njit(cache=True, fastmath=True)
def jacobian_row(rr, indptr, vals, factors, AT, jac, prefix, before):
    """``jac[a, k] += dB_rr / dA_a`` of the atoms ``k`` whose ``A`` is ``AT[:, k]``.

    For every entry ``vals[e] prod_t A[factors[e, t]]`` of row ``rr``, the
    product of the other factors is added at each factor (prefix times suffix
    products; written out for four factors, the default correlation order).
    ``AT[n_A]`` is 1 (the padding factor) and ``jac[n_A]`` is scratch;
    ``prefix`` (nu_max, ATOMS_PER_PASS) and ``before`` (ATOMS_PER_PASS) are
    work arrays for more than four factors.
    """
    nu_max = factors.shape[1]
    if nu_max == 4:
        for e in range(indptr[rr], indptr[rr + 1]):
            f0, f1, f2, f3 = factors[e, 0], factors[e, 1], factors[e, 2], factors[e, 3]
            w = vals[e]
            for k in range(ATOMS_PER_PASS):
                a0, a1, a2, a3 = AT[f0, k], AT[f1, k], AT[f2, k], AT[f3, k]
                w01 = w * a0 * a1
                w23 = w * a2 * a3
                jac[f0, k] += a1 * w23
                jac[f1, k] += a0 * w23
                jac[f2, k] += w01 * a3
                jac[f3, k] += w01 * a2
        return
    for e in range(indptr[rr], indptr[rr + 1]):
        before[:] = vals[e]
        for t in range(nu_max):
            f = factors[e, t]
            for k in range(ATOMS_PER_PASS):
                prefix[t, k] = before[k]
                before[k] *= AT[f, k]
        before[:] = 1.0  # now the suffix product
        for t in range(nu_max - 1, -1, -1):
            f = factors[e, t]
            for k in range(ATOMS_PER_PASS):
                jac[f, k] += prefix[t, k] * before[k]
                before[k] *= AT[f, k]


@njit(cache=True, fastmath=True)
def atoms_feature_gradient(atoms, n_atoms, s0, first, nbr, nbr_local, D, species, n_elements, AT, dA, n_nlm,
                           indptr, vals, factors, j_indptr, j_col, row_lo, row_hi, jac, prefix, before, jac_rows,
                           acc, col_lo, col_hi, grad, with_virial, vir):
    """Add ``dB_i / dr`` of the atoms ``atoms[:n_atoms]`` (one element) into ``grad[row, 3 j + d]``
    for their rows ``row_lo:row_hi``.

    With ``with_virial``, also add each atom's share of the per-feature virial
    ``sum_j sym(dB_i/dr_ij (x) r_ij)`` into ``vir[row, :]`` in Voigt order
    (xx, yy, zz, yz, xz, xy): the derivative of ``B_i`` with respect to a
    homogeneous strain of the structure.

    Chain rule through the atomic base: ``dB_r / dr = sum_a (dB_r / dA_a) dA_a / dr``.
    First, for all rows at once and every atom ``k`` (its ``A`` in ``AT[:, k]``),
    the non-zeros of ``dB / dA`` (``j_col``, from
    :func:`skace.maths.basis.jacobian_plan`) go to ``jac_rows[k]`` by way of the
    dense, cache-resident ``jac`` (:func:`jacobian_row`; zero on entry and left
    zero). Then, atom by atom, they are contracted with ``dA[k]``
    (:func:`atomic_base_gradient`), which stays in cache for the whole pass.
    Pairs are sorted by neighbour element, so ``dA`` of one element block is
    non-zero on one contiguous range of columns only. ``j`` indexes atoms
    within the structure starting at ``s0`` (``nbr_local``).
    """
    n_A = dA.shape[1]
    js0 = j_indptr[row_lo]
    for rr in range(row_lo, row_hi):
        jacobian_row(rr, indptr, vals, factors, AT, jac, prefix, before)
        for s in range(j_indptr[rr], j_indptr[rr + 1]):
            a = j_col[s]
            for k in range(ATOMS_PER_PASS):
                jac_rows[k, s - js0] = jac[a, k]
                jac[a, k] = 0.0
        jac[n_A, :] = 0.0
    for k in range(n_atoms):
        i = atoms[k]
        p0 = first[i]
        n_q = first[i + 1] - p0
        P = 3 * n_q
        _element_columns(i, first, nbr, species, col_lo, col_hi)
        dAk = dA[k]
        jk = jac_rows[k]
        for rr in range(row_lo, row_hi):
            acc[:P] = 0.0
            for s in range(j_indptr[rr], j_indptr[rr + 1]):
                a = j_col[s]
                v = jk[s - js0]
                el = a // n_nlm
                for m in range(col_lo[el], col_hi[el]):
                    acc[m] += v * dAk[a, m]
            add_pair_gradients(acc, i - s0, p0, n_q, nbr_local, D, grad[rr], with_virial,
                               vir[rr if with_virial else 0])


@njit(cache=True, inline="always")
def _element_columns(i, first, nbr, species, col_lo, col_hi):
    """``col_lo[el]:col_hi[el]``: the columns ``3 q + d`` of atom ``i``'s neighbours of element
    ``el`` (pairs are sorted by neighbour element, so they are contiguous)."""
    p0 = first[i]
    n_q = first[i + 1] - p0
    col_lo[:] = 0
    col_hi[:] = 0
    for q in range(n_q - 1, -1, -1):
        col_lo[species[nbr[p0 + q]]] = 3 * q
    for q in range(n_q):
        col_hi[species[nbr[p0 + q]]] = 3 * q + 3


@njit(cache=True, inline="always", fastmath=True)
def add_pair_gradients(acc, i_local, p0, n_q, nbr_local, D, g, with_virial, v):
    """Add one row's ``acc[3 q + d] = dB_i / dr_j`` (neighbour ``q`` of atom ``i``) into the
    structure's gradient row ``g`` (at ``j`` and, with the opposite sign, at ``i`` itself),
    and with ``with_virial`` its virial ``sum_q sym(acc_q (x) r_q)`` into ``v`` (Voigt)."""
    sx = 0.0
    sy = 0.0
    sz = 0.0
    for q in range(n_q):
        j = 3 * nbr_local[p0 + q]
        g[j] += acc[3 * q]
        g[j + 1] += acc[3 * q + 1]
        g[j + 2] += acc[3 * q + 2]
        sx += acc[3 * q]
        sy += acc[3 * q + 1]
        sz += acc[3 * q + 2]
    c = 3 * i_local
    g[c] -= sx
    g[c + 1] -= sy
    g[c + 2] -= sz
    if with_virial:
        for q in range(n_q):
            p = p0 + q
            ax, ay, az = acc[3 * q], acc[3 * q + 1], acc[3 * q + 2]
            dx, dy, dz = D[p, 0], D[p, 1], D[p, 2]
            v[0] += ax * dx
            v[1] += ay * dy
            v[2] += az * dz
            v[3] += 0.5 * (ay * dz + az * dy)
            v[4] += 0.5 * (ax * dz + az * dx)
            v[5] += 0.5 * (ax * dy + ay * dx)


@njit(cache=True, fastmath=True)
def atom_feature_gradient_forward(i, s0, first, nbr, nbr_local, D, species, A, AA, R, dR, Y, dY, nl_n, nl_l,
                                  nl_offset, n_nlm, n_A, tree_parent, tree_last, indptr, parent, last, vals,
                                  row_lo, row_hi, dAA, acc, col_lo, col_hi, grad, with_virial, vir):
    """:func:`atoms_feature_gradient` of one atom by forward mode through the product tree.

    ``dAA[k, 3 q + d]`` is the derivative of product ``k`` (``A`` first, then
    the stored products, then the constant) with respect to coordinate ``d``
    of neighbour ``q``: each product costs one pass over ``3 * n_neighbours``
    numbers, and each coupling entry one more. Faster than the Jacobian
    route where rows have few entries over many distinct ``A`` (low ``l``:
    small bases, high ``l_weight``), which then compress less
    (:func:`skace.maths.basis.gradient_route`).
    """
    p0 = first[i]
    n_q = first[i + 1] - p0
    P = 3 * n_q
    n_AA = dAA.shape[0] - 1
    _element_columns(i, first, nbr, species, col_lo, col_hi)
    atomic_base_gradient(i, first, nbr, D, species, R, dR, Y, dY, nl_n, nl_l, nl_offset, n_nlm, dAA[:n_A])
    dAA[n_AA, :P] = 0.0  # the constant
    for k in range(tree_parent.shape[0]):
        _product_rule(dAA[n_A + k], dAA[tree_parent[k]], A[tree_last[k]], AA[tree_parent[k]],
                      dAA[tree_last[k]], P, col_lo[tree_last[k] // n_nlm], col_hi[tree_last[k] // n_nlm], True)
    for rr in range(row_lo, row_hi):
        acc[:P] = 0.0
        for e in range(indptr[rr], indptr[rr + 1]):
            la = last[e]
            w = vals[e]
            _product_rule(acc, dAA[parent[e]], w * A[la], w * AA[parent[e]], dAA[la], P,
                          col_lo[la // n_nlm], col_hi[la // n_nlm], False)
        add_pair_gradients(acc, i - s0, p0, n_q, nbr_local, D, grad[rr], with_virial,
                           vir[rr if with_virial else 0])


@njit(cache=True, inline="always", fastmath=True)
def _product_rule(target, d_parent, a_last, aa_parent, d_last, P, lo, hi, overwrite):
    """``target (=|+=) d_parent * a_last + aa_parent * d_last`` (``d_last`` non-zero on ``lo:hi`` only)."""
    if overwrite:
        for m in range(P):
            target[m] = d_parent[m] * a_last
    else:
        for m in range(P):
            target[m] += d_parent[m] * a_last
    for m in range(lo, hi):
        target[m] += aa_parent * d_last[m]


#: Atoms of one element whose energies :func:`atoms_energy_adjoint` evaluates together, one per
#: SIMD lane: each folded coefficient is read once for all of them (the folded arrays of a default
#: rMD17 model are several MB per element, too large for the caches, so one atom at a time the
#: pass over them was bound by memory bandwidth). A group costs the same however few of its lanes
#: hold atoms, and a molecule leaves most groups part-filled: on the default aspirin model (1
#: thread, us/atom batch / one structure at a time) 4 lanes gave 636 / 787, 8 gave 576 / 862, 16
#: gave 495 / 1096, one atom at a time 1335-1473 / 1421.
ENERGY_LANES = 4


def lane_work(n_tree_rows, n_threads, work=None):
    """Work arrays of :func:`compute_energies_forces`: ``work`` itself when it has the shape
    ``(n_threads, 2, n_tree_rows, ENERGY_LANES)``, else new ones."""
    shape = (n_threads, 2, n_tree_rows, ENERGY_LANES)
    return work if work is not None and work.shape == shape else np.empty(shape)


@njit(cache=True)
def element_groups(species, lo, hi):
    """Atoms ``lo:hi`` sorted by element, in groups of at most :data:`ENERGY_LANES` atoms of one
    element: group ``g`` is ``order[start[g]:start[g + 1]]``."""
    order = lo + np.argsort(species[lo:hi], kind="mergesort")
    start = np.empty(hi - lo + 1, dtype=np.int64)
    n_groups = 0
    for t in range(hi - lo):
        if t == 0 or species[order[t]] != species[order[t - 1]] or t - start[n_groups - 1] == ENERGY_LANES:
            start[n_groups] = t
            n_groups += 1
    start[n_groups] = hi - lo
    return order, start[:n_groups + 1]


@njit(cache=True, fastmath=True)
def atoms_energy_adjoint(n_A, AA, gAA, run, tree_parent, tree_last, w_lo, w_hi, w_parent, w_last, w_val,
                         nodes, node_lo, node_hi, with_forces, energy):
    """Energies ``E = sum_e w_val[e] AA[w_parent[e]] AA[w_last[e]]`` of the atoms in the lanes
    of ``AA`` (``AA[:n_A, s]`` holds the atomic base of lane ``s``, ``AA[-1]`` is set to 1),
    and with forces their adjoints ``gAA[:n_A] = dE / dA`` (reverse mode through the stored
    products ``nodes[node_lo:node_hi]``, those the entries need).

    The entries come sorted by parent, so one pass sums each parent's run
    ``run = sum_e w_val[e] A[w_last[e]]`` (its energy term ``AA[parent] run``
    and adjoint ``run``) while adding the adjoints of the ``A`` factors.
    """
    L = ENERGY_LANES
    AA[AA.shape[0] - 1, :] = 1.0
    for t in range(node_lo, node_hi):  # the density trick, lane by lane
        k = nodes[t]
        p, q = tree_parent[k], tree_last[k]
        for s in range(L):
            AA[n_A + k, s] = AA[p, s] * AA[q, s]
    energy[:] = 0.0
    if not with_forces:
        for e in range(w_lo, w_hi):
            p, q, v = w_parent[e], w_last[e], w_val[e]
            for s in range(L):
                energy[s] += v * AA[p, s] * AA[q, s]
        return
    gAA[:n_A, :] = 0.0  # only the slots this element reads or writes
    for t in range(node_lo, node_hi):
        gAA[n_A + nodes[t], :] = 0.0
    gAA[gAA.shape[0] - 1, :] = 0.0
    if w_hi > w_lo:
        parent = w_parent[w_lo]
        run[:] = 0.0
        for e in range(w_lo, w_hi):
            if w_parent[e] != parent:
                for s in range(L):
                    energy[s] += AA[parent, s] * run[s]
                    gAA[parent, s] += run[s]
                    run[s] = 0.0
                parent = w_parent[e]
            q, v = w_last[e], w_val[e]
            for s in range(L):
                run[s] += v * AA[q, s]
                gAA[q, s] += v * AA[parent, s]
        for s in range(L):
            energy[s] += AA[parent, s] * run[s]
            gAA[parent, s] += run[s]
    for t in range(node_hi - 1, node_lo - 1, -1):
        k = nodes[t]
        p, q = tree_parent[k], tree_last[k]
        for s in range(L):
            g = gAA[n_A + k, s]
            gAA[p, s] += g * AA[q, s]
            gAA[q, s] += g * AA[p, s]


@njit(cache=True)
def pair_forces(i, first, nbr, D, species, gA, lane, R, dR, Y, dY, nl_n, nl_l, nl_offset, n_nlm, f_pair):
    """``f_pair[p] = dE_i / dr_j`` for every pair ``p`` of atom ``i`` from ``gA[:, lane] = dE_i / dA``
    and the pair buffers ``R, dR, Y, dY`` that :func:`atomic_base` kept."""
    for q in range(first[i + 1] - first[i]):
        p = first[i] + q
        r = math.sqrt(D[p, 0] ** 2 + D[p, 1] ** 2 + D[p, 2] ** 2)
        ux, uy, uz = D[p, 0] / r, D[p, 1] / r, D[p, 2] / r
        block = species[nbr[p]] * n_nlm
        fx = 0.0
        fy = 0.0
        fz = 0.0
        for k in range(nl_n.shape[0]):
            Rn = R[q, nl_n[k]]
            dRn = dR[q, nl_n[k]]
            l = nl_l[k]
            a = block + nl_offset[k]
            for mm in range(2 * l + 1):
                w = gA[a + mm, lane]
                lm = l * l + mm
                radial = w * dRn * Y[q, lm]
                wR = w * Rn
                fx += radial * ux + wR * dY[q, lm, 0]
                fy += radial * uy + wR * dY[q, lm, 1]
                fz += radial * uz + wR * dY[q, lm, 2]
        f_pair[p, 0] = fx
        f_pair[p, 1] = fy
        f_pair[p, 2] = fz


# ---------------------------------------------------------------- drivers
@njit(cache=True, parallel=True)
def compute_features(first, nbr, D, species, family, params, n_radial, l_max, nl_n, nl_l, nl_offset,
                     n_nlm, n_A, tree_parent, tree_last, row_start, indptr, parent, last, vals, max_pairs,
                     n_chunks, out):
    """Per-atom features ``out[i, :n_rows(Z_i)]`` (compact: each atom's own element block)."""
    n_atoms = species.shape[0]
    prefac = harmonic_prefactors(l_max)
    for c in prange(n_chunks):
        lo, hi = _chunk_bounds(n_atoms, n_chunks, c)
        A, AA, R, dR, Y, dY = _environment_buffers(n_A, n_A + tree_parent.shape[0], max_pairs, n_radial, l_max)
        for i in range(lo, hi):
            atomic_base(i, first, nbr, D, species, family, params, n_radial, l_max, prefac,
                        nl_n, nl_l, nl_offset, n_nlm, A, R, dR, Y, dY)
            products_forward(A, AA, tree_parent, tree_last, n_A)
            e = species[i]
            out[i, :] = 0.0
            features_from_products(A, AA, indptr, parent, last, vals, row_start[e], row_start[e + 1], out[i])


@njit(cache=True, parallel=True)
def compute_feature_gradients_virial(structure_start, first, nbr, D, species, family, params, n_radial, l_max,
                                     nl_n, nl_l, nl_offset, n_nlm, n_A, tree_parent, tree_last, row_start,
                                     indptr, parent, last, vals, forward, factors, j_indptr, j_col, max_pairs,
                                     n_chunks, out, with_virial, vir_out):
    """Feature gradients and, with ``with_virial``, per-feature virials (parallel over structures).

    ``out[j, :, rows] = d(sum_i B_i) / dr_j`` has shape (n_atoms, 3,
    n_feature_rows); ``structure_start`` gives the first atom of each
    structure (CSR). With ``forward``, by forward mode through the product
    tree (:func:`atom_feature_gradient_forward`); otherwise through the
    Jacobian ``dB/dA``, whose sparsity ``factors, j_indptr, j_col`` is the
    basis's :func:`skace.maths.basis.jacobian_plan` (each entry's factors
    read directly, several atoms per pass). Each structure is accumulated
    in a thread-local (rows, 3 * atoms) buffer, then transposed into
    ``out``. ``vir_out[s, v, rows]`` (shape (n_structures, 6,
    n_feature_rows)) receives ``sum_pairs sym(dB/dr_ij (x) r_ij)`` of
    structure ``s`` in Voigt order (xx, yy, zz, yz, xz, xy): the strain
    derivative of its summed features, so that ``virial = vir_out[s] @ c``
    and ASE's stress is ``virial / volume``.
    """
    prefac = harmonic_prefactors(l_max)
    n_struct = structure_start.shape[0] - 1
    n_rows = out.shape[2]
    nbr_local = np.empty_like(nbr)
    for s in prange(n_struct):
        for p in range(first[structure_start[s]], first[structure_start[s + 1]]):
            nbr_local[p] = nbr[p] - structure_start[s]
    max_atoms = 0
    for s in range(n_struct):
        max_atoms = max(max_atoms, structure_start[s + 1] - structure_start[s])
    n_elements = row_start.shape[0] - 1
    max_slots = 0
    for el in range(0 if forward else n_elements):
        max_slots = max(max_slots, j_indptr[row_start[el + 1]] - j_indptr[row_start[el]])
    K = 1 if forward else ATOMS_PER_PASS
    n_AA = n_A + tree_parent.shape[0] if forward else 0  # the products' derivatives: forward mode only
    for c in prange(n_chunks):
        A, AA, R, dR, Y, dY = _environment_buffers(n_A, n_AA, max_pairs, n_radial, l_max)
        dAA = np.empty((n_AA + 1 if forward else 0, 3 * max_pairs))
        AT = np.zeros((n_A + 1, K))
        AT[n_A, :] = 1.0  # the padding factor of lower-order entries
        dA = np.empty((0 if forward else K, n_A, 3 * max_pairs))
        jac = np.zeros((n_A + 1, K))
        prefix = np.empty((factors.shape[1], K))
        before = np.empty(K)
        jac_rows = np.empty((K, 0 if forward else max_slots))
        atoms = np.empty(K, dtype=np.int64)
        col_lo = np.empty(n_elements, dtype=np.int64)
        col_hi = np.empty(n_elements, dtype=np.int64)
        acc = np.empty(3 * max_pairs)
        grad_buffer = np.empty((n_rows, 3 * max_atoms))
        vir = np.zeros((n_rows if with_virial else 1, 6))
        s_lo, s_hi = _chunk_bounds(n_struct, n_chunks, c)
        for s in range(s_lo, s_hi):
            s0 = structure_start[s]
            n_s = structure_start[s + 1] - s0
            grad = grad_buffer[:, :3 * n_s]
            grad[:] = 0.0
            vir[:] = 0.0
            if forward:
                for i in range(s0, s0 + n_s):
                    atomic_base(i, first, nbr, D, species, family, params, n_radial, l_max, prefac,
                                nl_n, nl_l, nl_offset, n_nlm, A, R, dR, Y, dY)
                    products_forward(A, AA, tree_parent, tree_last, n_A)
                    el = species[i]
                    atom_feature_gradient_forward(i, s0, first, nbr, nbr_local, D, species, A, AA, R, dR, Y, dY,
                                                  nl_n, nl_l, nl_offset, n_nlm, n_A, tree_parent, tree_last,
                                                  indptr, parent, last, vals, row_start[el], row_start[el + 1],
                                                  dAA, acc, col_lo, col_hi, grad, with_virial, vir)
            for el in range(0 if forward else n_elements):
                k = 0
                for i in range(s0, s0 + n_s + 1):
                    if i < s0 + n_s and species[i] == el:
                        atomic_base(i, first, nbr, D, species, family, params, n_radial, l_max, prefac,
                                    nl_n, nl_l, nl_offset, n_nlm, A, R, dR, Y, dY)
                        AT[:n_A, k] = A
                        atomic_base_gradient(i, first, nbr, D, species, R, dR, Y, dY, nl_n, nl_l, nl_offset,
                                             n_nlm, dA[k])
                        atoms[k] = i
                        k += 1
                    if k == K or (k > 0 and i == s0 + n_s):  # a full pass, or the element's last atoms
                        atoms_feature_gradient(atoms, k, s0, first, nbr, nbr_local, D, species, n_elements, AT,
                                               dA, n_nlm, indptr, vals, factors, j_indptr, j_col,
                                               row_start[el], row_start[el + 1], jac, prefix, before, jac_rows,
                                               acc, col_lo, col_hi, grad, with_virial, vir)
                        k = 0
            for j in range(n_s):
                for d in range(3):
                    for r in range(n_rows):
                        out[s0 + j, d, r] = grad[r, 3 * j + d]
            if with_virial:
                for v in range(6):
                    for r in range(n_rows):
                        vir_out[s, v, r] = vir[r, v]


@njit(cache=True)
def compute_energies_forces(first, nbr, D, species, family, params, n_radial, l_max, nl_n, nl_l,
                            nl_offset, n_nlm, n_A, tree_parent, tree_last, w_indptr, w_parent, w_last,
                            w_val, node_indptr, nodes, max_pairs, lane_work, with_forces, energies, f_pair):
    """Atomic energies and pair forces ``f_pair[p] = dE_i / dr_j`` (adjoint, parallel over groups
    of :data:`ENERGY_LANES` atoms of one element).

    The fitted coefficients come folded into the product space
    (:func:`skace.maths.basis.fold_coefficients`): for central element ``e``,
    entries ``w_indptr[e]:w_indptr[e + 1]`` of ``(w_parent, w_last, w_val)``,
    which read the stored products ``nodes[node_indptr[e]:node_indptr[e + 1]]``.
    ``lane_work`` (``(n_threads, 2, n_A + n_tree + 1, ENERGY_LANES)``, from
    :func:`lane_work`) holds each thread's products and adjoints: kept between
    calls, so that small structures (MD) do not pay for fresh pages each step.
    """
    compute_energies_forces_range(0, species.shape[0], first, nbr, D, species, family, params, n_radial, l_max,
                                  nl_n, nl_l, nl_offset, n_nlm, n_A, tree_parent, tree_last, w_indptr, w_parent,
                                  w_last, w_val, node_indptr, nodes, max_pairs, lane_work, with_forces, energies,
                                  f_pair)


@njit(cache=True, parallel=True)
def sum_rows_by_group(values, group_start, row_offset, row_width, out):
    """``out[g, off_i : off_i + width_i] += values[i, :width_i]`` over rows i of group g.

    Parallel over groups (structures), so no two threads write one output row.
    """
    for g in prange(group_start.shape[0] - 1):
        for i in range(group_start[g], group_start[g + 1]):
            off = row_offset[i]
            for k in range(row_width[i]):
                out[g, off + k] += values[i, k]


@njit(cache=True, parallel=True)
def compute_energies_forces_range(lo, hi, first, nbr, D, species, family, params, n_radial, l_max, nl_n, nl_l,
                                  nl_offset, n_nlm, n_A, tree_parent, tree_last, w_indptr, w_parent, w_last,
                                  w_val, node_indptr, nodes, max_pairs, lane_work, with_forces, energies, f_pair):
    """:func:`compute_energies_forces` for the atoms ``lo:hi`` only (parallel over groups of them,
    one block of ``lane_work`` per thread).

    ``first[lo:hi + 1]`` indexes this range's pairs in ``nbr``, ``D`` and
    ``f_pair`` (it may start at 0); ``species`` and ``nbr`` are global, so a
    large structure is evaluated chunk by chunk with pair arrays the size of
    one chunk.
    """
    prefac = harmonic_prefactors(l_max)
    L = ENERGY_LANES
    order, group_start = element_groups(species, lo, hi)
    n_groups = group_start.shape[0] - 1
    n_lm = (l_max + 1) ** 2
    n_work = min(lane_work.shape[0], n_groups)
    for c in prange(n_work):
        g_lo, g_hi = _chunk_bounds(n_groups, n_work, c)
        A = np.empty(n_A)
        AA = lane_work[c, 0]
        gAA = lane_work[c, 1]
        run = np.empty(L)
        energy = np.empty(L)
        R = np.empty((L, max_pairs, n_radial))
        dR = np.empty((L, max_pairs, n_radial))
        Y = np.empty((L, max_pairs, n_lm))
        dY = np.empty((L, max_pairs, n_lm, 3))
        for g in range(g_lo, g_hi):
            t0, n_s = group_start[g], group_start[g + 1] - group_start[g]
            e = species[order[t0]]
            AA[:n_A, :] = 0.0  # idle lanes compute from A = 0
            for s in range(n_s):
                atomic_base(order[t0 + s], first, nbr, D, species, family, params, n_radial, l_max, prefac,
                            nl_n, nl_l, nl_offset, n_nlm, A, R[s], dR[s], Y[s], dY[s])
                AA[:n_A, s] = A
            atoms_energy_adjoint(n_A, AA, gAA, run, tree_parent, tree_last, w_indptr[e], w_indptr[e + 1],
                                 w_parent, w_last, w_val, nodes, node_indptr[e], node_indptr[e + 1],
                                 with_forces, energy)
            for s in range(n_s):
                i = order[t0 + s]
                energies[i] = energy[s]
                if with_forces:
                    pair_forces(i, first, nbr, D, species, gAA, s, R[s], dR[s], Y[s], dY[s], nl_n, nl_l,
                                nl_offset, n_nlm, f_pair)


@njit(cache=True)
def scatter_pair_forces(lo, hi, first, nbr, D, f_pair, forces, virial):
    """``F_i += sum_j dE_i/dr_ij``, ``F_j -= dE_i/dr_ij`` and ``virial += dE_i/dr_ij (x) r_ij`` over
    the pairs of atoms ``lo:hi`` (serial: neighbours of different atoms may coincide)."""
    for i in range(lo, hi):
        for p in range(first[i], first[i + 1]):
            j = nbr[p]
            for a in range(3):
                forces[i, a] += f_pair[p, a]
                forces[j, a] -= f_pair[p, a]
                for b in range(3):
                    virial[a, b] += f_pair[p, a] * D[p, b]
