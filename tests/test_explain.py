"""Tests of ``skace.explain``: the SHAP sum identities for energies and forces (default and explicit
backgrounds, mixed compositions), agreement with ``shap.LinearExplainer``, grouping of features,
per-atom energies, headless plots, and errors for unfitted models and bad arguments."""

import copy

import matplotlib

matplotlib.use("Agg")  # headless: no display is needed for any test

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import shap  # noqa: E402
from ase.build import molecule  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from skace import ACERegressor, ACETransformer  # noqa: E402
from skace.datasets import load_sample  # noqa: E402
from skace.explain import (E0_NAME, GROUP_BY, atomic_energy_attribution, explain_energy,  # noqa: E402
                           explain_forces, group_explanation, plot_atomic_energies, save_plot)

threadpool_limits(limits=1, user_api="blas")

KW = dict(cutoff=4.0, correlation_order=2, max_degree=5)
E0 = {"H": -13.6, "C": -1030.5, "O": -2041.25}
E_ATOL = 1e-8   # eV, on energies of ~ -4000 eV
F_ATOL = 1e-9   # eV/Å
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def train():
    return load_sample(n=20)


@pytest.fixture(scope="module")
def model(train):
    """Fixed, non-zero E0 so that the composition term is visible for mixed compositions."""
    return ACERegressor(ACETransformer(**KW), e0=E0, solver="ridge", alpha=1e-6).fit(train)


@pytest.fixture(scope="module")
def mixed(train):
    """Structures of several compositions (all within H, C, O), slightly rattled."""
    out = []
    for k, name in enumerate(["H2O", "CH4", "CH3OH", "CH3CH2OH", "HCOOH"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    short = train[3].copy()
    del short[-1]  # ethanol less one H
    return out + [train[0], short, train[1]]


def counts_e0(structures):
    return np.array([sum(E0[s] for s in a.get_chemical_symbols()) for a in structures])


def png_written(path):
    data = path.read_bytes()
    return len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC)


# ======================================================================
# energies
# ======================================================================
def test_energy_sum_identity_mixed_compositions(model, mixed):
    exp = explain_energy(model, mixed)
    nf = model.n_features_
    assert isinstance(exp, shap.Explanation)
    assert exp.values.shape == (len(mixed), nf + 1)
    assert list(exp.feature_names) == list(model.descriptor_.get_feature_names_out()) + [E0_NAME]
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, model.predict(mixed),
                               rtol=0, atol=E_ATOL)
    # the composition term is its own column and is needed here: compositions differ
    ref = counts_e0(mixed)
    np.testing.assert_allclose(exp.values[:, -1], ref - ref.mean(), rtol=0, atol=1e-9)
    assert np.ptp(exp.values[:, -1]) > 100.0
    # default background = X: base value is the mean prediction, SHAP values centred
    np.testing.assert_allclose(exp.base_values, model.predict(mixed).mean(), rtol=0, atol=E_ATOL)
    np.testing.assert_allclose(exp.values.mean(axis=0), 0.0, atol=1e-9)
    B = model.descriptor_.transform(mixed)
    np.testing.assert_allclose(exp.data[:, :nf], B)
    np.testing.assert_allclose(exp.data[:, -1], ref)
    np.testing.assert_allclose(exp.values[:, :nf], model.coef_ * (B - B.mean(axis=0)), rtol=0, atol=1e-10)


def test_energy_explicit_background(model, train, mixed):
    background = train[5:]
    exp = explain_energy(model, mixed, background=background)
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, model.predict(mixed),
                               rtol=0, atol=E_ATOL)
    np.testing.assert_allclose(exp.base_values, model.predict(background).mean(), rtol=0, atol=E_ATOL)
    # structures with the background's (ethanol) composition: no E0 term, the ACE columns alone add up
    same = [k for k, a in enumerate(mixed) if a.get_chemical_formula() == "C2H6O"]
    assert len(same) >= 3
    np.testing.assert_allclose(exp.values[same, -1], 0.0, atol=1e-9)
    np.testing.assert_allclose(exp.values[same, :-1].sum(axis=1) + exp.base_values[same],
                               model.predict([mixed[k] for k in same]), rtol=0, atol=E_ATOL)
    other = [k for k in range(len(mixed)) if k not in same]
    assert np.all(np.abs(exp.values[other, -1]) > 1.0)


