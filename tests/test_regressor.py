"""Tests of ``ACERegressor``: exact recovery of a linear ACE "truth", the Bayesian and ridge
solutions against explicit linear algebra, forces/stress/atomic energies against finite
differences, the scikit-learn interface, the assembly cache, sample weights and bad input."""

import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.geometry import get_distances
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from threadpoolctl import threadpool_limits

import skace.fitting
import skace.regressor
from skace import ACERegressor, ACETransformer
from skace.datasets import load_sample
from skace.linalg import GRAM_JITTER
from skace.maths.priors import smoothness_prior
from skace.metrics import SCORERS

# conftest.py limits BLAS threads before numpy/scipy have loaded their OpenBLAS builds, so the
# limit does not reach them; on a small machine 2-thread BLAS next to numba's OpenMP threads
# makes each small SVD take seconds. Limit again now that the libraries are loaded.
threadpool_limits(limits=1, user_api="blas")

KW = dict(cutoff=4.0, correlation_order=2, max_degree=5)
E0 = {"H": -13.6, "C": -1030.5, "O": -2041.25}
BIG = 10**9  # design_limit: always the design (SVD) route


# ======================================================================
# structures and a linear ACE "truth"
# ======================================================================
def random_cluster(rng, n, pool=("H", "C", "O"), box=3.0, dmin=0.9):
    """A non-periodic cluster of ``n`` atoms, every element of ``pool`` present (if n allows)."""
    pos = []
    while len(pos) < n:
        p = rng.uniform(0.0, box, 3)
        if all(np.linalg.norm(p - q) >= dmin for q in pos):
            pos.append(p)
    symbols = list(pool)[:n] + list(rng.choice(pool, max(n - len(pool), 0)))
    rng.shuffle(symbols)
    return Atoms(symbols=symbols, positions=pos)


def random_cell(rng, n, pool=("C", "O"), a=3.4, dmin=0.9):
    """A small triclinic periodic cell (distances under the minimum image convention >= dmin)."""
    cell = np.diag([a, 1.05 * a, 0.95 * a]) + rng.uniform(-0.2, 0.2, (3, 3))
    pos = []
    while len(pos) < n:
        p = rng.uniform(0, 1, 3) @ cell
        if not pos or get_distances(p, np.array(pos), cell=cell, pbc=True)[1].min() >= dmin:
            pos.append(p)
    symbols = list(pool)[:n] + list(rng.choice(pool, max(n - len(pool), 0)))
    rng.shuffle(symbols)
    return Atoms(symbols=symbols, positions=pos, cell=cell, pbc=True)


def counts_of(structures, elements):
    return np.array([[a.get_chemical_symbols().count(s) for s in elements] for a in structures], float)


def label(structures, descriptor, coef, e0):
    """Attach energies ``B c + counts . E0`` and forces ``-dB/dr c``; return (E, F, E_feature_part)."""
    B = descriptor.transform(structures)
    G = descriptor.transform_gradient(structures)
    Ef = B @ coef
    E = Ef + counts_of(structures, descriptor.elements_) @ np.array([e0[s] for s in descriptor.elements_])
    F = -(G @ coef)
    a0 = 0
    for k, atoms in enumerate(structures):
        atoms.info["energy"] = float(E[k])
        atoms.arrays["forces"] = F[a0:a0 + len(atoms)].copy()
        a0 += len(atoms)
    return E, F, Ef


class Truth:
    def __init__(self, train, test, seed, e0=E0, **kw):
        settings = dict(KW, **kw)
        self.settings = settings
        self.descriptor = ACETransformer(**settings).fit(train)
        rng = np.random.default_rng(seed)
        self.coef = rng.normal(size=self.descriptor.n_features_out_)
        self.e0 = {el: e0[el] for el in self.descriptor.elements_}
        self.train, self.test = train, test
        self.E, self.F, self.Ef = label(train, self.descriptor, self.coef, e0)
        self.Et, self.Ft, self.Eft = label(test, self.descriptor, self.coef, e0)

    def regressor(self, **kw):
        params = dict(descriptor=ACETransformer(**self.settings), solver="ridge", alpha=1e-12, prior="none",
                      e0=dict(self.e0), design_limit=BIG, standardize=True)
        params.update(kw)
        return ACERegressor(**params)

    def check_predictions(self, model, rtol_e=1e-8, rtol_f=1e-8):
        for X, E, F, Ef in ((self.train, self.E, self.F, self.Ef), (self.test, self.Et, self.Ft, self.Eft)):
            e_scale = np.abs(Ef).max()  # the part of the energy the features carry
            f_scale = np.abs(F).max()
            E_pred, F_pred = model.predict_energy_forces(X)
            assert np.abs(E_pred - E).max() <= rtol_e * e_scale, np.abs(E_pred - E).max() / e_scale
            assert np.abs(F_pred - F).max() <= rtol_f * f_scale, np.abs(F_pred - F).max() / f_scale


@pytest.fixture(scope="module")
def cho_truth():
    rng = np.random.default_rng(11)
    train = [random_cluster(rng, int(rng.integers(5, 9))) for _ in range(60)]
    test = [random_cluster(rng, 7) for _ in range(6)]
    return Truth(train, test, seed=1)


@pytest.fixture(scope="module")
def carbon_truth():
    """Single element: the design has full column rank, so the coefficients are identifiable."""
    rng = np.random.default_rng(12)
    train = [random_cluster(rng, int(rng.integers(4, 9)), pool=("C",)) for _ in range(30)]
    test = [random_cluster(rng, 7, pool=("C",)) for _ in range(4)]
    return Truth(train, test, seed=2, max_degree=6)


@pytest.fixture(scope="module")
def periodic_truth():
    rng = np.random.default_rng(13)
    train = [random_cell(rng, int(rng.integers(3, 6))) for _ in range(16)]
    test = [random_cell(rng, 5) for _ in range(3)]
    return Truth(train, test, seed=3)


def test_truth_designs_have_expected_rank(carbon_truth, cho_truth):
    """Guard for the recovery tests: carbon has full column rank; with several elements the
    only null directions are the exact pair symmetries (A|B(n) and B|A(n) sum identically)."""
    for truth, nullity in ((carbon_truth, 0), (cho_truth, 3 * 5)):
        d = truth.descriptor
        A = np.vstack([d.transform(truth.train), d.transform_gradient(truth.train).reshape(-1, d.n_features_out_)])
        A /= np.linalg.norm(A, axis=0)
        s = np.linalg.svd(A, compute_uv=False)
        assert np.sum(s > 1e-10 * s[0]) == d.n_features_out_ - nullity


# ======================================================================
# exact recovery
# ======================================================================
@pytest.mark.parametrize("design_limit", [BIG, 0], ids=["design", "gram"])
def test_exact_recovery_coefficients_single_element(carbon_truth, design_limit):
    model = carbon_truth.regressor(alpha=1e-14, design_limit=design_limit).fit(carbon_truth.train)
    assert model.e0_ == carbon_truth.e0
    assert model.n_features_ == len(carbon_truth.coef)
    np.testing.assert_allclose(model.coef_, carbon_truth.coef, rtol=0, atol=1e-7 * np.abs(carbon_truth.coef).max())
    carbon_truth.check_predictions(model, 1e-10, 1e-9)


@pytest.mark.parametrize("design_limit", [BIG, 0], ids=["design", "gram"])
def test_exact_recovery_multi_element_molecules(cho_truth, design_limit):
    model = cho_truth.regressor(design_limit=design_limit).fit(cho_truth.train)
    assert model.e0_ == cho_truth.e0
    cho_truth.check_predictions(model, 1e-8, 1e-7)
    # coefficients are identifiable up to the exact pair symmetry: compare the symmetrised sums
    # (the design's condition number is ~1e5, so use an even smaller alpha and a 5e-5 tolerance)
    model = cho_truth.regressor(alpha=1e-14, design_limit=design_limit).fit(cho_truth.train)
    tol = 5e-5 * np.abs(cho_truth.coef).max()
    names = model.descriptor_.get_feature_names_out()
    idx = {n: k for k, n in enumerate(names)}
    for name, k in idx.items():
        centre, body, factors, coupling = name.split("|")
        if body == "2-body":
            other = factors[0]
            mirror = f"{other}|2-body|{centre}{factors[1:]}|{coupling}"
            pair = model.coef_[k] + model.coef_[idx[mirror]]
            true = cho_truth.coef[k] + cho_truth.coef[idx[mirror]]
            assert abs(pair - true) <= tol, name
        else:
            assert abs(model.coef_[k] - cho_truth.coef[k]) <= tol, name


@pytest.mark.parametrize("design_limit", [BIG, 0], ids=["design", "gram"])
def test_exact_recovery_periodic(periodic_truth, design_limit):
    model = periodic_truth.regressor(design_limit=design_limit).fit(periodic_truth.train)
    periodic_truth.check_predictions(model, 1e-8, 1e-7)


@pytest.mark.parametrize("which", ["carbon", "cho", "periodic"])
def test_exact_recovery_cholesky_route(carbon_truth, cho_truth, periodic_truth, which):
    """Gram fits with more features than ``eigen_limit`` solve by Cholesky factorisation."""
    truth = dict(carbon=carbon_truth, cho=cho_truth, periodic=periodic_truth)[which]
    model = truth.regressor(design_limit=0, eigen_limit=0).fit(truth.train)
    assert model.spectrum_ is None  # really the Cholesky route
    truth.check_predictions(model, 1e-8, 1e-7)


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("scaling", ["sqrt_atoms", "atoms", "none"])
@pytest.mark.parametrize("prior", ["algebraic", "exponential"])
def test_exact_recovery_any_scaling_and_prior(cho_truth, scaling, prior, standardize):
    """Row scalings, priors and column scaling change the regularisation, not the noise-free minimiser."""
    model = cho_truth.regressor(energy_weight_scaling=scaling, prior=prior, prior_order=2.0,
                                 alpha=1e-14, standardize=standardize).fit(cho_truth.train)
    cho_truth.check_predictions(model, 1e-7, 1e-6)


def test_e0_auto_is_fitted_jointly(cho_truth):
    """The documented rule: ``e0="auto"`` refines E0 together with the coefficients, so on
    multi-composition data it is not the counts-only least squares, and it fits better."""
    model = cho_truth.regressor(e0="auto").fit(cho_truth.train)
    elements = model.descriptor_.elements_
    counts_only = np.linalg.lstsq(counts_of(cho_truth.train, elements), cho_truth.E, rcond=None)[0]
    fitted = np.array([model.e0_[el] for el in elements])
    assert np.abs(fitted - counts_only).max() > 1e-6
    frozen = cho_truth.regressor(e0=dict(zip(elements, counts_only))).fit(cho_truth.train)
    err_joint = np.abs(model.predict(cho_truth.train) - cho_truth.E).max()
    err_frozen = np.abs(frozen.predict(cho_truth.train) - cho_truth.E).max()
    assert err_joint < err_frozen


def test_e0_none_is_zero(carbon_truth):
    model = carbon_truth.regressor(e0=None, force_weight=1.0).fit(carbon_truth.train)
    assert model.e0_ == {"C": 0.0}


