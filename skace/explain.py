"""SHAP explanations of linear ACE potentials.

An :class:`skace.ACERegressor` is linear in its features,

.. math::

    E(X) = \\sum_k c_k B_k(X) + \\sum_i E_0[Z_i],

where ``B_k(X)`` is feature ``k`` summed over the atoms of structure ``X``
(:meth:`skace.ACETransformer.transform`). For a linear model the SHAP values
with respect to the features, under the usual (interventional)
independent-feature assumption, are exact and cheap:
``phi_k(X) = c_k (B_k(X) - E_bg[B_k])`` with the expectation over a
background set of structures. They add up to the prediction minus the
expected prediction over the background, which is what
:func:`explain_energy` and :func:`explain_forces` return as
``shap.Explanation`` objects, so every ``shap.plots`` function applies.

Reading them
------------
* ACE features are strongly correlated (and the split of the energy among
  them depends on the basis, the prior and the regularisation), so the value
  attributed to one feature is a statement about the fitted model, not about
  the physics. Sums over physically meaningful groups of features
  (:func:`group_explanation`: by body order, central element, neighbour
  elements, angular degree ...) are more robust than single features.
* The reference energies ``E0`` are a column of their own ("E0"): the
  difference between the structure's reference energy ``sum_i E0[Z_i]`` and
  its mean over the background, zero when the composition is that of the
  background mean (in particular for single-molecule data).
* Per-atom energies (:func:`atomic_energy_attribution`) are one partition of
  the energy among atoms; with single-composition training data the split
  between ``E0[Z]`` and the atoms' ACE energies is not determined by the
  data (it follows from the prior), so compare atoms of one element, not
  across elements.

Examples
--------
>>> from skace import ACERegressor, ACETransformer
>>> from skace.datasets import load_sample
>>> from skace.explain import explain_energy, group_explanation
>>> train = load_sample(n=30)
>>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
>>> by_body_order = group_explanation(explain_energy(model, train), model, "body_order")
>>> list(by_body_order.feature_names)
['2', '3', 'E0']
"""

import copy
from numbers import Integral, Number

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .structures import as_structure_list, species_indices

__all__ = [
    "GROUP_BY",
    "explain_energy",
    "explain_forces",
    "group_explanation",
    "atomic_energy_attribution",
    "plot_atomic_energies",
    "save_plot",
]

#: Columns of :meth:`skace.ACETransformer.get_feature_table` that :func:`group_explanation` groups by.
GROUP_BY = ("body_order", "correlation_order", "degree", "center", "neighbours", "l_max")

#: Name of the column holding the reference-energy (composition) term of an energy explanation.
E0_NAME = "E0"

_XYZ = "xyz"


# ---------------------------------------------------------------- helpers
def _fitted(model):
    """The model's descriptor (per-structure sums, whatever its ``per_atom``) and coefficients."""
    check_is_fitted(model, "coef_")
    if getattr(model, "baseline", None) is not None:
        raise ValueError(
            f"the model has a baseline ({type(model.baseline).__name__}), which SHAP values over ACE features "
            "do not cover; explain a copy without it: clone the model, set baseline=None and copy its fitted "
            "attributes, or fit the ACE part to the baseline's residuals"
        )
    descriptor = model.descriptor_
    if getattr(descriptor, "per_atom", False):
        descriptor = copy.copy(descriptor)  # shallow: shares the compiled basis, only the flag differs
        descriptor.per_atom = False
    return descriptor, np.asarray(model.coef_, dtype=float)


def _counts(structures, elements):
    """Element counts, shape (n_structures, n_elements)."""
    species = species_indices(structures, elements)
    owner = np.repeat(np.arange(len(structures)), [len(a) for a in structures])
    counts = np.zeros((len(structures), len(elements)))
    np.add.at(counts, (owner, species), 1.0)
    return counts


def _atom_indices(atoms, n_total, name):
    """Global atom indices (numpy-style negatives allowed) as an int array, checked against ``n_total``."""
    if isinstance(atoms, Integral):
        atoms = [atoms]
    idx = np.asarray(atoms)
    if idx.dtype == bool:
        raise TypeError(f"{name} must hold atom indices, not a boolean mask")
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise TypeError(f"{name} must be an integer or a 1-D sequence of integers")
    idx = idx.astype(np.int64)
    if idx.size == 0:
        raise ValueError(f"{name} selects no atoms")
    bad = (idx < -n_total) | (idx >= n_total)
    if bad.any():
        raise IndexError(f"{name} index {int(idx[bad][0])} is out of range for {n_total} atoms")
    return np.where(idx < 0, idx + n_total, idx)


