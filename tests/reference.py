"""A slow, independent, pure-numpy reference of the ACE feature pipeline.

Nothing here uses the numba kernels or the compiled (AA / CSR) arrays of
``skace``; it only borrows

* the scipy-based real spherical harmonics
  :func:`skace.maths.spherical_harmonics.real_spherical_harmonics_reference`,
* the coupling tensors ``ACEBasis._coupling(factors)[coupling]`` and the list
  ``basis_.features`` (which features exist), and
* the documented hyper-parameters of a fitted ``ACETransformer``.

Radial functions are re-implemented from the definitions in the docstrings of
:mod:`skace.maths.radial` / :mod:`skace.kernels.radial`, neighbours are found
by brute force over explicit periodic images, the atomic base is pooled by an
explicit loop over neighbours, and every feature is the explicit sum over all
m-tuples ``B = sum_m C[m] prod_t A[z_t, n_t, l_t, m_t]``.
"""

import itertools
from functools import reduce

import numpy as np
from ase.data import atomic_numbers, covalent_radii
from numpy.polynomial import chebyshev

from skace.maths.spherical_harmonics import real_spherical_harmonics_reference

#: Default family shape parameters, as documented in skace.maths.radial.
DEFAULT_SHAPE = {"agnesi": 1.0, "bessel": 0.0, "gaussian": 1.0, "chebexp": 5.0}


# -------------------------------------------------------------- harmonics
def real_harmonics_accurate(l_max, vectors):
    """Real harmonics via scipy with a pole-safe polar angle ``atan2(rho, z)``.

    Independent of skace: the real combinations are written out from the
    definition in :mod:`skace.maths.spherical_harmonics`:
    ``Y_{l,m} = sqrt(2) (-1)^m Re Y_l^m`` for ``m > 0``,
    ``sqrt(2) (-1)^m Im Y_l^{|m|}`` for ``m < 0`` and ``Y_l^0`` for ``m = 0``.
    """
    from scipy.special import sph_harm_y

    v = np.atleast_2d(np.asarray(vectors, dtype=float))
    theta = np.arctan2(np.hypot(v[:, 0], v[:, 1]), v[:, 2])
    phi = np.arctan2(v[:, 1], v[:, 0])
    out = np.empty((len(v), (l_max + 1) ** 2))
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            Yc = sph_harm_y(l, abs(m), theta, phi)
            if m > 0:
                val = np.sqrt(2.0) * (-1) ** m * Yc.real
            elif m < 0:
                val = np.sqrt(2.0) * (-1) ** m * Yc.imag
            else:
                val = Yc.real
            out[:, l * l + l + m] = val
    return out


# ----------------------------------------------------------------- radial
def polynomial_envelope(x):
    """``u(x) = 1 - 28 x^6 + 48 x^7 - 21 x^8``."""
    return 1.0 - 28.0 * x**6 + 48.0 * x**7 - 21.0 * x**8


def agnesi_transform(r, r0, a, q=4.0, p=2.0):
    """``y(r) = 1 / (1 + a s^q / (1 + s^(q-p)))`` with ``s = r / r0``."""
    s = np.asarray(r, dtype=float) / r0
    return 1.0 / (1.0 + a * s**q / (1.0 + s ** (q - p)))


def _chebyshev_T(k, t):
    """``T_k(t)`` for any real ``t`` (numpy's Chebyshev series)."""
    c = np.zeros(k + 1)
    c[k] = 1.0
    return chebyshev.chebval(t, c)


