"""Large structures: the chunked evaluation path (bounded memory, linear time) gives the
batched path's energies, forces and stresses; mixed lists keep input order."""

import numpy as np
import pytest
from ase.build import bulk
from threadpoolctl import threadpool_limits

import skace.chunked
from skace import ACECalculator, ACERegressor, ACETransformer
from skace.datasets import make_emt_dataset
from skace.kernels.neighbours import CellGrid, neighbour_list

threadpool_limits(limits=1, user_api="blas")


@pytest.fixture(scope="module")
def model():
    data = make_emt_dataset(n_structures=12, size=1, random_state=1)
    return ACERegressor(ACETransformer(cutoff=4.5, correlation_order=2, max_degree=6)).fit(data)


def alloy(n_rep, seed):
    a = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(n_rep)
    rng = np.random.default_rng(seed)
    a.symbols[rng.random(len(a)) < 0.3] = "Au"
    a.rattle(0.1, seed=seed)
    return a


def test_cell_grid_ranges_cover_the_neighbour_list():
    a = alloy((3, 2, 2), 0)
    first, j, D, _ = neighbour_list(a.positions, a.cell.array, a.pbc, 4.5)
    grid = CellGrid(a.positions, a.cell.array, a.pbc, 4.5)
    for lo, hi in ((0, 7), (7, 30), (30, len(a))):
        f, jj, DD, _ = grid.pairs(lo, hi)
        np.testing.assert_array_equal(f, first[lo:hi + 1] - first[lo])
        np.testing.assert_array_equal(jj, j[first[lo]:first[hi]])
        np.testing.assert_array_equal(DD, D[first[lo]:first[hi]])


def test_atoms_far_apart_bin_without_overflow():
    """An open structure spanning 1e30 Å: its bin count would overflow int64 uncapped
    (once: "negative dimensions"); the far atom has no neighbours, the others theirs."""
    a = alloy((2, 2, 2), 1)
    a.pbc = False
    first, j, D, _ = neighbour_list(a.positions, a.cell.array, a.pbc, 4.5)
    far = a.positions.copy()
    far[0] = [1e30, -1e30, 1e30]
    f, jj, _, _ = neighbour_list(far, a.cell.array, a.pbc, 4.5)
    assert f[1] == 0 and not np.any(jj == 0)
    keep = j != 0
    np.testing.assert_array_equal(jj, j[keep & (np.repeat(np.arange(len(a)), np.diff(first)) != 0)])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("pbc", [True, False])
def test_non_finite_positions_never_reach_the_kernels(bad, pbc):
    """The neighbour kernels refuse them themselves (binning a NaN wrote outside its arrays)."""
    a = alloy((2, 2, 2), 2)
    a.pbc = pbc
    a.positions[3, 1] = bad
    with pytest.raises(ValueError, match="atom 3 has a NaN or infinite position"):
        neighbour_list(a.positions, a.cell.array, a.pbc, 4.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_cell_never_reaches_the_kernels(bad):
    """Nor through a caller that skips as_structure_list (PairRepulsion's own neighbour list:
    an infinite cell vector once corrupted the heap)."""
    from skace.baselines import PairRepulsion

    a = alloy((2, 2, 2), 4)
    a.cell[0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite vectors"):
        neighbour_list(a.positions, a.cell.array, a.pbc, 4.5)
    a.calc = PairRepulsion()
    with pytest.raises(ValueError, match="NaN or infinite vectors"):
        a.get_potential_energy()


def test_atom_too_far_from_its_cell_to_wrap():
    a = alloy((2, 2, 2), 3)
    a.positions[0, 2] = 1e30
    with pytest.raises(ValueError, match="too far to wrap"):
        neighbour_list(a.positions, a.cell.array, a.pbc, 4.5)


def test_chunked_path_matches_batched(model, monkeypatch):
    big = alloy((4, 3, 3), 1)  # 576 atoms
    slab = alloy((3, 3, 2), 2)
    slab.pbc = [True, True, False]
    small = alloy((1, 1, 1), 3)
    X = [small, big, slab]
    E, F = model.predict_energy_forces(X)
    S = model.predict_stress(X)
    ea = model.predict_atomic_energies(X)
    monkeypatch.setattr(skace.chunked, "LARGE_ATOMS", 100)
    monkeypatch.setattr(skace.chunked, "CHUNK_PAIRS", 3000)  # many chunks of ~60 atoms
    sizes = []
    pairs = CellGrid.pairs

    def recording(self, lo=0, hi=None):
        out = pairs(self, lo, hi)
        sizes.append(len(out[1]))
        return out

    monkeypatch.setattr(CellGrid, "pairs", recording)
    E2, F2 = model.predict_energy_forces(X)
    # bounded working memory: many chunks, none holding much more than CHUNK_PAIRS pairs
    assert len(sizes) >= 4 and max(sizes) < 2 * 3000
    np.testing.assert_allclose(E2, E, rtol=1e-13)
    np.testing.assert_allclose(F2, F, rtol=0, atol=1e-12 * np.abs(F).max())
    np.testing.assert_allclose(model.predict_stress(X), S, rtol=0, atol=1e-13)
    np.testing.assert_allclose(model.predict_atomic_energies(X), ea, rtol=0, atol=1e-12)
    big.calc = ACECalculator(model)
    np.testing.assert_allclose(big.get_forces(), F[4:4 + len(big)], rtol=0, atol=1e-12 * np.abs(F).max())
    np.testing.assert_allclose(big.get_stress(), S[1], rtol=0, atol=1e-13)
    # many small structures: evaluated in groups of at most LARGE_ATOMS atoms, in input order
    many = [small] * 30 + [slab] + [small] * 5
    E_many = model.predict(many)
    monkeypatch.setattr(skace.chunked, "LARGE_ATOMS", 10**9)
    np.testing.assert_allclose(E_many, model.predict(many), rtol=1e-13)
    monkeypatch.setattr(skace.chunked, "LARGE_ATOMS", 100)
    overlap = big.copy()
    overlap.positions[5] = overlap.positions[9] + [0.0, 0.05, 0.0]  # closer than OVERLAP_DISTANCE
    with pytest.raises(ValueError, match=r"overlapping atoms in X\[0\]: atom 5 has a neighbour closer than 0.1"):
        model.predict([overlap])
