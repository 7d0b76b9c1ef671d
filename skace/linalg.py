"""Regularised least squares in spectral form: ridge paths, Bayesian evidence, ARD.

A least-squares problem ``min ||X c - y||^2 + alpha ||c||^2`` is reduced once
to its spectral form ``(s^2, V, V^T X^T y, |y|^2, m)``: the squared singular
values and right singular vectors of ``X``, the projection of ``X^T y`` on
them, and the row count. It comes either from
an SVD of the design (stable: used when the design fits in memory) or from an
eigendecomposition of the Gram matrix ``X^T X`` (used for tall designs that
are only ever held as Gram matrices). Every ``alpha`` then costs one
matrix-vector product, so a regularisation path costs about one fit, and
MacKay's evidence maximisation (Bayesian ridge) works in the same basis.
"""

from dataclasses import dataclass
import threading

import numpy as np
from scipy import linalg

from .blas import gemm_tn, syrk_tn_upper, trsm_upper_t

#: Column-block width for Gram products; numpy 2.4's OpenBLAS 0.3.31 crashed on
#: ``A.T @ A`` for A of 925 x 17920 with 2 threads, but not at 12000 columns.
GRAM_BLOCK = 4096

#: Largest order at which :class:`GramSolver` calls scipy's ``dpotrf`` directly; above it the
#: blocked :func:`cholesky_upper_inplace` (dpotrf segfaulted from n = 16000 on 2 threads, never
#: at 15500 or below in our runs).
DPOTRF_SAFE_N = 15000

#: Relative floor ``delta`` of :class:`GramSolver`'s prior: coefficient ``j`` gets precision
#: ``lam + delta G_jj`` rather than ``lam``. The computed ``G`` is itself indefinite at
#: rounding level (rMD17 ethanol, 400 configurations, 7815 functions: most negative eigenvalue
#: -8e-16 of the largest diagonal entry), so without the floor no ``lam`` below that level
#: factorises, however far below the evidence keeps rising. With it that problem factorises
#: down to alpha 1.9e-10 and tests as the SVD route does there (2.92 / 15.97 against
#: 2.93 / 15.97 meV, meV/A), where the unfloored edge was 1.4e-9 to 2.6e-9.
GRAM_JITTER = 1e-11

#: Weaker floors :meth:`GramSolver.evidence_search` tries where the evidence still rises at the
#: bottom of its range, the floor (not the data) setting how weak the prior can be: each pass
#: divides the floor by :data:`GRAM_FLOOR_FACTOR`, extends the range down by
#: :data:`GRAM_FLOOR_EXTEND` decades and searches again from the old bottom (three to five
#: factorisations), and is kept only where its evidence is higher. rMD17 benzene, 1000
#: configurations (the only Gram-route fit of the learning curve whose search ended there): the
#: default floor's best log evidence 229521 (at -18), 1e-12's 241629 (at -20, its bottom again),
#: 1e-13's 242270 (at -20.75, interior; -21.5 does not factorise); test errors (energy / force
#: MAE, meV, meV/A) 0.0285 / 0.281, 0.0195 / 0.202, 0.0178 / 0.192; fit 422 s, then 777 s.
#: Where the search ends inside its range the floor hardly matters (toluene, 1000: floor 1e-12
#: scored 16 nats below 1e-11, with the same test errors), so no pass runs there.
GRAM_FLOOR_PASSES = 2
GRAM_FLOOR_FACTOR = 10.0
GRAM_FLOOR_EXTEND = 2.0

#: Bottom of :class:`GramSolver`'s searches, ``lam = top * 10**GRAM_SEARCH_LO`` (``top`` the
#: largest diagonal entry). With the floor above, every ``lam`` factorises, and the optimum can lie
#: below 1e-16: on rMD17 naphthalene (500 configurations, 23306 functions, validated on 300 other
#: training configurations) the evidence peaks at about -16.1 (89270 at -16, 87610 at -17, 82683
#: at -18) and the validation error is lowest at -16.5 to -17 (energy / force MAE 1.20 / 5.48 at
#: -16, 1.15 / 5.40 at -16.5, 1.13 / 5.44 at -17, 1.19 / 5.76 at -18).
GRAM_SEARCH_LO = -18.0

#: Start of :class:`GramSolver`'s searches, ``lam = top * 10**t``: the evidence search scores
#: ``t = start - step`` and ``start``, then ``start + step`` only if the evidence rises towards
#: it; the held-out search all three. Every evaluation is one Cholesky factorisation (45 s at
#: 23306 functions, 177 s at 37062 on two cores), and the Gram route serves large fits, whose
#: optimum lies low (rMD17 benzene, 1000 configurations: at the bottom, -18; naphthalene 500:
#: -16.1, see :data:`GRAM_SEARCH_LO`). Starting at -10 in 2-decade steps, benzene's search took
#: 11 factorisations (session 27); from here its whole fit took 907 s instead of 1014-1139 s.
GRAM_SEARCH_START = -15.0

#: Spacing (decades) of :data:`GRAM_SEARCH_START`'s first bracket and of the steps out of it.
GRAM_SEARCH_STEP = 1.5

#: Log-evidence difference (nats) below which :meth:`GramSolver.evidence_search` counts its
#: bracket as flat and stops: far below what distinguishes two models (differences of a few
#: nats), and above the rounding noise of a plateau (1e-3 on a 60-function test problem).
EVIDENCE_TOL = 0.1

#: :meth:`GramSolver.evidence_search` stops refining once the parabola through its bracket peaks
#: within this many decades of the best point scored (after at least one refinement): each
#: further point is a factorisation (200 s at 37062 functions), and a tenth of a decade moves
#: the test errors far less than their differences between fits (rMD17 naphthalene, 500
#: configurations: energy / force MAE 1.20 / 5.48 at t = -16 and 1.15 / 5.40 at -16.5).
VERTEX_TOL = 0.1

#: An evidence maximum within this many decades of the bottom of its scan counts as
#: "interpolating": :meth:`Spectrum.evidence_ridge` then uses the group cross-validation
#: curve when there is one.
CV_FALLBACK_DECADES = 3.0


def gram_update(G, X, block=GRAM_BLOCK, scale=1.0):
    """``G += scale * X.T @ X`` in column blocks (upper triangle only; see :func:`symmetrize_upper`).

    Each block is updated in place by BLAS (:mod:`skace.blas`: ``dsyrk`` on
    the diagonal, ``dgemm`` above it), with no product temporary; calls at
    most ``block`` wide sidestep the OpenBLAS crash on wide ``A.T @ A``.
    """
    if X.dtype != np.float64 or (X.shape[1] > 1 and X.strides[1] != 8):
        X = np.ascontiguousarray(X, dtype=np.float64)  # BLAS takes any unit-column-stride view
    n = X.shape[1]
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        syrk_tn_upper(G[j0:j1, j0:j1], X[:, j0:j1], alpha=scale)
        for i0 in range(0, j0, block):
            gemm_tn(G[i0:i0 + block, j0:j1], X[:, i0:i0 + block], X[:, j0:j1], alpha=scale)
    return G


def symmetrize_upper(G, block=GRAM_BLOCK):
    """Copy the upper triangle (as filled by :func:`gram_update`) to the lower one."""
    n = G.shape[0]
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        for i0 in range(0, j0 + 1, block):
            i1 = min(i0 + block, n)
            if i0 == j0:
                up = np.triu(G[i0:i1, j0:j1])
                G[i0:i1, j0:j1] = up + np.triu(up, 1).T
            else:
                G[j0:j1, i0:i1] = G[i0:i1, j0:j1].T
    return G


