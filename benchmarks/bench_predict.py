"""Benchmark skace energy + force prediction against pyace's ``PyACECalculator``.

Times, single-threaded, on the first ``--n-structures`` rMD17 aspirin
configurations (21 atoms each, elements C, H, O), for nu = 4 models at a few
``max_degree`` values:

* skace ``ACERegressor.predict_energy_forces`` on the whole batch (one call,
  neighbour list included) -- ``skace_batch``;
* skace ``predict_energy_forces`` called once per structure --
  ``skace_per_structure`` (shows the Python overhead of a call);
* skace through ASE: one ``ACECalculator(model)``, and per structure
  ``calc.reset(); calc.get_potential_energy(atoms); calc.get_forces(atoms)``
  (the reset makes every structure a fresh calculation) -- ``skace_ase``;
* pyace 0.4.0rc1 ``PyACECalculator`` with the recursive evaluator (what
  LAMMPS ``pair_style pace`` uses by default) on a linear nu = 4 basis with
  random non-zero coefficients and about the same number of functions per
  element as the skace model (:func:`peers.pyace_energy_forces`: the same
  ASE-level loop, plus the bare C++ ``compute`` on prebuilt neighbour lists);

and the ratios pyace time / skace time (the project's target: >= 1, skace at
least as fast as pyace).  The skace model is a real ridge fit on
``--n-fit`` configurations (``--coefficients random`` uses random
coefficients instead, like pyace's); the coefficients do not change the cost
of an evaluation as long as they are non-zero.  Before timing, skace's forces
are compared with minus the central finite-difference gradient of its energy
on the first structure (every atom and direction), and the ASE calculator's
energy and forces with ``predict_energy_forces``.

The result is one JSON document on stdout (and in ``--output`` if given);
pyace missing or failing is recorded as ``{"skipped": true, "reason": ...}``.

Usage (the environment needs skace's dependencies and, optionally, pyace)::

    cd /work/main
    PYTHONPATH=/work/main /work/bench-venv/bin/python benchmarks/bench_predict.py \\
        --n-structures 50 --repeat 5 --output bench_predict.json

What the numbers mean
---------------------
``us_per_atom``
    wall time of one pass over all structures divided by the number of
    atoms, best of ``--repeat`` passes after a warm-up (numba compilation /
    cache load excluded); ``cpu_over_wall`` of the best pass is ~1 when the
    process ran undisturbed on one core (well below 1: it was descheduled).
``ratios``
    ``ratio_ase``: pyace ASE loop / skace ASE loop (like for like: both
    per structure, neighbour lists included); ``ratio_batch``: pyace ASE
    loop / skace batch call; ``ratio_compute_vs_batch``: pyace bare C++
    ``compute`` (no neighbour list) / skace batch call (with neighbour
    list) -- the strictest; ``ratio_per_function``: ``ratio_ase`` corrected
    for the basis sizes (pyace us / function over skace us / function).
"""

from __future__ import annotations

import os

_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS")
for _var in _THREAD_ENV_VARS:  # before numpy (imported by peers) loads its BLAS
    os.environ[_var] = "1"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (imports only the standard library and numpy)

THREAD_ENV = peers.set_single_thread_env(1)

import bench_transformer as bt  # noqa: E402  (environment info, pyace basis matching)

import argparse  # noqa: E402
import time  # noqa: E402
from typing import List, Optional  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_DEGREES = [8, 10, 11]  # nu = 4: ~1.2k, 3.7k, 6.3k functions per element (C/H/O)
FD_STEP = 1e-4


