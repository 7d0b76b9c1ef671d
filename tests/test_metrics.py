"""Tests of ``skace.metrics``: error functions, ``evaluate`` and the scikit-learn scorers."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from threadpoolctl import threadpool_limits

from skace import ACERegressor, ACETransformer
from skace.datasets import load_sample
from skace.metrics import (SCORERS, energy_mae_scorer, energy_per_atom_mae_scorer, energy_rmse_scorer, evaluate,
                           force_mae_scorer, force_rmse_scorer, mae, rmse)

threadpool_limits(limits=1, user_api="blas")  # see test_regressor.py: conftest's limit comes too early

KW = dict(cutoff=4.0, correlation_order=2, max_degree=5)


def test_mae_rmse_values():
    assert mae([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]) == pytest.approx(1.0)
    assert rmse([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]) == pytest.approx(np.sqrt(5 / 3))
    a = np.arange(12.0).reshape(4, 3)
    b = a + np.array([1.0, -1.0, 3.0])
    assert mae(a, b) == pytest.approx(5 / 3)
    assert rmse(a, b) == pytest.approx(np.sqrt(11 / 3))
    assert mae(a, a) == rmse(a, a) == 0.0
    assert isinstance(mae(a, b), float) and isinstance(rmse(a, b), float)


class FakeModel:
    """Predicts what it is told: energies and forces as given."""

    energy_key = "energy"
    forces_key = "forces"

    def __init__(self, E, F):
        self.E, self.F = np.asarray(E, float), np.asarray(F, float)

    def predict(self, X):
        return self.E.copy()

    def predict_forces(self, X):
        return self.F.copy()


def two_structures():
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]])
    b = Atoms("CH3", positions=[[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]])
    a.info["energy"], b.info["energy"] = -30.0, -1070.0
    a.arrays["forces"] = np.zeros((2, 3))
    b.arrays["forces"] = np.ones((4, 3))
    return [a, b]


def test_evaluate_with_known_errors():
    X = two_structures()
    # energy errors 1 eV (2 atoms) and -2 eV (4 atoms); force errors 0.5 on every component
    F = np.concatenate([np.full((2, 3), 0.5), np.full((4, 3), 1.5)])
    res = evaluate(FakeModel([-29.0, -1072.0], F), X)
    assert set(res) == {"energy_mae", "energy_rmse", "energy_per_atom_mae", "force_mae", "force_rmse"}
    assert res["energy_mae"] == pytest.approx(1.5)
    assert res["energy_rmse"] == pytest.approx(np.sqrt(2.5))
    assert res["energy_per_atom_mae"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert res["force_mae"] == pytest.approx(0.5)
    assert res["force_rmse"] == pytest.approx(0.5)


def test_evaluate_with_y_is_energy_only():
    X = two_structures()
    res = evaluate(FakeModel([-29.0, -1072.0], np.zeros((6, 3))), X, y=[-29.0, -1070.0])
    assert set(res) == {"energy_mae", "energy_rmse", "energy_per_atom_mae"}
    assert res["energy_mae"] == pytest.approx(1.0)
    assert res["energy_per_atom_mae"] == pytest.approx(0.25)


def test_evaluate_without_forces_skips_force_metrics():
    X = two_structures()
    for a in X:
        del a.arrays["forces"]
    res = evaluate(FakeModel([-30.0, -1070.0], np.zeros((6, 3))), X)
    assert set(res) == {"energy_mae", "energy_rmse", "energy_per_atom_mae"}
    assert res["energy_mae"] == 0.0


def test_evaluate_reads_calculator_results():
    X = two_structures()
    for a in X:
        e, f = a.info.pop("energy"), a.arrays.pop("forces")
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
    res = evaluate(FakeModel([-30.0, -1069.0], np.zeros((6, 3))), X)
    assert res["energy_mae"] == pytest.approx(0.5)
    assert res["force_mae"] == pytest.approx(4 * 3 / 18)


def test_evaluate_rejects_y_of_wrong_length():
    """One energy for two structures must not be silently broadcast into an error figure."""
    X = two_structures()
    model = FakeModel([-30.0, -1070.0], np.zeros((6, 3)))
    with pytest.raises(ValueError):
        evaluate(model, X, y=[-30.0])


def test_evaluate_missing_energy():
    X = two_structures()
    model = FakeModel([-30.0, -1070.0], np.zeros((6, 3)))
    del X[1].info["energy"]
    with pytest.raises(ValueError, match="missing energy"):
        evaluate(model, X)


@pytest.fixture(scope="module")
def fitted():
    model = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-4).fit(load_sample(n=12))
    return model, load_sample("test", n=8)


def test_evaluate_real_model_matches_manual(fitted):
    model, test = fitted
    res = evaluate(model, test)
    E = np.array([a.info["energy"] for a in test])
    F = np.concatenate([a.arrays["forces"] for a in test])
    n = np.array([len(a) for a in test])
    Ep, Fp = model.predict(test), model.predict_forces(test)
    assert res["energy_mae"] == pytest.approx(np.mean(np.abs(Ep - E)), rel=1e-12)
    assert res["energy_rmse"] == pytest.approx(np.sqrt(np.mean((Ep - E) ** 2)), rel=1e-12)
    assert res["energy_per_atom_mae"] == pytest.approx(np.mean(np.abs(Ep - E) / n), rel=1e-12)
    assert res["force_mae"] == pytest.approx(np.mean(np.abs(Fp - F)), rel=1e-12)
    assert res["force_rmse"] == pytest.approx(np.sqrt(np.mean((Fp - F) ** 2)), rel=1e-12)
    assert res["force_mae"] > 0 and res["energy_mae"] > 0


def test_evaluate_uses_model_keys(fitted):
    model, test = fitted
    renamed = []
    for a in test:
        b = Atoms(a.numbers, a.positions)
        b.info["E_dft"] = a.info["energy"]
        b.arrays["F_dft"] = a.arrays["forces"]
        renamed.append(b)
    other = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-4, energy_key="E_dft",
                         forces_key="F_dft")
    other.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_") or k.startswith("_")})
    assert evaluate(other, renamed) == pytest.approx(evaluate(model, test), rel=1e-12)


def test_scorers_are_negated_metrics(fitted):
    model, test = fitted
    res = evaluate(model, test)
    assert set(SCORERS) == set(res)
    for name, scorer in SCORERS.items():
        assert scorer(model, test) == pytest.approx(-res[name], rel=1e-14)
        assert scorer(model, test) < 0
        assert scorer.__name__ == f"neg_{name}"
    assert SCORERS["energy_mae"] is energy_mae_scorer
    assert SCORERS["energy_rmse"] is energy_rmse_scorer
    assert SCORERS["energy_per_atom_mae"] is energy_per_atom_mae_scorer
    assert SCORERS["force_mae"] is force_mae_scorer
    assert SCORERS["force_rmse"] is force_rmse_scorer


def test_per_atom_scorer_divides_by_atom_counts():
    X = two_structures()
    model = FakeModel([-26.0, -1074.0], np.zeros((6, 3)))  # errors 4 eV on 2 atoms, -4 eV on 4 atoms
    assert energy_mae_scorer(model, X) == pytest.approx(-4.0)
    assert energy_per_atom_mae_scorer(model, X) == pytest.approx(-(2.0 + 1.0) / 2)


def test_force_scorers_need_forces(fitted):
    model, test = fitted
    y = np.array([a.info["energy"] for a in test])
    assert energy_mae_scorer(model, test, y) == pytest.approx(energy_mae_scorer(model, test), rel=1e-14)
    for scorer in (force_mae_scorer, force_rmse_scorer):
        with pytest.raises(ValueError, match="force"):
            scorer(model, test, y)