def _scan_gradients(descriptor, structures, pick, mean_over):
    """Feature gradients of the atoms ``pick`` and their mean over the components of ``mean_over``.

    Only the structures holding a picked or averaged atom are evaluated, in
    the descriptor's memory-bounded chunks.

    Returns
    -------
    picked : ndarray (len(pick), 3, n_features)
    mean : ndarray (n_features,) or None
        Mean of ``d transform / d r_{j,a}`` over atoms ``j`` in ``mean_over``
        and the three directions ``a``; None when ``mean_over`` is empty.
    """
    sizes = np.array([len(a) for a in structures])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n_total = int(starts[-1])
    nf = descriptor.n_features_out_
    in_mean = np.zeros(n_total, dtype=bool)
    in_mean[mean_over] = True
    need = in_mean.copy()
    need[pick] = True
    owner = np.repeat(np.arange(len(structures)), sizes)
    keep = np.unique(owner[need])
    sub = [structures[k] for k in keep]
    sub_global = np.concatenate([np.arange(starts[k], starts[k + 1]) for k in keep])
    position = np.full(n_total, -1, dtype=np.int64)
    position[sub_global] = np.arange(len(sub_global))
    pick_position = position[pick]

    picked = np.empty((len(pick), 3, nf))
    total = np.zeros(nf)
    a0 = 0
    for _, block in descriptor.iter_gradients(sub):
        n = len(block)
        local = pick_position - a0
        here = (local >= 0) & (local < n)
        picked[here] = block[local[here]]
        mask = in_mean[sub_global[a0:a0 + n]]
        if mask.any():
            total += block[mask].sum(axis=(0, 1))
        a0 += n
    n_mean = int(in_mean.sum())
    return picked, (total / (3 * n_mean) if n_mean else None)


# ---------------------------------------------------------------- energies
def explain_energy(model, X, background=None):
    """Exact SHAP values of the predicted energies with respect to the ACE features.

    For the linear model ``E(X) = sum_k c_k B_k(X) + sum_i E0[Z_i]`` the
    SHAP value of feature ``k`` is ``phi_k = c_k (B_k(X) - mean_bg B_k)``
    (interventional SHAP, features treated as independent inputs; this is
    what ``shap.LinearExplainer`` computes). The composition enters through
    one more column, "E0": ``sum_i E0[Z_i] - mean_bg sum_i E0[Z_i]``, zero
    for structures with the mean composition of the background. With it,
    ``values.sum(axis=1) + base_values == model.predict(X)`` (to rounding)
    for every composition.

    Parameters
    ----------
    model : fitted ACERegressor
    X : list of ase.Atoms
        Structures to explain.
    background : list of ase.Atoms, optional
        Reference structures whose mean prediction is the base value.
        Default: ``X`` itself.

    Returns
    -------
    shap.Explanation
        ``values`` of shape (n_structures, n_features + 1) in eV (the last
        column is "E0"); ``base_values`` (n_structures,) all equal to the
        mean predicted energy over the background (ACE part plus the
        reference energy of the background's mean composition); ``data``:
        the features ``transform(X)`` and, in the "E0" column, the
        structure's reference energy ``sum_i E0[Z_i]``; ``feature_names``:
        the descriptor's feature names and "E0"; ``instance_names``:
        "structure <k>".

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``model`` is not fitted.

    See Also
    --------
    group_explanation : Sum the SHAP values over groups of features.
    save_plot : Bar and beeswarm plots of an explanation.

    Examples
    --------
    >>> import numpy as np
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.explain import explain_energy
    >>> train = load_sample(n=30)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> exp = explain_energy(model, train[:5], background=train)
    >>> exp.values.shape == (5, model.n_features_ + 1)
    True
    >>> exp.feature_names[-1]
    'E0'
    >>> bool(np.allclose(exp.values.sum(axis=1) + exp.base_values, model.predict(train[:5]), rtol=0, atol=1e-8))
    True
    """
    import shap

    descriptor, coef = _fitted(model)
    structures = as_structure_list(X)
    bg = structures if background is None else as_structure_list(background, name="background")
    elements = descriptor.elements_
    e0 = np.array([model.e0_[el] for el in elements], dtype=float)

    B = descriptor.transform(structures)
    ref = _counts(structures, elements) @ e0
    if background is None:
        B_bg, ref_bg = B, ref
    else:
        B_bg, ref_bg = descriptor.transform(bg), _counts(bg, elements) @ e0
    mean_B = B_bg.mean(axis=0)
    mean_ref = float(ref_bg.mean())

    values = np.empty((len(structures), len(coef) + 1))
    values[:, :-1] = coef * (B - mean_B)
    values[:, -1] = ref - mean_ref
    base = float(coef @ mean_B) + mean_ref
    names = list(descriptor.get_feature_names_out()) + [E0_NAME]
    return shap.Explanation(
        values=values,
        base_values=np.full(len(structures), base),
        data=np.column_stack([B, ref]),
        feature_names=names,
        instance_names=[f"structure {k}" for k in range(len(structures))],
    )


