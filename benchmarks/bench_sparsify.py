"""Speed-accuracy fronts: sparsified ACE models against models with a lower degree.

Fits a full model on rMD17 training configurations, sparsifies it to several
sizes (OMP, cost-aware OMP), and compares with models whose basis is shrunk by
lowering ``max_degree`` instead. Every point's µs/atom (energy + forces, one
thread) and validation errors are measured. Validation uses other training
configurations, never the test split. Prints JSON and writes a PNG.

Usage::

    SKACE_RMD17_DIR=... python benchmarks/bench_sparsify.py --molecule ethanol --output front.json
"""

import argparse
import json
import os
import sys

import numba

from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17
from skace.metrics import evaluate
from skace.sparsify import pareto_front, plot_pareto, time_energy_forces

BASE = dict(cutoff=4.5, radial_basis="bessel", l_weight=1.0)


def degree_front(molecule_train, molecule_val, nu, degrees):
    rows = []
    for D in degrees:
        model = ACERegressor(ACETransformer(correlation_order=nu, max_degree=D, **BASE)).fit(molecule_train)
        err = evaluate(model, molecule_val)
        rows.append(dict(method="lower degree", max_degree=str(D), n_features=model.n_features_,
                         us_per_atom=time_energy_forces(model, molecule_val),
                         energy_mae=1000 * err["energy_mae"], force_mae=1000 * err["force_mae"]))
    return rows


def main(argv=None):
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", default="ethanol")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--correlation-order", type=int, default=3)
    p.add_argument("--max-degree", default="14,11,8", help="degrees of the full model")
    p.add_argument("--sizes", default="150,300,600,1200", help="sparsified sizes")
    p.add_argument("--lower", default="8,6,5;10,8,6;12,9,7;13,10,7", help="';'-separated degree lists")
    p.add_argument("--output", default="sparsify_front.json")
    p.add_argument("--plot", default="sparsify_front.png")
    args = p.parse_args(argv)
    numba.set_num_threads(1)
    try:
        data = load_rmd17(args.molecule, "train")
    except FileNotFoundError as err:
        sys.exit(str(err))
    train, val = data[:args.n_train], data[-args.n_val:]
    degrees = [float(v) for v in args.max_degree.split(",")]
    full = ACERegressor(ACETransformer(correlation_order=args.correlation_order, max_degree=degrees, **BASE))
    sizes = [int(v) for v in args.sizes.split(",")]
    fronts = {}
    for method in ("omp", "cost"):
        fronts[method] = pareto_front(full, train, val, sizes, method=method)
    lower = [[float(v) for v in d.split(",")] for d in args.lower.split(";")]
    fronts["lower degree"] = pd.DataFrame(degree_front(train, val, args.correlation_order, lower)
                                          + [fronts["omp"].iloc[-1].to_dict()])
    out = {"molecule": args.molecule, "n_train": len(train), "n_val": len(val),
           "full": dict(correlation_order=args.correlation_order, max_degree=degrees, **BASE),
           "fronts": {k: v.to_dict(orient="records") for k, v in fronts.items()}}
    print(json.dumps(out, indent=1))
    with open(args.output, "w") as fh:
        json.dump(out, fh, indent=1)
    plot_pareto(fronts, args.plot)
    print(f"plot written to {os.path.abspath(args.plot)}", file=sys.stderr)


if __name__ == "__main__":
    main()