def group_cv_curve(U, lam_s, y, groups, ts):
    """Leave-one-group-out squared error of ridge fits, exactly, from the thin SVD.

    For ridge with hat matrix ``H = U diag(s^2 / (s^2 + lam)) U^T`` the residuals of
    group ``g``'s rows when ``g`` is left out of the fit are ``(I - H_gg)^-1 r_g``
    (``r`` the full fit's residuals), so every fold costs one small solve.

    Parameters
    ----------
    U : ndarray (m, r)
        Left singular vectors of the design.
    lam_s : ndarray (r,)
        Squared singular values, descending.
    y : ndarray (m,)
    groups : ndarray (m,)
        Label of each row's group (rows of one structure belong together: its
        force rows are far from independent).
    ts : ndarray
        ``lam = lam_s[0] * 10**ts`` to score.

    Returns
    -------
    (ts, scores) : mean squared held-out residual per row at each ``lam``
        (``inf`` where a fold's system is singular).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.linalg import svd
    >>> from skace.linalg import group_cv_curve
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(12, 5)); y = X @ np.ones(5) + 0.1 * rng.normal(size=12)
    >>> U, s, _ = svd(X, full_matrices=False)
    >>> ts, scores = group_cv_curve(U, s**2, y, np.repeat(np.arange(4), 3), np.array([-8.0, 0.0]))
    >>> bool(scores[0] < scores[1])  # little regularisation suits clean data
    True
    """
    order = np.argsort(groups, kind="stable")
    cuts = np.flatnonzero(np.diff(groups[order])) + 1
    folds = np.split(order, cuts)
    Ug = [U[f] for f in folds]
    z = U.T @ y
    scores = np.empty(len(ts))
    for k, t in enumerate(ts):
        w = lam_s / (lam_s + lam_s[0] * 10.0 ** t)
        r = y - U @ (w * z)
        total = 0.0
        try:
            for f, u in zip(folds, Ug):
                e = np.linalg.solve(np.eye(len(f)) - (u * w) @ u.T, r[f])
                total += float(e @ e)
        except np.linalg.LinAlgError:
            total = np.inf
        scores[k] = total / len(y)
    return np.asarray(ts, dtype=float), scores


def cholesky_upper_inplace(G, block=GRAM_BLOCK):
    """Overwrite the upper triangle of the C-contiguous symmetric ``G`` with ``U``,
    ``G = U^T U`` (so ``G.T`` holds the lower factor); the strict lower triangle is
    not touched. Returns LAPACK's ``info`` (0, or the order of a non-positive minor).

    A right-looking blocked factorisation whose BLAS calls are at most ``block``
    wide: scipy's OpenBLAS 0.3.31 ``dpotrf`` segfaults on 2 threads from about
    n = 16000 (seen at 16000 and 16176; fine at 15500 or on one thread), the same
    family of crash as the wide ``A.T @ A`` that :func:`gram_update` sidesteps.

    Examples
    --------
    >>> import numpy as np
    >>> from skace.linalg import cholesky_upper_inplace
    >>> G = np.array([[4.0, 2.0], [2.0, 3.0]])
    >>> cholesky_upper_inplace(G)
    0
    >>> U = np.triu(G); bool(np.allclose(U.T @ U, [[4.0, 2.0], [2.0, 3.0]]))
    True
    """
    from scipy.linalg import lapack

    n = G.shape[0]
    for k0 in range(0, n, block):
        k1 = min(k0 + block, n)
        D = G[k0:k1, k0:k1]
        # the C-order block is the transpose of its F-order view: factor it as lower, store the transpose
        c, info = lapack.dpotrf(np.triu(D).T, lower=1, clean=1)
        if info != 0:
            return k0 + info
        D[...] = np.tril(D, -1) + c.T  # U11 above and on the diagonal, pristine lower part kept
        if k1 == n:
            break
        for j0 in range(k1, n, block):  # panel: U12 = U11^-T G12, in place
            trsm_upper_t(D, G[k0:k1, j0:min(j0 + block, n)])
        for j0 in range(k1, n, block):  # trailing update of the upper triangle: G22 -= U12^T U12
            j1 = min(j0 + block, n)
            Uj = G[k0:k1, j0:j1]
            # diagonal blocks by dsyrk, which keeps their strict lower part pristine
            syrk_tn_upper(G[j0:j1, j0:j1], Uj, alpha=-1.0)
            for i0 in range(k1, j0, block):
                i1 = min(i0 + block, n)
                gemm_tn(G[i0:i1, j0:j1], G[k0:k1, i0:i1], Uj, alpha=-1.0)
    return 0