# ------------------------------------------------------------------ forces
def explain_forces(model, X, atoms=None, background=None, background_atoms=None):
    """Exact SHAP values of predicted force components with respect to the ACE features.

    A force component is linear in the feature gradients,
    ``F_{j,a} = -sum_k c_k g_{j,a,k}`` with ``g_{j,a,k} = dB_k(X)/dr_{j,a}``
    (:meth:`skace.ACETransformer.transform_gradient`), so its SHAP values are
    ``phi_k = -c_k (g_{j,a,k} - mean_bg g_k)``, where the mean runs over all
    Cartesian components of the background atoms. ``E0`` does not enter
    forces.

    Parameters
    ----------
    model : fitted ACERegressor
    X : list of ase.Atoms
    atoms : int or sequence of int, optional
        Atoms to explain, as global indices into the atoms of ``X`` taken in
        order (as in ``model.predict_forces(X)``; negative indices count from
        the end). Default: all atoms.
    background : list of ase.Atoms, optional
        Structures whose force components form the background. Default: ``X``.
    background_atoms : sequence of int, optional
        Restrict the background to these atoms (global indices into the
        background structures), e.g. the atoms of one element, or one atom
        across the frames of a trajectory. Default: all background atoms.

    Returns
    -------
    shap.Explanation
        One row per force component: row ``3 * t + a`` is atom ``atoms[t]``,
        direction ``a`` (x, y, z), so ``values`` has shape
        (3 * n_atoms, n_features) in eV/Å; ``base_values``: the mean force
        component over the background (the same for every row); ``data``:
        the gradients ``g_{j,a,k}``; ``instance_names``:
        "atom <j> (<symbol>) <x|y|z>".

    Notes
    -----
    ACE features are invariant under translations, so the gradients of one
    structure's features sum to zero over its atoms. Averaged over all atoms
    of whole structures (the default), the background gradient is therefore
    zero (up to rounding), the base value is 0 eV/Å (the expected force
    component), and the SHAP values reduce to the per-feature force
    contributions ``-c_k g_{j,a,k}``. A restricted background
    (``background_atoms``) gives a non-zero baseline, e.g. the mean force
    on an atom over a trajectory.
    ``values.sum(axis=1) + base_values`` equals
    ``model.predict_forces(X)[atoms].ravel()`` to rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.explain import explain_forces
    >>> train = load_sample(n=30)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> exp = explain_forces(model, train[:2], atoms=[0, 10])
    >>> exp.values.shape == (6, model.n_features_)
    True
    >>> exp.instance_names[3]
    'atom 10 (C) x'
    >>> F = model.predict_forces(train[:2])[[0, 10]].ravel()
    >>> bool(np.allclose(exp.values.sum(axis=1) + exp.base_values, F, rtol=0, atol=1e-9))
    True
    """
    import shap

    descriptor, coef = _fitted(model)
    structures = as_structure_list(X)
    n_total = sum(len(a) for a in structures)
    pick = np.arange(n_total) if atoms is None else _atom_indices(atoms, n_total, "atoms")
    no_pick = np.zeros(0, dtype=np.int64)

    if background is None:
        bg_n = n_total
        mean_over = np.arange(n_total) if background_atoms is None else np.unique(
            _atom_indices(background_atoms, bg_n, "background_atoms"))
        g, mean_g = _scan_gradients(descriptor, structures, pick, mean_over)
    else:
        bg = as_structure_list(background, name="background")
        bg_n = sum(len(a) for a in bg)
        mean_over = np.arange(bg_n) if background_atoms is None else np.unique(
            _atom_indices(background_atoms, bg_n, "background_atoms"))
        g, _ = _scan_gradients(descriptor, structures, pick, no_pick)
        _, mean_g = _scan_gradients(descriptor, bg, no_pick, mean_over)

    g = g.reshape(3 * len(pick), -1)
    values = -coef * (g - mean_g)
    base = -float(coef @ mean_g)
    symbols = np.concatenate([a.get_chemical_symbols() for a in structures])
    names = [f"atom {j} ({symbols[j]}) {_XYZ[a]}" for j in pick for a in range(3)]
    return shap.Explanation(
        values=values,
        base_values=np.full(len(values), base),
        data=g,
        feature_names=list(descriptor.get_feature_names_out()),
        instance_names=names,
    )


