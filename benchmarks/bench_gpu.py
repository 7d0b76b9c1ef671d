"""Benchmark energy + forces on the GPU (``device="cuda"``) against the CPU backend.

For each size in ``--sizes`` (atoms) a periodic fcc Cu/Ni alloy supercell
(random occupation, rattled) is built, and one ``predict_energy_forces`` call
(neighbour list, energies and forces, results back on the host) is timed on
both backends in the same process, as is one step through ASE
(``ACECalculator``: energy, forces and stress, a fresh calculator each time): best of ``--repeat`` after a warm-up call
(which includes the CUDA JIT compilation). The CPU backend uses all numba
threads and is timed up to ``--cpu-max-atoms`` only (it takes about a minute
per call at 10^6 atoms on a few cores).

The model is a nu = ``--correlation-order`` basis with random coefficients
(the cost does not depend on their values). Before timing, the two backends'
energies and forces are compared on the smallest size.

Output: one JSON document on stdout (and ``--output``), with the GPU's name.

Usage on a GPU machine (``pip install ".[cuda]"``)::

    PYTHONPATH=. python benchmarks/bench_gpu.py --sizes 1000 10000 100000 1000000

Smoke test without a GPU (numba's CUDA simulator; tiny sizes only)::

    PYTHONPATH=. python benchmarks/bench_gpu.py --sizes 8 --repeat 1 --simulate
"""

import argparse
import json
import os
import platform
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000],
                   help="approximate numbers of atoms (rounded to 4 k^3)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cpu-max-atoms", type=int, default=100_000, help="skip the CPU backend above this size")
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--correlation-order", type=int, default=3)
    p.add_argument("--max-degree", type=float, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simulate", action="store_true", help="run the kernels in numba's CUDA simulator")
    p.add_argument("--output", help="also write the JSON here")
    return p.parse_args(argv)


def alloy(n_atoms, rng):
    """A Cu/Ni fcc supercell of about ``n_atoms`` atoms (4 k^3), random occupation, rattled."""
    from ase.build import bulk

    k = max(1, round((n_atoms / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((k, k, k))
    atoms.symbols[rng.random(len(atoms)) < 0.5] = "Ni"
    atoms.positions += 0.05 * rng.standard_normal(atoms.positions.shape)
    return atoms


def build_model(args, rng):
    from skace import ACERegressor, ACETransformer

    descriptor = ACETransformer(elements=["Ni", "Cu"], cutoff=args.cutoff, correlation_order=args.correlation_order,
                                max_degree=args.max_degree, radial_basis="bessel").fit([alloy(4, rng)])
    model = ACERegressor(descriptor)
    model.descriptor_ = descriptor
    model.e0_ = {el: 0.0 for el in descriptor.elements_}
    model.coef_ = rng.standard_normal(descriptor.n_features_out_) * 1e-3
    model.n_features_ = descriptor.n_features_out_
    model._fold()
    return model


def best_time(fn, repeat):
    fn()  # warm-up: JIT compilation, device allocations
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def environment(simulate):
    import numba

    from skace.gpu import cuda_available

    env = {"python": platform.python_version(), "numba": numba.__version__, "numba_threads": numba.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "simulator": simulate}
    try:
        from importlib.metadata import version

        env["numba_cuda"] = version("numba-cuda")
    except Exception:  # not installed under that name
        env["numba_cuda"] = None
    if cuda_available():
        from numba import cuda

        device = cuda.get_current_device()
        name = getattr(device, "name", "numba CUDA simulator")  # the simulator's device has no name
        env["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        env["compute_capability"] = list(getattr(device, "compute_capability", ()))
    else:
        env["gpu"] = None
    return env


def main(argv=None):
    args = parse_args(argv)
    if args.simulate:
        if "numba" in sys.modules:
            sys.exit("--simulate must be set before numba is imported")
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    import numpy as np

    from skace import ACECalculator
    from skace.gpu import check_device, device_neighbour_list

    check_device("cuda", "bench_gpu")
    rng = np.random.default_rng(args.seed)
    model = build_model(args, rng)
    env = environment(args.simulate)
    print(f"[bench_gpu] {env['gpu']}, {model.n_features_} features", file=sys.stderr, flush=True)

    def energy_forces(atoms, device):
        model.set_params(device=device)
        return model.predict_energy_forces([atoms])

    def ase_step(atoms, device):
        """One MD-like step through ASE: energy, forces and stress from a fresh calculation."""
        atoms.calc = ACECalculator(model, device=device)
        atoms.get_forces()
        atoms.get_stress()

    results = []
    for size in sorted(args.sizes):
        atoms = alloy(size, rng)
        n = len(atoms)
        row = {"n_atoms": n}
        gpu_s = best_time(lambda: energy_forces(atoms, "cuda"), args.repeat)
        row["gpu_us_per_atom"] = 1e6 * gpu_s / n
        from numba import cuda

        def neighbours():
            nl = device_neighbour_list([atoms], model.descriptor_.elements_, model.descriptor_.cutoff)
            cuda.synchronize()
            return nl

        row["gpu_neighbour_list_us_per_atom"] = 1e6 * best_time(neighbours, args.repeat) / n
        row["gpu_ase_us_per_atom"] = 1e6 * best_time(lambda: ase_step(atoms, "cuda"), args.repeat) / n
        row["n_pairs"] = int(neighbours().first[-1])
        if n <= args.cpu_max_atoms:
            E_gpu, F_gpu = energy_forces(atoms, "cuda")
            E_cpu, F_cpu = energy_forces(atoms, "cpu")
            row["max_abs_energy_diff"] = float(np.abs(E_gpu - E_cpu).max())
            row["max_abs_force_diff"] = float(np.abs(F_gpu - F_cpu).max())
            row["cpu_us_per_atom"] = 1e6 * best_time(lambda: energy_forces(atoms, "cpu"), args.repeat) / n
            row["speedup"] = row["cpu_us_per_atom"] / row["gpu_us_per_atom"]
            row["cpu_ase_us_per_atom"] = 1e6 * best_time(lambda: ase_step(atoms, "cpu"), args.repeat) / n
        print(f"[bench_gpu] {json.dumps(row)}", file=sys.stderr, flush=True)
        results.append(row)
    doc = {
        "benchmark": "energy + forces, one predict_energy_forces call per structure, best of repeat",
        "environment": env,
        "model": {"elements": model.descriptor_.elements_, "cutoff": args.cutoff,
                  "correlation_order": args.correlation_order, "max_degree": args.max_degree,
                  "radial_basis": "bessel", "n_features": model.n_features_,
                  "n_AA": int(model.descriptor_.compiled_.n_AA)},
        "repeat": args.repeat,
        "results": results,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
