"""Export a fitted linear ACE model to ML-PACE's ``.yace`` format.

A ``.yace`` file is read by the PACE evaluator (LAMMPS ``pair_style pace``,
python-ace's ``PyACECalculator``). PACE evaluates, for an atom ``i`` of
element ``mu_0``,

.. math::

    E_i = E_0[\\mu_0] + F\\Big(\\sum_f \\sum_{\\mathbf m} \\tilde c_{f\\mathbf m}\\,
          \\mathrm{Re} \\prod_t A_{\\mu_t n_t l_t m_t}\\Big),
    \\qquad A_{\\mu n l m} = \\sum_{j:\\ \\mu_j = \\mu} R_{n}(r_{ij})\\, Y_l^m(\\hat r_{ij}),

with complex spherical harmonics ``Y_l^m`` and one "C-tilde" coefficient per
m-combination. skace's energy is the same kind of sum over products of its
*real* atomic base, contracted with real O(3)-invariant couplings
(:mod:`skace.maths.coupling`). The conversion here:

1. For every central element and every multiset of one-particle functions,
   sum the fitted coefficients times their coupling tensors into one real
   tensor ``W[m_1, ..., m_nu]``.
2. Substitute ``A_real[m] = sum_mu U[m, mu] A_complex[mu]``
   (:func:`skace.maths.spherical_harmonics.real_from_complex`) on every axis:
   ``Wc[mu] = sum_m W[m] prod_t U[m_t, mu_t]``. For even ``sum(l)`` the
   invariant tensors are real in the complex basis, so ``Wc`` is real (checked).
3. Merge m-combinations naming the same product (permutations of equal
   factors) and each combination with its negative: ``prod A[-mu]`` is the
   complex conjugate of ``prod A[mu]`` when ``sum(mu) = 0``, so both have the
   same real part and PACE only needs one of them.

A different phase convention of the complex harmonics (Condon-Shortley or
not) would only change a factor ``(-1)^m`` per factor, which is
``(-1)^(sum m) = 1`` on every invariant product.

Radial functions
----------------
skace's radial families have no analytic PACE counterpart. Spline tables in
the file (``radbasename: ACE.jl.base`` with nodal values) are read only by
recent ML-PACE sources; python-ace 0.4.0rc1's evaluator rejects them. Every
PACE version (and, being an ``ACERadialFunctions`` basis, the KOKKOS
``pace/kk`` style) does evaluate ``R_nl(r) = sum_k crad[n, l, k] g_k(r)`` over a radial basis
``g_k``; with ``ChebPow`` and ``lambda = 1``,
``g_k = (1 - T_k(2 r / r_cut - 1)) / 2``, ``k = 1..K``, which span exactly the
polynomials of degree ``<= K`` vanishing at the cutoff. skace's functions are
smooth on ``[0, r_cut]`` and vanish there, so a Chebyshev projection
reproduces them to ~1e-12 with modest ``K`` (:func:`tabulate_radial` picks
``K``). PACE then tabulates ``R_nl`` and ``g_k`` in a cubic Hermite table
with spacing ``deltaSplineBins``; the error of the whole chain against the
exact functions is measured (by replaying PACE's table) and returned with the
export. Rank-1 (two-body) functions in PACE use the ``g_k`` directly, so their
coefficients are folded through ``crad``. Everything is written per element
pair, as skace's parameters are.

Normalisation and embedding
---------------------------
PACE's harmonics are ``sqrt(4 pi)`` times the orthonormal ones (``Y_0^0 = 1``),
so a rank-``nu`` coefficient is divided by ``(4 pi)^(nu / 2)``. The embedding
is ``FinnisSinclairShiftedScaled`` with parameters ``[1, 1]`` and one density,
which is ``F(rho) = rho``; the core repulsion is off (``prehc = 0``), the inner
cutoff sits at zero distance and the energy-based one far out of reach
(``rho_core_cutoff = 100000``), so nothing else enters. ``E0`` is written per
element as it is.
"""

from dataclasses import dataclass
from itertools import groupby

import numpy as np
from numba import njit
from numpy.polynomial import chebyshev as C

from .kernels.radial import radial_with_derivative
from .maths.radial import family_code
from .maths.spherical_harmonics import real_from_complex