# ---------------------------------------------------------------- grouping
def _group_keys(model, feature_names, by):
    table = model.descriptor_.get_feature_table()
    if isinstance(by, str):
        if by not in GROUP_BY:
            raise ValueError(f"by={by!r} is not a feature-table column to group by; choose one of "
                             f"{list(GROUP_BY)} or pass a callable on a feature-table row")
        lookup = dict(zip(table["name"], table[by]))
    elif callable(by):
        lookup = {row["name"]: by(row) for _, row in table.iterrows()}
    else:
        raise TypeError(f"by must be a column name or a callable, got {type(by).__name__}")
    keys = []
    for name in feature_names:
        if name == E0_NAME:
            keys.append(E0_NAME)
        elif name in lookup:
            key = lookup[name]
            if str(key) == E0_NAME:
                raise ValueError(f"group key {E0_NAME!r} (of feature {name!r}) is reserved for the reference energies")
            keys.append(key)
        else:
            raise ValueError(f"the explanation's feature {name!r} is not a feature of this model")
    return keys


def group_explanation(explanation, model, by):
    """Sum the SHAP values of an explanation over groups of features.

    Because SHAP values are additive, the SHAP value of a group of features
    is the sum of its members' values; the sum over all columns, and so the
    identity ``values.sum(axis=-1) + base_values == prediction``, is kept.

    Parameters
    ----------
    explanation : shap.Explanation
        From :func:`explain_energy` or :func:`explain_forces` for ``model``
        (one row or many); its ``feature_names`` must be the model's feature
        names (and "E0").
    model : fitted ACERegressor
        The model explained; its :meth:`~skace.ACETransformer.get_feature_table`
        defines the groups.
    by : str or callable
        A feature-table column, one of :data:`GROUP_BY` ("body_order",
        "correlation_order", "degree", "center", "neighbours", "l_max"), or a
        function of a feature-table row (a ``pandas.Series``) returning the
        group key.

    Returns
    -------
    shap.Explanation
        Columns are the groups, named ``str(key)``: numeric keys in
        increasing order, other keys in order of first appearance in the
        feature table; "E0" stays a group of its own, last. ``base_values``
        and (for several rows) ``instance_names`` are unchanged; ``data`` is None (feature
        values do not add up meaningfully), so beeswarm plots are drawn in
        one colour.

    Raises
    ------
    ValueError
        For an unknown ``by`` or features the model does not have.
    sklearn.exceptions.NotFittedError
        If ``model`` is not fitted.

    Examples
    --------
    >>> import numpy as np
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.explain import explain_energy, group_explanation
    >>> train = load_sample(n=30)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> exp = explain_energy(model, train)
    >>> by_center = group_explanation(exp, model, "center")
    >>> list(by_center.feature_names)
    ['H', 'C', 'O', 'E0']
    >>> bool(np.allclose(by_center.values.sum(axis=1), exp.values.sum(axis=1)))
    True
    >>> by_l = group_explanation(exp, model, lambda row: "radial" if row.l_max == 0 else "angular")
    >>> list(by_l.feature_names)
    ['radial', 'angular', 'E0']
    """
    import shap

    check_is_fitted(model, "coef_")
    if not isinstance(explanation, shap.Explanation):
        raise TypeError(f"explanation must be a shap.Explanation, got {type(explanation).__name__}")
    names = explanation.feature_names
    if names is None:
        raise ValueError("the explanation has no feature_names to group")
    names = [str(n) for n in names]
    keys = _group_keys(model, names, by)

    order = []
    for key in keys:
        if key != E0_NAME and key not in order:
            order.append(key)
    if order and all(isinstance(k, Number) for k in order):
        order = sorted(order)
    if E0_NAME in keys:
        order.append(E0_NAME)
    column = {key: c for c, key in enumerate(order)}
    membership = np.zeros((len(names), len(order)))
    membership[np.arange(len(names)), [column[k] for k in keys]] = 1.0

    values = np.asarray(explanation.values, dtype=float)
    if values.ndim not in (1, 2) or values.shape[-1] != len(names):
        raise ValueError(f"the explanation's values have shape {values.shape}; expected one or more rows "
                         f"of {len(names)} columns")
    instance_names = explanation.instance_names
    if values.ndim == 1 or instance_names is None or len(instance_names) != len(values):
        instance_names = None  # a single row carries its name as a plain string: not an index
    return shap.Explanation(
        values=values @ membership,
        base_values=copy.deepcopy(explanation.base_values),
        data=None,
        feature_names=[str(k) for k in order],
        instance_names=None if instance_names is None else list(instance_names),
    )


