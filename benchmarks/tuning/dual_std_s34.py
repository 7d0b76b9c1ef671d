import numpy as np, skace.fitting, skace.regressor, skace.linalg as L
from skace import ACERegressor
from skace.datasets import load_rmd17
keep = {}
class Probe(L.KernelSolver):
    def __init__(self, X, y, *args, **kwargs):
        keep["X"] = X.copy(); super().__init__(X, y, *args, **kwargs)
skace.regressor.KernelSolver = Probe
train = load_rmd17("benzene", n=100); test = load_rmd17("benzene", split="test", n=200)
skace.fitting.KERNEL_MIN_WORK = 1e30
svd = ACERegressor(n_jobs=2).fit(train); _, s_svd = svd.predict(test, return_std=True)
skace.fitting.KERNEL_MIN_WORK = 0.0
dual = ACERegressor(n_jobs=2).fit(train); _, s_dual = dual.predict(test, return_std=True)
X = keep["X"]; lam = dual.alpha_
U, s, Vt = np.linalg.svd(X, full_matrices=False)
x = dual.descriptor_.transform(test)
x = np.hstack([x, np.tile([6.0, 6.0], (len(test), 1))]) / dual.scale_  # E0 columns: C6H6 counts (order irrelevant: equal)
p = x @ Vt.T
perp = x - p @ Vt; perp = perp - (perp @ Vt.T) @ Vt  # twice: orthogonal to the rows to rounding
var = np.sum(p**2 / (s**2 + lam), axis=1) + np.sum(perp**2, axis=1) / lam
for name, m, sd in (("svd", svd, s_svd), ("dual", dual, s_dual)):
    scale = skace.regressor.energy_row_scale(test, np.ones(len(test)), m.energy_weight_scaling)
    noise = 1.0 / (m.beta_ * (m.energy_weight * scale) ** 2)
    ref = np.sqrt(var / m.beta_ + noise)
    r = sd / ref
    print(name, "std / stable reference: min %.4f median %.4f max %.4f" % (r.min(), np.median(r), r.max()),
          "model var share %.3f" % np.median((var / m.beta_) / (var / m.beta_ + noise)))

