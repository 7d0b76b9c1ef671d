"""Hardened inputs, property-based (hypothesis): random and degenerate structures -- single
atoms, collinear and coplanar atoms, atoms exactly at the cutoff, coincident atoms, huge
and tiny cells, mixed periodicity, elements absent from training -- give finite, correct
results or a clear ValueError; never a crash, a hang or a silent NaN."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from skace import ACERegressor, ACETransformer
from skace.datasets import make_emt_dataset

threadpool_limits(limits=1, user_api="blas")

CUTOFF = 3.5
SETTINGS = dict(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: The clear errors a bad structure may give (anything else is a failure).
EXPECTED = ("overlapping atoms", "too small for the cutoff", "linearly dependent", "unknown element",
            "NaN or infinite")


@pytest.fixture(scope="module")
def model():
    data = make_emt_dataset(n_structures=10, size=1, random_state=2)
    return ACERegressor(ACETransformer(cutoff=CUTOFF, correlation_order=2, max_degree=4),
                        solver="ridge", alpha=1e-4).fit(data)


def check_result(model, atoms):
    """Finite energies and forces; isolated systems: zero net force; stress where a volume exists."""
    E, F = model.predict_energy_forces([atoms])
    assert np.all(np.isfinite(E)) and np.all(np.isfinite(F))
    assert F.shape == (len(atoms), 3)
    if not atoms.pbc.any():
        np.testing.assert_allclose(F.sum(axis=0), 0, atol=1e-9 * max(1.0, np.abs(F).max()))
    if abs(np.linalg.det(atoms.cell.array)) > 1e-6:
        assert np.all(np.isfinite(model.predict_stress([atoms])))
    return E[0], F


def evaluate_or_clear_error(model, atoms):
    try:
        return check_result(model, atoms)
    except ValueError as err:
        assert any(s in str(err) for s in EXPECTED), f"unclear error: {err}"
        return None


coordinate = st.floats(-6.0, 6.0, allow_nan=False, width=64)
scales = st.sampled_from([1e-3, 0.3, 1.0, 3.0, 40.0, 1e5])


@st.composite
def structures(draw):
    n = draw(st.integers(1, 6))
    symbols = draw(st.lists(st.sampled_from(["Cu", "Au"]), min_size=n, max_size=n))
    pos = np.array(draw(st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=n, max_size=n)))
    kind = draw(st.sampled_from(["free", "collinear", "coplanar", "duplicate"]))
    if kind == "collinear":
        pos[:, 1:] = 0.0
    elif kind == "coplanar":
        pos[:, 2] = 0.0
    elif kind == "duplicate" and n > 1:
        pos[-1] = pos[0]
    pbc = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    scale = draw(scales)
    cell = np.diag([scale, scale * draw(st.floats(0.5, 2.0)), scale * draw(st.floats(0.5, 2.0))])
    cell[0, 1] = scale * draw(st.floats(-0.5, 0.5))
    return Atoms(symbols=symbols, positions=pos, cell=cell, pbc=pbc)


@settings(**SETTINGS)
@given(atoms=structures())
def test_random_structures_give_results_or_clear_errors(model, atoms):
    res = evaluate_or_clear_error(model, atoms)
    if res is not None:  # translation invariance of a valid result
        shifted = atoms.copy()
        shifted.positions += [0.37, -1.1, 2.3]
        E2, F2 = model.predict_energy_forces([shifted])
        np.testing.assert_allclose(E2[0], res[0], rtol=1e-9, atol=1e-9)
        # (1e-6: tiny periodic cells sum thousands of images whose wrapping shifts with the origin)
        np.testing.assert_allclose(F2, res[1], rtol=0, atol=1e-6 * max(1.0, np.abs(res[1]).max()))


@settings(**SETTINGS)
@given(r=st.floats(CUTOFF - 1e-3, CUTOFF + 1e-3), direction=st.tuples(coordinate, coordinate, coordinate))
def test_pairs_at_the_cutoff_are_continuous(model, r, direction):
    u = np.array(direction)
    if np.linalg.norm(u) < 1e-3:
        u = np.array([1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    dimer = Atoms("CuAu", positions=[[0, 0, 0], r * u])
    apart = Atoms("CuAu", positions=[[0, 0, 0], 100 * u])
    E, F = check_result(model, dimer)
    E_far = model.predict([apart])[0]
    # the radial basis and its derivative vanish at the cutoff: within 1 mÅ of it the pair
    # contributes next to nothing, and exactly at or beyond the cutoff nothing at all
    assert abs(E - E_far) < 1e-4 and np.abs(F).max() < 1e-2
    if r >= CUTOFF:
        assert E == E_far and np.all(F == 0)


def test_exactly_at_cutoff_and_single_atoms(model):
    e_single = model.predict([Atoms("Cu")])[0]
    assert np.isfinite(e_single)
    np.testing.assert_array_equal(model.predict_forces([Atoms("Cu")]), 0)
    at = Atoms("Cu2", positions=[[0, 0, 0], [CUTOFF, 0, 0]])
    np.testing.assert_allclose(model.predict([at])[0], 2 * e_single, rtol=1e-14)
    # one atom in a periodic cell: its own images are its neighbours; cubic symmetry: no shear
    cu = bulk("Cu", "sc", a=2.5)
    s = model.predict_stress([cu])[0]
    assert np.all(np.isfinite(s)) and np.abs(s[3:]).max() < 1e-12
    np.testing.assert_array_equal(model.predict_forces([cu]), 0)


def test_errors_name_the_structure_in_the_whole_input(model, monkeypatch):
    """Inputs processed in chunks (features, gradients, the fit, large inputs in groups) name
    the faulty structure by its place in the whole input, not in its chunk."""
    import skace.chunked
    import skace.streaming
    from skace import ACECalculator

    good = [Atoms("CuAu", positions=[[0, 0, 0], [0, 0, 2.5]]) for _ in range(6)]
    bad = Atoms("CuAu", positions=[[0, 0, 0], [0, 0, 0.05]])
    unknown = Atoms("CuNi", positions=[[0, 0, 0], [0, 0, 2.5]])
    KW = dict(cutoff=CUTOFF, correlation_order=2, max_degree=4, max_memory=1e-4)
    tiny = ACETransformer(**KW).fit(good)
    monkeypatch.setattr(skace.streaming, "STREAM_BLOCK_ATOMS", 4)
    for structure, problem in [(bad, "overlapping atoms"), (unknown, "unknown element 'Ni'")]:
        X = [a.copy() for a in good[:4] + [structure] + good[4:]]
        for a in X:  # targets, for the fit
            a.info["energy"], a.arrays["forces"] = 0.0, np.zeros((len(a), 3))
        fits = (ACERegressor(tiny, solver="ridge", alpha=1e-3).fit,  # (a fit takes Ni in as a new element)
                ACERegressor(tiny, solver="ridge", alpha=1e-3, n_blocks=3).fit,  # blocks of structures
                lambda X: ACERegressor(ACETransformer(elements=["Au", "Cu"], **KW), solver="ridge",
                                       alpha=1e-3).fit(iter(X)))  # a stream, read in blocks
        for call in (tiny.transform, tiny.transform_gradient) + (fits if structure is bad else ()):
            with pytest.raises(ValueError, match=rf"{problem} in X\[4\]"):
                call(X)
    monkeypatch.setattr(skace.chunked, "LARGE_ATOMS", 5)  # small structures in groups, large ones alone
    big = Atoms("Cu8", positions=2.5 * np.arange(24).reshape(8, 3) % 10)
    with pytest.raises(ValueError, match=r"overlapping atoms in X\[4\]"):
        model.predict(good[:2] + [big] + good[2:3] + [bad])
    bad.calc = ACECalculator(model)
    with pytest.raises(ValueError, match=r"overlapping atoms in atoms: atom 0"):
        bad.get_potential_energy()


def test_clear_errors(model):
    with pytest.raises(ValueError, match=r"overlapping atoms in X\[0\]"):
        model.predict([Atoms("Cu2", positions=[[1, 1, 1], [1, 1, 1]])])
    with pytest.raises(ValueError, match=r"unknown element 'Ni' in X\[1\]"):
        model.predict([Atoms("Cu"), Atoms("Ni")])
    with pytest.raises(ValueError, match=r"X\[0\]: the cell is too small for the cutoff"):
        model.predict([Atoms("Cu", cell=[1e-3, 1e-3, 1e-3], pbc=True)])
    with pytest.raises(ValueError, match="linearly dependent"):
        model.predict([Atoms("Cu", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True)])
    with pytest.raises(ValueError, match="NaN or infinite positions"):
        model.predict([Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]])])
    bad = Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 1]], cell=[np.inf, 1, 1], pbc=True)
    with pytest.raises(ValueError, match="NaN or infinite cell"):
        model.predict([bad])


def test_huge_sparse_cell_is_fast_and_exact(model):
    """Two atoms far apart in a huge periodic cell: no interaction, no giant grid."""
    a = Atoms("CuAu", positions=[[0, 0, 0], [5e5, 5e5, 5e5]], cell=[1e6, 1e6, 1e6], pbc=True)
    E = model.predict([a])[0]
    np.testing.assert_allclose(E, model.predict([Atoms("Cu")])[0] + model.predict([Atoms("Au")])[0], rtol=1e-13)


@st.composite
def periodic_cells(draw):
    """Small triclinic cells with 2-4 atoms at least 1.6 Å apart (periodic along 1-3 axes)."""
    n = draw(st.integers(2, 4))
    a = draw(st.floats(3.0, 5.0))
    cell = np.diag([a, a * draw(st.floats(0.8, 1.2)), a * draw(st.floats(0.8, 1.2))])
    cell += np.array(draw(st.lists(st.floats(-0.4, 0.4), min_size=9, max_size=9))).reshape(3, 3)
    frac = np.array(draw(st.lists(st.tuples(*[st.floats(0, 1)] * 3), min_size=n, max_size=n)))
    pbc = draw(st.sampled_from([(True, True, True), (True, True, False), (True, False, False)]))
    atoms = Atoms(symbols=draw(st.lists(st.sampled_from(["Cu", "Au"]), min_size=n, max_size=n)),
                  positions=frac @ cell, cell=cell, pbc=pbc)
    d = atoms.get_all_distances(mic=True)[np.triu_indices(n, 1)]
    from hypothesis import assume

    assume(d.min() > 1.6)
    return atoms


@settings(**dict(SETTINGS, max_examples=8))
@given(atoms=periodic_cells())
def test_forces_and_stress_are_derivatives_on_random_cells(model, atoms):
    h = 1e-5
    E, F = check_result(model, atoms)
    i = len(atoms) - 1
    for a in range(3):
        e = []
        for s in (1, -1):
            b = atoms.copy()
            b.positions[i, a] += s * h
            e.append(model.predict([b])[0])
        assert abs(-(e[0] - e[1]) / (2 * h) - F[i, a]) <= 1e-6 * max(1.0, np.abs(F).max())
    stress = model.predict_stress([atoms])[0]
    for v, (p, q) in enumerate(((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))):
        eps = np.zeros((3, 3))
        eps[p, q] += 0.5
        eps[q, p] += 0.5
        e = []
        for s in (1, -1):
            b = atoms.copy()
            M = np.eye(3) + s * h * eps
            b.set_cell(atoms.cell.array @ M.T, scale_atoms=False)
            b.positions = atoms.positions @ M.T
            e.append(model.predict([b])[0])
        fd = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
        assert abs(fd - stress[v]) <= 1e-6 * max(1e-2, np.abs(stress).max())
