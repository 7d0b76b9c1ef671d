"""CUDA backend: ACE energies, forces, stress and features on an NVIDIA GPU.

Selected by ``device="cuda"`` on :class:`skace.ACETransformer`,
:class:`skace.ACERegressor` and :class:`skace.ACECalculator`; needs the
optional ``numba-cuda`` package (``pip install "skace[cuda]"``, or
``skace[cuda12]`` / ``skace[cuda13]`` without a CUDA toolkit) and a CUDA GPU,
or numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, for testing only).

Everything here imports ``numba.cuda`` lazily, so ``import skace`` works on
machines without either. The kernels are in :mod:`skace.kernels.gpu`.

What runs where, per call:

* host: input checks, species indices, periodic ghost images and their
  binning (linear in the atoms, :mod:`skace.kernels.neighbours`), the prefix
  sum of the per-atom pair counts;
* device: the pair search, radial functions and harmonics, atomic base,
  product tree, energies, adjoint, pair forces and virials, features and
  feature gradients (the latter on the CPU's neighbour list, copied over).

The basis, radial parameters and folded coefficients are copied to the
device once per fitted estimator and kept there (see :func:`device_model`).
"""

import weakref
from collections import namedtuple

import numpy as np

from .kernels.harmonics import harmonic_prefactors
from .kernels.neighbours import CellGrid, _bin_points, overlap_message
from .maths.radial import family_code
from . import structures as _structures
from .structures import Batch, species_indices, structure_label

DEVICES = ("cpu", "cuda")

#: Device memory (MiB) the per-chunk work arrays of one call may use; None: a
#: third of the free device memory, between 256 MiB and 16 GiB (large chunks keep
#: the one-thread-per-atom kernels busy on big GPUs).
CHUNK_MEMORY_MIB = None

DeviceNeighbours = namedtuple(
    "DeviceNeighbours",
    [
        "structure_start",  # host (n_structures + 1,)
        "species",  # host (n_atoms,)
        "first",  # host (n_atoms + 1,) CSR into the pairs
        "d_species",  # device copies and device-only pair arrays
        "d_first",
        "d_owner",  # (n_pairs,) central atom of each pair
        "d_nbr",  # (n_pairs,) neighbour
        "d_D",  # (n_pairs, 3) r_j + shift - r_i
    ],
)


def cuda_available():
    """Whether ``device="cuda"`` can run here: numba-cuda importable and a GPU (or the simulator) usable.

    Returns
    -------
    bool

    Examples
    --------
    >>> from skace.gpu import cuda_available
    >>> device = "cuda" if cuda_available() else "cpu"
    """
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install counts as unavailable
        return False


