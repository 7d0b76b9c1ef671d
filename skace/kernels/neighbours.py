"""Neighbour lists for molecules and (mixed-)periodic cells (numba, linear time).

Atoms are wrapped into the cell along periodic directions, periodic images are
added as ghost points inside a padding of one cutoff (any number of images, so
cutoffs larger than the cell work), and all points are binned on a grid of
cubes no smaller than the cutoff. Each atom then scans the 27 bins around it.
"""


import numpy as np
from numba import njit, prange

#: Atoms closer than this (Å) overlap: no bond is shorter than 0.7 Å, so such a pair is a
#: duplicated atom or a collapsed structure, and descriptors there mean nothing. Fixed: the
#: kernels read it when numba compiles them.
OVERLAP_DISTANCE = 0.1
_OVERLAP_D2 = OVERLAP_DISTANCE * OVERLAP_DISTANCE


def overlap_message(where, atom, own_image=False):
    """The error for ``atom`` of structure ``where`` overlapping another atom (or, in a periodic
    cell shorter than ``OVERLAP_DISTANCE``, its own image)."""
    if own_image:
        return (f"overlapping atoms in {where}: atom {atom} is closer than {OVERLAP_DISTANCE} Å to its own "
                "periodic image (a periodic cell that short)")
    return f"overlapping atoms in {where}: atom {atom} has a neighbour closer than {OVERLAP_DISTANCE} Å"


def check_overlap(where, close, first, j, D, atom0=0, j0=0):
    """Raise the error for the first atom flagged in ``close`` (from a neighbour search: CSR
    ``first`` of its rows' pairs, neighbours ``j``, displacements ``D``), if any. Row ``i`` is
    atom ``atom0 + i`` of ``where`` and ``j0 + i`` in ``j``'s numbering, so that an atom
    closest to an image of itself is said as such."""
    if not close.any():
        return
    i = int(np.flatnonzero(close)[0])
    rows = slice(first[i], first[i + 1])
    closest = first[i] + int(np.argmin(np.einsum("pd,pd->p", D[rows], D[rows])))
    raise ValueError(overlap_message(where, atom0 + i, own_image=bool(j[closest] == j0 + i)))


@njit(cache=True)
def _images(frac, n_images, pad, cell, points, origin, fill):
    """Count the periodic images inside the padded cell; with ``fill``, also append
    them after the N wrapped atoms (already in ``points[:N]``). Returns the count."""
    N = frac.shape[0]
    g = 0
    for i in range(N):
        for k0 in range(-n_images[0], n_images[0] + 1):
            f0 = frac[i, 0] + k0
            if f0 < -pad[0] or f0 >= 1.0 + pad[0]:
                continue
            for k1 in range(-n_images[1], n_images[1] + 1):
                f1 = frac[i, 1] + k1
                if f1 < -pad[1] or f1 >= 1.0 + pad[1]:
                    continue
                for k2 in range(-n_images[2], n_images[2] + 1):
                    f2 = frac[i, 2] + k2
                    if f2 < -pad[2] or f2 >= 1.0 + pad[2] or (k0 == 0 and k1 == 0 and k2 == 0):
                        continue
                    if fill:
                        for d in range(3):
                            points[N + g, d] = points[i, d] + k0 * cell[0, d] + k1 * cell[1, d] + k2 * cell[2, d]
                        origin[N + g] = i
                    g += 1
    return g


