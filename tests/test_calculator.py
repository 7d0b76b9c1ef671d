"""Tests of ``ACECalculator``: results equal the model's, forces and stress are derivatives
of the energy, loading from a model file, and energy conservation in NVE molecular dynamics."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.geometry import get_distances
from ase.md.verlet import VelocityVerlet
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

import skace
from skace import ACECalculator, ACERegressor, ACETransformer
from skace.datasets import load_sample

threadpool_limits(limits=1, user_api="blas")  # see test_regressor.py: conftest's limit comes too early

KW = dict(cutoff=4.0, correlation_order=2, max_degree=6)


@pytest.fixture(scope="module")
def model():
    """A Bayesian ethanol model (the sample's first 100 configurations)."""
    return ACERegressor(ACETransformer(**KW)).fit(load_sample(n=100))


def random_cell(seed, n=7, a=3.7, dmin=1.0):
    rng = np.random.default_rng(seed)
    cell = np.diag([a, 1.1 * a, 0.95 * a]) + rng.uniform(-0.25, 0.25, (3, 3))
    pos = []
    while len(pos) < n:
        p = rng.uniform(0, 1, 3) @ cell
        if not pos or get_distances(p, np.array(pos), cell=cell, pbc=True)[1].min() >= dmin:
            pos.append(p)
    symbols = ["H", "C", "O"] + list(rng.choice(["H", "C", "O"], n - 3))
    return Atoms(symbols=symbols, positions=pos, cell=cell, pbc=True)


def ethanol(k=0):
    atoms = load_sample("test", n=k + 1)[k]
    return Atoms(atoms.numbers, atoms.positions)


def systems():
    box = ethanol(1)
    box.set_cell(np.diag([9.0, 9.5, 10.0]))
    box.center()
    box.pbc = True
    return {"molecule": ethanol(), "periodic": random_cell(0), "ethanol in a box": box}


@pytest.mark.parametrize("name", ["molecule", "periodic", "ethanol in a box"])
def test_results_equal_model(model, name):
    atoms = systems()[name]
    atoms.calc = ACECalculator(model)
    E = atoms.get_potential_energy()
    assert E == pytest.approx(model.predict([atoms])[0], rel=1e-14)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(E, rel=1e-14)
    np.testing.assert_allclose(atoms.get_forces(), model.predict_forces([atoms]), rtol=0, atol=1e-12)
    energies = atoms.get_potential_energies()
    np.testing.assert_allclose(energies, model.predict_atomic_energies([atoms]), rtol=1e-14)
    assert energies.sum() == pytest.approx(E, rel=1e-13)
    if atoms.pbc.all():
        np.testing.assert_allclose(atoms.get_stress(), model.predict_stress([atoms])[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(atoms.get_stress(voigt=False).T, atoms.get_stress(voigt=False), atol=1e-14)
    else:
        with pytest.raises(PropertyNotImplementedError):
            atoms.get_stress()


@pytest.mark.parametrize("name", ["molecule", "periodic"])
def test_forces_are_numerical_derivatives(model, name):
    atoms = systems()[name]
    atoms.calc = ACECalculator(model)
    F = atoms.get_forces()
    F_num = calculate_numerical_forces(atoms, eps=1e-4)
    assert np.abs(F).max() > 0.1
    np.testing.assert_allclose(F, F_num, rtol=0, atol=1e-6 * max(np.abs(F).max(), 1.0))


@pytest.mark.parametrize("name", ["periodic", "ethanol in a box"])
def test_stress_is_numerical_derivative(model, name):
    atoms = systems()[name]
    atoms.calc = ACECalculator(model)
    s = atoms.get_stress()
    s_num = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(s, s_num, rtol=0, atol=1e-6 * max(np.abs(s).max(), 1e-3))
    # an isolated molecule in a box feels no stress beyond that of its own bonds (no images within cutoff)
    if name == "ethanol in a box":
        assert np.abs(s).max() < 1.0  # eV/Å^3: bounded, and equal to the numerical one above


def test_slab_has_forces_but_no_stress(model):
    slab = systems()["periodic"]
    slab.pbc = [True, True, False]
    slab.calc = ACECalculator(model)
    np.testing.assert_allclose(slab.get_forces(), model.predict_forces([slab]), atol=1e-12)
    np.testing.assert_allclose(slab.get_forces(), calculate_numerical_forces(slab, eps=1e-4), atol=1e-6 * 10)
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def test_results_follow_the_atoms(model):
    atoms = ethanol()
    atoms.calc = ACECalculator(model)
    E1 = atoms.get_potential_energy()
    F1 = atoms.get_forces().copy()
    atoms.positions[0] += [0.05, -0.02, 0.01]
    E2 = atoms.get_potential_energy()
    assert E2 != E1
    assert E2 == pytest.approx(model.predict([atoms])[0], rel=1e-14)
    assert not np.allclose(atoms.get_forces(), F1)
    # a copy with the same calculator gives the same answer
    other = ethanol()
    other.calc = atoms.calc
    assert other.get_potential_energy() == pytest.approx(E1, rel=1e-14)


def test_load_from_model_file(model, tmp_path):
    path = tmp_path / "ethanol.skace"
    skace.save(model, path)
    atoms = systems()["periodic"]
    results = []
    for source in (model, path, str(path)):
        a = atoms.copy()
        a.calc = ACECalculator(source)
        results.append((a.get_potential_energy(), a.get_forces(), a.get_stress()))
    for E, F, S in results[1:]:
        assert E == results[0][0]
        assert np.array_equal(F, results[0][1]) and np.array_equal(S, results[0][2])


def test_bad_model_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        ACECalculator(tmp_path / "missing.skace")
    junk = tmp_path / "junk.skace"
    junk.write_text("not a model\n")
    with pytest.raises(skace.io.ModelFileError, match="not a skace model"):
        ACECalculator(junk)


def test_unfitted_model_is_rejected_clearly():
    """An unfitted regressor should give scikit-learn's NotFittedError (at construction or at
    the first calculation), not an AttributeError from deep inside the calculator."""
    atoms = ethanol()
    with pytest.raises(NotFittedError):
        atoms.calc = ACECalculator(ACERegressor(ACETransformer(**KW)))
        atoms.get_potential_energy()


def test_unknown_element(model):
    atoms = ethanol()
    atoms[0].symbol = "N"
    atoms.calc = ACECalculator(model)
    with pytest.raises(ValueError, match="unknown element 'N'"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("name", ["molecule", "periodic"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions_are_rejected(model, name, bad):
    """Not NaN energies, and not the neighbour kernel fed non-finite coordinates (a periodic
    cell with a NaN position once corrupted the heap and killed the process)."""
    atoms = systems()[name]
    atoms.calc = ACECalculator(model)
    atoms.get_potential_energy()
    atoms.positions[0, 0] = bad
    with pytest.raises(ValueError, match=r"^atoms has NaN or infinite positions"):  # not "atoms[0]"
        atoms.get_forces()


def nve_energies(model, dt_fs, steps, seed=0, temperature=300.0):
    atoms = ethanol(2)
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    p = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature)
    p -= masses * (p.sum(0) / masses.sum())  # no centre-of-mass drift
    atoms.set_momenta(p)
    atoms.calc = ACECalculator(model)
    dyn = VelocityVerlet(atoms, dt_fs * units.fs)
    total = [atoms.get_total_energy()]
    dyn.attach(lambda: total.append(atoms.get_total_energy()), interval=1)
    dyn.run(steps)
    return np.array(total), atoms


def test_nve_conserves_energy(model):
    """Velocity Verlet conserves the total energy up to O(dt^2) fluctuations when the forces
    are the exact gradient of the energy: ~0.85 meV here over 50 fs at 0.25 fs. Forces only 2%
    off give 7-9 meV, and fluctuations that no longer shrink as dt^2 (ratio ~1 instead of 4)."""
    E, atoms = nve_energies(model, 0.25, 200)
    assert atoms.get_kinetic_energy() > 0.05  # the molecule really moved
    deviation = np.abs(E - E[0]).max()
    assert deviation < 2e-3, f"total energy moved by {1000 * deviation:.2f} meV"
    assert abs(E[-1] - E[0]) < 2e-3
    # halving dt divides the fluctuation by ~4 over the same 12.5 fs
    E_half, _ = nve_energies(model, 0.125, 100)
    ratio = np.abs(E[:51] - E[0]).max() / np.abs(E_half - E_half[0]).max()
    assert 2.5 < ratio < 6, ratio
