"""From lists of ``ase.Atoms`` to the flat arrays the kernels read.

Validation lives here so that every entry point (transformer, regressor,
calculator) gives the same clear errors for bad input.
"""

from collections import namedtuple

import numpy as np
from ase import Atoms

from .kernels.neighbours import check_overlap, molecules_neighbour_list, neighbour_list

Batch = namedtuple(
    "Batch",
    [
        "structure_start",  # (n_structures + 1,) first atom of each structure
        "species",  # (n_atoms,) element index of each atom
        "first",  # (n_atoms + 1,) CSR into the pairs
        "nbr",  # (n_pairs,) global index of the neighbour
        "D",  # (n_pairs, 3) displacement r_j - r_i (with periodic shift)
        "max_pairs",  # largest number of neighbours of one atom
    ],
)


def read_database(path, selection=None):
    """The structures of an ASE database (any format ``ase.db`` reads), in row order.

    Each row becomes an ``ase.Atoms`` with the row's stored energy, forces and
    stress on a single-point calculator (where :class:`skace.ACERegressor`
    reads them by default) and the row's key-value pairs in ``atoms.info``
    (so ``weight``, custom energy keys, ... work as for any other input).

    Parameters
    ----------
    path : str or os.PathLike
    selection : optional
        An ``ase.db`` selection (for example ``"Cu>0"`` or ``"config=bulk"``).

    Returns
    -------
    list of ase.Atoms

    Examples
    --------
    >>> import os, tempfile
    >>> import ase.db
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> from skace.structures import read_database
    >>> path = os.path.join(tempfile.mkdtemp(), "cu.db")
    >>> cu = bulk("Cu", cubic=True)
    >>> cu.calc = EMT()
    >>> _ = cu.get_forces()
    >>> with ase.db.connect(path) as db:
    ...     _ = db.write(cu, config="bulk")
    >>> atoms = read_database(path)[0]
    >>> atoms.info["config"], atoms.get_forces().shape
    ('bulk', (4, 3))
    """
    import os

    import ase.db

    if not os.path.exists(path):
        raise FileNotFoundError(f"no ASE database at {os.fspath(path)!r}")
    out = []
    with ase.db.connect(path) as db:
        for row in db.select(selection):
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            out.append(atoms)
    return out


def as_structure_list(X, name="X"):
    """Check that ``X`` is a non-empty sequence of ``ase.Atoms`` and return it as a list.

    A single ``Atoms`` object is accepted as a list of one; any iterable
    (a generator, for example) is read once; a ``str`` or path is read as an
    ASE database (:func:`read_database`).
    """
    import os

    single = isinstance(X, Atoms)
    if single:  # checked as the list of one it stands for
        X = [X]
    if isinstance(X, (str, os.PathLike)):
        X = read_database(X)
    if X is None:
        raise ValueError(f"empty input: {name} is None; pass a list of ase.Atoms")
    try:
        structures = list(X)
    except TypeError:
        raise TypeError(f"{name} must be a list of ase.Atoms, got {type(X).__name__}") from None
    if not structures:
        raise ValueError(f"empty input: {name} contains no structures")
    for k, atoms in enumerate(structures):
        label = name if single else f"{name}[{k}]"
        if not isinstance(atoms, Atoms):
            raise TypeError(f"{label} is a {type(atoms).__name__}, not an ase.Atoms")
        if len(atoms) == 0:
            raise ValueError(f"{label} has no atoms")
        if not np.all(np.isfinite(atoms.positions)):
            raise ValueError(f"{label} has NaN or infinite positions")
        if atoms.pbc.any():
            cell = atoms.cell.array
            if not np.all(np.isfinite(cell)):
                raise ValueError(f"{label} has a NaN or infinite cell")
            periodic = cell[atoms.pbc]
            if np.linalg.matrix_rank(periodic, tol=1e-9) < len(periodic):
                raise ValueError(
                    f"{label} is periodic along {', '.join(a for a, p in zip('xyz', atoms.pbc) if p)} "
                    "but its cell vectors there are zero or linearly dependent"
                )
    return structures


