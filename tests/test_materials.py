"""Materials: EMT data the package makes itself (fcc Cu-Au under MD, strains, vacancies),
a fit on it with stress rows, and held-out errors against meaningful thresholds."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from skace import ACERegressor, ACETransformer
from skace.datasets import make_emt_dataset

threadpool_limits(limits=1, user_api="blas")


@pytest.fixture(scope="module")
def emt_data():
    return make_emt_dataset(n_structures=48, size=2, random_state=0)


def test_emt_dataset_contents(emt_data):
    assert len(emt_data) == 48
    assert {a.info["temperature"] for a in emt_data} == {300.0, 800.0, 1500.0}
    assert any(a.info["vacancy"] for a in emt_data) and not all(a.info["vacancy"] for a in emt_data)
    assert {len(a) for a in emt_data} <= {31, 32}
    assert any("Au" in a.get_chemical_symbols() for a in emt_data)
    for a in emt_data:
        assert a.pbc.all() and a.calc is None
        assert a.arrays["forces"].shape == (len(a), 3) and a.info["stress"].shape == (6,)
    # strained cells: the stress varies across structures; MD: forces are non-zero
    stress = np.array([a.info["stress"] for a in emt_data])
    assert stress[:, :3].std() > 0.01
    assert np.abs(np.concatenate([a.arrays["forces"] for a in emt_data])).max() > 0.3
    # reproducible
    again = make_emt_dataset(n_structures=2, size=2, random_state=0)
    np.testing.assert_array_equal(again[1].positions, emt_data[1].positions)
    with pytest.raises(ValueError, match="EMT"):
        make_emt_dataset(elements=("Cu", "Fe"))


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_emt_fit_held_out_errors(emt_data):
    train, test = emt_data[:36], emt_data[36:]
    model = ACERegressor(ACETransformer(cutoff=5.0, correlation_order=3, max_degree=[10, 8, 6],
                                        radial_basis="bessel", l_weight=1.0)).fit(train)
    n = np.array([len(a) for a in test])
    E, F = model.predict_energy_forces(test)
    S = model.predict_stress(test)
    E_ref = np.array([a.info["energy"] for a in test])
    F_ref = np.concatenate([a.arrays["forces"] for a in test])
    S_ref = np.array([a.info["stress"] for a in test])
    # errors far below the spread of the data (46 meV/atom, 0.7 eV/Å, 46 meV/Å^3 rms)
    assert rmse(E / n, E_ref / n) < 3e-3  # eV/atom
    assert rmse(F, F_ref) < 0.03  # eV/Å
    assert rmse(S, S_ref) < 3e-3  # eV/Å^3 (0.5 GPa)