# --------------------------------------------------------- atomic energies
def atomic_energy_attribution(model, X, relative=False):
    """Per-atom energies of each structure (E0 of the element plus the ACE part).

    The per-atom energies of a linear ACE model add up to its predicted
    energy; they attribute the energy to atoms rather than to features.

    Parameters
    ----------
    model : fitted ACERegressor
    X : list of ase.Atoms
    relative : bool, default=False
        Subtract each atom's reference energy ``E0[Z_i]`` (leaving the ACE
        part ``c . B_i``).

    Returns
    -------
    list of ndarray
        One array per structure, shape (n_atoms,), eV, atoms in order;
        each sums to ``model.predict`` (minus the reference energies if
        ``relative``).

    Examples
    --------
    >>> import numpy as np
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.explain import atomic_energy_attribution
    >>> train = load_sample(n=30)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> energies = atomic_energy_attribution(model, train[:3])
    >>> [e.shape for e in energies]
    [(9,), (9,), (9,)]
    >>> bool(np.allclose([e.sum() for e in energies], model.predict(train[:3])))
    True
    """
    check_is_fitted(model, "coef_")
    structures = as_structure_list(X)
    energies = np.asarray(model.predict_atomic_energies(structures), dtype=float)
    if relative:
        e0 = np.array([model.e0_[el] for el in model.descriptor_.elements_], dtype=float)
        energies = energies - e0[species_indices(structures, model.descriptor_.elements_)]
    return np.split(energies, np.cumsum([len(a) for a in structures])[:-1])


def _reference(atoms, energies, e0):
    """Energies relative to E0 (dict or fitted model) or, for None, to their element's mean in ``atoms``."""
    symbols = np.array(atoms.get_chemical_symbols())
    if e0 is None:
        ref = np.empty(len(symbols))
        for s in np.unique(symbols):
            ref[symbols == s] = energies[symbols == s].mean()
        return energies - ref, "atomic energy - mean of its element (eV)"
    if hasattr(e0, "e0_"):
        check_is_fitted(e0, "coef_")
        e0 = e0.e0_
    try:
        ref = np.array([float(e0[s]) for s in symbols])
    except KeyError as err:
        raise ValueError(f"e0 has no reference energy for element {err.args[0]!r}") from None
    return energies - ref, r"atomic energy $-$ E0 of its element (eV)"