def test_energy_agrees_with_shap_linear_explainer(model, train):
    X, background = train[:6], train[6:]
    ours = explain_energy(model, X, background=background)
    B, B_bg = model.descriptor_.transform(X), model.descriptor_.transform(background)
    masker = shap.maskers.Independent(B_bg, max_samples=len(B_bg))
    theirs = shap.LinearExplainer((model.coef_, 0.0), masker)(B)
    np.testing.assert_allclose(ours.values[:, :-1], theirs.values, rtol=1e-9, atol=1e-10)


def test_energy_single_structure_and_per_atom_descriptor(model, train):
    # a fitted model whose descriptor was switched to per_atom=True (e.g. to look at atomic
    # features): explanations still use the per-structure sums
    m = copy.deepcopy(model)
    m.descriptor_.set_params(per_atom=True)
    exp = explain_energy(m, train[0], background=train[:8])
    assert exp.values.shape == (1, m.n_features_ + 1)
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, m.predict([train[0]]),
                               rtol=0, atol=E_ATOL)
    assert m.descriptor_.per_atom  # the fitted model is left as it was


# ======================================================================
# forces
# ======================================================================
def test_forces_sum_identity_all_atoms(model, mixed):
    exp = explain_forces(model, mixed)
    n_atoms = sum(len(a) for a in mixed)
    assert exp.values.shape == (3 * n_atoms, model.n_features_)
    F = model.predict_forces(mixed)
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, F.ravel(), rtol=0, atol=F_ATOL)
    # features are translation invariant: the mean gradient over all atoms vanishes, base value 0
    np.testing.assert_allclose(exp.base_values, 0.0, atol=1e-10)
    G = model.descriptor_.transform_gradient(mixed)
    np.testing.assert_allclose(exp.data, G.reshape(3 * n_atoms, -1))
    np.testing.assert_allclose(exp.values, -model.coef_ * exp.data, rtol=0, atol=1e-10)
    assert exp.instance_names[0] == f"atom 0 ({mixed[0].get_chemical_symbols()[0]}) x"
    assert exp.instance_names[5] == f"atom 1 ({mixed[0].get_chemical_symbols()[1]}) z"


def test_forces_subset_with_restricted_background(model, train, mixed):
    atoms = [0, 7, -1, 7]
    n_atoms = sum(len(a) for a in mixed)
    rows = np.array([0, 7, n_atoms - 1, 7])
    background = train[4:12]
    hydrogens = [j for j, s in enumerate(np.concatenate([a.get_chemical_symbols() for a in background]))
                 if s == "H"]
    exp = explain_forces(model, mixed, atoms=atoms, background=background, background_atoms=hydrogens)
    assert exp.values.shape == (12, model.n_features_)
    F = model.predict_forces(mixed)[rows].ravel()
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, F, rtol=0, atol=F_ATOL)
    # base value: mean force component over the chosen background atoms
    np.testing.assert_allclose(exp.base_values, model.predict_forces(background)[hydrogens].mean(),
                               rtol=0, atol=F_ATOL)
    G = model.descriptor_.transform_gradient(mixed)[rows].reshape(12, -1)
    G_bg = model.descriptor_.transform_gradient(background)[hydrogens]
    np.testing.assert_allclose(exp.values, -model.coef_ * (G - G_bg.mean(axis=(0, 1))), rtol=0, atol=1e-10)


def test_forces_default_background_restricted_to_atoms_of_x(model, mixed):
    # background = X, restricted to X's atoms 2 and 3
    exp = explain_forces(model, mixed, atoms=[4], background_atoms=[2, 3])
    F = model.predict_forces(mixed)
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, F[4], rtol=0, atol=F_ATOL)
    np.testing.assert_allclose(exp.base_values, F[[2, 3]].mean(), rtol=0, atol=F_ATOL)


def test_forces_explicit_whole_background(model, train, mixed):
    exp = explain_forces(model, mixed, atoms=np.arange(3, 9), background=train[10:])
    F = model.predict_forces(mixed)[3:9].ravel()
    np.testing.assert_allclose(exp.values.sum(axis=1) + exp.base_values, F, rtol=0, atol=F_ATOL)
    np.testing.assert_allclose(exp.base_values, 0.0, atol=1e-10)