@dataclass
class Spectrum:
    """Spectral form of a least-squares problem (see module docstring).

    Kept as ``lam = s^2`` and ``p = V^T X^T y = s z`` so that directions with
    (numerically) zero ``s`` need no division: every formula below is finite
    for ``lam = 0``, and the regularisation decides what those directions get.

    Examples
    --------
    >>> import numpy as np
    >>> from skace.linalg import Spectrum
    >>> X = np.random.default_rng(0).normal(size=(20, 4)); y = X @ [1.0, 2.0, 0.5, -1.0]
    >>> spec = Spectrum.from_design(X, y)
    >>> np.round(spec.ridge(1e-12), 6)
    array([ 1. ,  2. ,  0.5, -1. ])
    """

    lam: np.ndarray  # squared singular values (eigenvalues of X^T X), >= 0, descending
    V: np.ndarray  # (n, r) right singular vectors
    p: np.ndarray  # (r,) V^T X^T y
    yy: float  # |y|^2
    m: int  # number of rows
    n: int  # number of unknowns
    cv: tuple = None  # (t, score): leave-one-group-out CV error at lam = lam[0] * 10**t, or None

    @classmethod
    def from_design(cls, X, y, groups=None, overwrite=False, cv=False):
        """By SVD of the design ``X`` (m, n). ``groups`` (one label per row, e.g. the
        structure a row belongs to) adds the leave-one-group-out curve :attr:`cv` when the
        evidence needs it (:meth:`evidence_ridge`) or ``cv`` is true.
        ``overwrite=True`` lets LAPACK destroy a Fortran-ordered ``X`` instead of
        copying it (one design's worth of memory less)."""
        U, s, Vt = linalg.svd(X, full_matrices=False, lapack_driver="gesdd", check_finite=False,
                              overwrite_a=overwrite)
        spec = cls(s * s, Vt.T, s * (U.T @ y), float(y @ y), X.shape[0], X.shape[1])
        # the curve is only consulted when the evidence peaks at vanishing regularisation
        # (evidence_ridge): skip its cost, and U's memory, otherwise
        # (at least two groups: leaving out the only one predicts nothing)
        if groups is not None and len(np.unique(groups)) > 1 and s.size and s[0] > 0 and (
                cv or spec._evidence_interpolates()):
            spec.cv = group_cv_curve(U, s * s, y, groups, np.arange(-16.0, 0.01, 0.5))
        return spec

    @classmethod
    def from_gram(cls, G, b, yy, m):
        """By eigendecomposition of ``G = X^T X`` with ``b = X^T y``.

        All eigenpairs are kept (rounding can make the smallest slightly
        negative: they are clipped to zero); none is dropped by a threshold,
        which would act as a hidden regulariser.
        """
        lam, V = linalg.eigh(G, driver="evd", check_finite=False)
        lam, V = np.maximum(lam[::-1], 0.0), np.ascontiguousarray(V[:, ::-1])
        return cls(lam, V, V.T @ b, float(yy), int(m), G.shape[0])

    # ---- ridge ---------------------------------------------------------
    def ridge(self, alpha):
        """Coefficients minimising ``|X c - y|^2 + alpha |c|^2``."""
        return self.V @ (self.p / (self.lam + alpha))

    def residual(self, alpha):
        """``|X c(alpha) - y|^2`` without forming ``X``."""
        fitted = float(np.sum(self.p**2 * (self.lam + 2 * alpha) / (self.lam + alpha) ** 2))
        return max(self.yy - fitted, 0.0)

    def dof(self, alpha):
        """Effective number of parameters ``sum s^2 / (s^2 + alpha)``."""
        return float(np.sum(self.lam / (self.lam + alpha)))

    def gcv(self, alpha):
        """Generalised cross-validation score ``m RSS / (m - dof)^2``."""
        return self.m * self.residual(alpha) / max(self.m - self.dof(alpha), 1e-12) ** 2

    # ---- Bayesian ridge --------------------------------------------------
    def log_evidence_profiled(self, lam):
        """Log evidence at ``alpha / beta = lam`` with the noise precision ``beta``
        profiled out; returns ``(value, beta)``. ``M = RSS + lam |c|^2 = |y|^2 - sum p^2 / (s^2 + lam)``
        and ``beta = m / M``; the null directions count ``(n - r) log lam`` in ``log|lam I + X^T X|``."""
        misfit = max(self.yy - float(np.sum(self.p**2 / (self.lam + lam))), 1e-300)
        logdet = float(np.sum(np.log(self.lam + lam))) + (self.n - self.lam.size) * np.log(lam)
        value = 0.5 * (self.n * np.log(lam) - self.m * np.log(misfit) - logdet
                       + self.m * (np.log(self.m) - 1.0 - np.log(2 * np.pi)))
        return value, self.m / misfit

    def evidence_ridge(self, lo=-16.0, hi=2.0, step=0.25):
        """Prior precision ``alpha`` and noise precision ``beta`` maximising the evidence.

        A scan of the profiled evidence over ``lam = alpha / beta = top * 10**t``
        (``t`` from ``lo`` to ``hi``, ``top`` the largest ``s^2``), each point
        costing O(rank), then a bounded scalar refinement around the best point.
        MacKay's fixed-point iteration, used before, can run off to a degenerate
        stationary point (``alpha`` to infinity: no model) on small data, far
        from the maximum; a scan cannot. When the highest point is at the lower
        end of the scan (the fit interpolates its data) and the leave-one-group-out
        curve :attr:`cv` is there, that curve chooses; without it, an interior
        local maximum is preferred to the lower end.

        Returns
        -------
        alpha, beta : float
            Maximisers of the evidence ``p(y | alpha, beta)``; the posterior
            mean is ``ridge(alpha / beta)``.
        log_evidence : float
        """
        from scipy.optimize import minimize_scalar

        top, f, ts, values, k = self._evidence_scan(lo, hi, step)
        if self.cv is not None and ts[int(np.nanargmax(values))] < lo + CV_FALLBACK_DECADES:
            # the evidence peaks at vanishing regularisation: it grows without bound as a fit
            # that can interpolate does so (noise precision profiled to infinity), and what is
            # left near the scan's end is rounding; the held-out error of whole groups can still
            # choose (rMD17 aspirin, 50 configurations, 13710 functions: force MAE 75.8 meV/A at
            # the evidence's choice, 64.9 with this fallback). An interior local maximum far
            # below the peak may be a bump of the flat no-model end of the curve (malonaldehyde,
            # 50 configurations, prior order 4: force MAE 950 meV/A), so it does not count here
            t = float(self.cv[0][int(np.argmin(self.cv[1]))])
            value, beta = self.log_evidence_profiled(top * 10.0 ** t)
            return top * 10.0 ** t * beta, beta, value
        a, b = ts[max(k - 1, 0)], ts[min(k + 1, len(ts) - 1)]
        res = minimize_scalar(lambda t: -f(t), bounds=(a, b), method="bounded", options={"xatol": 1e-3})
        t = res.x if -res.fun >= values[k] else ts[k]
        lam = top * 10.0 ** t
        value, beta = self.log_evidence_profiled(lam)
        return lam * beta, beta, value

    def _evidence_scan(self, lo=-16.0, hi=2.0, step=0.25):
        """``(top, f, ts, values, k)``: the profiled log evidence ``f(t)`` at ``lam = top * 10**t``
        on a grid ``ts`` and the index ``k`` of its best interior local maximum (else its maximum)."""
        top = float(self.lam[0]) if self.lam.size and self.lam[0] > 0 else 1.0
        f = lambda t: self.log_evidence_profiled(top * 10.0 ** t)[0]  # noqa: E731
        ts = np.arange(lo, hi + step / 2, step)
        values = np.array([f(t) for t in ts])
        # the best interior local maximum: a fit that can interpolate its data has its largest
        # evidence at vanishing regularisation (the scan's lower end), which generalises far worse
        # than the interior maximum when there is one (rMD17 ethanol, 50 configurations: force
        # MAE 66 against 45 meV/A)
        inner = np.flatnonzero((values[1:-1] >= values[:-2]) & (values[1:-1] > values[2:])) + 1
        k = int(inner[np.argmax(values[inner])]) if inner.size else int(np.nanargmax(values))
        return top, f, ts, values, k

    def _evidence_interpolates(self, lo=-16.0):
        """Whether the evidence's maximum lies within :data:`CV_FALLBACK_DECADES` of the
        bottom ``lo`` of its scan (the case :meth:`evidence_ridge` hands to the CV curve)."""
        _, _, ts, values, _ = self._evidence_scan(lo)
        return bool(ts[int(np.nanargmax(values))] < lo + CV_FALLBACK_DECADES)

    def log_evidence(self, alpha, beta):
        """``log p(y | alpha, beta)`` of the Gaussian linear model."""
        lam = alpha / beta
        c = self.ridge(lam)
        logdet = float(np.sum(np.log(alpha + beta * self.lam))) + (self.n - self.lam.size) * np.log(alpha)
        return 0.5 * (
            self.n * np.log(alpha) + self.m * np.log(beta) - beta * self.residual(lam)
            - alpha * float(c @ c) - logdet - self.m * np.log(2 * np.pi)
        )

    def posterior_factor(self, alpha, beta):
        """``L`` with posterior covariance ``Sigma = L L^T`` on the non-null directions,
        plus the prior variance ``1/alpha`` of the null space (returned second)."""
        return self.V / np.sqrt(alpha + beta * self.lam), 1.0 / alpha


class FactorOnDemand:
    """The lower Cholesky factor of a :class:`GramSolver`'s ``G + lam I``, factorised when first
    used: a search's best ``lam`` is rarely its last factorisation, and most fits never need
    the posterior (``predict(return_std=True)`` does). ``nbytes`` is the factor's size."""

    def __init__(self, solver, lam):
        self.solver, self.lam = solver, lam

    @property
    def nbytes(self):
        return self.solver.G.nbytes

    def get(self):
        """The factor (a view of the solver's matrix, valid until it factorises another ``lam``)."""
        return self.solver.factor(self.lam)[0]


