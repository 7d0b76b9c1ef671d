"""Blocked Gram products (the OpenBLAS wide ``A.T @ A`` crash), spectral and Cholesky solvers."""

import os
import subprocess
import sys
import textwrap

import numpy as np

import pytest
from scipy import linalg

from skace.linalg import (EVIDENCE_TOL, GRAM_JITTER, GRAM_SEARCH_LO, GRAM_SEARCH_START, GRAM_SEARCH_STEP, GramSolver,
                          Spectrum,
                          cholesky_upper_inplace, gram_update, group_cv_curve, symmetrize_upper)


def test_blocked_gram_equals_plain_product():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 9000))
    G = symmetrize_upper(gram_update(np.zeros((9000, 9000)), X, block=4096), block=4096)
    ref = X[:, :300].T @ X  # a slice the crash cannot reach
    np.testing.assert_allclose(G[:300], ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(G, G.T)


def test_wide_gram_does_not_crash_with_two_threads():
    """numpy 2.4.6's OpenBLAS 0.3.31 segfaulted in ``A.T @ A`` for 925 x 17920 on 2 threads;
    the blocked product must survive a wide case in a fresh process (a crash = non-zero exit)."""
    code = textwrap.dedent("""
        import numpy as np
        from skace.linalg import gram_update, symmetrize_upper
        X = np.random.default_rng(1).normal(size=(925, 13000))
        G = symmetrize_upper(gram_update(np.zeros((13000, 13000)), X))
        assert np.isfinite(G[::997, ::997]).all()
        print("ok")
    """)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("n, block", [(700, 256), (1000, 1000), (300, 4096)])
def test_blocked_cholesky_matches_lapack(n, block):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n + 20, n))
    G = X.T @ X
    A = G.copy()
    assert cholesky_upper_inplace(A, block=block) == 0
    np.testing.assert_allclose(np.triu(A), linalg.cholesky(G), rtol=0, atol=1e-9 * np.sqrt(np.abs(G).max()))
    np.testing.assert_array_equal(np.tril(A, -1), np.tril(G, -1))  # the pristine copy survives


def test_blocked_cholesky_reports_the_failing_minor():
    G = np.eye(600)
    G[400, 400] = -1.0
    assert cholesky_upper_inplace(G, block=256) == 401


@pytest.mark.slow
def test_large_cholesky_does_not_crash_with_two_threads():
    """scipy's OpenBLAS 0.3.31 ``dpotrf`` segfaulted at n = 16000-16176 on 2 threads (a 16k-function
    fit died in its evidence search); the blocked factorisation must survive n = 16500 in a fresh process."""
    code = textwrap.dedent("""
        import numpy as np
        from skace.linalg import cholesky_upper_inplace
        n = 16500
        G = np.random.default_rng(1).normal(size=(n, n))
        G += G.T
        G[np.diag_indices(n)] += 4 * np.sqrt(n) + 10
        assert cholesky_upper_inplace(G) == 0 and np.isfinite(np.diag(G)).all()
        print("ok")
    """)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_cholesky_solver_matches_spectrum():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 40))
    X[:, 20:] *= 1e-3
    y = X @ rng.normal(size=40) + 0.05 * rng.normal(size=200)
    G, b = X.T @ X, X.T @ y
    spec = Spectrum.from_gram(G.copy(), b, y @ y, 200)
    gs = GramSolver(G.copy(), b, y @ y, 200, jitter=0.0)
    for lam in (1e-6, 1e-3, 1.0):
        np.testing.assert_allclose(gs.ridge(lam), spec.ridge(lam), rtol=1e-8, atol=1e-10)
    # the factor is rebuilt from the pristine lower triangle, whatever came before
    np.testing.assert_allclose(gs.ridge(1e-6), spec.ridge(1e-6), rtol=1e-8, atol=1e-10)
    a, beta, ev = gs.evidence_search()
    a2, beta2, ev2 = spec.evidence_ridge()
    # the search stops once its parabola peaks within VERTEX_TOL of a scored point: here 0.15
    # decades and 0.52 nats short of the scanned maximum (a skewed peak on 200 rows)
    assert abs(np.log10((a / beta) / (a2 / beta2))) < 0.25
    assert ev <= ev2 + 1e-6 and ev > ev2 - 1.0


def test_cholesky_solver_floor_is_part_of_its_prior():
    """With ``jitter`` the solver is exact ridge and exact Gaussian evidence for the prior
    precision ``lam + jitter G_jj`` on coefficient ``j`` (checked against dense algebra)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 12)) * np.logspace(0, 3, 12)
    y = X @ rng.normal(size=12) + 0.1 * rng.normal(size=50)
    G, b = X.T @ X, X.T @ y
    jitter, lam = 1e-4, 0.5
    gs = GramSolver(G.copy(), b, y @ y, 50, jitter=jitter)
    A = np.diag(lam + jitter * np.diag(G))  # prior precision over noise precision
    np.testing.assert_allclose(gs.ridge(lam), np.linalg.solve(G + A, b), rtol=1e-10)
    value, beta = gs.log_evidence_profiled(lam)
    # Gaussian marginal of y ~ N(0, C), C = (X A^-1 X^T + I) / beta
    C = (X @ np.linalg.solve(A, X.T) + np.eye(50)) / beta
    sign, logdet = np.linalg.slogdet(C)
    direct = -0.5 * (logdet + y @ np.linalg.solve(C, y) + 50 * np.log(2 * np.pi))
    assert value == pytest.approx(direct, rel=1e-10)


def noise_free_rank_deficient():
    """``(rng, X, y)``: 120 rows of rank 30 over 60 features, ``y`` in their span (no noise)."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(120, 30)) @ rng.normal(size=(30, 60))
    return rng, X, X @ rng.normal(size=60)