def test_forces_bad_atoms(model, mixed):
    n_atoms = sum(len(a) for a in mixed)
    with pytest.raises(IndexError):
        explain_forces(model, mixed, atoms=[n_atoms])
    with pytest.raises(IndexError):
        explain_forces(model, mixed, background_atoms=[-n_atoms - 1])
    with pytest.raises(ValueError, match="no atoms"):
        explain_forces(model, mixed, atoms=[])
    with pytest.raises(TypeError):
        explain_forces(model, mixed, atoms=[0.5])


# ======================================================================
# grouping
# ======================================================================
@pytest.mark.parametrize("by", GROUP_BY)
def test_group_energy_preserves_sums(model, mixed, by):
    exp = explain_energy(model, mixed)
    grouped = group_explanation(exp, model, by)
    table = model.descriptor_.get_feature_table()
    keys = [str(v) for v in table[by]]
    assert set(grouped.feature_names) == set(keys) | {E0_NAME}
    assert grouped.feature_names[-1] == E0_NAME
    if by != "center" and by != "neighbours":  # numeric keys: increasing
        assert [float(g) for g in grouped.feature_names[:-1]] == sorted(set(table[by].astype(float)))
    assert len(grouped.feature_names) == len(set(keys)) + 1
    np.testing.assert_allclose(grouped.values.sum(axis=1), exp.values.sum(axis=1), rtol=0, atol=1e-9)
    np.testing.assert_allclose(grouped.values.sum(axis=1) + grouped.base_values, model.predict(mixed),
                               rtol=0, atol=E_ATOL)
    np.testing.assert_array_equal(grouped.base_values, exp.base_values)
    for c, name in enumerate(grouped.feature_names):
        members = [k for k, key in enumerate(keys) if key == name]
        expected = exp.values[:, -1] if name == E0_NAME else exp.values[:, members].sum(axis=1)
        np.testing.assert_allclose(grouped.values[:, c], expected, rtol=0, atol=1e-12)


def test_group_order_and_forces(model, mixed):
    exp = explain_forces(model, mixed, atoms=[0, 1, 2])
    grouped = group_explanation(exp, model, "body_order")
    assert list(grouped.feature_names) == ["2", "3"]  # numeric keys sorted; no E0 for forces
    np.testing.assert_allclose(grouped.values.sum(axis=1) + grouped.base_values,
                               model.predict_forces(mixed)[:3].ravel(), rtol=0, atol=F_ATOL)
    # numeric keys in increasing order even when they first appear in another order
    negative = group_explanation(exp, model, lambda row: -int(row["body_order"]))
    assert list(negative.feature_names) == ["-3", "-2"]
    np.testing.assert_allclose(negative.values, grouped.values[:, ::-1], rtol=0, atol=1e-12)
    centers = group_explanation(exp, model, "center")
    assert list(centers.feature_names) == list(model.descriptor_.elements_)
    # one row (a sliced explanation) groups too
    one = group_explanation(exp[1], model, "neighbours")
    assert one.values.shape == (len(set(model.descriptor_.get_feature_table().neighbours)),)
    np.testing.assert_allclose(one.values.sum(), exp[1].values.sum(), rtol=0, atol=1e-12)