@njit(cache=True)
def _bin_points(points, cutoff, max_bins):
    lo = np.empty(3)
    n_bins = np.empty(3, dtype=np.int64)
    size = np.empty(3)
    for d in range(3):
        lo[d] = points[:, d].min()
        extent = points[:, d].max() - lo[d]
        # capped before the cast: atoms far apart would overflow int64 (and their product too)
        n_bins[d] = max(1, int(min(extent / cutoff, float(max_bins))))
    # coarsen the grid if it would hold far more bins than points
    while float(n_bins[0]) * float(n_bins[1]) * float(n_bins[2]) > max_bins:
        for d in range(3):
            n_bins[d] = max(1, n_bins[d] // 2)
    for d in range(3):
        extent = points[:, d].max() - lo[d]
        size[d] = max(extent / n_bins[d], cutoff) * (1.0 + 1e-12) + 1e-12
    n_total = n_bins[0] * n_bins[1] * n_bins[2]
    bin_of = np.empty(points.shape[0], dtype=np.int64)
    counts = np.zeros(n_total + 1, dtype=np.int64)
    for p in range(points.shape[0]):
        b = 0
        for d in range(3):
            c = min(int((points[p, d] - lo[d]) / size[d]), n_bins[d] - 1)
            b = b * n_bins[d] + c
        bin_of[p] = b
        counts[b + 1] += 1
    start = np.cumsum(counts)
    order = np.empty(points.shape[0], dtype=np.int64)
    fill = start[:-1].copy()
    for p in range(points.shape[0]):
        order[fill[bin_of[p]]] = p
        fill[bin_of[p]] += 1
    return n_bins, bin_of, start, order


@njit(cache=True, inline="always")
def _bin_coords(b, n_bins):
    c2 = b % n_bins[2]
    c1 = (b // n_bins[2]) % n_bins[1]
    c0 = b // (n_bins[1] * n_bins[2])
    return c0, c1, c2


@njit(cache=True, parallel=True)
def _scan(points, origin, lo, hi, cutoff, n_bins, bin_of, start, order, fill_mode, first, j_out, D_out, too_close):
    """Count (``fill_mode`` False) or write (True) the pairs of atoms ``lo:hi``.

    ``first`` and ``too_close`` are indexed from ``lo`` (``first[i - lo]``).
    """
    rc2 = cutoff * cutoff
    for t in prange(hi - lo):
        i = lo + t
        c0, c1, c2 = _bin_coords(bin_of[i], n_bins)
        k = first[t] if fill_mode else 0
        count = 0
        for a in range(max(c0 - 1, 0), min(c0 + 2, n_bins[0])):
            for b in range(max(c1 - 1, 0), min(c1 + 2, n_bins[1])):
                for c in range(max(c2 - 1, 0), min(c2 + 2, n_bins[2])):
                    bb = (a * n_bins[1] + b) * n_bins[2] + c
                    for s in range(start[bb], start[bb + 1]):
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
                            too_close[t] = True
                        if fill_mode:
                            j_out[k] = origin[p]
                            D_out[k, 0] = dx
                            D_out[k, 1] = dy
                            D_out[k, 2] = dz
                            k += 1
                        count += 1
        if not fill_mode:
            first[t + 1] = count


#: Largest number of periodic images (ghost atoms) a neighbour list may create.
MAX_IMAGES = 5e7

#: Farthest an atom of a periodic cell may lie from it, in cell lengths: wrapping it back
#: keeps about ``1e-16 * MAX_CELL_LENGTHS`` of a cell length of precision (1e-6 here).
MAX_CELL_LENGTHS = 1e10


def _finite(positions):
    """``positions`` as contiguous float64, refused if any is NaN or infinite: the kernels
    would bin them nowhere (and write outside their arrays)."""
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        bad = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise ValueError(f"atom {bad} has a NaN or infinite position")
    return positions


class CellGrid:
    """Wrapped atoms, their periodic images and a bin grid, for neighbour lists of atom ranges.

    Memory is linear in the number of atoms (plus images in a one-cutoff
    shell); :meth:`pairs` then lists the pairs of any range of atoms, so a
    large structure can be processed in chunks without ever holding all of
    its pairs.

    Parameters
    ----------
    positions, cell, pbc, cutoff
        As for :func:`neighbour_list`.
    """

    def __init__(self, positions, cell, pbc, cutoff):
        from ase.geometry import complete_cell

        positions = _finite(positions)
        N = positions.shape[0]
        pbc = np.asarray(pbc, dtype=bool)
        self.n_atoms = N
        self.cutoff = float(cutoff)
        if pbc.any():
            cell = np.asarray(cell, dtype=np.float64)
            if not np.all(np.isfinite(cell[pbc])):
                raise ValueError("the cell has NaN or infinite vectors along periodic directions")
            cell = complete_cell(cell)
            inv = np.linalg.inv(cell)
            frac = positions @ inv
            if N and np.abs(frac[:, pbc]).max() > MAX_CELL_LENGTHS:
                raise ValueError(f"an atom lies {np.abs(frac[:, pbc]).max():.3g} cell lengths from the cell, too far "
                                 "to wrap into it in double precision; check the positions' units")
            shift = np.where(pbc, np.floor(frac), 0.0)  # wrap into the cell along periodic axes
            frac = np.where(pbc, frac - shift, 0.5)  # non-periodic axes: never clipped, never imaged
            spacing = 1.0 / np.linalg.norm(inv, axis=0)  # distance between lattice planes
            pad = np.where(pbc, cutoff / spacing, 0.0)
            n_images = np.where(pbc, np.ceil(pad) + 1, 0).astype(np.int64)
            expected = N * (np.prod(1.0 + 2.0 * pad) - 1.0)  # images in the padding, about
            if not expected <= MAX_IMAGES:
                raise ValueError(
                    f"the cell is too small for the cutoff: about {expected:.3g} periodic images lie within "
                    f"{cutoff} Å of it (the limit is {MAX_IMAGES:.0e}); check the cell's units and size"
                )
            cell = np.ascontiguousarray(cell)
            n_ghosts = _images(frac, n_images, pad, cell, np.empty((0, 3)), np.empty(0, np.int64), False)
            points = np.empty((N + n_ghosts, 3))
            points[:N] = positions - shift @ cell
            origin = np.empty(N + n_ghosts, dtype=np.int64)
            origin[:N] = np.arange(N)
            _images(frac, n_images, pad, cell, points, origin, True)
        else:
            points = positions
            origin = np.arange(N, dtype=np.int64)
        self.points, self.origin = points, origin
        if N:
            max_bins = max(8 * points.shape[0], 27)
            self.n_bins, self.bin_of, self.start, self.order = _bin_points(points, self.cutoff, max_bins)

    def pairs(self, lo=0, hi=None):
        """``(first, j, D, overlapping)`` of atoms ``lo:hi`` (CSR from 0; ``j`` global atom indices)."""
        hi = self.n_atoms if hi is None else hi
        n = hi - lo
        first = np.zeros(n + 1, dtype=np.int64)
        too_close = np.zeros(n, dtype=np.bool_)
        if n <= 0:
            return first, np.zeros(0, np.int64), np.zeros((0, 3)), too_close
        args = (self.points, self.origin, lo, hi, self.cutoff, self.n_bins, self.bin_of, self.start, self.order)
        _scan(*args, False, first, np.zeros(0, np.int64), np.zeros((0, 3)), too_close)
        first = np.cumsum(first)
        j = np.empty(first[-1], dtype=np.int64)
        D = np.empty((first[-1], 3))
        _scan(*args, True, first, j, D, too_close)
        return first, j, D, too_close


def neighbour_list(positions, cell, pbc, cutoff):
    """All ordered pairs ``(i, j)`` with ``|r_j + S cell - r_i| < cutoff``, ``(j, S) != (i, 0)``.

    Parameters
    ----------
    positions : ndarray of shape (N, 3)
    cell : ndarray of shape (3, 3)
        Lattice vectors as rows; rows along non-periodic directions may be zero.
    pbc : array of 3 bool
    cutoff : float

    Returns
    -------
    first : ndarray of shape (N + 1,)
        Pairs of atom ``i`` are ``first[i]:first[i + 1]`` (CSR).
    j : ndarray of shape (n_pairs,)
        Neighbour index of each pair.
    D : ndarray of shape (n_pairs, 3)
        Displacement ``r_j + S cell - r_i``.
    overlapping : ndarray of bool, shape (N,)
        Atoms with another atom (or image of itself) closer than ``OVERLAP_DISTANCE``.
    """
    return CellGrid(positions, cell, pbc, cutoff).pairs()


@njit(cache=True, parallel=True)
def _scan_molecules(positions, structure_start, atom_structure, cutoff, fill_mode, first, j_out, D_out, too_close):
    """All-pairs search inside each non-periodic structure (count or write)."""
    rc2 = cutoff * cutoff
    for i in prange(positions.shape[0]):
        s = atom_structure[i]
        k = first[i] if fill_mode else 0
        count = 0
        for j in range(structure_start[s], structure_start[s + 1]):
            if j == i:
                continue
            dx = positions[j, 0] - positions[i, 0]
            dy = positions[j, 1] - positions[i, 1]
            dz = positions[j, 2] - positions[i, 2]
            d2 = dx * dx + dy * dy + dz * dz
            if d2 >= rc2:
                continue
            if d2 < _OVERLAP_D2:
                too_close[i] = True
            if fill_mode:
                j_out[k] = j
                D_out[k, 0] = dx
                D_out[k, 1] = dy
                D_out[k, 2] = dz
                k += 1
            count += 1
        if not fill_mode:
            first[i + 1] = count


def molecules_neighbour_list(positions, structure_start, cutoff):
    """Neighbour list of many small non-periodic structures at once (global atom indices).

    Same outputs as :func:`neighbour_list`; cost is the sum of squared
    structure sizes, so use it for molecules, not for large clusters.
    """
    positions = _finite(positions)
    N = positions.shape[0]
    atom_structure = np.repeat(np.arange(len(structure_start) - 1), np.diff(structure_start))
    first = np.zeros(N + 1, dtype=np.int64)
    too_close = np.zeros(N, dtype=np.bool_)
    args = (positions, structure_start, atom_structure, float(cutoff))
    _scan_molecules(*args, False, first, np.zeros(0, np.int64), np.zeros((0, 3)), too_close)
    first = np.cumsum(first)
    j = np.empty(first[-1], dtype=np.int64)
    D = np.empty((first[-1], 3))
    _scan_molecules(*args, True, first, j, D, too_close)
    return first, j, D, too_close