def floor_limited_problem():
    """``(X, y)``: 200 rows, 40 columns whose norms span four decades, coefficients
    inversely scaled (every column carries signal) and noise 1e-8: the evidence still rises
    at the bottom of the Gram search's range, where the prior floor sets the answer (as on
    rMD17 benzene at 1000 configurations)."""
    rng = np.random.default_rng(3)
    s = np.logspace(0, -4, 40)
    X = rng.normal(size=(200, 40)) * s
    y = X @ (rng.normal(size=40) / s) + 1e-8 * rng.normal(size=200)
    return X, y


def test_evidence_search_weakens_a_floor_that_sets_alpha(monkeypatch):
    """Where the evidence rises at the bottom of the range, searches with a weaker floor in a
    deeper range follow, each kept only where its evidence is higher: the answer's evidence
    and its coefficients' accuracy both improve on the default floor's."""
    import skace.linalg as L

    X, y = floor_limited_problem()
    truth = np.linalg.lstsq(X, y, rcond=None)[0]  # noise 1e-8: the least-squares solution
    gs = GramSolver(X.T @ X, X.T @ y, y @ y, 200)
    a, beta, value = gs.evidence_search()
    monkeypatch.setattr(L, "GRAM_FLOOR_PASSES", 0)
    plain = GramSolver(X.T @ X, X.T @ y, y @ y, 200)
    a0, beta0, value0 = plain.evidence_search()
    assert plain.jitter == L.GRAM_JITTER and plain.limited
    assert np.log10(a0 / beta0 / plain.top) == pytest.approx(GRAM_SEARCH_LO)
    # two weaker floors, each with a higher evidence than the last
    assert gs.jitter == pytest.approx(L.GRAM_JITTER / L.GRAM_FLOOR_FACTOR ** 2)
    passes = np.array(gs.floor_passes)
    assert len(passes) == 3 and np.all(np.diff(passes[:, 2]) > 100.0)
    assert passes[0, 2] == pytest.approx(value0) and value == pytest.approx(passes[-1, 2])
    assert a / beta < a0 / beta0 * 1e-3
    err = np.abs(gs.ridge(a / beta) - truth).max()
    err0 = np.abs(plain.ridge(a0 / beta0) - truth).max()
    assert err < 0.1 * err0
    # a "weaker" floor that is stronger scores lower: tried, then the default floor is restored,
    # with its answer, its scores and a fresh factor
    monkeypatch.setattr(L, "GRAM_FLOOR_PASSES", 2)
    monkeypatch.setattr(L, "GRAM_FLOOR_FACTOR", 0.1)
    stronger = GramSolver(X.T @ X, X.T @ y, y @ y, 200)
    a1, beta1, value1 = stronger.evidence_search()
    assert len(stronger.floor_passes) == 2 and stronger.floor_passes[1][2] < value0
    assert stronger.jitter == L.GRAM_JITTER and stronger.limited
    assert (a1 / beta1, value1) == pytest.approx((a0 / beta0, value0), rel=1e-12)
    np.testing.assert_allclose(stronger.evidence_scores(), plain.evidence_scores(), rtol=1e-12)
    np.testing.assert_allclose(stronger.ridge(a1 / beta1), plain.ridge(a0 / beta0), rtol=1e-9)
    np.testing.assert_allclose(stronger.factor(a1 / beta1)[0], plain.factor(a0 / beta0)[0], rtol=1e-9, atol=0)


