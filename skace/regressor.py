"""``ACERegressor``: a linear ACE potential fitted to energies and forces."""

import functools
import warnings
from numbers import Integral, Real

import numpy as np
from ase.stress import full_3x3_to_voigt_6_stress
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import chunked as _chunked
from . import streaming as _streaming
from .baselines import baseline_terms
from .descriptor import ACETransformer, _check_device, numba_threads
from .fitting import (SPECTRUM_CACHE, SYSTEM_CACHE, assemble, clearly_underdetermined, column_scale,
                      energy_row_scale, few_data, fingerprint, fitting_rows, force_route, kernel_pays,
                      physical_memory, read_stress, read_targets, svd_exceeds_memory)
from .kernels import ace as _k
from .linalg import (DUAL_FLOOR_PASSES, DUAL_FLOOR_START, DUAL_FLOOR_TOL, GRAM_JITTER, KERNEL_SEARCH_LO,
                     FactorOnDemand, GramSolver, KernelPosterior, KernelSolver, ard, floored_scale)
from .maths.basis import fold_coefficients, needed_products
from .maths.priors import PRIORS, smoothness_prior
from .structures import as_structure_list, species_indices

SOLVERS = ("bayesian", "ridge", "gcv", "ard", "cv")

#: Largest posterior factor (bytes) pickled with a model; larger ones are dropped on saving,
#: and ``predict(return_std=True)`` on the loaded model says so.
POSTERIOR_SAVE_BYTES = 64 * 2**20


def posterior_bytes(posterior):
    """Bytes of the arrays a fitted ``_posterior`` tuple holds: its factor (``nbytes`` of a
    factor object, or an array) and, for the SVD route, the right singular vectors beside it."""
    def size(part):
        if isinstance(part, (tuple, list)):
            return sum(size(p) for p in part)
        return int(getattr(part, "nbytes", 0))

    return size(posterior[2:])

#: The descriptor of ``ACERegressor()`` when none is given, chosen for small organic
#: molecules by validation on rMD17 training splits only (benchmarks/tuning/); its
#: ``max_degree`` (and ``center_max_degree``) is the largest rung of :data:`DEFAULT_DEGREES`
#: that the training data's elements afford (:func:`default_degrees`).
DEFAULT_DESCRIPTOR = dict(cutoff=4.5, correlation_order=4, max_degree=[16, 8, 7, 6.5], radial_basis="bessel",
                          l_weight=0.25)

#: Degree ladder of the default descriptor, smallest first: rungs ``(degrees, center_degrees)``,
#: one degree per correlation order, for every centre and (a dict, or None) lower ones for
#: some central elements (``ACETransformer``'s ``center_max_degree``; elements absent from
#: the data are dropped).
#: With ``l_weight=0.25`` the degree mostly counts radial indices, so the basis spends its
#: functions on angular resolution: at equal size that beat ``l_weight=1`` by 20 % in
#: validation (benchmarks/tuning/defaults_2026-11-25.md, section 3). The upper rungs raise
#: the five-body degree, the largest lever found since (benchmarks/tuning/defaults_2026-12-02.md).
#: The C, H rung 20/10/8.5/8 beat 16/8/8/8 in validation on toluene by 20 % (energy) and 13 %
#: (forces) and lost to it on naphthalene by 5 % and 3 % (benchmarks/tuning/defaults_2026-12-03.md).
#: Hydrogen centres carry smaller errors than heavy ones, so the per-centre rung 16/8/7/7 with
#: hydrogen 16/8/6.5/5 spends its functions on carbon and oxygen: it validated 7-11 % better
#: than 16/8/7/6.5 on aspirin and ethanol, and for C, H, N, O 16/7/6/6 with hydrogen
#: 16/7/5.5/4.5 validated 6 % better than 16/7/6/5.5 on uracil (same file, "per-centre degrees").
#: The rung after it raises the carbon centres' five-body degree to 7.5 (C, H, O: 37062
#: functions, the default since session 22; ``default_degrees(elements, 28200)`` gives the
#: rung below, 1.8 times cheaper to predict with): it validated 5-14 % better on both
#: errors for all four C, H, O molecules of rMD17 (aspirin, salicylic acid, ethanol,
#: malonaldehyde; same file, sessions 18, 20 and 21).
_H16 = {"H": [16, 7, 5.5, 4.5]}
_H18 = {"H": [16, 8, 6.5, 5]}
DEFAULT_DEGREES = (
    ([12, 6, 5, 4], None), ([14, 7, 5.5, 4.5], None), ([16, 7, 6, 4.5], None), ([16, 7, 6, 5], None),
    ([16, 7, 6, 5.5], None), ([16, 7, 6, 6], _H16), ([16, 8, 7, 5], None), ([16, 8, 7, 6], None),
    ([16, 8, 7, 6.5], None), ([16, 8, 7, 7], _H18),
    ([16, 8, 7, 7.5], {**_H18, "N": [16, 8, 7, 7], "O": [16, 8, 7, 7]}),
    ([16, 8, 7, 8], {**_H18, "N": [16, 8, 7, 7], "O": [16, 8, 7, 7]}), ([20, 10, 8.5, 7], None),
    ([20, 10, 8.5, 7.5], None), ([20, 10, 8.5, 8], None))

#: Largest basis of the default descriptor: what fits in under an hour and about 13 GB on
#: two cores (37100 functions: an 11 GB Gram matrix). C, H, O reach 16/8/7/7.5 with
#: hydrogen 16/8/6.5/5 and oxygen 16/8/7/7 (37062 functions), C, H [20, 10, 8.5, 8]
#: (23306), C, H, N, O 16/7/6/6 with hydrogen 16/7/5.5/4.5 (27490).
DEFAULT_MAX_FEATURES = 37100

#: Budget of the default descriptor for a fit with few data (:func:`skace.fitting.few_data`
#: against the default basis: 50 rMD17 configurations of every molecule but naphthalene,
#: 100 of ethanol and malonaldehyde). Such a fit interpolates its data and is solved from
#: the SVD of its design matrix (rows x functions, no Gram matrix), so a larger basis costs
#: little: C, H, O take the next rung (carbon five-body degree 8, 54009 functions), C, H, N, O
#: [16, 8, 7, 5] (41000), C, H stay at the top of the ladder. In validation at 50 configurations
#: (with :data:`AUTO_PRIOR_WEIGHTS`) it lowered the energy and force errors of the four C, H, O
#: molecules and uracil by 2-9 % and 2-7 % (benchmarks/tuning/defaults_2026-12-03.md, session 25).
FEW_DATA_MAX_FEATURES = 55000

#: Prior weights ``(prior_l_weight, prior_correlation_weight)`` of "auto": (a fit with enough
#: data, a fit with few data, :func:`skace.fitting.few_data`).
AUTO_PRIOR_WEIGHTS = ((1.0, 1.0), (2.0, 0.8))

#: Prior orders of ``prior_order="auto"``: (a fit with enough data, a clearly underdetermined
#: one). Validation on rMD17 training splits: ``benchmarks/tuning/defaults_2026-12-03.md``.
AUTO_PRIOR_ORDERS = (2.0, 3.0)


def _rung_params(elements, rung):
    """``ACETransformer`` degree parameters of ``rung`` for ``elements``."""
    degrees, centers = rung
    centers = {el: list(d) for el, d in (centers or {}).items() if el in elements}
    return dict(max_degree=list(degrees), center_max_degree=centers or None)


