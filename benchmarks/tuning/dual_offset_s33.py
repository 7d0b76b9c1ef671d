import sys, json, numpy as np
import skace.fitting
from skace import ACERegressor
from skace.datasets import load_rmd17
train = load_rmd17("benzene", n=100); test = load_rmd17("benzene", split="test")
E = np.array([a.info["energy"] for a in test])
out = {}
for name, work in (("svd", 1e30), ("dual", 0.0)):
    skace.fitting.KERNEL_MIN_WORK = work
    m = ACERegressor(n_jobs=2).fit(train)
    e, f = m.predict_energy_forces(test)
    out[name] = (m.alpha_, e, f)
    print(name, m.alpha_, 1000*np.mean(np.abs(e-E)), 1000*np.mean(e-E), flush=True)
d = out["dual"][1] - out["svd"][1]
print("energy diff dual-svd: mean %.3e std %.3e (eV)" % (d.mean(), d.std()), "force max diff", np.abs(out["dual"][2]-out["svd"][2]).max())
