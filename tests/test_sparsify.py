"""Sparsification: selection methods, refits on subsets, real savings, Pareto front."""

import numpy as np
import pytest

from skace import ACERegressor, ACETransformer
from skace.datasets import load_sample
from skace.sparsify import METHODS, ACESparsifier, greedy_selection, pareto_front, plot_pareto

KW = dict(cutoff=4.0, correlation_order=2, max_degree=6)


@pytest.fixture(scope="module")
def data():
    return load_sample(n=40), load_sample("test", n=10)


def model():
    return ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-8)


def test_greedy_selection_recovers_true_support():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 60))
    X /= np.linalg.norm(X, axis=0)
    true = np.array([3, 17, 42, 55])
    y = X[:, true] @ np.array([2.0, -1.5, 1.0, 0.7])
    order = greedy_selection(X.T @ X, X.T @ y, 4)
    assert sorted(order) == sorted(true)


def test_keeping_everything_predicts_as_the_original(data):
    train, test = data
    full = model().fit(train)
    sp = ACESparsifier(model(), n_features=full.n_features_).fit(train)
    assert sp.get_support().all()
    np.testing.assert_allclose(sp.predict(test), full.predict(test), rtol=0, atol=1e-9)
    np.testing.assert_allclose(sp.predict_forces(test), full.predict_forces(test), rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_subset_equals_refit_on_subset_and_is_cheaper(data, method):
    train, test = data
    sp = ACESparsifier(model(), n_features=25, method=method).fit(train)
    idx = sp.get_support(indices=True)
    assert len(idx) == 25 and sp.get_support().sum() == 25
    elements = sp.full_model_.descriptor_.elements_
    manual = ACERegressor(ACETransformer(**KW, elements=elements, feature_subset=idx.tolist()),
                          solver="ridge", alpha=1e-8).fit(train)
    np.testing.assert_allclose(sp.predict(test), manual.predict(test), rtol=0, atol=1e-9)
    np.testing.assert_allclose(sp.predict_forces(test), manual.predict_forces(test), rtol=0, atol=1e-8)
    full_b, sparse_b = sp.full_model_.descriptor_.compiled_, sp.model_.descriptor_.compiled_
    assert sparse_b.n_AA + len(sparse_b.vals) < full_b.n_AA + len(full_b.vals)
    # the sparse model's features are the selected columns of the full descriptor
    B_full = sp.full_model_.descriptor_.transform(test)
    np.testing.assert_allclose(sp.model_.descriptor_.transform(test), B_full[:, idx], rtol=1e-12, atol=1e-12)


def test_cost_aware_selection_needs_fewer_products(data):
    train, _ = data
    plain = ACESparsifier(model(), n_features=20, method="omp").fit(train)
    cheap = ACESparsifier(model(), n_features=20, method="cost", cost_weight=50.0).fit(train)
    size = lambda sp: sp.model_.descriptor_.compiled_.n_AA + len(sp.model_.descriptor_.compiled_.vals)  # noqa: E731
    assert size(cheap) <= size(plain)


def test_bad_parameters(data):
    train, _ = data
    with pytest.raises(ValueError, match="unknown method"):
        ACESparsifier(model(), method="magic").fit(train)
    with pytest.raises(ValueError, match="n_features"):
        ACESparsifier(model(), n_features=0).fit(train)


def test_pareto_front_and_plot(data, tmp_path):
    train, test = data
    front = pareto_front(model(), train, test, sizes=[10, 30])
    assert list(front["n_features"])[:2] == [10, 30] and front["method"].iloc[-1] == "full"
    assert (front["us_per_atom"] > 0).all() and np.isfinite(front["force_mae"]).all()
    path = plot_pareto({"omp": front}, tmp_path / "front.png")
    assert path.stat().st_size > 1000
