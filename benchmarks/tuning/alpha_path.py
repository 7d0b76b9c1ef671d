"""Validation error and evidence along the ridge path of one Gram matrix (training split only).

Usage::

    python alpha_path.py MOLECULE N_TRAIN N_VAL T1,T2,... [ALPHA]

Fits ``ACERegressor()`` defaults with ``solver="ridge"`` (``ALPHA``, default 1e-6) on training
configurations [0, N_TRAIN), keeps its Gram solver, then for each ``t`` solves at
``lam = top * 10**t`` with the prior floor of the Bayesian search (``GRAM_JITTER``) and prints
the profiled log evidence and energy / force MAE on training configurations
[500, 500 + N_VAL) and on the first 100 training ones. One process per molecule (the Gram
matrix is held). Data from ``$SKACE_RMD17_DIR`` or ``shared/data/rmd17``.
"""
import json, os, sys, time, resource
from pathlib import Path
import numpy as np
import skace.regressor as R
from skace import ACERegressor
from skace.datasets import load_rmd17

mol, n = sys.argv[1], int(sys.argv[2]); nval = int(sys.argv[3]) if len(sys.argv) > 3 else 500
folder = os.environ.get("SKACE_RMD17_DIR", str(Path(__file__).parents[3] / "shared" / "data" / "rmd17"))
full = load_rmd17(mol, "train", path=folder)
train, val = full[:n], full[500:500 + nval]
holder = {}
class Spy(R.GramSolver):
    def __init__(self, *a, **k):
        super().__init__(*a, **k); holder["gs"] = self
R.GramSolver = Spy
def errs(m, s):
    E = np.array([a.info["energy"] for a in s]); F = np.concatenate([a.arrays["forces"] for a in s])
    return 1000 * float(np.mean(np.abs(m.predict(s) - E))), 1000 * float(np.mean(np.abs(m.predict_forces(s) - F)))
t0 = time.time()
m = ACERegressor(n_jobs=2, solver="ridge", alpha=float(sys.argv[5]) if len(sys.argv) > 5 else 1e-6).fit(train)
gs = holder["gs"]; nf = m.n_features_
from skace.linalg import GRAM_JITTER
gs.jitter = GRAM_JITTER; gs.floor = GRAM_JITTER * np.maximum(gs.diag, 0.0); gs._lam = None; gs._values = {}
print(json.dumps(dict(mol=mol, n=n, nf=nf, fit_s=round(time.time() - t0), alpha=m.alpha_, limited=m.alpha_limited_,
      evidence={round(float(np.log10(l / gs.top)), 3): v[0] for l, v in sorted(gs._values.items())})), flush=True)
gs.jitter = 0.0; gs.floor = 0 * gs.floor; gs._lam = None
coef0 = gs.ridge(m.alpha_) / m.scale_
gs.jitter = GRAM_JITTER; gs.floor = GRAM_JITTER * np.maximum(gs.diag, 0.0); gs._lam = None
e0base = np.array(list(m.e0_.values())) - coef0[nf:]
top = gs.top
for t in [float(x) for x in sys.argv[4].split(',')]:
    lam = top * 10.0 ** t
    try:
        c = gs.ridge(lam) / m.scale_
    except np.linalg.LinAlgError:
        print(json.dumps(dict(t=t, err="not PD")), flush=True); continue
    m.coef_ = c[:nf]; m.e0_ = {k: float(v) for k, v in zip(m.e0_, e0base + c[nf:])}; m._fold()
    ev = gs.log_evidence_profiled(lam)[0]
    print(json.dumps(dict(t=t, lam=lam, evidence=ev, val=errs(m, val), train=errs(m, train[:100]),
                          peak_MiB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))), flush=True)