def test_evidence_search_reports_when_rounding_sets_alpha():
    """Noise-free data in the span of a rank-deficient design: the evidence rises as
    ``lam`` falls until ``G + lam I`` no longer factorises, so ``lam`` is the edge (flagged);
    noisy full-rank data have an interior maximum (not flagged)."""
    rng, X, y = noise_free_rank_deficient()
    gs = GramSolver(X.T @ X, X.T @ y, y @ y, 120, jitter=0.0)
    a, beta, _ = gs.evidence_search()
    lam = a / beta
    assert gs.limited
    tried = sorted(gs._values)
    assert tried[0] < lam and not np.isfinite(gs._values[tried[0]][0])  # a smaller lam failed
    # the relative floor keeps G + lam I positive definite below that edge
    floored = GramSolver(X.T @ X, X.T @ y, y @ y, 120)
    a2, beta2, _ = floored.evidence_search(lo=-16.0)
    assert a2 / beta2 < lam and all(np.isfinite(v) for v, _ in floored._values.values())
    # in a range that ends at -16 its best point is the bottom; the first bracket moved up to
    # fit the range (-16, -14.5, -13), and the evidence is flat between its two lower points
    # (within EVIDENCE_TOL), so the search did not halve towards the bottom
    ts = np.log10(np.array(sorted(floored._values)) / floored.top)
    assert ts[0] == pytest.approx(-16.0) and floored.limited
    np.testing.assert_allclose(ts, [-16.0, -14.5, -13.0])
    values = [floored._values[x][0] for x in sorted(floored._values)]
    assert 0 < values[0] - values[1] <= EVIDENCE_TOL
    # the default range goes lower, where the floor takes over: the evidence levels off
    # (a plateau whose top is placed by rounding, at -16.0 on one AMD EPYC and below it on
    # another), and the search settles inside the range, not flagged
    deeper = GramSolver(X.T @ X, X.T @ y, y @ y, 120)
    a3, beta3, best = deeper.evidence_search()
    assert GRAM_SEARCH_LO < np.log10(a3 / beta3 / deeper.top) <= -15.5 and not deeper.limited
    plateau = [v for x, (v, _) in deeper._values.items() if np.log10(x / deeper.top) <= -16.0]
    assert len(plateau) >= 2 and best - min(plateau) < 1e-4 * abs(best)
    X = rng.normal(size=(200, 40))
    y = X @ rng.normal(size=40) + 0.3 * rng.normal(size=200)
    gs = GramSolver(X.T @ X, X.T @ y, y @ y, 200)
    gs.evidence_search()
    assert not gs.limited
    assert len(gs.floor_passes) == 1 and gs.jitter == GRAM_JITTER  # an interior maximum: no weaker floor


def test_group_cv_curve_matches_refits():
    """Leave-one-group-out residuals from the SVD equal explicit refits without the group."""
    from skace.linalg import group_cv_curve

    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 80))  # underdetermined: interpolation is possible
    y = rng.normal(size=60)
    groups = np.repeat(np.arange(12), 5)[rng.permutation(60)]
    U, s, Vt = linalg.svd(X, full_matrices=False)
    ts = np.array([-6.0, -3.0, -1.0])
    _, scores = group_cv_curve(U, s * s, y, groups, ts)
    for t, score in zip(ts, scores):
        lam = s[0] ** 2 * 10.0**t
        total = 0.0
        for g in range(12):
            keep = groups != g
            c = np.linalg.solve(X[keep].T @ X[keep] + lam * np.eye(80), X[keep].T @ y[keep])
            total += np.sum((X[~keep] @ c - y[~keep]) ** 2)
        assert score == pytest.approx(total / 60, rel=1e-8)


def test_evidence_falls_back_to_group_cv_when_it_cannot_choose():
    """When the evidence peaks near the bottom of its scan (a fit that interpolates), alpha
    comes from leave-one-group-out validation; elsewhere the evidence decides."""
    from skace.linalg import CV_FALLBACK_DECADES

    rng = np.random.default_rng(1)
    m, n = 40, 120
    X = rng.normal(size=(m, n)) / np.arange(1, n + 1)
    y = X @ rng.normal(size=n) + 0.3 * rng.normal(size=m)
    groups = np.repeat(np.arange(10), 4)
    plain, with_cv = Spectrum.from_design(X, y), Spectrum.from_design(X, y)
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    with_cv.cv = group_cv_curve(U, s * s, y, groups, np.arange(-16.0, 0.01, 0.5))
    top = plain.lam[0]
    a0, b0, _ = plain.evidence_ridge()
    t_evidence = np.log10(a0 / b0 / top)
    ts, scores = with_cv.cv
    t_cv = ts[np.argmin(scores)]
    assert -10 < t_evidence < 0 and abs(t_cv - t_evidence) > 0.2
    # a scan starting well below the evidence's peak keeps the evidence's choice
    a1, b1, _ = with_cv.evidence_ridge(lo=t_evidence - CV_FALLBACK_DECADES - 1)
    assert np.log10(a1 / b1 / top) == pytest.approx(t_evidence, abs=1e-3)
    # one starting just below it treats the peak as interpolation and asks the validation curve
    a2, b2, _ = with_cv.evidence_ridge(lo=t_evidence - 1)
    assert np.log10(a2 / b2 / top) == pytest.approx(t_cv)


