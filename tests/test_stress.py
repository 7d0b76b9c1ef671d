"""Stress / virial fitting: per-feature virials against finite strain derivatives of the
features, fitted stresses against finite differences of the energy (full and mixed
periodicity), exact recovery of a linear target from rows that include stresses, the Gram
route against the design route, and supercell consistency."""

import numpy as np
import pytest
from ase.build import bulk
from threadpoolctl import threadpool_limits

from skace import ACERegressor, ACETransformer
from test_regressor import BIG, random_cell, random_cluster

threadpool_limits(limits=1, user_api="blas")

KW = dict(cutoff=4.0, correlation_order=2, max_degree=5)
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def strained(atoms, eps):
    """Positions and cell deformed by ``(1 + eps)`` (rows are vectors)."""
    b = atoms.copy()
    F = np.eye(3) + eps
    b.set_cell(atoms.cell.array @ F.T, scale_atoms=False)
    b.positions = atoms.positions @ F.T
    return b


def unit_strain(v):
    """Symmetric strain of Voigt component ``v`` (off-diagonal: ``eps_ij = eps_ji = 1/2``)."""
    i, j = VOIGT[v]
    e = np.zeros((3, 3))
    e[i, j] += 0.5
    e[j, i] += 0.5
    return e


def slab(rng):
    a = random_cell(rng, 6, pool=("H", "C", "O"), a=3.6)
    a.pbc = [True, False, True]
    return a


@pytest.fixture(scope="module")
def structures():
    rng = np.random.default_rng(5)
    return [random_cell(rng, 5, pool=("H", "C", "O"), a=3.6), slab(rng), random_cluster(rng, 6)]


def test_feature_virial_is_strain_derivative(structures, gradient_route):
    t = ACETransformer(**KW).fit(structures)
    W = t.transform_virial(structures)
    assert W.shape == (3, 6, t.n_features_out_)
    h = 1e-5
    for v in range(6):
        plus = t.transform([strained(a, h * unit_strain(v)) for a in structures])
        minus = t.transform([strained(a, -h * unit_strain(v)) for a in structures])
        fd = (plus - minus) / (2 * h)
        scale = np.abs(fd).max()
        assert scale > 1e-2
        np.testing.assert_allclose(W[:, v], fd, rtol=0, atol=1e-6 * scale)
    # chunking over structures gives the same numbers
    small = ACETransformer(**KW, max_memory=1e-4).fit(structures)
    np.testing.assert_allclose(small.transform_virial(structures), W, rtol=1e-12, atol=1e-12)


def numerical_stress(model, atoms, h=1e-5):
    out = np.zeros(6)
    for v in range(6):
        e = [model.predict([strained(atoms, s * h * unit_strain(v))])[0] for s in (1, -1)]
        out[v] = (e[0] - e[1]) / (2 * h)
    return out / abs(np.linalg.det(atoms.cell.array))


@pytest.fixture(scope="module")
def stress_model(structures):
    rng = np.random.default_rng(7)
    train = [random_cell(rng, int(rng.integers(4, 7)), pool=("H", "C", "O"), a=3.6) for _ in range(8)]
    for a in train:
        a.info["energy"] = float(rng.normal(-20, 1))
        a.arrays["forces"] = rng.normal(scale=0.5, size=(len(a), 3))
        a.info["stress"] = rng.normal(scale=0.05, size=6)
    return ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-3, stress_weight=5.0).fit(train)


@pytest.mark.parametrize("which", [0, 1], ids=["periodic", "mixed"])
def test_stress_is_strain_derivative_of_energy(stress_model, structures, which):
    atoms = structures[which]
    stress = stress_model.predict_stress([atoms])[0]
    fd = numerical_stress(stress_model, atoms)
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(stress, fd, rtol=0, atol=1e-6 * np.abs(fd).max())


def test_stress_needs_cell_volume(stress_model, structures):
    with pytest.raises(ValueError, match="volume"):
        stress_model.predict_stress([structures[0], structures[2]])


def linear_truth(seed=3):
    rng = np.random.default_rng(seed)
    train = [random_cell(rng, int(rng.integers(3, 6)), pool=("C", "O"), a=3.4) for _ in range(14)]
    t = ACETransformer(**KW).fit(train)
    coef = rng.normal(size=t.n_features_out_)
    e0 = {"C": -1.5, "O": -2.5}
    B, G, W = t.transform(train), t.transform_gradient(train), t.transform_virial(train)
    E = B @ coef + np.array([sum(e0[s] for s in a.get_chemical_symbols()) for a in train])
    F = -(G @ coef)
    S = (W @ coef) / np.array([a.get_volume() for a in train])[:, None]
    a0 = 0
    for k, a in enumerate(train):
        a.info["energy"] = float(E[k])
        a.arrays["forces"] = F[a0:a0 + len(a)].copy()
        a.info["stress"] = S[k].copy()
        a0 += len(a)
    return train, coef, e0, S


