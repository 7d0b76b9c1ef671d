"""Tests of the ``skace`` command line (``skace.cli.main``): fit, evaluate, features, md, help,
and user mistakes that must end as exit status 2 with one line on stderr (no traceback)."""

import contextlib
import io
import re

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from threadpoolctl import threadpool_limits

import skace
from skace import ACERegressor, ACETransformer
from skace.cli import main
from skace.datasets import load_sample

threadpool_limits(limits=1, user_api="blas")  # see test_regressor.py: conftest's limit comes too early

FIT = ["--n-train", "30", "--max-degree", "6", "--correlation-order", "2", "--cutoff", "4", "-q"]


def run(argv):
    """``main(argv)`` with stdout and stderr captured (for module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def table_rows(text):
    """``{set name: (n, E MAE, E RMSE, F MAE, F RMSE)}`` from an error table."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(train|test|data)\s+(\d+)((?:\s+(?:[-\d.]+|n/a)){4})\s*$", line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), *[np.nan if v == "n/a" else float(v) for v in m.group(3).split()])
    return rows


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "ethanol.skace"
    code, out, err = run(["fit", "sample", *FIT, "-o", str(path)])
    return path, code, out, err


def test_fit_writes_model_and_prints_table(fitted):
    path, code, out, err = fitted
    assert code == 0, err
    assert path.is_file()
    model = skace.load(path)
    assert isinstance(model, ACERegressor)
    assert model.descriptor_.correlation_order == 2 and model.descriptor_.cutoff == 4.0
    assert "E MAE" in out and "F RMSE" in out
    assert f"model written to {path}" in out
    rows = table_rows(out)
    assert rows["train"][0] == 30 and rows["test"][0] == 250
    for name in ("train", "test"):
        assert all(np.isfinite(rows[name][1:])) and all(v > 0 for v in rows[name][1:])
    assert "Traceback" not in err
    assert err.strip() == "", "-q should print no progress bar"


