"""Sparsification: keep the basis functions worth their cost, and measure the speed-accuracy front.

Selection works on the weighted energy + force least-squares system of a
fitted :class:`~skace.ACERegressor` (standardised columns, E0 fixed at the
fitted values). Methods:

``"omp"``
    Orthogonal matching pursuit: add the function most correlated with the
    current residual, refit on the selected set, repeat.
``"cost"``
    OMP whose score is divided by ``1 + cost_weight * new_products / mean_products``,
    where ``new_products`` counts the m-resolved products (and atomic-base
    functions) the candidate needs that the selected set does not already
    evaluate: dropping the last function that needs a product saves it.
``"lasso"``
    The order in which functions enter the L1 (LARS-lasso) path.
``"ard"``
    Largest posterior relevance (smallest ARD prior precision) first.
``"shap"``
    Largest mean absolute SHAP value of the energy on the training data,
    ``|c_k| * mean |B_k - mean B_k|``.

The result is a refitted model whose descriptor evaluates only what the kept
functions need (``ACETransformer(feature_subset=...)``), so the speed-up is
real in ``predict``, ``predict_forces`` and ``ACECalculator``.
"""

import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from .fitting import SYSTEM_CACHE
from .structures import as_structure_list

METHODS = ("omp", "cost", "lasso", "ard", "shap")


def _standardised_gram(model):
    """``(G, b)`` of the fitted model's least-squares system over standardised features."""
    system = SYSTEM_CACHE.get(model._system_key)
    if system is None:
        raise RuntimeError("the assembled system is no longer cached; refit the model with cache=True")
    e0 = np.array([model.e0_[el] for el in model.descriptor_.elements_])
    fw = model.force_weight if system.mF else 0.0
    G, b, _, _ = system.gram(float(model.energy_weight), float(fw), e0)
    norm = np.sqrt(np.maximum(np.diag(G), 0.0))
    norm[norm <= 1e-12 * max(norm.max(initial=0.0), 1e-300)] = np.inf  # empty columns never selected
    G = G / norm[:, None] / norm[None, :]
    G[~np.isfinite(G)] = 0.0
    return G, np.where(np.isfinite(norm), b / norm, 0.0)


def _products_of_rows(compiled):
    """For each feature row, the set of product-tree nodes it needs (AA indices; A entries are ``< n_A``)."""
    tree_parent = compiled.tree_parent
    n_A = compiled.n_A

    def ancestry(node):
        out = []
        while node >= n_A:
            out.append(node)
            node = tree_parent[node - n_A]
        out.append(node)
        return out

    rows = []
    for r in range(len(compiled.indptr) - 1):
        need = set()
        for e in range(compiled.indptr[r], compiled.indptr[r + 1]):
            need.add(int(compiled.last[e]))
            if compiled.parent[e] < compiled.n_AA:
                need.update(ancestry(int(compiled.parent[e])))
        rows.append(need)
    return rows


def greedy_selection(G, b, n_select, cost_sets=None, cost_weight=0.0, ridge=1e-10):
    """Orthogonal matching pursuit on a standardised Gram system.

    Parameters
    ----------
    G, b : ndarray
        ``X^T X`` and ``X^T y`` with unit-norm columns.
    n_select : int
    cost_sets : list of set, optional
        What each candidate needs to be evaluated; with ``cost_weight > 0``
        scores are divided by ``1 + cost_weight * new / mean`` (new = what
        the selected set does not need yet).
    ridge : float
        Tiny regularisation of the refits.

    Returns
    -------
    ndarray of int
        Indices in selection order.
    """
    selected = []
    residual = b.copy()  # X^T (y - X c)
    have = set()
    mean_cost = np.mean([len(c) for c in cost_sets]) if cost_sets else 1.0
    usable = np.diag(G) > 0
    for _ in range(min(n_select, int(usable.sum()))):
        score = np.abs(residual)
        score[~usable] = -1.0
        if selected:
            score[selected] = -1.0
        if cost_sets is not None and cost_weight > 0:
            new = np.array([len(c - have) for c in cost_sets], dtype=float)
            score = np.where(score > 0, score / (1.0 + cost_weight * new / mean_cost), score)
        k = int(np.argmax(score))
        if score[k] <= 0:
            break
        selected.append(k)
        if cost_sets is not None:
            have |= cost_sets[k]
        S = np.array(selected)
        GS = G[np.ix_(S, S)] + ridge * np.eye(len(S))
        c = np.linalg.solve(GS, b[S])
        residual = b - G[:, S] @ c
    return np.array(selected, dtype=np.int64)


