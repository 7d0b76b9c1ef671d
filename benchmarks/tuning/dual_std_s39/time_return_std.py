"""Cost of the dual route's first ``predict(return_std=True)`` (the design's QR factor) beside its
fit: rMD17 ethanol, 500 training configurations (a dual-form fit), 1000 test configurations.
Prints JSON."""
import json
import resource
import sys
import time

import numpy as np

from skace import ACERegressor
from skace.datasets import load_rmd17

molecule = sys.argv[1] if len(sys.argv) > 1 else "ethanol"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
train, test = load_rmd17(molecule, n=n), load_rmd17(molecule, split="test")
t0 = time.perf_counter()
model = ACERegressor(n_jobs=2).fit(train)
fit = time.perf_counter() - t0
peak_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
t0 = time.perf_counter()
E = model.predict(test)
plain = time.perf_counter() - t0
t0 = time.perf_counter()
_, std = model.predict(test, return_std=True)
first = time.perf_counter() - t0
t0 = time.perf_counter()
_, std2 = model.predict(test, return_std=True)
second = time.perf_counter() - t0
print(json.dumps(dict(molecule=molecule, n_train=n, route=model._posterior[0], n_features=int(model.n_features_),
                      alpha=model.alpha_, fit_s=fit, predict_s=plain, first_return_std_s=first,
                      second_return_std_s=second, peak_rss_fit_GiB=peak_fit,
                      peak_rss_GiB=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      std_meV=[float(1000 * np.min(std)), float(1000 * np.median(std)), float(1000 * np.max(std))],
                      same_second_call=bool(np.array_equal(std, std2)))))
