"""
Explaining an ACE potential with SHAP
=====================================

A linear ACE potential predicts ``E = sum_k c_k B_k + sum_i E0[Z_i]``: a
weighted sum of features ``B_k``, each a sum over atoms of a product of
neighbour-density projections. Because the model is linear, its SHAP values
with respect to the features are exact and cheap:
``phi_k = c_k (B_k - mean B_k)``, with the mean over a background set
(:func:`skace.explain.explain_energy`). They add up to the predicted
energy minus the mean prediction over the background.

Single ACE features are strongly correlated and not individually
meaningful, so we mostly look at sums over groups of features
(:func:`skace.explain.group_explanation`): by body order (how many
neighbours a feature correlates) and by the elements of those neighbours.
The energy is then split over atoms instead of features
(:func:`skace.explain.atomic_energy_attribution`). Finally, the SHAP ranking
is compared with the selection methods of :class:`skace.sparsify.ACESparsifier`:
do the functions that carry the predictions coincide with the ones worth
keeping in a sparse model?

The data are rMD17 aspirin (split 01) when the files can be found (see
:func:`skace.datasets.load_rmd17`; set ``SKACE_RMD17_DIR``), otherwise the
ethanol configurations bundled with skace. The plots are written as PNG
files to the current directory.
"""

# %%
# Data and fit
# ------------
# 150 configurations to fit a small model (body order up to 4), 50 to explain.
import time

import matplotlib

matplotlib.use("Agg")  # no display needed: the figures are written to files
import numpy as np

from skace import ACERegressor, ACETransformer
from skace.datasets import load_rmd17, load_sample
from skace.explain import (atomic_energy_attribution, explain_energy, explain_forces,
                           group_explanation, plot_atomic_energies, save_plot)
from skace.metrics import evaluate

try:
    data = load_rmd17("aspirin", n=200)
    source, name = "rMD17 aspirin", "aspirin"
except FileNotFoundError:
    data = load_sample()
    source, name = "bundled ethanol sample", "ethanol"
train, test = data[:150], data[150:200]
print(f"{source}: {len(train)} training and {len(test)} test configurations of "
      f"{data[0].get_chemical_formula()}")

descriptor = ACETransformer(cutoff=4.5, correlation_order=3, max_degree=[10, 8, 6],
                            radial_basis="bessel", l_weight=1.0)
t0 = time.perf_counter()
model = ACERegressor(descriptor).fit(train)
print(f"{model.n_features_} features, fitted in {time.perf_counter() - t0:.1f} s")
err = evaluate(model, test)
print(f"test energy MAE {1000 * err['energy_mae']:.1f} meV, force MAE {1000 * err['force_mae']:.1f} meV/Å")

# %%
# SHAP values of the energies
# ---------------------------
# Explain the test energies against the training set as background. The
# base value is the mean predicted training energy; the last column, "E0",
# holds the change of the reference energies ``sum_i E0[Z_i]`` with
# composition, zero here since every structure is the same molecule.
exp = explain_energy(model, test, background=train)
E = model.predict(test)
gap = np.abs(exp.values.sum(axis=1) + exp.base_values - E).max()
print(f"base value {exp.base_values[0]:.4f} eV; largest |sum(SHAP) + base - E| = {gap:.1e} eV")

importance = np.abs(exp.values).mean(axis=0)
print("largest mean |SHAP| (eV):")
for k in np.argsort(importance)[::-1][:5]:
    print(f"  {importance[k]:8.4f}  {exp.feature_names[k]}")

# %%
# Grouped by body order
# ---------------------
# Feature ``k`` of correlation order ``nu`` is a (nu + 1)-body term. The
# group SHAP value is the sum of its members' values, so groups still add
# up to the prediction. The bar plot shows the mean absolute group value
# over the test structures ("E0" is left out: it is zero here). Groups
# larger than the spread of the energies themselves cancel in part: the
# fit is free to trade 2-body against 3-body terms of similar shape.
by_order = group_explanation(exp, model, "body_order")
for g, v in zip(by_order.feature_names, np.abs(by_order.values).mean(axis=0)):
    print(f"  body order {g:>3s}: mean |SHAP| {1000 * v:8.1f} meV")
print(f"  (spread of the predicted energies: std {1000 * E.std():.1f} meV)")
save_plot(by_order[:, :-1], f"{name}_shap_body_order.png", kind="bar",
          title=f"{name}: SHAP by body order", close=False)

