"""
Molecular dynamics of ethanol with a fitted ACE potential
=========================================================

Fit a small linear ACE potential to ethanol energies and forces, check its
test errors, then run constant-energy (NVE) molecular dynamics with ASE's
velocity Verlet integrator and :class:`skace.ACECalculator`.  A potential
whose forces are the exact gradient of its energy conserves the total energy
up to the integrator's error: the drift of the total energy over the run is
a quick test of a potential (and of its forces) before production use.

The data are rMD17 ethanol (split 01) when the files can be found (see
:func:`skace.datasets.load_rmd17`; set ``SKACE_RMD17_DIR``), otherwise the
250 + 250 configurations bundled with skace (:func:`skace.datasets.load_sample`).
The energy plot is written to ``ethanol_md_energy.png`` in the current
directory, or to the path in the environment variable ``SKACE_EXAMPLE_PLOT``.
"""

# %%
# Data
# ----
# Energies in eV (``atoms.info["energy"]``) and forces in eV/Å
# (``atoms.arrays["forces"]``), the keys :class:`skace.ACERegressor` reads.
import os
import time

import matplotlib

matplotlib.use("Agg")  # no display needed: the figure is written to a file
import matplotlib.pyplot as plt
import numpy as np
from ase import units
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

from skace import ACECalculator, ACERegressor, ACETransformer
from skace.datasets import load_rmd17, load_sample
from skace.metrics import evaluate

try:  # ASE >= 3.29 deprecates MaxwellBoltzmannDistribution for this equivalent
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)

try:
    train = load_rmd17("ethanol", "train", n=500)
    test = load_rmd17("ethanol", "test", n=500)
    source = "rMD17 ethanol"
except FileNotFoundError:
    train, test = load_sample("train"), load_sample("test")
    source = "bundled ethanol sample"
print(f"{source}: {len(train)} training and {len(test)} test configurations, "
      f"{len(train[0])} atoms ({train[0].get_chemical_formula()})")

# %%
# Fit
# ---
# A small basis: body order 4 (``correlation_order=3``) with a lower degree
# for the higher orders, Bessel radial functions, and the default Bayesian
# ridge solver, which picks the regularisation by maximising the evidence.
descriptor = ACETransformer(cutoff=5.0, correlation_order=3, max_degree=[12, 10, 8],
                            radial_basis="bessel")
t0 = time.perf_counter()
model = ACERegressor(descriptor).fit(train)
print(f"{model.n_features_} features, fitted in {time.perf_counter() - t0:.1f} s")

for name, structures in (("train", train), ("test", test)):
    err = evaluate(model, structures)
    print(f"{name:5s}  energy MAE {1000 * err['energy_mae']:6.2f} meV   "
          f"force MAE {1000 * err['force_mae']:6.2f} meV/Å   "
          f"force RMSE {1000 * err['force_rmse']:6.2f} meV/Å")

# %%
# NVE molecular dynamics
# ----------------------
# Start from a test configuration with Maxwell-Boltzmann velocities at
# 300 K (fixed random generator; the centre-of-mass motion and the overall
# rotation are removed), then integrate 2000 steps of 0.5 fs (1 ps).
#
# A 9-atom molecule is far too small to share between threads (a force
# call would mostly start and synchronise them), so the model evaluates on
# one thread: ``n_jobs=1`` (the fit above used all of them).
model.set_params(n_jobs=1)
TIMESTEP_FS = 0.5
N_STEPS = 2000
TEMPERATURE_K = 300.0

atoms = test[0].copy()
atoms.calc = ACECalculator(model)
thermalize_momenta(atoms, TEMPERATURE_K, rng=np.random.default_rng(42))
Stationary(atoms)
ZeroRotation(atoms)

times, potential, kinetic = [], [], []


def record():
    times.append(dyn.get_time() / units.fs)
    potential.append(atoms.get_potential_energy())
    kinetic.append(atoms.get_kinetic_energy())


dyn = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
dyn.attach(record, interval=1)  # observers also run once before the first step
t0 = time.perf_counter()
dyn.run(N_STEPS)
md_seconds = time.perf_counter() - t0

times = np.array(times)             # fs
potential = np.array(potential)     # eV
kinetic = np.array(kinetic)         # eV
total = potential + kinetic
temperature = kinetic / (1.5 * len(atoms) * units.kB)

# %%
# Energy conservation
# -------------------
# The drift is the slope of a straight line fitted to the total energy
# (and, as a check, its change from the first to the last step); the
# fluctuation is the standard deviation of the total energy around that
# line.  For comparison, the kinetic energy fluctuates by ~0.1 eV.
slope, intercept = np.polyfit(times / 1000.0, total, 1)  # eV / ps
residual = total - (slope * times / 1000.0 + intercept)
print(f"{N_STEPS} steps of {TIMESTEP_FS} fs ({times[-1] / 1000:.2f} ps) in {md_seconds:.1f} s "
      f"({1e6 * md_seconds / N_STEPS / len(atoms):.0f} µs per atom and step)")
print(f"mean temperature {temperature[1:].mean():.0f} K "
      f"(range {temperature.min():.0f} - {temperature.max():.0f} K)")
print(f"total energy drift: {1000 * slope:+.3f} meV/ps (linear fit), "
      f"{1000 * (total[-1] - total[0]):+.3f} meV from first to last step")
print(f"total energy fluctuation: {1000 * residual.std():.3f} meV (std about the fit), "
      f"{1000 * np.ptp(total):.3f} meV peak to peak; "
      f"kinetic energy std {1000 * kinetic.std():.1f} meV")

# %%
# Plot
# ----
fig, (ax_top, ax_bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 6))
ax_top.plot(times, potential - total[0], label="potential", lw=0.8)
ax_top.plot(times, kinetic, label="kinetic", lw=0.8)
ax_top.plot(times, total - total[0], label="total", lw=1.2, color="k")
ax_top.set_ylabel("energy (eV, relative to E_total(0))")
ax_top.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
fig.suptitle(f"Ethanol NVE, {TIMESTEP_FS} fs steps, ACE ({model.n_features_} features)")
ax_bottom.plot(times, 1000 * (total - total[0]), color="k", lw=0.8)
ax_bottom.plot(times, 1000 * (slope * times / 1000.0 + intercept - total[0]), color="C3",
               lw=1, ls="--", label=f"drift {1000 * slope:+.2f} meV/ps")
ax_bottom.set_xlabel("time (fs)")
ax_bottom.set_ylabel("total energy change (meV)")
ax_bottom.legend(loc="upper right")
fig.tight_layout()
plot_path = os.environ.get("SKACE_EXAMPLE_PLOT", "ethanol_md_energy.png")
fig.savefig(plot_path, dpi=120)
print(f"plot written to {os.path.abspath(plot_path)}")
