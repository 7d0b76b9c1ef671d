"""
A Cu-Au alloy potential with stresses, from data skace makes itself
====================================================================

:func:`skace.datasets.make_emt_dataset` samples fcc Cu-Au cells (random
compositions, strained cells, vacancies) with Langevin molecular dynamics at
300, 800 and 1500 K under ASE's EMT potential, and keeps energies, forces and
stresses. We fit a linear ACE potential to energies, forces and virials
(``stress_weight``), report held-out errors per atom, per force component and
per stress component, and compare the fitted equation of state of pure Cu
with EMT's.

The parity plot is written to ``emt_alloy_parity.png`` in the current
directory, or to the path in the environment variable ``SKACE_EXAMPLE_PLOT``.
"""

# %%
# Data
# ----
# 120 cells of 32 lattice sites (31 atoms where there is a vacancy). Each
# is the last frame of a short independent MD run; the first 90 train, the
# other 30 test.
import os
import time

import matplotlib

matplotlib.use("Agg")  # no display needed: the figure is written to a file
import matplotlib.pyplot as plt
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

from skace import ACERegressor, ACETransformer
from skace.datasets import make_emt_dataset

t0 = time.perf_counter()
data = make_emt_dataset(n_structures=120, elements=("Cu", "Au"), size=2, random_state=0)
train, test = data[:90], data[90:]
print(f"{len(data)} EMT structures sampled in {time.perf_counter() - t0:.1f} s; "
      f"{sum(a.info['vacancy'] for a in data)} with a vacancy")

# %%
# Fit
# ---
# Body order 4, Bessel radial functions with a 5 Å cutoff; energies,
# forces and the six virial rows of every cell, weighted by the defaults
# (``energy_weight=30``, ``force_weight=1``, ``stress_weight=1``) and the
# Bayesian evidence picks the regularisation.
descriptor = ACETransformer(cutoff=5.0, correlation_order=3, max_degree=[12, 10, 7],
                            radial_basis="bessel", l_weight=1.0)
t0 = time.perf_counter()
model = ACERegressor(descriptor).fit(train)
print(f"{model.n_features_} features, fitted in {time.perf_counter() - t0:.1f} s")


def errors(structures):
    n = np.array([len(a) for a in structures])
    E, F = model.predict_energy_forces(structures)
    S = model.predict_stress(structures)
    E_ref = np.array([a.info["energy"] for a in structures])
    F_ref = np.concatenate([a.arrays["forces"] for a in structures])
    S_ref = np.array([a.info["stress"] for a in structures])
    return dict(e=(E / n, E_ref / n), f=(F.ravel(), F_ref.ravel()), s=(S.ravel(), S_ref.ravel()))


def rmse(pair):
    return float(np.sqrt(np.mean((pair[0] - pair[1]) ** 2)))


results = {}
for name, structures in (("train", train), ("test", test)):
    results[name] = err = errors(structures)
    print(f"{name:5s}  energy RMSE {1000 * rmse(err['e']):5.2f} meV/atom   "
          f"force RMSE {1000 * rmse(err['f']):5.1f} meV/Å   "
          f"stress RMSE {1000 * rmse(err['s']):5.2f} meV/Å^3 ({160.2177 * rmse(err['s']):.3f} GPa)")

# %%
# Equation of state of pure Cu
# ----------------------------
# A property the training data hold only indirectly: the energy of perfect
# fcc Cu against the lattice constant, by ACE and by EMT, and the pressure
# ``-trace(stress) / 3``, which vanishes at the minimum.
lattice = np.linspace(3.45, 3.75, 13)
cells = [bulk("Cu", "fcc", a=a, cubic=True) for a in lattice]
e_ace = model.predict(cells) / 4
p_ace = -model.predict_stress(cells)[:, :3].mean(axis=1)
e_emt, p_emt = [], []
for c in cells:
    c.calc = EMT()
    e_emt.append(c.get_potential_energy() / 4)
    p_emt.append(-c.get_stress()[:3].mean())
e_emt, p_emt = np.array(e_emt), np.array(p_emt)
print(f"equilibrium lattice constant (energy minimum on the grid): ACE {lattice[np.argmin(e_ace)]:.3f} Å, "
      f"EMT {lattice[np.argmin(e_emt)]:.3f} Å; largest pressure difference "
      f"{160.2177 * np.abs(p_ace - p_emt).max():.3f} GPa")

# %%
# Plot
# ----
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
labels = (("e", "energy (eV/atom)"), ("f", "force component (eV/Å)"), ("s", "stress component (eV/Å³)"))
for ax, (key, label) in zip(axes, labels):
    pred, ref = results["test"][key]
    ax.plot(ref, pred, ".", ms=3)
    lo, hi = ref.min(), ref.max()
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"EMT {label}")
    ax.set_ylabel("ACE")
    ax.set_title(f"test RMSE {rmse(results['test'][key]):.2g}")
axes[3].plot(lattice, e_emt, "k-", label="EMT")
axes[3].plot(lattice, e_ace, "o", ms=4, label="ACE")
axes[3].set_xlabel("fcc Cu lattice constant (Å)")
axes[3].set_ylabel("energy (eV/atom)")
axes[3].legend()
fig.tight_layout()
plot_path = os.environ.get("SKACE_EXAMPLE_PLOT", "emt_alloy_parity.png")
fig.savefig(plot_path, dpi=110)
print(f"plot written to {os.path.abspath(plot_path)}")