def internal_displacements(atoms):
    """Orthonormal basis ``(3 N, 3 N - r)`` of the displacements of ``atoms`` that are not rigid motions.

    A rotation- and translation-invariant energy has a gradient orthogonal to
    the ``r`` rigid motions: the three translations, and for a structure with
    no periodic direction the rotations (three, or two for a linear molecule).
    Force rows projected on this basis therefore carry all of the
    information of the ``3 N`` rows in ``3 N - r`` of them. Rows are ordered
    as ``positions.ravel()`` (atom by atom, x y z). :func:`internal_components`
    applies the basis without forming it.

    Parameters
    ----------
    atoms : ase.Atoms

    Returns
    -------
    ndarray (3 N, 3 N - r)
        Orthonormal columns.

    Examples
    --------
    >>> from ase.build import molecule
    >>> internal_displacements(molecule("H2O")).shape, internal_displacements(molecule("CO2")).shape
    ((9, 3), (9, 4))
    """
    return internal_components(atoms, np.eye(3 * len(atoms))).T


def internal_components(atoms, rows):
    """``Q^T rows`` for the basis ``Q`` of :func:`internal_displacements`, without forming ``Q``.

    ``Q`` is kept as the Householder reflectors of a pivoted QR factorisation of
    the ``r`` rigid motions (``3 N x 6`` at most), applied by LAPACK's ``dormqr``:
    the cost is linear in the number of atoms, where an explicit ``3 N x 3 N``
    basis would cost its square in memory and time (more than the Gram rows it
    saves, for a periodic cell of a few hundred atoms).

    Parameters
    ----------
    atoms : ase.Atoms
    rows : ndarray (3 N, n)
        Rows ordered as ``positions.ravel()``; not modified.

    Returns
    -------
    ndarray (3 N - r, n)

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import molecule
    >>> rows = np.random.default_rng(0).normal(size=(9, 4))
    >>> small = internal_components(molecule("H2O"), rows)
    >>> Q = internal_displacements(molecule("H2O"))
    >>> small.shape, bool(np.allclose(small, Q.T @ rows))
    ((3, 4), True)
    """
    from scipy.linalg import lapack

    n = len(atoms)
    h, tau, rank = _rigid_motions_qr(atoms)
    c = np.asarray(rows, dtype=np.float64).T  # rows^T Q = (Q^T rows)^T, on the Fortran view
    if c.size == 0:
        return np.zeros((3 * n - rank, c.shape[0]))
    h = h[:, :len(tau)]
    lwork = int(lapack.dormqr("R", "N", h, tau, c, -1)[1][0])
    cq, _, info = lapack.dormqr("R", "N", h, tau, c, max(lwork, c.shape[0], 1))
    if info != 0:
        raise RuntimeError(f"dormqr failed (info {info})")
    return cq[:, rank:].T


def _rigid_motions_qr(atoms):
    """``(h, tau, r)``: Householder reflectors of a pivoted QR of the rigid motions of
    ``atoms`` (3 translations, and 3 rotations without periodicity) and their rank ``r``."""
    from scipy import linalg

    n = len(atoms)
    motions = [np.tile(np.eye(3)[a], n) for a in range(3)]
    if not atoms.pbc.any():
        r = atoms.positions - atoms.positions.mean(axis=0)
        motions += [np.cross(np.eye(3)[a], r).ravel() for a in range(3)]
    (h, tau), R, _ = linalg.qr(np.array(motions).T, mode="raw", pivoting=True)
    diag = np.abs(np.diag(R))
    return h, tau, int(np.sum(diag > 1e-8 * diag[0]))