class KernelPosterior:
    """Posterior of a dual-form fit (:class:`KernelSolver`) at ``lam``: ``variance(x)`` is
    ``x (X^T X + lam I)^{-1} x^T`` per row (times ``1 / beta``, the covariance).

    It holds the design ``X`` until the first variance, which replaces it by factors of
    ``X^T X + lam I`` that never square the design, as large as the design itself
    (``nbytes``): ``X^T = Q R`` (:func:`design_qr`) and ``T`` with ``T^T T = P (R R^T + lam I) P``
    (:func:`posterior_triangle`), for :func:`ridge_posterior_variance`. Both are backward
    stable at any ``lam`` > 0; squaring leaves an error of ``eps`` times the largest squared
    singular value, as large as the weakest ``lam`` the evidence chooses, so the factor of
    ``X X^T + lam I`` cannot give the variance there (rMD17 benzene, 100 configurations,
    ``lam`` at ``1e-16`` of its largest eigenvalue: model variances from -0.6 to 1.09 times
    the SVD's; from these factors 1 within 1e-9). ``2 m^2 n`` to factorise (one more
    ``X X^T``). The two steps are each kept once done (an interrupted first call leaves a
    posterior that a second call completes), under a lock, as is every variance (LAPACK's
    ``dormqr`` writes to the factor while it applies it).

    Examples
    --------
    >>> import numpy as np
    >>> from skace.linalg import KernelPosterior
    >>> X = np.random.default_rng(0).normal(size=(3, 5))
    >>> post = KernelPosterior(X, 0.1)
    >>> x = np.eye(5)[:1]
    >>> bool(np.isclose(post.variance(x)[0], np.linalg.inv(X.T @ X + 0.1 * np.eye(5))[0, 0]))
    True
    """

    def __init__(self, X, lam):
        self.X, self.lam, self.factor, self._qr = X, lam, None, None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        solver = state.pop("solver", None)  # pickled before the QR factor: it held its solver
        if solver is not None:
            state.setdefault("X", solver.X)
        for name in ("X", "factor", "_qr"):
            state.setdefault(name, None)
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def nbytes(self):
        held = [self.X] + list(self.factor or ()) + list(self._qr or ())
        return sum(a.nbytes for a in held if a is not None)

    def variance(self, x):
        with self._lock:
            if self.factor is None:
                if self._qr is None:
                    self._qr = design_qr(np.array(self.X.T, order="F"))
                    self.X = None  # the design's memory goes once its factor exists
                self.factor = (*self._qr, posterior_triangle(self._qr[0], self.lam))
                self._qr = None
            return ridge_posterior_variance(self.factor, x, self.lam)


def design_qr(A):
    """LAPACK's ``geqrf`` of ``A`` (``n x m``, ``n >= m``, Fortran order, overwritten: no copy):
    ``(qr, tau)``, the Householder vectors below ``R`` and their scales."""
    from scipy.linalg import lapack

    n, m = A.shape
    if m > n or not A.flags.f_contiguous:
        raise ValueError(f"design_qr needs X^T of a wide design in Fortran order (n >= m rows), got {n} x {m}")
    qr, tau, work, info = lapack.dgeqrf(A, lwork=-1, overwrite_a=1)  # a query: A unchanged, not copied
    qr, tau, work, info = lapack.dgeqrf(A, lwork=int(work[0]), overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"QR factorisation of the design failed (info {info})")
    return qr, tau


def posterior_triangle(qr, lam):
    """Upper triangular ``T`` with ``T^T T = P (R R^T + lam I) P`` from the QR factorisation of
    ``[P R^T P; sqrt(lam) I]`` (LAPACK's ``tpqrt``; ``R`` from :func:`design_qr`'s ``qr``,
    ``P`` reverses the order), without forming ``R R^T``."""
    from scipy.linalg import lapack

    m = qr.shape[1]
    T = np.asfortranarray(np.tril(qr[:m, :m].T)[::-1, ::-1])  # P R^T P: upper triangular
    lower = np.zeros((m, m), order="F")
    lower[np.diag_indices(m)] = np.sqrt(lam)
    T, lower, _, info = lapack.dtpqrt(m, max(1, min(64, m)), T, lower, overwrite_a=1, overwrite_b=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"QR factorisation of the posterior failed (info {info})")
    return np.triu(T)


def ridge_posterior_variance(factor, x, lam):
    """``x (X^T X + lam I)^{-1} x^T`` for each row of ``x``, from ``factor = (qr, tau, T)``
    (:func:`design_qr` of ``X^T``, then :func:`posterior_triangle`):
    with ``[p; q] = Q^T x^T`` (the full orthogonal ``Q`` of the design's QR factorisation;
    ``p`` in the design's row space, ``q`` orthogonal to it), ``|T^{-T} P p|^2 + |q|^2 / lam``,
    a sum of positive terms (no cancellation).

    Examples
    --------
    >>> import numpy as np
    >>> from skace.linalg import design_qr, posterior_triangle, ridge_posterior_variance
    >>> X = np.random.default_rng(0).normal(size=(3, 6)); x = np.eye(6)[:2]
    >>> qr, tau = design_qr(np.array(X.T, order="F"))  # a copy: it is overwritten
    >>> var = ridge_posterior_variance((qr, tau, posterior_triangle(qr, 1e-2)), x, 1e-2)
    >>> bool(np.allclose(var, np.diag(x @ np.linalg.inv(X.T @ X + 1e-2 * np.eye(6)) @ x.T)))
    True
    """
    from scipy.linalg import lapack, solve_triangular

    qr, tau, T = factor
    m = T.shape[0]
    x = np.atleast_2d(x)
    if x.ndim != 2 or x.shape[1] != qr.shape[0]:
        raise ValueError(f"x must have {qr.shape[0]} columns (one per unknown), got shape {x.shape}")
    c = np.asfortranarray(x.T, dtype=float)
    c, work, info = lapack.dormqr("L", "T", qr, tau, c, lwork=-1)
    c, work, info = lapack.dormqr("L", "T", qr, tau, c, lwork=int(work[0]), overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"applying the design's Q failed (info {info})")
    w = solve_triangular(T, c[:m][::-1], trans="T", lower=False, check_finite=False)
    return np.sum(w * w, axis=0) + np.sum(c[m:] * c[m:], axis=0) / lam


def ard(G, b, yy, m, max_iter=100, tol=1e-4, threshold=1e8):
    """Automatic relevance determination (sparse Bayesian learning) on a Gram system.

    Each coefficient ``k`` gets its own prior precision ``a_k``; MacKay's
    updates ``a_k = gamma_k / mu_k^2``, ``beta = (m - sum gamma) / RSS`` drive
    irrelevant ones to infinity, where they are pruned.

    Parameters
    ----------
    G, b : ndarray
        ``X^T X`` and ``X^T y``.
    yy : float
        ``y^T y``.
    m : int
        Number of rows.

    Returns
    -------
    coef : ndarray (n,)
        Posterior mean (zero for pruned coefficients).
    a : ndarray (n,)
        Prior precisions (``inf`` where pruned).
    beta : float
    cov : ndarray
        Posterior covariance of the kept coefficients.
    kept : ndarray of int
    """
    n = G.shape[0]
    diag = np.diag(G).copy()
    a = np.full(n, max(np.mean(diag), 1e-12) * 1e-6)
    beta = m / max(yy, 1e-300)
    kept = np.flatnonzero(diag > 0)
    mu = np.zeros(n)
    cov = np.zeros((0, 0))
    for _ in range(max_iter):
        Gk = G[np.ix_(kept, kept)]
        H = beta * Gk + np.diag(a[kept])
        cho = linalg.cho_factor(H, check_finite=False)
        mu_k = beta * linalg.cho_solve(cho, b[kept], check_finite=False)
        cov = linalg.cho_solve(cho, np.eye(len(kept)), check_finite=False)
        gamma = 1.0 - a[kept] * np.diag(cov)
        rss = max(yy - 2 * mu_k @ b[kept] + mu_k @ Gk @ mu_k, 1e-300)
        new_a = gamma / np.maximum(mu_k**2, 1e-300)
        beta = max(m - gamma.sum(), 1e-12) / rss
        change = np.max(np.abs(np.log(new_a / a[kept])))
        a[kept] = new_a
        mu[:] = 0.0
        mu[kept] = mu_k
        keep = new_a < threshold * max(np.min(new_a), 1e-300)
        if change < tol and keep.all():
            break
        kept = kept[keep]
    a_out = np.full(n, np.inf)
    a_out[kept] = a[kept]
    mu_out = np.zeros(n)
    mu_out[kept] = mu[kept]
    Gk = G[np.ix_(kept, kept)]
    cov = linalg.inv(beta * Gk + np.diag(a[kept]))
    return mu_out, a_out, beta, cov, kept