@functools.lru_cache(maxsize=None)
def _rung_size(elements, k):
    """Number of functions of the default descriptor on rung ``k`` of :data:`DEFAULT_DEGREES`
    for ``elements`` (a tuple; remembered, as every default fit climbs the ladder)."""
    from .maths.basis import ACEBasis

    params = _rung_params(elements, DEFAULT_DEGREES[k])
    return ACEBasis(list(elements), DEFAULT_DESCRIPTOR["correlation_order"], params["max_degree"],
                    DEFAULT_DESCRIPTOR["l_weight"], None, center_max_degree=params["center_max_degree"]).n_features


def default_degrees(elements, max_features=DEFAULT_MAX_FEATURES):
    """Degree bounds of the default descriptor for ``elements``: the largest rung of
    :data:`DEFAULT_DEGREES` whose basis (with the other :data:`DEFAULT_DESCRIPTOR`
    settings) has at most ``max_features`` functions.

    The basis grows steeply with the number of elements, so one fixed degree is either
    too small for hydrocarbons or too large for four elements: for C, H it is
    [20, 10, 8.5, 8] (23306 functions), for C, H, O [16, 8, 7, 7.5] with hydrogen
    centres at [16, 8, 6.5, 5] and oxygen at [16, 8, 7, 7] (37062), for C, H, N, O
    [16, 7, 6, 6] with hydrogen at [16, 7, 5.5, 4.5] (27490). (With the earlier
    ``l_weight=1``, in validation on naphthalene, trained on 500 training configurations
    and validated on 500 others, a C, H basis of 11424 functions gave 8.6 meV/Å against
    19.0 for one of 2324.) A smaller budget takes the rungs below: for C, H, O, 28200
    gives [16, 8, 7, 7] (28152 functions, a 6.4 GB Gram matrix instead of 11 GB, 1.8
    times cheaper to predict with), which validated 5-14 % worse on the C, H, O
    molecules of rMD17.

    Parameters
    ----------
    elements : list of str
    max_features : int, default=DEFAULT_MAX_FEATURES

    Returns
    -------
    params : dict
        ``max_degree`` (list) and ``center_max_degree`` (dict or None), as
        ``ACETransformer`` parameters.

    Examples
    --------
    >>> from skace.regressor import default_degrees
    >>> default_degrees(["H", "C", "O"])
    {'max_degree': [16, 8, 7, 7.5], 'center_max_degree': {'H': [16, 8, 6.5, 5], 'O': [16, 8, 7, 7]}}
    >>> default_degrees(["H", "C"])
    {'max_degree': [20, 10, 8.5, 8], 'center_max_degree': None}
    >>> default_degrees(["H", "C", "O"], max_features=28200)
    {'max_degree': [16, 8, 7, 7], 'center_max_degree': {'H': [16, 8, 6.5, 5]}}
    """
    return _rung_params(elements, _default_rung(elements, max_features)[0])


def _default_rung(elements, max_features):
    """The rung of :data:`DEFAULT_DEGREES` that :func:`default_degrees` chooses, and its size
    (None for the bottom rung when the one above already exceeds the budget)."""
    chosen, size = 0, None
    for k in range(1, len(DEFAULT_DEGREES)):
        n = _rung_size(tuple(elements), k)
        if n > max_features:
            break
        chosen, size = k, n
    return DEFAULT_DEGREES[chosen], size


def default_n_features(elements, max_features=DEFAULT_MAX_FEATURES):
    """Number of functions of the default descriptor for ``elements``
    (:func:`default_degrees`), e.g. to tell whether a saved result used it.

    Examples
    --------
    >>> from skace.regressor import default_n_features
    >>> default_n_features(["C", "H", "O"]), default_n_features(["C", "H", "O"], max_features=28200)
    (37062, 28152)
    """
    size = _default_rung(elements, max_features)[1]
    return _rung_size(tuple(elements), 0) if size is None else size


def default_budget(elements, n_rows=None):
    """``max_features`` of the default descriptor for a fit with ``n_rows`` energy, force
    and stress rows: :data:`FEW_DATA_MAX_FEATURES` where they are few against the default
    basis (:func:`skace.fitting.few_data`), else :data:`DEFAULT_MAX_FEATURES` (also when
    ``n_rows`` is None).

    Examples
    --------
    >>> from skace.regressor import default_budget
    >>> default_budget(["C", "H", "O"], n_rows=50 * (1 + 3 * 16))  # 50 salicylic acid configurations
    55000
    >>> default_budget(["C", "H", "O"], n_rows=1000 * (1 + 3 * 16))
    37100
    """
    if n_rows is not None and few_data(n_rows, default_n_features(elements)):
        return FEW_DATA_MAX_FEATURES
    return DEFAULT_MAX_FEATURES


def default_descriptor(elements, n_rows=None):
    """``ACETransformer`` with :data:`DEFAULT_DESCRIPTOR` and :func:`default_degrees` for
    ``elements``, within :func:`default_budget` for ``n_rows`` fitting rows.

    Examples
    --------
    >>> from skace.regressor import default_descriptor
    >>> d = default_descriptor(["C", "H"])
    >>> d.radial_basis, d.l_weight, d.max_degree
    ('bessel', 0.25, [20, 10, 8.5, 8])
    >>> default_descriptor(["C", "H", "O"], n_rows=2450).max_degree  # few data: one rung up
    [16, 8, 7, 8]
    """
    return ACETransformer(**{**DEFAULT_DESCRIPTOR, **default_degrees(elements, default_budget(elements, n_rows))})


