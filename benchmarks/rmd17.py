"""rMD17 benchmark: skace beside the published linear ACE and MACE errors.

For every molecule whose train and test files are present (split 01): fit on
the first N training configurations (default 1000), test on the 1000 test
configurations, and report energy MAE (meV), force MAE (meV/Å), basis size,
fit time, peak memory of the fitting process, and µs per atom for energy +
forces prediction. Each fit runs in a fresh process so that its peak memory
is its own. Prints JSON; ``--markdown`` also prints a table.

Usage::

    python benchmarks/rmd17.py                       # all molecules, 1000 configs
    python benchmarks/rmd17.py --molecules ethanol aspirin --n-train 50 1000
    python benchmarks/rmd17.py --settings '{"descriptor__max_degree": 12}'
    python benchmarks/rmd17.py --plot curves.png --plot-from a.json b.json   # no fitting
    python benchmarks/rmd17.py --time-models models/*.skace --threads 2      # re-time saved models
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

#: Published errors, energy MAE (meV) / force MAE (meV/Å), 1000 training configurations.
PUBLISHED_1000 = {
    # molecule: (linear ACE, Kovács et al. JCTC 2021), (MACE, Batatia et al. NeurIPS 2022)
    "aspirin": ((6.1, 17.9), (2.2, 6.6)),
    "azobenzene": ((3.6, 10.9), (1.2, 3.0)),
    "benzene": ((0.04, 0.5), (0.4, 0.3)),
    "ethanol": ((1.2, 7.3), (0.4, 2.1)),
    "malonaldehyde": ((1.7, 11.1), (0.8, 4.1)),
    "naphthalene": ((0.9, 5.1), (0.5, 1.6)),
    "paracetamol": ((4.0, 12.7), (1.3, 4.8)),
    "salicylic": ((1.8, 9.3), (0.9, 3.1)),
    "toluene": ((1.1, 6.5), (0.5, 1.5)),
    "uracil": ((1.1, 6.6), (0.5, 2.1)),
}
#: Published linear ACE at 50 training configurations.
PUBLISHED_ACE_50 = {
    "aspirin": (26.2, 63.8), "azobenzene": (9.0, 28.8), "benzene": (0.2, 2.7), "ethanol": (8.6, 43.0),
    "malonaldehyde": (12.8, 63.5), "naphthalene": (3.8, 19.7), "paracetamol": (13.6, 45.7),
    "salicylic": (8.9, 41.7), "toluene": (5.3, 27.1), "uracil": (6.5, 36.2),
}


def data_dir(path=None):
    from skace.datasets import RMD17_ENV

    if path:
        return path
    if os.environ.get(RMD17_ENV):
        return os.environ[RMD17_ENV]
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "..", "shared", "data", "rmd17"),
                 os.path.join(here, "..", "shared", "data", "rmd17")):
        if os.path.isdir(cand):
            return os.path.abspath(cand)
    return None


def has_split(folder, molecule, split):
    """Whether ``folder`` holds ``molecule``'s split 01 (split files or the release's layout)."""
    from skace.datasets import rmd17_files

    try:
        rmd17_files(molecule, split, folder)
    except FileNotFoundError:
        return False
    return True


def available(folder):
    """Molecules with both a train and a test file."""
    return [mol for mol in PUBLISHED_1000 if all(has_split(folder, mol, s) for s in ("train", "test"))]


def make_model(settings):
    """``ACERegressor()`` with ``settings``; with ``descriptor__*`` settings, the default
    descriptor is made explicit first (its degrees then stay at ``DEFAULT_DESCRIPTOR``'s
    unless set)."""
    from skace import ACERegressor, ACETransformer
    from skace.regressor import DEFAULT_DESCRIPTOR

    if any(k.startswith("descriptor__") for k in settings):
        model = ACERegressor(ACETransformer(**DEFAULT_DESCRIPTOR))
    else:
        model = ACERegressor()
    model.set_params(**settings)
    return model


def die_with_parent(parent):
    """Worker initializer: have the kernel kill this process when ``parent`` (the benchmark's
    pid) dies (Linux; elsewhere a no-op), so that an interrupted benchmark leaves no fit
    behind holding both cores and 13 GB."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request: nobody would kill us
        os._exit(1)