def _log(msg: str) -> None:
    print(f"[bench_predict] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# skace
# --------------------------------------------------------------------------


def build_model(degree, cutoff: float, radial_basis: str, fit_structures, coefficients: str,
                alpha: float, seed: int):
    """A nu = 4 skace model: ridge fit on ``fit_structures`` or random coefficients."""
    from skace import ACERegressor, ACETransformer

    descriptor = ACETransformer(cutoff=cutoff, correlation_order=4, max_degree=degree,
                                radial_basis=radial_basis, n_jobs=1)
    info: dict = {"coefficients": coefficients}
    t0 = time.perf_counter()
    if coefficients == "fit":
        # design_limit: solve the (small, wide) force design by SVD instead of
        # assembling an n_features^2 Gram matrix (19k^2 doubles at D = 11)
        model = ACERegressor(descriptor, solver="ridge", alpha=alpha, n_jobs=1,
                             design_limit=10**9).fit(fit_structures)
        info.update(n_fit_structures=len(fit_structures), solver="ridge", alpha=alpha)
    else:
        descriptor.fit(fit_structures)
        rng = np.random.default_rng(seed)
        model = ACERegressor(descriptor, n_jobs=1)
        model.descriptor_ = descriptor
        model.e0_ = {el: 0.0 for el in descriptor.elements_}
        model.coef_ = rng.normal(size=descriptor.n_features_out_) * 1e-3
        model.n_features_ = descriptor.n_features_out_
        model._fold()
        info.update(seed=seed, scale=1e-3)
    info["build_s"] = time.perf_counter() - t0
    return model, info


def skace_force_check(model, atoms, h: float = FD_STEP) -> dict:
    """Forces vs minus central differences of the energy, every atom and direction;
    and the ASE calculator's energy / forces vs ``predict_energy_forces``."""
    from skace import ACECalculator

    energy, forces = model.predict_energy_forces([atoms])
    numeric = np.zeros_like(forces)
    for j in range(len(atoms)):
        for d in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[j, d] += h
            minus.positions[j, d] -= h
            numeric[j, d] = -(model.predict([plus])[0] - model.predict([minus])[0]) / (2 * h)
    err = np.abs(forces - numeric)
    probe = atoms.copy()
    probe.calc = ACECalculator(model)
    return {
        "force_check_max_abs_err": float(err.max()),  # eV/Å
        "force_check_rel_err": peers._rel_err(forces, numeric),
        "force_check_max_abs_force": float(np.abs(forces).max()),
        "force_check_step": h,
        "force_check_n_components": int(forces.size),
        "ase_energy_abs_diff": abs(float(probe.get_potential_energy()) - float(energy[0])),
        "ase_forces_max_abs_diff": float(np.abs(probe.get_forces() - forces).max()),
    }


def skace_case(degree, structures, fit_structures, args) -> dict:
    import skace
    from skace import ACECalculator

    n_atoms = sum(len(a) for a in structures)
    model, info = build_model(degree, args.cutoff, args.radial_basis, fit_structures,
                              args.coefficients, args.alpha, args.seed)
    d = model.descriptor_
    per_element = d.basis_.features_per_center()
    result: dict = {
        "code": f"skace {skace.__version__}", "nu": 4, "max_degree": degree,
        "n_features_total": int(d.n_features_out_), "n_features_per_element": per_element,
        "model": info,
        "settings": {"cutoff": args.cutoff, "correlation_order": 4, "max_degree": degree,
                     "radial_basis": args.radial_basis, "n_jobs": 1,
                     "elements": list(d.elements_)},
    }
    t0 = time.perf_counter()  # warm-up: numba compilation or cache load
    model.predict_energy_forces(structures[:1])
    model.predict(structures[:1])
    result["warmup_s"] = time.perf_counter() - t0
    if not args.no_check:
        result.update(skace_force_check(model, structures[0]))

    calc = ACECalculator(model)
    last: dict = {}

    def batch_pass():
        t = time.perf_counter()
        energies, forces = model.predict_energy_forces(structures)
        elapsed = time.perf_counter() - t
        last["batch"] = (energies, forces)
        return {"core": elapsed}

    def per_structure_pass():
        t = time.perf_counter()
        for atoms in structures:
            model.predict_energy_forces([atoms])
        return {"core": time.perf_counter() - t}

    def ase_pass():
        t = time.perf_counter()
        energies, forces = [], []
        for atoms in structures:
            calc.reset()
            energies.append(calc.get_potential_energy(atoms))
            forces.append(calc.get_forces(atoms))
        elapsed = time.perf_counter() - t
        last["ase"] = (np.array(energies), np.concatenate(forces))
        return {"core": elapsed}

    with peers.limited_threads(1):
        calc.reset()
        calc.get_forces(structures[0])  # warm-up of the ASE path
        result["skace_batch"] = peers._time_passes(batch_pass, n_atoms, args.repeat)
        result["skace_per_structure"] = peers._time_passes(per_structure_pass, n_atoms,
                                                           args.repeat)
        result["skace_ase"] = peers._time_passes(ase_pass, n_atoms, args.repeat)
    (e_b, f_b), (e_a, f_a) = last["batch"], last["ase"]
    result["ase_vs_batch_max_abs_diff"] = {"energy": float(np.abs(e_a - e_b).max()),
                                           "forces": float(np.abs(f_a - f_b).max())}
    return result


# --------------------------------------------------------------------------
# pyace
# --------------------------------------------------------------------------


def pyace_case(structures, target: int, cutoff: float, repeat: int, check: bool) -> dict:
    elements = peers._elements_of(structures)
    entry: dict = {}
    pb, tries = bt.matched_pyace_basis(elements, cutoff, target)
    entry["basis_requests"] = tries
    entry.update(peers.pyace_energy_forces(structures, basis=pb, n_repeat=repeat,
                                           evaluator="recursive", check_forces=check))
    return entry


# --------------------------------------------------------------------------
# ratios, contention
# --------------------------------------------------------------------------


def ratios(skace_cases: List[dict], pyace_entries: List[dict]) -> List[dict]:
    rows = []
    for s, p in zip(skace_cases, pyace_entries, strict=True):
        if p.get("skipped") or "us_per_atom" not in p:
            continue
        s_n = min(s["n_features_per_element"].values())
        p_n = min(p["n_features_per_element"].values())
        s_ase, s_batch = s["skace_ase"]["us_per_atom"], s["skace_batch"]["us_per_atom"]
        p_ase, p_compute = p["us_per_atom"], p["us_per_atom_compute"]
        rows.append({
            "skace": f"nu=4 D={s['max_degree']}",
            "skace_n_features_per_element": s_n,
            "pyace_n_features_per_element": p_n,
            "skace_batch_us_per_atom": s_batch,
            "skace_ase_us_per_atom": s_ase,
            "pyace_ase_us_per_atom": p_ase,
            "pyace_compute_us_per_atom": p_compute,
            "ratio_ase": p_ase / s_ase,
            "ratio_batch": p_ase / s_batch,
            "ratio_compute_vs_batch": p_compute / s_batch,
            "ratio_per_function": (p_ase / p_n) / (s_ase / s_n),
            "meets_target_ase": p_ase / s_ase >= 1.0,
            "meets_target_compute_vs_batch": p_compute / s_batch >= 1.0,
        })
    return rows


def contended(result: dict, threshold: float = 0.9) -> List[str]:
    """Timings whose best pass got under ``threshold`` CPU seconds per wall second."""
    flagged = []
    for c in result.get("skace", []):
        for part in ("skace_batch", "skace_per_structure", "skace_ase"):
            ratio = c.get(part, {}).get("cpu_over_wall")
            if ratio is not None and ratio < threshold:
                flagged.append(f"skace D={c['max_degree']} {part}: cpu_over_wall={ratio:.2f}")
    for e in result.get("pyace", []):
        ratio = e.get("cpu_over_wall")
        if ratio is not None and ratio < threshold:
            flagged.append(f"pyace (n_features_total={e.get('n_features_total')}): "
                           f"cpu_over_wall={ratio:.2f}")
    return flagged


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-structures", type=int, default=50, help="timed configurations")
    p.add_argument("--n-fit", type=int, default=30, help="configurations for the ridge fit")
    p.add_argument("--degrees", type=float, nargs="+", default=DEFAULT_DEGREES, metavar="D",
                   help=f"skace nu=4 max_degree values (default {DEFAULT_DEGREES})")
    p.add_argument("--repeat", type=int, default=5, help="timed passes; the best is reported")
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--radial-basis", default="agnesi")
    p.add_argument("--coefficients", choices=["fit", "random"], default="fit",
                   help="skace coefficients: ridge fit (default) or random N(0, 1e-3^2)")
    p.add_argument("--alpha", type=float, default=1e-6, help="ridge alpha of the fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="rMD17 folder (either layout) or aspirin train .npz (default: $SKACE_RMD17_DIR or shared data)")
    p.add_argument("--skip-pyace", action="store_true")
    p.add_argument("--no-check", action="store_true",
                   help="skip the finite-difference force checks (skace and pyace)")
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    data, file = peers.rmd17_source(args.data, "bench_predict")
    if args.n_structures < 1 or args.n_fit < 1:
        sys.exit("bench_predict: --n-structures and --n-fit must be positive")
    from skace.datasets import load_rmd17

    structures = peers.load_rmd17("aspirin", args.n_structures, path=str(data))
    fit_structures = load_rmd17("aspirin", n=args.n_fit, path=str(data))  # eV, eV/Å
    degrees = [int(x) if float(x).is_integer() else x for x in args.degrees]
    import numba

    numba.set_num_threads(1)
    n_atoms = sum(len(a) for a in structures)
    wall0 = time.perf_counter()
    result: dict = {
        "benchmark": "skace energy + forces (batch and ASE) vs pyace PyACECalculator",
        "provisional_note": None,
        **bt._environment(),
        "data": {"file": str(file), "molecule": "aspirin", "n_structures": len(structures),
                 "n_atoms": n_atoms, "elements": peers._elements_of(structures),
                 "n_fit_structures": args.n_fit},
        "settings": {"repeat": args.repeat, "cutoff": args.cutoff,
                     "radial_basis": args.radial_basis, "threads": 1,
                     "coefficients": args.coefficients,
                     "timing": "best of --repeat passes over all structures, after a warm-up"},
    }

    # each skace size is followed at once by its matched pyace basis, so that the
    # two timings of a ratio see the same load on a shared machine
    skace_cases: List[dict] = []
    pyace_entries: List[dict] = []  # one per skace case
    unavailable: Optional[dict] = ({"skipped": True, "reason": "--skip-pyace"}
                                   if args.skip_pyace else None)
    for degree in degrees:
        _log(f"skace nu=4 D={degree}")
        case = skace_case(degree, structures, fit_structures, args)
        skace_cases.append(case)
        target = min(case["n_features_per_element"].values())
        entry: dict = {"matched_to_skace_n_features_per_element": target}
        if unavailable is not None:
            pyace_entries.append({**entry, **unavailable})
            continue
        _log(f"pyace matched to skace D={degree} ({target} per element)")
        try:
            entry.update(pyace_case(structures, target, args.cutoff, args.repeat,
                                    not args.no_check))
        except Exception as exc:  # noqa: BLE001 -- a peer must never stop the benchmark
            entry.update(bt._skipped(exc))
            if isinstance(exc, peers.PeerUnavailable):
                unavailable = bt._skipped(exc)
        pyace_entries.append(entry)
    result["skace"] = skace_cases
    result["pyace"] = pyace_entries
    result["ratios"] = {
        "pyace_over_skace": ratios(skace_cases, pyace_entries),
        "conventions": {
            "ratio_ase": "pyace PyACECalculator ASE loop / skace ACECalculator ASE loop "
                         "(calc.reset + energy + forces per structure, neighbour lists "
                         "included)",
            "ratio_batch": "pyace ASE loop / skace predict_energy_forces on the batch",
            "ratio_compute_vs_batch": "pyace bare C++ compute (prebuilt neighbour lists) / "
                                      "skace batch (neighbour list included)",
            "ratio_per_function": "ratio_ase times skace / pyace functions per element",
            "target": ">= 1 (skace at least as fast as pyace)",
        },
    }
    return bt.finish(result, wall0, contended(result), args.output)


if __name__ == "__main__":
    sys.exit(main())