def internal_dimension(atoms):
    """``3 N - r``: the number of displacements of ``atoms`` that are not rigid motions
    (the rows :func:`internal_components` returns).

    Examples
    --------
    >>> from ase.build import bulk, molecule
    >>> internal_dimension(molecule("H2O")), internal_dimension(molecule("CO2")), internal_dimension(bulk("Cu"))
    (3, 4, 0)
    """
    return 3 * len(atoms) - _rigid_motions_qr(atoms)[2]


def structure_label(k, name="X", labels=None):
    """How an error names structure ``k`` of a batch: ``name[k]``, or ``labels[k]`` where the
    batch is part of a longer list (a chunk) or one structure with a name of its own."""
    return f"{name}[{k}]" if labels is None else labels[k]


def species_indices(structures, elements, name="X", labels=None):
    """Element index of every atom (concatenated), with a clear error for unknown elements.

    Vectorised over atoms: a lookup table from atomic number to element index.
    """
    from ase.data import atomic_numbers, chemical_symbols

    table = np.full(len(chemical_symbols), -1, dtype=np.int64)
    for k, s in enumerate(elements):
        if s in atomic_numbers:
            table[atomic_numbers[s]] = k
    out = []
    for k, atoms in enumerate(structures):
        idx = table[atoms.numbers]
        if idx.size and idx.min() < 0:
            bad = chemical_symbols[int(atoms.numbers[np.flatnonzero(idx < 0)[0]])]
            raise ValueError(f"unknown element {bad!r} in {structure_label(k, name, labels)}; "
                             f"the model knows {list(elements)}")
        out.append(idx)
    return np.concatenate(out)


#: Non-periodic structures up to this size use the all-pairs batch search.
SMALL_MOLECULE = 256


def build_batch(structures, elements, cutoff, name="X", labels=None):
    """Neighbour lists of all structures, concatenated with global atom indices.

    Pairs of each atom are sorted by neighbour element (the gradient kernel
    relies on it). Errors name structure ``k`` as :func:`structure_label` does.
    """
    species = species_indices(structures, elements, name, labels)
    n_atoms = np.array([len(a) for a in structures])
    structure_start = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    small = np.array([not a.pbc.any() and len(a) <= SMALL_MOLECULE for a in structures])
    parts = []  # (structure index, first, j, D, overlapping) with global indices
    if small.any():
        idx = np.flatnonzero(small)
        sub_start = np.concatenate([[0], np.cumsum(n_atoms[idx])]).astype(np.int64)
        pos = np.concatenate([structures[k].positions for k in idx])
        first, j, D, close = molecules_neighbour_list(pos, sub_start, cutoff)
        for t, k in enumerate(idx):
            a0, a1 = sub_start[t], sub_start[t + 1]
            p0, p1 = first[a0], first[a1]
            shift = structure_start[k] - a0
            parts.append((k, first[a0:a1 + 1] - p0, j[p0:p1] + shift, D[p0:p1], close[a0:a1]))
    for k in np.flatnonzero(~small):
        atoms = structures[k]
        try:
            first, j, D, close = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        except ValueError as err:
            raise ValueError(f"{structure_label(k, name, labels)}: {err}") from None
        parts.append((k, first, j + structure_start[k], D, close))
    parts.sort(key=lambda part: part[0])
    firsts, nbrs, Ds = [], [], []
    pair_offset = 0
    for k, first, j, D, close in parts:
        check_overlap(structure_label(k, name, labels), close, first, j, D, j0=structure_start[k])
        firsts.append(first[:-1] + pair_offset)
        nbrs.append(j)
        Ds.append(D)
        pair_offset += len(j)
    first = np.concatenate(firsts + [np.array([pair_offset])]).astype(np.int64)
    nbr = np.concatenate(nbrs).astype(np.int64)
    D = np.concatenate(Ds)
    owner = np.repeat(np.arange(len(species)), np.diff(first))
    order = np.lexsort((species[nbr], owner))
    nbr, D = nbr[order], np.ascontiguousarray(D[order])
    max_pairs = int(np.diff(first).max()) if len(first) > 1 else 0
    return Batch(structure_start, species, first, nbr, D, max(max_pairs, 1))