def _complete(order, coef):
    """A full ranking: ``order`` first, then the other functions by decreasing ``|coef|``
    (the selection may stop early, e.g. at columns that vanish on the data)."""
    chosen = set(int(k) for k in order)
    rest = [int(k) for k in np.argsort(-np.abs(coef), kind="stable") if int(k) not in chosen]
    return np.concatenate([np.asarray(order, dtype=np.int64), np.array(rest, dtype=np.int64)])


class ACESparsifier(BaseEstimator):
    """Select a subset of the basis functions of an ACE model and refit it.

    Parameters
    ----------
    model : ACERegressor
        The model to sparsify; fitted on ``X`` in ``fit`` (a clone; the
        assembled system is reused from the cache when it was already fitted
        on the same data).
    n_features : int, default=200
        How many basis functions to keep (over all central elements).
    method : {"omp", "cost", "lasso", "ard", "shap"}, default="omp"
    cost_weight : float, default=1.0
        Strength of the evaluation-cost penalty for ``method="cost"``.

    Attributes
    ----------
    full_model_ : ACERegressor
        The model with every function, fitted on ``X``.
    ranking_ : ndarray of int
        Functions in the order the method selects them.
    indices_ : ndarray of int
        The kept functions, grouped by central element.
    model_ : ACERegressor
        The sparse model, refitted on ``X``; its descriptor evaluates only what they need.

    Examples
    --------
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.sparsify import ACESparsifier
    >>> from skace.datasets import load_sample
    >>> train = load_sample(n=40)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6))
    >>> sparse = ACESparsifier(model, n_features=30).fit(train)
    >>> int(sparse.get_support().sum()), sparse.model_.n_features_
    (30, 30)
    """

    def __init__(self, model=None, n_features=200, method="omp", cost_weight=1.0):
        self.model = model
        self.n_features = n_features
        self.method = method
        self.cost_weight = cost_weight

    def fit(self, X, y=None):
        """Fit the full model, rank its functions, keep ``n_features`` and refit.

        Returns
        -------
        self : ACESparsifier
        """
        from .regressor import ACERegressor

        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {list(METHODS)}")
        if int(self.n_features) < 1:
            raise ValueError(f"n_features must be at least 1, got {self.n_features}")
        structures = as_structure_list(X)
        base = clone(self.model if self.model is not None else ACERegressor()).set_params(cache=True)
        full = base.fit(structures, y)
        self.full_model_ = full
        self.ranking_ = self._rank(full, structures)
        keep = np.sort(self.ranking_[: int(self.n_features)])
        self.indices_ = self._grouped(full, keep)
        self.model_ = self._refit(full, self.indices_, structures, y)
        return self

    def _rank(self, full, structures):
        nf = full.n_features_
        if self.method in ("omp", "cost"):
            G, b = _standardised_gram(full)
            G, b = G[:nf, :nf], b[:nf]
            costs = _products_of_rows(full.descriptor_.compiled_) if self.method == "cost" else None
            order = greedy_selection(G, b, min(int(self.n_features), nf), costs,
                                     self.cost_weight if self.method == "cost" else 0.0)
            return _complete(order, full.coef_)
        if self.method == "lasso":
            from sklearn.linear_model import lars_path_gram

            G, b = _standardised_gram(full)
            G, b = G[:nf, :nf], b[:nf]
            with warnings.catch_warnings():  # collinear basis functions make LARS drop some: expected
                warnings.simplefilter("ignore", ConvergenceWarning)
                _, active, _ = lars_path_gram(Xy=b, Gram=G, n_samples=len(structures), method="lasso",
                                              max_iter=min(4 * int(self.n_features), 10 * nf))
            return _complete(np.array(list(dict.fromkeys(active)), dtype=np.int64), full.coef_)
        if self.method == "ard":
            ard = clone(full).set_params(solver="ard").fit(structures)
            return np.argsort(ard.ard_precision_[:nf], kind="stable")
        B = full.descriptor_.transform(structures)
        importance = np.abs(full.coef_) * np.mean(np.abs(B - B.mean(axis=0)), axis=0)
        return np.argsort(-importance, kind="stable")

    @staticmethod
    def _grouped(full, keep):
        centers = np.array([full.descriptor_.basis_.features[k]["center"] for k in keep])
        return keep[np.argsort(centers, kind="stable")]

    @staticmethod
    def _refit(full, indices, structures, y):
        descriptor = full.descriptor_.select_features(indices)
        sparse = clone(full).set_params(descriptor=clone(descriptor))
        return sparse.fit(structures, y)

    def get_support(self, indices=False):
        """Mask (or indices) of the kept functions among the full model's."""
        check_is_fitted(self, "indices_")
        if indices:
            return self.indices_.copy()
        mask = np.zeros(self.full_model_.n_features_, dtype=bool)
        mask[self.indices_] = True
        return mask

    def predict(self, X, return_std=False):
        """Energies of the sparse model (see :meth:`ACERegressor.predict`)."""
        check_is_fitted(self, "model_")
        return self.model_.predict(X, return_std=return_std)

    def predict_forces(self, X):
        """Forces of the sparse model."""
        check_is_fitted(self, "model_")
        return self.model_.predict_forces(X)

    def score(self, X, y=None):
        """R^2 of the sparse model's energies."""
        check_is_fitted(self, "model_")
        return self.model_.score(X, y)


