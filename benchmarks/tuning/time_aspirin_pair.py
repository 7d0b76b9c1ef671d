import json, numba, sys
sys.path.insert(0, "benchmarks")
from rmd17 import predict_us_per_atom
import skace
from skace import ACERegressor
from skace.datasets import load_rmd17
numba.set_num_threads(2)
test = load_rmd17("aspirin", "test")
train = load_rmd17("aspirin", "train", n=20)
default = ACERegressor().fit(train)
larger = skace.load("/work/exp/models_s18/aspirin_1000.skace")
for m in (default, larger):
    m.predict_energy_forces(test[:2])
out = {name: dict(n_features=int(m.n_features_), us_per_atom=predict_us_per_atom(m, test))
       for name, m in (("default_28152", default), ("carbon_7.5_37062", larger))}
out["ratio"] = out["carbon_7.5_37062"]["us_per_atom"] / out["default_28152"]["us_per_atom"]
print(json.dumps(out))