@pytest.mark.parametrize("design_limit", [BIG, 0], ids=["design", "gram"])
def test_exact_recovery_e0_auto_multi_composition(cho_truth, design_limit):
    """Noise-free data that the model class represents exactly, with varied compositions:
    ``e0="auto"`` should still reproduce it (the reference energies and the coefficients are
    both determined by the data). Fails when E0 is fixed from a counts-only regression
    *before* the features are fitted, which leaves energies and forces inconsistent."""
    model = cho_truth.regressor(e0="auto", design_limit=design_limit).fit(cho_truth.train)
    cho_truth.check_predictions(model, 1e-8, 1e-7)


def test_gcv_and_bayesian_recover_noise_free_data(cho_truth):
    for solver in ("gcv", "bayesian"):
        model = cho_truth.regressor(solver=solver).fit(cho_truth.train)
        cho_truth.check_predictions(model, 1e-6, 1e-5)


# ======================================================================
# the regularised solution against explicit linear algebra
# ======================================================================
def weighted_design(model, structures, energy_weight=30.0, force_weight=1.0):
    """The rows the regressor minimises (weights, sqrt(N) scaling, E0 moved to the targets),
    over the standardised coefficients ``d = scale_ * c``. The explicit linear-algebra
    tests below fix E0 (a dict), so the unknowns are the feature coefficients only."""
    assert not model._joint_e0
    d = model.descriptor_
    n = np.array([len(a) for a in structures], float)
    w = np.array([a.info.get("weight", 1.0) for a in structures], float)
    escale = w / np.sqrt(n)
    E = np.array([a.info["energy"] for a in structures])
    F = np.concatenate([a.arrays["forces"] for a in structures])
    e0 = np.array([model.e0_[el] for el in d.elements_])
    B = d.transform(structures)
    G = d.transform_gradient(structures)
    aw = np.repeat(w, n.astype(int))
    XE = energy_weight * escale[:, None] * B
    yE = energy_weight * escale * (E - counts_of(structures, d.elements_) @ e0)
    XF = -force_weight * (G * aw[:, None, None]).reshape(-1, d.n_features_out_)
    yF = force_weight * (F * aw[:, None]).ravel()
    X = np.vstack([XE, XF])
    return X, np.concatenate([yE, yF])


@pytest.fixture(scope="module")
def noisy_cho(cho_truth):
    rng = np.random.default_rng(5)
    train = [a.copy() for a in cho_truth.train[:30]]
    for a in train:
        a.info["energy"] += rng.normal(scale=0.02)
        a.arrays["forces"] = a.arrays["forces"] + rng.normal(scale=0.05, size=(len(a), 3))
    return train


def test_prior_order_auto_is_stronger_only_when_the_fit_is_underdetermined(cho_truth, noisy_cho):
    """``prior_order="auto"`` (default) fits with order 3 when there are at most 3/4 as many
    rows as unknowns, else with order 2; either way the same model as that order given
    explicitly. Forces count as rows only when they are fitted."""
    desc = dict(cutoff=4.0, correlation_order=3, max_degree=6)
    n = ACETransformer(**desc).fit(noisy_cho).n_features_out_ + 3
    for data, order in ((cho_truth.train[:10], 3.0), (noisy_cho, 2.0)):
        rows = sum(3 * len(a) + 1 for a in data)
        assert (4 * rows <= 3 * n) == (order == 3.0)  # the two cases are on either side
        auto = ACERegressor(ACETransformer(**desc)).fit(data)
        assert auto.get_params()["prior_order"] == "auto"
        assert auto.prior_order_ == order
        fixed = ACERegressor(ACETransformer(**desc), prior_order=order).fit(data)
        np.testing.assert_array_equal(auto.coef_, fixed.coef_)
        other = ACERegressor(ACETransformer(**desc), prior_order=5.0 - order).fit(data)
        assert not np.allclose(auto.coef_, other.coef_)
    energy_only = ACERegressor(ACETransformer(**desc), force_weight=0.0).fit(noisy_cho)
    assert energy_only.prior_order_ == 3.0  # 30 energy rows


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("design_limit", [BIG, 0], ids=["design", "gram"])
@pytest.mark.parametrize("prior, weights", [("algebraic", (1.0, 1.0)), ("none", (1.0, 1.0)), ("algebraic", (2.0, 0.8))])
def test_ridge_matches_normal_equations(noisy_cho, design_limit, prior, weights, standardize):
    alpha = 1e-3
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="ridge", alpha=alpha, prior=prior, prior_order=2.0,
                         prior_l_weight=weights[0], prior_correlation_weight=weights[1],
                         design_limit=design_limit, standardize=standardize).fit(noisy_cho)
    X, y = weighted_design(model, noisy_cho)
    gamma = smoothness_prior(model.descriptor_.basis_.features, prior, 2.0, *weights)
    np.testing.assert_allclose(model.scale_, gamma * np.linalg.norm(X, axis=0) if standardize else gamma, rtol=1e-8)
    S = np.diag(model.scale_**2)
    coef = np.linalg.solve(X.T @ X + alpha * S, X.T @ y)
    np.testing.assert_allclose(model.coef_, coef, rtol=0, atol=1e-6 * np.abs(coef).max())
    assert model.alpha_ == alpha


@pytest.mark.parametrize("kind", ["algebraic", "exponential"])
def test_prior_weights_follow_their_formula(kind):
    """``w_l`` scales the angular part of the prior and ``w_nu`` multiplies it once per extra
    factor; weights of 1 give the plain prior."""
    features = [{"factors": ((0, 2, 0),)}, {"factors": ((0, 1, 3), (1, 2, 3))},
                {"factors": ((0, 1, 1), (0, 3, 2), (1, 1, 1))}]
    p, wl, wnu = 3.0, 2.0, 0.8
    got = smoothness_prior(features, kind, p, l_weight=wl, correlation_weight=wnu)
    for f, g in zip(features, got):
        n = np.array([t[1] for t in f["factors"]], float)
        l = np.array([t[2] for t in f["factors"]], float)
        plain = np.sum(n**p + wl * l**p) if kind == "algebraic" else np.exp(np.sum(n + wl * l) / p)
        assert g == pytest.approx(wnu ** (len(n) - 1) * plain, rel=1e-14)
    np.testing.assert_array_equal(smoothness_prior(features, kind, p, 1.0, 1.0), smoothness_prior(features, kind, p))


def test_prior_weights_are_not_served_from_the_cache(noisy_cho):
    """Refitting with other prior weights solves anew (the cached spectrum is keyed on them);
    that the weighted prior is the one solved is ``test_ridge_matches_normal_equations``'s check."""
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="ridge", alpha=1e-3, prior_order=2.0,
                         prior_l_weight=1.0, prior_correlation_weight=1.0)
    plain = model.fit(noisy_cho).coef_.copy()
    model.set_params(prior_l_weight=2.0, prior_correlation_weight=0.8).fit(noisy_cho)
    gamma = smoothness_prior(model.descriptor_.basis_.features, "algebraic", 2.0, 2.0, 0.8)
    np.testing.assert_allclose(model.scale_, gamma, rtol=1e-12)
    assert np.abs(model.coef_ - plain).max() > 1e-3 * np.abs(plain).max()


def test_auto_prior_weights_follow_the_rows_per_unknown(noisy_cho):
    """``prior_l_weight`` and ``prior_correlation_weight`` "auto": (2, 0.8) for a fit with at
    most a tenth as many rows as unknowns (energies only, against a three-body basis), (1, 1)
    for one with more (energies and forces); the prior solved is the one reported."""
    from skace.fitting import few_data
    from skace.regressor import AUTO_PRIOR_WEIGHTS

    kw = dict(e0=dict(E0), solver="ridge", alpha=1e-3, prior_order=2.0)
    cases = [(ACETransformer(**KW), 1.0, 30 + 3 * sum(len(a) for a in noisy_cho)),
             (ACETransformer(cutoff=4.0, correlation_order=3, max_degree=7), 0.0, 30)]
    for desc, force_weight, rows in cases:
        model = ACERegressor(desc, force_weight=force_weight, **kw).fit(noisy_cho)
        few = few_data(rows, model.n_features_)
        assert few == (force_weight == 0)  # one fit in each regime
        weights = (model.prior_l_weight_, model.prior_correlation_weight_)
        assert weights == AUTO_PRIOR_WEIGHTS[int(few)] == ((2.0, 0.8) if few else (1.0, 1.0))
        gamma = smoothness_prior(model.descriptor_.basis_.features, "algebraic", 2.0, *weights)
        np.testing.assert_allclose(model.scale_, gamma, rtol=1e-12)
        explicit = ACERegressor(desc, force_weight=force_weight, prior_l_weight=weights[0],
                                prior_correlation_weight=weights[1], **kw).fit(noisy_cho)
        np.testing.assert_array_equal(explicit.coef_, model.coef_)


def test_default_descriptor_is_chosen_for_the_rows_fitted(monkeypatch):
    """``ACERegressor()`` sizes its default basis by the rows it will fit: energies, then
    force components and stress components where those are fitted."""
    import skace.regressor as reg
    from skace.datasets import make_emt_dataset

    seen = []

    def small(elements, n_rows=None):  # records the rows; a small basis keeps the fit quick
        seen.append(n_rows)
        return ACETransformer(cutoff=4.0, correlation_order=2, max_degree=4)

    monkeypatch.setattr(reg, "default_descriptor", small)
    data = make_emt_dataset(6, size=1, vacancy_fraction=0, md_steps=1, random_state=0)  # 4 atoms, with stress
    ACERegressor().fit(data)
    ACERegressor(stress_weight=0).fit(data)
    ACERegressor(force_weight=0, stress_weight=0).fit(data)
    assert seen == [6 * (1 + 12 + 6), 6 * (1 + 12), 6]


@pytest.mark.parametrize("elements, normal, few", [
    (["C", "H", "O"], [16, 8, 7, 7.5], [16, 8, 7, 8]),  # the carbon five-body rung, then one up
    (["C", "H", "N", "O"], [16, 7, 6, 6], [16, 8, 7, 5]),
    (["C", "H"], [20, 10, 8.5, 8], [20, 10, 8.5, 8]),  # the top of the ladder already
])
def test_default_descriptor_grows_for_few_data(elements, normal, few):
    """The default basis takes ``FEW_DATA_MAX_FEATURES`` where the rows are at most a tenth
    of the default basis's size, and the standard budget from one row more."""
    from skace.regressor import (DEFAULT_MAX_FEATURES, FEW_DATA_MAX_FEATURES, default_budget, default_descriptor,
                                 default_n_features)

    edge = default_n_features(elements) // 10
    assert default_budget(elements, edge) == FEW_DATA_MAX_FEATURES
    assert default_budget(elements, edge + 1) == default_budget(elements) == DEFAULT_MAX_FEATURES
    assert default_descriptor(elements, edge).max_degree == few
    assert default_descriptor(elements, edge + 1).max_degree == default_descriptor(elements).max_degree == normal
    assert default_n_features(elements, FEW_DATA_MAX_FEATURES) <= FEW_DATA_MAX_FEATURES


