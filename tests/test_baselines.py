"""Baselines (delta learning): PairRepulsion against finite differences and its smooth
cutoff; a model with a baseline predicts baseline + fitted part exactly, in every
prediction path and in ACECalculator; clone, pickle and model files keep the baseline."""

import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from sklearn.base import clone
from threadpoolctl import threadpool_limits

import skace
from skace import ACECalculator, ACERegressor, ACETransformer
from skace.baselines import PairRepulsion, baseline_terms
from skace.datasets import make_emt_dataset

threadpool_limits(limits=1, user_api="blas")

KW = dict(cutoff=4.5, correlation_order=2, max_degree=6)


def squeezed(seed=0):
    a = bulk("Cu", "fcc", a=3.0, cubic=True).repeat((2, 1, 1))
    a.symbols[[1, 5]] = "Au"
    a.rattle(0.12, seed=seed)
    return a


@pytest.mark.parametrize("kind", ["zbl", "r12"])
def test_pair_repulsion_derivatives(kind):
    calc = PairRepulsion(kind=kind, cutoff=2.4)
    periodic = squeezed()
    slab = periodic.copy()
    slab.pbc = [True, False, True]
    molecule = Atoms("CuAuCu", positions=[[0, 0, 0], [1.5, 0.2, 0], [0.4, 1.6, 0.3]])
    for atoms in (periodic, slab, molecule):
        atoms.calc = calc
        F = atoms.get_forces()
        assert atoms.get_potential_energy() > 0 and np.abs(F).max() > 1e-2
        np.testing.assert_allclose(F, calculate_numerical_forces(atoms, 1e-5), rtol=0, atol=1e-6 * np.abs(F).max())
        np.testing.assert_allclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), rtol=1e-12)
        if atoms.pbc.all():
            S = atoms.get_stress()
            np.testing.assert_allclose(S, calculate_numerical_stress(atoms, 1e-6), rtol=0,
                                       atol=1e-6 * np.abs(S).max())


def test_pair_repulsion_is_smooth_repulsive_and_short_ranged():
    calc = PairRepulsion()  # ZBL, covalent cutoff: 0.75 (r_Cu + r_Cu) = 1.98 Å
    rc = float(calc.pair_cutoff(np.array([29]), np.array([29]))[0])
    r = np.array([0.5, 1.0, 1.5, rc - 1e-4, rc, rc + 0.1])
    e, de = calc.pair_energy(r, np.full(6, 29), np.full(6, 29))
    assert np.all(np.diff(e[:4]) < 0) and np.all(de[:3] < 0)  # repulsive, decreasing
    assert e[3] < 1e-9 and e[4] == 0 and e[5] == 0 and abs(de[3]) < 1e-5
    cu = bulk("Cu", "fcc", a=3.6)  # nearest neighbours at 2.55 Å: no contribution
    cu.calc = calc
    assert cu.get_potential_energy() == 0
    for d in (0.0, 0.05):  # on top of each other, or closer than OVERLAP_DISTANCE
        with pytest.raises(ValueError, match="PairRepulsion: overlapping atoms in the structure: atom 0 has a"):
            Atoms("Cu2", positions=[[0, 0, 0], [0, 0, d]], calculator=PairRepulsion()).get_potential_energy()
    assert np.isfinite(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.15]],
                             calculator=PairRepulsion()).get_potential_energy())
    with pytest.raises(ValueError, match="kind"):
        PairRepulsion(kind="lj")


@pytest.fixture(scope="module")
def data():
    d = make_emt_dataset(n_structures=24, size=1, max_strain=0.08, random_state=3)
    return d[:18], d[18:]


def residual_copies(structures, calc):
    """Targets minus ``calc``'s, as new structures."""
    out = []
    for a in structures:
        b = a.copy()
        c = a.copy()
        c.calc = calc
        b.info["energy"] = a.info["energy"] - c.get_potential_energy()
        b.arrays["forces"] = a.arrays["forces"] - c.get_forces()
        b.info["stress"] = a.info["stress"] - c.get_stress()
        out.append(b)
    return out


@pytest.fixture(scope="module")
def models(data):
    train, _ = data
    base = PairRepulsion(kind="r12", cutoff=3.2, sigma=2.4, epsilon=0.1)
    kw = dict(descriptor=ACETransformer(**KW), solver="ridge", alpha=1e-6)
    with_base = ACERegressor(**kw, baseline=base).fit(train)
    plain = ACERegressor(**kw).fit(residual_copies(train, base))
    return with_base, plain, base


