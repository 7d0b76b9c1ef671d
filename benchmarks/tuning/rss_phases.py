"""Resident memory by phase of one default uracil fit (assembly, SVD, CV curve, prediction): python rss_phases.py N_TRAIN.

Samples /proc/self/statm every 0.2 s; data from $SKACE_RMD17_DIR. Session 20 scratch tool, Linux only."""
import threading, time, os, sys, json
import skace.fitting as F, skace.linalg as L, skace.regressor as R
from skace import ACERegressor
from skace.datasets import load_rmd17
phase = ["load"]; peaks = {}
def rss():
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * 4096 / 2**20
def sampler():
    while True:
        r = rss(); p = phase[0]; peaks[p] = max(peaks.get(p, 0), r); time.sleep(0.2)
threading.Thread(target=sampler, daemon=True).start()
def wrap(mod, name, label):
    f = getattr(mod, name)
    def g(*a, **k):
        old = phase[0]; phase[0] = label
        try: return f(*a, **k)
        finally: phase[0] = old + "/after-" + label
    setattr(mod, name, g)
wrap(R, "assemble", "assemble")
wrap(L, "group_cv_curve", "cv_curve")
orig = L.Spectrum.from_design.__func__
def fd(cls, *a, **k):
    old = phase[0]; phase[0] = "svd+cv"
    try: return orig(cls, *a, **k)
    finally: phase[0] = "after-svd"
L.Spectrum.from_design = classmethod(fd)
n = int(sys.argv[1])
train = load_rmd17("uracil", "train", n=n, path=os.environ["SKACE_RMD17_DIR"])
phase[0] = "fit"
m = ACERegressor(n_jobs=2).fit(train)
phase[0] = "predict"
test = load_rmd17("uracil", "test", n=200, path=os.environ["SKACE_RMD17_DIR"])
m.predict_energy_forces(test)
time.sleep(0.5)
print(json.dumps({k: round(v) for k, v in peaks.items()}, indent=0))
