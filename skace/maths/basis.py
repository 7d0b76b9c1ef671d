"""The ACE basis specification: which invariant products exist, and how to evaluate them.

Degree convention
-----------------
A one-particle function ``v = (z, n, l)`` has neighbour element ``z``, radial
index ``n = 1, 2, ...`` and angular degree ``l = 0, 1, ...``; its degree is
``n + l_weight * l``. A product of ``nu`` of them (a multiset, repeats allowed)
belongs to the basis of correlation order ``nu`` when

* the sum of its factors' degrees is at most ``D_nu`` (``max_degree``, one
  number for every order or one per order),
* ``sum(l)`` is even (reflection invariance) and the ``l`` can couple to zero,
* ``nu <= correlation_order`` and every ``l <= max_l``.

The same multisets are used for every central element, unless
``center_max_degree`` gives a central element lower bounds of its own; its
features are then those within both.

Each such multiset gives as many features as it has linearly independent
O(3)-invariant couplings (:mod:`skace.maths.coupling`). Feature ``k`` of
central element ``Z`` is
``B[Z, k] = sum_m C_k[m] prod_t A[z_t, n_t, l_t, m_t]``.

Evaluation layout
-----------------
``A`` is indexed by ``a = element * n_nlm + nl_offset[nl] + l + m``. An
m-resolved product of the features is a sorted tuple of ``a``; it is its
parent (the tuple without its last entry) times one ``A``, so an
order-``nu`` product costs one multiplication (the density trick). Only the
products that are parents of others are stored ("AA", the product tree;
``AA[0:n_A]`` is ``A`` itself and ``AA[n_AA]`` the constant 1). A feature is
a sparse (CSR) sum ``B_r = sum_e vals[e] * AA[parent[e]] * A[last[e]]``, so the
top-level products are never stored. Gradients go through the atomic base
instead (:func:`jacobian_plan`): ``dB_r / dA`` is sparse, and ``dA / dr`` small.
"""

from collections import namedtuple

import numpy as np

from .coupling import symmetric_invariants

CompiledBasis = namedtuple(
    "CompiledBasis",
    [
        "n_elements",  # number of elements (central and neighbour)
        "n_radial",  # radial functions R_1..R_n_radial
        "l_max",  # largest l of any one-particle function
        "nl_n",  # (n_nl,) radial index (0-based) of each (n, l) one-particle function
        "nl_l",  # (n_nl,) its l
        "nl_offset",  # (n_nl,) start of its 2l+1 m-entries inside one element's block
        "n_nlm",  # size of one element's block of A
        "n_A",  # n_elements * n_nlm
        "n_AA",  # stored products including A; AA[n_AA] is the constant 1
        "tree_parent",  # (n_AA - n_A,) AA index of the parent product
        "tree_last",  # (n_AA - n_A,) A index of the last factor
        "row_start",  # (n_elements + 1,) feature rows of each central element
        "indptr",  # (n_features + 1,) CSR over feature rows
        "parent",  # AA index of each coupled product's parent (n_AA for order 1)
        "last",  # A index of its last factor
        "vals",  # coupling coefficient
    ],
)


def _degree_bounds(max_degree, correlation_order):
    if isinstance(max_degree, dict):
        missing = [nu for nu in range(1, correlation_order + 1) if nu not in max_degree]
        if missing:
            raise ValueError(f"max_degree has no bound for correlation orders {missing}")
        return {nu: float(max_degree[nu]) for nu in range(1, correlation_order + 1)}
    if np.ndim(max_degree) == 1:
        if len(max_degree) < correlation_order:
            raise ValueError(f"max_degree gives {len(max_degree)} bound(s); correlation order "
                             f"{correlation_order} needs one per order, {correlation_order} in all")
        return {nu: float(max_degree[nu - 1]) for nu in range(1, correlation_order + 1)}
    return {nu: float(max_degree) for nu in range(1, correlation_order + 1)}


