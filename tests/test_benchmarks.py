"""The benchmark scripts' helpers that need no data (the fits themselves run in benchmarks/)."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "rmd17.py"


@pytest.fixture(scope="module")
def rmd17():
    spec = importlib.util.spec_from_file_location("rmd17_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path, rows):
    path.write_text(json.dumps({"machine": "test", "settings": {}, "results": rows}))
    return str(path)


def test_plot_from_saved_results_keeps_the_latest_row(rmd17, tmp_path):
    row = dict(molecule="ethanol", n_train=1000, energy_mae_meV=1.12, force_mae_meV_per_A=6.56)
    old = _write(tmp_path / "old.json", [row, dict(row, n_train=50, energy_mae_meV=8.5, force_mae_meV_per_A=38.1),
                                          {"molecule": "azobenzene", "skipped": "train or test file absent"}])
    new = _write(tmp_path / "new.json", [dict(row, energy_mae_meV=1.07, force_mae_meV_per_A=6.26)])
    merged = rmd17.merged_results([old, new])
    assert [(r["n_train"], r["energy_mae_meV"]) for r in merged] == [(50, 8.5), (1000, 1.07)]
    png = tmp_path / "curve.png"
    rmd17.main(["--plot", str(png), "--plot-from", old, new])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_from_leaves_out_rows_fitted_with_settings(rmd17, tmp_path, capsys):
    row = dict(molecule="aspirin", n_train=1000, energy_mae_meV=6.47, force_mae_meV_per_A=19.0)
    defaults = _write(tmp_path / "defaults.json", [row, dict(row, n_train=50, energy_mae_meV=25.0,
                                                             force_mae_meV_per_A=62.7)])
    tuned = _write(tmp_path / "tuned.json", [dict(row, energy_mae_meV=5.36, force_mae_meV_per_A=17.1,
                                                  settings={"descriptor__max_degree": [16, 8, 7, 7.5]})])
    assert [r["energy_mae_meV"] for r in rmd17.merged_results([defaults, tuned])] == [25.0, 5.36]
    assert [r["energy_mae_meV"] for r in rmd17.merged_results([defaults, tuned], defaults_only=True)] == [25.0, 6.47]
    rmd17.main(["--markdown", "--plot-from", defaults, tuned])
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| molecule | 50 | 1000 |"
    assert table[2] == "| aspirin | 25.00 / 62.70 | 6.47 / 19.00 |"


def test_curve_table_marks_cells_not_fitted_as_the_defaults_fit_them(rmd17, capsys):
    """50 ethanol configurations are few data (a larger basis, other prior weights), 500 are
    not; a result saved before the prior weights were recorded had weights (1, 1)."""
    from skace.regressor import FEW_DATA_MAX_FEATURES, default_n_features

    per_element = {"C": 1, "H": 1, "O": 1}  # the elements are what matters
    few = default_n_features(["C", "H", "O"], FEW_DATA_MAX_FEATURES)
    current = dict(molecule="ethanol", n_train=50, energy_mae_meV=7.5, force_mae_meV_per_A=36.0, n_features=few,
                   n_features_per_element=per_element, prior_weights=[2.0, 0.8], n_atoms=9)
    older = dict(current, n_train=500, energy_mae_meV=1.55, force_mae_meV_per_A=8.78, n_features=28152,
                 prior_weights=[1.0, 1.0])
    lines = rmd17.curve_table([current, older]).splitlines()
    assert lines[2] == "| ethanol | 7.50 / 36.00 | 1.55 / 8.78 † (28152) |"
    assert lines[-1].startswith("† not fitted as `ACERegressor()` now fits these data")
    unrecorded = {k: v for k, v in current.items() if k not in ("prior_weights", "n_atoms")}
    lines = rmd17.curve_table([dict(unrecorded, n_features=default_n_features(["C", "H", "O"]))]).splitlines()
    assert lines[2] == "| ethanol | 7.50 / 36.00 † (37062, prior weights 1 / 1) |"


def test_plot_from_needs_an_output(rmd17, tmp_path):
    with pytest.raises(SystemExit, match="--plot"):
        rmd17.main(["--plot-from", _write(tmp_path / "a.json", [])])


def test_time_models_times_a_saved_model_on_its_test_split(rmd17, tmp_path, capsys):
    """``--time-models`` loads ``MOLECULE_N.skace``, evaluates it on that molecule's test split
    (errors as a check that the file is the model meant) and times energy + forces."""
    import numpy as np
    from ase.units import kcal, mol

    import skace
    from skace import ACERegressor, ACETransformer
    from skace.datasets import load_sample
    from skace.metrics import evaluate

    data = load_sample(n=14)
    train, test = data[:10], data[10:]
    np.savez(tmp_path / "rmd17_ethanol_test_01.npz", nuclear_charges=test[0].numbers.astype(np.uint8),
             coords=np.array([a.positions for a in test]),
             energies=np.array([a.info["energy"] for a in test]) / (kcal / mol),
             forces=np.array([a.arrays["forces"] for a in test]) / (kcal / mol), old_indices=np.arange(len(test)))
    model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=4)).fit(train)
    path = tmp_path / "ethanol_10.skace"
    skace.save(model, path)
    out = tmp_path / "timing.json"
    rmd17.main(["--data", str(tmp_path), "--time-models", str(path), "--output", str(out)])
    (row,) = json.loads(out.read_text())["results"]
    assert row["molecule"] == "ethanol" and row["n_features"] == model.n_features_
    assert row["energy_mae_meV"] == pytest.approx(1000 * evaluate(model, test)["energy_mae"], rel=1e-9)
    assert row["predict_us_per_atom"] > 0


def _running(pid):
    """Whether process ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("pool", ["worker_pool()", "ProcessPoolExecutor(1, get_context('spawn'))"])
