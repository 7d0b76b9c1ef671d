"""Datasets: the bundled sample, the rMD17 reader and its errors; one slow fit on real rMD17."""

import numpy as np
import pytest
from ase.units import kcal, mol

from skace.datasets import RMD17_ENV, RMD17_URL, load_rmd17, load_sample, rmd17_arrays, rmd17_files


def test_sample_is_ethanol_in_ev():
    train, test = load_sample(), load_sample("test", n=5)
    assert len(train) == 250 and len(test) == 5
    assert train[0].get_chemical_formula() == "C2H6O"
    # rMD17 ethanol energies are about -97076 kcal/mol
    assert abs(train[0].info["energy"] / (kcal / mol) + 97076) < 50
    assert train[0].arrays["forces"].shape == (9, 3)
    with pytest.raises(ValueError, match="split"):
        load_sample("validation")


def test_rmd17_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="rmd17_ethanol_train_01.npz") as err:
        load_rmd17("ethanol", path=tmp_path)
    assert RMD17_URL in str(err.value) and "npz_data/rmd17_ethanol.npz" in str(err.value)
    with pytest.raises(ValueError, match="unknown rMD17 molecule"):
        rmd17_files("water")
    with pytest.raises(ValueError, match="split"):
        rmd17_files("ethanol", split="val")


def test_rmd17_reader_converts_units(tmp_path):
    n = 3
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rmd17_benzene_train_01.npz", nuclear_charges=np.array([6] * 6 + [1] * 6, np.uint8),
             coords=rng.normal(size=(n, 12, 3)) * 2, energies=np.array([-1.0, -2.0, -3.0]),
             forces=np.ones((n, 12, 3)), old_indices=np.arange(n))
    data = load_rmd17("benzene", path=tmp_path, n=2)
    assert len(data) == 2
    np.testing.assert_allclose(data[1].info["energy"], -2.0 * kcal / mol)
    np.testing.assert_allclose(data[0].arrays["forces"], kcal / mol)
    # a negative n once dropped the last configurations instead (Python's slice)
    with pytest.raises(ValueError, match="n must be >= 0"):
        load_rmd17("benzene", path=tmp_path, n=-1)


def test_rmd17_reader_reads_the_release_layout(tmp_path, monkeypatch):
    """The download unpacked as is: rmd17/npz_data/rmd17_<molecule>.npz, rows from rmd17/splits."""
    rng = np.random.default_rng(1)
    root = tmp_path / "rmd17"
    (root / "npz_data").mkdir(parents=True)
    (root / "splits").mkdir()
    n_all = 10
    energies = -1000.0 - np.arange(n_all)
    np.savez(root / "npz_data" / "rmd17_uracil.npz", nuclear_charges=np.array([6, 6, 7, 8, 1], np.uint8),
             coords=rng.normal(size=(n_all, 5, 3)) * 2, energies=energies,
             forces=rng.normal(size=(n_all, 5, 3)), old_indices=100 + np.arange(n_all))
    np.savetxt(root / "splits" / "index_train_01.csv", [7, 2, 5], fmt="%d")
    np.savetxt(root / "splits" / "index_test_01.csv", [9], fmt="%d")
    with np.load(root / "npz_data" / "rmd17_uracil.npz") as d:
        coords, forces = d["coords"], d["forces"]
    for path in (tmp_path, root):
        train = load_rmd17("uracil", path=path)
        assert [a.info["rmd17_index"] for a in train] == [107, 102, 105]
        np.testing.assert_allclose([a.info["energy"] for a in train], energies[[7, 2, 5]] * kcal / mol)
        np.testing.assert_allclose(train[2].positions, coords[5])
        np.testing.assert_allclose(train[0].arrays["forces"], forces[7] * kcal / mol)
        assert len(load_rmd17("uracil", path=path, n=2)) == 2
        assert [a.info["rmd17_index"] for a in load_rmd17("uracil", "test", path=path)] == [109]
        assert rmd17_files("uracil", path=path) == (root / "npz_data" / "rmd17_uracil.npz",
                                                   root / "splits" / "index_train_01.csv")
        assert rmd17_arrays("uracil", "test", path=path)["energies"].tolist() == [-1009.0]  # kcal/mol
    monkeypatch.setenv(RMD17_ENV, str(tmp_path))
    assert len(load_rmd17("uracil")) == 3
    for content, problem in [("3\n10\n", "lists configurations outside the 10"), ("", "lists no configurations"),
                             ("index\n3\n", "is not a list of configuration numbers")]:
        (root / "splits" / "index_train_01.csv").write_text(content)
        with pytest.raises(ValueError, match=f"index_train_01.csv {problem}"):
            load_rmd17("uracil", path=tmp_path)


@pytest.mark.parametrize("n, error", [(-1, ValueError), (2.5, TypeError), ("3", TypeError)])
def test_sample_size_must_be_a_count(n, error):
    with pytest.raises(error, match="n must be"):
        load_sample(n=n)
    assert len(load_sample(n=np.int64(4))) == 4 and load_sample(n=0) == []


@pytest.mark.slow
def test_fit_real_rmd17_ethanol():
    try:
        train = load_rmd17("ethanol", n=100)
        test = load_rmd17("ethanol", "test", n=100)
    except FileNotFoundError as err:
        pytest.skip(f"rMD17 data not available ({err.args[0][:80]}...); set SKACE_RMD17_DIR")
    from skace import ACERegressor, ACETransformer
    from skace.metrics import evaluate

    model = ACERegressor(ACETransformer(cutoff=4.5, correlation_order=3, max_degree=[12, 10, 8],
                                        radial_basis="bessel", l_weight=1.0)).fit(train)
    err = evaluate(model, test)
    # published linear ACE at 50 configurations: 8.6 meV / 43 meV/Å; 100 should do no worse
    assert 1000 * err["energy_mae"] < 15 and 1000 * err["force_mae"] < 70