class ACEBasis:
    """Specification of a linear ACE basis (pure maths; no structures involved).

    Parameters
    ----------
    elements : sequence of str
        Chemical symbols, central and neighbour species alike.
    correlation_order : int
        Largest ``nu``; features have body order ``nu + 1``.
    max_degree : float, sequence or dict
        Total-degree bound ``D_nu`` (see module docstring).
    l_weight : float
        Weight of ``l`` in a factor's degree.
    max_l : int, optional
        Largest angular degree of a factor.
    center_max_degree : dict, optional
        ``{symbol: bounds}``: degree bounds (as ``max_degree``) for the
        features of that central element, applied on top of ``max_degree``
        (so they can only lower it). Symbols not in ``elements`` are ignored.

    Attributes
    ----------
    features : list of dict
        One entry per feature row (all central elements): ``center`` (element
        index), ``factors`` (tuple of ``(element index, n, l)``), ``coupling``
        (index among the couplings of that multiset), ``degree``.
    """

    def __init__(self, elements, correlation_order=3, max_degree=10, l_weight=1.5, max_l=None,
                 center_max_degree=None):
        if int(correlation_order) < 1:
            raise ValueError(f"correlation_order must be >= 1, got {correlation_order}")
        if l_weight <= 0:
            raise ValueError(f"l_weight must be positive, got {l_weight}")
        self.elements = list(elements)
        self.correlation_order = int(correlation_order)
        self.degree_bounds = _degree_bounds(max_degree, self.correlation_order)
        self.l_weight = float(l_weight)
        self.max_l = None if max_l is None else int(max_l)
        # per central element bounds (elements not in the basis are ignored)
        self.center_bounds = {
            e: _degree_bounds(d, self.correlation_order) for e, d in (center_max_degree or {}).items()
            if e in self.elements
        }
        self._couplings = {}
        multisets = self._enumerate_multisets()
        self.features = []
        degrees = [self.degree(factors) for factors in multisets]
        for center, symbol in enumerate(self.elements):
            own = self.center_bounds.get(symbol)
            for factors, degree in zip(multisets, degrees):
                if own is not None and degree > own[len(factors)] + 1e-9:
                    continue
                for c in range(len(self._coupling(factors))):
                    self.features.append(dict(center=center, factors=factors, coupling=c, degree=degree))

    # ---- specification -------------------------------------------------
    def degree(self, factors):
        """Total degree ``sum(n + l_weight * l)`` of a multiset of factors."""
        return float(sum(n + self.l_weight * l for _, n, l in factors))

    def _enumerate_multisets(self):
        D_top = max(self.degree_bounds.values())
        one = []
        for e in range(len(self.elements)):
            for l in range(0, int(D_top / self.l_weight) + 1):
                if self.max_l is not None and l > self.max_l:
                    break
                for n in range(1, int(D_top - self.l_weight * l + 1e-9) + 1):
                    one.append((e, n, l))
        one.sort(key=lambda v: (v[2], v[1], v[0]))
        deg = [n + self.l_weight * l for _, n, l in one]
        # index of the first factor with a larger l: within one l the degree only grows,
        # and the smallest degree of each later l is larger still, so the search can skip ahead
        next_l = [len(one)] * len(one)
        for k in range(len(one) - 2, -1, -1):
            next_l[k] = k + 1 if one[k + 1][2] != one[k][2] else next_l[k + 1]
        out = []

        def grow(start, factors, total, l_sum, l_top):
            nu = len(factors)
            if nu and l_sum % 2 == 0 and 2 * l_top <= l_sum and total <= self.degree_bounds[nu] + 1e-9:
                out.append(tuple(factors))
            if nu == self.correlation_order:
                return
            bound = max(self.degree_bounds[k] for k in range(nu + 1, self.correlation_order + 1))
            k = start
            while k < len(one):
                if total + deg[k] > bound + 1e-9:
                    if one[k][1] == 1 and one[k][0] == 0:  # the smallest degree of this l and all later ones
                        break
                    k = next_l[k]
                    continue
                v = one[k]
                grow(k, factors + [v], total + deg[k], l_sum + v[2], max(l_top, v[2]))
                k += 1

        grow(0, [], 0.0, 0, 0)
        return [f for f in out if len(self._coupling(f))]

    def _coupling(self, factors):
        """Orthonormal symmetric invariant couplings of a multiset (cached by pattern)."""
        ls = tuple(f[2] for f in factors)
        groups = tuple(factors.index(f) for f in factors)
        key = (ls, groups)
        if key not in self._couplings:
            self._couplings[key] = symmetric_invariants(ls, groups)
        return self._couplings[key]

    @property
    def n_features(self):
        return len(self.features)

    def features_per_center(self):
        """``{symbol: number of feature rows}`` for each central element."""
        counts = dict.fromkeys(self.elements, 0)
        for f in self.features:
            counts[self.elements[f["center"]]] += 1
        return counts

    def subset(self, rows):
        """A copy restricted to the feature rows ``rows`` (in the given order)."""
        new = object.__new__(ACEBasis)
        new.__dict__.update(self.__dict__)
        new.features = [self.features[int(k)] for k in rows]
        return new

    # ---- evaluation layout ---------------------------------------------
    def compile(self):
        """Arrays for the numba kernels (:class:`CompiledBasis`)."""
        n_el = len(self.elements)
        used_nl = sorted({(n, l) for f in self.features for _, n, l in f["factors"]}, key=lambda x: (x[1], x[0]))
        if not used_nl:
            used_nl = [(1, 0)]
        nl_index = {nl: k for k, nl in enumerate(used_nl)}
        nl_n = np.array([n - 1 for n, _ in used_nl], dtype=np.int64)
        nl_l = np.array([l for _, l in used_nl], dtype=np.int64)
        sizes = 2 * nl_l + 1
        nl_offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        n_nlm = int(sizes.sum())
        n_A = n_el * n_nlm
        nu_max = max([len(f["factors"]) for f in self.features], default=1)
        base = n_A + 1
        if nu_max * np.log2(base) >= 62:
            raise ValueError("basis too large to index its products; lower max_degree or correlation_order")

        # m-resolved products of every feature row, as encoded sorted tuples
        row_ids, keys, values = [], [], []
        for row, f in enumerate(self.features):
            factors = f["factors"]
            C = self._coupling(factors)[f["coupling"]]
            ls = [l for _, _, l in factors]
            nz = np.flatnonzero(np.abs(C) > 1e-14)
            ms = np.stack(np.unravel_index(nz, [2 * l + 1 for l in ls]), axis=1)  # m + l
            a0 = np.array([e * n_nlm + nl_offset[nl_index[(n, l)]] for e, n, l in factors])
            a = np.sort(a0[None, :] + ms, axis=1)
            key = np.zeros(len(a), dtype=np.int64)
            for t in range(a.shape[1]):
                key = key * base + (a[:, t] + 1)
            row_ids.append(np.full(len(a), row))
            keys.append(key)
            values.append(C[nz])
        row_ids = np.concatenate(row_ids) if row_ids else np.zeros(0, np.int64)
        keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        values = np.concatenate(values) if values else np.zeros(0)

        # merge the m-tuples that name the same product (permutations of equal factors)
        ukeys, kinv = np.unique(keys, return_inverse=True)
        pair = row_ids.astype(np.int64) * len(ukeys) + kinv
        upair, inv = np.unique(pair, return_inverse=True)
        merged = np.bincount(inv, weights=values, minlength=len(upair))
        keep = np.abs(merged) > 1e-13
        upair, merged = upair[keep], merged[keep]
        rows = upair // len(ukeys)
        fkeys = ukeys[upair % len(ukeys)]
        indptr = np.zeros(len(self.features) + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        indptr = np.cumsum(indptr)

        # the product tree: A itself, then every proper prefix of a feature's product
        prefixes = [np.arange(1, n_A + 1, dtype=np.int64)]
        k = fkeys[fkeys >= base] // base
        while k.size:
            prefixes.append(k)
            k = k[k >= base] // base
        aa_keys = np.unique(np.concatenate(prefixes))
        high = aa_keys[n_A:]
        tree_parent = np.searchsorted(aa_keys, high // base).astype(np.int64)
        tree_last = (high % base - 1).astype(np.int64)
        n_AA = len(aa_keys)
        parent = np.where(fkeys >= base, np.searchsorted(aa_keys, fkeys // base), n_AA).astype(np.int64)
        last = (fkeys % base - 1).astype(np.int64)

        centers = np.array([f["center"] for f in self.features], dtype=np.int64)
        if np.any(np.diff(centers) < 0):
            raise ValueError("feature rows must be grouped by central element")
        row_start = np.searchsorted(centers, np.arange(n_el + 1)).astype(np.int64)
        return CompiledBasis(
            n_elements=n_el,
            n_radial=int(nl_n.max()) + 1,
            l_max=int(nl_l.max()),
            nl_n=nl_n,
            nl_l=nl_l,
            nl_offset=nl_offset,
            n_nlm=n_nlm,
            n_A=n_A,
            n_AA=n_AA,
            tree_parent=tree_parent,
            tree_last=tree_last,
            row_start=row_start,
            indptr=indptr,
            parent=parent,
            last=last,
            vals=merged,
        )


def fold_coefficients(basis, coef):
    """Fold per-feature coefficients into the product space (pacemaker's "C-tilde").

    ``E_i = sum_r coef[r] B_i[r] = sum_e w_val[e] AA[w_parent[e]] A[w_last[e]]``
    over the entries of the central element of atom ``i``, so predictions need
    no per-feature work.

    Parameters
    ----------
    basis : CompiledBasis
    coef : ndarray of shape (n_features,)

    Returns
    -------
    w_indptr : ndarray (n_elements + 1,)
        Entries of central element ``e`` are ``w_indptr[e]:w_indptr[e + 1]``.
    w_parent, w_last, w_val : ndarray
    node_indptr, nodes : ndarray
        The stored products that central element ``e`` needs, ascending:
        ``nodes[node_indptr[e]:node_indptr[e + 1]]`` (see :func:`needed_products`).
    """
    coef = np.asarray(coef, dtype=float)
    rows = np.repeat(np.arange(len(basis.indptr) - 1), np.diff(basis.indptr))
    weights = basis.vals * coef[rows]
    center = np.searchsorted(basis.row_start, rows, side="right") - 1
    n_AA1 = basis.n_AA + 1
    key = (center * n_AA1 + basis.parent) * basis.n_A + basis.last
    ukey, inv = np.unique(key, return_inverse=True)
    w = np.bincount(inv, weights=weights, minlength=len(ukey))
    keep = w != 0.0
    ukey, w = ukey[keep], w[keep]
    last = ukey % basis.n_A
    parent = (ukey // basis.n_A) % n_AA1
    center = ukey // (basis.n_A * n_AA1)
    w_indptr = np.searchsorted(center, np.arange(basis.n_elements + 1)).astype(np.int64)
    parent = parent.astype(np.int64)
    return (w_indptr, parent, last.astype(np.int64), w) + needed_products(basis, w_indptr, parent)


def needed_products(basis, w_indptr, w_parent):
    """Per central element, the stored products (tree nodes) its folded energy reads.

    A model's atoms of element ``e`` only need the products that some entry of
    ``e`` multiplies, and their ancestors in the product tree; the rest of the
    tree (the other elements' products, those of pruned or zero coefficients)
    is skipped at prediction.

    Returns
    -------
    node_indptr : ndarray (n_elements + 1,)
    nodes : ndarray
        Tree indices ``k`` (product ``AA[n_A + k]``), ascending per element.
    """
    n_A, n_tree = basis.n_A, len(basis.tree_parent)
    tree_parent = np.asarray(basis.tree_parent)
    parts = []
    for e in range(basis.n_elements):
        k = w_parent[w_indptr[e]:w_indptr[e + 1]] - n_A
        needed = np.zeros(n_tree, dtype=bool)
        while k.size:  # one tree level per sweep: at most correlation_order sweeps
            k = np.unique(k[(k >= 0) & (k < n_tree)])
            k = k[~needed[k]]
            needed[k] = True
            k = tree_parent[k] - n_A
        parts.append(np.flatnonzero(needed))
    node_indptr = np.concatenate([[0], np.cumsum([len(q) for q in parts])]).astype(np.int64)
    nodes = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return node_indptr, nodes


JacobianPlan = namedtuple(
    "JacobianPlan",
    [
        "factors",  # (n_entries, nu_max): A index of each factor of entry e's product, n_A past its order
        "j_indptr",  # (n_features + 1,) CSR over feature rows of the sparse Jacobian dB / dA
        "j_col",  # A index of each of its non-zeros, ascending within a row
    ],
)


def entry_factors(basis):
    """The ``A`` indices of every entry's product ``AA[parent[e]] * A[last[e]]``.

    Returns
    -------
    ndarray of int64, shape (n_entries, nu_max)
        Row ``e`` lists the factors (last first, repeats kept), padded with -1.
    """
    n_A, n_AA = basis.n_A, basis.n_AA
    tree_parent, tree_last = np.asarray(basis.tree_parent), np.asarray(basis.tree_last)
    columns = [np.asarray(basis.last)]
    node = np.asarray(basis.parent)
    while True:  # walk every entry's parent chain up the tree, one level per sweep
        stored = (node >= n_A) & (node < n_AA)
        column = np.where(node < n_A, node, -1)
        column[stored] = tree_last[node[stored] - n_A]
        columns.append(column)
        if not stored.any():
            break
        node = np.where(stored, node, n_AA)
        node[stored] = tree_parent[node[stored] - n_A]
    factors = np.stack(columns, axis=1)
    return np.ascontiguousarray(factors[:, (factors >= 0).any(axis=0)])


#: :func:`gradient_route` takes forward mode where the Jacobian ``dB/dA`` has more non-zeros than
#: this many times the product tree's nodes plus the coupling entries (rMD17 aspirin, 1 thread:
#: see benchmarks/README.md, "Session 31").
FORWARD_ABOVE = 1.0


def gradient_route(basis, plan):
    """Whether feature gradients are cheaper by forward mode through the product tree than
    through the Jacobian ``dB/dA`` (``plan``, :func:`jacobian_plan`).

    Both cost about one pass over ``3 * n_neighbours`` numbers per unit of work: forward
    mode one per stored product and per coupling entry, the Jacobian route one per
    non-zero of ``dB/dA`` (over the columns of one neighbour element only). Bases with many
    entries over few distinct ``A`` per row (high ``l``, as ``ACERegressor()``'s default:
    0.38 non-zeros per product and entry on rMD17 aspirin) compress well and take the
    Jacobian; small low-``l`` bases (1.6-2.1) take forward mode. Measured with two, three
    and four elements, the crossover lies at a ratio of about 1 in each case.

    Parameters
    ----------
    basis : CompiledBasis
        ``ACEBasis.compile()``, as ``ACETransformer.compiled_``.
    plan : JacobianPlan

    Returns
    -------
    bool
        True for forward mode.

    Examples
    --------
    >>> from skace.maths.basis import ACEBasis, gradient_route, jacobian_plan
    >>> low_l = ACEBasis(["H", "C"], 3, 8, l_weight=1.5).compile()
    >>> high_l = ACEBasis(["H", "C"], 3, [14, 8, 6], l_weight=0.25).compile()
    >>> gradient_route(low_l, jacobian_plan(low_l)), gradient_route(high_l, jacobian_plan(high_l))
    (True, False)
    """
    work = len(basis.tree_parent) + int(basis.indptr[-1])
    return int(plan.j_indptr[-1]) > FORWARD_ABOVE * work


def jacobian_plan(basis):
    """Sparsity of the features' Jacobian with respect to the atomic base, ``dB_r / dA_a``.

    ``B_r = sum_e vals[e] prod_t A[factors[e, t]]``, so ``dB_r / dA_a`` is non-zero
    only for the ``a`` that occur in row ``r``'s entries: far fewer numbers (rMD17
    benzene's default basis: 0.50 M) than entries (2.86 M), and the gradient
    ``dB / dr = (dB / dA) (dA / dr)`` then reads only ``dA``, which fits in cache
    (:func:`skace.kernels.ace.atoms_feature_gradient`). Factors are stored as int16
    where ``A`` is small enough (the kernel streams them once per pass), and
    at least four per entry: lower orders are padded, so that every basis up to
    the default correlation order takes the kernel's written-out path.

    Parameters
    ----------
    basis : CompiledBasis

    Returns
    -------
    JacobianPlan
        ``factors`` (entries, at least 4), ``j_indptr`` (rows + 1) and ``j_col``: the
        non-zeros of row ``r`` are ``j_col[j_indptr[r]:j_indptr[r + 1]]``.

    Examples
    --------
    >>> from skace.maths.basis import ACEBasis, jacobian_plan
    >>> basis = ACEBasis(["H"], 2, 4).compile()
    >>> plan = jacobian_plan(basis)
    >>> plan.factors.shape[1], len(plan.j_indptr) == len(basis.indptr)
    (4, True)
    """
    factors = entry_factors(basis)
    if factors.shape[1] < 4:
        factors = np.pad(factors, ((0, 0), (0, 4 - factors.shape[1])), constant_values=-1)
    rows = np.repeat(np.arange(len(basis.indptr) - 1), np.diff(basis.indptr))
    valid = factors >= 0
    unique = np.unique((rows[:, None] * basis.n_A + factors)[valid])
    j_indptr = np.searchsorted(unique // basis.n_A, np.arange(len(basis.indptr))).astype(np.int64)
    dtype = np.int16 if basis.n_A < np.iinfo(np.int16).max else np.int32
    return JacobianPlan(factors=np.where(valid, factors, basis.n_A).astype(dtype), j_indptr=j_indptr,
                        j_col=(unique % basis.n_A).astype(np.int64))