def test_group_by_callable(model, mixed):
    exp = explain_energy(model, mixed)
    grouped = group_explanation(exp, model, lambda row: "radial" if row["l_max"] == 0 else "angular")
    table = model.descriptor_.get_feature_table()
    radial = (table.l_max == 0).to_numpy()
    assert set(grouped.feature_names) == {"radial", "angular", E0_NAME}
    c = list(grouped.feature_names).index("radial")
    np.testing.assert_allclose(grouped.values[:, c], exp.values[:, :-1][:, radial].sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(grouped.values.sum(axis=1), exp.values.sum(axis=1), rtol=0, atol=1e-9)


def test_group_errors(model, mixed):
    exp = explain_energy(model, mixed[:3])
    with pytest.raises(ValueError, match="not a feature-table column"):
        group_explanation(exp, model, "colour")
    with pytest.raises(TypeError):
        group_explanation(exp, model, 3)
    with pytest.raises(ValueError, match="reserved"):
        group_explanation(exp, model, lambda row: E0_NAME)
    foreign = shap.Explanation(values=np.zeros((2, 2)), feature_names=["a", "b"])
    with pytest.raises(ValueError, match="not a feature of this model"):
        group_explanation(foreign, model, "body_order")
    with pytest.raises(NotFittedError):
        group_explanation(exp, ACERegressor(ACETransformer(**KW)), "body_order")


# ======================================================================
# errors for unfitted models
# ======================================================================
def test_unfitted_model_raises(train):
    unfitted = ACERegressor(ACETransformer(**KW))
    for call in (lambda: explain_energy(unfitted, train[:2]),
                 lambda: explain_forces(unfitted, train[:2]),
                 lambda: atomic_energy_attribution(unfitted, train[:2])):
        with pytest.raises(NotFittedError):
            call()


# ======================================================================
# atomic energies
# ======================================================================
def test_atomic_energy_attribution(model, mixed):
    energies = atomic_energy_attribution(model, mixed)
    assert [len(e) for e in energies] == [len(a) for a in mixed]
    np.testing.assert_allclose([e.sum() for e in energies], model.predict(mixed), rtol=0, atol=E_ATOL)
    relative = atomic_energy_attribution(model, mixed, relative=True)
    np.testing.assert_allclose([e.sum() for e in relative], model.predict(mixed) - counts_e0(mixed),
                               rtol=0, atol=E_ATOL)
    for a, e, r in zip(mixed, energies, relative):
        np.testing.assert_allclose(e - r, [E0[s] for s in a.get_chemical_symbols()], rtol=0, atol=1e-9)


# ======================================================================
# plots (headless)
# ======================================================================
def test_save_plot_writes_png(model, mixed, tmp_path):
    open_before = plt.get_fignums()
    exp = explain_energy(model, mixed)
    paths = {
        "bar": tmp_path / "bar.png",
        "beeswarm": tmp_path / "beeswarm.png",
        "grouped": tmp_path / "grouped.png",
        "one": tmp_path / "one.png",
        "forces": tmp_path / "forces.png",
    }
    save_plot(exp, paths["bar"], kind="bar", max_display=6)
    save_plot(exp, paths["beeswarm"], kind="beeswarm", max_display=6, title="energy")
    save_plot(group_explanation(exp, model, "neighbours"), paths["grouped"], kind="beeswarm")
    save_plot(exp[0], paths["one"], kind="bar")
    save_plot(explain_forces(model, mixed, atoms=[0, 1]), paths["forces"], kind="bar", max_display=4)
    for path in paths.values():
        assert png_written(path), path
    assert plt.get_fignums() == open_before  # every figure closed
    fig = save_plot(exp, tmp_path / "open.png", close=False)
    assert fig.number in plt.get_fignums()
    plt.close(fig)


def test_save_plot_errors(model, mixed, tmp_path):
    exp = explain_energy(model, mixed)
    with pytest.raises(ValueError, match="kind"):
        save_plot(exp, tmp_path / "x.png", kind="waterfall")
    with pytest.raises(ValueError, match="several rows"):
        save_plot(exp[0], tmp_path / "x.png", kind="beeswarm")
    with pytest.raises(TypeError):
        save_plot(exp.values, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_atomic_energies(model, mixed, tmp_path):
    open_before = plt.get_fignums()
    energies = atomic_energy_attribution(model, mixed)
    for k, e0 in enumerate([model, E0, None]):
        path = tmp_path / f"atoms{k}.png"
        fig = plot_atomic_energies(mixed[3], energies[3], path, e0=e0)
        assert png_written(path)
        assert len(fig.axes) == 2  # the 3D axes and the colour bar
    # the colour scale shows energies relative to E0 (symmetric about zero)
    relative = energies[3] - np.array([E0[s] for s in mixed[3].get_chemical_symbols()])
    colour_bar = plot_atomic_energies(mixed[3], energies[3], tmp_path / "r.png", e0=E0).axes[1]
    assert colour_bar.get_ylim() == pytest.approx((-np.abs(relative).max(), np.abs(relative).max()))
    assert plt.get_fignums() == open_before
    with pytest.raises(ValueError, match="entries"):
        plot_atomic_energies(mixed[3], energies[3][:-1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="no reference energy"):
        plot_atomic_energies(mixed[3], energies[3], tmp_path / "bad.png", e0={"H": 0.0})