def _peaks_beyond(ts, vals, k):
    """Whether the parabola through the bound ``ts[k]`` (the best point, ``k`` first or last)
    and its two nearest points is concave with its vertex at least half a decade outside the
    range: the maximum over the range is then at the bound, and halving towards it would only
    spend factorisations (rMD17 benzene, 1000 configurations: two of six, 45 s each, on a
    curve whose parabola peaks at ``t = -23`` for a bound of -18)."""
    idx = [0, 1, 2] if k == 0 else [len(ts) - 1, len(ts) - 2, len(ts) - 3]
    if len(ts) < 3 or not np.all(np.isfinite([vals[i] for i in idx])):
        return False
    (t0, t1, t2), (f0, f1, f2) = [ts[i] for i in idx], [vals[i] for i in idx]
    curvature = ((f2 - f1) / (t2 - t1) - (f1 - f0) / (t1 - t0)) / (t2 - t0)  # half f''
    if curvature >= 0:
        return False
    slope0 = (f1 - f0) / (t1 - t0) - curvature * (t1 - t0)  # f'(t0) of the parabola
    vertex = t0 - slope0 / (2 * curvature)
    return (vertex - t0) * np.sign(t1 - t0) <= -0.5


class GramSolver:
    """Ridge and Bayesian evidence on a Gram system by Cholesky factorisations only.

    For many features an eigendecomposition (whose tridiagonal reduction is
    memory bound) costs far more than a few Cholesky factorisations (GEMM
    bound). With the noise precision profiled out, the log evidence of ridge
    strength ``lam = alpha / beta`` is

    ``n/2 log lam - m/2 log(|y|^2 - b^T mu) - 1/2 log|G + lam I| + m/2 (log m - 1 - log 2 pi)``,

    ``mu = (G + lam I)^{-1} b``: one factorisation per ``lam``, maximised by a
    bounded scalar search over ``log lam``. The prior precision of coefficient
    ``j`` is ``lam + jitter G_jj`` (``n log lam`` above becomes the sum of their
    logarithms): a floor relative to each column's own scale, far below anything
    the data resolve, that keeps ``G + lam I`` positive definite where rounding
    in ``G`` would not (:data:`GRAM_JITTER`).

    Examples
    --------
    >>> import numpy as np
    >>> from skace.linalg import GramSolver
    >>> X = np.random.default_rng(0).normal(size=(20, 4)); y = X @ [1.0, 2.0, 0.5, -1.0]
    >>> gs = GramSolver(X.T @ X, X.T @ y, y @ y, 20)
    >>> np.round(gs.ridge(1e-12), 6)
    array([ 1. ,  2. ,  0.5, -1. ])
    """

    def __init__(self, G, b, yy, m, jitter=GRAM_JITTER):
        """Takes ownership of ``G`` (C-contiguous, symmetric): its lower triangle keeps
        ``G`` while its upper triangle (the lower one of the Fortran view ``G.T``)
        receives the Cholesky factors, so a fit holds one n x n matrix, not two."""
        self.G, self.b, self.yy, self.m = np.ascontiguousarray(G), b, float(yy), int(m)
        self.n = G.shape[0]
        self.diag = np.diag(self.G).copy()
        self._set_floor(jitter)
        self.top = float(np.max(self.diag)) if self.n else 1.0
        self._values = {}
        self._solutions = {}  # lam -> (G + lam I)^-1 b: the chosen lam needs no new factorisation
        self.limited = False
        self.holdout_scores = {}
        self.floor_passes = []  # (jitter, lam, log evidence) of each evidence search pass

    def _set_floor(self, jitter):
        """Prior precision ``lam + jitter G_jj`` from now on (the factor held, if any, is stale)."""
        self.jitter = float(jitter)
        self.floor = self.jitter * np.maximum(self.diag, 0.0)
        self._lam = None

    def factor(self, lam):
        """Lower Cholesky factor of ``G + lam I`` as ``(c, lower)`` for ``scipy.linalg.cho_solve``
        (only the most recent factor is kept)."""
        if lam != self._lam:
            G, n = self.G, self.n
            self._restore()
            G[np.diag_indices(n)] = self.diag + self.floor + lam
            self._lam = None
            if n <= DPOTRF_SAFE_N:  # LAPACK's own factorisation: 1.6x faster at n = 13710
                from scipy.linalg import lapack

                info = lapack.dpotrf(G.T, lower=1, clean=0, overwrite_a=1)[1]
            else:
                info = cholesky_upper_inplace(G)
            if info != 0:
                raise np.linalg.LinAlgError(f"Gram matrix not positive definite at alpha={lam:.3g} (info {info})")
            self._lam = lam
        return self.G.T, True

    def ridge(self, lam):
        """``(G + lam I)^-1 b`` (with the floor): one factorisation, unless ``lam`` was scored.

        A ``lam`` within rounding of one scored counts as scored: the evidence search's
        answer comes back to a caller as ``alpha / beta = (lam beta) / beta``, which can
        differ from ``lam`` in the last bit, and a miss costs a whole factorisation.
        """
        lam = self.scored(lam)
        if lam not in self._solutions:
            self._solutions[lam] = linalg.cho_solve(self.factor(lam), self.b, check_finite=False)
        return self._solutions[lam].copy()

    def scored(self, lam):
        """The ``lam`` already solved for within rounding (1e-12 relative) of ``lam``, else ``lam``."""
        return next((x for x in self._solutions if abs(x - lam) <= 1e-12 * abs(lam)), lam)

    def log_evidence_profiled(self, lam):
        """Log evidence at ``alpha / beta = lam`` with the optimal ``beta``; returns (value, beta)."""
        if lam not in self._values:
            try:
                c, lower = self.factor(lam)
            except np.linalg.LinAlgError:  # too little regularisation to factorise: no evidence
                self._values[lam] = (-np.inf, np.nan)
                return self._values[lam]
            mu = self.ridge(lam)
            misfit = max(self.yy - float(self.b @ mu), 1e-300)  # = RSS + mu^T (lam + floor) mu
            logdet = 2.0 * float(np.sum(np.log(np.diag(c))))
            log_prior = float(np.sum(np.log(lam + self.floor)))
            value = (0.5 * log_prior - 0.5 * self.m * np.log(misfit) - 0.5 * logdet
                     + 0.5 * self.m * (np.log(self.m) - 1.0 - np.log(2 * np.pi)))
            self._values[lam] = (value, self.m / misfit)
        return self._values[lam]

    def evidence_search(self, start=GRAM_SEARCH_START, step=GRAM_SEARCH_STEP, lo=GRAM_SEARCH_LO, hi=-1.0):
        """``(alpha, beta, log_evidence)`` maximising the evidence over ``lam = top * 10**t``.

        Each evaluation costs one factorisation, so the search is frugal: two
        points ``step`` decades apart, ``start - step`` and ``start``, then
        steps of ``step`` on the side they rise towards until the best is
        interior (within ``[lo, hi]``; at a bound, halved towards it unless
        the parabola there peaks outside the range), then parabolic steps in
        ``t`` with a shrinking bracket until it is under half a decade wide,
        flat (its ends within :data:`EVIDENCE_TOL` of the best), or its
        parabola peaks within :data:`VERTEX_TOL` of the best point (three to
        five factorisations when the optimum lies near ``start``, more the
        further away it is).
        The solution at every ``lam`` scored is kept, so :meth:`ridge` at the
        answer costs no further factorisation.

        Where the evidence still rises clearly (by more than
        :data:`EVIDENCE_TOL`) at the bottom of the range, the prior floor
        rather than the data sets the answer: up to :data:`GRAM_FLOOR_PASSES`
        further searches, each with a floor :data:`GRAM_FLOOR_FACTOR` times
        weaker in a range :data:`GRAM_FLOOR_EXTEND` decades deeper, and the
        floor whose best evidence is highest is kept (:attr:`jitter`;
        :attr:`floor_passes` lists each pass's ``(jitter, lam, evidence)``).
        """
        self.floor_passes = []
        lam, value = self._evidence_pass(start, step, lo, hi)
        for _ in range(GRAM_FLOOR_PASSES if self.jitter > 0 else 0):
            if not self._rising_at_bottom(lam, lo):
                break
            kept = (self.jitter, self._values, self._solutions, self.limited)
            self._set_floor(self.jitter / GRAM_FLOOR_FACTOR)
            self._values, self._solutions = {}, {}
            lo_weaker = lo - GRAM_FLOOR_EXTEND
            lam_weaker, value_weaker = self._evidence_pass(lo, step, lo_weaker, hi)
            if not value_weaker > value:  # the weaker floor is no better: keep the last one
                self._set_floor(kept[0])
                self._values, self._solutions, self.limited = kept[1:]
                break
            lam, value, lo = lam_weaker, value_weaker, lo_weaker
        value, beta = self.log_evidence_profiled(lam)
        return lam * beta, beta, value

    def _evidence_pass(self, start, step, lo, hi):
        """One evidence search at the current floor: ``(lam, log evidence)``, recorded in
        :attr:`floor_passes`."""
        lam = self._maximise(lambda lam: self.log_evidence_profiled(lam)[0], start, step, lo, hi,
                             tol=EVIDENCE_TOL, directed=True)
        value = self.log_evidence_profiled(lam)[0]
        self.floor_passes.append((self.jitter, lam, value))
        return lam, value

    def _rising_at_bottom(self, lam, lo):
        """Whether the search ended at the bottom of its range ``top * 10**lo`` with the evidence
        still rising towards it by more than :data:`EVIDENCE_TOL` (not at a factorisation's edge,
        which a weaker floor would only move up)."""
        if not self.limited or not self._at_bottom(lam, lo):
            return False
        finite = sorted((x, v) for x, (v, _) in self._values.items() if np.isfinite(v))
        return len(finite) > 1 and finite[0][1] - finite[1][1] > EVIDENCE_TOL

    def evidence_scores(self):
        """``(lam, log evidence)`` of every ``lam`` scored so far, by increasing ``lam`` (one row
        per factorisation; ``-inf`` where ``G + lam I`` did not factorise)."""
        return np.array(sorted((lam, v) for lam, (v, _) in self._values.items())).reshape(-1, 2)

    def holdout_search(self, X, y, start=GRAM_SEARCH_START, step=GRAM_SEARCH_STEP, lo=GRAM_SEARCH_LO, hi=-1.0):
        """Ridge ``lam`` minimising the squared error ``|X ridge(lam) - y|^2`` of held-out rows.

        The same frugal search as :meth:`evidence_search` (one factorisation per
        point) on ``lam = top * 10**t``; ``X`` holds rows that are not in ``G``
        (scaled as ``G``'s columns are). The scores tried are kept in
        :attr:`holdout_scores` (``lam -> squared error``).

        Returns
        -------
        lam : float
        """
        def score(lam):
            try:
                r = X @ self.ridge(lam) - y
            except np.linalg.LinAlgError:
                return -np.inf
            return -float(r @ r)

        memo = {}
        lam = self._maximise(score, start, step, lo, hi, memo)
        self.holdout_scores = {x: -v for x, v in memo.items()}
        return lam

    def add_rows(self, X, y):
        """Add the rows ``X`` (targets ``y``) to the system: ``G += X^T X``, ``b += X^T y``.

        Used to refit on all the data after :meth:`holdout_search`; the prior
        floor follows the new diagonal, and scores cached so far are dropped.
        """
        self._restore()
        symmetrize_upper(gram_update(self.G, X))
        self.b = self.b + X.T @ y
        self.yy += float(y @ y)
        self.m += len(y)
        self.diag = np.diag(self.G).copy()
        self._set_floor(self.jitter)
        self.top = float(np.max(self.diag)) if self.n else 1.0
        self._values = {}
        self._solutions = {}

    def _restore(self):
        """Copy the pristine lower triangle of ``G`` over its upper one (which may hold a factor)."""
        G, n = self.G, self.n
        for i0 in range(0, n, 1024):
            i1 = min(i0 + 1024, n)
            block = np.tril(G[i0:i1, i0:i1], -1)
            G[i0:i1, i0:i1] = block + block.T
            G[i0:i1, i1:] = G[i1:, i0:i1].T
        G[np.diag_indices(n)] = self.diag
        self._lam = None

    def _maximise(self, score, start, step, lo, hi, memo=None, tol=0.0, directed=False):
        """``lam = top * 10**t`` (``t`` in ``[lo, hi]``) maximising ``score(lam)``: three points
        ``step`` decades apart around ``start`` or, ``directed``, ``start - step`` and ``start``
        first and ``start + step`` only if they rise towards it (or ``start - step`` is the
        bound), then steps outwards on the side the scores rise to until the best is interior
        (at a bound of the range, halved towards it until the gap is under half a decade,
        unless the parabola through the bound and its neighbours peaks outside the range),
        then parabolic steps with a shrinking bracket until it is under half a decade wide, or
        until the parabola peaks within :data:`VERTEX_TOL` of the best point. Either stops
        early where the scores around the best are within ``tol`` of it (flat). Every new
        point lies strictly inside the bracket, so the bracket shrinks at every step.
        Sets :attr:`limited`."""
        memo = {} if memo is None else memo

        def f(t):
            lam = self.top * 10.0 ** t
            if lam not in memo:
                memo[lam] = score(lam)
            return memo[lam]

        start = min(max(start, lo + step), hi - step)  # the first bracket lies in the range
        # directed: a pair first, then a step towards the side it rises to. A third point on the
        # other side (large fits' evidence peaks below start) would cost a factorisation and
        # decide nothing on a curve with one maximum; a held-out error can have a shallow dip
        # below start and its minimum far above, which only the third point finds.
        ts = [start - step, start]
        vals = [f(t) for t in ts]
        if not directed or vals[1] >= vals[0] or ts[0] <= lo:
            ts.append(start + step)
            vals.append(f(ts[-1]))
        while True:
            k = int(np.argmax(vals))
            if k == 0 and ts[0] > lo:  # outwards by a step, or to the bound if that is nearer
                ts.insert(0, max(ts[0] - step, lo))
                vals.insert(0, f(ts[0]))
            elif k == len(ts) - 1 and ts[-1] < hi:
                ts.append(min(ts[-1] + step, hi))
                vals.append(f(ts[-1]))
            else:
                break
        k = int(np.argmax(vals))
        while k in (0, len(ts) - 1) and len(ts) > 1:
            # best at a bound of the range: halve towards it until a point beats it (an
            # interior maximum to refine) or the gap is under half a decade, unless the
            # parabola through the bound and its neighbours peaks well outside the range
            j = 1 if k == 0 else len(ts) - 2
            if abs(ts[j] - ts[k]) <= 0.5 or vals[k] - vals[j] <= tol or _peaks_beyond(ts, vals, k):
                break
            t = 0.5 * (ts[k] + ts[j])
            at = min(k, j) + 1
            ts.insert(at, t)
            vals.insert(at, f(t))
            k = int(np.argmax(vals))
        if 0 < k < len(ts) - 1:
            a, b, c = ts[k - 1], ts[k], ts[k + 1]
            fa, fb, fc = vals[k - 1], vals[k], vals[k + 1]
            refined = False
            while c - a > 0.5 and fb - min(fa, fc) > tol:
                # vertex of the parabola through the bracket, kept inside it
                den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
                if np.isfinite(den) and den != 0:
                    t = b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
                    if refined and abs(t - b) <= VERTEX_TOL:
                        break  # the parabola's peak is at a point already scored
                else:  # an end without a score (not factorisable): bisect towards it, where the
                    # unknown edge lies (the wider side where both ends have none)
                    left = not np.isfinite(fa) if np.isfinite(fa) != np.isfinite(fc) else b - a > c - b
                    t = 0.5 * (a + b) if left else 0.5 * (b + c)
                t = min(max(t, a + 0.1 * (c - a)), c - 0.1 * (c - a))
                if abs(t - b) < 0.05:  # a point beside the best, strictly inside the bracket
                    t = b + min(0.25, 0.5 * (c - b)) if c - b > b - a else b - min(0.25, 0.5 * (b - a))
                refined = True
                ft = f(t)
                if ft > fb:
                    if t > b:
                        a, fa, b, fb = b, fb, t, ft
                    else:
                        c, fc, b, fb = b, fb, t, ft
                else:
                    if t > b:
                        c, fc = t, ft
                    else:
                        a, fa = t, ft
            best = b
        else:
            best = ts[k]
        lam = self.top * 10.0 ** best
        self.limited = self._stopped_at_lower_limit(memo, lam, lo)
        return lam

    def stopped_at_lower_limit(self, lam, lo=GRAM_SEARCH_LO):
        """Whether ``lam`` is the smallest ridge the search could score while the evidence
        still rose towards it: every smaller ``lam`` tried failed to factorise (rounding in
        ``G`` and in the factorisation leaves ``G + lam I`` indefinite there), or ``lam`` is at
        the search's lower bound ``top * 10**lo``. The maximum then lies at weaker
        regularisation than the search reached, and ``lam`` is set by rounding (the
        factorisation's edge) or by the range (its bound).
        """
        return self._stopped_at_lower_limit({x: v for x, (v, _) in self._values.items()}, lam, lo)

    def _stopped_at_lower_limit(self, memo, lam, lo):
        """:meth:`stopped_at_lower_limit` for the scores ``memo`` (``lam -> value``, higher is
        better: the evidence, or minus a held-out error) of a search."""
        tried = sorted(memo.items())
        finite = [(x, v) for x, v in tried if np.isfinite(v)]
        if not finite or finite[0][0] != lam:
            return False
        below = [x for x, _ in tried if x < lam]
        rising = len(finite) == 1 or finite[0][1] > finite[1][1]
        return rising and (bool(below) or self._at_bottom(lam, lo))

    def _at_bottom(self, lam, lo):
        """Whether ``lam`` is the bottom of the range ``top * 10**lo`` (within rounding)."""
        return lam <= self.top * 10.0 ** lo * (1 + 1e-9)


