"""Benchmark a skace model exported to ML-PACE ``.yace`` under pyace's ``PyACECalculator``.

One skace model (by default ``ACERegressor()``'s descriptor: Bessel, cutoff
4.5 Å, body order 5, degrees 16/12/9/7) is fitted by ridge on ``--n-fit``
rMD17 aspirin configurations, exported with :func:`skace.export.export_yace`
and evaluated, single-threaded, on the first ``--n-structures``
configurations by

* skace ``ACECalculator`` in an ASE loop (``calc.reset()``, energy, forces
  per structure) -- ``skace_ase``; and ``predict_energy_forces`` on the whole
  batch -- ``skace_batch``;
* pyace 0.4.0rc1 ``PyACECalculator`` on the exported file, the same ASE loop,
  with its product (C-tilde) evaluator (LAMMPS ``pair_style pace product``)
  and its recursive evaluator (``pair_style pace``'s default), projections
  off -- ``pace_product``, ``pace_recursive``.

Before timing, energies and forces of the two codes are compared on every
timed structure (``agreement``). Ratios are pace time / skace time (> 1: skace
faster). One JSON document on stdout (and in ``--output``).

Usage::

    PYTHONPATH=. NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 \\
        /work/bench-venv/bin/python benchmarks/bench_yace.py --output bench_yace.json

``us_per_atom`` is the best of ``--repeat`` passes after a warm-up, divided by
the number of atoms (see ``peers._time_passes``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "RAYON_NUM_THREADS"):  # before numpy loads its BLAS
    os.environ[_var] = "1"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

THREAD_ENV = peers.set_single_thread_env(1)

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import bench_transformer as bt  # noqa: E402  (environment info)
import numpy as np  # noqa: E402


def _log(msg: str) -> None:
    print(f"[bench_yace] {msg}", file=sys.stderr, flush=True)


def build_model(args, fit_structures):
    from skace import ACERegressor, ACETransformer
    from skace.regressor import DEFAULT_DESCRIPTOR

    params = dict(DEFAULT_DESCRIPTOR)
    if args.max_degree:
        params["max_degree"] = args.max_degree
    if args.radial_basis:
        params["radial_basis"] = args.radial_basis
    if args.cutoff:
        params["cutoff"] = args.cutoff
    t0 = time.perf_counter()
    model = ACERegressor(ACETransformer(**params, n_jobs=1), solver="ridge", alpha=1e-6, n_jobs=1,
                         design_limit=10**9).fit(fit_structures)
    d = model.descriptor_
    info = dict(descriptor={k: v for k, v in params.items()}, n_fit_structures=len(fit_structures),
                n_features_per_element=int(d.n_features_out_ // len(d.elements_)),
                n_features_total=int(d.n_features_out_), fit_s=time.perf_counter() - t0)
    return model, info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-structures", type=int, default=50, help="timed configurations")
    p.add_argument("--n-fit", type=int, default=30, help="configurations for the ridge fit")
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    p.add_argument("--max-degree", type=float, nargs="+", default=None,
                   help="override the default descriptor's degrees (one per order)")
    p.add_argument("--radial-basis", default=None)
    p.add_argument("--cutoff", type=float, default=None)
    p.add_argument("--spline-step", type=float, default=1e-3, help="PACE's deltaSplineBins (Å)")
    p.add_argument("--data", default=None, help="rMD17 folder (either layout) or aspirin train .npz (default: $SKACE_RMD17_DIR or shared data)")
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)

    from skace import ACECalculator
    from skace.datasets import load_rmd17

    data, _ = peers.rmd17_source(args.data, "bench_yace")
    structures = peers.load_rmd17("aspirin", args.n_structures, path=str(data))
    fit_structures = load_rmd17("aspirin", n=args.n_fit, path=str(data))
    n_atoms = sum(len(a) for a in structures)
    result: dict = {"benchmark": "bench_yace", "what": "energy + forces, skace vs PACE on the exported .yace",
                    "molecule": "aspirin", "n_structures": len(structures), "n_atoms": n_atoms,
                    "thread_env": THREAD_ENV, **bt._environment()}

    _log("fitting")
    model, result["model"] = build_model(args, fit_structures)
    _log(f"{result['model']['n_features_total']} functions, fitted in {result['model']['fit_s']:.1f} s; exporting")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "aspirin.yace")
        t0 = time.perf_counter()
        info = model.export_yace(path, spline_step=args.spline_step)
        r = info.radial
        result["export"] = dict(
            export_s=time.perf_counter() - t0, file_mib=os.path.getsize(path) / 2**20,
            n_functions=info.n_functions, n_ms_combs=info.n_ms_combs, radial_degree=r.degree,
            spline_step=r.spline_step, radial_fit_max_abs_error=r.fit_max_abs_error,
            radial_max_abs_error=r.max_abs_error, radial_max_abs_derivative_error=r.max_abs_derivative_error)
        _log(f"exported in {result['export']['export_s']:.1f} s ({result['export']['file_mib']:.1f} MiB)")

        pyace = peers._import_pyace()
        skace_calc = ACECalculator(model)
        pace = {"pace_product": pyace.PyACECalculator(path),
                "pace_recursive": pyace.PyACECalculator(path, recursive_evaluator=True, recursive=True)}
        for calc in pace.values():
            calc.compute_projections = False

    def energy_forces(calc, atoms):
        calc.reset()
        return calc.get_potential_energy(atoms), calc.get_forces(atoms)

    # agreement on every timed structure
    agreement = {}
    reference = [energy_forces(skace_calc, a) for a in structures]
    for name, calc in pace.items():
        de = df = 0.0
        for atoms, (e, f) in zip(structures, reference):
            e2, f2 = energy_forces(calc, atoms)
            de = max(de, abs(e - e2) / len(atoms))
            df = max(df, float(np.abs(f - f2).max()))
        agreement[name] = {"max_abs_energy_diff_per_atom_eV": de, "max_abs_force_diff_eV_per_A": df}
    result["agreement"] = agreement

    def ase_loop(calc):
        def one_pass():
            t0 = time.perf_counter()
            for atoms in structures:
                energy_forces(calc, atoms)
            return {"core": time.perf_counter() - t0}
        return one_pass

    def batch_pass():
        t0 = time.perf_counter()
        model.predict_energy_forces(structures)
        return {"core": time.perf_counter() - t0}

    timings = {}
    with peers.limited_threads(1):
        for name, one_pass in [("skace_ase", ase_loop(skace_calc)), ("skace_batch", batch_pass)] + [
                (n, ase_loop(c)) for n, c in pace.items()]:
            one_pass()  # warm-up (numba cache load, pyace neighbour-list setup)
            timings[name] = peers._time_passes(one_pass, n_atoms, args.repeat)
            _log(f"{name}: {timings[name]['us_per_atom']:.1f} µs/atom")
    result["timings"] = timings
    us = {k: v["us_per_atom"] for k, v in timings.items()}
    result["ratios"] = {
        "pace_product_over_skace_ase": us["pace_product"] / us["skace_ase"],
        "pace_recursive_over_skace_ase": us["pace_recursive"] / us["skace_ase"],
        "pace_recursive_over_skace_batch": us["pace_recursive"] / us["skace_batch"],
    }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
