"""Scaling of energy + force evaluation with system size, 10^2 ... 10^6 atoms.

A small realistic model -- fcc Cu fitted to EMT data from
:func:`skace.datasets.make_emt_dataset` (body order 4, Bessel radial basis,
cutoff 5 Å) -- evaluates energies and forces (``predict_energy_forces``) of
rattled fcc Cu supercells of growing size. Each size runs in a fresh
process so that its peak resident memory is its own; structures above
``skace.chunked.LARGE_ATOMS`` atoms go through the chunked path (pairs of
one chunk of atoms held at a time), smaller ones through the batched path.

Printed (one JSON document on stdout, also written to ``--output``):
per size the number of atoms, the best wall time of ``--repeat`` calls after a
warm-up, µs per atom and step, the process's resident memory before the call
(model, structure, interpreter) and its peak during the calls, and the energy
per atom (a sanity check: the same for every size up to the rattling).

Usage::

    PYTHONPATH=. python benchmarks/bench_scaling.py --sizes 3 6 14 30 63 --output scaling.json
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time


def build_model(path):
    from skace import ACERegressor, ACETransformer, save
    from skace.datasets import make_emt_dataset

    data = make_emt_dataset(n_structures=40, elements=("Cu",), size=2, random_state=0)
    model = ACERegressor(ACETransformer(cutoff=5.0, correlation_order=3, max_degree=[10, 8, 6],
                                        radial_basis="bessel", l_weight=1.0)).fit(data)
    save(model, path)
    return model.n_features_


def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_size(path, n_rep, repeat):
    """In a fresh process: time predict_energy_forces on a (n_rep)^3 cubic supercell."""
    import numba
    from ase.build import bulk

    from skace import load

    model = load(path)
    warm = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    model.predict_energy_forces([warm])  # numba cache load / compilation
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(n_rep)
    atoms.rattle(0.05, seed=1)
    before = rss_mb()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        E, F = model.predict_energy_forces([atoms])
        best = min(best, time.perf_counter() - t0)
        del F
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = len(atoms)
    return dict(n_atoms=n, seconds=best, us_per_atom_step=1e6 * best / n, rss_before_mb=before, peak_rss_mb=peak,
                energy_per_atom=float(E[0]) / n, threads=numba.get_num_threads())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 6, 14, 30, 63],
                   help="supercell repeats of the 4-atom cubic cell (4 n^3 atoms)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per size below 10^5 atoms (1 above)")
    p.add_argument("--output")
    p.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        path, n_rep = args._child
        n_rep = int(n_rep)
        repeat = args.repeat if 4 * n_rep**3 < 100_000 else 1
        print(json.dumps(run_size(path, n_rep, repeat)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cu.skace")
        t0 = time.perf_counter()
        n_features = build_model(path)
        fit_s = time.perf_counter() - t0
        rows = []
        for n_rep in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--_child", path,
                                  str(n_rep)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"[bench_scaling] {rows[-1]}", file=sys.stderr, flush=True)
    import numba
    import numpy as np

    from skace import chunked

    result = dict(
        benchmark="bench_scaling",
        model=dict(data="make_emt_dataset(40, ('Cu',), size=2)", cutoff=5.0, correlation_order=3,
                   max_degree=[10, 8, 6], radial_basis="bessel", n_features=n_features, fit_seconds=fit_s),
        chunked=dict(large_atoms=chunked.LARGE_ATOMS, chunk_pairs=chunked.CHUNK_PAIRS),
        machine=dict(python=platform.python_version(), numpy=np.__version__, numba=numba.__version__,
                     cpus=os.cpu_count(), threads=rows[0]["threads"] if rows else None),
        sizes=rows,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