#: Bottom of :meth:`KernelSolver.evidence_search`'s range, ``lam = top * 10**t`` with ``top`` the
#: largest squared singular value: the bottom of :meth:`Spectrum.evidence_ridge`'s scan, so that
#: both routes count the same evidence maxima (within :data:`CV_FALLBACK_DECADES` of it) as
#: interpolating. Below it the factorisations fail (rounding in ``K``) or spend their time on
#: a fit that the group validation error chooses anyway (rMD17 ethanol, 250 configurations:
#: eleven factorisations down to -17.5, then the validation error's choice, -16).
KERNEL_SEARCH_LO = -16.0


#: Where the dual form of a Gram-route-sized fit puts the prior floor (:func:`floored_scale`),
#: in decades below the largest diagonal entry of the Gram route's matrix: where that route's
#: evidence peaked on rMD17 fits of 1000 configurations (ethanol and naphthalene -16.8,
#: malonaldehyde and salicylic acid -16.5, toluene -16.4, uracil -17.25; aspirin -15.2).
#: The choice hardly moves with it: on ethanol, 1000 configurations, ``lam0`` at 1e-13.6 and
#: 1e-15.2 of that entry chose ``lam`` 6.55e-11 and 6.20e-11 (energy / force MAE 0.856 / 5.29
#: at the latter), ``lam0`` at 6.55e-11 chose itself (0.859 / 5.30), at the Gram route's own
#: choice, 5.69e-11, 6.25e-11 (0.858 / 5.29; the Gram route: 0.855 / 5.28).
DUAL_FLOOR_START = -16.7

