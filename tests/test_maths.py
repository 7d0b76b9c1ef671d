"""Tests of the mathematical building blocks: harmonics, Clebsch-Gordan, couplings, radial functions, basis."""

import itertools
from functools import lru_cache

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from scipy.special import sph_harm_y

import reference as ref
from skace.kernels.harmonics import harmonic_prefactors, real_harmonics_with_gradient
from skace.kernels.radial import radial_with_derivative
from skace.maths.basis import ACEBasis
from skace.maths.coupling import (
    clebsch_gordan,
    complex_invariants,
    coupling_paths,
    real_invariants,
    symmetric_invariants,
)
from skace.maths.radial import DEFAULT_SHAPE, FAMILIES, family_code, pair_parameters
from skace.maths.spherical_harmonics import real_spherical_harmonics_reference

L_MAX = 8


# ======================================================================
# real spherical harmonics
# ======================================================================
def kernel_harmonics(v, l_max=L_MAX):
    pre = harmonic_prefactors(l_max)
    n = (l_max + 1) ** 2
    Y, dY = np.empty(n), np.empty((n, 3))
    real_harmonics_with_gradient(np.ascontiguousarray(v, dtype=float), l_max, pre, Y, dY)
    return Y, dY


def _test_vectors():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 3)) * rng.uniform(0.2, 5.0, size=(40, 1))
    poles = np.array(
        [
            [0, 0, 1],
            [0, 0, -1],
            [0, 0, 2.7],
            [0, 0, -0.3],
            [1e-9, 0, 1],
            [0, -1e-9, -1],
            [1e-6, 2e-6, 1],
            [-3e-7, 1e-7, -2],
            [1, 0, 0],
            [-1, 0, 0],
            [0, 1, 0],
            [0, -1, 0],
            [1, 1, 1],
        ],
        dtype=float,
    )
    return np.concatenate([v, poles])


VECTORS = _test_vectors()


def test_harmonic_prefactors_formula():
    from math import factorial, pi, sqrt

    pre = harmonic_prefactors(L_MAX)
    for l in range(L_MAX + 1):
        for m in range(l + 1):
            expected = sqrt((2 * l + 1) / (4 * pi) * factorial(l - m) / factorial(l + m))
            if m > 0:
                expected *= sqrt(2.0)
            assert pre[l, m] == pytest.approx(expected, rel=1e-13)


def _near_pole(v):
    return np.hypot(v[0], v[1]) < 1e-4 * np.linalg.norm(v)


def test_harmonics_match_scipy_reference():
    """Kernel vs skace's scipy reference (generic directions; that reference uses
    ``arccos(z / r)``, which loses the polar angle within ~1e-8 of the poles)."""
    generic = np.array([v for v in VECTORS if not _near_pole(v)])
    Y_ref = real_spherical_harmonics_reference(L_MAX, generic)
    for k, v in enumerate(generic):
        Y, _ = kernel_harmonics(v)
        np.testing.assert_allclose(Y, Y_ref[k], rtol=0, atol=1e-12, err_msg=f"vector {v}")


def test_harmonics_match_pole_safe_reference_everywhere():
    """Kernel vs an independent scipy evaluation with theta = atan2(rho, z), poles included."""
    Y_ref = ref.real_harmonics_accurate(L_MAX, VECTORS)
    for k, v in enumerate(VECTORS):
        Y, _ = kernel_harmonics(v)
        np.testing.assert_allclose(Y, Y_ref[k], rtol=0, atol=1e-12, err_msg=f"vector {v}")


def test_pole_safe_reference_agrees_with_skace_reference():
    rng = np.random.default_rng(5)
    v = rng.normal(size=(30, 3))
    np.testing.assert_allclose(
        ref.real_harmonics_accurate(L_MAX, v), real_spherical_harmonics_reference(L_MAX, v), atol=1e-12
    )


def test_harmonics_at_exact_poles():
    """At +-z only the m = 0 harmonics survive: Y_l0(+-z) = (+-1)^l sqrt((2l+1)/4pi)."""
    for sign in (1.0, -1.0):
        Y, dY = kernel_harmonics(np.array([0.0, 0.0, 2.0 * sign]))
        assert np.all(np.isfinite(Y)) and np.all(np.isfinite(dY))
        for l in range(L_MAX + 1):
            for m in range(-l, l + 1):
                expected = sign**l * np.sqrt((2 * l + 1) / (4 * np.pi)) if m == 0 else 0.0
                assert Y[l * l + l + m] == pytest.approx(expected, abs=1e-13)