@pytest.mark.parametrize("bump", [-50.0, 50.0], ids=["bump-below-peak", "bump-above-peak"])
def test_an_interior_bump_below_an_interpolating_peak_does_not_choose(bump):
    """The evidence of a fit that interpolates can also have a small interior local maximum
    far out on the flat, no-model end of its curve (rMD17 malonaldehyde, 50 configurations,
    prior order 4). When the peak at vanishing regularisation is higher, validation chooses;
    when the interior maximum is the highest point, the evidence keeps it."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 120)) / np.arange(1, 121)
    y = X @ rng.normal(size=120) + 0.3 * rng.normal(size=40)
    spec = Spectrum.from_design(X, y)
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    spec.cv = group_cv_curve(U, s * s, y, np.repeat(np.arange(10), 4), np.arange(-16.0, 0.01, 0.5))
    t_cv = spec.cv[0][np.argmin(spec.cv[1])]
    top = spec.lam[0]
    ts = np.arange(-16.0, 2.0 + 0.125, 0.25)
    values = -10.0 * (ts + 16.0)  # peak at the bottom: interpolation
    values[np.flatnonzero(ts == -4.0)[0]] = bump  # the interior local maximum
    k = int(np.flatnonzero(ts == -4.0)[0])
    spec._evidence_scan = lambda lo=-16.0, hi=2.0, step=0.25: (
        top, lambda t: float(np.interp(t, ts, values)), ts, values, k)
    a, b, _ = spec.evidence_ridge()
    expected = t_cv if bump < values[0] else -4.0
    assert t_cv != pytest.approx(-4.0)
    assert np.log10(a / b / top) == pytest.approx(expected, abs=1e-2)


def test_design_spectrum_computes_the_cv_curve_only_when_the_evidence_interpolates():
    """The leave-one-group-out curve costs an SVD's U and a solve per group: ``from_design``
    computes it when the evidence peaks at vanishing regularisation, where it is used."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(10), 4)
    X = rng.normal(size=(40, 120)) / np.arange(1, 121)
    noisy = X @ rng.normal(size=120) + 0.3 * rng.normal(size=40)
    assert Spectrum.from_design(X, noisy, groups).cv is None
    rng = np.random.default_rng(0)
    W = rng.normal(size=(40, 120))  # more unknowns than rows, no noise: the fit interpolates
    spec = Spectrum.from_design(W, W @ rng.normal(size=120), groups)
    assert spec.cv is not None and len(spec.cv[0]) == len(spec.cv[1])


def test_design_spectrum_overwrites_a_fortran_design_instead_of_copying_it():
    """The design route hands LAPACK its Fortran-ordered design to overwrite (one design's
    worth of memory less in mid-sized fits); the spectrum is the same as from a copy."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 80)) / np.arange(1, 81)
    y = X @ rng.normal(size=80) + 0.1 * rng.normal(size=30)
    kept = Spectrum.from_design(X, y)
    XF = np.asfortranarray(X)
    spent = Spectrum.from_design(XF, y, overwrite=True)
    assert not np.array_equal(XF, X)  # LAPACK worked in place
    np.testing.assert_allclose(spent.lam, kept.lam, rtol=1e-12)
    np.testing.assert_allclose(spent.ridge(1e-3), kept.ridge(1e-3), rtol=1e-9, atol=1e-12)


def test_holdout_search_minimises_the_held_out_error_and_add_rows_refits_on_all():
    """``holdout_search`` returns a ``lam`` whose held-out error no grid point beats by more
    than the search's tolerance (dense algebra), and ``add_rows`` leaves the solver exactly
    as one built on all the rows."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(160, 30)) * np.logspace(0, 2, 30)
    y = X @ (rng.normal(size=30) / np.logspace(0, 2, 30) ** 2) + 0.5 * rng.normal(size=160)
    fit, held = np.arange(120), np.arange(120, 160)
    G, b = X[fit].T @ X[fit], X[fit].T @ y[fit]
    gs = GramSolver(G.copy(), b, y[fit] @ y[fit], 120)
    lam = gs.holdout_search(X[held], y[held])

    def held_error(lam):
        d = np.linalg.solve(G + np.diag(lam + gs.floor), b)
        r = X[held] @ d - y[held]
        return r @ r

    assert gs.holdout_scores[lam] == pytest.approx(held_error(lam), rel=1e-9)
    grid = gs.top * 10.0 ** np.arange(-16.0, -0.9, 0.125)
    errors = [held_error(x) for x in grid]
    assert np.log10(lam / gs.top) > -15.0  # an interior minimum, not the range's bottom
    assert held_error(lam) <= 1.01 * min(errors) and not gs.limited
    gs.add_rows(X[held], y[held])
    full = GramSolver(X.T @ X, X.T @ y, y @ y, 160)
    np.testing.assert_allclose(gs.ridge(lam), full.ridge(lam), rtol=1e-9)
    assert gs.log_evidence_profiled(lam)[0] == pytest.approx(full.log_evidence_profiled(lam)[0], rel=1e-12)


def test_evidence_search_is_frugal_and_its_answer_needs_no_new_factorisation():
    """Each score costs a factorisation: a large fit's evidence peaks low (here noise-free data,
    on the floor's plateau; rMD17 1000-configuration fits at -15 to -18), which the first
    bracket around GRAM_SEARCH_START reaches in a handful of them. The chosen ``lam``'s
    solution was kept when it was scored, so the fit does not factorise again."""
    _, X, y = noise_free_rank_deficient()
    G = X.T @ X
    gs = GramSolver(G.copy(), X.T @ y, y @ y, 120)
    a, beta, _ = gs.evidence_search()
    lam = a / beta
    assert len(gs._values) <= 6

    def refuse(lam):
        raise AssertionError("factorised again")

    gs.factor = refuse
    fresh = GramSolver(G.copy(), X.T @ y, y @ y, 120)  # factorises at lam
    np.testing.assert_array_equal(gs.ridge(lam), fresh.ridge(lam))