def test_exact_recovery_with_stress_rows():
    train, coef, e0, S = linear_truth()
    kw = dict(descriptor=ACETransformer(**KW), solver="ridge", alpha=1e-12, prior="none", e0=e0)
    for limit in (BIG, 0):  # design (SVD) and Gram routes
        model = ACERegressor(**kw, design_limit=limit, stress_weight=10.0).fit(train)
        np.testing.assert_allclose(model.predict_stress(train), S, rtol=0, atol=1e-7 * np.abs(S).max())
        E, F = model.predict_energy_forces(train)
        np.testing.assert_allclose(E, [a.info["energy"] for a in train], rtol=1e-9)
    # stress rows alone (no forces) still pin the fit: energies + virials
    only = ACERegressor(**kw, design_limit=BIG, force_weight=0.0, stress_weight=10.0).fit(train)
    np.testing.assert_allclose(only.predict_stress(train), S, rtol=0, atol=1e-6 * np.abs(S).max())


def test_stress_rows_change_the_fit_only_when_weighted():
    train, coef, e0, S = linear_truth(4)
    kw = dict(descriptor=ACETransformer(**KW), solver="ridge", alpha=1e-3, e0=e0, force_weight=0.0,
              cache=False)
    plain = ACERegressor(**kw, stress_weight=0.0).fit(train)
    stressed = ACERegressor(**kw, stress_weight=10.0).fit(train)
    stripped = [a.copy() for a in train]
    for a in stripped:
        del a.info["stress"]
    none = ACERegressor(**kw, stress_weight=10.0).fit(stripped)
    np.testing.assert_allclose(none.coef_, plain.coef_, rtol=1e-10, atol=1e-12)
    err = lambda m: np.abs(m.predict_stress(train) - S).max()  # noqa: E731
    assert err(stressed) < 0.5 * err(plain)
    # stresses from a calculator's stored results and from a custom info key
    keyed = [a.copy() for a in train]
    for a in keyed:
        a.info["my_stress"] = a.info.pop("stress")
    custom = ACERegressor(**kw, stress_weight=10.0, stress_key="my_stress").fit(keyed)
    np.testing.assert_allclose(custom.coef_, stressed.coef_, rtol=1e-10, atol=1e-12)


def test_bad_stress_is_named():
    train, *_ = linear_truth(5)
    train[2].info["stress"] = np.array([1.0, 2.0, np.nan, 0, 0, 0])
    with pytest.raises(ValueError, match=r"stress of X\[2\].*NaN"):
        ACERegressor(ACETransformer(**KW)).fit(train)
    train[2].info["stress"] = np.ones(4)
    with pytest.raises(ValueError, match=r"stress of X\[2\] has shape"):
        ACERegressor(ACETransformer(**KW)).fit(train)


def test_supercell_consistency(stress_model):
    rng = np.random.default_rng(9)
    cell = random_cell(rng, 5, pool=("H", "C", "O"), a=3.6)
    cell.rattle(0.05, seed=1)
    big = cell.repeat((2, 1, 3))
    E, F = stress_model.predict_energy_forces([cell])
    Eb, Fb = stress_model.predict_energy_forces([big])
    np.testing.assert_allclose(Eb[0], 6 * E[0], rtol=1e-11)
    np.testing.assert_allclose(Fb, np.tile(F, (6, 1)), rtol=0, atol=1e-10 * np.abs(F).max())
    np.testing.assert_allclose(stress_model.predict_stress([big])[0], stress_model.predict_stress([cell])[0],
                               rtol=0, atol=1e-11)


def test_fcc_stress_is_hydrostatic(stress_model):
    s = stress_model.predict_stress([bulk("C", "fcc", a=3.6, cubic=True)])[0]  # cubic symmetry
    np.testing.assert_allclose(s[3:], 0, atol=1e-12)
    np.testing.assert_allclose(s[:3], s[0], rtol=1e-10)


def test_cv_solver_holds_out_whole_structures_with_their_stress():
    """``solver="cv"`` on the Gram route holds out structures with their virial rows (the
    held-out part is assembled apart from the rest, in blocks or not) and recovers a
    noise-free truth once they are added back."""
    train, coef, e0, S = linear_truth(5)
    kw = dict(descriptor=ACETransformer(**KW), solver="cv", prior="none", e0=e0, design_limit=0,
              eigen_limit=0, stress_weight=10.0, cache=False)
    model = ACERegressor(**kw).fit(train)
    scores = model.cv_scores_[:, 1]
    # noise-free: the chosen weak regularisation predicts the held-out rows (mostly force
    # components) far better than predicting zero would
    forces = np.concatenate([a.arrays["forces"].ravel() for a in train])
    assert scores.min() < 1e-6 * np.mean(forces**2)
    np.testing.assert_allclose(model.predict_stress(train), S, rtol=0, atol=1e-5 * np.abs(S).max())
    blocks = ACERegressor(**kw, n_blocks=3).fit(train)
    assert blocks.alpha_ == pytest.approx(model.alpha_, rel=1e-9)
    np.testing.assert_allclose(blocks.predict_stress(train), S, rtol=0, atol=1e-5 * np.abs(S).max())


def test_cv_solver_says_when_it_falls_back_to_the_evidence():
    """On the design route, virial rows have no leave-one-structure-out curve: "cv" then
    takes the evidence's alpha, and says so."""
    train, coef, e0, S = linear_truth(5)
    kw = dict(descriptor=ACETransformer(**KW), prior="none", e0=e0, stress_weight=10.0, cache=False)
    with pytest.warns(UserWarning, match="solver='cv' chose alpha by the Bayesian evidence"):
        model = ACERegressor(solver="cv", **kw).fit(train)
    assert model.cv_scores_ is None
    assert model.alpha_ == pytest.approx(ACERegressor(**kw).fit(train).alpha_, rel=1e-12)
