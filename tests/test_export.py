"""Tests of the ML-PACE ``.yace`` export (:mod:`skace.export`, ``ACERegressor.export_yace``, ``skace export``).

Without python-ace the written file is parsed as YAML and evaluated by an
independent numpy implementation of PACE's formulas (complex harmonics times
sqrt(4 pi), ChebPow radial basis with ``crad``, ``Re`` of the m-products);
with python-ace (``pyace``) the file is loaded in ``PyACECalculator`` and its
energies, forces and stress are compared with ``skace.ACECalculator``.
"""

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.neighborlist import neighbor_list
from sklearn.exceptions import NotFittedError

from skace import ACECalculator, ACERegressor, ACETransformer, save
from skace.cli import main
from skace.export import ctilde_functions, export_yace, tabulate_radial


def _label(structures):
    """EMT energies and forces as fit targets (only agreement matters, not fit quality)."""
    for a in structures:
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces"] = a.get_forces()
        a.calc = None
    return structures


def hco_molecules(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for name in ["CH3CH2OH", "H2O", "CH4", "CH3OH", "C2H4", "HCOOH"]:
        for _ in range(2):
            a = molecule(name)
            a.rattle(0.08, seed=int(rng.integers(1 << 30)))
            out.append(a)
    return _label(out)


def cuau_cells(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        a = bulk("Cu", "fcc", a=3.65, cubic=True).repeat((2, 2, 1))
        symbols = np.array(a.get_chemical_symbols())
        symbols[rng.choice(len(a), 5, replace=False)] = "Au"
        a.set_chemical_symbols(symbols)
        a.rattle(0.1, seed=int(rng.integers(1 << 30)))
        out.append(a)
    return _label(out)


def fit(structures, radial_basis="bessel", correlation_order=3, max_degree=(8, 6, 5)):
    d = ACETransformer(cutoff=4.0, correlation_order=correlation_order, max_degree=list(max_degree),
                       radial_basis=radial_basis, l_weight=1.0)
    return ACERegressor(d, solver="ridge", alpha=1e-4).fit(structures)


@pytest.fixture(scope="module")
def hco():
    structures = hco_molecules()
    return fit(structures), structures


@pytest.fixture(scope="module")
def hco_yace(hco, tmp_path_factory):
    path = tmp_path_factory.mktemp("yace") / "hco.yace"
    return hco[0].export_yace(path)


# ------------------------------------------------------------ YAML + numpy reference
def load_yace(path):
    """Parse a .yace file; PACE's bond keys are flow sequences, turned into tuples."""
    try:
        import yaml
    except ImportError:  # python-ace's environments ship ruamel.yaml instead
        ruamel = pytest.importorskip("ruamel.yaml")
        with open(path) as fh:
            return ruamel.YAML(typ="safe", pure=True).load(fh)

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node):
        return {tuple(k) if isinstance(k, list) else k: v for k, v in loader.construct_pairs(node, deep=True)}

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    with open(path) as fh:
        return yaml.load(fh, Loader=Loader)


def reference_energies(doc, atoms):
    """Per-atom energies from PACE's formulas, written independently of skace.export (exact radial basis)."""
    from scipy.special import sph_harm_y

    elements = doc["elements"]
    species = np.array([elements.index(s) for s in atoms.get_chemical_symbols()])
    bonds = doc["bonds"]
    rc = max(b["rcut"] for b in bonds.values())
    lmax = max(b["lmax"] for b in bonds.values())
    nrad = max(b["nradmax"] for b in bonds.values())
    K = max(b["nradbasemax"] for b in bonds.values())
    first, second, D = neighbor_list("ijD", atoms, rc)
    energies = np.array([doc["E0"][s] for s in species], dtype=float)
    for i in range(len(atoms)):
        mu_i = species[i]
        A = np.zeros((len(elements), nrad, lmax + 1, 2 * lmax + 1), dtype=complex)  # m stored at m + lmax
        A1 = np.zeros((len(elements), K))
        for j, d in zip(second[first == i], D[first == i]):
            mu_j = species[j]
            bond = bonds[(int(mu_i), int(mu_j))]
            assert bond["radbasename"] == "ChebPow" and bond["radparameters"] == [1.0]
            r = np.linalg.norm(d)
            g = 0.5 - 0.5 * np.polynomial.chebyshev.chebvander([2 * r / bond["rcut"] - 1], K)[0, 1:]
            fr = np.array(bond["radcoefficients"]) @ g  # (nrad, lmax + 1)
            A1[mu_j] += g  # PACE: Y_00 = 1
            theta, phi = np.arccos(d[2] / r), np.arctan2(d[1], d[0])
            for l in range(lmax + 1):
                for m in range(-l, l + 1):
                    A[mu_j, :, l, m + lmax] += fr[:, l] * np.sqrt(4 * np.pi) * sph_harm_y(l, m, theta, phi)
        for f in doc["functions"][int(mu_i)]:
            rank = f["rank"]
            if rank == 1:
                energies[i] += f["ctildes"][0] * A1[f["mus"][0], f["ns"][0] - 1]
                continue
            ms = np.reshape(f["ms_combs"], (f["num_ms_combs"], rank))
            for c, mm in zip(f["ctildes"], ms):
                prod = 1.0 + 0j
                for t in range(rank):
                    prod *= A[f["mus"][t], f["ns"][t] - 1, f["ls"][t], mm[t] + lmax]
                energies[i] += c * prod.real
    return energies


def test_file_is_pace_yaml_with_expected_keys(hco, hco_yace):
    model, _ = hco
    doc = load_yace(hco_yace.path)
    assert set(doc) >= {"elements", "E0", "deltaSplineBins", "embeddings", "bonds", "functions"}
    assert doc["elements"] == model.descriptor_.elements_ == ["H", "C", "O"]
    assert doc["E0"] == pytest.approx([model.e0_[e] for e in doc["elements"]], abs=0)
    for emb in doc["embeddings"].values():  # F(rho) = rho, no energy-based inner cutoff
        assert emb["npoti"] == "FinnisSinclairShiftedScaled" and emb["FS_parameters"] == [1, 1]
        assert emb["ndensity"] == 1 and emb["rho_core_cutoff"] > 1e4
    assert set(doc["bonds"]) == {(a, b) for a in range(3) for b in range(3)}
    for bond in doc["bonds"].values():
        assert bond["prehc"] == 0 and bond["rcut_in"] == 0 and bond["rcut"] == 4.0
        assert np.shape(bond["radcoefficients"]) == (bond["nradmax"], bond["lmax"] + 1, bond["nradbasemax"])
    n = sum(len(v) for v in doc["functions"].values())
    assert n == hco_yace.n_functions
    for fs in doc["functions"].values():
        for f in fs:
            assert len(f["ms_combs"]) == f["rank"] * f["num_ms_combs"] == f["rank"] * len(f["ctildes"])
            ms = np.reshape(f["ms_combs"], (-1, f["rank"]))
            assert np.all(ms.sum(axis=1) == 0)  # invariant products only


def test_radial_tabulation_error_is_small_and_measured(hco, hco_yace):
    r = hco_yace.radial
    assert r.fit_max_abs_error <= 1e-11
    assert r.max_abs_error < 1e-10 and r.max_abs_derivative_error < 1e-7
    finer = tabulate_radial(hco[0].descriptor_, degree=r.degree, spline_step=r.spline_step / 4)
    # cubic Hermite: values ~ h^4, derivatives ~ h^3 (until the projection error floor)
    assert finer.max_abs_derivative_error < r.max_abs_derivative_error / 20
    np.testing.assert_array_equal(finer.crad, r.crad)


def test_reference_evaluation_of_the_file_matches_skace(hco, hco_yace):
    model, structures = hco
    doc = load_yace(hco_yace.path)
    for atoms in structures[::3]:
        np.testing.assert_allclose(reference_energies(doc, atoms), model.predict_atomic_energies([atoms]),
                                   rtol=0, atol=1e-10)


def test_reference_evaluation_periodic_two_elements(tmp_path):
    cells = cuau_cells()
    model = fit(cells, radial_basis="agnesi", correlation_order=2, max_degree=(7, 5))
    info = export_yace(model, tmp_path / "cuau.yace")
    doc = load_yace(info.path)
    np.testing.assert_allclose(reference_energies(doc, cells[0]), model.predict_atomic_energies(cells[:1]),
                               rtol=0, atol=1e-9)


def test_sparse_model_with_elements_without_functions(tmp_path):
    structures = hco_molecules(seed=1)
    full = ACETransformer(cutoff=4.0, correlation_order=3, max_degree=[8, 6, 5], radial_basis="gaussian",
                          l_weight=1.0).fit(structures)
    rows = [k for k, f in enumerate(full.basis_.features) if f["center"] == 0][::3]  # some H-centred ones
    model = ACERegressor(full.select_features(rows), solver="ridge", alpha=1e-4).fit(structures)
    info = model.export_yace(tmp_path / "sparse.yace", spline_step=2.5e-4)
    doc = load_yace(info.path)
    assert doc["functions"][1] == [] and doc["functions"][2] == []  # C and O: E0 only
    np.testing.assert_allclose(reference_energies(doc, structures[0]), model.predict_atomic_energies(structures[:1]),
                               rtol=0, atol=1e-10)
    try:
        import pyace  # noqa: F401
    except ImportError:
        return
    de, df, _ = compare_with_pace(model, info.path, structures)
    assert de < 1e-10 and df < 1e-8  # measured 3e-13 eV/atom, 6e-11 eV/Å


def test_ctilde_functions_fold_every_feature():
    from skace.maths.basis import ACEBasis

    basis = ACEBasis(["H", "O"], correlation_order=3, max_degree=5, l_weight=1.0)
    coef = np.random.default_rng(1).normal(size=basis.n_features)
    funcs = ctilde_functions(basis, coef)
    multisets = {(f["center"], f["factors"]) for f in basis.features}
    assert len(funcs) == len(multisets)
    assert ctilde_functions(basis, np.zeros(basis.n_features)) == []
    with pytest.raises(ValueError, match="coef has shape"):
        ctilde_functions(basis, coef[:-1])


def test_errors(hco, tmp_path):
    with pytest.raises(NotFittedError):
        export_yace(ACERegressor(), tmp_path / "x.yace")
    d = hco[0].descriptor_
    with pytest.raises(ValueError, match="at least the number of radial functions"):
        tabulate_radial(d, degree=2)
    with pytest.raises(ValueError, match="'bessel'.*degree > 8"):
        tabulate_radial(d, max_degree=8)
    with pytest.raises(ValueError, match="spline_step must be positive"):
        tabulate_radial(d, spline_step=0.0)


def test_cli_export(hco, tmp_path, capsys):
    model_file = tmp_path / "m.skace"
    save(hco[0], model_file)
    out = tmp_path / "m.yace"
    assert main(["export", str(model_file), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "pair_coeff * * " + str(out) + " H C O" in text
    assert load_yace(out)["elements"] == ["H", "C", "O"]

    def one_line_error(argv, needle):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("skace export: error: ") and needle in err[0], err

    one_line_error(["export", str(model_file), "-o", str(out)], "exists; pass --force")
    one_line_error(["export", str(tmp_path / "missing.skace"), "-o", str(out), "--force"], "missing.skace")
    one_line_error(["export", str(model_file), "-o", str(out), "--spline-step", "0"], "--spline-step")
    one_line_error(["export", str(model_file), "-o", str(tmp_path / "no" / "m.yace")], "m.yace")
    one_line_error(["export", str(model_file), "-o", str(out), "--degree", "1", "--force"], "degree")
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0


# ------------------------------------------------------------ the PACE evaluator itself
def compare_with_pace(model, path, structures, stress=False, recursive=False):
    """Largest |dE| per atom, |dF| and |d stress| between skace and PyACECalculator.

    ``recursive``: PACE's recursive evaluator (LAMMPS ``pair_style pace``'s default) instead of the product form.
    """
    pyace = pytest.importorskip("pyace")
    options = {"recursive_evaluator": True, "recursive": True} if recursive else {}
    pace = pyace.PyACECalculator(str(path), **options)
    de = df = ds = 0.0
    for atoms in structures:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = ACECalculator(model), pace
        de = max(de, abs(a.get_potential_energy() - b.get_potential_energy()) / len(atoms))
        df = max(df, np.abs(a.get_forces() - b.get_forces()).max())
        if stress:
            ds = max(ds, np.abs(a.get_stress() - b.get_stress()).max())
    return de, df, ds


@pytest.mark.parametrize("radial_basis", ["bessel", "agnesi", "chebexp", "gaussian"])
def test_pace_molecules(radial_basis, tmp_path):
    pytest.importorskip("pyace")
    structures = hco_molecules(seed=3)
    model = fit(structures, radial_basis=radial_basis)
    info = model.export_yace(tmp_path / "m.yace", spline_step=2.5e-4)
    de, df, _ = compare_with_pace(model, info.path, structures)
    # measured with spline_step 2.5e-4: dE/atom <= 5e-13 eV, dF <= 9e-10 eV/Å for all four families
    assert de < 1e-10
    assert df < 1e-8


def test_pace_periodic_cell_with_stress(tmp_path):
    pytest.importorskip("pyace")
    cells = cuau_cells(seed=5)
    model = fit(cells, radial_basis="bessel")
    info = model.export_yace(tmp_path / "cuau.yace", spline_step=2.5e-4)
    for recursive in (False, True):
        de, df, ds = compare_with_pace(model, info.path, cells, stress=True, recursive=recursive)
        # measured: dE/atom 2e-12 eV, dF 7e-11 eV/Å, d stress 1.3e-12 eV/Å^3
        assert de < 1e-10
        assert df < 1e-8
        assert ds < 1e-10