def radial_reference(family, r, n_max, cutoff, inner_cutoff=0.0, r0=1.0, shape=None, q=4.0, p=2.0):
    """Radial functions ``R_n(r)``, ``n = 1 .. n_max``, from the documented definitions.

    Returns
    -------
    ndarray of shape (len(r), n_max); zero for ``r >= cutoff``.
    """
    r = np.atleast_1d(np.asarray(r, dtype=float))
    shape = DEFAULT_SHAPE[family] if shape is None else float(shape)
    rc, r_in = float(cutoff), float(inner_cutoff)
    out = np.zeros((len(r), n_max))
    inside = r < rc
    ri = r[inside]
    if family == "agnesi":
        y = agnesi_transform(ri, r0, shape, q, p)
        y_in = agnesi_transform(r_in, r0, shape, q, p)
        y_cut = agnesi_transform(rc, r0, shape, q, p)
        # linear map with t(r_in) = 1 and t(r_cut) = -1
        t = -1.0 + 2.0 * (y - y_cut) / (y_in - y_cut)
        env = (1.0 + t) ** 2 / 4.0
        vals = [_chebyshev_T(n - 1, t) * env for n in range(1, n_max + 1)]
    elif family == "chebexp":
        lam = shape
        x = 1.0 - 2.0 * (np.exp(lam * (1.0 - ri / rc)) - 1.0) / (np.exp(lam) - 1.0)
        env = (1.0 - x) ** 2 / 4.0
        vals = [_chebyshev_T(n - 1, x) * env for n in range(1, n_max + 1)]
    elif family == "bessel":
        u = polynomial_envelope(ri / rc)
        L, si = rc - r_in, ri - r_in  # sines spanning [r_in, r_cut]
        vals = [np.sqrt(2.0 / L) * np.sin(n * np.pi * si / L) / si * u for n in range(1, n_max + 1)]
    elif family == "gaussian":
        u = polynomial_envelope(ri / rc)
        # n_max centres evenly on [r_in, r_cut]; width = shape * spacing
        spacing = (rc - r_in) / max(n_max - 1, 1)
        sigma = shape * spacing
        centres = r_in + spacing * np.arange(n_max)
        vals = [np.exp(-((ri - mu) ** 2) / (2.0 * sigma**2)) * u for mu in centres]
    else:
        raise ValueError(family)
    out[inside] = np.stack(vals, axis=1)
    return out


def radial_derivative_reference(family, r, n_max, cutoff, h=1e-6, **kw):
    """``dR_n/dr`` by central finite differences of :func:`radial_reference`."""
    r = np.atleast_1d(np.asarray(r, dtype=float))
    plus = radial_reference(family, r + h, n_max, cutoff, **kw)
    minus = radial_reference(family, r - h, n_max, cutoff, **kw)
    return (plus - minus) / (2.0 * h)


def covalent_r0(a, b):
    return covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]


