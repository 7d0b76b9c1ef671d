"""Fit chosen settings on all 1000 rMD17 ethanol training configs; evaluate ONCE on the test split.

Usage: python final_ethanol.py 'JSON config' (same format as tune_ethanol.py). One model per process,
so ru_maxrss is the peak of that fit. Appends to final.jsonl.
"""
import os
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
import json, sys, time, resource
import numpy as np
from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17
from tune_ethanol import BASE_DESC, BASE_REG, DATA, GIT, HERE, errors

cfg = json.loads(sys.argv[1])
desc = {**BASE_DESC, **cfg.get("desc", {})}
reg = {**BASE_REG, **cfg.get("reg", {})}
train = load_rmd17("ethanol", "train", path=DATA)
test = load_rmd17("ethanol", "test", path=DATA)
model = ACERegressor(ACETransformer(**desc), **reg)
t0 = time.perf_counter()
model.fit(train)
fit_s = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
E, F = errors(model, test)
pred_s = time.perf_counter() - t0
Etr, Ftr = errors(model, train)
rec = dict(git=GIT, desc=desc, reg=reg, n_features=int(model.n_features_), fit_s=round(fit_s, 1),
           predict_test_s=round(pred_s, 2), peak_rss_mb=round(rss), alpha=float(model.alpha_),
           E_test=round(E, 3), F_test=round(F, 3), E_train=round(Etr, 3), F_train=round(Ftr, 3))
print(json.dumps(rec), flush=True)
with open(HERE / "final.jsonl", "a") as fh:
    fh.write(json.dumps(rec) + "\n")