def worker_pool():
    """A one-process pool whose worker starts fresh (spawn) and dies with this process."""
    return ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=die_with_parent,
                               initargs=(os.getpid(),))


def run_one(molecule, n_train, settings, folder, threads, save_dir=None):
    """Fit and evaluate in this (fresh) process; returns a result dict (and saves the model to ``save_dir``)."""
    import resource

    import numba

    from skace.datasets import load_rmd17
    from skace.metrics import evaluate

    if threads:
        numba.set_num_threads(threads)
    train = load_rmd17(molecule, "train", n=n_train, path=folder)
    test = load_rmd17(molecule, "test", path=folder)
    model = make_model(settings)
    t0 = time.perf_counter()
    model.fit(train)
    fit_time = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB
    errors = evaluate(model, test)
    d = model.descriptor_
    if save_dir:
        from skace import save

        save(model, os.path.join(save_dir, f"{molecule}_{len(train)}.skace"))
    return {
        "molecule": molecule,
        "n_train": len(train),
        "n_test": len(test),
        "energy_mae_meV": 1000 * errors["energy_mae"],
        "force_mae_meV_per_A": 1000 * errors["force_mae"],
        "energy_rmse_meV": 1000 * errors["energy_rmse"],
        "force_rmse_meV_per_A": 1000 * errors["force_rmse"],
        "n_features": int(d.n_features_out_),
        "n_features_per_element": d.basis_.features_per_center(),
        "fit_time_s": fit_time,
        "peak_memory_MiB": peak,
        "predict_us_per_atom": predict_us_per_atom(model, test),
        "alpha": float(model.alpha_),
        "alpha_limited": bool(model.alpha_limited_),
        # (alpha, log evidence) of each factorisation of the evidence search (Cholesky route)
        "evidence_scores": None if getattr(model, "evidence_scores_", None) is None
        else model.evidence_scores_.tolist(),
        "prior_floor": getattr(model, "prior_floor_", None),
        "prior_order": float(getattr(model, "prior_order_", model.prior_order)),
        "prior_weights": [float(getattr(model, "prior_l_weight_", 1.0)),
                          float(getattr(model, "prior_correlation_weight_", 1.0))],
        "n_atoms": len(train[0]),
        "threads": numba.get_num_threads(),
    }


def predict_us_per_atom(model, structures, repeat=3):
    """Best of ``repeat`` timings of energy + forces for ``structures``, in µs per atom."""
    import numpy as np

    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.predict_energy_forces(structures)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / sum(len(a) for a in structures)


def time_saved_model(path, folder, threads=None):
    """Prediction cost of a model saved by ``--save-models`` (``MOLECULE_N.skace``) on its
    molecule's test split, with the errors as a check that the file is the model meant."""
    import numba
    from skace import load
    from skace.datasets import load_rmd17
    from skace.metrics import evaluate

    if threads:
        numba.set_num_threads(threads)
    molecule = os.path.basename(path).rsplit("_", 1)[0]
    model = load(path)
    test = load_rmd17(molecule, "test", path=folder)
    model.predict_energy_forces(test[:2])  # compile outside the timing
    errors = evaluate(model, test)
    return {"model": path, "molecule": molecule, "n_features": int(model.n_features_),
            "energy_mae_meV": 1000 * errors["energy_mae"], "force_mae_meV_per_A": 1000 * errors["force_mae"],
            "predict_us_per_atom": predict_us_per_atom(model, test), "threads": numba.get_num_threads()}


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _mae(v):
    """An error for a table: three significant figures below 1, so that 0.495 is not shown as
    the published 0.5, two decimals above."""
    return f"{v:.3g}" if v < 1 else f"{v:.2f}"


def markdown(results):
    lines = ["| molecule | n_train | skace E / F | linear ACE (pub.) | MACE (pub.) | features | fit s | peak MiB | µs/atom |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['molecule']} | {r['n_train']} | failed: {r['error']} | | | | | | |")
            continue
        mol, n = r["molecule"], r["n_train"]
        ace = PUBLISHED_1000[mol][0] if n == 1000 else PUBLISHED_ACE_50.get(mol) if n == 50 else None
        mace = PUBLISHED_1000[mol][1] if n == 1000 else None
        fmt = lambda p: f"{p[0]} / {p[1]}" if p else "–"  # noqa: E731
        # bold: below the published linear ACE
        e, f = (f"**{_mae(v)}**" if ace and v < ace[i] else _mae(v)
                for i, v in enumerate((r["energy_mae_meV"], r["force_mae_meV_per_A"])))
        lines.append(
            f"| {mol} | {n} | {e} / {f} | {fmt(ace)} | {fmt(mace)} "
            f"| {r['n_features']} | {r['fit_time_s']:.0f} | {r['peak_memory_MiB']:.0f} | {r['predict_us_per_atom']:.1f} |"
        )
    return "\n".join(lines)


