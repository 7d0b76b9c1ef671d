"""Diagnostic: Gram-eigh vs design-SVD spectral solve on the same problem (ethanol, 500 train / 500 val)."""
import os
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[v] = "1"
import sys, time, json
import numpy as np
from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17
from tune_ethanol import errors

full = load_rmd17("ethanol", "train", path="/work/shared/data/rmd17")
tr, va = full[:500], full[500:]
D = json.loads(sys.argv[1]) if len(sys.argv) > 1 else [12, 10, 8]
prior_order = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
for limit in (20_000_000, 10**10):
    m = ACERegressor(ACETransformer(cutoff=5.0, correlation_order=len(D), max_degree=D, n_jobs=1),
                     solver="bayesian", prior_order=prior_order, design_limit=limit, n_jobs=1, cache=False)
    t = time.perf_counter(); m.fit(tr); t = time.perf_counter() - t
    s = m.spectrum_
    print(f"D={D} p={prior_order} design_limit={limit:.0e} nf={m.n_features_} fit {t:.1f}s rank={s.s2.size} "
          f"s2[0]={s.s2[0]:.3e} s2[-1]={s.s2[-1]:.3e} alpha={m.alpha_:.3e} val E/F={errors(m, va)} train E/F={errors(m, tr)}",
          flush=True)
