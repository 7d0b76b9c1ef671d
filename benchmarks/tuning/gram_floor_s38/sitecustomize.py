"""Experiment patch for skace, applied in every process (spawned workers too) by an env var.

SKACE_GRAM_FLOOR_PASSES=0: the Gram route's evidence search without session 38's weaker-floor
passes (the code before commit c191a5a), the control of the benzene timing in
benchmarks/README.md, "Session 38":
    SKACE_GRAM_FLOOR_PASSES=0 PYTHONPATH=benchmarks/tuning/gram_floor_s38 \\
        python benchmarks/rmd17.py --molecules benzene --n-train 1000 --threads 2
"""
import os

if os.environ.get("SKACE_GRAM_FLOOR_PASSES"):
    import skace.linalg as L

    L.GRAM_FLOOR_PASSES = int(os.environ["SKACE_GRAM_FLOOR_PASSES"])
    print("skace experiment patch: GRAM_FLOOR_PASSES =", L.GRAM_FLOOR_PASSES, flush=True)
