"""Error metrics for energies and forces, and scikit-learn scorers built on them.

Metric functions return errors in the data's units (eV, eV/Å); the scorers
follow scikit-learn's "greater is better" convention (negated errors) and can
be passed to ``GridSearchCV(scoring={...}, refit=...)`` as they are:

>>> from sklearn.model_selection import GridSearchCV
>>> from skace import ACERegressor
>>> from skace.metrics import SCORERS
>>> search = GridSearchCV(ACERegressor(), {"alpha": [1e-8, 1e-6]},
...                       scoring=SCORERS, refit="force_mae")
"""

import numpy as np

from .fitting import read_targets
from .structures import as_structure_list


def mae(y_true, y_pred):
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(y_pred) - np.asarray(y_true))))


def rmse(y_true, y_pred):
    """Root-mean-square error."""
    return float(np.sqrt(np.mean((np.asarray(y_pred) - np.asarray(y_true)) ** 2)))


def evaluate(model, X, y=None):
    """Energy and force errors of a fitted model on structures with stored targets.

    Parameters
    ----------
    model : fitted ACERegressor
    X : list of ase.Atoms
    y : array-like, optional
        Energies; when given, force errors are not computed.

    Returns
    -------
    dict
        ``energy_mae``, ``energy_rmse``, ``energy_per_atom_mae`` (eV) and,
        when forces are available, ``force_mae``, ``force_rmse`` (eV/Å, per
        Cartesian component).

    Examples
    --------
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.metrics import evaluate
    >>> train = load_sample(n=30)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> sorted(evaluate(model, train))
    ['energy_mae', 'energy_per_atom_mae', 'energy_rmse', 'force_mae', 'force_rmse']
    """
    structures = as_structure_list(X)
    forces = None
    if y is None:
        energies, forces, _ = _targets(model, structures)
    else:
        energies = np.asarray(y, dtype=float).ravel()
        if energies.shape != (len(structures),):
            raise ValueError(f"y has {energies.size} energies for {len(structures)} structures")
    n = np.array([len(a) for a in structures])
    if forces is not None and hasattr(model, "predict_energy_forces"):
        E, F = model.predict_energy_forces(structures)  # one pass for both
    else:
        E = model.predict(structures)
        F = model.predict_forces(structures) if forces is not None else None
    out = {
        "energy_mae": mae(energies, E),
        "energy_rmse": rmse(energies, E),
        "energy_per_atom_mae": mae(energies / n, E / n),
    }
    if forces is not None:
        out["force_mae"] = mae(forces, F)
        out["force_rmse"] = rmse(forces, F)
    return out


def _targets(model, structures):
    ek = getattr(model, "energy_key", "energy")
    fk = getattr(model, "forces_key", "forces")
    try:
        return read_targets(structures, ek, fk, need_forces=True)
    except ValueError as err:
        if "missing forces" not in str(err):
            raise
        energies, _, w = read_targets(structures, ek, fk, need_forces=False)
        return energies, None, w


def _scorer(metric):
    def score(estimator, X, y=None):
        result = evaluate(estimator, X, y)
        if metric not in result:
            raise ValueError(f"{metric} needs forces stored on the structures")
        return -result[metric]

    score.__name__ = f"neg_{metric}"
    score.__doc__ = f"Scorer: minus {metric.replace('_', ' ')} (greater is better)."
    return score


energy_mae_scorer = _scorer("energy_mae")
energy_rmse_scorer = _scorer("energy_rmse")
energy_per_atom_mae_scorer = _scorer("energy_per_atom_mae")
force_mae_scorer = _scorer("force_mae")
force_rmse_scorer = _scorer("force_rmse")

#: All scorers by metric name, for ``GridSearchCV(scoring=SCORERS, refit=...)``.
SCORERS = {
    "energy_mae": energy_mae_scorer,
    "energy_rmse": energy_rmse_scorer,
    "energy_per_atom_mae": energy_per_atom_mae_scorer,
    "force_mae": force_mae_scorer,
    "force_rmse": force_rmse_scorer,
}