def merged_results(paths, defaults_only=False):
    """Result rows of several saved runs, one per (molecule, n_train): later files win.

    A row's settings are its own ``settings`` or else its file's; ``defaults_only`` skips
    rows fitted with any, so that they cannot replace a defaults row.
    """
    rows = {}
    for path in paths:
        with open(path) as fh:
            saved = json.load(fh)
        for r in saved["results"]:
            if "energy_mae_meV" not in r:
                continue
            if defaults_only and r.get("settings", saved.get("settings")):
                continue
            rows[r["molecule"], r["n_train"]] = r
    return [rows[k] for k in sorted(rows)]


#: Atoms per rMD17 molecule (the fitting rows of results saved without ``n_atoms``).
RMD17_ATOMS = dict(aspirin=21, azobenzene=24, benzene=12, ethanol=9, malonaldehyde=9, naphthalene=18,
                   paracetamol=20, salicylic=16, toluene=15, uracil=12)


def _off_default(r, elements):
    """How the fit of result ``r`` differs from what ``ACERegressor()`` does now with its
    data (basis size, prior weights), or "" (results before the weights were recorded
    were fitted with (1, 1); before ``n_atoms`` was, it comes from :data:`RMD17_ATOMS`)."""
    from skace.fitting import few_data
    from skace.regressor import AUTO_PRIOR_WEIGHTS, default_budget, default_n_features

    rows = r["n_train"] * (1 + 3 * r.get("n_atoms", RMD17_ATOMS.get(r["molecule"], 0)))
    size = default_n_features(list(elements), default_budget(list(elements), rows))
    weights = tuple(r.get("prior_weights", (1.0, 1.0)))
    default_weights = AUTO_PRIOR_WEIGHTS[int(few_data(rows, size))]
    notes = [str(r["n_features"])] if r["n_features"] != size else []
    if weights != default_weights:
        notes.append("prior weights {:g} / {:g}".format(*weights))
    return ", ".join(notes)


def curve_table(results):
    """Markdown table of a learning curve: one row per molecule, energy / force MAE per size.

    A cell fitted otherwise than ``ACERegressor()`` now fits its data (another basis
    size, :func:`skace.regressor.default_budget`, or other prior weights) is marked
    with a dagger and what differs.
    """
    sizes = sorted({r["n_train"] for r in results})
    elements = {r["molecule"]: tuple(sorted(r["n_features_per_element"]))
                for r in results if "n_features_per_element" in r}
    cells = {}
    for r in results:
        cell = f"{_mae(r['energy_mae_meV'])} / {_mae(r['force_mae_meV_per_A'])}"
        off = _off_default(r, elements[r["molecule"]]) if r["molecule"] in elements else ""
        if off:
            cell += f" † ({off})"
        cells[r["molecule"], r["n_train"]] = cell
    lines = ["| molecule | " + " | ".join(map(str, sizes)) + " |", "|---" * (len(sizes) + 1) + "|"]
    for mol in sorted({r["molecule"] for r in results}):
        lines.append(f"| {mol} | " + " | ".join(cells.get((mol, n), "–") for n in sizes) + " |")
    if any("†" in c for c in cells.values()):
        lines.append("\n† not fitted as `ACERegressor()` now fits these data (its number of functions or "
                     "prior weights in brackets)")
    return "\n".join(lines)