def replay_evidence_search(evidence, memo=None, start=GRAM_SEARCH_START, lo=GRAM_SEARCH_LO):
    """``(t, scored)``: the evidence search's answer and the points it scored, ``t =
    log10(lam / top)``, on a curve ``evidence(t)`` instead of factorisations."""
    gs = GramSolver(np.eye(2), np.ones(2), 2.0, 2)
    gs.top = 1.0
    scored = []

    def score(lam):
        scored.append(np.log10(lam))
        return float(evidence(scored[-1]))

    lam = gs._maximise(score, start, GRAM_SEARCH_STEP, lo, -1.0, memo=memo, tol=EVIDENCE_TOL, directed=True)
    return np.log10(lam), scored


#: rMD17 benzene, 1000 configurations, the second weaker-floor pass (floor 1e-13, range down to
#: -22, from -20; benchmarks/results/rmd17_1000_benzene_s38.json): log evidence against t;
#: -21.5 did not factorise.
BENZENE_1000_FLOOR13_EVIDENCE = {-21.125: 241990.8, -20.75: 242270.1, -20.626: 242295.6, -20.375: 242213.1,
                                 -20.0: 241717.4, -19.25: 238973.6, -18.5: 234094.7}


def test_search_bisects_towards_an_end_that_does_not_factorise():
    """A bracket whose lower end did not factorise (no score) is bisected on that side, where
    the edge and the peak lie: benzene's second floor pass took eight factorisations when the
    wider side was bisected (towards -19.25 first), five this way, and ends within a tenth of
    a decade and 30 nats of the peak."""
    from scipy.interpolate import CubicSpline

    ts, vs = zip(*sorted(BENZENE_1000_FLOOR13_EVIDENCE.items()))
    spline = CubicSpline(ts, vs)
    evidence = lambda t: -np.inf if t <= -21.5 else float(spline(t))  # noqa: E731
    t, scored = replay_evidence_search(evidence, start=-20.0, lo=-22.0)
    assert scored[:3] == pytest.approx([-21.5, -20.0, -18.5])
    assert len(scored) <= 5, scored
    grid = np.linspace(-21.125, -18.5, 2001)
    peak = grid[np.argmax(spline(grid))]
    assert abs(t - peak) < 0.15 and spline(peak) - evidence(t) < 30.0


#: rMD17 naphthalene, 500 configurations: profiled log evidence against t = log10(lam / top)
#: (benchmarks/results/naphthalene_500_alpha_path.json). Its search once cycled for ever between
#: memoised points (a half-decade bracket that rounding left a hair wider, and a nudge that
#: landed on its ends).
NAPHTHALENE_500_EVIDENCE = {-30.0: 56938.4, -22.0: 59368.9, -20.0: 67916.8, -19.0: 75358.6, -18.0: 82682.8,
                            -17.0: 87610.0, -16.0: 89270.0, -15.75: 89167.4, -15.5: 88871.9, -15.0: 87726.1,
                            -14.0: 83204.4, -12.0: 64714.8, -10.0: 38940.8, -8.0: 5769.4}


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0, 2.0, -1.0, 0.37])
@pytest.mark.parametrize("curve", ["naphthalene", "skewed"])
def test_search_ends_near_the_peak_in_few_points(curve, shift):
    from scipy.interpolate import CubicSpline

    if curve == "naphthalene":
        ts, vs = zip(*sorted(NAPHTHALENE_500_EVIDENCE.items()))
        spline = CubicSpline(ts, vs)
        grid = np.linspace(-19.0, -9.0, 10001)
        peak = grid[np.argmax(spline(grid))] + shift
        evidence = lambda t: float(spline(t - shift))  # noqa: E731
    else:  # steeper above the peak than below it, as the evidence is
        peak = -15.3 + shift
        evidence = lambda t: -800.0 * (t - peak) ** 2 - 300.0 * (t - peak) ** 3 if t > peak else -800.0 * (t - peak) ** 2  # noqa: E731,E501

    class Lookups(dict):  # counts memo lookups: a search cycling between scored points never ends
        count = 0

        def __contains__(self, key):
            Lookups.count += 1
            assert Lookups.count < 500, "the search does not terminate"
            return dict.__contains__(self, key)

    t, scored = replay_evidence_search(evidence, Lookups())
    assert len(scored) <= 6, scored
    assert abs(t - peak) < 0.2, (scored, peak)


#: rMD17 benzene, 1000 configurations, 23306 functions: profiled log evidence against
#: t = log10(lam / top) (benchmarks/results/rmd17_1000_timing_s29.json): rising to the bottom of
#: the range, where the search halved twice towards -18 (45 s per factorisation) and kept it.
BENZENE_1000_EVIDENCE = {-18.0: 229521.0, -17.625: 226074.8, -17.25: 222306.6, -16.5: 213930.3,
                         -15.0: 194412.3, -13.5: 168166.2}


@pytest.mark.parametrize("peak, n_points, answer", [
    ("benzene", 3, -18.0),  # the parabola through -18, -16.5, -15 peaks near -23: no halving
    (-20.0, 3, -18.0),
    (-17.6, 5, -17.6),  # a maximum just inside the range is still found by halving
])
def test_search_at_a_bound_halves_only_towards_an_interior_peak(peak, n_points, answer):
    from scipy.interpolate import CubicSpline

    if peak == "benzene":
        ts, vs = zip(*sorted(BENZENE_1000_EVIDENCE.items()))
        evidence = CubicSpline(ts, vs, extrapolate=True)
    else:
        evidence = lambda t: -800.0 * (t - peak) ** 2  # noqa: E731
    t, scored = replay_evidence_search(evidence)
    assert len(scored) <= n_points, scored
    assert abs(t - answer) <= 0.25, scored


