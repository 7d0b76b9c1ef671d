"""Energies, forces and virials of large structures in chunks of atoms.

A structure with many atoms is never turned into one neighbour list: its
atoms, their periodic images and a bin grid are prepared once (memory linear
in the atoms), then atoms are processed in chunks whose pairs alone are held
(:class:`skace.kernels.neighbours.CellGrid`). Each chunk's energies and pair
derivatives come from the adjoint kernel on all threads; forces and the
virial are accumulated as the chunk is done. Time is linear in the number of
atoms and working memory is bounded by the chunk size, whatever the size of
the structure.
"""

from types import SimpleNamespace

import numpy as np

from .descriptor import numba_threads
from .kernels import ace as _k
from .kernels.neighbours import CellGrid, check_overlap
from .structures import species_indices, structure_label

#: Structures with more atoms than this are evaluated in chunks of atoms; lists of
#: smaller structures with more atoms than this in all, in groups of structures.
LARGE_ATOMS = 20_000
#: Pairs (neighbour list entries) held at once when evaluating a large structure.
CHUNK_PAIRS = 2**21


def evaluate_large(model, atoms, forces=True, stress=False, name="X[0]"):
    """Per-atom energies, forces (N, 3) and the 3x3 virial of one structure, chunk by chunk.

    Same results as :meth:`skace.ACERegressor._evaluate` on ``[atoms]`` (up to
    the order of floating-point sums) without ever holding all pairs.
    """
    d = model.descriptor_
    species = species_indices([atoms], d.elements_, labels=[name])
    n = len(atoms)
    try:
        grid = CellGrid(atoms.positions, atoms.cell.array, atoms.pbc, float(d.cutoff))
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None
    w_indptr, w_parent, w_last, w_val, node_indptr, nodes = model._folded_coefficients()
    energies = np.empty(n)
    F = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    first_all = np.zeros(n + 1, dtype=np.int64)  # CSR of the current chunk, indexed by global atom
    need_pairs = bool(forces or stress)
    basis_args = d._kernel_basis_args()
    lo = 0
    chunk = int(max(16, min(4096, CHUNK_PAIRS // 64)))  # first guess: up to 64 pairs per atom
    with numba_threads(model.n_jobs):
        while lo < n:
            hi = min(n, lo + chunk)
            first, nbr, D, close = grid.pairs(lo, hi)
            check_overlap(name, close, first, nbr, D, atom0=lo, j0=lo)
            first_all[lo:hi + 1] = first
            max_pairs = max(int(np.diff(first).max()), 1)
            f_pair = np.empty((len(nbr) if need_pairs else 0, 3))
            _k.compute_energies_forces_range(lo, hi, first_all, nbr, D, species, *basis_args, w_indptr, w_parent,
                                             w_last, w_val, node_indptr, nodes, max_pairs, model._lane_work(),
                                             need_pairs, energies, f_pair)
            if need_pairs:
                _k.scatter_pair_forces(lo, hi, first_all, nbr, D, f_pair, F, virial)
            # size the next chunk to about CHUNK_PAIRS pairs
            per_atom = max(len(nbr) / (hi - lo), 1.0)
            chunk = int(max(64, min(CHUNK_PAIRS / per_atom, 1 << 20)))
            lo = hi
    e0 = np.array([model.e0_[el] for el in d.elements_])
    energies += e0[species]
    out = {"energies": energies}
    if forces:
        out["forces"] = F
    if stress:
        out["virial"] = 0.5 * (virial + virial.T)
    return out


def evaluate_mixed(model, structures, forces=True, stress=False, labels=None):
    """:meth:`skace.ACERegressor._evaluate` for inputs with more than ``LARGE_ATOMS`` atoms in all.

    Small structures go through the batched path in consecutive groups of at
    most ``LARGE_ATOMS`` atoms; large ones through :func:`evaluate_large`.
    Results are in input order; errors name structures by ``labels``
    (``skace.structures.structure_label``).
    """
    from .descriptor import _chunks

    labels = [structure_label(k, labels=labels) for k in range(len(structures))]

    sizes = np.array([len(a) for a in structures])
    parts = {}
    small_idx = np.flatnonzero(sizes <= LARGE_ATOMS)
    small = [structures[k] for k in small_idx]
    for sl in (_chunks(small, LARGE_ATOMS) if small else ()):
        res = model._evaluate(small[sl], forces=forces, stress=stress, _raw=True,
                              labels=[labels[k] for k in small_idx[sl]])
        starts = res["batch"].structure_start
        for t, k in enumerate(small_idx[sl]):
            a0, a1 = starts[t], starts[t + 1]
            parts[k] = dict(energies=res["energies"][a0:a1])
            if forces:
                parts[k]["forces"] = res["forces"][a0:a1]
            if stress:
                parts[k]["virial"] = res["virial"][t]
    for k in np.flatnonzero(sizes > LARGE_ATOMS):
        parts[k] = evaluate_large(model, structures[k], forces, stress, name=labels[k])
    order = range(len(structures))
    out = {"energies": np.concatenate([parts[k]["energies"] for k in order])}
    if forces:
        out["forces"] = np.concatenate([parts[k]["forces"] for k in order])
    if stress:
        out["virial"] = np.stack([parts[k]["virial"] for k in order])
    out["batch"] = SimpleNamespace(structure_start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
    return out