def plot_learning_curves(results, path):
    """Energy and force MAE against training set size (log-log), one line per molecule,
    with the published linear ACE errors at 50 and 1000 configurations as open markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4))
    molecules = list(dict.fromkeys(r["molecule"] for r in results if "energy_mae_meV" in r))
    for i, mol in enumerate(molecules):
        rows = sorted((r for r in results if r["molecule"] == mol and "energy_mae_meV" in r),
                      key=lambda r: r["n_train"])
        n = [r["n_train"] for r in rows]
        colour = f"C{i % 10}"
        for ax, key, k in ((axes[0], "energy_mae_meV", 0), (axes[1], "force_mae_meV_per_A", 1)):
            ax.plot(n, [r[key] for r in rows], "o-", color=colour, label=mol)
            ax.plot([50, 1000], [PUBLISHED_ACE_50[mol][k], PUBLISHED_1000[mol][0][k]], "s", mfc="none",
                    color=colour)
    for ax, label in zip(axes, ("energy MAE (meV)", "force MAE (meV/Å)")):
        ax.set(xscale="log", yscale="log", xlabel="training configurations", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: no curve hidden
    fig.suptitle("skace defaults (filled) and published linear ACE (open squares), rMD17 split 01")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", nargs="*", help="default: every molecule with train and test files")
    parser.add_argument("--n-train", nargs="*", type=int, default=[1000],
                        help="training set sizes (a learning curve: 50 100 250 500 1000)")
    parser.add_argument("--settings", default="{}", help="ACERegressor.set_params arguments as JSON")
    parser.add_argument("--data", help="folder with the rMD17 npz files (default $SKACE_RMD17_DIR or shared/)")
    parser.add_argument("--threads", type=int, default=None, help="numba threads per fit")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument("--save-models", metavar="DIR", help="save each fitted model as DIR/MOLECULE_N.skace")
    parser.add_argument("--plot", metavar="PNG", help="plot learning curves (needs several --n-train)")
    parser.add_argument("--time-models", nargs="+", metavar="MODEL",
                        help="instead of fitting, time energy + forces of saved models (MOLECULE_N.skace, as "
                             "--save-models writes them) on their test splits, one after the other")
    parser.add_argument("--plot-from", nargs="+", metavar="JSON",
                        help="with --plot or --markdown: draw the learning curves of the defaults (rows fitted "
                             "with --settings are left out) or print their table from saved result files "
                             "instead of fitting (a later file's row replaces an earlier one of the same "
                             "molecule and size)")
    args = parser.parse_args(argv)
    if args.plot_from:
        if not (args.plot or args.markdown):
            sys.exit("--plot-from needs --plot PNG or --markdown")
        rows = merged_results(args.plot_from, defaults_only=True)
        if args.plot:
            plot_learning_curves(rows, args.plot)
        if args.markdown:
            print(curve_table(rows))
        return
    folder = data_dir(args.data)
    if folder is None or not os.path.isdir(folder):
        sys.exit("rMD17 data not found: pass --data or set SKACE_RMD17_DIR")
    if args.time_models:
        results = []
        for path in args.time_models:
            results.append(time_saved_model(path, folder, args.threads))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        out = {"machine": machine(), "results": results}
        print(json.dumps(out, indent=1))
        if args.output:
            with open(args.output, "w") as fh:
                json.dump(out, fh, indent=1)
        return
    molecules = args.molecules or available(folder)
    missing = [m for m in molecules if m not in available(folder)]
    settings = json.loads(args.settings)
    if args.save_models:
        os.makedirs(args.save_models, exist_ok=True)
    results = []
    for mol in molecules:
        if mol in missing:
            results.append({"molecule": mol, "skipped": "train or test file absent"})
            continue
        for n in args.n_train:
            with worker_pool() as pool:
                try:
                    r = pool.submit(run_one, mol, n, settings, folder, args.threads, args.save_models).result()
                except Exception as err:  # a failed fit is reported, the others go on
                    r = {"molecule": mol, "n_train": n, "error": f"{type(err).__name__}: {err}"}
            r["published_linear_ace"] = PUBLISHED_1000[mol][0] if n == 1000 else PUBLISHED_ACE_50.get(mol) if n == 50 else None
            r["published_mace"] = PUBLISHED_1000[mol][1] if n == 1000 else None
            r["settings"] = settings
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    out = {"machine": machine(), "settings": settings, "results": results}
    print(json.dumps(out, indent=1))
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(out, fh, indent=1)
    if args.plot:
        plot_learning_curves(results, args.plot)
    if args.markdown:
        print(markdown([r for r in results if "skipped" not in r]))


if __name__ == "__main__":
    main()