#: A pass of that dual fit is final when its ``lam`` lies within this many decades of the
#: ``lam0`` its floor was set for; else the floor moves to that ``lam`` (ethanol: from
#: 9.0e-8 to 6.55e-11, which then chose itself), at most :data:`DUAL_FLOOR_PASSES` passes
#: in all (one ``X X^T`` each).
DUAL_FLOOR_TOL = 0.5
DUAL_FLOOR_PASSES = 3


def floored_scale(diag, lam0, jitter=GRAM_JITTER):
    """Extra column divisors that give a ridge ``lam`` the Gram route's prior floor at ``lam0``.

    The Gram route's prior precision of coefficient ``j`` is ``lam + jitter G_jj``
    (:class:`GramSolver`). Columns divided further by ``w_j = sqrt(1 + jitter G_jj / lam0)``
    make a plain ridge ``lam`` the precision ``lam (1 + jitter G_jj / lam0)``: the same
    prior at ``lam = lam0``, and a scalar ridge, which the dual form
    (:class:`KernelSolver`: one ``X X^T`` for every ``lam``) needs. On rMD17 ethanol, 1000
    configurations, ``lam0`` at the Gram route's choice gives its errors (energy / force
    MAE 0.858 / 5.29 against 0.855 / 5.28), where no floor at all lets the evidence run to
    the bottom of its range (0.958 / 5.71).

    Parameters
    ----------
    diag : ndarray
        ``G_jj``: squared norms of the columns as the Gram route scales them.
    lam0 : float
    jitter : float, default=GRAM_JITTER

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from skace.linalg import floored_scale
    >>> w = floored_scale(np.array([1.0, 4.0]), 1e-11)
    >>> np.round(1e-11 * w**2, 13)  # lam0 times w^2: lam0 + jitter G_jj
    array([2.e-11, 5.e-11])
    """
    return np.sqrt(1.0 + jitter * np.asarray(diag, dtype=float) / lam0)