def gaussian_log_evidence(X, y, a, beta):
    """log N(y | 0, I / beta + X diag(1 / a) X^T), computed directly (``a``: prior
    precision, one for all coefficients or one each)."""
    C = np.eye(len(y)) / beta + (X / a) @ X.T
    sign, logdet = np.linalg.slogdet(C)
    assert sign > 0
    return -0.5 * (logdet + y @ np.linalg.solve(C, y) + len(y) * np.log(2 * np.pi))


#: The three linear-algebra routes: SVD of the design, eigendecomposition of the Gram
#: matrix, and Cholesky factorisations of the Gram matrix (used above ``eigen_limit`` features).
ROUTES = {"design": dict(design_limit=BIG), "gram": dict(design_limit=0),
          "cholesky": dict(design_limit=0, eigen_limit=0)}


@pytest.mark.parametrize("route", list(ROUTES))
def test_bayesian_posterior_and_std_match_explicit(noisy_cho, cho_truth, route):
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="bayesian", **ROUTES[route]).fit(noisy_cho)
    X, y = weighted_design(model, noisy_cho)
    Xs = X / model.scale_
    beta = model.beta_
    a = model.alpha_ * beta
    # (alpha, beta) maximise the evidence (the Cholesky route's scalar search stops within
    # a factor 10**0.1 in alpha/beta: allow it a small shortfall)
    logev = gaussian_log_evidence(Xs, y, a, beta)
    slack = 0.0 if route != "cholesky" else 0.5
    for fa, fb in ((1.5, 1), (1 / 1.5, 1), (1, 1.5), (1, 1 / 1.5), (1.5, 1.5), (1 / 1.5, 1 / 1.5)):
        assert gaussian_log_evidence(Xs, y, a * fa, beta * fb) < logev + slack
    # posterior mean
    H = a * np.eye(Xs.shape[1]) + beta * Xs.T @ Xs
    d = beta * np.linalg.solve(H, Xs.T @ y)
    np.testing.assert_allclose(model.coef_ * model.scale_, d, rtol=0, atol=1e-6 * np.abs(d).max())
    # predictive std = posterior variance of the energy + noise of an energy row
    Xq = cho_truth.test + noisy_cho[:3]
    x = model.descriptor_.transform(Xq) / model.scale_
    var = np.einsum("ij,ij->i", x, np.linalg.solve(H, x.T).T)
    n = np.array([len(s) for s in Xq])
    noise = n / (beta * 30.0**2)
    E, std = model.predict(Xq, return_std=True)
    np.testing.assert_array_equal(E, model.predict(Xq))
    np.testing.assert_allclose(std, np.sqrt(var + noise), rtol=1e-6)


@pytest.mark.parametrize("route", list(ROUTES))
def test_log_evidence_is_gaussian_marginal_likelihood(noisy_cho, route, monkeypatch):
    """``log_evidence_`` is ``log p(y | alpha, beta)`` whichever route computed it, so that
    evidences of different models (descriptors, data) can be compared."""
    factorised = []
    factor = skace.linalg.GramSolver.factor

    def counted(self, lam):
        if lam != self._lam:
            factorised.append(lam)
        return factor(self, lam)

    monkeypatch.setattr(skace.linalg.GramSolver, "factor", counted)
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="bayesian", **ROUTES[route]).fit(noisy_cho)
    X, y = weighted_design(model, noisy_cho)
    Xs = X / model.scale_
    a = model.alpha_ * model.beta_
    assert model.prior_floor_ == (GRAM_JITTER if route == "cholesky" else None)
    if route == "cholesky":  # its prior has a floor relative to each column's norm
        a = model.beta_ * (model.alpha_ + model.prior_floor_ * np.einsum("ij,ij->j", Xs, Xs))
    logev = gaussian_log_evidence(Xs, y, a, model.beta_)
    assert model.log_evidence_ == pytest.approx(logev, rel=1e-8, abs=1e-6)
    if route == "cholesky":  # the search's scores: one per factorisation, the answer the best
        scores = model.evidence_scores_
        assert len(factorised) == len(scores)  # the answer's solution is reused, not refactorised
        assert 3 <= len(scores) <= 12 and np.all(np.diff(scores[:, 0]) > 0)
        k = int(np.argmax(scores[:, 1]))
        assert scores[k, 0] == model.alpha_ and scores[k, 1] == model.log_evidence_
    else:
        assert model.evidence_scores_ is None


def test_cholesky_route_agrees_with_eigen_route(noisy_cho, cho_truth):
    eig = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="bayesian", design_limit=0).fit(noisy_cho)
    cho = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="bayesian", design_limit=0, eigen_limit=0).fit(noisy_cho)
    assert cho.alpha_ == pytest.approx(eig.alpha_, rel=0.3)
    assert cho.beta_ == pytest.approx(eig.beta_, rel=0.1)
    # noisy data: an interior evidence maximum on both routes, not the factorisation's edge
    assert eig.alpha_limited_ is False and cho.alpha_limited_ is False
    F_eig = eig.predict_forces(cho_truth.test)
    np.testing.assert_allclose(cho.predict_forces(cho_truth.test), F_eig, rtol=0, atol=0.05 * np.abs(F_eig).max())
    with pytest.raises(ValueError, match="regularization_path"):
        cho.regularization_path([1e-6])
    for solver in ("ridge", "gcv"):  # gcv has no Cholesky form: falls back to the eigen route
        a = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver=solver, alpha=1e-5, design_limit=0).fit(noisy_cho)
        b = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver=solver, alpha=1e-5, design_limit=0,
                         eigen_limit=0).fit(noisy_cho)
        assert b.alpha_ == a.alpha_
        np.testing.assert_allclose(b.coef_, a.coef_, rtol=0, atol=1e-6 * np.abs(a.coef_).max())


@pytest.mark.parametrize("n_blocks", [None, 3])
@pytest.mark.parametrize("solver", ["bayesian", "ard"])
@pytest.mark.parametrize("e0", ["auto", "dict"])
def test_single_use_system_gives_the_cached_fit(noisy_cho, monkeypatch, e0, solver, n_blocks):
    """A system too large to cache is solved in the storage of its force Gram matrix (grown
    in place by the E0 columns, or compacted without them): the same arithmetic, so the
    same coefficients to the last bit as a cached system, whose matrix is copied."""
    taken = []  # what each in-place attempt returned
    original = skace.fitting.square_in_place

    def recording(G, width):
        taken.append(original(G, width))
        return taken[-1]

    monkeypatch.setattr(skace.fitting, "square_in_place", recording)
    params = dict(descriptor=ACETransformer(**KW), e0="auto" if e0 == "auto" else dict(E0), solver=solver,
                  design_limit=0, eigen_limit=0, n_blocks=n_blocks)
    skace.fitting.SYSTEM_CACHE.clear()  # its key ignores n_blocks: a one-block system rounds differently
    cached = ACERegressor(**params).fit(noisy_cho)
    assert taken == []  # a cached system keeps its matrix
    single = ACERegressor(cache=False, **params).fit(noisy_cho)
    assert len(taken) == 1 and taken[0] is not None  # solved in place
    nf = single.n_features_
    assert taken[0].shape == ((nf + 3,) * 2 if e0 == "auto" else (nf, nf))
    np.testing.assert_array_equal(single.coef_, cached.coef_)
    assert single.e0_ == cached.e0_ and single.alpha_ == cached.alpha_