class ACERegressor(RegressorMixin, BaseEstimator):
    """Linear ACE potential fitted to energies and forces.

    The energy is ``E = sum_i (E0[Z_i] + c[Z_i] @ B_i)`` over atoms ``i``
    with ACE features ``B_i`` of the atom's environment.

    Parameters
    ----------
    descriptor : ACETransformer, optional
        The basis (cloned and fitted in ``fit``). None: :func:`default_descriptor`,
        Bessel radial functions, cutoff 4.5 Å, body order 5, ``l_weight=0.25``, and
        the largest degrees of a ladder that keep the basis within 37100
        functions for the training data's elements (16/8/7/7.5, hydrogen centres
        16/8/6.5/5, oxygen centres 16/8/7/7, for C, H, O), or within 55000 for
        a fit with few data (:func:`default_budget`: carbon five-body degree 8
        for C, H, O), chosen by validation on rMD17 training splits.
    alpha : float, default=1e-6
        Regularisation strength ``alpha |Gamma c|^2`` for ``solver="ridge"``
        (the starting point for the other solvers).
    energy_weight, force_weight : float, default=30.0, 1.0
        Weights of energy rows (eV) and force rows (eV/Å). ``force_weight=0``
        gives an energy-only fit.
    stress_weight : float, default=1.0
        Weight of the six virial rows of each structure that has a stress
        (``info[stress_key]`` or a calculator's stored stress; ASE's sign and
        Voigt order). The rows compare the virial ``stress * volume`` (eV)
        and are scaled per structure like its energy row
        (``energy_weight_scaling``, ``info["weight"]``). 0 ignores stresses.
    energy_weight_scaling : {"sqrt_atoms", "atoms", "none"}, default="sqrt_atoms"
        Divide each energy row by ``sqrt(N)``, ``N`` or nothing.
    e0 : "auto", dict or None, default="auto"
        Per-element reference energies (eV). "auto": fitted jointly with the
        ACE coefficients (after a weighted least-squares fit of energies on
        element counts, minimum-norm when compositions are collinear, is
        subtracted; for single-molecule data E0 then carries the mean
        energy); a dict ``{symbol: energy}`` fixes them; None: zero.
    prior : {"algebraic", "exponential", "none"}, default="algebraic"
        Smoothness prior ``Gamma`` (:mod:`skace.maths.priors`).
    prior_order : float or "auto", default="auto"
        Order ``p`` of the prior. "auto": 3 when the fit is clearly
        underdetermined (at most 3/4 as many energy, force and stress rows as
        unknowns, so that it can interpolate its data and leans on the
        prior), else 2. The fitted order is ``prior_order_``. In validation
        on rMD17 training splits the stronger prior generalised better from
        50 and 100 configurations (energy MAE 4-12 % lower on four molecules)
        and 2 % worse from 250 (ethanol).
    prior_l_weight : float or "auto", default="auto"
        Weight of the angular degrees ``l`` against the radial ``n`` in the
        prior (``w_l`` in :mod:`skace.maths.priors`; ACEpotentials.jl's
        ``wL``). "auto": 2 for a fit with few data (at most a tenth as many
        rows as unknowns, :func:`skace.fitting.few_data`), else 1; the fitted
        weight is ``prior_l_weight_``.
    prior_correlation_weight : float or "auto", default="auto"
        Factor applied to the prior once per factor beyond the first
        (``w_nu``): below 1 regularises high body orders less. "auto": 0.8
        for a fit with few data, else 1; the fitted weight is
        ``prior_correlation_weight_``. A fit with few data interpolates its
        data and its prior's shape decides: in validation at 50 rMD17
        configurations (2, 0.8) lowered the errors of the C, H, O molecules,
        toluene and uracil by up to 3 %, and by 2-9 % with the larger default
        basis that few data also get (:data:`FEW_DATA_MAX_FEATURES`);
        naphthalene, whose 50 configurations are not few data by this rule,
        lost 1.6 % with them (``benchmarks/tuning/defaults_2026-12-03.md``,
        sessions 24-25).
    standardize : bool, default=False
        Divide each feature by its root-sum-square over the weighted rows
        before the prior applies (the prior then acts on standardised
        features). False (default) applies the prior to the raw
        coefficients, as ACE1 does: in validation on rMD17 training splits
        this generalised much better from few configurations (aspirin, 50:
        force MAE 72 against 90 meV/Å) and as well from 500.
    solver : {"bayesian", "ridge", "gcv", "ard", "cv"}, default="bayesian"
        "bayesian": evidence-maximising ridge (picks alpha, gives
        ``predict(..., return_std=True)``); "ridge": fixed ``alpha``; "gcv":
        alpha by generalised cross-validation over a log grid; "ard":
        automatic relevance determination (sparse; O(n_features^3) per iteration);
        "cv": alpha minimising a held-out error of whole structures, then a
        fit on all of them (with the posterior at that alpha for
        ``return_std``): on the design route the exact leave-one-structure-out
        error, on the Gram route the error of ``validation_fraction`` of the
        structures, kept out of the Gram matrix while alpha is searched.
    validation_fraction : float, default=0.1
        Share of the structures held out by ``solver="cv"`` on the Gram route
        (drawn with a fixed seed). With none held out (fewer than 10 would
        remain, or structures streamed from a database or iterator) the Gram
        route chooses alpha by the evidence, as "bayesian" does.
    baseline : ASE calculator, optional
        Delta learning: a calculator (for example
        :class:`skace.baselines.PairRepulsion`, or EMT) whose energies,
        forces and stresses are subtracted from the targets before fitting
        and added to every prediction (``predict``, ``predict_forces``,
        ``predict_stress``, ``predict_atomic_energies`` when it gives per-atom
        energies, and :class:`skace.ACECalculator`). Evaluated on copies of
        the structures; cloned and pickled with the model.
    energy_key, forces_key, stress_key : str
        Where targets live in ``atoms.info`` / ``atoms.arrays`` / ``atoms.info``.
    design_limit : int, default=2_000_000
        Largest force design (entries) solved by SVD of the design itself
        (the most accurate route, but slow beyond small problems); larger
        fits use the Gram matrix, assembled in chunks. Fits with at most 3/4
        as many rows as features (few training structures) always use the
        design: it is then the smaller matrix, and the evidence of a fit
        that can interpolate needs its exact zero singular values. With the
        "bayesian" solver, such a design whose rows^2 x features exceeds
        ``skace.fitting.KERNEL_MIN_WORK`` (1e12: rMD17 fits of 250
        configurations) is solved in dual form instead, by Cholesky
        factorisations of ``X X^T`` (``skace.linalg.KernelSolver``: the same
        model, several times faster than the SVD, without
        ``regularization_path``). A fit with more rows than that but fewer
        internal ones (each structure's force rows less its rigid motions,
        ``skace.fitting.internal_rows``: rMD17 ethanol and malonaldehyde at
        1000 configurations), or one whose SVD exceeds ``svd_memory_limit``
        (salicylic acid at 500), is solved the same way on its internal rows
        where that fits in ``svd_memory_limit``
        (``skace.fitting.dual_of_internal_rows``), with the Gram route's
        model (its prior floor, below, folded into the column scales:
        ``skace.linalg.floored_scale``), in less than half its time.
    svd_memory_limit : int or "auto", default="auto"
        Largest estimated memory (bytes) of that SVD for an underdetermined fit
        (``skace.fitting.svd_bytes``: about ``8 (2 m n + 2.5 m^2)`` for ``m``
        rows and ``n`` features). A fit that would need more takes the dual
        form of its internal rows with the "bayesian" solver where that fits
        (above), or else the Gram route (``8 n^2`` bytes) instead of failing
        for want of memory, and there with the "bayesian" and "cv" solvers
        chooses alpha by the error of
        ``validation_fraction`` of the structures held out, as ``solver="cv"``
        does there (the evidence of a Gram matrix cannot choose it for a fit
        that interpolates its data). "auto": 3/4 of the machine's physical
        memory.
    eigen_limit : int, default=4000
        With more features than this, Gram-matrix fits with the "ridge" and
        "bayesian" solvers use Cholesky factorisations (the evidence is
        maximised by a scalar search) instead of one eigendecomposition,
        which is far slower at that size; ``regularization_path`` is then
        unavailable. The "bayesian" search there adds a floor of
        ``skace.linalg.GRAM_JITTER`` times each standardised column's squared
        norm to its prior precision (part of the prior its evidence scores), so
        that rounding in the Gram matrix does not decide how weak the
        regularisation can be, and weaker floors where the evidence still
        rises at the bottom of its range (``prior_floor_``); "ridge" uses
        ``alpha`` alone.
    cache : bool, default=True
        Reuse the assembled system when only regression parameters change.
        A system larger than the cache (``skace.fitting.SYSTEM_CACHE``,
        3 GiB), or any system with ``cache=False``, is used once: its force
        Gram matrix becomes the solver's matrix in place, so the fit holds
        one ``n_features`` square matrix instead of two.
    n_blocks : int, optional
        Assemble the least-squares system in this many blocks of structures,
        each a ``joblib`` task: sequential by default, on a cluster inside
        ``with joblib.parallel_backend("dask"):`` (the blocks' systems are
        merged in a fixed order, so the coefficients do not depend on where
        they ran). None: one block in this process.
    n_jobs : int, optional
        Threads for the numba kernels.
    verbose : bool, default=False
        Progress bar over structures while assembling.
    device : {"cpu", "cuda"}, default="cpu"
        Where predictions (energies, forces, stress) run: numba CPU kernels
        or an NVIDIA GPU through numba-cuda (:mod:`skace.gpu`). The
        descriptor's own ``device`` decides where the features and gradients
        of a fit are computed; the linear algebra runs on the CPU.

    Attributes
    ----------
    descriptor_ : ACETransformer
    coef_ : ndarray (n_features,)
    e0_ : dict
    alpha_ : float
        Regularisation used (``alpha / beta`` ratio for the Bayesian solver).
    alpha_limited_ : bool
        True when the Bayesian solver's Cholesky route stopped while the
        evidence was still rising (for ``solver="cv"``: the held-out error
        still falling) towards weaker regularisation: at the
        bottom of its search range (``1e-18`` of the largest diagonal entry)
        or at the smallest ``alpha_`` whose Gram matrix it could factorise
        (then set by rounding). ``alpha_`` is then not an evidence maximum;
        the fit is still a valid ridge fit. Always False on the SVD and
        eigendecomposition routes, which have their own fallback; on the
        dual route (``design_limit``), the search's own verdict on its range
        (``1e-16`` of the largest squared singular value), for the evidence
        or, where that interpolates, the leave-one-structure-out error.
    cv_scores_ : ndarray (n, 2) or None
        ``solver="cv"``, "bayesian" fits that ``svd_memory_limit`` moved to
        the Gram route, and "bayesian" fits on the dual route whose evidence
        interpolates (leave-one-structure-out): the alphas scored (in
        ``alpha_``'s units) and the mean squared held-out residual per
        weighted row at each; None otherwise.
    evidence_scores_ : ndarray (n, 2) or None
        Bayesian fits on the Cholesky route (more features than
        ``eigen_limit``) and on the dual route (``design_limit``): every alpha
        the evidence search scored (in ``alpha_``'s units, one Cholesky
        factorisation each; with the prior floor kept, ``prior_floor_``) and
        its log evidence; None otherwise.
    prior_floor_ : float or None
        Relative prior floor of a Bayesian fit on the Cholesky route or in
        the dual form of its internal rows: coefficient ``j`` has prior
        precision ``alpha_ + prior_floor_ * G_jj`` (in ``alpha_``'s units;
        ``G_jj`` its standardised column's squared norm; in the dual form,
        whose column scales hold the floor, exactly so where ``alpha_`` is
        the ``lam0`` they were set for: ``skace.linalg.floored_scale``):
        ``skace.linalg.GRAM_JITTER``, or weaker on the Cholesky route
        where its evidence rose to the bottom of the search's range and chose
        a weaker one (``skace.linalg.GRAM_FLOOR_PASSES``); None on the other
        routes.
    prior_order_ : float
        Order of the smoothness prior used (``prior_order``, resolved if "auto").
    prior_l_weight_, prior_correlation_weight_ : float
        Weights of the prior used (resolved if "auto").
    n_features_ : int

    Examples
    --------
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> train = load_sample(n=40)
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(train)
    >>> model.predict(train[:2]).shape
    (2,)
    """

    _parameter_constraints = {
        "descriptor": [ACETransformer, None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "energy_weight": [Interval(Real, 0, None, closed="left")],
        "force_weight": [Interval(Real, 0, None, closed="left")],
        "stress_weight": [Interval(Real, 0, None, closed="left")],
        "energy_weight_scaling": [StrOptions({"sqrt_atoms", "atoms", "none"})],
        "e0": [StrOptions({"auto"}), dict, None],
        "prior": [StrOptions(set(PRIORS))],
        "prior_order": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "prior_l_weight": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "prior_correlation_weight": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "standardize": ["boolean"],
        "solver": [StrOptions(set(SOLVERS))],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "energy_key": [str],
        "forces_key": [str],
        "stress_key": [str],
        "baseline": [None, HasMethods(["get_potential_energy", "get_forces"])],
        "design_limit": [Interval(Integral, 0, None, closed="left")],
        "svd_memory_limit": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "eigen_limit": [Interval(Integral, 0, None, closed="left")],
        "cache": ["boolean"],
        "n_blocks": [Interval(Integral, 1, None, closed="left"), None],
        "n_jobs": [Integral, None],
        "verbose": ["boolean"],
        "device": [StrOptions({"cpu", "cuda"})],
    }

    def __init__(
        self,
        descriptor=None,
        alpha=1e-6,
        energy_weight=30.0,
        force_weight=1.0,
        energy_weight_scaling="sqrt_atoms",
        e0="auto",
        prior="algebraic",
        prior_order="auto",
        prior_l_weight="auto",
        prior_correlation_weight="auto",
        standardize=False,
        solver="bayesian",
        validation_fraction=0.1,
        energy_key="energy",
        forces_key="forces",
        stress_key="stress",
        stress_weight=1.0,
        baseline=None,
        design_limit=2_000_000,
        svd_memory_limit="auto",
        eigen_limit=4000,
        cache=True,
        n_blocks=None,
        n_jobs=None,
        verbose=False,
        device="cpu",
    ):
        self.descriptor = descriptor
        self.alpha = alpha
        self.energy_weight = energy_weight
        self.force_weight = force_weight
        self.energy_weight_scaling = energy_weight_scaling
        self.e0 = e0
        self.prior = prior
        self.prior_order = prior_order
        self.prior_l_weight = prior_l_weight
        self.prior_correlation_weight = prior_correlation_weight
        self.standardize = standardize
        self.solver = solver
        self.validation_fraction = validation_fraction
        self.energy_key = energy_key
        self.forces_key = forces_key
        self.stress_key = stress_key
        self.stress_weight = stress_weight
        self.baseline = baseline
        self.design_limit = design_limit
        self.svd_memory_limit = svd_memory_limit
        self.eigen_limit = eigen_limit
        self.cache = cache
        self.n_blocks = n_blocks
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.device = device

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit to the energies and forces stored on the structures.

        Parameters
        ----------
        X : list or iterable of ase.Atoms, or path of an ASE database
            Training structures. A database path or an iterator is streamed
            in blocks (:mod:`skace.streaming`; Gram-matrix assembly, no
            structure list held). Each needs ``info[energy_key]`` and
            ``arrays[forces_key]`` (or calculator results), optionally
            ``info[stress_key]`` (or a calculator's stress) for virial rows;
            ``info["weight"]`` scales a structure's rows.
        y : array-like of shape (n_structures,), optional
            Energies (eV); when given, the fit uses energies only.

        Returns
        -------
        self : ACERegressor
        """
        self._validate_params()
        _check_device(self.device, "ACERegressor")
        if y is None and _streaming.is_stream(X):
            return _streaming.fit_stream(self, X)
        structures = as_structure_list(X)
        energy_only = y is not None or self.force_weight == 0
        if y is not None:
            energies = np.asarray(y, dtype=float).ravel()
            if energies.shape != (len(structures),):
                raise ValueError(f"y has {energies.size} energies for {len(structures)} structures")
            if not np.all(np.isfinite(energies)):
                raise ValueError("y contains NaN or infinite energies")
            weights = np.array([float(a.info.get("weight", 1.0)) for a in structures])
            forces = None
        else:
            energies, forces, weights = read_targets(structures, self.energy_key, self.forces_key,
                                                     need_forces=not energy_only)
        use_stress = y is None and self.stress_weight > 0
        stress = read_stress(structures, self.stress_key) if use_stress else None
        residual_hash = None
        if self.baseline is not None:
            energies, forces, stress, residual_hash = self._subtract_baseline(structures, energies, forces, stress)
        if self.descriptor is not None:
            descriptor = clone(self.descriptor)
        else:
            rows = fitting_rows(structures, not energy_only, stress[0] if use_stress else ())
            descriptor = default_descriptor(ACETransformer(**DEFAULT_DESCRIPTOR)._elements_of(structures), rows)
        if self.n_jobs is not None:
            descriptor.set_params(n_jobs=self.n_jobs)
        descriptor.fit(structures)
        elements = descriptor.elements_
        species = species_indices(structures, elements)
        counts = np.zeros((len(structures), len(elements)))
        owner = np.repeat(np.arange(len(structures)), [len(a) for a in structures])
        np.add.at(counts, (owner, species), 1.0)

        memory_limit = self._svd_memory_limit()
        # a fit off the design route but wide in its internal rows, for the "bayesian" solver's dual
        # form (only such fits ask assemble for that route, whose test then runs again)
        internal = self.solver == "bayesian" and forces is not None and force_route(
            structures, descriptor.n_features_out_, self.design_limit, memory_limit, dual=True) == "internal"
        # the dual form's floored evidence chooses alpha there; on the Gram route held-out structures do
        beyond_memory = not internal and forces is not None and svd_exceeds_memory(
            len(forces), len(structures), descriptor.n_features_out_, self.design_limit, memory_limit)
        holdout = self._holdout_fraction(beyond_memory)
        key = fingerprint(structures, energy_only, self.energy_key, self.forces_key,
                          self.energy_weight_scaling, self.design_limit, beyond_memory, internal,
                          sorted(descriptor.get_params().items(), key=lambda kv: kv[0]),
                          None if y is None else energies.tobytes(), use_stress and self.stress_key,
                          residual_hash, holdout)
        escale = energy_row_scale(structures, weights, self.energy_weight_scaling)
        system = SYSTEM_CACHE.get(key) if self.cache else None
        if system is None:
            progress, bar = self._progress(len(structures))
            with numba_threads(self.n_jobs):
                system = assemble(descriptor, structures, energies, forces, escale, weights, len(elements),
                                  counts, self.design_limit, progress, stress=stress, n_blocks=self.n_blocks,
                                  holdout=holdout, memory_limit=memory_limit, dual=internal)
            if bar is not None:
                bar.close()
            if self.cache:
                SYSTEM_CACHE.put(key, system)
        # a system too large for the cache is used once: its Gram matrix may become the solver's
        consume = not (self.cache and SYSTEM_CACHE.get(key) is system)
        return self._finish_fit(descriptor, system, key, counts, energies, escale, energy_only, use_stress,
                                consume=consume)

    def _holdout_fraction(self, beyond_memory=False):
        """Share of the structures a Gram-route fit holds out to choose alpha: with
        ``solver="cv"``, and with "bayesian" too for a fit that ``svd_memory_limit``
        moved from the design route (:func:`skace.fitting.svd_exceeds_memory`)."""
        solvers = ("cv", "bayesian") if beyond_memory else ("cv",)
        return float(self.validation_fraction) if self.solver in solvers else 0.0

    def _svd_memory_limit(self):
        """``svd_memory_limit`` in bytes ("auto": 3/4 of physical memory)."""
        if self.svd_memory_limit == "auto":
            return 3 * physical_memory() // 4
        return int(self.svd_memory_limit)

    def _finish_fit(self, descriptor, system, key, counts, energies, escale, energy_only, use_stress, cache=True,
                    consume=False):
        """Reference energies, prior and solution of an assembled ``system``; sets the fitted attributes.

        ``consume``: the system is not used again, so its force Gram matrix may be
        overwritten (:meth:`LinearSystem.gram`)."""
        elements = descriptor.elements_
        self.descriptor_ = descriptor
        self._system_key = key
        e0 = self._reference_energies(elements, counts, energies, escale)
        joint = self.e0 == "auto"
        fw = 0.0 if energy_only else float(self.force_weight)
        sw = float(self.stress_weight) if use_stress else 0.0
        rows = sum(part.n_rows(fw, sw) for part in (system, system.holdout) if part is not None)
        unknowns = system.n_features + (len(elements) if joint else 0)
        if isinstance(self.prior_order, str):  # "auto": a fit with clearly fewer rows than unknowns
            order = AUTO_PRIOR_ORDERS[int(clearly_underdetermined(rows, unknowns))]  # leans on its prior
        else:
            order = float(self.prior_order)
        w_l, w_nu = self.prior_l_weight, self.prior_correlation_weight
        if "auto" in (w_l, w_nu):  # "auto": the prior's shape for a fit with few rows per unknown
            auto = AUTO_PRIOR_WEIGHTS[int(few_data(rows, unknowns))]
            w_l, w_nu = (auto[0] if w_l == "auto" else w_l), (auto[1] if w_nu == "auto" else w_nu)
        self.prior_order_, self.prior_l_weight_, self.prior_correlation_weight_ = order, float(w_l), float(w_nu)
        gamma = smoothness_prior(descriptor.basis_.features, self.prior, order, self.prior_l_weight_,
                                 self.prior_correlation_weight_)
        if joint:
            gamma = np.concatenate([gamma, np.ones(len(elements))])
        coef = self._solve(system, key, e0, gamma, (order, self.prior_l_weight_, self.prior_correlation_weight_),
                           float(self.energy_weight), fw, joint, sw, cache=cache,
                           consume=consume)
        nf = descriptor.n_features_out_
        self.coef_ = coef[:nf]
        if joint:
            e0 = e0 + coef[nf:]
        self.e0_ = {el: float(v) for el, v in zip(elements, e0)}
        self._joint_e0 = joint
        self.n_features_ = nf
        self._fold()
        return self

    def _subtract_baseline(self, structures, energies, forces, stress):
        """Targets minus the baseline's, and a hash of them (the assembly cache key)."""
        import hashlib

        base = baseline_terms(self.baseline, structures, forces=forces is not None)
        energies = energies - base["energy"]
        h = hashlib.sha1(energies.tobytes())
        if forces is not None:
            forces = forces - base["forces"]
            h.update(forces.tobytes())
        if stress is not None and len(stress[0]):
            index, virial = stress
            sub = baseline_terms(self.baseline, [structures[k] for k in index], forces=False, virial=True)
            stress = (index, virial - sub["virial"])
            h.update(stress[1].tobytes())
        return energies, forces, stress, h.hexdigest()

    def _progress(self, total):
        if not self.verbose:
            return None, None
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="features and gradients", unit="structure")
        return bar.update, bar

    def _reference_energies(self, elements, counts, energies, row_scale):
        if self.e0 is None:
            return np.zeros(len(elements))
        if isinstance(self.e0, dict):
            missing = [el for el in elements if el not in self.e0]
            if missing:
                raise ValueError(f"e0 has no reference energy for elements {missing}")
            return np.array([float(self.e0[el]) for el in elements])
        # weighted minimum-norm least squares: defined even when compositions are collinear
        w = row_scale[:, None]
        return np.linalg.lstsq(counts * w, energies * row_scale, rcond=None)[0]

    def _solve(self, system, key, e0, gamma, prior_shape, energy_weight, force_weight, joint, stress_weight=0.0,
               cache=True, consume=False):
        """Coefficients (features, then E0 corrections if ``joint``); sets alpha_, scale_, posterior."""
        use_design = system.XF is not None or system.mF == 0
        self.spectrum_ = None
        self._posterior = None
        self.alpha_limited_ = False
        self.cv_scores_ = None
        self.evidence_scores_ = None
        self.prior_floor_ = None
        big = not use_design and system.n_features > self.eigen_limit
        # held-out structures: solver="cv" on the Gram route, or an SVD beyond svd_memory_limit
        held_out = system.holdout is not None and self.solver in ("cv", "bayesian")
        if self.solver == "ard" or (big and self.solver in ("ridge", "bayesian")) or held_out or (
                self.solver == "cv" and not use_design):
            G, b, yy, m = system.gram(energy_weight, force_weight, e0, joint, stress_weight, consume=consume)
            scale = column_scale(np.sqrt(np.maximum(np.diag(G), 0.0)), gamma, self.standardize)
            for i0 in range(0, len(scale), 1024):
                G[i0:i0 + 1024] /= scale[i0:i0 + 1024, None] * scale[None, :]
            b = b / scale
            self.scale_ = scale
            if self.solver == "ard":
                d, a, beta, cov, kept = ard(G, b, yy, m)
                self.alpha_ = float(np.median(a[kept]) / beta) if len(kept) else np.inf
                self.beta_ = beta
                self.ard_precision_ = a
                self._posterior = ("ard", kept, np.linalg.cholesky(cov + 1e-300 * np.eye(len(kept))), None)
                return d / scale
            gs = GramSolver(G, b, yy, m, jitter=0.0 if self.solver == "ridge" else GRAM_JITTER)
            del G
            held = system.holdout if held_out else None
            if self.solver == "ridge":
                lam = float(self.alpha)
            else:
                if held is not None:  # alpha by the held-out structures' error, then fit on all
                    Xh, yh = held.weighted_design(energy_weight, force_weight, e0, joint, stress_weight)
                    Xh /= scale
                    lam = gs.holdout_search(Xh, yh)
                    self.cv_scores_ = np.array(sorted((a, e / len(yh)) for a, e in gs.holdout_scores.items()))
                    self.alpha_limited_ = gs.limited
                    gs.add_rows(Xh, yh)
                    del Xh
                    self.log_evidence_, beta = gs.log_evidence_profiled(lam)
                else:
                    alpha, beta, self.log_evidence_ = gs.evidence_search()
                    self.alpha_limited_ = gs.limited
                    self.evidence_scores_ = gs.evidence_scores()
                    lam = gs.scored(alpha / beta)  # the lam scored, not its rounded round trip
                self.beta_ = beta
                self.prior_floor_ = gs.jitter
                self._posterior = ("cholesky", None, FactorOnDemand(gs, lam), beta)
            self.alpha_ = lam
            return gs.ridge(lam) / scale
        design_rows = system.n_rows(force_weight, stress_weight) - system.rigid_rows(force_weight)[0]
        if use_design and self.solver == "bayesian" and kernel_pays(
                design_rows, system.XE.shape[1] if joint else system.n_features):
            return self._solve_dual(system, e0, gamma, energy_weight, force_weight, joint, stress_weight, consume)
        with_cv = self.solver == "cv"
        skey = (key, energy_weight, force_weight, tuple(np.round(e0, 12)), self.prior, prior_shape, joint,
                stress_weight, self.standardize, with_cv)
        cache = cache and self.cache
        cached = SPECTRUM_CACHE.get(skey) if cache else None
        if cached is None:
            cached = system.combine(energy_weight, force_weight, e0, gamma, use_design, joint, stress_weight,
                                    self.standardize, cv=with_cv, consume=consume)
            if cache:
                SPECTRUM_CACHE.put(skey, cached)
        spec, scale = cached
        self.scale_ = scale
        if self.solver == "ridge":
            alpha = float(self.alpha)
        elif self.solver == "gcv":
            grid = self._alpha_grid(spec)
            alpha = float(grid[np.argmin([spec.gcv(a) for a in grid])])
        elif with_cv and spec.cv is not None:  # the exact leave-one-structure-out error
            ts, scores = spec.cv
            alpha = float(spec.lam[0]) * 10.0 ** float(ts[int(np.argmin(scores))])
            self.cv_scores_ = np.column_stack([float(spec.lam[0]) * 10.0 ** ts, scores])
            self.log_evidence_, beta = spec.log_evidence_profiled(alpha)
            self.beta_ = beta
            L, null_var = spec.posterior_factor(alpha * beta, beta)
            self._posterior = ("bayesian", None, L, (spec.V, null_var))
        else:  # bayesian (and "cv" without structure groups: virial rows, or too large to keep U)
            if with_cv:
                warnings.warn("solver='cv' chose alpha by the Bayesian evidence instead: the leave-one-"
                              "structure-out error is not available with one structure, with virial rows, or "
                              "where the design's left singular vectors exceed skace.fitting.CV_MAX_BYTES",
                              UserWarning, stacklevel=3)
            a, beta, log_ev = spec.evidence_ridge()
            alpha = a / beta
            self.beta_ = beta
            self.log_evidence_ = log_ev
            L, null_var = spec.posterior_factor(a, beta)
            self._posterior = ("bayesian", None, L, (spec.V, null_var))
        self.alpha_ = alpha
        self.spectrum_ = spec
        return spec.ridge(alpha) / scale

    def _solve_dual(self, system, e0, gamma, energy_weight, force_weight, joint, stress_weight, consume):
        """Bayesian ridge of a wide design in dual form (:class:`skace.linalg.KernelSolver`):
        the model of the SVD route, at a fraction of its cost for large designs. Its
        leave-one-structure-out fallback too is taken where the SVD route's would be: not
        above :data:`skace.fitting.CV_MAX_BYTES` (rMD17 aspirin, 250 configurations, whose
        evidence peaks 0.7 decades above the bottom of its range: force MAE 29.49 meV/A at the
        evidence's choice, 29.70 at the validation error's).

        A design of internal force rows (a fit of the Gram route's size,
        :func:`skace.fitting.dual_of_internal_rows`) with more than ``eigen_limit``
        features gets the Cholesky route's model instead, its prior floor included
        (:func:`skace.linalg.floored_scale`)."""
        X, y, scale = system.scaled_design(energy_weight, force_weight, e0, gamma, joint, stress_weight,
                                           self.standardize, consume)
        groups = system.validation_groups(X.shape, stress_weight, force_weight)
        rigid = system.rigid_rows(force_weight)
        if system.force_rows is None or system.n_features <= self.eigen_limit:
            ks = KernelSolver(X, y, groups, *rigid)
            alpha, beta, self.log_evidence_ = ks.evidence_search()
        else:
            diag = np.einsum("ij,ij->j", X, X)  # the Gram route's diagonal
            lam0, weight, ks = float(np.max(diag)) * 10.0 ** DUAL_FLOOR_START, np.ones_like(diag), None
            for _ in range(DUAL_FLOOR_PASSES):
                new = floored_scale(diag, lam0)
                X *= weight / new  # columns now divided by scale * new
                weight, ks = new, None  # (one X X^T at a time)
                ks = KernelSolver(X, y, groups, *rigid)
                start = float(np.clip(np.log10(lam0 / ks.top), KERNEL_SEARCH_LO, 0.0))
                alpha, beta, self.log_evidence_ = ks.evidence_search(start=start)
                if abs(np.log10(alpha / beta / lam0)) <= DUAL_FLOOR_TOL:
                    break
                lam0 = alpha / beta
            scale = scale * weight
            self.prior_floor_ = GRAM_JITTER
        lam = ks.scored(alpha / beta)
        self.alpha_limited_ = ks.limited
        self.evidence_scores_ = ks.evidence_scores()
        if ks.cv_scores:
            self.cv_scores_ = np.array(sorted(ks.cv_scores.items()))
        self.beta_, self.alpha_, self.scale_ = beta, lam, scale
        self._posterior = ("kernel", None, KernelPosterior(ks.X, lam), beta)
        return ks.coefficients(lam) / scale

    @staticmethod
    def _alpha_grid(spec):
        top = float(spec.lam[0]) if spec.lam.size else 1.0
        return top * np.logspace(-16, 0, 65)

    def export_yace(self, path, **kwargs):
        """Write the fitted model as an ML-PACE potential file (yace) for LAMMPS pair_style pace.

        Parameters
        ----------
        path : str or path-like
            Output file (``.yace``).
        **kwargs
            ``degree``, ``spline_step``, ``fit_tol``, ``max_degree`` of :func:`skace.export.export_yace`.

        Returns
        -------
        skace.export.YaceExport
            The file and the measured error of the radial tabulation.

        Examples
        --------
        >>> from skace import ACERegressor, ACETransformer
        >>> from skace.datasets import load_sample
        >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=5,
        ...                                     radial_basis="bessel")).fit(load_sample(n=20))
        >>> info = model.export_yace("ethanol.yace")  # doctest: +SKIP
        >>> info.radial.max_abs_error < 1e-9  # doctest: +SKIP
        True
        """
        from .export import export_yace

        return export_yace(self, path, **kwargs)

    def regularization_path(self, alphas):
        """Training fit quality along a path of ``alpha`` values, at the cost of one fit.

        Uses the spectral decomposition of the last ``fit`` (not available
        for ``solver="ard"``).

        Parameters
        ----------
        alphas : array-like of float

        Returns
        -------
        pandas.DataFrame
            Columns ``alpha``, ``rss`` (weighted training residual), ``dof``
            (effective number of parameters), ``gcv``.
        """
        import pandas as pd

        check_is_fitted(self, "coef_")
        spec = getattr(self, "spectrum_", None)
        if spec is None:
            raise ValueError(
                "regularization_path needs the spectral decomposition of a ridge, gcv or bayesian fit "
                "(not kept for ard, for fits with more features than eigen_limit, for wide designs solved in "
                "dual form above skace.fitting.KERNEL_MIN_WORK, or after unpickling)"
            )
        rows = [dict(alpha=float(a), rss=spec.residual(a), dof=spec.dof(a), gcv=spec.gcv(a)) for a in alphas]
        return pd.DataFrame(rows)

    def _fold(self):
        self.folded_ = fold_coefficients(self.descriptor_.compiled_, self.coef_)

    def _folded_coefficients(self):
        """``folded_``, with the per-element product lists added to models saved without them."""
        if len(self.folded_) == 4:
            w_indptr, w_parent = self.folded_[:2]
            self.folded_ = tuple(self.folded_) + needed_products(self.descriptor_.compiled_, w_indptr, w_parent)
        return self.folded_

    def _lane_work(self):
        """The energy kernel's per-thread work arrays (:func:`skace.kernels.ace.lane_work`), kept
        between calls and not pickled: MD evaluates one small structure per step, and fresh
        arrays of this size (megabytes) cost it a page fault per 4 KiB. One set per calling
        Python thread, so that threads predicting with one model do not share them."""
        import threading

        import numba

        rows = self.descriptor_.compiled_.n_A + len(self.descriptor_.compiled_.tree_parent) + 1
        cache = self.__dict__.setdefault("_lane_work_cache", {})
        key = threading.get_ident()
        cache[key] = _k.lane_work(rows, numba.get_num_threads(), cache.get(key))
        return cache[key]

    # --------------------------------------------------------- prediction
    def _evaluate(self, structures, forces=True, stress=False, _raw=False, labels=None):
        """Per-atom energies, forces (n_atoms, 3) and per-structure virial-based stress.

        Inputs above ``skace.chunked.LARGE_ATOMS`` atoms in all are evaluated
        in groups of structures and large structures in chunks of atoms
        (bounded memory); ``_raw``: one batch, no baseline; ``labels``: the
        structures' names in errors (``skace.structures.structure_label``).
        """
        check_is_fitted(self, "coef_")
        if getattr(self, "device", "cpu") == "cuda":  # models pickled before it existed lack it
            from .gpu import evaluate

            _check_device(self.device, "ACERegressor")
            out = evaluate(self, structures, forces, stress, labels=labels)
            if not _raw and getattr(self, "baseline", None) is not None:
                self._add_baseline(structures, out, forces, stress)
            return out
        if not _raw and sum(len(a) for a in structures) > _chunked.LARGE_ATOMS:
            out = _chunked.evaluate_mixed(self, structures, forces, stress, labels=labels)
            if getattr(self, "baseline", None) is not None:
                self._add_baseline(structures, out, forces, stress)
            return out
        d = self.descriptor_
        with numba_threads(self.n_jobs):
            batch = d._batch(structures, labels)
            n_atoms = len(batch.species)
            energies = np.empty(n_atoms)
            f_pair = np.empty((len(batch.nbr) if forces or stress else 0, 3))
            _k.compute_energies_forces(
                batch.first, batch.nbr, batch.D, batch.species, *d._kernel_basis_args(),
                *self._folded_coefficients(), batch.max_pairs, self._lane_work(),
                bool(forces or stress), energies, f_pair,
            )
        e0 = np.array([self.e0_[el] for el in d.elements_])
        energies += e0[batch.species]
        out = {"energies": energies}
        owner = np.repeat(np.arange(n_atoms), np.diff(batch.first))
        if forces:
            F = np.zeros((n_atoms, 3))
            for a in range(3):
                F[:, a] = np.bincount(owner, f_pair[:, a], minlength=n_atoms) - np.bincount(
                    batch.nbr, f_pair[:, a], minlength=n_atoms)
            out["forces"] = F
        if stress:
            structure_of_pair = np.searchsorted(batch.structure_start, owner, side="right") - 1
            virial = np.zeros((len(structures), 3, 3))
            np.add.at(virial, structure_of_pair, f_pair[:, :, None] * batch.D[:, None, :])
            out["virial"] = 0.5 * (virial + virial.transpose(0, 2, 1))  # dE/d(strain)
        out["batch"] = batch
        if not _raw and getattr(self, "baseline", None) is not None:
            self._add_baseline(structures, out, forces, stress)
        return out

    def _add_baseline(self, structures, out, forces, stress):
        """Add the baseline's energies, forces and virials to the results of :meth:`_evaluate`."""
        from ase.stress import voigt_6_to_full_3x3_stress

        base = baseline_terms(self.baseline, structures, forces=forces, virial=stress)
        if base["energies"] is not None:
            out["energies"] = out["energies"] + base["energies"]
        else:  # no per-atom energies: totals stay exact, per-atom energies become unavailable
            out["energy_offset"] = base["energy"]
        if forces:
            out["forces"] = out["forces"] + base["forces"]
        if stress:
            out["virial"] = out["virial"] + voigt_6_to_full_3x3_stress(base["virial"])

    @staticmethod
    def _structure_energies(res):
        """Total energy of each structure from the results of :meth:`_evaluate`."""
        E = np.add.reduceat(res["energies"], res["batch"].structure_start[:-1])
        return E + res["energy_offset"] if "energy_offset" in res else E

    def predict_atomic_energies(self, X):
        """Per-atom energies ``E0[Z_i] + c @ B_i`` (plus the baseline's) in eV, atoms in input order.

        Returns
        -------
        ndarray of shape (total atoms,)
        """
        check_is_fitted(self, "coef_")
        res = self._evaluate(as_structure_list(X), forces=False)
        if "energy_offset" in res:
            raise ValueError(f"the baseline {type(self.baseline).__name__} gives no per-atom energies "
                             "(its implemented_properties lack 'energies')")
        return res["energies"]

    def predict(self, X, return_std=False):
        """Total energies (eV).

        Parameters
        ----------
        X : list of ase.Atoms
        return_std : bool, default=False
            Also return the predictive standard deviation (Bayesian and ARD solvers).

        Returns
        -------
        energies : ndarray of shape (n_structures,)
        std : ndarray of shape (n_structures,), if ``return_std``
        """
        check_is_fitted(self, "coef_")
        structures = as_structure_list(X)
        res = self._evaluate(structures, forces=False)
        E = self._structure_energies(res)
        if not return_std:
            return E
        return E, self._energy_std(structures)

    def _energy_std(self, structures):
        if self._posterior is None:
            raise ValueError(f"return_std needs solver='bayesian', 'cv' or 'ard', not {self.solver!r}")
        if self._posterior[0] == "dropped":
            raise ValueError(f"return_std needs the posterior, which was not saved with this model "
                             f"({self._posterior[1] / 2**20:.0f} MB, above POSTERIOR_SAVE_BYTES); "
                             f"refit it to get uncertainties")
        kind, kept, L, null = self._posterior
        x = self.descriptor_.transform(structures)
        if self._joint_e0:  # E0 corrections are unknowns too: their columns are the element counts
            species = species_indices(structures, self.descriptor_.elements_)
            owner = np.repeat(np.arange(len(structures)), [len(a) for a in structures])
            counts = np.zeros((len(structures), len(self.descriptor_.elements_)))
            np.add.at(counts, (owner, species), 1.0)
            x = np.hstack([x, counts])
        x = x / self.scale_
        if kind == "cholesky":  # L: lower Cholesky factor of G + lam I; Sigma = (G + lam I)^-1 / beta
            from scipy.linalg import solve_triangular

            L = L.get() if isinstance(L, FactorOnDemand) else L
            var = np.sum(solve_triangular(L, x.T, lower=True) ** 2, axis=0) / null
        elif kind == "kernel":  # Sigma = (X^T X + lam I)^-1 / beta, from the design's QR factor
            var = L.variance(x) / null
        elif kind == "ard":
            var = np.sum((x[:, kept] @ L) ** 2, axis=1)
        else:
            V, null_var = null
            proj = x @ V
            var = np.sum((x @ L) ** 2, axis=1) + null_var * np.maximum(
                np.sum(x * x, axis=1) - np.sum(proj * proj, axis=1), 0.0)
        scale = energy_row_scale(structures, np.ones(len(structures)), self.energy_weight_scaling)
        noise = 1.0 / (self.beta_ * (self.energy_weight * scale) ** 2)
        return np.sqrt(var + noise)

    def predict_forces(self, X):
        """Forces ``-dE/dr`` (eV/Å) from the adjoint of the energy (no feature gradients).

        Returns
        -------
        ndarray of shape (total atoms, 3)
        """
        check_is_fitted(self, "coef_")
        return self._evaluate(as_structure_list(X), forces=True)["forces"]

    def predict_energy_forces(self, X):
        """Energies and forces in one pass (cheaper than ``predict`` then ``predict_forces``).

        Returns
        -------
        energies : ndarray of shape (n_structures,)
        forces : ndarray of shape (total atoms, 3)
        """
        check_is_fitted(self, "coef_")
        res = self._evaluate(as_structure_list(X), forces=True)
        return self._structure_energies(res), res["forces"]

    def predict_stress(self, X):
        """Stress (eV/Å^3, ASE's sign, Voigt order xx yy zz yz xz xy): virial / cell volume.

        The virial is the derivative of the energy with respect to a
        homogeneous strain of positions and cell, defined for any structure;
        dividing by the volume needs a cell spanning three dimensions (periodic
        along all, some or none of them).

        Returns
        -------
        ndarray of shape (n_structures, 6)
        """
        check_is_fitted(self, "coef_")
        structures = as_structure_list(X)
        volumes = np.array([abs(float(np.linalg.det(a.cell.array))) for a in structures])
        for k, v in enumerate(volumes):
            if not v > 1e-9:
                raise ValueError(f"stress of X[{k}] needs a cell of non-zero volume (stress = virial / volume)")
        virial = self._evaluate(structures, forces=False, stress=True)["virial"]
        return full_3x3_to_voigt_6_stress(virial / volumes[:, None, None])

    def score(self, X, y=None):
        """R^2 of the predicted energies (against ``y`` or the stored energies).

        Use :mod:`skace.metrics` scorers for force and per-atom errors.
        """
        structures = as_structure_list(X)
        if y is None:
            y, _, _ = read_targets(structures, self.energy_key, self.forces_key, need_forces=False)
        return r2_score(y, self.predict(structures))

    def __getstate__(self):
        # the spectral decomposition (n_features^2 floats) only serves
        # regularization_path on the fitted object; do not pickle it. The
        # posterior factor is n_features^2 floats too (840 MB at 10^4
        # functions): saved only while small, so model files stay small
        state = self.__dict__.copy()
        state.pop("spectrum_", None)
        state.pop("_lane_work_cache", None)
        posterior = state.get("_posterior")
        if posterior is not None and posterior[0] != "dropped":
            size = posterior_bytes(posterior)
            if size > POSTERIOR_SAVE_BYTES:
                state["_posterior"] = ("dropped", size)
            elif isinstance(posterior[2], FactorOnDemand):  # saved factorised
                state["_posterior"] = (*posterior[:2], posterior[2].get().copy(), *posterior[3:])
        return state

    def __setstate__(self, state):
        # models pickled before these parameters existed get their defaults
        for name, default in (("stress_key", "stress"), ("stress_weight", 1.0), ("baseline", None),
                              ("n_blocks", None), ("standardize", True), ("device", "cpu"),
                              ("svd_memory_limit", "auto"), ("prior_l_weight", 1.0),
                              ("prior_correlation_weight", 1.0)):
            state.setdefault(name, default)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        return tags