def test_evaluate(fitted, capsys):
    path, *_ = fitted
    assert main(["evaluate", str(path), "sample-test"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["data"][0] == 250
    # the same model on the same data as the "test" row printed by fit
    np.testing.assert_allclose(rows["data"][1:], table_rows(fitted[2])["test"][1:])
    # and the numbers are the model's errors (meV, meV/Å)
    model = skace.load(path)
    res = skace.metrics.evaluate(model, load_sample("test"))
    np.testing.assert_allclose(rows["data"][1:], [1000 * res[k] for k in
                               ("energy_mae", "energy_rmse", "force_mae", "force_rmse")], atol=0.006)


def test_features(capsys):
    assert main(["features", "sample", "--max-degree", "4", "--correlation-order", "2", "--l-weight", "1.5"]) == 0
    out = capsys.readouterr().out
    n = ACETransformer(correlation_order=2, max_degree=4).fit(load_sample(n=1)).n_features_out_
    assert "250 structures" in out and "2250 atoms" in out
    assert f"{n} features" in out
    assert f"feature matrix (250, {n})" in out


def test_features_center_max_degree(capsys):
    args = ["features", "sample", "--max-degree", "4", "--correlation-order", "2", "--l-weight", "1.5"]
    assert main(args + ["--center-max-degree", "H=3", "--center-max-degree", "O=3.5"]) == 0
    n = ACETransformer(correlation_order=2, max_degree=4, l_weight=1.5,
                       center_max_degree={"H": 3, "O": 3.5}).fit(load_sample(n=1)).n_features_out_
    assert n < ACETransformer(correlation_order=2, max_degree=4, l_weight=1.5).fit(load_sample(n=1)).n_features_out_
    assert f"feature matrix (250, {n})" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--center-max-degree", "H:3"])
    assert exit_info.value.code == 2
    assert "SYMBOL=DEGREES" in capsys.readouterr().err


@pytest.mark.parametrize("thermostat", ["nve", "langevin"])
def test_md(fitted, tmp_path, capsys, thermostat):
    path, *_ = fitted
    traj = tmp_path / "md.traj"
    code = main(["md", str(path), "sample-test", "--steps", "5", "--trajectory", str(traj),
                 "--thermostat", thermostat])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "5 steps of 0.5 fs" in captured.out
    assert f"trajectory written to {traj}" in captured.out
    frames = ase.io.read(traj, index=":")
    assert len(frames) == 6
    start = load_sample("test", n=1)[0]
    np.testing.assert_allclose(frames[0].positions, start.positions)
    assert not np.allclose(frames[-1].positions, start.positions)
    model = skace.load(path)
    for frame in frames:
        assert frame.get_potential_energy() == pytest.approx(model.predict([frame])[0], rel=1e-12)


def test_fit_from_extxyz_file(tmp_path, capsys):
    """Data written by ase (targets as calculator results) round-trips through the CLI."""
    data = tmp_path / "train.xyz"
    frames = []
    for a in load_sample(n=12):
        b = Atoms(a.numbers, a.positions)
        b.calc = SinglePointCalculator(b, energy=a.info["energy"], forces=a.arrays["forces"])
        frames.append(b)
    ase.io.write(data, frames, format="extxyz")
    out_path = tmp_path / "m.skace"
    code = main(["fit", str(data), "--test", str(data), "--max-degree", "4", "--correlation-order", "2",
                 "--cutoff", "4", "--solver", "ridge", "--alpha", "1e-4", "-q", "-o", str(out_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = table_rows(captured.out)
    assert rows["train"][0] == 12 and rows["test"] == rows["train"]
    assert skace.load(out_path).alpha_ == 1e-4


@pytest.mark.parametrize("command", [[], ["fit"], ["evaluate"], ["features"], ["md"], ["sparsify"], ["explain"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: skace")
    assert "rmd17:MOLECULE" in out  # the DATA epilog


# ======================================================================
# user mistakes: exit status 2, one line on stderr, no traceback
# ======================================================================
def check_error(capsys, argv, *needles):
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"skace {argv[0]}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def check_usage_error(capsys, argv, *needles):
    """An option argparse rejects: exit status 2 with the command's own usage, and a last line
    ``skace COMMAND: error: ...`` naming the problem."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"usage: skace {argv[0]}" in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"skace {argv[0]}: error: "), last
    for needle in needles:
        assert needle in last, last
    return last


def test_missing_model_file(capsys, tmp_path):
    check_error(capsys, ["evaluate", str(tmp_path / "missing.skace"), "sample-test"], "no such model file",
                "missing.skace")


def test_missing_data_file(capsys, tmp_path):
    check_error(capsys, ["fit", str(tmp_path / "missing.xyz"), *FIT], "missing.xyz")


def test_unknown_rmd17_molecule(capsys):
    check_error(capsys, ["fit", "rmd17:unobtainium", *FIT], "unobtainium")


def test_model_path_that_is_not_a_model(capsys, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n")
    check_error(capsys, ["evaluate", str(junk), "sample-test"], "not a skace model")
    check_error(capsys, ["md", str(junk), "sample-test", "--steps", "2"], "not a skace model")
    check_error(capsys, ["evaluate", str(tmp_path), "sample-test"])  # a folder


def test_model_file_holding_another_object(capsys, tmp_path):
    """A skace file whose payload is not a regressor (here a fitted transformer)."""
    path = tmp_path / "transformer.skace"
    skace.save(ACETransformer(cutoff=3.0, correlation_order=1, max_degree=3).fit(load_sample(n=1)), path)
    check_error(capsys, ["evaluate", str(path), "sample-test"])


def test_damaged_model_file(fitted, capsys, tmp_path):
    path, *_ = fitted
    broken = tmp_path / "broken.skace"
    broken.write_bytes(path.read_bytes()[:-100])
    check_error(capsys, ["evaluate", str(broken), "sample-test"], "truncated")


def test_bad_values(capsys, fitted, tmp_path):
    path, *_ = fitted
    check_usage_error(capsys, ["fit", "sample", *FIT, "--cutoff", "-1"], "--cutoff", "must be > 0")
    check_usage_error(capsys, ["fit", "sample", *FIT, "--correlation-order", "0"], "--correlation-order")
    check_error(capsys, ["fit", "sample", "--n-train", "0", "-q"], "--n-train 0 leaves no structures")
    check_error(capsys, ["md", str(path), "sample-test", "--index", "999", "--steps", "2",
                         "--trajectory", str(tmp_path / "t.traj")])
    check_error(capsys, ["md", str(path), "sample-test", "--steps", "2",
                         "--trajectory", str(tmp_path / "no" / "such" / "dir" / "t.traj")])


def test_md_stops_cleanly_when_atoms_collapse(fitted, capsys, tmp_path, monkeypatch):
    """Atoms overlapping mid-run end as one error line naming the step, and the trajectory so far stays."""
    from skace.calculator import ACECalculator
    path, *_ = fitted
    calculate, calls = ACECalculator.calculate, []

    def collapse_on_third_call(self, atoms=None, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the start and one step done
            atoms.positions[1] = atoms.positions[0] + [0.0, 0.0, 0.05]
        return calculate(self, atoms, *args, **kwargs)

    monkeypatch.setattr(ACECalculator, "calculate", collapse_on_third_call)
    traj = tmp_path / "t.traj"
    line = check_error(capsys, ["md", str(path), "sample-test", "--steps", "5", "--trajectory", str(traj)],
                       "MD stopped after 1 of 5 steps: overlapping atoms in atoms: atom 0 has a neighbour closer "
                       "than 0.1 Å", f"the trajectory up to there is in {traj}")
    assert len(ase.io.read(traj, index=":")) == 2, line  # the start and the one step


def test_md_with_zero_steps(fitted, capsys, tmp_path):
    """``--steps 0`` is a user mistake (or a no-op), not a ZeroDivisionError traceback."""
    path, *_ = fitted
    code = main(["md", str(path), "sample-test", "--steps", "0", "--trajectory", str(tmp_path / "t.traj")])
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    assert "Traceback" not in captured.err


def test_data_without_energies(capsys, tmp_path):
    data = tmp_path / "bare.xyz"
    ase.io.write(data, [Atoms(a.numbers, a.positions) for a in load_sample(n=3)], format="extxyz")
    check_error(capsys, ["fit", str(data), *FIT], "missing energy")


def test_unknown_element_in_md_structure(fitted, capsys, tmp_path):
    path, *_ = fitted
    atoms = load_sample("test", n=1)[0]
    atoms[0].symbol = "N"
    data = tmp_path / "nitrogen.xyz"
    ase.io.write(data, Atoms(atoms.numbers, atoms.positions), format="extxyz")
    check_error(capsys, ["md", str(path), str(data), "--steps", "2", "--trajectory", str(tmp_path / "t.traj")],
                "'N'")


def test_unreadable_data_file(capsys, tmp_path):
    data = tmp_path / "garbage.xyz"
    data.write_bytes(b"\x00\x01 not xyz at all\n3\n")
    check_error(capsys, ["features", str(data)], "garbage.xyz")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    check_error(capsys, ["features", str(notes)], "notes.txt", "no reader for 'txt'")
    check_error(capsys, ["features", str(tmp_path)], "is a folder")


def test_bad_option_exits_2(capsys):
    line = check_usage_error(capsys, ["fit", "sample", "--max-degree", "abc"], "--max-degree", "'abc'")
    assert "_degree" not in line  # no internal function names
    # an unknown option comes with the usage of the command it was given to
    check_usage_error(capsys, ["evaluate", "m.skace", "sample-test", "--bogus"], "--bogus")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_degree_bounds_are_counted_before_the_data_are_read(capsys):
    line = check_error(capsys, ["fit", "no-such-file.xyz", "--max-degree", "8,4"], "--max-degree gives 2 bounds",
                       "--correlation-order 4 needs")
    assert "no such data file" not in line
    check_error(capsys, ["features", "sample", "--correlation-order", "3", "--center-max-degree", "H=8,4"],
                "--center-max-degree H gives 2 bounds")


def write_sample(path, n=3, split="test", **info):
    """The sample's first ``n`` structures as extxyz, targets under the info keys given
    (``energy="E_dft"`` stores the energy as ``info["E_dft"]``), or as ase writes them."""
    frames = []
    for a in load_sample(split, n=n):
        b = Atoms(a.numbers, a.positions)
        if info:
            b.info[info["energy"]] = a.info["energy"]
            b.arrays[info["forces"]] = a.arrays["forces"].copy()
        else:
            b.calc = SinglePointCalculator(b, energy=a.info["energy"], forces=a.arrays["forces"])
        frames.append(b)
    ase.io.write(path, frames, format="extxyz")
    return path


def test_outputs_are_checked_before_the_work(fitted, capsys, tmp_path, monkeypatch):
    """A bad output path fails at once (not after a fit of half an hour), and no output
    replaces an input: the files are byte for byte what they were."""
    monkeypatch.chdir(tmp_path)  # where a file named "-" would land
    model = fitted[0]
    data = write_sample(tmp_path / "data.xyz")
    before = {p: p.read_bytes() for p in (model, data)}
    (tmp_path / "folder").mkdir()
    for argv, needle in (
        (["fit", str(data), *FIT, "-o", str(tmp_path / "missing" / "m.skace")], "missing"),
        (["fit", str(data), *FIT, "-o", str(data / "m.skace")], "not a folder"),
        (["fit", str(data), *FIT, "-o", str(tmp_path / "folder")], "is a folder"),
        (["fit", str(data), *FIT, "-o", str(data)], "is also an input"),
        (["fit", str(data), *FIT, "-o", str(tmp_path / ("x" * 300))], "cannot write there"),
        (["fit", str(data), *FIT, "-o", "-"], "standard output"),
        (["md", str(model), str(data), "--steps", "2", "--trajectory", "-"], "standard output"),
        (["md", str(model), str(data), "--steps", "2", "--trajectory", str(model)], "is also an input"),
        (["md", str(model), str(data), "--steps", "2", "--trajectory", str(data)], "is also an input"),
        (["export", str(model), "-o", str(model)], "is also an input"),
        (["sparsify", str(model), str(data), "-o", str(data), "-q"], "is also an input"),
        (["explain", str(model), str(data), "--plot", str(model)], "is also an input"),
    ):
        check_error(capsys, argv, needle)
    assert {p: p.read_bytes() for p in (model, data)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.xyz", "folder"]  # no probe left behind
    # a name of the longest length the folder takes is fine where the file is written directly
    longest = tmp_path / ("t" * (255 - len(".traj")) + ".traj")
    assert main(["md", str(model), str(data), "--steps", "1", "--trajectory", str(longest)]) == 0
    assert longest.stat().st_size > 0


def test_existing_outputs_are_replaced_only_with_force(fitted, capsys, tmp_path):
    """Nothing a user saved is replaced by accident: an existing output file is an error (before
    any work) unless --force is given."""
    model = fitted[0]
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for argv in (["fit", "sample", *FIT, "-o", str(notes)],
                 ["md", str(model), "sample-test", "--steps", "1", "--trajectory", str(notes)],
                 ["export", str(model), "-o", str(notes)],
                 ["sparsify", str(model), "sample-test", "-n", "5", "-q", "-o", str(notes)]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert f"{notes} exists; pass --force to replace it" in captured.err
        assert captured.out == ""  # refused before any work
    assert notes.read_text() == "my notes\n"
    assert main(["md", str(model), "sample-test", "--steps", "1", "--trajectory", str(notes), "--force"]) == 0
    assert ase.io.read(notes, format="traj") is not None


def test_fit_says_when_the_model_is_not_saved(capsys):
    assert main(["fit", "sample", *FIT]) == 0
    assert "model not saved (give -o FILE to keep it)" in capsys.readouterr().out


def test_alpha_only_with_the_ridge_solver(capsys):
    check_error(capsys, ["fit", "sample", *FIT, "--alpha", "1e-3"], "--alpha is for --solver ridge")


def test_data_without_forces_shows_na(fitted, capsys, tmp_path):
    frames = [Atoms(a.numbers, a.positions, info={"energy": a.info["energy"]}) for a in load_sample("test", n=3)]
    ase.io.write(tmp_path / "noforces.xyz", frames, format="extxyz")
    assert main(["evaluate", str(fitted[0]), str(tmp_path / "noforces.xyz")]) == 0
    out = capsys.readouterr().out
    assert "n/a" in out and "not every structure in these data has forces" in out and "nan" not in out
    assert np.isfinite(table_rows(out)["data"][1])
    # and a fit that needs them names the file and the command-line way out
    check_error(capsys, ["fit", str(tmp_path / "noforces.xyz"), *FIT], "noforces.xyz[0]", "--force-weight 0")


def test_errors_name_the_data_file(fitted, capsys, tmp_path):
    atoms = load_sample("test", n=3)
    atoms[1][0].symbol = "N"
    ase.io.write(tmp_path / "n.xyz", atoms, format="extxyz")
    check_error(capsys, ["evaluate", str(fitted[0]), str(tmp_path / "n.xyz")], f"{tmp_path / 'n.xyz'}[1]",
                "'N'", "the model lacks")
    # md names the structure it runs, and checks only that one
    for index in ("1", "-2"):
        check_error(capsys, ["md", str(fitted[0]), str(tmp_path / "n.xyz"), "--index", index, "--steps", "1",
                             "--trajectory", ""], f"{tmp_path / 'n.xyz'}[1]", "'N'")
    assert main(["md", str(fitted[0]), str(tmp_path / "n.xyz"), "--index", "2", "--steps", "1",
                 "--trajectory", ""]) == 0
    capsys.readouterr()
    check_error(capsys, ["fit", "sample", *FIT[2:], "--n-train", "0"], "--n-train 0 leaves no structures")
    check_error(capsys, ["explain", str(fitted[0]), "sample-test", "-n", "0"], "-n 0 leaves no structures")
    atoms[1].positions[0, 0] = np.nan
    ase.io.write(tmp_path / "nan.xyz", atoms, format="extxyz")
    check_error(capsys, ["evaluate", str(fitted[0]), str(tmp_path / "nan.xyz")], f"{tmp_path / 'nan.xyz'}[1]",
                "NaN")


def test_test_data_is_checked_before_the_fit(capsys, tmp_path):
    atoms = load_sample("test", n=1)[0]
    atoms[0].symbol = "N"
    atoms.info["energy"] = 0.0
    ase.io.write(tmp_path / "n.xyz", atoms, format="extxyz")
    line = check_error(capsys, ["fit", "sample", *FIT, "--test", str(tmp_path / "n.xyz")], "'N'",
                       "the training data lack")
    assert "fitting" not in capsys.readouterr().out, line
    ase.io.write(tmp_path / "bare.xyz", Atoms(atoms.numbers[1:], atoms.positions[1:]), format="extxyz")
    check_error(capsys, ["fit", "sample", *FIT, "--test", str(tmp_path / "bare.xyz")], "missing energy")


def test_data_keys_of_evaluate_sparsify_and_explain(fitted, capsys, tmp_path):
    """Data whose targets sit under other keys than the model was fitted with."""
    data = write_sample(tmp_path / "dft.xyz", n=5, energy="E_dft", forces="F_dft")
    check_error(capsys, ["evaluate", str(fitted[0]), str(data)], "missing energy")
    assert main(["evaluate", str(fitted[0]), str(data), "--energy-key", "E_dft", "--forces-key", "F_dft"]) == 0
    plain = table_rows(capsys.readouterr().out)["data"]
    assert main(["evaluate", str(fitted[0]), str(write_sample(tmp_path / "plain.xyz", n=5))]) == 0
    assert table_rows(capsys.readouterr().out)["data"] == plain
    assert main(["explain", str(fitted[0]), str(data), "--energy-key", "E_dft", "--top", "2"]) == 0


def test_md_options(fitted, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["md", str(fitted[0]), "sample-test", "--steps", "2", "--trajectory", ""]) == 0
    assert "trajectory" not in capsys.readouterr().out and not list(tmp_path.iterdir())
    for option, value in (("--temperature", "-5"), ("--timestep", "0"), ("--threads", "0")):
        argv = ["md", str(fitted[0]), "sample-test", "--steps", "2", option, value]
        if option == "--threads":
            argv = ["fit", "sample", *FIT, option, value]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and option in capsys.readouterr().err
    check_error(capsys, ["md", str(fitted[0]), "sample-test", "--index", "-300"], "holds 250 structure(s)")
    atoms = load_sample("test", n=1)[0]
    atoms.positions[2, 1] = np.nan
    ase.io.write(tmp_path / "nan.xyz", atoms, format="extxyz")
    check_error(capsys, ["md", str(fitted[0]), str(tmp_path / "nan.xyz"), "--steps", "1"], "NaN")


def test_center_degree_of_an_absent_element(capsys):
    check_error(capsys, ["fit", "sample", *FIT, "--center-max-degree", "N=4"], "N", "not in the data")


def test_explain_names_the_plot_it_wrote(fitted, capsys, tmp_path):
    assert main(["explain", str(fitted[0]), "sample-test", "-n", "5", "--plot", str(tmp_path / "shap")]) == 0
    assert f"plot written to {tmp_path / 'shap.png'}" in capsys.readouterr().out
    assert (tmp_path / "shap.png").stat().st_size > 0
    # a format matplotlib cannot write fails before the analysis
    line = check_error(capsys, ["explain", str(fitted[0]), "sample-test", "--plot", str(tmp_path / "s.v2")],
                       "matplotlib writes", "png")
    assert not list(tmp_path.glob("s.v2*")), line


def test_empty_data_file(capsys, tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    check_error(capsys, ["fit", str(tmp_path / "empty.xyz"), *FIT], "empty.xyz is empty")


def test_error_table_columns_stay_apart():
    from skace.cli import _error_table

    huge = dict(energy_mae=310265.78963, energy_rmse=310265.79011, force_mae=1.5, force_rmse=2.5)
    rows = table_rows(_error_table([("test", 7, huge), ("train", 12, dict(energy_mae=1e-3))]))
    assert rows["test"] == (7, 310265789.63, 310265790.11, 1500.0, 2500.0)
    assert rows["train"][:2] == (12, 1.0) and np.isnan(rows["train"][2])


def test_sparsify_writes_smaller_model_that_predicts(fitted, tmp_path, capsys):
    path = fitted[0]
    out_path = tmp_path / "sparse.skace"
    code = main(["sparsify", str(path), "sample", "--n-train", "30", "--test", "sample-test", "-n", "12",
                 "--method", "omp", "-q", "-o", str(out_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = dict(re.findall(r"^(full|sparse)\s+(\d+)\s", out, flags=re.M))
    assert int(rows["sparse"]) == 12 and int(rows["full"]) == skace.load(path).n_features_
    sparse = skace.load(out_path)
    assert sparse.n_features_ == 12
    test = load_sample("test", n=5)
    assert np.all(np.isfinite(sparse.predict_forces(test)))


def test_explain_prints_groups_and_plots(fitted, tmp_path, capsys):
    plot = tmp_path / "shap.png"
    code = main(["explain", str(fitted[0]), "sample-test", "-n", "20", "--by", "body_order", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == 0, err
    groups = re.findall(r"^\s+(\S+)\s+([-\d.]+)$", out, flags=re.M)
    assert {g for g, _ in groups} >= {"2", "3"}  # correlation order 2: two- and three-body groups
    assert plot.stat().st_size > 0
    code = main(["explain", str(fitted[0]), "sample-test", "--by", "colour"])
    assert code == 2 and "unknown --by" in capsys.readouterr().err


def test_fit_emt_extxyz_with_stress_and_repulsion(tmp_path, capsys):
    """Periodic data with stresses (as ase writes them) and the repulsive baseline option."""
    from skace.baselines import PairRepulsion
    from skace.datasets import make_emt_dataset

    data = tmp_path / "emt.xyz"
    frames = []
    for a in make_emt_dataset(n_structures=8, size=1, random_state=0):
        b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=True)
        b.calc = SinglePointCalculator(b, energy=a.info["energy"], forces=a.arrays["forces"],
                                       stress=a.info["stress"])
        frames.append(b)
    ase.io.write(data, frames, format="extxyz")
    out_path = tmp_path / "m.skace"
    code = main(["fit", str(data), "--max-degree", "4", "--correlation-order", "2", "--cutoff", "4",
                 "--solver", "ridge", "--alpha", "1e-4", "--stress-weight", "3", "--repulsion", "-q",
                 "-o", str(out_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    model = skace.load(out_path)
    assert model.stress_weight == 3.0 and isinstance(model.baseline, PairRepulsion)


def test_default_degrees_count_the_stress_rows_that_are_fitted():
    """The command line's default basis counts rows as ``ACERegressor`` does: with stress
    fitted, 6 more per structure can lift a fit out of the few-data budget."""
    from skace.cli import _degree_params, build_parser
    from skace.datasets import make_emt_dataset
    from skace.regressor import DEFAULT_MAX_FEATURES, FEW_DATA_MAX_FEATURES, default_degrees, default_n_features

    elements = ["Al", "Cu", "Ni"]
    edge = default_n_features(elements) // 10
    n = edge // 13  # 4-atom cells: 13 energy and force rows each, 19 with the stress
    data = make_emt_dataset(n, elements=("Cu", "Al", "Ni"), size=1, vacancy_fraction=0, md_steps=1, random_state=0)
    assert sorted({s for a in data for s in a.get_chemical_symbols()}) == elements and 13 * n <= edge < 19 * n
    few, standard = default_degrees(elements, FEW_DATA_MAX_FEATURES), default_degrees(elements, DEFAULT_MAX_FEATURES)
    assert few != standard
    parser = build_parser()
    assert _degree_params(parser.parse_args(["fit", "--stress-weight", "0"]), data) == few
    assert _degree_params(parser.parse_args(["fit"]), data) == standard


def test_default_degrees_follow_the_ladder_and_merge_center_options():
    from skace.cli import _degree_params, build_parser
    from skace.regressor import FEW_DATA_MAX_FEATURES, default_degrees

    sample = load_sample()  # C, H, O: the per-centre rung (250 structures, 7000 rows: not few data)
    args = build_parser().parse_args(["features", "sample"])
    assert _degree_params(args, sample) == default_degrees(["C", "H", "O"])
    few = _degree_params(args, sample[:10])  # 280 rows: few data, as for ACERegressor's default
    assert few == default_degrees(["C", "H", "O"], FEW_DATA_MAX_FEATURES) and few["max_degree"] == [16, 8, 7, 8]
    assert _degree_params(args, sample)["center_max_degree"] is not None
    args = build_parser().parse_args(["features", "sample", "--correlation-order", "2", "--center-max-degree", "O=3"])
    params = _degree_params(args, sample)
    expected = default_degrees(["C", "H", "O"])
    assert params["max_degree"] == expected["max_degree"][:2]
    assert params["center_max_degree"] == {"H": expected["center_max_degree"]["H"][:2], "O": 3.0}
    args = build_parser().parse_args(["features", "sample", "--max-degree", "4"])
    assert _degree_params(args, sample)["center_max_degree"] is None
    assert expected["max_degree"] == [16, 8, 7, 7.5]  # the carbon five-body rung
    args = build_parser().parse_args(["fit", "--max-features", "28200"])  # the rung below it
    params = _degree_params(args, sample)
    assert params == default_degrees(["C", "H", "O"], max_features=28200)
    assert params == {"max_degree": [16, 8, 7, 7], "center_max_degree": {"H": [16, 8, 6.5, 5]}}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--max-features", "0"])
