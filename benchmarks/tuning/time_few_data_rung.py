"""Energy + forces time of the standard and the few-data default basis, in one process.

Usage::

    python time_few_data_rung.py [MOLECULE]

Fits ``ACERegressor`` with the default descriptor's standard budget and with
``FEW_DATA_MAX_FEATURES`` on 5 training configurations (the time does not depend
on the coefficients) and times energy + forces on 100 test configurations, the
better of 3 repeats (``rmd17.predict_us_per_atom``); prints one JSON line with
both and their ratio. Data from ``$SKACE_RMD17_DIR``.
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from rmd17 import predict_us_per_atom  # noqa: E402

from skace import ACERegressor, ACETransformer  # noqa: E402
from skace.datasets import load_rmd17  # noqa: E402
from skace.regressor import (DEFAULT_DESCRIPTOR, DEFAULT_MAX_FEATURES, FEW_DATA_MAX_FEATURES,  # noqa: E402
                             default_degrees)


def main(molecule="salicylic"):
    train = load_rmd17(molecule, "train", n=5)
    test = load_rmd17(molecule, "test", n=100)
    elements = sorted(set(train[0].get_chemical_symbols()))
    out = dict(molecule=molecule)
    for name, budget in (("standard", DEFAULT_MAX_FEATURES), ("few_data", FEW_DATA_MAX_FEATURES)):
        desc = ACETransformer(**{**DEFAULT_DESCRIPTOR, **default_degrees(elements, budget)})
        model = ACERegressor(desc).fit(train)
        model.predict(test[:2])  # compile outside the timing
        out[name] = dict(n_features=int(model.n_features_), us_per_atom=round(predict_us_per_atom(model, test), 1))
    out["ratio"] = round(out["few_data"]["us_per_atom"] / out["standard"]["us_per_atom"], 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