class KernelSolver(GramSolver):
    """Ridge and Bayesian evidence of a wide design ``X`` (``m < n``) in its dual form.

    ``(X^T X + lam I)^{-1} X^T y = X^T (K + lam I)^{-1} y`` with ``K = X X^T``
    (``m x m``), and by Sylvester's identity ``log|X^T X + lam I| =
    (n - m) log lam + log|K + lam I|``: the evidence of :class:`Spectrum` (the
    same model: no floor, ridge ``lam`` alone) for ``m^2 n`` to build ``K`` and
    ``m^3 / 3`` per Cholesky factorisation, where the SVD of ``X`` costs many
    times ``m^2 n`` (rMD17 ethanol, 250 configurations, 7000 x 37062: 270 s
    against 25 s for ``K`` and 2 s per factorisation). Rounding in ``K``
    (``eps`` times its largest eigenvalue) limits ``lam`` from below as it
    does for the Gram route, and moves the factor's solution at the weakest
    ridges, which :meth:`coefficients` refines by conjugate gradients through
    ``X`` itself; where the evidence peaks within
    :data:`CV_FALLBACK_DECADES` of :data:`KERNEL_SEARCH_LO` (a fit that
    interpolates), the leave-one-group-out error chooses instead, as
    :meth:`Spectrum.evidence_ridge` does, here on a grid with one inversion per
    point.

    Examples
    --------
    >>> import numpy as np
    >>> from skace.linalg import KernelSolver, Spectrum
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(6, 10)); y = rng.normal(size=6)
    >>> ks = KernelSolver(X.copy(), y)
    >>> bool(np.allclose(ks.coefficients(1e-3), Spectrum.from_design(X, y).ridge(1e-3)))
    True
    """

    def __init__(self, X, y, groups=None, zero_rows=0, zero_rows_yy=0.0):
        """Keeps ``X`` (not copied; Fortran order forms ``K`` without a copy) for the
        coefficients ``X^T (K + lam I)^{-1} y``. ``zero_rows`` more rows of the problem, with
        targets of squared norm ``zero_rows_yy``, are zero in ``X`` and left out of it (the
        rigid-motion components of force rows): they count as rows and as misfit only."""
        K = symmetrize_upper(gram_update(np.zeros((X.shape[0], X.shape[0])), X.T))
        super().__init__(K, y, float(y @ y) + zero_rows_yy, X.shape[0] + zero_rows, jitter=0.0)
        self.X, self.n_unknowns, self.groups = X, X.shape[1], groups
        self.zero_rows_yy = float(zero_rows_yy)
        self.top = _largest_eigenvalue(K) if self.n else 1.0
        self.cv_scores = {}
        self._fold_rows = None

    def coefficients(self, lam, rtol=1e-13, max_iter=50):
        """``X^T (X X^T + lam I)^{-1} y``: the ridge solution of the primal problem.

        The factor of the computed ``K`` solves a system that rounding has moved by about
        ``eps`` times its largest eigenvalue, as much as the weakest ``lam`` the search
        scores (rMD17 ethanol, 500 configurations, ``lam`` at ``1e-16`` of it: energy MAE
        1.42 meV against the SVD's 1.41). Conjugate gradients on ``X X^T + lam I`` applied
        through ``X`` (no squaring), preconditioned by that factor, refine it to a relative
        residual ``rtol``: about ten iterations of two products with ``X`` each. The
        coefficients ``c`` are carried beside the dual ``a`` and updated by the same steps,
        and the residual is ``y - X c - lam a``: forming ``c = X^T a`` at the end instead
        would cancel ``a``'s large components along the weakest directions of ``K`` in
        rounding (rMD17 benzene, 100 configurations, ``lam`` at ``1e-16``: every energy
        moved by the same 8.7e-6 eV against the SVD's; 2e-12 relative with ``c`` carried).
        """
        from scipy.linalg import cho_solve

        X, y = self.X, self.b
        a = self.ridge(lam)
        c = X.T @ a
        factor = self.factor(lam)
        r = y - (X @ c + lam * a)  # the residual of c itself, rounding in X^T a included
        z = cho_solve(factor, r, check_finite=False)
        p, rz, goal = z, float(r @ z), rtol * float(np.linalg.norm(y))
        for _ in range(max_iter):
            if not np.linalg.norm(r) > goal or rz <= 0:
                break
            u = X.T @ p
            q = X @ u + lam * p
            step = rz / float(p @ q)
            a += step * p
            c += step * u
            r -= step * q
            z = cho_solve(factor, r, check_finite=False)
            rz, previous = float(r @ z), rz
            p = z + (rz / previous) * p
        return c

    def log_evidence_profiled(self, lam):
        """Log evidence at ``alpha / beta = lam`` with the optimal ``beta``; returns (value, beta)."""
        if lam not in self._values:
            try:
                c, _ = self.factor(lam)
            except np.linalg.LinAlgError:
                self._values[lam] = (-np.inf, np.nan)
                return self._values[lam]
            a = self.ridge(lam)
            misfit = max(lam * float(self.b @ a) + self.zero_rows_yy, 1e-300)  # = RSS + lam |c|^2
            n, m = self.n_unknowns, self.m
            logdet = 2.0 * float(np.sum(np.log(np.diag(c)))) + (n - len(self.b)) * np.log(lam)
            value = 0.5 * (n * np.log(lam) - m * np.log(misfit) - logdet
                           + m * (np.log(m) - 1.0 - np.log(2 * np.pi)))
            self._values[lam] = (value, m / misfit)
        return self._values[lam]

    def group_cv_error(self, lam):
        """Mean squared leave-one-group-out residual per row at ``lam``: the residuals of group
        ``g`` left out are ``(M_gg)^{-1} a_g`` with ``M = (K + lam I)^{-1}`` and ``a = M y``."""
        if lam in self.cv_scores:
            return self.cv_scores[lam]
        from scipy.linalg import lapack

        try:
            a = self.ridge(lam)
            c, _ = self.factor(lam)
        except np.linalg.LinAlgError:
            self.cv_scores[lam] = np.inf
            return np.inf
        c, info = lapack.dpotri(c, lower=1, overwrite_c=1)  # M's lower triangle over the factor
        self._lam = None  # the factor is gone
        total = 0.0
        if info == 0:
            for f in self._folds():
                block = np.tril(c[np.ix_(f, f)])
                block = block + np.tril(block, -1).T
                try:
                    e = np.linalg.solve(block, a[f])
                except np.linalg.LinAlgError:
                    total = np.inf
                    break
                total += float(e @ e)
        else:
            total = np.inf
        self.cv_scores[lam] = (total + self.zero_rows_yy) / self.m
        return self.cv_scores[lam]

    def add_rows(self, X, y):
        """Not for the dual form: new rows would grow ``X X^T`` itself (refit instead)."""
        raise NotImplementedError("KernelSolver cannot take rows after it is built: refit with all of them")

    def _folds(self):
        """Row indices of each group, ascending (computed once)."""
        if self._fold_rows is None:
            order = np.argsort(self.groups, kind="stable")  # stable: each fold's rows ascend
            self._fold_rows = np.split(order, np.flatnonzero(np.diff(self.groups[order])) + 1)
        return self._fold_rows

    def evidence_search(self, start=GRAM_SEARCH_START, step=GRAM_SEARCH_STEP, lo=KERNEL_SEARCH_LO, hi=2.0):
        """``(alpha, beta, log_evidence)``: the evidence's maximum over ``t`` in ``[lo, hi]``
        (the range of :meth:`Spectrum.evidence_ridge`'s scan), or, where it lies within
        :data:`CV_FALLBACK_DECADES` of ``lo`` and there are at least two groups, the minimum of
        the leave-one-group-out error from ``lo`` to ``t = 0`` (:meth:`_cv_minimum`)."""
        alpha, beta, value = super().evidence_search(start, step, lo, hi)
        lam = alpha / beta
        groups = self.groups
        if (groups is not None and len(np.unique(groups)) > 1
                and np.log10(lam / self.top) < lo + CV_FALLBACK_DECADES):
            lam = self._cv_minimum(lo)
            value, beta = self.log_evidence_profiled(lam)
            return lam * beta, beta, value
        return alpha, beta, value

    def _cv_minimum(self, lo):
        """``lam`` minimising :meth:`group_cv_error`: a scan of ``t`` from ``lo`` to 0 in whole
        decades, then the half decades beside its best point, i.e. the 0.5-decade grid of
        :func:`group_cv_curve` near its minimum. A scan, not a bracket search: the curve can
        have several minima (a 10-structure test problem: 0.495 at -16, 0.466 at -7).
        Sets :attr:`limited` when the minimum is at ``lo``."""
        ts = np.arange(lo, 0.01, 1.0)
        scores = {t: self.group_cv_error(self.top * 10.0 ** t) for t in ts}
        best = min(scores, key=scores.get)
        for t in (best - 0.5, best + 0.5):
            if lo <= t <= 0.0:
                scores[t] = self.group_cv_error(self.top * 10.0 ** t)
        best = min(scores, key=scores.get)
        self.limited = bool(best <= lo)
        return self.top * 10.0 ** best


def _largest_eigenvalue(K):
    """Largest eigenvalue of the symmetric positive semi-definite ``K`` (Lanczos, a few
    matrix-vector products; ``top`` of the dual searches, as ``s_max^2`` is the SVD route's)."""
    from scipy.sparse.linalg import eigsh

    if K.shape[0] <= 2:
        return float(np.max(np.linalg.eigvalsh(K)))
    return float(eigsh(K, k=1, which="LA", tol=1e-6, return_eigenvectors=False,
                       v0=np.ones(K.shape[0]))[0])
