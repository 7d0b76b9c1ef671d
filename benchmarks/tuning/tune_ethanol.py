"""Validation-based tuning of skace on rMD17 ethanol (train split only).

Usage: python tune_ethanol.py STAGE_NAME 'JSON list of configs'
Each config: {"desc": {...ACETransformer params...}, "reg": {...ACERegressor params...}, "note": str}
Train on the first 500 configs of the training split, validate on the last 500.
Results are appended to results.jsonl; ethanol.md is regenerated from it.
"""
import os
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
import json, sys, time, resource
from pathlib import Path
import numpy as np
from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17

HERE = Path(__file__).parent
RESULTS = HERE / "results.jsonl"
DATA = "/work/shared/data/rmd17"
import subprocess
GIT = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()

BASE_DESC = dict(cutoff=5.0, correlation_order=3, max_degree=[16, 12, 10], radial_basis="agnesi",
                 l_weight=1.5, n_jobs=1)
BASE_REG = dict(solver="bayesian", energy_weight=30.0, force_weight=1.0, prior="algebraic",
                prior_order=2.0, n_jobs=1)


def targets(structs):
    E = np.array([a.info["energy"] for a in structs])
    F = np.concatenate([a.arrays["forces"] for a in structs])
    return E, F


def errors(model, structs):
    E, F = targets(structs)
    e = model.predict(structs)
    f = model.predict_forces(structs)
    return 1000 * np.mean(np.abs(e - E)), 1000 * np.mean(np.abs(f - F))


def run(stage, configs, train_idx=slice(0, 500), val_idx=slice(500, 1000), alpha_path=True):
    full = load_rmd17("ethanol", "train", path=DATA)
    tr, va = full[train_idx], full[val_idx]
    for cfg in configs:
        desc = {**BASE_DESC, **cfg.get("desc", {})}
        reg = {**BASE_REG, **cfg.get("reg", {})}
        model = ACERegressor(ACETransformer(**desc), **reg)
        t0 = time.perf_counter()
        try:
            model.fit(tr)
        except Exception as exc:  # record and go on
            rec = dict(stage=stage, desc=desc, reg=reg, note=cfg.get("note", ""), error=repr(exc))
            print(rec, flush=True)
            with open(RESULTS, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            continue
        fit_s = time.perf_counter() - t0
        eva, fva = errors(model, va)
        etr, ftr = errors(model, tr)
        rec = dict(stage=stage, git=GIT, desc=desc, reg=reg, note=cfg.get("note", ""), n_features=int(model.n_features_),
                   fit_s=round(fit_s, 1), alpha=float(model.alpha_), E_val=round(eva, 3), F_val=round(fva, 3),
                   E_tr=round(etr, 3), F_tr=round(ftr, 3),
                   maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
        spec = getattr(model, "spectrum_", None)
        if spec is not None:
            rec["rank"] = int(spec.s2.size)
            rec["cond"] = float(spec.s2[0] / spec.s2[-1])
        if alpha_path and spec is not None:
            coef0, a0 = model.coef_.copy(), model.alpha_
            path = []
            for f in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3):
                model.coef_ = spec.ridge(a0 * f) / model.scale_
                model._fold()
                e, fo = errors(model, va)
                path.append([f, round(e, 3), round(fo, 3)])
            model.coef_ = coef0
            model._fold()
            rec["alpha_path"] = path
        print(json.dumps(rec), flush=True)
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        write_md()


def fmt_desc(d):
    keys = ["radial_basis", "cutoff", "correlation_order", "max_degree", "l_weight", "inner_cutoff", "r0",
            "radial_shape", "max_l"]
    out = []
    for k in keys:
        if k in d and d[k] is not None and not (k == "inner_cutoff" and d[k] == 0.0) and not (
                k == "r0" and d[k] == "covalent"):
            out.append(f"{k}={d[k]}")
    return ", ".join(out).replace("radial_basis=", "").replace("correlation_order=", "nu=").replace(
        "max_degree=", "D=")


def fmt_reg(r):
    s = f"{r['solver']}, Ew={r['energy_weight']}, {r['prior']}"
    if r["prior"] != "none":
        s += f" p={r['prior_order']}"
    if r.get("energy_weight_scaling", "sqrt_atoms") != "sqrt_atoms":
        s += f", Escale={r['energy_weight_scaling']}"
    if r["solver"] == "ridge":
        s += f", alpha={r['alpha']}"
    return s


def write_md():
    recs = [json.loads(l) for l in open(RESULTS)]
    lines = ["# rMD17 ethanol tuning (validation: train on train[:500], validate on train[500:])", "",
             "Single-threaded (OMP/OPENBLAS/NUMBA = 1, n_jobs=1). Fit time includes feature assembly unless the "
             "assembled system was cached (same descriptor as the previous row: regression-only change).",
             "`best-alpha path`: validation MAE when the chosen alpha is multiplied by the given factor "
             "(diagnostic only; the selected models use the solver's own alpha).", "",
             "| # | stage | descriptor | regression | n_feat | fit s | alpha | E val meV | F val meV/Å | E/F train | best along alpha path (factor: E/F) | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(recs):
        if "error" in r:
            lines.append(f"| {i} | {r['stage']} | {fmt_desc(r['desc'])} | {fmt_reg(r['reg'])} | | | | ERROR | | | | {r['error'][:80]} |")
            continue
        best = ""
        if r.get("alpha_path"):
            p = min(r["alpha_path"], key=lambda x: x[2])
            best = f"x{p[0]:g}: {p[1]:.2f}/{p[2]:.2f}"
        lines.append(f"| {i} | {r['stage']} | {fmt_desc(r['desc'])} | {fmt_reg(r['reg'])} | {r['n_features']} | "
                     f"{r['fit_s']} | {r['alpha']:.2e} | {r['E_val']:.2f} | {r['F_val']:.2f} | "
                     f"{r['E_tr']:.2f}/{r['F_tr']:.2f} | {best} | {r['note']} |")
    extra = HERE / "notes.md"
    if extra.exists():
        lines += ["", extra.read_text()]
    (HERE / "ethanol.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    run(sys.argv[1], json.loads(sys.argv[2]))