# %%
# Grouped by neighbour elements
# -----------------------------
# The elements of the neighbours a feature correlates (whatever the central
# atom), e.g. "C-O" for a 3-body feature of one C and one O neighbour.
by_neighbours = group_explanation(exp, model, "neighbours")
save_plot(by_neighbours[:, :-1], f"{name}_shap_neighbours.png", kind="bar", max_display=12,
          title=f"{name}: SHAP by neighbour elements", close=False)

# %%
# The top single features
# -----------------------
# One dot per test structure and feature, coloured by the feature's value.
# Names read ``centre|body order|element(n,l) factors|coupling``. Pair
# features come in twins: summed over a structure, "C|2-body|O(n,0)" (C
# atoms, O neighbours) and "O|2-body|C(n,0)" are the same number, so the fit
# splits their weight and their SHAP values evenly.
save_plot(exp[:, :-1], f"{name}_shap_beeswarm.png", kind="beeswarm", max_display=12, close=False)

# %%
# Forces
# ------
# Force components are linear in the feature gradients too
# (:func:`skace.explain.explain_forces`). Averaged over all atoms the
# gradients vanish (translation invariance), so the base value is zero and
# the SHAP values are each feature group's share of the force.
atom = int(np.argmax(np.linalg.norm(model.predict_forces(test[:1]), axis=1)))
fexp = group_explanation(explain_forces(model, test[:1], atoms=[atom]), model, "body_order")
print(f"force on atom {atom} ({test[0].get_chemical_symbols()[atom]}), eV/Å, by body order:")
for row, label in enumerate(fexp.instance_names):
    parts = "  ".join(f"{g}-body {v:+.3f}" for g, v in zip(fexp.feature_names, fexp.values[row]))
    print(f"  {label[-1]}: {fexp.values[row].sum() + fexp.base_values[row]:+.3f} = {parts}")

# %%
# Atomic energies
# ---------------
# The same prediction split over atoms: ``E_i = E0[Z_i] + c . B_i``.
# Coloured relative to each element's ``E0``; with one composition in the
# training data the split between ``E0`` and the ACE part is set by the
# prior, so compare atoms of the same element.
energies = atomic_energy_attribution(model, test[:1])[0]
plot_atomic_energies(test[0], energies, f"{name}_atomic_energies.png", e0=model, close=False)
for symbol in dict.fromkeys(test[0].get_chemical_symbols()):
    rel = energies[np.array(test[0].get_chemical_symbols()) == symbol] - model.e0_[symbol]
    print(f"  {symbol}: E_i - E0 from {rel.min():+.3f} to {rel.max():+.3f} eV")

# %%
# SHAP ranking versus sparse selection
# ------------------------------------
# Keep 10% of the functions by each method and refit on the kept set
# (:class:`skace.sparsify.ACESparsifier`): ``"shap"`` ranks by mean
# absolute SHAP value of the energy, ``"omp"`` is greedy forward selection
# on the weighted energy + force system, ``"cost"`` the same with the
# evaluation cost of each function counted, ``"lasso"`` the order of entry on
# the L1 path. The overlap with the SHAP set and the test errors of the
# refitted sparse models show how far "important in the fitted model" is
# from "worth keeping": SHAP values of correlated features are shared out
# among near-duplicates, so a large SHAP value does not mean a function
# cannot be replaced by others, which is what selection asks.
from skace.sparsify import ACESparsifier, time_energy_forces

k = max(model.n_features_ // 10, 10)
kept, rows = {}, []
for method in ("shap", "omp", "cost", "lasso"):
    sp = ACESparsifier(model, n_features=k, method=method).fit(train)
    kept[method] = set(sp.get_support(indices=True).tolist())
    err = evaluate(sp.model_, test)
    rows.append((method, 1000 * err["energy_mae"], 1000 * err["force_mae"],
                 time_energy_forces(sp.model_, test)))
print(f"{k} of {model.n_features_} functions kept; full model {time_energy_forces(model, test):.1f} µs/atom")
print(f"{'method':<7}{'overlap with shap':>19}{'E MAE meV':>11}{'F MAE meV/Å':>13}{'µs/atom':>9}")
for method, e, f, t in rows:
    overlap = len(kept[method] & kept["shap"]) / k
    print(f"{method:<7}{overlap:>19.0%}{e:>11.1f}{f:>13.1f}{t:>9.1f}")
print("plots written:", ", ".join(f"{name}_{s}.png" for s in
                                  ("shap_body_order", "shap_neighbours", "shap_beeswarm", "atomic_energies")))