#: Relative size below which a complex C-tilde coefficient counts as zero.
ZERO_TOL = 1e-13
#: Largest relative imaginary part of a C-tilde tensor accepted as round-off.
IMAG_TOL = 1e-9
#: PACE counts the m-combinations of one function in a 16-bit integer.
MAX_MS_COMBS = 32767


@dataclass
class YaceExport:
    """What :func:`export_yace` wrote.

    Attributes
    ----------
    path : str
        The ``.yace`` file.
    radial : RadialTables
        The radial projection, PACE's table spacing and their measured errors
        (``radial.max_abs_error``, ``radial.max_abs_derivative_error``).
    n_functions : int
        C-tilde functions written (all central elements, rank 1 included).
    n_ms_combs : int
        m-combinations written.
    """

    path: str
    radial: "RadialTables"
    n_functions: int
    n_ms_combs: int


# ------------------------------------------------------------------ radial
@njit(cache=True)
def _exact_radial(family, params, r, n_radial):
    """Exact ``R_n`` and ``dR_n/dr`` of one element pair at distances ``r``; shape (len(r), n_radial)."""
    R = np.empty((len(r), n_radial))
    dR = np.empty((len(r), n_radial))
    for k in range(len(r)):
        radial_with_derivative(family, params, r[k], n_radial, R[k], dR[k])
    return R, dR


def _chebpow_basis(r, rc, degree):
    """PACE's ``ChebPow`` functions with ``lambda = 1``: ``g_k = (1 - T_k(2 r / rc - 1)) / 2``, k = 1..degree.

    Returns values and r-derivatives, each of shape (len(r), degree).
    """
    x = 2.0 * np.asarray(r, dtype=float) / rc - 1.0
    T = np.empty((len(x), degree + 1))
    dT = np.empty_like(T)
    T[:, 0], dT[:, 0] = 1.0, 0.0
    if degree:
        T[:, 1], dT[:, 1] = x, 1.0
    for k in range(1, degree):
        T[:, k + 1] = 2.0 * x * T[:, k] - T[:, k - 1]
        dT[:, k + 1] = 2.0 * T[:, k] + 2.0 * x * dT[:, k] - dT[:, k - 1]
    return 0.5 - 0.5 * T[:, 1:], -dT[:, 1:] / rc


def _fit_chebpow(R, r, rc, degree):
    """Coefficients ``crad`` (n_radial, degree) with ``sum_k crad[n, k] g_k(r) ~ R[:, n]``.

    A Chebyshev least-squares fit of degree ``degree`` in ``x = 2 r / rc - 1``
    on Chebyshev points ``r``; dropping its constant term after subtracting
    its value at ``x = 1`` leaves a combination of the ``g_k`` (which span
    exactly the polynomials vanishing at the cutoff).
    """
    x = 2.0 * r / rc - 1.0
    a = C.chebfit(x, R, degree)  # (degree + 1, n_radial)
    return (-2.0 * a[1:]).T


def _hermite(values, derivs, h, x):
    """PACE's cubic Hermite lookup: nodal ``values``/``derivs`` (n_func, n_nodes) at spacing ``h``, evaluated at ``x``."""
    k = np.minimum((x / h).astype(np.int64), values.shape[1] - 2)
    t = x / h - k
    f0, f1 = values[:, k], values[:, k + 1]
    d0, d1 = derivs[:, k] * h, derivs[:, k + 1] * h
    c2 = 3.0 * (f1 - f0) - d1 - 2.0 * d0
    c3 = -2.0 * (f1 - f0) + d1 + d0
    f = f0 + t * (d0 + t * (c2 + t * c3))
    df = (d0 + t * (2.0 * c2 + 3.0 * t * c3)) / h
    return f, df


@dataclass
class RadialTables:
    """skace's radial functions in PACE's ChebPow form, with their measured error.

    Attributes
    ----------
    degree : int
        Number of ``ChebPow`` functions ``g_k`` (PACE's ``nradbase``).
    crad : ndarray of shape (n_elements, n_elements, n_radial, degree)
        ``R_n ~ sum_k crad[a, b, n, k] g_k`` for central element ``a`` and
        neighbour element ``b``.
    spline_step : float
        PACE's ``deltaSplineBins``: the spacing of the cubic Hermite table
        PACE builds from these functions.
    fit_max_abs_error : float
        Largest ``|sum_k crad g_k - R_n|`` (the polynomial projection alone).
    max_abs_error, max_abs_derivative_error : float
        Largest error of what PACE evaluates (projection, then its Hermite
        table) against the exact ``R_n`` and ``dR_n/dr``.
    """

    degree: int
    crad: np.ndarray
    spline_step: float
    fit_max_abs_error: float
    max_abs_error: float
    max_abs_derivative_error: float