def check_device(device, who):
    """Raise a clear error if ``device`` cannot be used; return it.

    Parameters
    ----------
    device : {"cpu", "cuda"}
    who : str
        Name of the estimator, for the message.

    Returns
    -------
    str
        ``device``.

    Raises
    ------
    ValueError
        For an unknown device.
    RuntimeError
        For "cuda" when numba-cuda or a usable GPU is missing.

    Examples
    --------
    >>> from skace.gpu import check_device
    >>> check_device("cpu", "ACETransformer")
    'cpu'
    """
    if device not in DEVICES:
        raise ValueError(f"{who}: device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not cuda_available():
        raise RuntimeError(
            f"{who}(device='cuda') needs the numba-cuda package (pip install 'skace[cuda]') and a CUDA GPU "
            "with a working driver; none is usable here (set NUMBA_ENABLE_CUDASIM=1 before importing numba "
            "to run the kernels in numba's slow CUDA simulator)"
        )
    return device


class DeviceModel:
    """A fitted basis (and optionally folded coefficients) held in device memory.

    Parameters
    ----------
    descriptor : ACETransformer
        Fitted.
    folded : tuple of ndarray, optional
        ``(w_indptr, w_parent, w_last, w_val)`` from
        :func:`skace.maths.basis.fold_coefficients`, for energies and forces.

    Notes
    -----
    Work arrays are kept between calls and shared by them, so one
    ``DeviceModel`` (hence one estimator) must not be used from several host
    threads at once.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from skace import ACETransformer
    >>> from skace.gpu import DeviceModel, cuda_available, device_neighbour_list
    >>> X = [molecule("H2O"), molecule("CH3OH")]
    >>> ace = ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4).fit(X)
    >>> if cuda_available():
    ...     compact = DeviceModel(ace).atom_features(device_neighbour_list(X, ace.elements_, ace.cutoff))
    ...     assert compact.shape[0] == 9
    """

    def __init__(self, descriptor, folded=None):
        from numba import cuda

        b = descriptor.compiled_
        self.basis = b
        self.cutoff = float(descriptor.cutoff)
        self.elements = list(descriptor.elements_)
        self.family = family_code(descriptor.radial_basis)
        self.n_lm = (b.l_max + 1) ** 2
        self.width = max(int(np.diff(b.row_start).max()) if b.row_start[-1] else 0, 1)
        put = cuda.to_device
        self.params = put(np.ascontiguousarray(descriptor.radial_parameters_))
        self.prefactors = put(harmonic_prefactors(b.l_max))
        self.nl_n, self.nl_l, self.nl_offset = put(b.nl_n), put(b.nl_l), put(b.nl_offset)
        self.tree_parent, self.tree_last = put(b.tree_parent), put(b.tree_last)
        self.row_start, self.indptr = put(b.row_start), put(b.indptr)
        self.parent, self.last, self.vals = put(b.parent), put(b.last), put(b.vals)
        self.folded = None if folded is None else tuple(put(np.ascontiguousarray(a)) for a in folded)
        # radial and lm index of each entry of an element block of A (for dA on the fly)
        sizes = 2 * b.nl_l + 1
        self.a_n = put(np.repeat(b.nl_n, sizes).astype(np.int64))
        self.a_lm = put(np.concatenate([b.nl_l[k] ** 2 + np.arange(sizes[k]) for k in range(len(sizes))])
                        .astype(np.int64))
        self._scratch = {}

    def scratch(self, name, shape):
        """A float64 device work array kept between calls.

        Work arrays are item-last (``X[..., t]`` for atom or pair ``t`` of a
        chunk): the leading dimensions are exact, the last one is a capacity,
        so one allocation serves every chunk and every later call that fits.
        """
        from numba import cuda

        have = self._scratch.get(name)
        held = tuple(have.shape) if have is not None else None  # plain tuple: the simulator's shape is not one
        if held is None or held[:-1] != tuple(shape[:-1]) or held[-1] < shape[-1]:
            self._scratch.pop(name, None)  # free before allocating the larger one
            have = cuda.device_array(tuple(shape[:-1]) + (max(shape[-1], 1),))
            self._scratch[name] = have
        return have

    # ------------------------------------------------------------ chunks
    def chunks(self, first, max_memory=None, extra_pair_bytes=0):
        """Atom ranges ``(a0, a1)`` whose pair and product work arrays fit ``max_memory`` MiB
        (default :data:`CHUNK_MEMORY_MIB`); ``extra_pair_bytes``: more work per pair."""
        b = self.basis
        if max_memory is None:
            max_memory = CHUNK_MEMORY_MIB if CHUNK_MEMORY_MIB is not None else _free_memory_share()
        pair_bytes = 8 * (2 * b.n_radial + 4 * self.n_lm + 3) + extra_pair_bytes
        atom_bytes = 8 * 2 * (b.n_AA + 1)
        budget = int(max_memory * 2**20)
        n_atoms = len(first) - 1
        out = []
        a0 = 0
        while a0 < n_atoms:
            # grow the chunk while its atoms and pairs fit; at least one atom
            a1 = int(np.searchsorted(first, first[a0] + budget // (2 * pair_bytes), side="right")) - 1
            a1 = min(max(a1, a0 + 1), n_atoms, a0 + max(1, budget // (2 * atom_bytes)))
            out.append((a0, a1))
            a0 = a1
        return out

    def pair_arrays(self, n_pairs):
        b = self.basis
        return (self.scratch("R", (b.n_radial, n_pairs)), self.scratch("dR", (b.n_radial, n_pairs)),
                self.scratch("Y", (self.n_lm, n_pairs)), self.scratch("dY", (3, self.n_lm, n_pairs)))

    def _run_products(self, nl, a0, a1):
        """Pair basis, atomic base and product tree of atoms ``a0:a1``; returns (AA, pair arrays, p0, n_p)."""
        from .kernels import gpu as _g

        b = self.basis
        first = nl.first
        p0, n_p = int(first[a0]), int(first[a1] - first[a0])
        n_a = a1 - a0
        R, dR, Y, dY = self.pair_arrays(n_p)
        AA = self.scratch("AA", (b.n_AA + 1, n_a))
        if n_p:
            _g.pair_radial_harmonics[_g.blocks(n_p), _g.THREADS_PER_BLOCK](
                p0, n_p, nl.d_owner, nl.d_nbr, nl.d_D, nl.d_species, self.family, self.params, b.n_radial,
                b.l_max, self.prefactors, R, dR, Y, dY)
        grid = (_g.blocks(n_a), _g.THREADS_PER_BLOCK)
        _g.atomic_base[grid](a0, n_a, p0, nl.d_first, nl.d_nbr, nl.d_species, self.nl_n, self.nl_l,
                             self.nl_offset, b.n_nlm, b.n_A, R, Y, AA)
        _g.products_forward[grid](n_a, b.n_A, self.tree_parent, self.tree_last, AA)
        return AA, (R, dR, Y, dY), p0, n_p

    # ------------------------------------------------------------ results
    def energies_forces(self, nl, forces=True, virial=False):
        """Per-atom ACE energies (without E0), forces and per-atom virials (host arrays)."""
        from numba import cuda

        from .kernels import gpu as _g

        if self.folded is None:
            raise ValueError("this DeviceModel holds no coefficients")
        b = self.basis
        w_indptr, w_parent, w_last, w_val = self.folded
        n_atoms = len(nl.species)
        energies = cuda.device_array(n_atoms)
        with_gradient = bool(forces or virial)
        F = cuda.to_device(np.zeros((n_atoms, 3)))
        V = cuda.to_device(np.zeros((n_atoms if virial else 1, 9)))
        for a0, a1 in self.chunks(nl.first):
            n_a = a1 - a0
            AA, (R, dR, Y, dY), p0, n_p = self._run_products(nl, a0, a1)
            gAA = self.scratch("gAA", (b.n_AA + 1, n_a))
            _g.energy_adjoint[_g.blocks(n_a), _g.THREADS_PER_BLOCK](
                a0, n_a, nl.d_species, b.n_A, self.tree_parent, self.tree_last, w_indptr, w_parent, w_last,
                w_val, with_gradient, AA, gAA, energies)
            if with_gradient and n_p:
                f_pair = self.scratch("f_pair", (3, n_p))
                _g.pair_forces[_g.blocks(n_p), _g.THREADS_PER_BLOCK](
                    a0, p0, n_p, nl.d_owner, nl.d_nbr, nl.d_D, nl.d_species, self.nl_n, self.nl_l,
                    self.nl_offset, b.n_nlm, R, dR, Y, dY, gAA, f_pair, F)
                _g.own_forces_and_virials[_g.blocks(n_a), _g.THREADS_PER_BLOCK](
                    a0, n_a, p0, nl.d_first, nl.d_D, f_pair, bool(virial), F, V)
        out = {"energies": energies.copy_to_host()}
        if forces:
            out["forces"] = F.copy_to_host()
        if virial:
            out["virials"] = V.copy_to_host().reshape(n_atoms, 3, 3)
        return out

    def atom_features(self, nl):
        """Compact per-atom features (row ``i`` holds the block of its own element), host array."""
        from numba import cuda

        from .kernels import gpu as _g

        n_atoms = len(nl.species)
        out = cuda.device_array((n_atoms, self.width))
        for a0, a1 in self.chunks(nl.first):
            AA = self._run_products(nl, a0, a1)[0]
            _g.features_from_products[_g.blocks(a1 - a0), _g.THREADS_PER_BLOCK](
                a0, a1 - a0, nl.d_species, self.row_start, self.indptr, self.parent, self.last, self.vals, AA,
                out)
        return out.copy_to_host()


def _free_memory_share():
    """A third of the free device memory in MiB, clipped to [256, 16384] (2048 if unknown)."""
    from numba import cuda

    try:
        free = cuda.current_context().get_memory_info()[0] / 2**20
    except Exception:  # no way to ask: a moderate default
        return 2048
    if not np.isfinite(free):  # the simulator reports infinity
        return 2048
    return float(np.clip(free / 3, 256, 16384))


def _feature_gradients(model, nl, out):
    """``out[j, d, r] = d(sum_i B_i[r]) / dr_j[d]`` on the device (``out``: device, zeroed)."""
    from .kernels import gpu as _g

    b = model.basis
    n_tree = b.n_AA - b.n_A
    for a0, a1 in model.chunks(nl.first, extra_pair_bytes=8 * 3 * n_tree):
        AA, (R, dR, Y, dY), p0, n_p = model._run_products(nl, a0, a1)
        if not n_p:
            continue
        dAA = model.scratch("dAA", (max(n_tree, 1), 3 * n_p))
        _g.feature_gradient_columns[_g.blocks(3 * n_p), _g.THREADS_PER_BLOCK](
            a0, p0, n_p, nl.d_owner, nl.d_nbr, nl.d_D, nl.d_species, b.n_nlm, b.n_A, b.n_AA, model.a_n,
            model.a_lm, model.tree_parent, model.tree_last, model.row_start, model.indptr, model.parent,
            model.last, model.vals, R, dR, Y, dY, AA, dAA, out)


def feature_gradients_into(descriptor, batch, out):
    """GPU twin of ``ACETransformer._gradient_into``: fill ``out`` (host, (n_atoms, 3, n_features)).

    ``out[j, d, r]`` is the derivative of feature ``r`` of ``j``'s structure
    (the sum over its atoms) with respect to coordinate ``d`` of atom ``j``.
    The neighbour list is the CPU's ``batch`` (from
    :func:`skace.structures.build_batch`), copied to the device.

    Parameters
    ----------
    descriptor : ACETransformer
        Fitted.
    batch : skace.structures.Batch
    out : ndarray of shape (n_atoms, 3, n_features)
        Overwritten.

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import molecule
    >>> from skace import ACETransformer
    >>> from skace.gpu import cuda_available, feature_gradients_into
    >>> X = [molecule("H2O")]
    >>> ace = ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4).fit(X)
    >>> out = np.empty((3, 3, ace.n_features_out_))
    >>> if cuda_available():  # what ace.set_params(device="cuda").transform_gradient(X) runs
    ...     G = feature_gradients_into(ace, ace._batch(X), out)
    """
    from numba import cuda

    from .kernels import gpu as _g

    model = device_model(descriptor, descriptor)
    nl = _neighbours_from_batch(batch)
    d_out = cuda.device_array(out.shape)
    flat = d_out.reshape(out.size)
    if out.size:
        _g.fill_zero[_g.blocks(out.size), _g.THREADS_PER_BLOCK](flat)
    _feature_gradients(model, nl, d_out)
    d_out.copy_to_host(out)
    return out


def _neighbours_from_batch(batch):
    """A CPU-built :class:`skace.structures.Batch` as :class:`DeviceNeighbours`."""
    from numba import cuda

    owner = np.repeat(np.arange(len(batch.species), dtype=np.int64), np.diff(batch.first))
    pad = len(owner) == 0  # kernels take arrays of at least one element
    put = cuda.to_device
    return DeviceNeighbours(
        batch.structure_start, batch.species, batch.first, put(batch.species), put(batch.first),
        put(np.zeros(1, np.int64) if pad else owner), put(np.zeros(1, np.int64) if pad else batch.nbr),
        put(np.zeros((1, 3)) if pad else np.ascontiguousarray(batch.D)))


# ---------------------------------------------------------- neighbour list
def device_neighbour_list(structures, elements, cutoff, name="X", labels=None):
    """Neighbour lists of a batch of structures, searched on the device.

    Same pairs as :func:`skace.structures.build_batch` (not sorted by
    neighbour element; the prediction kernels do not need it). Small
    non-periodic structures are searched all-pairs in one launch; every other
    structure is binned on the host (with its periodic ghosts) and searched
    on the device.

    Parameters
    ----------
    structures : list of ase.Atoms
    elements : list of str
        Symbols in species-index order.
    cutoff : float
    name : str
        Name of the input in error messages.
    labels : list of str, optional
        Each structure's name in error messages instead (``name[k]`` by default).

    Returns
    -------
    DeviceNeighbours
        Host-side ``structure_start``, ``species`` and ``first`` (CSR), and
        device arrays ``d_species``, ``d_first``, ``d_owner``, ``d_nbr``, ``d_D``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skace.gpu import cuda_available, device_neighbour_list
    >>> if cuda_available():
    ...     nl = device_neighbour_list([bulk("Cu", cubic=True)], ["Cu"], 3.0)
    ...     assert nl.first[-1] == 4 * 12
    """
    from numba import cuda

    from .kernels import gpu as _g

    species = species_indices(structures, elements, name, labels)
    n_atoms = np.array([len(a) for a in structures])
    structure_start = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    N = int(structure_start[-1])
    rc2 = float(cutoff) ** 2
    small_limit = _structures.SMALL_MOLECULE
    small = [k for k, a in enumerate(structures) if not a.pbc.any() and len(a) <= small_limit]
    large = [k for k, a in enumerate(structures) if a.pbc.any() or len(a) > small_limit]

    launches = []  # (kernel, n_threads, args before `fill`)
    if small:
        mol_start = np.concatenate([[0], np.cumsum(n_atoms[small])]).astype(np.int64)
        positions = np.ascontiguousarray(np.concatenate([structures[k].positions for k in small]), dtype=float)
        molecule_of = np.repeat(np.arange(len(small)), n_atoms[small]).astype(np.int64)
        global_index = np.concatenate([np.arange(structure_start[k], structure_start[k + 1]) for k in small])
        launches.append((_g.molecule_pairs, len(positions), (
            cuda.to_device(positions), cuda.to_device(mol_start), cuda.to_device(molecule_of),
            cuda.to_device(global_index.astype(np.int64)), rc2)))
    for k in large:
        points, origin, n_bins, bin_of, start, order = _binned_points(structures[k], float(cutoff))
        launches.append((_g.binned_pairs, len(structures[k]), (
            cuda.to_device(points), cuda.to_device(origin), len(structures[k]), int(structure_start[k]), rc2,
            cuda.to_device(n_bins), cuda.to_device(bin_of), cuda.to_device(start), cuda.to_device(order))))

    counts = cuda.to_device(np.zeros(N, dtype=np.int64))
    overlap = cuda.to_device(np.array([N], dtype=np.int64))
    empty_i = cuda.device_array(1, dtype=np.int64)
    empty_D = cuda.device_array((1, 3))
    for kernel, n, args in launches:
        kernel[_g.blocks(n), _g.THREADS_PER_BLOCK](*args, False, empty_i, counts, empty_i, empty_i, empty_D,
                                                   overlap)
    _raise_on_overlap(overlap, structure_start, name, labels)
    first = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(counts.copy_to_host(), out=first[1:])
    n_pairs = int(first[-1])
    d_first = cuda.to_device(first)
    d_nbr = cuda.device_array(max(n_pairs, 1), dtype=np.int64)
    d_owner = cuda.device_array(max(n_pairs, 1), dtype=np.int64)
    d_D = cuda.device_array((max(n_pairs, 1), 3))
    for kernel, n, args in launches:
        kernel[_g.blocks(n), _g.THREADS_PER_BLOCK](*args, True, d_first, counts, d_nbr, d_owner, d_D, overlap)
    return DeviceNeighbours(structure_start, species, first, cuda.to_device(species), d_first, d_owner, d_nbr, d_D)


def _binned_points(atoms, cutoff):
    """Wrapped atoms plus periodic ghosts, binned: the CPU's :class:`skace.kernels.neighbours.CellGrid`
    (linear in the atoms; it also refuses cells too small for the cutoff)."""
    grid = CellGrid(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    if grid.n_atoms:
        n_bins, bin_of, start, order = grid.n_bins, grid.bin_of, grid.start, grid.order
    else:
        n_bins, bin_of, start, order = _bin_points(grid.points, cutoff, 27)
    return grid.points, grid.origin, n_bins.astype(np.int64), bin_of, start, order


def _raise_on_overlap(overlap, structure_start, name, labels):
    i = int(overlap.copy_to_host()[0])
    if i < structure_start[-1]:
        k = int(np.searchsorted(structure_start, i, side="right") - 1)
        raise ValueError(overlap_message(structure_label(k, name, labels), i - structure_start[k]))


# ------------------------------------------------------- estimator glue
_MODELS = weakref.WeakKeyDictionary()


def device_model(estimator, descriptor, folded=None):
    """The :class:`DeviceModel` of a fitted estimator, built once and kept while the estimator lives.

    Rebuilt when the estimator is refitted (new basis or coefficient arrays).
    """
    token = (descriptor.compiled_, descriptor.radial_parameters_) + (() if folded is None else tuple(folded))
    cached = _MODELS.get(estimator)
    if cached is not None and len(cached[0]) == len(token) and all(a is b for a, b in zip(cached[0], token)):
        return cached[1]
    model = DeviceModel(descriptor, folded)
    _MODELS[estimator] = (token, model)
    return model


def release(estimator=None):
    """Free the device memory held for ``estimator`` (None: for every estimator).

    A fitted estimator keeps its basis, coefficients and the work arrays of
    its largest call on the GPU for as long as it lives, so that repeated
    calls (molecular dynamics) only move positions and results; after one
    very large call that can be a sizeable share of the GPU's memory.

    Parameters
    ----------
    estimator : ACETransformer or ACERegressor, optional

    Examples
    --------
    >>> from skace.gpu import release
    >>> release()
    """
    if estimator is None:
        _MODELS.clear()
    else:
        _MODELS.pop(estimator, None)


def evaluate(regressor, structures, forces=True, stress=False, labels=None):
    """GPU twin of ``ACERegressor._evaluate``: per-atom energies, forces, per-structure virials.

    Parameters
    ----------
    regressor : ACERegressor
        Fitted.
    structures : list of ase.Atoms
        Checked by the caller.
    forces, stress : bool
    labels : list of str, optional
        Each structure's name in error messages (``X[k]`` by default).

    Returns
    -------
    dict
        ``energies`` (n_atoms,), ``forces`` (n_atoms, 3) if ``forces``,
        ``virial`` (n_structures, 3, 3) if ``stress``, and ``batch``: a
        :class:`skace.structures.Batch` with the host-side arrays
        (``structure_start``, ``species``, ``first``); its pair arrays stay on
        the device and are None here.

    Examples
    --------
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.gpu import cuda_available, evaluate
    >>> train = load_sample(n=20)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> if cuda_available():
    ...     res = evaluate(model, train[:2], forces=True)
    ...     assert res["forces"].shape == (18, 3)
    """
    d = regressor.descriptor_
    model = device_model(regressor, d, regressor._folded_coefficients()[:4])
    nl = device_neighbour_list(structures, d.elements_, d.cutoff, labels=labels)
    res = model.energies_forces(nl, forces=forces, virial=stress)
    e0 = np.array([regressor.e0_[el] for el in d.elements_])
    batch = Batch(nl.structure_start, nl.species, nl.first, None, None, None)
    out = {"energies": res["energies"] + e0[nl.species], "batch": batch}
    if forces:
        out["forces"] = res["forces"]
    if stress:
        per_structure = np.add.reduceat(res["virials"], nl.structure_start[:-1], axis=0)
        out["virial"] = 0.5 * (per_structure + per_structure.transpose(0, 2, 1))  # dE/d(strain)
    return out


def atom_features(descriptor, structures, labels=None):
    """GPU twin of ``ACETransformer._atom_features`` for a list of structures.

    Parameters
    ----------
    descriptor : ACETransformer
        Fitted.
    structures : list of ase.Atoms
    labels : list of str, optional
        Each structure's name in error messages (``X[k]`` by default).

    Returns
    -------
    compact : ndarray of shape (n_atoms, width)
        Row ``i``: the features of atom ``i``'s own element block.
    species : ndarray of shape (n_atoms,)
    structure_start : ndarray of shape (n_structures + 1,)

    Examples
    --------
    >>> from ase.build import molecule
    >>> from skace import ACETransformer
    >>> from skace.gpu import atom_features, cuda_available
    >>> X = [molecule("H2O")]
    >>> ace = ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4, device="cpu").fit(X)
    >>> if cuda_available():  # what ace.set_params(device="cuda").transform(X) runs
    ...     compact, species, start = atom_features(ace, X)
    """
    model = device_model(descriptor, descriptor)
    nl = device_neighbour_list(structures, descriptor.elements_, descriptor.cutoff, labels=labels)
    return model.atom_features(nl), nl.species, nl.structure_start