def test_baseline_plus_fitted_part(models, data):
    with_base, plain, base = models
    np.testing.assert_allclose(with_base.coef_, plain.coef_, rtol=1e-9, atol=1e-12)
    _, test = data
    terms = baseline_terms(base, test, forces=True, virial=True)
    assert np.abs(terms["forces"]).max() > 0.01  # the baseline matters on these structures
    E, F = with_base.predict_energy_forces(test)
    E0, F0 = plain.predict_energy_forces(test)
    np.testing.assert_allclose(E, E0 + terms["energy"], rtol=1e-12)
    np.testing.assert_allclose(F, F0 + terms["forces"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(with_base.predict(test), E, rtol=1e-14)
    np.testing.assert_allclose(with_base.predict_forces(test), F, rtol=0, atol=1e-14)
    V = np.array([a.get_volume() for a in test])[:, None]
    np.testing.assert_allclose(with_base.predict_stress(test), plain.predict_stress(test) + terms["virial"] / V,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(with_base.predict_atomic_energies(test),
                               plain.predict_atomic_energies(test) + terms["energies"], rtol=0, atol=1e-12)
    # the caller's structures keep their (absent) calculators
    assert all(a.calc is None for a in test)


def test_calculator_with_baseline_is_consistent(models, tmp_path):
    with_base = models[0]
    atoms = squeezed(3)
    atoms.calc = ACECalculator(with_base)
    F = atoms.get_forces()
    np.testing.assert_allclose(atoms.get_potential_energy(), with_base.predict([atoms])[0], rtol=1e-14)
    np.testing.assert_allclose(F, calculate_numerical_forces(atoms, 1e-5), rtol=0, atol=1e-6 * np.abs(F).max())
    S = atoms.get_stress()
    np.testing.assert_allclose(S, calculate_numerical_stress(atoms, 1e-6), rtol=0, atol=1e-6 * np.abs(S).max())
    # clone, pickle and model files keep the baseline
    cloned = clone(with_base)
    assert isinstance(cloned.baseline, PairRepulsion) and cloned.baseline is not with_base.baseline
    assert cloned.baseline.epsilon == 0.1
    again = pickle.loads(pickle.dumps(with_base))
    path = tmp_path / "delta.skace"
    skace.save(with_base, path)
    loaded = skace.load(path)
    for m in (again, loaded):
        assert isinstance(m.baseline, PairRepulsion)
        np.testing.assert_array_equal(m.predict_forces([atoms]), with_base.predict_forces([atoms]))
        np.testing.assert_array_equal(m.predict_stress([atoms]), with_base.predict_stress([atoms]))


def test_exact_baseline_leaves_nothing_to_fit(data):
    train, test = data
    model = ACERegressor(ACETransformer(**KW), baseline=EMT(), solver="ridge", alpha=1e-8, e0=None).fit(train)
    assert np.abs(model.coef_).max() < 1e-8
    E, F = model.predict_energy_forces(test)
    np.testing.assert_allclose(E, [a.info["energy"] for a in test], rtol=0, atol=1e-8)
    np.testing.assert_allclose(F, np.concatenate([a.arrays["forces"] for a in test]), rtol=0, atol=1e-8)


class TotalOnly(PairRepulsion):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]


def test_baseline_without_per_atom_energies(data):
    train, test = data
    model = ACERegressor(ACETransformer(**KW), baseline=TotalOnly(kind="r12", cutoff=3.2, sigma=2.4, epsilon=0.1),
                         solver="ridge", alpha=1e-6).fit(train)
    ref = ACERegressor(ACETransformer(**KW), baseline=PairRepulsion(kind="r12", cutoff=3.2, sigma=2.4, epsilon=0.1),
                       solver="ridge", alpha=1e-6).fit(train)
    np.testing.assert_allclose(model.predict(test), ref.predict(test), rtol=1e-13)
    with pytest.raises(ValueError, match="per-atom energies"):
        model.predict_atomic_energies(test)
    atoms = test[0].copy()
    atoms.calc = ACECalculator(model)
    np.testing.assert_allclose(atoms.get_potential_energy(), ref.predict([test[0]])[0], rtol=1e-13)


def test_repulsion_guards_close_contacts(data):
    train, _ = data
    model = ACERegressor(ACETransformer(**KW), baseline=PairRepulsion()).fit(train)
    dimer_e = model.predict([Atoms("Cu2", positions=[[0, 0, 0], [0, 0, d]]) for d in (0.6, 1.0, 2.5)])
    assert dimer_e[0] > dimer_e[1] + 10 > dimer_e[2] + 10
    with pytest.raises(ValueError, match="baseline"):
        ACERegressor(baseline="EMT").fit(train)


def test_explanations_name_the_baseline(models, data):
    from skace.explain import atomic_energy_attribution, explain_energy

    with_base = models[0]
    _, test = data
    with pytest.raises(ValueError, match="baseline"):
        explain_energy(with_base, test)
    # per-atom attributions include the baseline's per-atom energies and sum to predict
    parts = atomic_energy_attribution(with_base, test)
    np.testing.assert_allclose([p.sum() for p in parts], with_base.predict(test), rtol=1e-12)
