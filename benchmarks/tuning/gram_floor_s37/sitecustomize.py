"""Experiment patches for skace, applied in every process (spawned workers too) by env vars.

SKACE_GRAM_JITTER=1e-12 SKACE_GRAM_LO=-20: a weaker Gram-route floor and search bottom.

Session 37's benzene study (benchmarks/README.md, "Session 37"):
    SKACE_GRAM_JITTER=1e-12 SKACE_GRAM_LO=-20 PYTHONPATH=benchmarks/tuning/gram_floor_s37 \
        python benchmarks/rmd17.py --molecules benzene --n-train 1000 --threads 2
(a sitecustomize module, so that rmd17.py's spawned fit workers get the patch too).
"""
import os

if os.environ.get("SKACE_GRAM_JITTER"):
    import skace.linalg as L
    import skace.regressor as R

    R.GRAM_JITTER = float(os.environ["SKACE_GRAM_JITTER"])
    lo = float(os.environ.get("SKACE_GRAM_LO", L.GRAM_SEARCH_LO))
    for name in ("evidence_search", "holdout_search"):
        f = getattr(L.GramSolver, name)
        d = list(f.__defaults__)
        d[2] = lo
        f.__defaults__ = tuple(d)
    L.GramSolver.stopped_at_lower_limit.__defaults__ = (lo,)
    print("skace experiment patch:", R.GRAM_JITTER, L.GramSolver.evidence_search.__defaults__, flush=True)