def time_energy_forces(model, X, repeat=3):
    """Best-of-``repeat`` wall time per atom (µs) of ``predict_energy_forces`` on ``X``."""
    structures = as_structure_list(X)
    n_atoms = sum(len(a) for a in structures)
    model.predict_energy_forces(structures[:1])  # compile / warm up
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.predict_energy_forces(structures)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / n_atoms


def pareto_front(model, X_train, X_val, sizes, method="omp", cost_weight=1.0, repeat=3):
    """Speed and accuracy of sparsified models of several sizes, all measured.

    Parameters
    ----------
    model : ACERegressor
        The full model (fitted here on ``X_train``).
    X_train, X_val : list of ase.Atoms
    sizes : sequence of int
        Numbers of basis functions to keep.
    method, cost_weight
        As in :class:`ACESparsifier`.

    Returns
    -------
    pandas.DataFrame
        One row per model (the full one last): ``n_features``,
        ``us_per_atom`` (energy + forces), ``energy_mae`` (meV), ``force_mae``
        (meV/Å), ``method``.
    """
    import pandas as pd

    from .metrics import evaluate

    rows = []
    for size in sizes:
        sp = ACESparsifier(model, n_features=int(size), method=method, cost_weight=cost_weight).fit(X_train)
        err = evaluate(sp.model_, X_val)
        rows.append(dict(method=method, n_features=sp.model_.n_features_,
                         us_per_atom=time_energy_forces(sp.model_, X_val, repeat),
                         energy_mae=1000 * err["energy_mae"], force_mae=1000 * err["force_mae"]))
    full = sp.full_model_ if sizes else clone(model).fit(X_train)
    err = evaluate(full, X_val)
    rows.append(dict(method="full", n_features=full.n_features_, us_per_atom=time_energy_forces(full, X_val, repeat),
                     energy_mae=1000 * err["energy_mae"], force_mae=1000 * err["force_mae"]))
    return pd.DataFrame(rows)


def plot_pareto(fronts, path, metric="force_mae"):
    """Plot error against µs/atom for one or more fronts (a DataFrame or a dict of them) to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not isinstance(fronts, dict):
        fronts = {"sparsified": fronts}
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, df in fronts.items():
        df = df.sort_values("us_per_atom")
        ax.plot(df["us_per_atom"], df[metric], "o-", label=label)
    ax.set_xlabel("energy + forces (µs/atom)")
    ax.set_ylabel({"force_mae": "force MAE (meV/Å)", "energy_mae": "energy MAE (meV)"}.get(metric, metric))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
