"""Validation of ACERegressor settings on an rMD17 *training* split (never the test split).

Usage::

    python validate.py MOLECULE N 'JSON list of {"desc": {...}, "reg": {...}}'

Fits on the first N training configurations and validates on training
configurations 500-999, one line of JSON per setting (also appended to
``validate.jsonl`` beside this file). ``desc`` overrides the descriptor below
(``ACETransformer`` parameters), ``reg`` sets ``ACERegressor`` parameters.
Run one large setting per process: the assembly cache of a process holds up
to a few GB. Data from ``$SKACE_RMD17_DIR`` or ``shared/data/rmd17``.
"""
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17

HERE = Path(__file__).parent
BASE = dict(cutoff=4.5, correlation_order=4, max_degree=[16, 8, 6.5, 5], radial_basis="bessel", l_weight=0.25)


def errors(model, structures):
    """Energy MAE (meV) and force MAE (meV/Å)."""
    E = np.array([a.info["energy"] for a in structures])
    F = np.concatenate([a.arrays["forces"] for a in structures])
    return (round(1000 * float(np.mean(np.abs(model.predict(structures) - E))), 3),
            round(1000 * float(np.mean(np.abs(model.predict_forces(structures) - F))), 3))


def main(molecule, n_train, settings):
    folder = os.environ.get("SKACE_RMD17_DIR", str(HERE / ".." / ".." / ".." / "shared" / "data" / "rmd17"))
    full = load_rmd17(molecule, "train", path=folder)
    train, val = full[:n_train], full[500:1000]
    if n_train > 500:
        raise SystemExit("N must be at most 500: configurations 500-999 are the validation set")
    for cfg in settings:
        desc = {**BASE, **cfg.get("desc", {})}
        reg = cfg.get("reg", {})
        model = ACERegressor(ACETransformer(**desc), **reg)
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        shown = {k: (len(v) if k == "feature_subset" else v) for k, v in desc.items() if v is not None}
        rec = dict(molecule=molecule, n_train=n_train, desc=shown, reg=reg, note=cfg.get("note"),
                   n_features=int(model.n_features_),
                   fit_s=round(fit_s, 1), alpha=float(model.alpha_), val=errors(model, val),
                   train=errors(model, train[:200]),
                   peak_MiB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        print(json.dumps(rec), flush=True)
        with open(HERE / "validate.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