#: rMD17 1000-configuration fits (37062 functions; 177 s per factorisation): the points their
#: searches scored from ``t = -15, -13.5, -16.5`` (profiled log evidence against
#: ``t = log10(lam / top)``; benchmarks/results/rmd17_1000_s29.json, rmd17_1000_timing_s29.json).
ETHANOL_1000_EVIDENCE = {-18.0: 90462.5, -16.8: 92805.7, -16.5: 92702.3, -15.0: 87462.5, -13.5: 75317.9}
ASPIRIN_1000_EVIDENCE = {-16.5: 128599.2, -15.2: 135937.8, -15.0: 135660.5, -13.5: 123554.1}


@pytest.mark.parametrize("curve, scored_then", [
    (ETHANOL_1000_EVIDENCE, [-16.5, -15.0, -18.0, -16.8]),  # peak below: -13.5 is not scored
    (ASPIRIN_1000_EVIDENCE, [-16.5, -15.0, -13.5, -15.2]),  # peak above: the same points as before
])
def test_search_steps_only_towards_the_side_the_evidence_rises(curve, scored_then):
    """The first two points decide the direction: ethanol's search used to score -13.5 as well
    (five factorisations, 15 minutes), which could not be in its final bracket. The answer is the
    same vertex, from the same scored values."""
    from scipy.interpolate import CubicSpline

    ts, vs = zip(*sorted(curve.items()))
    t, scored = replay_evidence_search(CubicSpline(ts, vs, extrapolate=True))
    np.testing.assert_allclose(scored, scored_then, atol=0.02)
    assert t == pytest.approx(scored_then[-1], abs=0.02)


def test_evidence_search_reaches_the_top_of_its_range():
    """Targets unrelated to the features: the evidence rises with ``lam`` all the way, and the
    search steps up to the range's top ``hi`` itself (not the last whole step below it)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 40))
    y = rng.normal(size=200)
    gs = GramSolver(X.T @ X, X.T @ y, y @ y, 200)
    a, beta, _ = gs.evidence_search(hi=-1.0)
    assert np.log10(a / beta / gs.top) == pytest.approx(-1.0) and not gs.limited
    values = [v for _, (v, _) in sorted(gs._values.items())]
    assert np.all(np.diff(values) > 0)


@pytest.mark.parametrize("module", ["skace.blas", "skace.linalg", "skace.structures"])
def test_docstring_examples(module):
    """The examples in these modules' docstrings run and give what they show."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_ridge_reuses_a_scored_solution_within_rounding():
    """The regressor asks for the evidence search's answer as ``alpha / beta``, which can
    differ from the ``lam`` scored in its last bit (rMD17 benzene, 1000 configurations:
    one more 45 s factorisation); a ``lam`` within rounding reuses the scored solution."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6))
    y = X @ rng.normal(size=6) + 0.1 * rng.normal(size=40)
    gs = GramSolver(X.T @ X, X.T @ y, y @ y, 40)
    alpha, beta, _ = gs.evidence_search()
    lam = alpha / beta
    scored = min(gs._solutions, key=lambda x: abs(x - lam))
    expected = gs.ridge(scored)

    def no_factorisation(lam):
        raise AssertionError(f"factorised again at {lam!r}")

    gs.factor = no_factorisation
    for near in (lam, scored * (1 + 2e-16), scored * (1 - 4e-16), np.nextafter(scored, 0.0)):
        np.testing.assert_array_equal(gs.ridge(near), expected)
    with pytest.raises(AssertionError, match="factorised again"):
        gs.ridge(scored * 1.001)


def test_gram_update_of_a_column_slice_in_place():
    """A column slice (row stride wider than its width) goes to BLAS uncopied, and ``G`` may
    itself be a block of a larger buffer; only the upper triangle is written."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 50))
    buffer = np.full((45, 45), 7.0)
    G = buffer[:40, :40]
    G[np.triu_indices(40)] = 0.0
    gram_update(G, X[:, :40], block=16, scale=0.5)
    expected = 0.5 * X[:, :40].T @ X[:, :40]
    np.testing.assert_allclose(np.triu(G), np.triu(expected), rtol=1e-13, atol=1e-12)
    assert np.all(G[np.tril_indices(40, -1)] == 7.0) and np.all(buffer[40:] == 7.0)


