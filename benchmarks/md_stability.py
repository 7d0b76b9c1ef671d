"""Stability of fitted rMD17 models away from the training data: MD at high temperature.

For each saved model (``benchmarks/rmd17.py --save-models DIR``), start from the
first test configuration of its molecule and run

* NVE (velocity Verlet, velocities drawn at the target temperature): total
  energy drift and fluctuation;
* Langevin at the target temperature (friction 0.01 / fs): how long the
  molecule stays intact.

A molecule "breaks" when a bond of the starting structure (pairs closer than
1.25 x the sum of covalent radii) stretches beyond twice its starting length,
or when two atoms come closer than 0.6 Å. Checked every 10 steps; a run stops
at the first break. Prints JSON (and a markdown table with ``--markdown``).

Usage::

    python benchmarks/md_stability.py --models models/ --temperatures 500 1000 --ps 10
"""

import argparse
import glob
import json
import os
import sys
import time

import numpy as np
from ase import units
from ase.data import covalent_radii
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
from ase.md.verlet import VelocityVerlet


def bonds(atoms, factor=1.25):
    """``(i, j, d0)`` of the pairs closer than ``factor`` x the sum of their covalent radii."""
    d = atoms.get_all_distances()
    r = covalent_radii[atoms.numbers]
    i, j = np.nonzero(np.triu(d < factor * (r[:, None] + r[None, :]), 1))
    return i, j, d[i, j]


def broken(atoms, bond_list, stretch=2.0, closest=0.6):
    """``None`` while intact, else what broke: the most stretched starting bond beyond
    ``stretch`` x its starting length, or the closest pair under ``closest`` Å."""
    i, j, d0 = bond_list
    d = atoms.get_all_distances()
    np.fill_diagonal(d, np.inf)
    s = atoms.get_chemical_symbols()
    ratio = d[i, j] / d0
    if len(ratio) and ratio.max() > stretch:
        k = int(np.argmax(ratio))
        a, b = int(i[k]), int(j[k])
        return f"bond {s[a]}{a}-{s[b]}{b} at {d[a, b]:.2f} Å (started at {d0[k]:.2f})"
    if d.min() < closest:
        a, b = np.unravel_index(int(np.argmin(d)), d.shape)
        return f"{s[a]}{a} and {s[b]}{b} {d[a, b]:.2f} Å apart"
    return None


def run(atoms, calc, temperature, ps, timestep_fs, thermostat, seed, check_every=10):
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    if thermostat == "langevin":
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature, friction=0.01 / units.fs,
                       fixcm=False, rng=rng)
    else:
        dyn = VelocityVerlet(atoms, timestep_fs * units.fs)
    bond_list = bonds(atoms)
    n_steps = int(round(1000 * ps / timestep_fs))
    energies, done, t0 = [atoms.get_total_energy()], 0, time.perf_counter()
    intact, what = True, None
    while done < n_steps:
        try:
            dyn.run(check_every)
        except ValueError as err:  # atoms collapsed onto each other between two checks
            if "overlapping atoms" not in str(err):
                raise
            done += check_every
            intact, what = False, str(err)
            break
        done += check_every
        energies.append(atoms.get_total_energy())
        what = broken(atoms, bond_list) if np.isfinite(energies[-1]) else "energy not finite"
        if what is not None:
            intact = False
            break
    wall = time.perf_counter() - t0
    e = np.array(energies) / len(atoms)
    out = {"thermostat": thermostat, "temperature_K": temperature, "ps_requested": ps,
           "ps_intact": done * timestep_fs / 1000 if intact else (done - check_every) * timestep_fs / 1000,
           "intact": intact, "broke": what, "wall_s": wall, "us_per_atom_step": 1e6 * wall / max(done, 1) / len(atoms)}
    if thermostat == "nve":
        t = np.arange(len(e)) * check_every * timestep_fs / 1000
        out["drift_meV_per_atom_per_ps"] = 1000 * float(np.polyfit(t, e, 1)[0]) if len(e) > 2 else None
        out["fluctuation_meV_per_atom"] = 1000 * float(e.std())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="folder of MOLECULE_N.skace files")
    p.add_argument("--temperatures", nargs="*", type=float, default=[500.0, 1000.0])
    p.add_argument("--ps", type=float, default=10.0, help="length of each run in ps (default 10)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--thermostats", nargs="*", choices=["nve", "langevin"], default=["nve", "langevin"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    from skace.calculator import ACECalculator
    from skace.datasets import load_rmd17

    files = sorted(glob.glob(os.path.join(args.models, "*.skace")))
    if not files:
        sys.exit(f"no .skace models in {args.models}")
    results = []
    for path in files:
        molecule, n_train = os.path.basename(path)[:-6].rsplit("_", 1)
        start = load_rmd17(molecule, "test", n=1)[0]
        calc = ACECalculator(path)
        for temperature in args.temperatures:
            for thermostat in args.thermostats:
                r = run(start, calc, temperature, args.ps, args.timestep, thermostat, args.seed)
                r.update(molecule=molecule, n_train=int(n_train))
                results.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    print(json.dumps({"timestep_fs": args.timestep, "results": results}, indent=1))
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({"timestep_fs": args.timestep, "results": results}, fh, indent=1)
    if args.markdown:
        lines = ["| molecule | n_train | T (K) | NVE intact ps | NVE drift meV/atom/ps | Langevin intact ps |",
                 "|---|---|---|---|---|---|"]
        key = lambda r: (r["molecule"], r["n_train"], r["temperature_K"])  # noqa: E731
        runs = {}
        for r in results:
            runs.setdefault(key(r), {})[r["thermostat"]] = r
        def intact(r):
            return "–" if r is None else f"{r['ps_intact']:.1f}{'' if r['intact'] else ' (broke)'}"

        for (mol, n, temp), pair in runs.items():
            nve, lan = pair.get("nve"), pair.get("langevin")
            drift = None if nve is None else nve.get("drift_meV_per_atom_per_ps")
            lines.append(f"| {mol} | {n} | {temp:.0f} | {intact(nve)} "
                         f"| {'–' if drift is None else f'{drift:+.3f}'} | {intact(lan)} |")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