def plot_atomic_energies(atoms, energies, path, e0=None, title=None, cmap="coolwarm", labels=None,
                         close=True):
    """3D picture of a structure, atoms coloured by their energy relative to their element.

    Parameters
    ----------
    atoms : ase.Atoms
    energies : array-like of shape (len(atoms),)
        Per-atom energies (eV), e.g. one entry of :func:`atomic_energy_attribution`.
    path : str or path-like
        PNG file to write.
    e0 : dict, fitted ACERegressor or None, default=None
        Reference energies ``{symbol: eV}`` (or the model's ``e0_``)
        subtracted from each atom's energy; None subtracts the mean energy
        of the atom's element in this structure instead (use None for
        energies that are already relative, or to compare atoms of one
        element).
    title : str, optional
    cmap : str or Colormap, default="coolwarm"
        Diverging colour map, centred on zero.
    labels : bool, optional
        Write element symbol and index next to each atom (default: for up to
        60 atoms).
    close : bool, default=True
        Close the figure after saving (False keeps it open in pyplot, e.g.
        for sphinx-gallery to show it).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import os, tempfile
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.explain import atomic_energy_attribution, plot_atomic_energies
    >>> train = load_sample(n=30)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> energies = atomic_energy_attribution(model, train[:1])[0]
    >>> path = os.path.join(tempfile.mkdtemp(), "ethanol.png")
    >>> fig = plot_atomic_energies(train[0], energies, path, e0=model)
    >>> os.path.getsize(path) > 0
    True
    """
    import matplotlib.pyplot as plt
    from ase.data import covalent_radii
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    energies = np.asarray(energies, dtype=float).ravel()
    if energies.shape != (len(atoms),):
        raise ValueError(f"energies has {energies.size} entries for {len(atoms)} atoms")
    rel, label = _reference(atoms, energies, e0)
    pos = atoms.positions - atoms.positions.mean(axis=0)
    radii = covalent_radii[atoms.numbers]
    vmax = float(np.abs(rel).max()) or 1.0
    norm = Normalize(-vmax, vmax)

    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    i, j = np.nonzero(np.triu(d < 1.25 * (radii[:, None] + radii[None]), k=1))
    for a, b in zip(i, j):
        ax.plot(*pos[[a, b]].T, color="0.55", lw=2, zorder=1)
    ax.scatter(*pos.T, c=rel, cmap=cmap, norm=norm, s=900 * radii ** 2, edgecolors="k", linewidths=0.6,
               depthshade=False, alpha=1.0)
    if labels is None:
        labels = len(atoms) <= 60
    if labels:
        for k, (s, p) in enumerate(zip(atoms.get_chemical_symbols(), pos)):
            ax.text(*(p + 0.25), f"{s}{k}", fontsize=7)
    span = np.ptp(pos, axis=0)
    ax.set_box_aspect(np.maximum(span, 0.2 * max(span.max(), 1.0)))
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_zlabel("z (Å)")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.7, pad=0.1, label=label)
    ax.set_title(title if title is not None else f"{atoms.get_chemical_formula()}: atomic energies")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if close:
        plt.close(fig)
    return fig


# ------------------------------------------------------------------ plots
def save_plot(explanation, path, kind="bar", max_display=10, title=None, close=True, **kwargs):
    """Draw a ``shap.plots.bar`` or ``shap.plots.beeswarm`` plot and save it as an image.

    Parameters
    ----------
    explanation : shap.Explanation
        For "bar", one row (local importances) or many (mean absolute SHAP
        value per feature); for "beeswarm", many rows.
    path : str or path-like
        Image file to write (format from the suffix, e.g. ``.png``).
    kind : {"bar", "beeswarm"}, default="bar"
    max_display : int, default=10
        Features shown; the rest are summed into one row.
    title : str, optional
    close : bool, default=True
        Close the figure after saving (False keeps it open in pyplot, e.g.
        for sphinx-gallery to show it).
    **kwargs
        Passed to the shap plot function.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    The plot is drawn on a new pyplot figure with ``show=False``, so no
    window opens; without a display matplotlib falls back to its Agg
    backend (``matplotlib.use("Agg")`` forces it).

    Examples
    --------
    >>> import os, tempfile
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.explain import explain_energy, save_plot
    >>> train = load_sample(n=30)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> path = os.path.join(tempfile.mkdtemp(), "bar.png")
    >>> fig = save_plot(explain_energy(model, train), path, kind="bar", max_display=5)
    >>> os.path.getsize(path) > 0
    True
    """
    import matplotlib.pyplot as plt
    import shap

    if kind not in ("bar", "beeswarm"):
        raise ValueError(f"kind must be 'bar' or 'beeswarm', got {kind!r}")
    if not isinstance(explanation, shap.Explanation):
        raise TypeError(f"explanation must be a shap.Explanation, got {type(explanation).__name__}")
    if kind == "beeswarm" and len(explanation.shape) != 2:
        raise ValueError("a beeswarm plot needs an explanation of several rows (2-D values)")
    new = plt.figure()
    fig = new
    try:
        if kind == "bar":
            shap.plots.bar(explanation, max_display=max_display, show=False, **kwargs)
        else:
            shap.plots.beeswarm(explanation, max_display=max_display, show=False, **kwargs)
        fig = plt.gcf()  # the shap functions draw on the current figure
        if title is not None:
            fig.axes[0].set_title(title)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    finally:
        if close:
            plt.close(fig)
            if fig is not new:
                plt.close(new)
    return fig