def _wide_problem(seed=3, m=60, n=150, groups=12, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n)) / np.sqrt(np.arange(1, n + 1))
    y = X @ rng.normal(size=n) + noise * rng.normal(size=m)
    return X, y, np.repeat(np.arange(groups), m // groups)[rng.permutation(m)]


def test_kernel_solver_is_the_design_spectrum_in_dual_form():
    """Coefficients, profiled evidence and posterior variances of the dual form equal the SVD
    route's (the same model) at every lam; the leave-one-group-out error equals the SVD's curve."""
    from skace.linalg import KernelPosterior, KernelSolver

    X, y, groups = _wide_problem()
    spec = Spectrum.from_design(X.copy(), y)
    ks = KernelSolver(np.asfortranarray(X), y, groups)
    assert ks.top == pytest.approx(spec.lam[0], rel=1e-6)
    U, s, _ = linalg.svd(X, full_matrices=False)
    x = np.random.default_rng(9).normal(size=(4, X.shape[1]))
    for t in (-8.0, -4.0, -1.0):
        lam = spec.lam[0] * 10.0**t
        np.testing.assert_allclose(ks.coefficients(lam), spec.ridge(lam), rtol=1e-7, atol=1e-9)
        assert ks.log_evidence_profiled(lam)[0] == pytest.approx(spec.log_evidence_profiled(lam)[0], rel=1e-9)
        exact = np.einsum("ij,jk,ik->i", x, np.linalg.inv(X.T @ X + lam * np.eye(X.shape[1])), x)
        np.testing.assert_allclose(KernelPosterior(ks.X, lam).variance(x), exact, rtol=1e-6)
        _, (cv,) = group_cv_curve(U, s * s, y, groups, np.array([t]))
        assert ks.group_cv_error(lam) == pytest.approx(cv, rel=1e-7)
    # the inversion of the CV error leaves the solver usable: the next factorisation is exact
    lam = spec.lam[0] * 1e-3
    ks.group_cv_error(lam * 2)
    np.testing.assert_allclose(ks.coefficients(lam * 3), spec.ridge(lam * 3), rtol=1e-7, atol=1e-9)


def test_kernel_solver_counts_the_zero_rows_it_leaves_out():
    """Zero rows of a design (the rigid-motion components of force rows) left out of the dual
    form and passed as a count and their targets' squared norm: coefficients, evidence and
    leave-one-group-out error are those of the whole design."""
    from skace.linalg import KernelSolver

    X, y, groups = _wide_problem()
    rng = np.random.default_rng(8)
    k = 9
    Xf = np.vstack([X, np.zeros((k, X.shape[1]))])
    yf = np.concatenate([y, rng.normal(size=k)])
    gf = np.concatenate([groups, rng.integers(0, groups.max() + 1, size=k)])
    whole = KernelSolver(np.asfortranarray(Xf), yf, gf)
    part = KernelSolver(np.asfortranarray(X), y, groups, k, float(yf[-k:] @ yf[-k:]))
    assert part.m == whole.m and part.yy == pytest.approx(whole.yy, rel=1e-14)
    for t in (-8.0, -4.0, -1.0):
        lam = whole.top * 10.0**t
        np.testing.assert_allclose(part.coefficients(lam), whole.coefficients(lam), rtol=1e-8, atol=1e-10)
        assert part.log_evidence_profiled(lam)[0] == pytest.approx(whole.log_evidence_profiled(lam)[0], rel=1e-10)
        assert part.group_cv_error(lam) == pytest.approx(whole.group_cv_error(lam), rel=1e-8)
    a, b, ev = part.evidence_search()
    assert (a, b, ev) == pytest.approx(whole.evidence_search(), rel=1e-6)


def test_kernel_solver_chooses_as_the_design_spectrum_does():
    """The evidence's maximum where it is interior; where it lies near the bottom (a fit that
    interpolates), the group validation error's minimum, as Spectrum.evidence_ridge chooses."""
    from skace.linalg import KernelSolver

    X, y, groups = _wide_problem(noise=1.0)  # an interior peak, 1.7 decades below the top
    spec = Spectrum.from_design(X.copy(), y)
    a, b, ev = KernelSolver(np.asfortranarray(X), y).evidence_search()
    a2, b2, ev2 = spec.evidence_ridge()
    # (the frugal search stops once its parabola peaks within VERTEX_TOL of a scored point)
    assert abs(np.log10((a / b) / (a2 / b2))) < 0.25 and ev == pytest.approx(ev2, abs=0.5)
    # rows whose scales span six decades: the evidence rises to the bottom of its range (the fit
    # interpolates), so the group validation error decides, on either route
    rng = np.random.default_rng(4)
    Xc = rng.normal(size=(40, 120)) * np.logspace(0, -6, 40)[:, None]
    yc = Xc @ rng.normal(size=120) + 1e-3 * rng.normal(size=40) * np.logspace(0, -6, 40)
    g = np.repeat(np.arange(10), 4)
    spec = Spectrum.from_design(Xc.copy(), yc, g)
    assert spec.cv is not None
    ks = KernelSolver(np.asfortranarray(Xc), yc, g)
    a, b, _ = ks.evidence_search()
    assert ks.cv_scores and np.log10(a / b / ks.top) >= -16.0
    # the frugal search's choice validates within 5 % of the best point of the SVD route's grid
    # (a local minimum of a curve the grid scans whole: within 0.3 % here)
    assert ks.group_cv_error(a / b) <= 1.05 * np.min(spec.cv[1])


def test_kernel_solver_refines_what_rounding_in_x_xt_moves():
    """At a ridge near eps times the largest eigenvalue of X X^T, the factor of the computed
    X X^T solves a visibly different system; conjugate gradients through X itself bring the
    coefficients back to the SVD's."""
    from skace.linalg import KernelSolver

    rng = np.random.default_rng(6)
    m, n = 80, 200
    Q1, _ = np.linalg.qr(rng.normal(size=(m, m)))
    Q2, _ = np.linalg.qr(rng.normal(size=(n, m)))
    X = (Q1 * np.logspace(0, -9, m)) @ Q2.T  # squared singular values from 1 to 1e-18
    y = rng.normal(size=m)
    spec = Spectrum.from_design(X.copy(), y)
    ks = KernelSolver(np.asfortranarray(X), y)
    lam = spec.lam[0] * 1e-15
    exact = spec.ridge(lam)
    error = lambda c: np.linalg.norm(c - exact) / np.linalg.norm(exact)  # noqa: E731
    assert error(ks.coefficients(lam, max_iter=0)) > 1e-4
    c = ks.coefficients(lam)
    assert error(c) < 1e-8
    # the fitted values too: forming X^T a from the dual's a (large along K's weakest
    # directions) moved them by 0.5 % here, as it moved rMD17 energies by a constant
    assert np.linalg.norm(X @ (c - exact)) < 1e-8 * np.linalg.norm(X @ exact)


def test_dual_posterior_variance_is_exact_at_a_ridge_near_rounding():
    """A wide design whose squared singular values span 18 decades, ``lam`` at ``1e-16`` of the
    largest: the posterior variance ``x (X^T X + lam I)^{-1} x^T`` against its value from the
    known factors ``X = U S V^T``. Going through ``X X^T`` (its factor, then ``(|x|^2 - |z|^2) /
    lam``) misses by orders of magnitude here; the QR route does not. The posterior lets the
    design go once it has its factor."""
    from skace.linalg import KernelPosterior

    rng = np.random.default_rng(3)
    m, n = 40, 120
    U = np.linalg.qr(rng.normal(size=(m, m)))[0]
    V = np.linalg.qr(rng.normal(size=(n, n)))[0]
    s = np.logspace(0, -9, m)
    X = np.asfortranarray((U * s) @ V[:, :m].T)
    lam = 1e-16
    coords = rng.normal(size=(5, n)) * np.r_[np.ones(m), 1e-6 * np.ones(n - m)]  # mostly in the row space
    x = coords @ V.T
    exact = np.sum(coords[:, :m] ** 2 / (s**2 + lam), axis=1) + np.sum(coords[:, m:] ** 2, axis=1) / lam
    post = KernelPosterior(X, lam)
    np.testing.assert_allclose(post.variance(x), exact, rtol=1e-6)
    assert post.X is None and post.nbytes >= X.nbytes  # the factor replaces the design
    np.testing.assert_allclose(post.variance(x[:2]), exact[:2], rtol=1e-6)  # from the kept factor
    with pytest.raises(ValueError, match=f"{n} columns"):
        post.variance(x[:, :-1])
    # the squared route this replaces: (|x|^2 - |L^-1 X x^T|^2) / lam
    c = linalg.cholesky(X @ X.T + lam * np.eye(m), lower=True)
    z = linalg.solve_triangular(c, X @ x.T, lower=True)
    squared = (np.sum(x * x, axis=1) - np.sum(z * z, axis=0)) / lam
    assert np.max(np.abs(squared / exact - 1)) > 0.1


def test_dual_posterior_survives_an_interrupted_factorisation_and_old_pickles(monkeypatch):
    """A first variance interrupted after the design's QR (out of memory, say) leaves a posterior
    that the next call completes; concurrent first calls factorise once and agree; a posterior
    pickled by the code before the QR factor (it held its solver) still answers."""
    import pickle
    import threading

    import skace.linalg as L

    rng = np.random.default_rng(5)
    X = np.asfortranarray(rng.normal(size=(30, 80)))
    x = rng.normal(size=(4, 80))
    lam = 1e-3
    exact = np.einsum("ij,jk,ik->i", x, np.linalg.inv(X.T @ X + lam * np.eye(80)), x)
    post = L.KernelPosterior(X, lam)
    triangle = L.posterior_triangle
    monkeypatch.setattr(L, "posterior_triangle", lambda *a: (_ for _ in ()).throw(MemoryError("no room")))
    with pytest.raises(MemoryError):
        post.variance(x)
    assert post.factor is None and post._qr is not None  # the QR is kept for the next call
    monkeypatch.setattr(L, "posterior_triangle", triangle)
    np.testing.assert_allclose(post.variance(x), exact, rtol=1e-9)

    post, out = L.KernelPosterior(X, lam), []
    threads = [threading.Thread(target=lambda: out.append(post.variance(x))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and all(np.array_equal(v, out[0]) for v in out)
    np.testing.assert_allclose(out[0], exact, rtol=1e-9)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(post)).variance(x), out[0], rtol=0)

    old = L.KernelPosterior.__new__(L.KernelPosterior)  # the state such a posterior pickled
    old.__dict__.update(solver=L.KernelSolver(X.copy(order="F"), rng.normal(size=30)), lam=lam)
    revived = pickle.loads(pickle.dumps(old))
    assert revived.nbytes == X.nbytes
    np.testing.assert_allclose(revived.variance(x), exact, rtol=1e-9)