def test_single_use_gram_fit_holds_one_matrix(monkeypatch):
    """Peak traced memory of a Cholesky-route fit that does not cache its system: one
    (features + E0) square matrix and small blocks (1.37 of it here), not the force Gram
    matrix beside the solver's (2.37 before session 14)."""
    import functools
    import tracemalloc

    import skace.linalg

    # narrow BLAS blocks, so that their temporaries are small beside this small matrix
    monkeypatch.setattr(skace.fitting, "gram_update", functools.partial(skace.linalg.gram_update, block=256))
    monkeypatch.setattr(skace.fitting, "symmetrize_upper",
                        functools.partial(skace.linalg.symmetrize_upper, block=256))
    rng = np.random.default_rng(3)
    clusters = [random_cluster(rng, int(rng.integers(5, 9))) for _ in range(150)]
    data = Truth(clusters, clusters[:1], seed=4).train
    desc = ACETransformer(cutoff=4.0, correlation_order=3, max_degree=9, max_memory=1)
    model = ACERegressor(desc, cache=False, design_limit=0, eigen_limit=0)
    model.fit(data[:2])  # compile and build the basis outside the measurement
    width = model.n_features_ + 3
    assert not skace.fitting.clearly_underdetermined(3 * sum(len(a) for a in data) + len(data), width)
    tracemalloc.start()
    try:
        model.fit(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert model.spectrum_ is None  # the Cholesky route
    assert peak < 1.7 * 8 * width**2, (peak / (8 * width**2), width)


def noisy_clusters_and_descriptor():
    """Twelve random C/H/O clusters with noisy forces and a fitted descriptor with more
    features than 4/3 of their rows (an underdetermined fit)."""
    rng = np.random.default_rng(5)
    clusters = [random_cluster(rng, int(rng.integers(5, 9))) for _ in range(12)]
    data = Truth(clusters, clusters[:1], seed=6).train
    rng = np.random.default_rng(7)
    for a in data:
        a.arrays["forces"] = a.arrays["forces"] + rng.normal(scale=0.05, size=(len(a), 3))
    return data, ACETransformer(cutoff=4.0, correlation_order=3, max_degree=9).fit(data)


def test_underdetermined_fit_beyond_svd_memory_limit_takes_gram_route_with_holdout():
    """An underdetermined fit keeps its design for the SVD while the SVD's estimated memory
    (``svd_bytes``) is within ``svd_memory_limit``; one byte less moves it to the Gram route
    (where the dual form of its internal rows does not pay, as at this size), where alpha is
    chosen by held-out structures as ``solver="cv"`` does there (the same coefficients),
    rather than by a Gram evidence that runs off to no regularisation."""
    from skace.fitting import clearly_underdetermined, svd_bytes

    data, desc = noisy_clusters_and_descriptor()
    rows = sum(3 * len(a) + 1 for a in data)
    n = desc.n_features_out_
    assert clearly_underdetermined(rows, n)
    limit = int(svd_bytes(rows, n))
    kw = dict(design_limit=0, cache=False)
    design = ACERegressor(desc, svd_memory_limit=limit, **kw).fit(data)
    assert design.spectrum_ is not None and design.spectrum_.m == rows
    gram = ACERegressor(desc, svd_memory_limit=limit - 1, **kw).fit(data)
    assert gram.spectrum_ is None and gram.cv_scores_ is not None
    assert gram.alpha_ == gram.cv_scores_[np.argmin(gram.cv_scores_[:, 1]), 0]
    cv = ACERegressor(desc, solver="cv", svd_memory_limit=limit - 1, **kw).fit(data)
    np.testing.assert_array_equal(gram.coef_, cv.coef_)
    # a fixed alpha holds nothing out: every structure is in the fit
    ridge = ACERegressor(desc, solver="ridge", alpha=1e-3, svd_memory_limit=limit - 1, **kw).fit(data)
    ref = ACERegressor(desc, solver="ridge", alpha=1e-3, eigen_limit=0, design_limit=0,
                       svd_memory_limit=limit, cache=False).fit(data)
    np.testing.assert_allclose(ridge.coef_, ref.coef_, rtol=1e-6, atol=1e-9 * np.abs(ref.coef_).max())
    assert ACERegressor().svd_memory_limit == "auto"
    assert ACERegressor()._svd_memory_limit() == 3 * skace.fitting.physical_memory() // 4


def test_bayesian_fit_beyond_svd_memory_limit_takes_the_dual_form_of_its_internal_rows(monkeypatch):
    """Where the dual form pays, a "bayesian" fit whose SVD exceeds ``svd_memory_limit`` but
    whose internal rows' dual form (``skace.fitting.dual_bytes``) does not is solved there,
    every structure in the fit and alpha by the evidence (no held-out structures): within
    ``eigen_limit`` the same model as the dual form of the whole design. Below ``dual_bytes``
    too, the Gram route with held-out structures remains."""
    from skace.fitting import dual_bytes, svd_bytes
    from skace.structures import internal_dimension

    monkeypatch.setattr(skace.fitting, "KERNEL_MIN_WORK", 0)  # (the dual form pays at this size)
    data, desc = noisy_clusters_and_descriptor()
    rows = sum(3 * len(a) + 1 for a in data)
    n = desc.n_features_out_
    limit = int(svd_bytes(rows, n))
    kw = dict(design_limit=0, cache=False)
    whole = ACERegressor(desc, svd_memory_limit=limit, **kw).fit(data)
    inner = ACERegressor(desc, svd_memory_limit=limit - 1, **kw).fit(data)
    assert whole._posterior[0] == inner._posterior[0] == "kernel"
    assert inner.evidence_scores_ is not None and not inner.alpha_limited_
    assert inner.alpha_ == pytest.approx(whole.alpha_, rel=1e-6)
    np.testing.assert_allclose(inner.coef_, whole.coef_, rtol=0, atol=1e-6 * np.abs(whole.coef_).max())
    internal = len(data) + sum(internal_dimension(a) for a in data)
    gram = ACERegressor(desc, svd_memory_limit=int(dual_bytes(internal, n)) - 1, **kw).fit(data)
    assert gram._posterior[0] == "cholesky" and gram.cv_scores_ is not None


@pytest.mark.parametrize("which", ["cho", "periodic"])
def test_gram_route_force_rows_without_rigid_motions(cho_truth, periodic_truth, which):
    """The Gram route keeps only each structure's internal force rows (3 N - 6, or 3 N - 3
    when periodic): the force Gram matrix and ``X^T y`` equal the full design's, with
    per-structure weights, a linear molecule and a single atom among the structures."""
    from skace.fitting import assemble_block, internal_rows

    truth = cho_truth if which == "cho" else periodic_truth
    data = list(truth.train[:12])
    if which == "cho":
        line = Atoms("COH", positions=[[0, 0, 0], [1.2, 0, 0], [2.3, 0, 0]])
        single = Atoms("C", positions=[[0, 0, 0]])
        for atoms in (line, single):
            atoms.info["energy"] = 0.0
            atoms.arrays["forces"] = np.random.default_rng(0).normal(size=(len(atoms), 3))
        data += [line, single]
    d = truth.descriptor
    energies = np.array([a.info["energy"] for a in data])
    forces = np.concatenate([a.arrays["forces"] for a in data])
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(data))
    counts = np.zeros((len(data), len(d.elements_)))
    args = (d, data, energies, forces, weights, weights, counts)
    design = assemble_block(*args, use_design=True)
    gram = assemble_block(*args, use_design=False)
    nf = d.n_features_out_
    G = design.XF.T @ design.XF
    np.testing.assert_allclose(gram.GF[:nf, :nf], G, rtol=0, atol=1e-12 * np.abs(G).max())
    np.testing.assert_allclose(gram.bF, design.XF.T @ design.yF, rtol=1e-12, atol=1e-12)
    assert (gram.yyF, gram.mF) == (float(design.yF @ design.yF), len(design.yF))
    # random clusters and cells: 6 or 3 rigid motions; the linear molecule 5; the single atom 3
    expect = sum(3 * len(a) - (3 if which == "periodic" else 6) for a in truth.train[:12])
    expect += (3 * 3 - 5) + (3 - 3) if which == "cho" else 0
    assert internal_rows(design.XF, data).shape == (expect, nf)