def test_fit_worker_dies_with_the_benchmark(pool):
    """A benchmark killed mid-fit takes its fitting process with it (a plain spawn pool's
    worker outlives its parent: the control case, which must survive for the test to mean
    anything)."""
    code = "\n".join([
        "import os, sys, time",
        "from concurrent.futures import ProcessPoolExecutor",
        "from multiprocessing import get_context",
        f"sys.path.insert(0, {str(SCRIPT.parent)!r})",
        "from rmd17 import worker_pool",
        f"pool = {pool}",
        "print(pool.submit(os.getpid).result(), flush=True)",
        "pool.submit(time.sleep, 60)",
        "time.sleep(60)",
    ])
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 3
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert _running(worker) == (pool != "worker_pool()")
    finally:
        if _running(worker):
            os.kill(worker, signal.SIGKILL)


def _pairs(cell):
    """``"**1.27 / 7.79**"`` -> the two numbers as printed (strings)."""
    return [s.strip() for s in cell.replace("*", "").split("/")]


def _table(text, heading):
    """Rows (lists of cells) of the first Markdown table after ``heading``."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _molecule(name):
    return name.split()[0]  # "salicylic acid" -> the benchmark's key "salicylic"


def test_summary_tables_match_recorded_results_and_beat_published(rmd17):
    """The hand-kept rMD17 tables (benchmarks/README.md's summary and README.md's) print
    numbers some recorded result holds, agree with each other, and are below the published
    linear ACE wherever they are marked so."""
    root = Path(__file__).parents[1]
    recorded = {}
    for path in (root / "benchmarks" / "results").glob("rmd17_*.json"):
        saved = json.loads(path.read_text())
        # fits of ACERegressor() (no settings): the benchmark's rows and the instrumented
        # runs (timing files' "runs"); not the timing of saved models or the pooled model
        runs = saved.get("runs", [])
        for row in saved.get("results", []) + list(runs.values() if isinstance(runs, dict) else runs):
            if isinstance(row, dict) and "n_train" in row and not row.get("settings", saved.get("settings")):
                recorded.setdefault((row["molecule"], row["n_train"]), []).append(
                    (row["energy_mae_meV"], row["force_mae_meV_per_A"]))

    def printed_as(value, text):
        decimals = len(text.split(".")[1]) if "." in text else 0
        return abs(value - float(text)) <= 0.5 * 10.0 ** -decimals * (1 + 1e-9)

    summary = _table((root / "benchmarks" / "README.md").read_text(), "### Summary")
    readme = {row[0]: row for row in _table((root / "README.md").read_text(), "## rMD17 in brief")}
    assert len(summary) == 8 and set(readme) == {row[0] for row in summary}
    for row in summary:
        mol = _molecule(row[0])
        for n, cell in ((1000, row[1]), (50, row[5])):
            e, f = _pairs(cell)
            assert any(printed_as(re, e) and printed_as(rf, f) for re, rf in recorded.get((mol, n), [])), \
                (row[0], n, cell)
            published = rmd17.PUBLISHED_1000[mol][0] if n == 1000 else rmd17.PUBLISHED_ACE_50[mol]
            assert ("**" in cell) == (float(e) < published[0] and float(f) < published[1]), (row[0], n)
        assert _pairs(readme[row[0]][1]) == _pairs(row[1]) and _pairs(readme[row[0]][4]) == _pairs(row[5])