# ------------------------------------------------------------- neighbours
def neighbours_bruteforce(atoms, cutoff):
    """For every atom ``i``, the list of ``(j, r_j + S - r_i)`` with distance < cutoff.

    Periodic images are enumerated explicitly over a generous range of lattice
    shifts along periodic directions (non-periodic directions get no shift).
    """
    pos = atoms.get_positions()
    cell = np.array(atoms.cell.array, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    full = cell.copy()  # zero rows (non-periodic directions) replaced for the plane spacing only
    for d in range(3):
        if np.linalg.norm(full[d]) == 0:
            n = np.cross(full[(d + 1) % 3], full[(d + 2) % 3])
            full[d] = n / np.linalg.norm(n) if np.linalg.norm(n) else np.eye(3)[d]
    ranges = []
    for d in range(3):
        if pbc[d]:
            # number of shifts needed: cutoff over the distance between lattice planes
            # (plus the largest in-cell offset), computed generously.
            others = [full[(d + 1) % 3], full[(d + 2) % 3]]
            normal = np.cross(*others)
            spacing = abs(np.dot(full[d], normal)) / np.linalg.norm(normal)
            n = int(np.ceil((cutoff + 2 * np.abs(pos).max() + np.abs(cell).sum()) / spacing)) + 1
            ranges.append(range(-n, n + 1))
        else:
            ranges.append(range(0, 1))
    shifts = np.array([np.array(k) @ cell for k in itertools.product(*ranges)])
    out = []
    for i in range(len(atoms)):
        pairs = []
        for j in range(len(atoms)):
            D = pos[j] + shifts - pos[i]  # every image of atom j, seen from atom i
            dist = np.linalg.norm(D, axis=1)
            for s in np.flatnonzero(dist < cutoff):
                if j == i and dist[s] < 1e-12:
                    continue  # the atom itself
                pairs.append((j, D[s]))
        out.append(pairs)
    return out


# ------------------------------------------------------------ atomic base
def transformer_settings(t):
    """The hyper-parameters a fitted ``ACETransformer`` documents, as a dict."""
    return dict(
        elements=list(t.elements_),
        family=t.radial_basis,
        cutoff=float(t.cutoff),
        inner_cutoff=float(t.inner_cutoff),
        r0=t.r0,
        shape=t.radial_shape,
        features=list(t.basis_.features),
        coupling=t.basis_._coupling,
    )


def atomic_base_reference(atoms, settings, n_max, l_max, neighbours=None, absolute=False):
    """``A[i][z, n - 1, l, m + l] = sum_{j of element z} R_n(r_ij) Y_lm(r_ij / |r_ij|)``.

    With ``absolute=True``, the sum of ``|R_n| |Y_lm|`` instead: the natural
    magnitude against which rounding errors of ``A`` are measured.

    Returns
    -------
    ndarray of shape (n_atoms, n_elements, n_max, l_max + 1, 2 l_max + 1)
    """
    elements = settings["elements"]
    symbols = atoms.get_chemical_symbols()
    if neighbours is None:
        neighbours = neighbours_bruteforce(atoms, settings["cutoff"])
    n_el = len(elements)
    A = np.zeros((len(atoms), n_el, n_max, l_max + 1, 2 * l_max + 1))
    for i, pairs in enumerate(neighbours):
        if not pairs:
            continue
        # radial functions and harmonics of all pairs of atom i
        Dall = np.array([D for _, D in pairs])
        Yall = real_spherical_harmonics_reference(l_max, Dall)
        for q, (j, D) in enumerate(pairs):
            z = elements.index(symbols[j])
            r = np.linalg.norm(D)
            r0 = settings["r0"]
            r0 = covalent_r0(symbols[i], symbols[j]) if r0 == "covalent" else float(r0)
            R = radial_reference(
                settings["family"], r, n_max, settings["cutoff"], settings["inner_cutoff"], r0, settings["shape"]
            )[0]
            Y = Yall[q]
            if absolute:
                R, Y = np.abs(R), np.abs(Y)
            for n in range(n_max):
                for l in range(l_max + 1):
                    for m in range(-l, l + 1):
                        A[i, z, n, l, m + l] += R[n] * Y[l * l + l + m]
    return A


# --------------------------------------------------------------- features
def feature_reference(A_i, factors, C):
    """``sum_m C[m] prod_t A[z_t, n_t, l_t, m_t]`` over all m-tuples (dense outer product)."""
    vecs = [A_i[z, n - 1, l, : 2 * l + 1] for z, n, l in factors]
    C = np.asarray(C).reshape([2 * l + 1 for _, _, l in factors])
    P = reduce(np.multiply.outer, vecs)
    return float(np.sum(C * P))


def feature_reference_loops(A_i, factors, C):
    """The same sum written as an explicit loop over m-tuples (for cross-checking)."""
    ls = [l for _, _, l in factors]
    C = np.asarray(C).reshape([2 * l + 1 for l in ls])
    total = 0.0
    for ms in itertools.product(*[range(2 * l + 1) for l in ls]):
        prod = C[ms]
        for (z, n, l), m in zip(factors, ms):
            prod *= A_i[z, n - 1, l, m]
        total += prod
    return total


def per_atom_features_reference(transformer, structures, absolute=False):
    """Per-atom features in the layout of ``transform`` with ``per_atom=True``.

    Column ``k`` is ``transformer.basis_.features[k]``; an atom's row is zero
    outside the columns whose ``center`` is its own element.

    With ``absolute=True``, ``sum_m |C[m]| prod_t sum_j |R Y|`` instead: an
    upper bound of the sum of the absolute values of all the terms that make a
    feature, i.e. the scale of its unavoidable rounding error (features that
    vanish by symmetry are tiny but not exactly zero).
    """
    s = transformer_settings(transformer)
    feats = s["features"]
    n_max = max((n for f in feats for _, n, _ in f["factors"]), default=1)
    l_max = max((l for f in feats for _, _, l in f["factors"]), default=0)
    rows = []
    for atoms in structures:
        A = atomic_base_reference(atoms, s, n_max, l_max, absolute=absolute)
        symbols = atoms.get_chemical_symbols()
        out = np.zeros((len(atoms), len(feats)))
        for i in range(len(atoms)):
            center = s["elements"].index(symbols[i])
            for k, f in enumerate(feats):
                if f["center"] != center:
                    continue
                C = s["coupling"](f["factors"])[f["coupling"]]
                if absolute:
                    C = np.abs(C)
                out[i, k] = feature_reference(A[i], f["factors"], C)
        rows.append(out)
    return np.concatenate(rows)


def structure_features_reference(transformer, structures, absolute=False):
    """Per-structure sums of :func:`per_atom_features_reference`."""
    per_atom = per_atom_features_reference(transformer, structures, absolute)
    bounds = np.cumsum([0] + [len(a) for a in structures])
    return np.stack([per_atom[a:b].sum(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