def test_harmonics_gradient_finite_differences():
    for v in VECTORS:
        Y, dY = kernel_harmonics(v)
        h = 1e-6 * np.linalg.norm(v)
        fd = np.empty_like(dY)
        for d in range(3):
            e = np.zeros(3)
            e[d] = h
            fd[:, d] = (kernel_harmonics(v + e)[0] - kernel_harmonics(v - e)[0]) / (2 * h)
        scale = 1.0 + np.abs(dY).max()
        np.testing.assert_allclose(dY, fd, rtol=0, atol=2e-7 * scale, err_msg=f"vector {v}")


def test_harmonics_gradient_vs_scipy_finite_differences_away_from_poles():
    """Gradient checked against the independent scipy functions (not near the poles)."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(15, 3))
    v = v[np.abs(v[:, 2]) / np.linalg.norm(v, axis=1) < 0.9]
    h = 1e-6
    for x in v:
        _, dY = kernel_harmonics(x)
        fd = np.empty_like(dY)
        for d in range(3):
            e = np.zeros(3)
            e[d] = h
            Yp = real_spherical_harmonics_reference(L_MAX, (x + e)[None])[0]
            Ym = real_spherical_harmonics_reference(L_MAX, (x - e)[None])[0]
            fd[:, d] = (Yp - Ym) / (2 * h)
        np.testing.assert_allclose(dY, fd, rtol=0, atol=1e-6 * (1 + np.abs(dY).max()))


def test_harmonics_gradient_is_tangential_and_scale_invariant():
    for v in VECTORS:
        Y, dY = kernel_harmonics(v)
        # Y depends on the direction only: r . grad Y = 0, Y(c r) = Y(r), grad Y(c r) = grad Y(r) / c
        np.testing.assert_allclose(dY @ v, 0.0, atol=1e-10 * (1 + np.abs(dY).max()) * np.linalg.norm(v))
        Y2, dY2 = kernel_harmonics(3.5 * v)
        np.testing.assert_allclose(Y2, Y, atol=1e-12)
        np.testing.assert_allclose(dY2 * 3.5, dY, atol=1e-10 * (1 + np.abs(dY).max()))


def test_harmonics_parity():
    for v in VECTORS[:20]:
        Y, _ = kernel_harmonics(v)
        Ym, _ = kernel_harmonics(-v)
        sign = np.concatenate([np.full(2 * l + 1, (-1.0) ** l) for l in range(L_MAX + 1)])
        np.testing.assert_allclose(Ym, sign * Y, atol=1e-12)


def test_harmonics_orthonormal_on_sphere():
    """Exact product quadrature (Gauss-Legendre in cos(theta) x uniform phi)."""
    x, w = np.polynomial.legendre.leggauss(L_MAX + 2)
    n_phi = 2 * L_MAX + 3
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    G = np.zeros(((L_MAX + 1) ** 2,) * 2)
    for z, wz in zip(x, w):
        s = np.sqrt(1 - z * z)
        for p in phi:
            Y, _ = kernel_harmonics(np.array([s * np.cos(p), s * np.sin(p), z]))
            G += wz * (2 * np.pi / n_phi) * np.outer(Y, Y)
    np.testing.assert_allclose(G, np.eye(len(G)), atol=1e-12)


# ======================================================================
# Clebsch-Gordan coefficients
# ======================================================================
@pytest.mark.parametrize("l1,l2", [(0, 0), (0, 3), (1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (4, 2), (4, 4)])
def test_clebsch_gordan_unitarity(l1, l2):
    """The matrix (m1, m2) x (L, M) is orthogonal: both orthogonality relations hold."""
    cols = []
    for L in range(abs(l1 - l2), l1 + l2 + 1):
        cg = clebsch_gordan(l1, l2, L)
        cols.append(cg.reshape((2 * l1 + 1) * (2 * l2 + 1), 2 * L + 1))
    U = np.concatenate(cols, axis=1)
    assert U.shape[0] == U.shape[1]
    np.testing.assert_allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-13)
    np.testing.assert_allclose(U @ U.T, np.eye(U.shape[0]), atol=1e-13)
    # selection rules: zero unless M = m1 + m2; zero outside the triangle
    for L in range(abs(l1 - l2), l1 + l2 + 1):
        cg = clebsch_gordan(l1, l2, L)
        for m1, m2, M in itertools.product(range(-l1, l1 + 1), range(-l2, l2 + 1), range(-L, L + 1)):
            if M != m1 + m2:
                assert cg[m1 + l1, m2 + l2, M + L] == 0.0
    assert not np.any(clebsch_gordan(l1, l2, l1 + l2 + 1))


def test_clebsch_gordan_known_values():
    s = np.sqrt
    assert clebsch_gordan(1, 1, 0)[1, 1, 0] == pytest.approx(-1 / s(3))  # <1 0 1 0|0 0>
    assert clebsch_gordan(1, 1, 0)[2, 0, 0] == pytest.approx(1 / s(3))  # <1 1 1 -1|0 0>
    assert clebsch_gordan(1, 1, 2)[1, 1, 2] == pytest.approx(s(2 / 3))  # <1 0 1 0|2 0>
    assert clebsch_gordan(1, 1, 1)[2, 1, 2] == pytest.approx(1 / s(2))  # <1 1 1 0|1 1>
    assert clebsch_gordan(1, 1, 1)[1, 2, 2] == pytest.approx(-1 / s(2))  # <1 0 1 1|1 1>
    assert clebsch_gordan(2, 1, 3)[4, 2, 6] == pytest.approx(1.0)  # stretched state
    assert clebsch_gordan(2, 2, 0)[4, 0, 0] == pytest.approx(1 / s(5))  # <2 2 2 -2|0 0>
    assert clebsch_gordan(2, 2, 0)[3, 1, 0] == pytest.approx(-1 / s(5))  # <2 1 2 -1|0 0>


@pytest.mark.parametrize("l1,l2", [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3)])
def test_clebsch_gordan_product_of_harmonics(l1, l2):
    """Y_l1^m1 Y_l2^m2 = sum_L sqrt((2l1+1)(2l2+1)/(4pi(2L+1))) <l1 0 l2 0|L 0> <l1 m1 l2 m2|L M> Y_L^M.

    Checked with scipy's complex harmonics (Condon-Shortley), an independent source.
    """
    rng = np.random.default_rng(2)
    theta = np.arccos(rng.uniform(-1, 1, 7))
    phi = rng.uniform(-np.pi, np.pi, 7)
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            lhs = sph_harm_y(l1, m1, theta, phi) * sph_harm_y(l2, m2, theta, phi)
            rhs = np.zeros_like(lhs)
            M = m1 + m2
            for L in range(abs(l1 - l2), l1 + l2 + 1):
                if abs(M) > L:
                    continue
                c0 = clebsch_gordan(l1, l2, L)[l1, l2, L]
                c = clebsch_gordan(l1, l2, L)[m1 + l1, m2 + l2, M + L]
                pre = np.sqrt((2 * l1 + 1) * (2 * l2 + 1) / (4 * np.pi * (2 * L + 1)))
                rhs = rhs + pre * c0 * c * sph_harm_y(L, M, theta, phi)
            np.testing.assert_allclose(lhs, rhs, atol=1e-12)


# ======================================================================
# couplings
# ======================================================================
def random_orthogonal(seed, proper=True):
    Q = Rotation.random(random_state=seed).as_matrix()
    if not proper:
        Q = Q @ np.diag([1.0, -1.0, 1.0]) if seed % 2 else -Q
    return Q


def wigner_real(l, Q, rng=None):
    """Real Wigner matrix ``D`` with ``Y_l(Q r) = D Y_l(r)``, fitted numerically from the reference harmonics."""
    rng = np.random.default_rng(12345) if rng is None else rng
    pts = rng.normal(size=(6 * (2 * l + 1) + 10, 3))
    Y = real_spherical_harmonics_reference(l, pts)[:, l * l:]
    Yr = real_spherical_harmonics_reference(l, pts @ Q.T)[:, l * l:]
    Dt, *_ = np.linalg.lstsq(Y, Yr, rcond=None)
    D = Dt.T
    np.testing.assert_allclose(Y @ D.T, Yr, atol=1e-11)  # exact fit: it is a representation
    np.testing.assert_allclose(D @ D.T, np.eye(2 * l + 1), atol=1e-11)
    return D


def rotate_tensor(C, ls, Ds):
    T = C.reshape([2 * l + 1 for l in ls])
    for t in range(len(ls)):
        T = np.moveaxis(np.tensordot(T, Ds[t], axes=([t], [1])), -1, t)
    return T.reshape(-1)


COUPLING_CASES = [
    (0,),
    (1, 1),
    (2, 2),
    (0, 0, 0),
    (1, 1, 2),
    (1, 2, 3),
    (2, 2, 2),
    (3, 3, 2),
    (1, 1, 1, 1),
    (1, 1, 2, 2),
    (1, 2, 2, 3),
    (2, 2, 2, 2),
    (1, 1, 1, 1, 2),
    (1, 1, 1, 1, 0),
]


@lru_cache(maxsize=None)
def _character_count(ls):
    return character_count_uncached(ls)


def character_count(ls):
    return _character_count(tuple(sorted(ls)))


def character_count_uncached(ls):
    """Number of SO(3) invariants in the tensor product of the irreps ``ls`` (Weyl character formula)."""
    w_nodes, w_weights = np.polynomial.legendre.leggauss(200)
    om = 0.5 * np.pi * (w_nodes + 1)
    w = 0.5 * np.pi * w_weights
    chi = np.ones_like(om)
    for l in ls:
        chi = chi * np.sin((l + 0.5) * om) / np.sin(0.5 * om)
    val = (2 / np.pi) * np.sum(w * chi * np.sin(0.5 * om) ** 2)
    assert abs(val - round(val)) < 1e-8
    return int(round(val))


@pytest.mark.parametrize("ls", COUPLING_CASES)
def test_real_invariants_are_o3_invariant_and_orthonormal(ls):
    C = real_invariants(ls)
    assert C.shape[1] == np.prod([2 * l + 1 for l in ls])
    assert C.shape[0] >= 1
    np.testing.assert_allclose(C @ C.T, np.eye(len(C)), atol=1e-12)
    for seed, proper in [(0, True), (1, True), (2, False), (3, False)]:
        Q = random_orthogonal(seed, proper)
        Ds = {l: wigner_real(l, Q) for l in set(ls)}
        for row in C:
            np.testing.assert_allclose(rotate_tensor(row, ls, [Ds[l] for l in ls]), row, atol=1e-11)


@pytest.mark.parametrize("ls", COUPLING_CASES)
def test_invariant_functions_of_rotated_vectors(ls):
    """f(r_1..r_nu) = sum_m C[m] prod_t Y_{l_t m_t}(r_t) is unchanged by rotations and reflections."""
    rng = np.random.default_rng(3)
    C = real_invariants(ls)
    vecs = rng.normal(size=(len(ls), 3))

    def f(vs):
        Ys = [real_spherical_harmonics_reference(l, v[None])[0, l * l:] for l, v in zip(ls, vs)]
        P = Ys[0]
        for Y in Ys[1:]:
            P = np.multiply.outer(P, Y)
        return C @ P.reshape(-1)

    base = f(vecs)
    for seed, proper in [(4, True), (5, False), (6, False)]:
        Q = random_orthogonal(seed, proper)
        np.testing.assert_allclose(f(vecs @ Q.T), base, atol=1e-12)


@pytest.mark.parametrize("ls", [ls for ls in COUPLING_CASES] + [(0, 1, 1, 2), (3, 3, 3, 3), (1, 3, 4), (2, 3, 3, 2)])
def test_number_of_invariants_character_formula(ls):
    assert len(real_invariants(ls)) == character_count(ls)
    assert len(complex_invariants(ls)) == character_count(ls)
    assert len(coupling_paths(ls)) == character_count(ls)


def _groups_to_swaps(groups):
    return [(s, t) for s, t in itertools.combinations(range(len(groups)), 2) if groups[s] == groups[t]]


def nullspace_dimension(ls, groups):
    """Dimension of {T : T invariant under O(3) and under swaps of equal factors}, numerically.

    A generic proper rotation and a generic improper one generate a dense
    subgroup of O(3), so their common fixed space is the invariant space.
    """
    d = int(np.prod([2 * l + 1 for l in ls]))
    M = np.zeros((d, d))
    for seed, proper in [(10, True), (11, False)]:
        Q = random_orthogonal(seed, proper)
        Ds = {l: wigner_real(l, Q) for l in set(ls)}
        G = np.ones((1, 1))
        for l in ls:
            G = np.kron(G, Ds[l])
        M += (G - np.eye(d)).T @ (G - np.eye(d))
    shape = [2 * l + 1 for l in ls]
    for s, t in _groups_to_swaps(groups):
        perm = list(range(len(ls)))
        perm[s], perm[t] = t, s
        P = np.transpose(np.eye(d).reshape(shape + [d]), perm + [len(ls)]).reshape(d, d)
        M += (P - np.eye(d)).T @ (P - np.eye(d))
    ev = np.linalg.eigvalsh(M)
    return int(np.sum(ev < 1e-9 * ev.max()))


@pytest.mark.parametrize(
    "ls,groups",
    [
        ((1, 1, 2), (0, 1, 2)),
        ((1, 1, 2), (0, 0, 2)),
        ((2, 2, 2), (0, 0, 0)),
        ((2, 2, 2), (0, 0, 2)),
        ((2, 2, 2, 2), (0, 1, 2, 3)),
        ((2, 2, 2, 2), (0, 0, 2, 2)),
        ((2, 2, 2, 2), (0, 0, 0, 3)),
        ((2, 2, 2, 2), (0, 0, 0, 0)),
        ((1, 1, 1, 1, 2), (0, 1, 2, 3, 4)),
        ((1, 1, 1, 1, 2), (0, 0, 2, 2, 4)),
        ((1, 1, 1, 1, 2), (0, 0, 0, 0, 4)),
        ((1, 1, 1, 1), (0, 0, 0, 0)),
        ((1, 1, 1, 1), (0, 0, 2, 2)),
    ],
)
def test_symmetric_invariants_count_symmetry_invariance(ls, groups):
    C = symmetric_invariants(ls, groups)
    assert len(C) == nullspace_dimension(ls, groups)
    if len(C) == 0:
        return
    np.testing.assert_allclose(C @ C.T, np.eye(len(C)), atol=1e-12)
    shape = [2 * l + 1 for l in ls]
    for s, t in _groups_to_swaps(groups):
        perm = list(range(len(ls)))
        perm[s], perm[t] = t, s
        for row in C:
            T = row.reshape(shape)
            np.testing.assert_allclose(np.transpose(T, perm), T, atol=1e-12)
    for seed, proper in [(20, True), (21, False)]:
        Q = random_orthogonal(seed, proper)
        Ds = {l: wigner_real(l, Q) for l in set(ls)}
        for row in C:
            np.testing.assert_allclose(rotate_tensor(row, ls, [Ds[l] for l in ls]), row, atol=1e-11)


def test_distinct_factor_count_nullspace():
    for ls in [(1, 1, 2), (2, 2, 2, 2), (1, 1, 1, 1, 2)]:
        n = nullspace_dimension(ls, tuple(range(len(ls))))
        assert n == character_count(ls) == len(real_invariants(ls))


# ======================================================================
# radial functions
# ======================================================================
def kernel_radial(family, params, r, n_max):
    R, dR = np.empty((len(r), n_max)), np.empty((len(r), n_max))
    for k, x in enumerate(r):
        radial_with_derivative(family_code(family), params, float(x), n_max, R[k], dR[k])
    return R, dR


RADIAL_CASES = [
    ("agnesi", 0.0, None),
    ("agnesi", 0.6, 1.7),
    ("bessel", 0.0, None),
    ("bessel", 0.7, None),
    ("gaussian", 0.0, None),
    ("gaussian", 0.5, 0.7),
    ("chebexp", 0.0, None),
    ("chebexp", 0.0, 2.0),
]


@pytest.mark.parametrize("family,r_in,shape", RADIAL_CASES)
@pytest.mark.parametrize("n_max", [1, 2, 7])
def test_radial_values_and_derivatives(family, r_in, shape, n_max):
    rc = 4.2
    table = pair_parameters(["H", "O"], family, rc, inner_cutoff=r_in, shape=shape, n_radial=n_max)
    r0 = ref.covalent_r0("H", "O")
    # below r_in too (atoms closer than it), except where Agnesi's transform leaves its range
    lo = max(r_in, 0.05) if family == "agnesi" else 0.05
    r = np.linspace(lo, rc - 1e-3, 97)
    R, dR = kernel_radial(family, table[0, 1], r, n_max)
    kw = dict(inner_cutoff=r_in, r0=r0, shape=shape)
    R_ref = ref.radial_reference(family, r, n_max, rc, **kw)
    dR_ref = ref.radial_derivative_reference(family, r, n_max, rc, **kw)
    scale = max(np.abs(R_ref).max(), 1e-3)
    np.testing.assert_allclose(R, R_ref, rtol=1e-11, atol=1e-12 * scale)
    dscale = max(np.abs(dR_ref).max(), 1e-3)
    np.testing.assert_allclose(dR, dR_ref, rtol=1e-6, atol=1e-7 * dscale)
    assert np.abs(R).max() > 1e-3  # not trivially zero


def test_bessel_at_and_around_its_inner_radius():
    """At r = r_in, sin(k s) / s takes its limit k; around it values and derivatives stay smooth."""
    rc, r_in, n_max = 4.2, 0.7, 8
    table = pair_parameters(["H", "O"], "bessel", rc, inner_cutoff=r_in, n_radial=n_max)
    R, dR = kernel_radial("bessel", table[0, 1], np.array([r_in]), n_max)
    L = rc - r_in
    k = np.arange(1, n_max + 1) * np.pi / L
    np.testing.assert_allclose(R[0], np.sqrt(2 / L) * k * ref.polynomial_envelope(r_in / rc), rtol=1e-14)
    for h in [1e-9, 3e-6, 1e-3, 1e-2, 2e-2]:  # both sides of the series / quotient switch (|k s| = 0.01)
        r = np.array([r_in - h, r_in + h])
        R, dR = kernel_radial("bessel", table[0, 1], r, n_max)
        R_ref = ref.radial_reference("bessel", r, n_max, rc, inner_cutoff=r_in)
        dR_ref = ref.radial_derivative_reference("bessel", r, n_max, rc, inner_cutoff=r_in)
        np.testing.assert_allclose(R, R_ref, rtol=1e-12)
        np.testing.assert_allclose(dR, dR_ref, rtol=1e-5, atol=1e-6 * np.abs(dR_ref).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_radial_vanishes_smoothly_at_cutoff(family):
    rc = 3.7
    table = pair_parameters(["C", "C"], family, rc, n_radial=8)
    n_max = 8
    R, dR = kernel_radial(family, table[0, 0], np.array([rc, rc + 1e-12, rc + 0.3, 10.0]), n_max)
    assert np.all(R == 0.0) and np.all(dR == 0.0)
    scale_R = np.abs(kernel_radial(family, table[0, 0], np.linspace(0.3, rc, 50), n_max)[0]).max()
    scale_dR = np.abs(kernel_radial(family, table[0, 0], np.linspace(0.3, rc, 50), n_max)[1]).max()
    prev = None
    for h in [1e-2, 1e-3, 1e-4, 1e-5]:
        R, dR = kernel_radial(family, table[0, 0], np.array([rc - h]), n_max)
        # value at least quadratic and derivative at least linear in the distance to the cutoff
        assert np.abs(R).max() <= 50 * scale_R * (h / rc) ** 2, (h, np.abs(R).max())
        assert np.abs(dR).max() <= 50 * scale_dR * (h / rc), (h, np.abs(dR).max())
        if prev is not None:
            assert np.abs(dR).max() <= 0.2 * prev  # decreasing with h
        prev = np.abs(dR).max()


def test_pair_parameters_table():
    from skace.kernels import radial as kr

    t = pair_parameters(["H", "C", "O"], "agnesi", 5.0, inner_cutoff=0.4)
    assert t.shape[:2] == (3, 3)
    for a, za in enumerate(["H", "C", "O"]):
        for b, zb in enumerate(["H", "C", "O"]):
            assert t[a, b, kr.P_R0] == pytest.approx(ref.covalent_r0(za, zb))
            assert t[a, b, kr.P_RCUT] == 5.0
            assert t[a, b, kr.P_RIN] == 0.4
            assert t[a, b, kr.P_SHAPE] == DEFAULT_SHAPE["agnesi"]
    t = pair_parameters(["H", "C"], "chebexp", 5.0, r0=1.3, shape=3.0)
    assert np.all(t[:, :, kr.P_R0] == 1.3) and np.all(t[:, :, kr.P_SHAPE] == 3.0)
    with pytest.raises(ValueError, match="radial_basis"):
        pair_parameters(["H"], "nope", 5.0)
    with pytest.raises(ValueError, match="inner_cutoff"):
        pair_parameters(["H"], "agnesi", 5.0, inner_cutoff=5.0)


# ======================================================================
# basis enumeration
# ======================================================================
def brute_force_multisets(n_el, correlation_order, bounds, l_weight, max_l=None):
    D = max(bounds.values())
    one = [
        (e, n, l)
        for e in range(n_el)
        for l in range(0, int(D / l_weight) + 1)
        for n in range(1, int(D) + 1)
        if n + l_weight * l <= D + 1e-9 and (max_l is None or l <= max_l)
    ]
    out = set()
    for nu in range(1, correlation_order + 1):
        for combo in itertools.combinations_with_replacement(one, nu):
            deg = sum(n + l_weight * l for _, n, l in combo)
            if deg > bounds[nu] + 1e-9 or sum(l for *_, l in combo) % 2:
                continue
            if character_count([l for *_, l in combo]) == 0:
                continue
            key = tuple(sorted(combo))
            ls = tuple(l for *_, l in sorted(combo, key=lambda v: (v[2], v[1], v[0])))
            srt = tuple(sorted(combo, key=lambda v: (v[2], v[1], v[0])))
            groups = tuple(srt.index(f) for f in srt)
            if len(symmetric_invariants(ls, groups)) == 0:
                continue
            out.add(key)
    return out


@pytest.mark.parametrize(
    "n_el,nu,max_degree,l_weight,max_l",
    [
        (1, 3, 6, 1.0, None),
        (2, 3, 5, 1.0, None),
        (2, 4, [5, 5, 4, 5], 0.75, None),
        (3, 2, 6, 1.5, 1),
        (1, 5, {1: 3, 2: 4, 3: 5, 4: 5, 5: 6}, 1.0, None),
    ],
)
def test_basis_enumeration_complete(n_el, nu, max_degree, l_weight, max_l):
    elements = ["H", "C", "O"][:n_el]
    basis = ACEBasis(elements, nu, max_degree, l_weight, max_l)
    bounds = {k: float(max_degree if np.ndim(max_degree) == 0 and not isinstance(max_degree, dict)
                       else (max_degree[k] if isinstance(max_degree, dict) else max_degree[k - 1]))
              for k in range(1, nu + 1)}
    expected = brute_force_multisets(n_el, nu, bounds, l_weight, max_l)
    for center in range(n_el):
        feats = [f for f in basis.features if f["center"] == center]
        got = {tuple(sorted(f["factors"])) for f in feats}
        assert got == expected
        # every multiset has as many features as independent symmetric couplings
        for key in expected:
            rows = [f for f in feats if tuple(sorted(f["factors"])) == key]
            assert sorted(f["coupling"] for f in rows) == list(range(len(basis._coupling(rows[0]["factors"]))))
            for f in rows:
                assert f["degree"] == pytest.approx(sum(n + l_weight * l for _, n, l in f["factors"]))
                assert f["degree"] <= bounds[len(f["factors"])] + 1e-9
                assert sum(l for *_, l in f["factors"]) % 2 == 0
    centers = [f["center"] for f in basis.features]
    assert centers == sorted(centers)


def test_basis_bad_parameters():
    with pytest.raises(ValueError):
        ACEBasis(["H"], 0, 5)
    with pytest.raises(ValueError):
        ACEBasis(["H"], 2, 5, l_weight=0)
    with pytest.raises(ValueError, match="max_degree"):
        ACEBasis(["H"], 3, [5, 5])
    with pytest.raises(ValueError, match="max_degree"):
        ACEBasis(["H"], 3, {1: 5, 2: 5})


def test_reference_feature_sum_loops_agree():
    """The dense outer-product sum of the reference equals the literal loop over m-tuples."""
    rng = np.random.default_rng(7)
    A = rng.normal(size=(2, 3, 3, 5))
    for factors in [((0, 1, 1), (1, 2, 1), (0, 1, 2)), ((0, 1, 2), (0, 1, 2), (1, 3, 2), (1, 3, 2))]:
        ls = tuple(l for *_, l in factors)
        for C in real_invariants(ls):
            a = ref.feature_reference(A, factors, C)
            b = ref.feature_reference_loops(A, factors, C)
            assert a == pytest.approx(b, rel=1e-12, abs=1e-12)


# numba caches
def test_stale_numba_caches_are_dropped(tmp_path, monkeypatch):
    import skace.kernels as kernels

    cache = tmp_path / "kernels" / "__pycache__"
    cache.mkdir(parents=True)
    stamp = cache / "skace-kernels.sha256"
    monkeypatch.setattr(kernels, "_PACKAGE", tmp_path)
    monkeypatch.setattr(kernels, "_STAMP", stamp)
    compiled = [cache / "ace.compute_features-1.py311.nbi", cache / "ace.compute_features-1.py311.1.nbc"]
    other = cache / "ace.cpython-311.pyc"
    for path in compiled + [other]:
        path.write_bytes(b"x")
    stamp.write_text("built from other sources")
    assert kernels.drop_stale_numba_caches() == 2
    assert not any(p.exists() for p in compiled) and other.exists()
    assert stamp.read_text() == kernels.kernel_sources_digest()
    compiled[0].write_bytes(b"x")  # caches built from the current sources stay
    assert kernels.drop_stale_numba_caches() == 0 and compiled[0].exists()


def test_stale_caches_under_numba_cache_dir_are_dropped(tmp_path, monkeypatch):
    import numba
    from numba.core.caching import _CacheLocator

    import skace.kernels as kernels

    package = tmp_path / "site" / "skace"
    (package / "kernels").mkdir(parents=True)
    (package / "kernels" / "radial.py").write_text("")
    cache_dir = tmp_path / "numba-cache"
    # where numba itself puts the caches of package/kernels/radial.py under NUMBA_CACHE_DIR
    folder = cache_dir / _CacheLocator.get_suitable_cache_subpath(str(package / "kernels" / "radial.py"))
    folder.mkdir(parents=True)
    (folder / "radial.f-1.py311.nbi").write_bytes(b"x")
    monkeypatch.setattr(kernels, "_PACKAGE", package)
    monkeypatch.setattr(kernels, "_STAMP", package / "kernels" / "__pycache__" / "skace-kernels.sha256")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(cache_dir))
    assert kernels.drop_stale_numba_caches() == 1
    assert not (folder / "radial.f-1.py311.nbi").exists()


def test_read_only_install_keeps_its_stamp_in_the_user_cache(tmp_path, monkeypatch):
    import skace.kernels as kernels

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the stamp's folder cannot be created: as in a read-only install
    monkeypatch.setattr(kernels, "_PACKAGE", tmp_path / "site" / "skace")
    monkeypatch.setattr(kernels, "_STAMP", blocked / "__pycache__" / "skace-kernels.sha256")
    monkeypatch.setattr(kernels, "_user_cache_dir", lambda: tmp_path / "user-cache")
    kernels.drop_stale_numba_caches()
    stamps = list((tmp_path / "user-cache").glob("skace-kernels-*.sha256"))
    assert len(stamps) == 1 and stamps[0].read_text() == kernels.kernel_sources_digest()
    compiled = tmp_path / "site" / "skace" / "kernels" / "__pycache__" / "ace.f-1.py311.nbi"
    compiled.parent.mkdir(parents=True)
    compiled.write_bytes(b"x")
    assert kernels.drop_stale_numba_caches() == 0 and compiled.exists()  # current: nothing recompiles
