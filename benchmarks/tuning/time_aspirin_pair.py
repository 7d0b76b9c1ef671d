"""Side-by-side prediction cost of the aspirin defaults and a saved larger model.

Usage::

    python time_aspirin_pair.py SAVED_MODEL.skace

Fits ``ACERegressor()`` (default basis) on 20 aspirin training configurations (the
coefficients do not change the cost) and times energy + forces of it and of the saved
model on the 1000 test configurations in one process, 2 threads, best of 3. Prints JSON
with the ratio. Data from ``$SKACE_RMD17_DIR``.
"""
import json
import sys
from pathlib import Path

import numba

sys.path.insert(0, str(Path(__file__).parents[1]))
from rmd17 import predict_us_per_atom  # noqa: E402

import skace  # noqa: E402
from skace import ACERegressor  # noqa: E402
from skace.datasets import load_rmd17  # noqa: E402

numba.set_num_threads(2)
test = load_rmd17("aspirin", "test")
default = ACERegressor().fit(load_rmd17("aspirin", "train", n=20))
larger = skace.load(sys.argv[1])
for m in (default, larger):
    m.predict_energy_forces(test[:2])  # compile outside the timing
out = {name: dict(n_features=int(m.n_features_), us_per_atom=predict_us_per_atom(m, test))
       for name, m in (("default", default), ("saved", larger))}
out["ratio"] = out["saved"]["us_per_atom"] / out["default"]["us_per_atom"]
print(json.dumps(out))