def tabulate_radial(descriptor, degree=None, spline_step=1e-3, fit_tol=1e-11, max_degree=256):
    """Project a fitted descriptor's radial functions on PACE's ChebPow basis and measure the error.

    PACE evaluates radial functions ``R_nl = sum_k crad[n, l, k] g_k(r)`` from
    a cubic Hermite table with spacing ``spline_step`` (``deltaSplineBins``).
    With ``ChebPow`` and ``lambda = 1`` the ``g_k`` span exactly the
    polynomials in ``r`` of degree ``<= degree`` that vanish at the cutoff, so
    skace's smooth radial functions are reproduced to Chebyshev accuracy.

    Parameters
    ----------
    descriptor : ACETransformer
        A fitted transformer.
    degree : int, optional
        Number of ``g_k``. None: the smallest multiple of 4 (at least the
        number of radial functions) whose projection error is at most
        ``fit_tol``, up to ``max_degree``.
    spline_step : float, default=1e-3
        Spacing of PACE's Hermite table in Å (smaller: more accurate forces,
        more memory in the evaluator).
    fit_tol : float, default=1e-11
        Target projection error when ``degree`` is None.
    max_degree : int, default=256
        Upper limit of the automatic degree.

    Returns
    -------
    RadialTables

    Raises
    ------
    ValueError
        If ``max_degree`` cannot reach ``fit_tol`` (the radial functions are
        too rough for a polynomial of that degree) or a parameter is invalid.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from skace import ACETransformer
    >>> from skace.export import tabulate_radial
    >>> t = ACETransformer(cutoff=4.0, correlation_order=2, max_degree=5, radial_basis="bessel")
    >>> tables = tabulate_radial(t.fit([molecule("H2O")]))
    >>> tables.fit_max_abs_error < 1e-11, tables.max_abs_error < 1e-9
    (True, True)
    """
    if spline_step <= 0:
        raise ValueError(f"spline_step must be positive, got {spline_step}")
    family = family_code(descriptor.radial_basis)
    params = descriptor.radial_parameters_
    n_radial = int(descriptor.compiled_.n_radial)
    rc = float(descriptor.cutoff)
    n_el = len(descriptor.elements_)
    pairs = [(a, b) for a in range(n_el) for b in range(n_el)]
    # dense probe grid for the projection error, avoiding the nodes of the fit
    probe = np.linspace(0.0, rc, 4001)[1:-1] + rc / 8000.0 * 0.37

    def nodes(deg):
        n_pts = 2 * deg + 2
        return 0.5 * rc * (1.0 - np.cos(np.pi * (np.arange(n_pts) + 0.5) / n_pts))

    def fit(deg):
        r = nodes(deg)
        crad = np.empty((n_el, n_el, n_radial, deg))
        err = 0.0
        g, _ = _chebpow_basis(probe, rc, deg)
        for a, b in pairs:
            R, _ = _exact_radial(family, params[a, b], r, n_radial)
            crad[a, b] = _fit_chebpow(R, r, rc, deg)
            exact, _ = _exact_radial(family, params[a, b], probe, n_radial)
            err = max(err, float(np.abs(g @ crad[a, b].T - exact).max()))
        return crad, err

    if degree is None:
        # first guess from the decay of a long Chebyshev series: dropping the terms beyond K costs at
        # most twice their absolute sum (once directly, once through the value at the cutoff)
        r = nodes(max_degree)
        tail = np.zeros(max_degree + 2)
        for a, b in pairs:
            R, _ = _exact_radial(family, params[a, b], r, n_radial)
            coef = np.abs(C.chebfit(2.0 * r / rc - 1.0, R, max_degree)).max(axis=1)
            tail[:-1] = np.maximum(tail[:-1], np.cumsum(coef[::-1])[::-1])
        degree = max(4, -(-n_radial // 4) * 4)
        while degree < max_degree and 2.0 * tail[degree + 1] > fit_tol:
            degree += 4
        degree = min(degree, max_degree)
        while True:
            crad, fit_err = fit(degree)
            if fit_err <= fit_tol:
                break
            if degree + 4 > max_degree:
                raise ValueError(
                    f"radial functions ({descriptor.radial_basis!r}) need a polynomial of degree > {max_degree} "
                    f"to reach {fit_tol:g} (reached {fit_err:.2g}); raise the degree limit or fit_tol"
                )
            degree += 4
    else:
        degree = int(degree)
        if degree < n_radial:
            raise ValueError(f"degree must be at least the number of radial functions ({n_radial}), got {degree}")
        crad, fit_err = fit(degree)

    # what PACE evaluates: its Hermite table (nodes k * h, k = 1..n_tot, zero at the cutoff) of sum crad g
    n_tot = int(rc / spline_step)
    h = rc / n_tot
    nodes = np.arange(n_tot + 1) * h
    x = (np.arange(1, n_tot)[:, None] + np.arange(1, 8)[None, :] / 8.0).ravel() * h  # 7 points per interval
    g, dg = _chebpow_basis(nodes, rc, degree)
    g[-1] = dg[-1] = 0.0
    err = derr = 0.0
    for a, b in pairs:
        f, df = _hermite((g @ crad[a, b].T).T, (dg @ crad[a, b].T).T, h, x)
        exact, dexact = _exact_radial(family, params[a, b], x, n_radial)
        err = max(err, float(np.abs(f.T - exact).max()))
        derr = max(derr, float(np.abs(df.T - dexact).max()))
    return RadialTables(degree=int(degree), crad=crad, spline_step=float(spline_step), fit_max_abs_error=fit_err,
                        max_abs_error=err, max_abs_derivative_error=derr)


# ---------------------------------------------------------------- C-tilde
def _complex_tensor(W, ls):
    """``Wc[mu] = sum_m W[m] prod_t U_t[m_t, mu_t]`` for the real tensor ``W`` over factors of degrees ``ls``."""
    T = W
    for t, l in enumerate(ls):
        T = np.moveaxis(np.tensordot(T, real_from_complex(l), axes=([t], [0])), -1, t)
    return T


def ctilde_functions(basis, coef):
    """Fold fitted coefficients and real couplings into PACE's C-tilde form.

    Parameters
    ----------
    basis : ACEBasis
        The basis specification (``descriptor.basis_``).
    coef : ndarray of shape (n_features,)
        Fitted coefficients, one per feature row of ``basis``.

    Returns
    -------
    list of dict
        One entry per C-tilde function with keys ``mu0`` (central element
        index), ``mus``, ``ns`` (1-based), ``ls`` (one per factor), ``ms_combs``
        (list of m-tuples) and ``ctildes`` (one real coefficient per tuple),
        such that an atom's energy above ``E0`` is
        ``sum ctildes[k] * Re(prod_t A[mus[t], ns[t], ls[t], ms_combs[k][t]])``
        over complex orthonormal harmonics. Functions whose coefficients all
        vanish are left out.

    Raises
    ------
    ValueError
        If a folded tensor is not real in the complex basis (only possible
        for odd ``sum(l)``, which skace never builds).

    Examples
    --------
    >>> import numpy as np
    >>> from skace.maths.basis import ACEBasis
    >>> from skace.export import ctilde_functions
    >>> basis = ACEBasis(["Si"], correlation_order=2, max_degree=5, l_weight=1.5)
    >>> funcs = ctilde_functions(basis, np.ones(basis.n_features))
    >>> f = [f for f in funcs if f["ls"] == [1, 1]][0]  # sum_m A_1m A_1m / sqrt(3) in real harmonics
    >>> f["ms_combs"], np.round(np.array(f["ctildes"]) * np.sqrt(3), 12).tolist()
    ([(-1, 1), (0, 0)], [-2.0, 1.0])
    """
    coef = np.asarray(coef, dtype=float)
    if coef.shape != (basis.n_features,):
        raise ValueError(f"coef has shape {coef.shape}, the basis has {basis.n_features} features")
    groups = {}
    for k, f in enumerate(basis.features):
        if coef[k] == 0.0:
            continue
        key = (f["center"], f["factors"])
        C = basis._coupling(f["factors"])[f["coupling"]]
        groups[key] = groups.get(key, 0.0) + coef[k] * C
    out = []
    for (center, factors), W in groups.items():
        ls = [l for _, _, l in factors]
        Wc = _complex_tensor(np.reshape(W, [2 * l + 1 for l in ls]), ls)
        scale = np.abs(Wc).max()
        if scale == 0.0:
            continue
        if np.abs(Wc.imag).max() > IMAG_TOL * scale:
            raise ValueError(f"C-tilde tensor of factors {factors} is not real; cannot export it to PACE")
        # blocks of equal factors (adjacent in skace's sorted multisets): their m's commute
        blocks, pos = [], 0
        for _, same in groupby(factors):
            size = len(list(same))
            blocks.append((pos, pos + size))
            pos += size

        def canonical(ms, blocks=tuple(blocks)):
            ms = list(ms)
            for a, b in blocks:
                ms[a:b] = sorted(ms[a:b])
            return tuple(ms)

        merged = {}
        for idx in zip(*np.nonzero(np.abs(Wc) > ZERO_TOL * scale)):
            ms = tuple(int(i) - l for i, l in zip(idx, ls))
            key = max(canonical(ms), canonical(-m for m in ms))  # one of each conjugate pair
            merged[key] = merged.get(key, 0.0) + float(Wc[idx].real)
        keys = sorted(k for k, v in merged.items() if abs(v) > ZERO_TOL * scale)
        if not keys:
            continue
        if len(keys) > MAX_MS_COMBS:
            raise ValueError(f"C-tilde function of factors {factors} has {len(keys)} m-combinations; "
                             f"PACE stores at most {MAX_MS_COMBS} per function")
        out.append(dict(
            mu0=int(center),
            mus=[int(e) for e, _, _ in factors],
            ns=[int(n) for _, n, _ in factors],
            ls=[int(l) for l in ls],
            ms_combs=keys,
            ctildes=[merged[k] for k in keys],
        ))
    out.sort(key=lambda f: (f["mu0"], len(f["ls"]), f["ls"], f["ns"], f["mus"]))
    return out


# ------------------------------------------------------------------ writer
def pace_functions(functions, crad):
    """Rescale C-tilde functions to PACE's harmonics and move rank 1 onto its radial basis.

    Parameters
    ----------
    functions : list of dict
        From :func:`ctilde_functions` (orthonormal harmonics, skace's ``R_n``).
    crad : ndarray of shape (n_elements, n_elements, n_radial, degree)
        From :func:`tabulate_radial`.

    Returns
    -------
    list of dict
        The same functions with ``ctildes`` divided by ``(4 pi)^(rank / 2)``
        (PACE's ``Y_0^0 = 1``); the rank-1 functions of each (central,
        neighbour) element pair are replaced by one function per ``g_k``, as
        PACE's rank-1 terms use ``g_k`` rather than ``R_n``.

    Examples
    --------
    >>> import numpy as np
    >>> from skace.export import pace_functions
    >>> f = dict(mu0=0, mus=[0], ns=[1], ls=[0], ms_combs=[(0,)], ctildes=[2.0])
    >>> out = pace_functions([f], np.array([[[[1.0, 0.5]]]]))
    >>> [(g["ns"], round(float(g["ctildes"][0] * np.sqrt(4 * np.pi)), 12)) for g in out]
    [([1], 2.0), ([2], 1.0)]
    """
    out, rank1 = [], {}
    for f in functions:
        scale = (4.0 * np.pi) ** (-0.5 * len(f["ls"]))
        if len(f["ls"]) == 1:
            key = (f["mu0"], f["mus"][0])
            w = rank1.setdefault(key, np.zeros(crad.shape[3]))
            w += scale * f["ctildes"][0] * crad[f["mu0"], f["mus"][0], f["ns"][0] - 1]
        else:
            out.append(dict(f, ctildes=[scale * c for c in f["ctildes"]]))
    for (mu0, mu), w in sorted(rank1.items()):
        out += [dict(mu0=mu0, mus=[mu], ns=[k + 1], ls=[0], ms_combs=[(0,)], ctildes=[float(c)])
                for k, c in enumerate(w) if c != 0.0]
    out.sort(key=lambda f: (f["mu0"], len(f["ls"]), f["ls"], f["ns"], f["mus"]))
    return out


def _floats(values):
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _ints(values):
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def _write_yace(path, elements, e0, rcut, radial, functions):
    n_el = len(elements)
    crad = radial.crad
    n_radial, degree = crad.shape[2], crad.shape[3]
    lmax = max((l for f in functions for l in f["ls"]), default=0)
    lines = [
        "# ML-PACE potential written by skace: linear ACE, F(rho) = rho, radial functions as ChebPow + crad",
        "elements: [" + ", ".join(elements) + "]",
        f"E0: {_floats(e0)}",
        f"deltaSplineBins: {radial.spline_step!r}",
        "embeddings:",
    ]
    for mu in range(n_el):
        lines.append(f"  {mu}: {{ndensity: 1, FS_parameters: [1, 1], npoti: FinnisSinclairShiftedScaled, "
                     "rho_core_cutoff: 100000, drho_core_cutoff: 250}")
    lines.append("bonds:")
    for a in range(n_el):
        for b in range(n_el):
            # the same R_n for every l, as in skace
            coeffs = "[" + ", ".join(
                "[" + ", ".join([_floats(crad[a, b, n])] * (lmax + 1)) + "]" for n in range(n_radial)) + "]"
            lines.append(
                f"  [{a}, {b}]: {{nradmax: {n_radial}, lmax: {lmax}, nradbasemax: {degree}, radbasename: ChebPow, "
                f"radparameters: [1.0], radcoefficients: {coeffs}, prehc: 0, lambdahc: 1, rcut: {float(rcut)!r}, "
                f"dcut: 0.01, rcut_in: 0, dcut_in: 0, inner_cutoff_type: distance}}"
            )
    lines.append("functions:")
    for mu in range(n_el):
        mine = [f for f in functions if f["mu0"] == mu]
        lines.append(f"  {mu}:" + ("" if mine else " []"))
        for f in mine:
            lines.append(
                f"    - {{mu0: {mu}, rank: {len(f['ls'])}, ndensity: 1, num_ms_combs: {len(f['ms_combs'])}, "
                f"mus: {_ints(f['mus'])}, ns: {_ints(f['ns'])}, ls: {_ints(f['ls'])}, "
                f"ms_combs: {_ints([m for ms in f['ms_combs'] for m in ms])}, ctildes: {_floats(f['ctildes'])}}}"
            )
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def export_yace(model, path, degree=None, spline_step=1e-3, fit_tol=1e-11, max_degree=256):
    """Write a fitted :class:`skace.ACERegressor` as an ML-PACE potential file (yace).

    Parameters
    ----------
    model : ACERegressor
        A fitted model.
    path : str or path-like
        Output file; use the ``.yace`` suffix (PACE picks the reader by it).
    degree : int, optional
        Polynomial degree of the radial projection (PACE's ``nradbase``);
        None: chosen to reach ``fit_tol`` (see :func:`tabulate_radial`).
    spline_step : float, default=1e-3
        PACE's ``deltaSplineBins`` in Å: the spacing of the Hermite table it
        evaluates radial functions from. Its error dominates the forces'
        (about ``spline_step**3``); 1e-3 is PACE's default, 2.5e-4 gives
        forces within ~1e-8 eV/Å at four times the table memory.
    fit_tol : float, default=1e-11
        Target error of the polynomial projection.
    max_degree : int, default=256
        Largest degree the automatic choice may take.

    Returns
    -------
    YaceExport
        The file name, the radial tables with their measured errors, and the
        size of the C-tilde basis.

    Raises
    ------
    ValueError
        If something in the model has no PACE equivalent (named in the
        message), or a parameter is invalid.

    Examples
    --------
    >>> from skace import ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> from skace.export import export_yace
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=5,
    ...                                     radial_basis="bessel")).fit(load_sample(n=20))
    >>> info = export_yace(model, "ethanol.yace")  # doctest: +SKIP
    >>> info.radial.max_abs_error < 1e-9  # doctest: +SKIP
    True

    In LAMMPS (ML-PACE package; element order as in the data file's types)::

        pair_style pace
        pair_coeff * * ethanol.yace C H O
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "coef_")
    d = model.descriptor_
    radial = tabulate_radial(d, degree=degree, spline_step=spline_step, fit_tol=fit_tol, max_degree=max_degree)
    functions = pace_functions(ctilde_functions(d.basis_, model.coef_), radial.crad)
    e0 = [float(model.e0_[el]) for el in d.elements_]
    path = str(path)
    _write_yace(path, d.elements_, e0, d.cutoff, radial, functions)
    return YaceExport(path=path, radial=radial, n_functions=len(functions),
                      n_ms_combs=sum(len(f["ms_combs"]) for f in functions))
