"""``ACETransformer``: ACE features of lists of ``ase.Atoms`` as a scikit-learn transformer."""

from contextlib import contextmanager
from numbers import Integral, Real

import numba
import numpy as np
from ase.data import atomic_numbers
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .kernels import ace as _k
from .kernels.neighbours import OVERLAP_DISTANCE
from .maths import basis as _basis
from .maths.basis import ACEBasis, jacobian_plan
from .maths.radial import FAMILIES, family_code, pair_parameters
from .structures import as_structure_list, build_batch, structure_label


@contextmanager
def numba_threads(n_jobs):
    """Run numba kernels on ``n_jobs`` threads (None: numba's default; -1: all)."""
    if n_jobs is None:
        yield
        return
    old = numba.get_num_threads()
    n = numba.config.NUMBA_NUM_THREADS if n_jobs < 0 else min(int(n_jobs), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(max(n, 1))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def n_chunks(n_atoms):
    """Work items for a parallel loop over atoms: a few per thread, for balance."""
    return max(1, min(n_atoms, 4 * numba.get_num_threads()))


def _chunks(structures, atoms_per_chunk):
    """Consecutive slices of ``structures`` holding at most ``atoms_per_chunk`` atoms (at least one structure)."""
    start, count = 0, 0
    for k, atoms in enumerate(structures):
        if count and count + len(atoms) > atoms_per_chunk:
            yield slice(start, k)
            start, count = k, 0
        count += len(atoms)
    yield slice(start, len(structures))


def _chunk_labels(sl, index=None):
    """Names of the structures of chunk ``sl`` in errors: their place in the whole input
    (``index[k]`` where the structures at hand are part of it: a block or subset of a fit)."""
    return [structure_label(k if index is None else index[k]) for k in range(sl.start, sl.stop)]


def _check_device(device, who="ACETransformer"):
    """Clear error when ``device="cuda"`` cannot run here (imports nothing GPU-related for "cpu")."""
    if device != "cpu":
        from .gpu import check_device

        check_device(device, who)


class ACETransformer(TransformerMixin, BaseEstimator):
    """Atomic Cluster Expansion features of atomic structures.

    Each atom's neighbourhood is projected on radial functions times real
    spherical harmonics (the atomic base ``A``); products of up to
    ``correlation_order`` of them are coupled to rotation- and
    reflection-invariant features ``B`` of body order ``nu + 1``. See
    :mod:`skace.maths.basis` for the exact degree convention.

    The defaults here make a small, quick basis for exploring features. The
    model ``ACERegressor()`` fits without a descriptor is a different, larger
    one (Bessel radial basis, cutoff 4.5 Å, correlation order 4,
    ``l_weight=0.25``, degrees sized to the data:
    ``skace.regressor.DEFAULT_DESCRIPTOR``); pass those values to start
    from it.

    Parameters
    ----------
    elements : list of str, optional
        Chemical symbols the basis covers. ``None`` learns them in ``fit``.
    cutoff : float, default=5.0
        Cutoff radius in Å.
    correlation_order : int, default=3
        Largest number ``nu`` of neighbours in one product (body order ``nu + 1``).
    max_degree : float, list or dict, default=10
        Bound on ``sum_t (n_t + l_weight * l_t)`` over the factors of a
        product, with radial index ``n = 1, 2, ...``; one number for all
        orders, or one per order (list indexed from ``nu = 1``, or ``{nu: D}``).
    center_max_degree : dict, optional
        ``{symbol: bounds}``: smaller degree bounds (like ``max_degree``) for
        the features of atoms of that element, e.g. a smaller basis for hydrogen
        centres than for carbon ones; other central elements use
        ``max_degree``, and symbols absent from the data are ignored.
    radial_basis : {"agnesi", "bessel", "gaussian", "chebexp"}, default="agnesi"
        Radial family (:mod:`skace.maths.radial`).
    l_weight : float, default=1.5
        Weight of ``l`` in the degree of a factor.
    max_l : int, optional
        Largest angular degree of a factor.
    inner_cutoff : float, default=0.0
        Inner radius ``r_in`` (Å) of the radial functions: Agnesi's transform
        maps ``[r_in, r_cut]`` onto ``[1, -1]``, the Gaussian centres start at
        ``r_in``, the Bessel sines span ``[r_in, r_cut]``; ChebExp ignores it.
    r0 : "covalent" or float, default="covalent"
        Length scale of the radial transform: per element pair (sum of
        covalent radii) or one value.
    radial_shape : float, optional
        Shape parameter of the radial family (default per family).
    per_atom : bool, default=False
        ``transform`` returns one row per atom instead of per structure.
    n_jobs : int, optional
        Threads for the numba kernels (-1: all).
    max_memory : float, default=1024
        Memory in MiB a chunk of ``transform_gradient`` may use.
    feature_subset : list of int, optional
        Keep only these features of the full basis (indices into it, grouped
        by central element); only what they need is evaluated. Set by
        :meth:`select_features` and by sparsification.
    device : {"cpu", "cuda"}, default="cpu"
        Where ``transform`` runs: numba CPU kernels or an NVIDIA GPU through
        numba-cuda (:mod:`skace.gpu`); so do ``transform_gradient`` and
        ``iter_gradients`` (so fits that use this descriptor assemble their
        force rows on the GPU).

    Attributes
    ----------
    elements_ : list of str
    basis_ : ACEBasis
        The specification: one entry per feature in ``basis_.features``.
    n_features_out_ : int
    feature_names_out_ : ndarray of str

    Examples
    --------
    >>> from ase.build import molecule
    >>> from skace import ACETransformer
    >>> X = [molecule("CH3CH2OH"), molecule("H2O")]
    >>> ace = ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6).fit(X)
    >>> ace.transform(X).shape == (2, ace.n_features_out_)
    True
    """

    _parameter_constraints = {
        "elements": [list, tuple, None],
        "cutoff": [Interval(Real, OVERLAP_DISTANCE, None, closed="neither")],  # closer atoms overlap
        "correlation_order": [Interval(Integral, 1, None, closed="left")],
        "max_degree": [Interval(Real, 0, None, closed="neither"), list, tuple, dict],
        "center_max_degree": [dict, None],
        "radial_basis": [StrOptions(set(FAMILIES))],
        "l_weight": [Interval(Real, 0, None, closed="neither")],
        "max_l": [Interval(Integral, 0, None, closed="left"), None],
        "inner_cutoff": [Interval(Real, 0, None, closed="left")],
        "r0": [StrOptions({"covalent"}), Interval(Real, 0, None, closed="neither")],
        "radial_shape": [Real, None],
        "per_atom": ["boolean"],
        "n_jobs": [Integral, None],
        "max_memory": [Interval(Real, 0, None, closed="neither")],
        "feature_subset": [list, tuple, np.ndarray, None],
        "device": [StrOptions({"cpu", "cuda"})],
    }

    def __init__(
        self,
        elements=None,
        cutoff=5.0,
        correlation_order=3,
        max_degree=10,
        center_max_degree=None,
        radial_basis="agnesi",
        l_weight=1.5,
        max_l=None,
        inner_cutoff=0.0,
        r0="covalent",
        radial_shape=None,
        per_atom=False,
        n_jobs=None,
        max_memory=1024,
        feature_subset=None,
        device="cpu",
    ):
        self.elements = elements
        self.cutoff = cutoff
        self.correlation_order = correlation_order
        self.max_degree = max_degree
        self.center_max_degree = center_max_degree
        self.radial_basis = radial_basis
        self.l_weight = l_weight
        self.max_l = max_l
        self.inner_cutoff = inner_cutoff
        self.r0 = r0
        self.radial_shape = radial_shape
        self.per_atom = per_atom
        self.n_jobs = n_jobs
        self.max_memory = max_memory
        self.feature_subset = feature_subset
        self.device = device

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Build the basis; learn the elements from ``X`` if ``elements`` is None.

        Parameters
        ----------
        X : list of ase.Atoms
        y : ignored

        Returns
        -------
        self : ACETransformer
        """
        self._validate_params()
        _check_device(self.device)
        return self._build(self._elements_of(as_structure_list(X)))

    def _elements_of(self, structures):
        """The elements a fit on ``structures`` uses: ``elements``, or those found, by atomic number."""
        if self.elements is None:
            found = set()
            for atoms in structures:
                found.update(atoms.get_chemical_symbols())
            return sorted(found, key=lambda s: (atomic_numbers[s], s))
        elements = list(self.elements)
        if len(set(elements)) != len(elements):
            raise ValueError(f"elements contains duplicates: {elements}")
        return elements

    def _build(self, elements):
        family_code(self.radial_basis)
        if self.inner_cutoff >= self.cutoff:
            raise ValueError(f"inner_cutoff ({self.inner_cutoff}) must be below cutoff ({self.cutoff})")
        self.elements_ = list(elements)
        full = ACEBasis(self.elements_, self.correlation_order, self.max_degree, self.l_weight, self.max_l,
                        self.center_max_degree)
        # radial functions are those of the full basis (Gaussian centres depend on their number)
        n_radial = max((n for f in full.features for _, n, _ in f["factors"]), default=1)
        if self.feature_subset is not None:
            subset = np.asarray(self.feature_subset, dtype=np.int64)
            if subset.ndim != 1 or (subset.size and (subset.min() < 0 or subset.max() >= full.n_features)):
                raise ValueError(f"feature_subset must index the {full.n_features} features of the full basis")
            centers = np.array([full.features[k]["center"] for k in subset], dtype=np.int64)
            if np.any(np.diff(centers) < 0):
                raise ValueError("feature_subset must be grouped by central element (sort it)")
            full = full.subset(subset)
        self.basis_ = full
        self.compiled_ = self.basis_.compile()
        self.radial_parameters_ = pair_parameters(
            self.elements_, self.radial_basis, self.cutoff, self.inner_cutoff, self.r0, self.radial_shape,
            n_radial=n_radial,
        )
        self.n_features_out_ = self.basis_.n_features
        self.feature_names_out_ = np.array([self._feature_name(f) for f in self.basis_.features], dtype=object)
        return self

    def _feature_name(self, f):
        el = self.elements_
        factors = "*".join(f"{el[e]}({n},{l})" for e, n, l in f["factors"])
        return f"{el[f['center']]}|{len(f['factors']) + 1}-body|{factors}|{f['coupling']}"

    def get_feature_names_out(self, input_features=None):
        """Names of the output features.

        A name reads ``"H|4-body|C(1,0)*C(2,1)*O(1,1)|0"``: central element,
        body order, the ``element(n,l)`` factors, and the coupling index.

        Returns
        -------
        ndarray of str, shape (``n_features_out_``,)
        """
        check_is_fitted(self, "basis_")
        return self.feature_names_out_.copy()

    def get_feature_table(self):
        """Per-feature metadata as a ``pandas.DataFrame``.

        Columns: ``name``, ``center`` (symbol), ``correlation_order`` (nu),
        ``body_order``, ``degree``, ``l_sum``, ``l_max``, ``n_max``,
        ``factors`` (tuple of ``(symbol, n, l)``), ``neighbours`` (sorted
        neighbour symbols joined by "-"), ``coupling``.

        Examples
        --------
        >>> from ase.build import molecule
        >>> from skace import ACETransformer
        >>> t = ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4).fit([molecule("H2O")])
        >>> table = t.get_feature_table()
        >>> sorted(set(table.body_order))
        [2, 3]
        """
        import pandas as pd

        check_is_fitted(self, "basis_")
        el = self.elements_
        rows = []
        for name, f in zip(self.feature_names_out_, self.basis_.features):
            factors = tuple((el[e], n, l) for e, n, l in f["factors"])
            rows.append(
                dict(
                    name=name,
                    center=el[f["center"]],
                    correlation_order=len(factors),
                    body_order=len(factors) + 1,
                    degree=f["degree"],
                    l_sum=sum(l for _, _, l in factors),
                    l_max=max(l for _, _, l in factors),
                    n_max=max(n for _, n, _ in factors),
                    factors=factors,
                    neighbours="-".join(sorted(s for s, _, _ in factors)),
                    coupling=f["coupling"],
                )
            )
        return pd.DataFrame(rows)

    # ----------------------------------------------------------- features
    def _batch(self, structures, labels=None):
        return build_batch(structures, self.elements_, float(self.cutoff), labels=labels)

    def _chunk_batch(self, structures, sl, index=None):
        """:meth:`_batch` of ``structures[sl]``, its errors naming structures by their place in all."""
        return self._batch(structures[sl], _chunk_labels(sl, index))

    def _kernel_basis_args(self):
        b = self.compiled_
        return (
            family_code(self.radial_basis), self.radial_parameters_, b.n_radial, b.l_max,
            b.nl_n, b.nl_l, b.nl_offset, b.n_nlm, b.n_A, b.tree_parent, b.tree_last,
        )

    def _jacobian_plan(self):
        """:func:`~skace.maths.basis.jacobian_plan` of the basis, built on first use and
        not pickled (it is as large as the basis's own arrays and cheap to rebuild)."""
        plan = self.__dict__.get("_jacobian_plan_cache")
        if plan is None or plan[0] is not self.compiled_:
            plan = (self.compiled_, jacobian_plan(self.compiled_))
            self._jacobian_plan_cache = plan
        return plan[1]

    def _gradient_route(self):
        """``(forward, plan)`` for the gradient kernel: forward mode through the product tree
        or the Jacobian route (:func:`~skace.maths.basis.gradient_route`), with the Jacobian's
        sparsity (empty arrays for forward mode)."""
        plan = self._jacobian_plan()
        if _basis.gradient_route(self.compiled_, plan):
            return True, (np.zeros((0, 4), plan.factors.dtype), np.zeros(1, np.int64), np.zeros(0, np.int64))
        return False, tuple(plan)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_jacobian_plan_cache", None)
        return state

    def _atom_features(self, batch):
        """Compact per-atom features: row i holds the block of its own element."""
        b = self.compiled_
        width = int(np.diff(b.row_start).max()) if b.row_start[-1] else 0
        out = np.zeros((len(batch.species), max(width, 1)))
        _k.compute_features(
            batch.first, batch.nbr, batch.D, batch.species, *self._kernel_basis_args(),
            b.row_start, b.indptr, b.parent, b.last, b.vals, batch.max_pairs, n_chunks(len(batch.species)), out,
        )
        return out

    def _compact_features(self, structures, sl, index=None):
        """Per-atom compact features, species and structure starts of ``structures[sl]``, on
        ``self.device`` (errors name structures by their place in all)."""
        if getattr(self, "device", "cpu") == "cuda":  # models pickled before it existed lack it
            from .gpu import atom_features

            _check_device(self.device)
            return atom_features(self, structures[sl], _chunk_labels(sl, index))
        batch = self._chunk_batch(structures, sl, index)
        return self._atom_features(batch), batch.species, batch.structure_start

    def transform(self, X):
        """ACE features.

        Parameters
        ----------
        X : list of ase.Atoms

        Returns
        -------
        ndarray
            ``(n_structures, n_features_out_)``: the sum of each structure's
            atomic features, one block of columns per central element; or,
            with ``per_atom=True``, ``(total atoms, n_features_out_)`` in input order.
        """
        check_is_fitted(self, "basis_")
        return self._features(as_structure_list(X))

    def _features(self, structures, index=None):
        """:meth:`transform` of checked ``structures`` (errors name them by ``index``, :func:`_chunk_labels`)."""
        n_atoms_total = sum(len(a) for a in structures)
        rows = n_atoms_total if self.per_atom else len(structures)
        out = np.zeros((rows, self.n_features_out_))
        b = self.compiled_
        width = np.diff(b.row_start)
        atoms_per_chunk = max(1, int(self.max_memory * 2**20 / 8 / max(width.max(initial=1), 1)))
        atom0 = 0
        with numba_threads(self.n_jobs):
            for sl in _chunks(structures, atoms_per_chunk):
                compact, species, structure_start = self._compact_features(structures, sl, index)
                n = len(species)
                if self.per_atom:
                    groups = np.arange(n + 1, dtype=np.int64)
                    target = out[atom0:atom0 + n]
                else:
                    groups = structure_start
                    target = out[sl]
                _k.sum_rows_by_group(compact, groups, b.row_start[species], width[species], target)
                atom0 += n
        return out

    def iter_gradients(self, X, max_memory=None):
        """Yield ``(structure slice, gradient block)`` over chunks of ``X``.

        Each block has shape ``(atoms in the chunk, 3, n_features_out_)`` and
        holds ``d transform(X)[s] / d r_j`` for the atoms ``j`` of those
        structures; chunks are sized to ``max_memory`` MiB (default
        ``self.max_memory``). Blocks are fresh arrays the caller may keep.
        """
        for sl, out, _ in self._gradient_chunks(as_structure_list(X), max_memory, virial=False):
            yield sl, out

    def _gradient_chunks(self, structures, max_memory=None, virial=False, index=None):
        """``(slice, gradient block, per-feature virial block or None)`` over chunks of ``structures``."""
        check_is_fitted(self, "basis_")
        budget = (self.max_memory if max_memory is None else max_memory) * 2**20
        atoms_per_chunk = max(1, int(budget / (8 * 3 * max(self.n_features_out_, 1))))
        with numba_threads(self.n_jobs):
            for sl in _chunks(structures, atoms_per_chunk):
                batch = self._chunk_batch(structures, sl, index)
                out = np.empty((len(batch.species), 3, self.n_features_out_))
                vir = np.zeros((sl.stop - sl.start, 6, self.n_features_out_)) if virial else None
                self._gradient_into(batch, out, vir)
                yield sl, out, vir

    def _gradient_into(self, batch, out, vir=None):
        # the GPU kernels give gradients only: fits with virial rows use the CPU kernel
        if getattr(self, "device", "cpu") == "cuda" and vir is None:
            from .gpu import feature_gradients_into

            _check_device(self.device)
            feature_gradients_into(self, batch, out)
            return
        b = self.compiled_
        with_virial = vir is not None
        forward, plan = self._gradient_route()
        _k.compute_feature_gradients_virial(
            batch.structure_start, batch.first, batch.nbr, batch.D, batch.species,
            *self._kernel_basis_args(), b.row_start, b.indptr, b.parent, b.last, b.vals, forward, *plan,
            batch.max_pairs, n_chunks(len(batch.structure_start) - 1), out, with_virial,
            vir if with_virial else np.zeros((0, 6, out.shape[2])),
        )

    def transform_virial(self, X):
        """Per-feature virials: the derivative of each structure's features with respect to strain.

        For a homogeneous strain ``eps`` applied to positions and cell,
        ``W[s, v, k] = d transform(X)[s, k] / d eps_v`` in Voigt order
        (xx, yy, zz, yz, xz, xy), i.e. ``sum_pairs sym(dB_k / dr_ij (x) r_ij)``.
        A linear model's virial is ``W[s] @ coef`` and its stress in ASE's
        convention is that divided by the cell volume. Defined for molecules
        and (mixed-)periodic cells alike.

        Parameters
        ----------
        X : list of ase.Atoms

        Returns
        -------
        ndarray of shape (n_structures, 6, ``n_features_out_``)

        Examples
        --------
        >>> from ase.build import bulk
        >>> from skace import ACETransformer
        >>> cu = bulk("Cu", cubic=True)
        >>> t = ACETransformer(cutoff=4.0, correlation_order=2, max_degree=4).fit([cu])
        >>> t.transform_virial([cu]).shape == (1, 6, t.n_features_out_)
        True
        """
        check_is_fitted(self, "basis_")
        structures = as_structure_list(X)
        out = np.empty((len(structures), 6, self.n_features_out_))
        for sl, _, vir in self._gradient_chunks(structures, virial=True):
            out[sl] = vir
        return out

    def transform_gradient(self, X):
        """Derivative of the per-structure features with respect to every atom position.

        Parameters
        ----------
        X : list of ase.Atoms

        Returns
        -------
        ndarray of shape (total atoms, 3, ``n_features_out_``)
            ``G[j, a, k] = d transform(X)[s(j), k] / d r_{j, a}`` (the gradient
            of the structure sums, whatever ``per_atom``), atoms in input order.
            Computed in chunks of ``max_memory`` MiB of working memory; for
            inputs whose whole gradient does not fit in memory, iterate
            :meth:`iter_gradients` instead.
        """
        check_is_fitted(self, "basis_")
        structures = as_structure_list(X)
        out = np.empty((sum(len(a) for a in structures), 3, self.n_features_out_))
        budget = self.max_memory * 2**20
        atoms_per_chunk = max(1, int(budget / (8 * 3 * max(self.n_features_out_, 1))))
        with numba_threads(self.n_jobs):
            for sl in _chunks(structures, atoms_per_chunk):
                batch = self._chunk_batch(structures, sl)
                a0 = sum(len(a) for a in structures[:sl.start])
                self._gradient_into(batch, out[a0:a0 + len(batch.species)])
        return out

    def select_features(self, indices):
        """A fitted copy that computes only the features ``indices`` (in that order).

        The copy evaluates only the atomic-base functions and products those
        features need, so it is faster, not just narrower. It is an ordinary
        transformer with ``elements`` and ``feature_subset`` set, so it clones
        and refits to the same features.
        """
        from sklearn.base import clone

        check_is_fitted(self, "basis_")
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or (indices.size and (indices.min() < 0 or indices.max() >= self.n_features_out_)):
            raise ValueError(f"indices must select among the {self.n_features_out_} features")
        base = np.arange(self.n_features_out_) if self.feature_subset is None else np.asarray(self.feature_subset)
        new = clone(self).set_params(elements=list(self.elements_), feature_subset=base[indices].tolist())
        return new._build(self.elements_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags
