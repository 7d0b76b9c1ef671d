"""Transferability on rMD17: one model fitted on the pooled training sets of all molecules.

Fits a single ``ACERegressor`` (default settings unless ``--settings``) on the
first N training configurations of every molecule whose training file is
present, then evaluates it on each molecule's test set (where present), beside
the per-molecule results of ``benchmarks/rmd17.py`` when ``--per-molecule``
points at its JSON output. Prints JSON (and a markdown table with
``--markdown``).

Usage::

    python benchmarks/rmd17_pooled.py --n-per-molecule 100 --per-molecule results/rmd17_default.json --markdown
"""

import argparse
import json
import os
import resource
import sys
import time

from rmd17 import PUBLISHED_1000, data_dir, has_split, machine, make_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-per-molecule", type=int, default=100)
    p.add_argument("--settings", default="{}", help="ACERegressor.set_params arguments as JSON")
    p.add_argument("--data")
    p.add_argument("--per-molecule", help="JSON written by rmd17.py, shown beside the pooled errors")
    p.add_argument("--output")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    from skace.datasets import load_rmd17
    from skace.metrics import evaluate

    folder = data_dir(args.data)
    if folder is None or not os.path.isdir(folder):
        sys.exit("rMD17 data not found: pass --data or set SKACE_RMD17_DIR")
    molecules = [m for m in PUBLISHED_1000 if has_split(folder, m, "train")]
    train = [a for m in molecules for a in load_rmd17(m, "train", n=args.n_per_molecule, path=folder)]
    settings = json.loads(args.settings)
    model = make_model(settings)
    t0 = time.perf_counter()
    model.fit(train)
    fit_time = time.perf_counter() - t0
    per_molecule = {}
    if args.per_molecule:
        with open(args.per_molecule) as fh:
            for r in json.load(fh)["results"]:
                if "energy_mae_meV" in r:
                    per_molecule[r["molecule"]] = r
    results = []
    for mol in molecules:
        if not has_split(folder, mol, "test"):
            continue
        err = evaluate(model, load_rmd17(mol, "test", path=folder))
        r = {"molecule": mol, "energy_mae_meV": 1000 * err["energy_mae"],
             "force_mae_meV_per_A": 1000 * err["force_mae"]}
        if mol in per_molecule:
            own = per_molecule[mol]
            r["own_model"] = {k: own[k] for k in ("n_train", "energy_mae_meV", "force_mae_meV_per_A")}
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    out = {"machine": machine(), "settings": settings, "molecules_in_training": molecules,
           "n_per_molecule": args.n_per_molecule, "n_train": len(train), "n_features": int(model.n_features_),
           "fit_time_s": fit_time, "peak_memory_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "results": results}
    print(json.dumps(out, indent=1))
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(out, fh, indent=1)
    if args.markdown:
        lines = ["| molecule | pooled model E / F | own model E / F (n_train) |", "|---|---|---|"]
        for r in results:
            own = r.get("own_model")
            own_text = (f"{own['energy_mae_meV']:.2f} / {own['force_mae_meV_per_A']:.1f} ({own['n_train']})"
                        if own else "–")
            lines.append(f"| {r['molecule']} | {r['energy_mae_meV']:.2f} / {r['force_mae_meV_per_A']:.1f} "
                         f"| {own_text} |")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