def test_internal_components_memory_is_linear_in_atoms():
    """Dropping the rigid-motion rows of a large periodic cell forms no 3 N x 3 N basis: the
    traced peak stays within a few copies of the rows (an explicit basis for these 1372 atoms
    would take 135 MB against rows of 0.3 MB)."""
    import tracemalloc

    from ase.build import bulk

    from skace.structures import internal_components

    cell = bulk("Cu", cubic=True) * (7, 7, 7)
    rows = np.random.default_rng(0).normal(size=(3 * len(cell), 8))
    tracemalloc.start()
    try:
        small = internal_components(cell, rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert small.shape == (3 * len(cell) - 3, 8)
    along = rows.reshape(len(cell), 3, -1).sum(axis=0) / np.sqrt(len(cell))  # on the 3 translations
    np.testing.assert_allclose(small.T @ small, rows.T @ rows - along.T @ along, atol=1e-9)
    assert peak < 10 * rows.nbytes, peak


def test_single_use_design_fit_releases_force_rows():
    """A design-route (SVD) fit whose system is not cached drops the system's force rows
    once they are copied into the weighted design: same coefficients to the last bit as a
    cached fit, at a traced peak lower by about one force design (uracil at 500
    configurations peaked at 18.5 GiB before)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    clusters = [random_cluster(rng, int(rng.integers(5, 9))) for _ in range(12)]
    data = Truth(clusters, clusters[:1], seed=6).train
    desc = ACETransformer(cutoff=4.0, correlation_order=3, max_degree=9)
    ACERegressor(desc, cache=False).fit(data[:2])  # compile and build the basis outside the measurement
    peaks, models = [], []
    for cache in (True, False):
        skace.fitting.SYSTEM_CACHE.clear()
        skace.fitting.SPECTRUM_CACHE.clear()
        tracemalloc.start()
        try:
            models.append(ACERegressor(desc, cache=cache).fit(data))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    cached, single = models
    assert skace.fitting.keeps_design(sum(len(a) for a in data), len(data), single.n_features_, single.design_limit)
    force_rows = 8 * 3 * sum(len(a) for a in data) * single.n_features_
    assert peaks[1] < peaks[0] - 0.8 * force_rows, (peaks, force_rows)
    np.testing.assert_array_equal(single.coef_, cached.coef_)
    assert single.alpha_ == cached.alpha_


# ======================================================================
# solvers, uncertainty, regularisation path
# ======================================================================
@pytest.mark.parametrize("solver", ["bayesian", "gcv", "ridge", "ard"])
def test_solvers_fit(noisy_cho, cho_truth, solver):
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver=solver, alpha=1e-6).fit(noisy_cho)
    assert model.coef_.shape == (model.n_features_,)
    assert np.all(np.isfinite(model.coef_))
    assert np.isfinite(model.alpha_) and model.alpha_ >= 0
    if solver == "ridge":
        assert model.alpha_ == 1e-6
    # noise 0.05 eV/Å on forces: the fit must get close to it on the training set
    E, F = model.predict_energy_forces(noisy_cho)
    F_true = np.concatenate([a.arrays["forces"] for a in noisy_cho])
    assert np.sqrt(np.mean((F - F_true) ** 2)) < 0.1
    # and beat predicting zero on the noise-free test set of the same truth (30 structures for
    # 207 rough random coefficients do not allow much more)
    Et, Ft = model.predict_energy_forces(cho_truth.test)
    assert np.sqrt(np.mean((Ft - cho_truth.Ft) ** 2)) < 0.8 * np.sqrt(np.mean(cho_truth.Ft**2))


def test_ard_prunes_and_gives_std(noisy_cho):
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="ard").fit(noisy_cho)
    pruned = ~np.isfinite(model.ard_precision_)
    assert np.all(model.coef_[pruned] == 0)
    E, std = model.predict(noisy_cho[:4], return_std=True)
    assert np.all(np.isfinite(std)) and np.all(std > 0)


def far_structures(structures):
    """The same molecules squeezed to 80%: outside the training distribution."""
    out = []
    for a in structures:
        b = a.copy()
        b.positions = b.positions.mean(0) + 0.8 * (b.positions - b.positions.mean(0))
        out.append(b)
    return out


def test_return_std_bayesian(noisy_cho):
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="bayesian").fit(noisy_cho)
    E, std = model.predict(noisy_cho, return_std=True)
    assert E.shape == std.shape == (len(noisy_cho),)
    assert np.all(std > 0)
    _, std_far = model.predict(far_structures(noisy_cho), return_std=True)
    assert np.median(std_far) > 3 * np.median(std)


@pytest.mark.parametrize("solver", ["ridge", "gcv"])
def test_return_std_needs_bayesian(noisy_cho, solver):
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver=solver).fit(noisy_cho)
    with pytest.raises(ValueError, match="return_std"):
        model.predict(noisy_cho[:2], return_std=True)


def test_regularization_path(noisy_cho):
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="ridge", alpha=1e-4).fit(noisy_cho)
    alphas = np.logspace(-10, 2, 7)
    path = model.regularization_path(alphas)
    assert isinstance(path, pd.DataFrame)
    assert list(path.columns) == ["alpha", "rss", "dof", "gcv"]
    np.testing.assert_allclose(path["alpha"], alphas)
    assert np.all(np.diff(path["rss"]) >= -1e-12 * path["rss"].max())
    assert np.all(np.diff(path["dof"]) <= 1e-9)
    assert 0 < path["dof"].iloc[-1] < path["dof"].iloc[0] <= model.n_features_ + 1e-9
    # rss at the fitted alpha = the weighted training residual
    X, y = weighted_design(model, noisy_cho)
    at = model.regularization_path([1e-4])
    assert at["rss"].iloc[0] == pytest.approx(np.sum((X @ model.coef_ - y) ** 2), rel=1e-6)
    # rss, dof and gcv of two alphas against the explicit ridge solution and hat matrix
    for a in (1e-6, 1e-2):
        row = model.regularization_path([a]).iloc[0]
        Xs = X / model.scale_
        H = Xs.T @ Xs + a * np.eye(Xs.shape[1])
        d = np.linalg.solve(H, Xs.T @ y)
        rss = np.sum((Xs @ d - y) ** 2)
        dof = np.trace(np.linalg.solve(H, Xs.T @ Xs))
        m = len(y)
        assert row["rss"] == pytest.approx(rss, rel=1e-6)
        assert row["dof"] == pytest.approx(dof, rel=1e-8)
        assert row["gcv"] == pytest.approx(m * rss / (m - dof) ** 2, rel=1e-6)
    # solver="gcv" picks the minimiser of that score over its grid
    gcv = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="gcv").fit(noisy_cho)
    grid = gcv.spectrum_.lam[0] * np.logspace(-16, 0, 65)
    scores = gcv.regularization_path(grid)["gcv"].to_numpy()
    assert gcv.alpha_ == pytest.approx(grid[np.argmin(scores)], rel=1e-12)
    ard = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="ard").fit(noisy_cho)
    with pytest.raises(ValueError, match="regularization_path"):
        ard.regularization_path(alphas)


# ======================================================================
# energies, forces, stress, atomic energies of the fitted potential
# ======================================================================
@pytest.fixture(scope="module")
def mixed_model(cho_truth):
    """A model with non-trivial coefficients on H, C and O, fitted to molecules and cells."""
    rng = np.random.default_rng(21)
    cells = [random_cell(rng, int(rng.integers(4, 7)), pool=("H", "C", "O"), a=3.6) for _ in range(8)]
    for a in cells:
        a.info["energy"] = float(rng.normal(-2000, 5))
        a.arrays["forces"] = rng.normal(scale=0.5, size=(len(a), 3))
    return ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-3).fit(cho_truth.train[:20] + cells)


def numerical_forces(model, atoms, h=1e-4):
    F = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for a in range(3):
            e = []
            for s in (1, -1):
                b = atoms.copy()
                b.positions[i, a] += s * h
                e.append(model.predict([b])[0])
            F[i, a] = -(e[0] - e[1]) / (2 * h)
    return F


def numerical_stress(model, atoms, h=1e-5):
    W = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            e = []
            for s in (1, -1):
                eps = np.eye(3)
                eps[i, j] += s * h
                b = atoms.copy()
                b.set_cell(atoms.cell.array @ eps.T, scale_atoms=False)
                b.positions = atoms.positions @ eps.T
                e.append(model.predict([b])[0])
            W[i, j] = (e[0] - e[1]) / (2 * h)
    W /= atoms.get_volume()
    return np.array([W[0, 0], W[1, 1], W[2, 2], W[1, 2], W[0, 2], W[0, 1]]), W


def molecule_and_cell():
    rng = np.random.default_rng(31)
    mol = random_cluster(rng, 8)
    cell = random_cell(rng, 6, pool=("H", "C", "O"), a=3.6)
    return mol, cell


@pytest.mark.parametrize("which", [0, 1], ids=["molecule", "periodic"])
def test_forces_are_minus_energy_gradient(mixed_model, which):
    atoms = molecule_and_cell()[which]
    F = mixed_model.predict_forces([atoms])
    F_num = numerical_forces(mixed_model, atoms)
    assert np.abs(F).max() > 0.1  # not trivially zero
    np.testing.assert_allclose(F, F_num, rtol=0, atol=1e-6 * max(1.0, np.abs(F).max()))
    # a rigid translation changes nothing; the forces of an isolated system sum to zero
    np.testing.assert_allclose(F.sum(axis=0), 0, atol=1e-9 * np.abs(F).max())


def test_stress_is_strain_derivative(mixed_model):
    cell = molecule_and_cell()[1]
    stress = mixed_model.predict_stress([cell])
    assert stress.shape == (1, 6)
    voigt, W = numerical_stress(mixed_model, cell)
    np.testing.assert_allclose(W, W.T, atol=1e-6 * np.abs(W).max())  # rotation invariance
    np.testing.assert_allclose(stress[0], voigt, rtol=0, atol=1e-6 * max(np.abs(voigt).max(), 1e-3))


def test_stress_needs_cell_volume(mixed_model):
    """Stress = virial / volume: any cell of non-zero volume (mixed periodicity included)."""
    mol, cell = molecule_and_cell()
    with pytest.raises(ValueError, match="volume"):
        mixed_model.predict_stress([cell, mol])
    slab = cell.copy()
    slab.pbc = [True, True, False]
    voigt, _ = numerical_stress(mixed_model, slab)
    np.testing.assert_allclose(mixed_model.predict_stress([slab])[0], voigt, rtol=0,
                               atol=1e-6 * max(np.abs(voigt).max(), 1e-3))


def atomic_energies_from_features(model, X):
    """``E0[Z_i] + c . B_i`` of every atom of ``X``, from per-atom features (the slow route)."""
    d = model.descriptor_
    per_atom = clone(d).set_params(per_atom=True).fit(X)
    assert per_atom.elements_ == d.elements_
    e0 = np.array([model.e0_[el] for el in d.elements_])
    species = np.array([d.elements_.index(s) for a in X for s in a.get_chemical_symbols()])
    return per_atom.transform(X) @ model.coef_ + e0[species]


def test_energy_forces_and_atomic_energies_consistent(mixed_model, cho_truth):
    X = list(molecule_and_cell()) + cho_truth.test[:3]
    E = mixed_model.predict(X)
    F = mixed_model.predict_forces(X)
    E2, F2 = mixed_model.predict_energy_forces(X)
    np.testing.assert_allclose(E2, E, rtol=1e-14)
    np.testing.assert_allclose(F2, F, rtol=0, atol=1e-12 * np.abs(F).max())
    ea = mixed_model.predict_atomic_energies(X)
    assert ea.shape == (sum(len(a) for a in X),)
    bounds = np.cumsum([0] + [len(a) for a in X])
    np.testing.assert_allclose([ea[i:j].sum() for i, j in zip(bounds[:-1], bounds[1:])], E, rtol=1e-13)
    np.testing.assert_allclose(ea, atomic_energies_from_features(mixed_model, X), rtol=1e-12)


def test_energy_lanes_match_the_features(mixed_model, cho_truth):
    """Atoms are evaluated in lanes of up to ENERGY_LANES atoms of one element, gathered
    across structures: with full and part-filled lanes, every atom's energy is E0 + c . B_i
    and the forces are minus c . dB/dr, whatever the order of the structures."""
    from skace.kernels.ace import ENERGY_LANES

    X = cho_truth.test + list(molecule_and_cell())
    d = mixed_model.descriptor_
    symbols = [s for a in X for s in a.get_chemical_symbols()]
    counts = [symbols.count(e) for e in d.elements_]
    assert max(counts) > 2 * ENERGY_LANES and any(c % ENERGY_LANES for c in counts)
    np.testing.assert_allclose(mixed_model.predict_atomic_energies(X), atomic_energies_from_features(mixed_model, X),
                               rtol=1e-12)
    F = -(d.transform_gradient(X) @ mixed_model.coef_)
    np.testing.assert_allclose(mixed_model.predict_forces(X), F, rtol=0, atol=1e-11 * np.abs(F).max())
    backwards = mixed_model.predict_forces(X[::-1])
    bounds = np.cumsum([0] + [len(a) for a in X[::-1]])
    np.testing.assert_allclose(np.concatenate([backwards[i:j] for i, j in zip(bounds[-2::-1], bounds[:0:-1])]),
                               F, rtol=0, atol=1e-11 * np.abs(F).max())


def test_energy_work_arrays_are_reused_per_thread_and_not_saved(mixed_model, cho_truth):
    """The energy kernel's work arrays stay with the model between calls (MD), are remade when
    the thread count changes, and are neither pickled nor shared between Python threads."""
    import pickle
    import threading

    X = cho_truth.test[:2]
    E = mixed_model.predict(X)
    work = mixed_model._lane_work()
    assert mixed_model._lane_work() is work
    assert "_lane_work_cache" not in pickle.loads(pickle.dumps(mixed_model)).__dict__
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(mixed_model)).predict(X), E)
    other = {}
    thread = threading.Thread(target=lambda: other.setdefault("work", mixed_model._lane_work()))
    thread.start()
    thread.join()
    assert other["work"] is not work
    mixed_model.set_params(n_jobs=1)
    try:
        np.testing.assert_allclose(mixed_model.predict(X), E, rtol=1e-13)
    finally:
        mixed_model.set_params(n_jobs=None)


def test_each_element_evaluates_only_the_products_it_needs(cho_truth):
    """A hydrogen centre with a smaller basis (``center_max_degree``) reads a strict subset
    of the product tree; energies and forces from the pruned tree equal c . B_i and
    minus the energy gradient, and models saved before the product lists existed
    (``folded_`` of four arrays) predict the same."""
    X = cho_truth.train[:20]
    desc = ACETransformer(cutoff=4.0, correlation_order=3, max_degree=6, center_max_degree={"H": 3})
    model = ACERegressor(desc, solver="ridge", alpha=1e-3).fit(X)
    d = model.descriptor_
    node_indptr, nodes = model.folded_[4:]
    n_tree = len(d.compiled_.tree_parent)
    per_element = {el: nodes[node_indptr[e]:node_indptr[e + 1]] for e, el in enumerate(d.elements_)}
    assert len(per_element["H"]) < len(per_element["C"]) <= n_tree
    assert set(per_element["H"]) < set(range(n_tree))
    mol, cell = molecule_and_cell()
    ea = model.predict_atomic_energies([mol, cell])
    per_atom = clone(d).set_params(per_atom=True).fit([mol, cell])
    e0 = np.array([model.e0_[el] for el in d.elements_])
    species = np.array([d.elements_.index(s) for a in (mol, cell) for s in a.get_chemical_symbols()])
    np.testing.assert_allclose(ea, per_atom.transform([mol, cell]) @ model.coef_ + e0[species], rtol=1e-12)
    F = model.predict_forces([mol])
    np.testing.assert_allclose(F, numerical_forces(model, mol), rtol=0, atol=1e-6 * np.abs(F).max())
    old = pickle.loads(pickle.dumps(model))
    old.folded_ = old.folded_[:4]
    E2, F2 = old.predict_energy_forces([mol, cell])
    E1, F1 = model.predict_energy_forces([mol, cell])
    np.testing.assert_array_equal(E2, E1)
    np.testing.assert_array_equal(F2, F1)


def test_supercell_consistency(mixed_model):
    cell = molecule_and_cell()[1]
    big = cell.repeat((2, 2, 2))
    E, F = mixed_model.predict_energy_forces([cell])
    Eb, Fb = mixed_model.predict_energy_forces([big])
    assert Eb[0] == pytest.approx(8 * E[0], rel=1e-12)
    np.testing.assert_allclose(Fb, np.tile(F, (8, 1)), rtol=0, atol=1e-10 * np.abs(F).max())
    np.testing.assert_allclose(mixed_model.predict_stress([big]), mixed_model.predict_stress([cell]),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mixed_model.predict_atomic_energies([big]),
                               np.tile(mixed_model.predict_atomic_energies([cell]), 8), rtol=1e-12)
    # stress of a batch of cells = stress of each alone
    other = random_cell(np.random.default_rng(3), 5, pool=("H", "C", "O"), a=3.6)
    batch = mixed_model.predict_stress([cell, big, other])
    for k, atoms in enumerate([cell, big, other]):
        np.testing.assert_allclose(batch[k], mixed_model.predict_stress([atoms])[0], rtol=1e-12, atol=1e-15)


def test_batch_order_and_large_molecule(mixed_model, cho_truth):
    """A batch mixing cells, small molecules and a > 256-atom molecule (another neighbour
    search) gives each structure what it gets alone; the large molecule is made of
    well-separated copies of small ones, so its energy is their sum."""
    rng = np.random.default_rng(41)
    pieces = [random_cluster(rng, 8) for _ in range(36)]
    grid = np.array([(i, j, k) for i in range(4) for j in range(3) for k in range(3)], float) * 8.0
    large = Atoms()
    for p, g in zip(pieces, grid):
        q = p.copy()
        q.positions += g
        large += q
    assert len(large) > 256
    mol, cell = molecule_and_cell()
    X = [cell, mol, large, cho_truth.test[0], cell.repeat((2, 1, 1))]
    E, F = mixed_model.predict_energy_forces(X)
    ea = mixed_model.predict_atomic_energies(X)
    a0 = 0
    for k, atoms in enumerate(X):
        e1, f1 = mixed_model.predict_energy_forces([atoms])
        assert E[k] == pytest.approx(e1[0], rel=1e-13)
        np.testing.assert_allclose(F[a0:a0 + len(atoms)], f1, rtol=0, atol=1e-12 * max(1, np.abs(f1).max()))
        np.testing.assert_allclose(ea[a0:a0 + len(atoms)], mixed_model.predict_atomic_energies([atoms]),
                                   rtol=1e-13)
        a0 += len(atoms)
    Ep, Fp = mixed_model.predict_energy_forces(pieces)
    assert E[2] == pytest.approx(Ep.sum(), rel=1e-12)
    np.testing.assert_allclose(F[len(cell) + len(mol):len(cell) + len(mol) + len(large)], Fp,
                               rtol=0, atol=1e-10 * np.abs(Fp).max())


def test_isolated_atoms_have_reference_energy(mixed_model):
    X = [Atoms("H"), Atoms("O"), Atoms("CH", positions=[[0, 0, 0], [0, 0, 5.0]])]
    E, F = mixed_model.predict_energy_forces(X)
    e0 = mixed_model.e0_
    np.testing.assert_allclose(E, [e0["H"], e0["O"], e0["C"] + e0["H"]], rtol=1e-14)
    assert np.all(F == 0)


# ======================================================================
# scikit-learn interface
# ======================================================================
@pytest.fixture(scope="module")
def ethanol():
    return load_sample(n=24), load_sample("test", n=12)


def energies_of(X):
    return np.array([a.info["energy"] for a in X])


def test_pipeline_with_sklearn_ridge(ethanol):
    train, test = ethanol
    y = energies_of(train)
    pipe = make_pipeline(ACETransformer(**KW), Ridge(alpha=1e-8)).fit(train, y)
    pred = pipe.predict(test)
    assert pred.shape == (len(test),)
    B = ACETransformer(**KW).fit(train).transform(train)
    manual = Ridge(alpha=1e-8).fit(B, y)
    np.testing.assert_allclose(pred, manual.predict(ACETransformer(**KW).fit(train).transform(test)), rtol=1e-10)
    assert pipe.score(train, y) > 0.9


def test_grid_search_with_scorers(ethanol):
    train, _ = ethanol
    search = GridSearchCV(
        ACERegressor(ACETransformer(**KW), solver="ridge"),
        {"alpha": [1e-8, 1e-3], "descriptor__max_degree": [4, 5]},
        scoring=SCORERS, refit="force_mae", cv=2, n_jobs=2,
    ).fit(train[:16])
    res = search.cv_results_
    for name in SCORERS:
        scores = res[f"mean_test_{name}"]
        assert scores.shape == (4,) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    assert search.best_index_ == int(np.argmax(res["mean_test_force_mae"]))
    best = search.best_estimator_
    assert best.descriptor_.max_degree == search.best_params_["descriptor__max_degree"]
    assert best.alpha_ == search.best_params_["alpha"]
    assert np.all(np.isfinite(search.predict(train[:3])))


def test_params_clone_set_params():
    desc = ACETransformer(**KW)
    model = ACERegressor(desc, solver="ridge", alpha=1e-5)
    params = model.get_params()
    assert params["descriptor__max_degree"] == KW["max_degree"] and params["alpha"] == 1e-5
    model.set_params(descriptor__max_degree=4, alpha=1e-3)
    assert model.descriptor.max_degree == 4 and model.alpha == 1e-3
    c = clone(model)
    assert c.descriptor is not model.descriptor
    assert c.get_params()["descriptor__max_degree"] == 4
    assert not hasattr(c, "coef_")
    with pytest.raises(NotFittedError):
        c.predict([Atoms("H")])


def test_invalid_params_rejected(ethanol):
    train, _ = ethanol
    for bad in (dict(solver="lasso"), dict(alpha=-1.0), dict(prior="gaussian"), dict(energy_weight_scaling="n"),
                dict(e0="mean")):
        with pytest.raises(ValueError):
            ACERegressor(ACETransformer(**KW), **bad).fit(train[:4])


def test_pickle_and_joblib_round_trip(ethanol, tmp_path):
    train, test = ethanol
    model = ACERegressor(ACETransformer(**KW), solver="bayesian").fit(train)
    E, std = model.predict(test, return_std=True)
    F = model.predict_forces(test)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    for other in (pickle.loads(pickle.dumps(model)), joblib.load(path)):
        E2, std2 = other.predict(test, return_std=True)
        assert np.array_equal(E2, E) and np.array_equal(std2, std)
        assert np.array_equal(other.predict_forces(test), F)
        assert other.get_params()["descriptor__cutoff"] == KW["cutoff"]


def test_fit_with_y_is_energy_only(ethanol):
    train, test = ethanol
    y = energies_of(train)
    bare = [Atoms(a.numbers, a.positions) for a in train]  # no stored targets at all
    m1 = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-9).fit(bare, y)
    m2 = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-9, force_weight=0.0).fit(train)
    m3 = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-9).fit(train)
    np.testing.assert_allclose(m1.coef_, m2.coef_, rtol=1e-9, atol=1e-12 * np.abs(m2.coef_).max())
    assert not np.allclose(m1.coef_, m3.coef_)
    assert m1.score(bare, y) > 0.99
    with pytest.raises(ValueError, match="energies"):
        ACERegressor(ACETransformer(**KW)).fit(bare, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        ACERegressor(ACETransformer(**KW)).fit(bare, np.where(np.arange(len(y)) == 2, np.nan, y))


def test_weights_change_the_fit(noisy_cho):
    X = [a.copy() for a in noisy_cho]
    base = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-4, e0=dict(E0)).fit(X)
    X[0].info["weight"] = 5.0
    heavy = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-4, e0=dict(E0)).fit(X)
    assert not np.allclose(base.coef_, heavy.coef_)
    # the up-weighted structure is fitted better
    err = lambda m: np.abs(m.predict_forces([X[0]]) - X[0].arrays["forces"]).mean()  # noqa: E731
    assert err(heavy) < err(base)
    X[0].info["weight"] = -1.0
    with pytest.raises(ValueError, match="weight"):
        ACERegressor(ACETransformer(**KW), e0=dict(E0)).fit(X)


@pytest.mark.parametrize("e0", ["dict", "auto"])
def test_zero_weight_equals_fit_without_structure(noisy_cho, e0):
    X = [a.copy() for a in noisy_cho]
    # make the dropped structures outliers, so that including them would show
    for k in (0, 5):
        X[k].info["weight"] = 0.0
        X[k].info["energy"] += 50.0
        X[k].arrays["forces"] = X[k].arrays["forces"] + 5.0
    keep = [a for k, a in enumerate(X) if k not in (0, 5)]
    e0v = dict(E0) if e0 == "dict" else "auto"
    kw = dict(solver="ridge", alpha=1e-5, e0=e0v)
    with_zero = ACERegressor(ACETransformer(**KW), **kw).fit(X)
    subset = ACERegressor(ACETransformer(**KW), **kw).fit(keep)
    for el in subset.e0_:
        assert with_zero.e0_[el] == pytest.approx(subset.e0_[el], abs=1e-9)
    np.testing.assert_allclose(with_zero.predict(keep), subset.predict(keep), rtol=0, atol=1e-7)
    np.testing.assert_allclose(with_zero.coef_, subset.coef_, rtol=0, atol=1e-6 * np.abs(subset.coef_).max())


# ======================================================================
# the assembly cache
# ======================================================================
@pytest.fixture
def count_assembly(monkeypatch):
    calls = []
    original = skace.regressor.assemble

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(skace.regressor, "assemble", counting)
    monkeypatch.setattr(skace.fitting, "assemble", counting)
    skace.fitting.SYSTEM_CACHE.clear()
    skace.fitting.SPECTRUM_CACHE.clear()
    return calls


def test_cache_reused_when_only_regression_params_change(ethanol, count_assembly):
    train, _ = ethanol
    X = train[:16]
    # (call counts, not timings: timings are flaky on a shared 2-core machine)
    m1 = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-6).fit(X)
    assert len(count_assembly) == 1
    m2 = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-3).fit(X)
    assert len(count_assembly) == 1, "a fit that changes only alpha re-assembled the system"
    for kw in (dict(energy_weight=3.0), dict(force_weight=2.0), dict(prior="none"), dict(solver="bayesian"),
               dict(e0=dict(E0)), dict(solver="gcv")):
        ACERegressor(ACETransformer(**KW), **kw).fit(X)
    assert len(count_assembly) == 1
    # the cached system gives the same answer as a fresh assembly
    m3 = ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-3, cache=False).fit(X)
    assert len(count_assembly) == 2
    np.testing.assert_allclose(m3.coef_, m2.coef_, rtol=1e-10, atol=1e-12 * np.abs(m2.coef_).max())
    assert not np.allclose(m1.coef_, m2.coef_)
    ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-2, cache=False).fit(X)
    assert len(count_assembly) == 3


def test_cache_invalidated_by_data_and_descriptor_changes(ethanol, count_assembly):
    train, _ = ethanol
    X = [a.copy() for a in train[:12]]
    kw = dict(solver="ridge", alpha=1e-6)
    ref = ACERegressor(ACETransformer(**KW), **kw).fit(X)
    n = len(count_assembly)
    ACERegressor(ACETransformer(**dict(KW, max_degree=4)), **kw).fit(X)
    assert len(count_assembly) == n + 1
    # in-place edits of targets, positions and weights must not reuse a stale system
    X[3].info["energy"] += 1.0
    m = ACERegressor(ACETransformer(**KW), **kw).fit(X)
    assert len(count_assembly) == n + 2
    assert not np.allclose(m.coef_, ref.coef_)
    X[3].arrays["forces"][0, 0] += 1.0
    ACERegressor(ACETransformer(**KW), **kw).fit(X)
    assert len(count_assembly) == n + 3
    X[4].positions[0, 0] += 0.01
    ACERegressor(ACETransformer(**KW), **kw).fit(X)
    assert len(count_assembly) == n + 4
    X[5].info["weight"] = 2.0
    ACERegressor(ACETransformer(**KW), **kw).fit(X)
    assert len(count_assembly) == n + 5
    y = energies_of(X)
    ACERegressor(ACETransformer(**KW), **kw).fit(X, y)
    ACERegressor(ACETransformer(**KW), **kw).fit(X, y + 1.0)
    assert len(count_assembly) == n + 7


# ======================================================================
# bad input
# ======================================================================
def _bad(kind):
    X = [a.copy() for a in load_sample(n=4)]
    for a, b in zip(X, load_sample(n=4)):
        a.info["energy"] = b.info["energy"]
    if kind == "missing energy":
        del X[2].info["energy"]
        return X, r"missing energy.*X\[2\]"
    if kind == "missing forces":
        del X[1].arrays["forces"]
        return X, r"missing forces.*X\[1\]"
    if kind == "forces shape":
        X[3].arrays["forces"] = np.zeros((len(X[3]), 2))
        return X, r"forces of X\[3\] have shape"
    if kind == "nan forces":
        X[0].arrays["forces"][4, 1] = np.nan
        return X, r"forces of X\[0\].*NaN"
    if kind == "nan energy":
        X[0].info["energy"] = np.nan
        return X, r"energy of X\[0\].*NaN"
    if kind == "text energy":
        X[0].info["energy"] = "abc"
        return X, r"energy of X\[0\] is not a number"
    if kind == "nan positions":
        X[2].positions[1, 0] = np.nan
        return X, r"X\[2\].*NaN.*positions"
    if kind == "empty":
        return [], "empty"
    if kind == "overlap":
        X[1].positions[1] = X[1].positions[0]
        return X, r"overlapping atoms in X\[1\]"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing energy", "missing forces", "forces shape", "nan forces",
                                  "nan energy", "text energy", "nan positions", "empty", "overlap"])
def test_bad_training_input(kind):
    X, message = _bad(kind)
    with pytest.raises(ValueError, match=message):
        ACERegressor(ACETransformer(**KW), cache=False).fit(X)


def test_per_atom_descriptor_rejected(ethanol):
    train, _ = ethanol
    with pytest.raises(ValueError, match="per_atom"):
        ACERegressor(ACETransformer(**KW, per_atom=True), cache=False).fit(train[:3])


def test_not_atoms_is_type_error():
    with pytest.raises(TypeError, match="ase.Atoms"):
        ACERegressor(ACETransformer(**KW)).fit([np.zeros((3, 3))])


def test_unknown_element_at_predict_time(mixed_model):
    mol = molecule_and_cell()[0]
    mol[0].symbol = "N"
    for method in (mixed_model.predict, mixed_model.predict_forces, mixed_model.predict_atomic_energies,
                   mixed_model.predict_energy_forces):
        with pytest.raises(ValueError, match=r"unknown element 'N'"):
            method([molecule_and_cell()[1], mol])


def test_predict_empty_and_nan(mixed_model):
    with pytest.raises(ValueError, match="empty"):
        mixed_model.predict([])
    mol = molecule_and_cell()[0]
    mol.positions[0, 0] = np.inf
    with pytest.raises(ValueError, match="positions"):
        mixed_model.predict_forces([mol])


def test_e0_dict_missing_element(ethanol):
    train, _ = ethanol
    with pytest.raises(ValueError, match=r"e0.*'O'"):
        ACERegressor(ACETransformer(**KW), e0={"H": -13.6, "C": -1030.0}).fit(train[:4])


def test_underdetermined_fit_uses_design_and_interior_evidence(ethanol):
    """Fewer rows than features: the Gram route would see only rounding noise in its null space
    and let the evidence run to zero regularisation; the design route must be taken."""
    few = ethanol[0][:3]
    rows = len(few) + 3 * sum(len(a) for a in few)
    model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=3, max_degree=8),
                         design_limit=0, eigen_limit=10).fit(few)
    assert 4 * rows <= 3 * model.n_features_
    spec = model.spectrum_
    assert spec is not None and spec.m == rows
    a, beta = model.alpha_ * model.beta_, model.beta_
    best = spec.log_evidence(a, beta)
    for f in (0.1, 10.0):
        assert spec.log_evidence(a * f, beta) < best


@pytest.mark.parametrize("route", ["design", "cholesky"])
def test_large_posterior_is_not_pickled(noisy_cho, monkeypatch, route):
    """Model files stay small: a posterior above POSTERIOR_SAVE_BYTES is dropped on pickling,
    predictions are unchanged, and return_std then says why it cannot answer. The Cholesky
    route factorises its posterior on first use (or on saving): a model saved before any
    return_std answers as the fitted one does."""
    import skace.regressor as reg

    model = ACERegressor(ACETransformer(**KW), solver="bayesian", **ROUTES[route]).fit(noisy_cho)
    early = pickle.dumps(model)
    E, std = model.predict(noisy_cho[:3], return_std=True)
    full_blob = pickle.dumps(model)
    for blob in (early, full_blob):
        np.testing.assert_allclose(pickle.loads(blob).predict(noisy_cho[:3], return_std=True)[1], std,
                                   rtol=1e-12)
    monkeypatch.setattr(reg, "POSTERIOR_SAVE_BYTES", 0)
    blob = pickle.dumps(model)
    assert len(blob) < len(full_blob) - model._posterior[2].nbytes // 2
    loaded = pickle.loads(blob)
    np.testing.assert_array_equal(loaded.predict(noisy_cho[:3]), E)
    with pytest.raises(ValueError, match="not saved"):
        loaded.predict(noisy_cho[:3], return_std=True)
    with pytest.raises(ValueError, match="not saved"):  # and so does a copy saved again
        pickle.loads(pickle.dumps(loaded)).predict(noisy_cho[:3], return_std=True)
    np.testing.assert_array_equal(model.predict(noisy_cho[:3], return_std=True)[1], std)  # the fitted object keeps it
    if route == "design":  # the limit counts the whole posterior: the factor and the singular vectors beside it
        factor, (V, _) = model._posterior[2], model._posterior[3]
        assert reg.posterior_bytes(model._posterior) >= factor.nbytes + V.nbytes
        monkeypatch.setattr(reg, "POSTERIOR_SAVE_BYTES", factor.nbytes + V.nbytes // 2)
        assert pickle.loads(pickle.dumps(model))._posterior[0] == "dropped"


@pytest.mark.parametrize("budget", [None, 28200, 55000])
@pytest.mark.parametrize("elements", [["C", "H"], ["C", "H", "O"], ["C", "H", "N", "O"]])
def test_default_degrees_take_the_largest_rung_within_budget(elements, budget):
    from skace.maths.basis import ACEBasis
    from skace.regressor import (DEFAULT_DEGREES, DEFAULT_DESCRIPTOR, DEFAULT_MAX_FEATURES, FEW_DATA_MAX_FEATURES,
                                 default_degrees)

    budget = budget or DEFAULT_MAX_FEATURES

    def basis(degrees, centers):  # built here, independently of the ladder's own helpers
        center = {el: list(d) for el, d in (centers or {}).items() if el in elements} or None
        return ACEBasis(elements, DEFAULT_DESCRIPTOR["correlation_order"], list(degrees),
                        DEFAULT_DESCRIPTOR["l_weight"], None, center_max_degree=center)

    chosen = default_degrees(elements, budget)
    chosen_basis = basis(chosen["max_degree"], chosen["center_max_degree"])
    assert chosen_basis.n_features <= budget
    # the rung below the first one beyond the budget (per-centre rungs may be smaller than
    # the uniform rung before them, so the ladder is climbed, not searched)
    sizes = [basis(*rung).n_features for rung in DEFAULT_DEGREES]
    k = next((i for i, n in enumerate(sizes) if n > budget), len(sizes)) - 1
    assert chosen_basis.n_features == sizes[k]
    assert chosen["max_degree"] == list(DEFAULT_DEGREES[k][0])
    if chosen["center_max_degree"]:  # the named centres really get fewer functions than carbon
        per_center = chosen_basis.features_per_center()
        assert all(per_center[el] < per_center["C"] for el in chosen["center_max_degree"])
    if elements == ["C", "H", "O"]:  # the default carbon five-body rung, and the one below
        assert (chosen_basis.n_features, chosen["max_degree"]) == {
            DEFAULT_MAX_FEATURES: (37062, [16, 8, 7, 7.5]), 28200: (28152, [16, 8, 7, 7]),
            FEW_DATA_MAX_FEATURES: (54009, [16, 8, 7, 8])}[budget]


def row_structures(structures):
    """The structure each row of :func:`weighted_design` belongs to."""
    index = np.arange(len(structures))
    return np.concatenate([index, np.repeat(index, [3 * len(a) for a in structures])])


def test_cv_solver_gram_route_holds_out_structures_then_fits_all(noisy_cho):
    """``solver="cv"`` on the Gram route: alpha minimises the weighted squared error of the
    held-out structures (``validation_fraction`` of them, kept out of the Gram matrix while
    alpha is searched; checked by dense algebra on the rows of the others), and the model
    is then the floored ridge fit of all structures at that alpha."""
    from skace.fitting import holdout_indices

    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="cv", design_limit=0,
                         eigen_limit=0).fit(noisy_cho)
    scores = model.cv_scores_
    assert model.alpha_ == scores[np.argmin(scores[:, 1]), 0]
    X, y = weighted_design(model, noisy_cho)
    X = X / model.scale_
    held = holdout_indices(len(noisy_cho), 0.1)
    assert len(held) == 3
    structure = row_structures(noisy_cho)
    out = np.isin(structure, held)
    Gk, bk = X[~out].T @ X[~out], X[~out].T @ y[~out]
    lam = model.alpha_
    d = np.linalg.solve(Gk + np.diag(lam + GRAM_JITTER * np.diag(Gk)), bk)
    r = X[out] @ d - y[out]
    assert float(r @ r) / out.sum() == pytest.approx(scores[np.argmin(scores[:, 1]), 1], rel=1e-6)
    G = X.T @ X
    d = np.linalg.solve(G + np.diag(lam + GRAM_JITTER * np.diag(G)), X.T @ y)
    np.testing.assert_allclose(model.coef_, d / model.scale_, rtol=1e-6, atol=1e-9 * np.abs(d).max())
    E, std = model.predict(noisy_cho[:3], return_std=True)
    assert np.all(np.isfinite(std)) and np.all(std > 0)


def test_cv_solver_design_route_takes_the_leave_one_structure_out_minimum(noisy_cho):
    """``solver="cv"`` on the design route: alpha at the minimum of the exact
    leave-one-structure-out curve; the coefficients are the ridge fit at that alpha."""
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="cv", design_limit=BIG).fit(noisy_cho)
    scores = model.cv_scores_
    assert model.alpha_ == pytest.approx(scores[np.argmin(scores[:, 1]), 0], rel=1e-12)
    ridge = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="ridge", alpha=model.alpha_,
                         design_limit=BIG).fit(noisy_cho)
    np.testing.assert_allclose(model.coef_, ridge.coef_, rtol=1e-10, atol=1e-14)
    # one structure's error when it is left out, at that alpha, by refitting without it
    X, y = weighted_design(model, noisy_cho)
    X = X / model.scale_
    structure = row_structures(noisy_cho)
    total = 0.0
    for k in range(len(noisy_cho)):
        out = structure == k
        d = np.linalg.solve(X[~out].T @ X[~out] + model.alpha_ * np.eye(X.shape[1]), X[~out].T @ y[~out])
        r = X[out] @ d - y[out]
        total += r @ r
    assert total / len(y) == pytest.approx(scores[np.argmin(scores[:, 1]), 1], rel=1e-6)


def test_cv_solver_energy_only_leaves_one_structure_out(noisy_cho):
    """``solver="cv"`` without force rows (``force_weight=0``): each energy row is its own
    structure, and alpha is the leave-one-out minimum (this once fell back to the evidence
    silently, with no ``cv_scores_``)."""
    model = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="cv", force_weight=0.0,
                         design_limit=BIG).fit(noisy_cho)
    scores = model.cv_scores_
    assert scores is not None
    assert model.alpha_ == pytest.approx(scores[np.argmin(scores[:, 1]), 0], rel=1e-12)
    X, y = weighted_design(model, noisy_cho)
    X, y = X[:len(noisy_cho)] / model.scale_, y[:len(noisy_cho)]  # the energy rows
    total = 0.0
    for k in range(len(noisy_cho)):
        keep = np.arange(len(y)) != k
        d = np.linalg.solve(X[keep].T @ X[keep] + model.alpha_ * np.eye(X.shape[1]), X[keep].T @ y[keep])
        total += (X[k] @ d - y[k]) ** 2
    assert total / len(y) == pytest.approx(scores[np.argmin(scores[:, 1]), 1], rel=1e-6)
    # one structure: nothing to leave out (no curve; the evidence decides, and says so)
    with pytest.warns(UserWarning, match="not available with one structure"):
        one = ACERegressor(ACETransformer(**KW), e0=dict(E0), solver="cv", force_weight=0.0,
                           design_limit=BIG).fit(noisy_cho[:1])
    assert one.cv_scores_ is None and one.spectrum_.cv is None


def test_dual_route_fits_the_design_routes_model(noisy_cho, cho_truth, monkeypatch):
    """Wide designs above KERNEL_MIN_WORK are solved in dual form (Cholesky factorisations of
    X X^T instead of the SVD): the same Bayesian model, so the explicit posterior mean, the
    log evidence and the predictive std hold at the alpha it chose, it predicts as the SVD
    route does, and its posterior pickles (or is dropped when large) like the others."""
    import skace.regressor as reg

    train = noisy_cho[:10]
    desc = ACETransformer(cutoff=4.0, correlation_order=3, max_degree=6)
    svd = ACERegressor(desc, e0=dict(E0), design_limit=BIG).fit(train)
    monkeypatch.setattr(skace.fitting, "KERNEL_MIN_WORK", 0)
    model = ACERegressor(desc, e0=dict(E0), design_limit=BIG).fit(train)
    assert model._posterior[0] == "kernel" and svd._posterior[0] == "bayesian"
    X, y = weighted_design(model, train)
    Xs = X / model.scale_
    assert Xs.shape[0] < Xs.shape[1]
    beta = model.beta_
    a = model.alpha_ * beta
    H = a * np.eye(Xs.shape[1]) + beta * Xs.T @ Xs
    d = beta * np.linalg.solve(H, Xs.T @ y)
    np.testing.assert_allclose(model.coef_ * model.scale_, d, rtol=0, atol=1e-6 * np.abs(d).max())
    assert model.log_evidence_ == pytest.approx(gaussian_log_evidence(Xs, y, a, beta), rel=1e-8)
    Xq = cho_truth.test
    x = model.descriptor_.transform(Xq) / model.scale_
    var = np.einsum("ij,ij->i", x, np.linalg.solve(H, x.T).T)
    noise = np.array([len(s) for s in Xq]) / (beta * 30.0**2)
    E, std = model.predict(Xq, return_std=True)
    np.testing.assert_allclose(std, np.sqrt(var + noise), rtol=1e-6)
    # the evidence decides here on both routes (no validation fallback)
    assert svd.spectrum_.cv is None and model.cv_scores_ is None
    # the routes' searches differ (a grid, a frugal bracket): their choices agree in effect
    assert abs(np.log10(model.alpha_ / svd.alpha_)) < 0.5
    truth = np.array([s.info["energy"] for s in Xq])
    assert np.mean(np.abs(E - truth)) < 1.1 * np.mean(np.abs(svd.predict(Xq) - truth))
    np.testing.assert_allclose(pickle.loads(pickle.dumps(model)).predict(Xq, return_std=True)[1], std, rtol=1e-10)
    monkeypatch.setattr(reg, "POSTERIOR_SAVE_BYTES", 0)
    loaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(loaded.predict(Xq), E)
    with pytest.raises(ValueError, match="not saved"):
        loaded.predict(Xq, return_std=True)


def test_tall_design_wide_in_internal_rows_is_solved_in_dual_form(noisy_cho, cho_truth, monkeypatch):
    """More force rows than 3/4 of the features (the Gram route) but fewer internal ones
    (rigid motions left out, ``skace.fitting.internal_rows``): the "bayesian" fit keeps its
    internal rows as the design and solves it in dual form, with the Gram route's model: its
    prior floor folded into the column scales at a ``lam0`` within DUAL_FLOOR_TOL of the alpha
    it chose (``skace.linalg.floored_scale``). The rigid rows are zero in the design and still
    count as rows and misfit: coefficients and evidence are those of every force component."""
    from skace.fitting import assemble, fitting_rows
    from skace.linalg import DUAL_FLOOR_TOL, GRAM_JITTER, floored_scale

    desc = ACETransformer(cutoff=4.0, correlation_order=3, max_degree=6).fit(noisy_cho)
    nf = desc.n_features_out_
    rows = fitting_rows(noisy_cho)
    assert 4 * rows > 3 * nf and rows - 6 * len(noisy_cho) < nf  # tall, but wide in internal rows
    gram = ACERegressor(desc, e0=dict(E0), design_limit=1000, eigen_limit=0).fit(noisy_cho)
    monkeypatch.setattr(skace.fitting, "KERNEL_MIN_WORK", 0)  # (the dual form pays at this size)
    skace.fitting.SYSTEM_CACHE.clear()  # (assembled for the Gram route above)
    inner = ACERegressor(desc, e0=dict(E0), design_limit=1000, eigen_limit=0).fit(noisy_cho)
    assert gram._posterior[0] == "cholesky" and inner._posterior[0] == "kernel"
    # within eigen_limit the Gram route has no floor, nor has its dual form: the whole design's
    plain = ACERegressor(desc, e0=dict(E0), design_limit=1000).fit(noisy_cho)
    whole = ACERegressor(desc, e0=dict(E0), design_limit=BIG).fit(noisy_cho)
    assert plain.alpha_ == pytest.approx(whole.alpha_, rel=1e-6)
    np.testing.assert_allclose(plain.coef_, whole.coef_, rtol=0, atol=1e-6 * np.abs(whole.coef_).max())
    X, y = weighted_design(inner, noisy_cho)  # every force component
    Xs = X / inner.scale_
    beta = inner.beta_
    a = inner.alpha_ * beta
    d = beta * np.linalg.solve(a * np.eye(nf) + beta * Xs.T @ Xs, Xs.T @ y)
    np.testing.assert_allclose(inner.coef_ * inner.scale_, d, rtol=0, atol=1e-6 * np.abs(d).max())
    assert inner.log_evidence_ == pytest.approx(gaussian_log_evidence(Xs, y, a, beta), rel=1e-8)
    # the scales: the Gram route's times sqrt(1 + jitter G_jj / lam0)
    diag = np.sum((X / gram.scale_) ** 2, axis=0)
    j = np.argmax(diag)
    lam0 = GRAM_JITTER * diag[j] / ((inner.scale_[j] / gram.scale_[j]) ** 2 - 1.0)
    np.testing.assert_allclose(inner.scale_, gram.scale_ * floored_scale(diag, lam0), rtol=1e-9)
    assert abs(np.log10(inner.alpha_ / lam0)) <= DUAL_FLOOR_TOL
    # so it chooses and predicts as the Gram route does
    assert abs(np.log10(inner.alpha_ / gram.alpha_)) < 0.3
    truth = np.array([s.info["energy"] for s in cho_truth.test])
    mae = lambda m: np.mean(np.abs(m.predict(cho_truth.test) - truth))  # noqa: E731
    assert mae(inner) < 1.05 * mae(gram)
    # the systems: internal rows (3 N - 6 per molecule) beside every force component
    E = np.array([a.info["energy"] for a in noisy_cho])
    F = np.concatenate([a.arrays["forces"] for a in noisy_cho])
    counts = np.array([[a.get_chemical_symbols().count(el) for el in desc.elements_] for a in noisy_cho], float)
    ones = np.ones(len(noisy_cho))
    args = (desc, noisy_cho, E, F, ones, ones, len(desc.elements_), counts)
    full = assemble(*args, BIG)
    internal = assemble(*args, 1000, dual=True)
    assert internal.force_rows is not None and full.force_rows is None
    assert internal.XF.shape[0] == len(F) * 3 - 6 * len(noisy_cho) and internal.mF == full.mF == 3 * len(F)
    assert assemble(*args, 1000).XF is None  # without dual: the Gram route
    e0, prior = np.array([E0[el] for el in desc.elements_]), np.ones(nf)
    spec_full, _ = full.combine(1.0, 1.0, e0, prior, True)
    spec_int, _ = internal.combine(1.0, 1.0, e0, prior, True)
    assert (spec_int.m, spec_int.yy) == (spec_full.m, pytest.approx(spec_full.yy, rel=1e-12))
    lam = spec_full.lam[0] * 1e-6
    assert spec_int.log_evidence_profiled(lam)[0] == pytest.approx(spec_full.log_evidence_profiled(lam)[0], rel=1e-9)
    np.testing.assert_allclose(internal.gram(1.0, 1.0, e0)[0], full.gram(1.0, 1.0, e0)[0], rtol=0, atol=1e-8)


def test_dual_route_validates_where_the_design_route_does(cho_truth, monkeypatch):
    """Exact data: the evidence rises as the regularisation vanishes, and both routes choose
    alpha by leave-one-structure-out validation on the same 0.5-decade grid near its minimum
    (this curve has two minima: a bracket search would stop in the wrong one); not where the
    SVD route could not keep its left singular vectors (CV_MAX_BYTES)."""
    train = cho_truth.train[:10]
    desc = ACETransformer(cutoff=4.0, correlation_order=3, max_degree=6)
    svd = ACERegressor(desc, e0=dict(E0), design_limit=BIG).fit(train)
    monkeypatch.setattr(skace.fitting, "KERNEL_MIN_WORK", 0)
    dual = ACERegressor(desc, e0=dict(E0), design_limit=BIG).fit(train)
    assert svd.spectrum_.cv is not None and dual.cv_scores_ is not None
    assert np.log10(dual.alpha_ / svd.alpha_) == pytest.approx(0.0, abs=0.01)
    monkeypatch.setattr(skace.fitting, "CV_MAX_BYTES", 0)
    assert ACERegressor(desc, e0=dict(E0), design_limit=BIG).fit(train).cv_scores_ is None
