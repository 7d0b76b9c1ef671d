"""Tests of ``ACETransformer``: features against the slow reference, symmetries, gradients,
smoothness, completeness, body order, input validation and the scikit-learn interface."""

import itertools
import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation
from sklearn.base import clone

import reference as ref
from skace import ACETransformer
from skace.kernels.neighbours import OVERLAP_DISTANCE

FAMILIES = ["agnesi", "bessel", "gaussian", "chebexp"]
CUTOFF = 3.5

#: Small bases per correlation order, each with l > 0 factors at the top order.
ORDER_SETTINGS = {
    1: dict(max_degree=6, l_weight=1.0),
    2: dict(max_degree=6, l_weight=1.0),
    3: dict(max_degree=[4, 5, 6], l_weight=0.75),
    4: dict(max_degree=[3, 3, 4, 6], l_weight=0.5),
    5: dict(max_degree=[2, 2, 3, 4, 6], l_weight=0.5),
}


# ======================================================================
# structures
# ======================================================================
def random_positions(rng, n, sampler, min_dist, distance=None):
    """Rejection sampling of ``n`` points with pairwise distances >= min_dist."""
    pos = []
    for _ in range(100000):
        p = sampler(rng)
        if all((distance or (lambda a, b: np.linalg.norm(a - b)))(p, q) >= min_dist for q in pos):
            pos.append(p)
            if len(pos) == n:
                return np.array(pos)
    raise RuntimeError("could not place atoms")


def random_cluster(seed, pool=("H", "C", "O"), n_atoms=None, box=3.2, min_dist=0.8):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 11)) if n_atoms is None else n_atoms
    pos = random_positions(rng, n, lambda g: g.uniform(0.0, box, 3), min_dist)
    symbols = list(pool) + list(rng.choice(pool, n - len(pool)))
    rng.shuffle(symbols)
    return Atoms(symbols=symbols[:n], positions=pos)


def _mic_distance(cell, pbc):
    from ase.geometry import find_mic

    def dist(a, b):
        _, d = find_mic((a - b)[None], cell, pbc)
        return d[0]

    return dist


def random_cell_structure(seed, symbols, cell, pbc, min_dist=1.0, z_extent=None):
    rng = np.random.default_rng(seed)
    cell = np.asarray(cell, dtype=float)

    def sampler(g):
        f = g.uniform(0, 1, 3)
        p = f @ cell
        if z_extent is not None:
            p[2] = g.uniform(0, z_extent)
        return p

    pos = random_positions(rng, len(symbols), sampler, min_dist, _mic_distance(cell, pbc))
    return Atoms(symbols=symbols, positions=pos, cell=cell, pbc=pbc)


MOLECULES = [random_cluster(s) for s in (1, 2, 3)]


def periodic_structures():
    out = []
    # a triclinic cell smaller than the cutoff: many images of every atom, and of the atom itself
    small = Atoms(
        "NaCl",
        scaled_positions=[[0.1, 0.2, 0.05], [0.55, 0.45, 0.6]],
        cell=[[2.6, 0.0, 0.0], [0.4, 2.7, 0.0], [0.3, -0.2, 2.5]],
        pbc=True,
    )
    out.append(small)
    # a skewed 5-atom cell, with atoms outside the cell (not wrapped)
    a = random_cell_structure(11, ["Na", "Na", "Cl", "Cl", "Cl"], [[4.1, 0, 0], [0.8, 3.9, 0], [-0.5, 0.6, 4.3]], True)
    a.positions += np.array([5.0, -7.3, 2.1])
    out.append(a)
    # mixed periodicity: a slab periodic in x and y
    out.append(
        random_cell_structure(12, ["Na", "Cl", "Cl", "Na", "Cl"], [[3.3, 0, 0], [1.0, 3.1, 0], [0, 0, 9.0]],
                              [True, True, False], z_extent=5.0)
    )
    # mixed periodicity with a zero lattice vector along the non-periodic direction
    out.append(
        random_cell_structure(13, ["Cl", "Na", "Na"], [[2.9, 0, 0], [0, 3.4, 0], [0, 0, 0]],
                              [True, True, False], z_extent=4.0)
    )
    # a wire periodic along one skewed axis only
    out.append(
        random_cell_structure(14, ["Na", "Cl", "Cl"], [[0.5, 0.3, 2.8], [6, 0, 0], [0, 6, 0]],
                              [True, False, False], z_extent=None)
    )
    return out


PERIODIC = periodic_structures()


def fitted(elements, nu=3, family="agnesi", **kw):
    settings = dict(ORDER_SETTINGS[nu])
    settings.update(kw)
    settings.setdefault("cutoff", CUTOFF)
    return ACETransformer(elements=elements, correlation_order=nu, radial_basis=family, **settings).fit(
        MOLECULES if "H" in elements else PERIODIC
    )


def assert_features_close(got, expected, rtol=1e-10, what="", scale=None):
    """Element-wise check ``|got - expected| <= rtol * scale``.

    ``scale`` defaults to the largest magnitude of each column (features
    differ by orders of magnitude); pass the reference's absolute bound
    (:func:`natural_scale`) where some features vanish by symmetry. Where the
    scale is exactly zero the values must be exactly equal.
    """
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if scale is None:
        axes = tuple(range(expected.ndim - 1))
        scale = np.abs(expected).max(axis=axes, keepdims=True)
        scale = np.maximum(scale, 1e-14 * max(np.abs(expected).max(), 1e-300))
    scale = np.broadcast_to(scale, got.shape)
    diff = np.abs(got - expected)
    assert np.all(diff[scale == 0] == 0), f"{what}: non-zero where the reference scale is exactly zero"
    err = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= rtol, f"{what}: max scaled error {err.max():.3g} at {worst}"


def gradient_scale(G, S):
    """Per-column scale of a gradient block: its largest entry, floored by the
    features' natural scale ``S`` (per 1 Å) where a column vanishes by symmetry."""
    return np.maximum(np.abs(G).max(axis=(0, 1)), np.abs(S).reshape(-1, S.shape[-1]).max(axis=0))


def natural_scale(t, structures, per_atom=True):
    """Reference bound ``sum_m |C| prod |A|`` with ``|A| = sum_j |R Y|`` (per atom or per structure)."""
    if per_atom:
        return ref.per_atom_features_reference(t, structures, absolute=True)
    return ref.structure_features_reference(t, structures, absolute=True)


def random_orthogonal(seed, proper):
    Q = Rotation.random(random_state=seed).as_matrix()
    return Q if proper else Q @ np.diag([1.0, 1.0, -1.0])


def transformed(atoms, Q=None, shift=None):
    new = atoms.copy()
    if Q is not None:
        new.positions = new.positions @ Q.T
        new.cell = np.asarray(atoms.cell.array) @ Q.T
    if shift is not None:
        new.positions = new.positions + shift
    return new


# ======================================================================
# against the slow reference
# ======================================================================
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("nu", [1, 2, 3, 4, 5])
def test_molecules_match_reference(family, nu):
    t = fitted(["H", "C", "O"], nu, family, per_atom=True)
    X = MOLECULES
    got = t.transform(X)
    expected = ref.per_atom_features_reference(t, X)
    assert np.count_nonzero(np.abs(expected).max(axis=0) > 0) > 0.8 * t.n_features_out_
    assert_features_close(got, expected, 1e-10, f"{family} nu={nu}", natural_scale(t, X))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("nu", [1, 2, 3, 4, 5])
def test_periodic_match_reference(family, nu):
    t = fitted(["Na", "Cl"], nu, family, per_atom=True)
    X = PERIODIC
    got = t.transform(X)
    expected = ref.per_atom_features_reference(t, X)
    assert np.count_nonzero(np.abs(expected).max(axis=0) > 0) > 0.8 * t.n_features_out_
    assert_features_close(got, expected, 1e-10, f"{family} nu={nu}", natural_scale(t, X))


@pytest.mark.parametrize(
    "family,kw",
    [
        ("agnesi", dict(inner_cutoff=0.5, r0=1.2)),
        ("agnesi", dict(radial_shape=2.5, max_l=1)),
        ("gaussian", dict(inner_cutoff=0.3, radial_shape=0.6)),
        ("chebexp", dict(radial_shape=2.0, r0=1.0)),
        ("bessel", dict(cutoff=4.1)),
    ],
)
def test_hyperparameters_match_reference(family, kw):
    elements = ["O", "H", "C"]  # not in atomic-number order: columns follow the given order
    t = fitted(elements, 3, family, per_atom=True, **kw)
    assert t.elements_ == elements
    got = t.transform(MOLECULES)
    assert_features_close(got, ref.per_atom_features_reference(t, MOLECULES), 1e-10, str(kw),
                          natural_scale(t, MOLECULES))


def test_structure_sums_match_reference():
    t = fitted(["Na", "Cl"], 3)
    assert_features_close(t.transform(PERIODIC), ref.structure_features_reference(t, PERIODIC), 1e-10,
                          scale=natural_scale(t, PERIODIC, per_atom=False))


def test_cutoff_larger_than_cell_matches_reference():
    X = [
        Atoms("Na", positions=[[0.3, 0.1, 0.2]], cell=[[2.2, 0, 0], [0.3, 2.4, 0], [0, 0.2, 2.3]], pbc=True),
        Atoms("NaCl", positions=[[0, 0, 0], [1.2, 1.1, 0.9]], cell=2.4 * np.eye(3), pbc=[True, False, True]),
    ]
    t = ACETransformer(["Na", "Cl"], cutoff=6.0, correlation_order=2, max_degree=5, l_weight=1.0, per_atom=True).fit(X)
    got = t.transform(X)
    assert np.abs(got[0]).max() > 0  # a single atom sees its own images
    assert_features_close(got, ref.per_atom_features_reference(t, X), 1e-10, scale=natural_scale(t, X))


def test_large_molecule_uses_binned_search_correctly():
    """Non-periodic structures above the small-molecule size go through the binned neighbour search."""
    rng = np.random.default_rng(40)
    pos = random_positions(rng, 300, lambda g: g.uniform(0, 14.0, 3), 0.9)
    big = Atoms(symbols=list(rng.choice(["H", "C"], 300)), positions=pos)
    t = ACETransformer(["H", "C"], cutoff=3.0, correlation_order=2, max_degree=4, l_weight=1.0, per_atom=True).fit([big])
    assert_features_close(t.transform([big]), ref.per_atom_features_reference(t, [big]), 1e-10,
                          scale=natural_scale(t, [big]))


# ======================================================================
# symmetries
# ======================================================================
@pytest.fixture(scope="module")
def mol_transformer():
    return fitted(["H", "C", "O"], 4, "agnesi")


@pytest.fixture(scope="module")
def mol_scales(mol_transformer):
    """Natural scales of the structure and per-atom features of MOLECULES."""
    S = natural_scale(mol_transformer, MOLECULES)
    bounds = np.cumsum([0] + [len(a) for a in MOLECULES])
    return np.stack([S[a:b].sum(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]), S


@pytest.fixture(scope="module")
def cell_transformer():
    return fitted(["Na", "Cl"], 4, "bessel")


@pytest.fixture(scope="module")
def cell_scale(cell_transformer):
    return natural_scale(cell_transformer, PERIODIC)


ORTHOGONAL = [(0, True), (1, True), (2, False), (3, False)]


@pytest.mark.parametrize("seed,proper", ORTHOGONAL + [("inversion", False)])
def test_molecules_rotation_reflection_translation_invariance(mol_transformer, mol_scales, seed, proper):
    t = mol_transformer
    Q = -np.eye(3) if seed == "inversion" else random_orthogonal(seed, proper)
    shift = np.array([1.7, -3.1, 0.4])
    X2 = [transformed(a, Q, shift) for a in MOLECULES]
    assert_features_close(t.transform(X2), t.transform(MOLECULES), 1e-11, scale=mol_scales[0])
    pa = clone(t).set_params(per_atom=True).fit(MOLECULES)
    assert_features_close(pa.transform(X2), pa.transform(MOLECULES), 1e-11, scale=mol_scales[1])
    # gradients are covariant: dF/dr' = Q dF/dr
    G, G2 = t.transform_gradient(MOLECULES), t.transform_gradient(X2)
    assert_features_close(G2, np.einsum("ab,jbf->jaf", Q, G), 1e-10, scale=gradient_scale(G, mol_scales[0]))


def test_molecules_permutation(mol_transformer):
    rng = np.random.default_rng(5)
    t = mol_transformer
    pa = clone(t).set_params(per_atom=True).fit(MOLECULES)
    for atoms in MOLECULES:
        perm = rng.permutation(len(atoms))
        permuted = atoms[perm]
        assert_features_close(t.transform([permuted]), t.transform([atoms]), 1e-12)
        assert_features_close(pa.transform([permuted]), pa.transform([atoms])[perm], 1e-12)
        assert_features_close(t.transform_gradient([permuted]), t.transform_gradient([atoms])[perm], 1e-12)
        # exchanging two like atoms changes nothing at all (their rows swap)
        sym = np.array(atoms.get_chemical_symbols())
        i, j = np.flatnonzero(sym == sym[0])[:2]
        swapped = atoms.copy()
        swapped.positions[[i, j]] = atoms.positions[[j, i]]
        expected = pa.transform([atoms])
        expected[[i, j]] = expected[[j, i]]
        assert_features_close(pa.transform([swapped]), expected, 1e-12)


@pytest.mark.parametrize("seed,proper", ORTHOGONAL)
def test_periodic_rotation_invariance(cell_transformer, cell_scale, seed, proper):
    Q = random_orthogonal(seed, proper)
    pa = clone(cell_transformer).set_params(per_atom=True).fit(PERIODIC)
    X2 = [transformed(a, Q) for a in PERIODIC]
    assert_features_close(pa.transform(X2), pa.transform(PERIODIC), 1e-11, scale=cell_scale)
    G, G2 = cell_transformer.transform_gradient(PERIODIC), cell_transformer.transform_gradient(X2)
    assert_features_close(G2, np.einsum("ab,jbf->jaf", Q, G), 1e-10, scale=gradient_scale(G, cell_scale))


def test_periodic_translation_and_wrap(cell_transformer, cell_scale):
    pa = clone(cell_transformer).set_params(per_atom=True).fit(PERIODIC)
    base = pa.transform(PERIODIC)
    for shift in [np.array([0.37, -1.9, 2.2]), np.array([-13.1, 7.7, 0.05])]:
        X2 = []
        for a in PERIODIC:
            b = transformed(a, shift=shift)
            b.wrap()  # along periodic directions only
            X2.append(b)
        assert_features_close(pa.transform(X2), base, 1e-11, scale=cell_scale)
        # lattice translations of single atoms change nothing either
        X3 = []
        for a in PERIODIC:
            b = a.copy()
            k = np.where(a.pbc, [2, -1, 3], 0)
            b.positions[0] += k @ np.asarray(a.cell.array)
            X3.append(b)
        assert_features_close(pa.transform(X3), base, 1e-11, scale=cell_scale)


def test_periodic_equivalent_cells(cell_transformer, cell_scale):
    """A different (unimodular) choice of lattice vectors describes the same crystal."""
    pa = clone(cell_transformer).set_params(per_atom=True).fit(PERIODIC)
    M = np.array([[1, 1, 0], [0, 1, 0], [-1, 2, 1]])
    assert round(abs(np.linalg.det(M))) == 1
    full = [k for k, a in enumerate(PERIODIC) if a.pbc.all()]
    X = [PERIODIC[k] for k in full]
    rows = np.concatenate([np.arange(len(a)) + sum(len(b) for b in PERIODIC[:k]) for k, a in zip(full, X)])
    X2 = []
    for a in X:
        b = a.copy()
        b.set_cell(M @ np.asarray(a.cell.array), scale_atoms=False)
        X2.append(b)
    assert_features_close(pa.transform(X2), pa.transform(X), 1e-11, scale=cell_scale[rows])


@pytest.mark.parametrize(
    "kind",
    ["rocksalt", "alloy", "small_triclinic"],
)
def test_supercell(cell_transformer, kind):
    rng = np.random.default_rng(8)
    if kind == "rocksalt":
        atoms = bulk("NaCl", "rocksalt", a=4.0, cubic=True)
    elif kind == "alloy":
        atoms = bulk("Cl", "fcc", a=4.4, cubic=True)
        atoms.symbols[[0, 3]] = "Na"
    else:
        atoms = PERIODIC[0].copy()
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    sup = atoms.repeat((2, 2, 2))
    n = len(atoms)
    pa = clone(cell_transformer).set_params(per_atom=True).fit(PERIODIC)
    f, fs = pa.transform([atoms]), pa.transform([sup])
    S = natural_scale(pa, [atoms])
    assert_features_close(fs, np.tile(f, (8, 1)), 1e-11, scale=np.tile(S, (8, 1)))
    t = cell_transformer
    assert_features_close(t.transform([sup]), 8 * t.transform([atoms]), 1e-11, scale=8 * S.sum(axis=0))
    g, gs = t.transform_gradient([atoms]), t.transform_gradient([sup])
    assert_features_close(gs, np.tile(g, (8, 1, 1)), 1e-10, scale=gradient_scale(g, S.sum(axis=0)))
    assert gs.shape[0] == 8 * n


# ======================================================================
# gradients
# ======================================================================
def finite_difference_gradient(t, structures, h=1e-5):
    displaced = []
    for s, atoms in enumerate(structures):
        for j in range(len(atoms)):
            for d in range(3):
                for sign in (1, -1):
                    b = atoms.copy()
                    b.positions[j, d] += sign * h
                    displaced.append(b)
    F = t.transform(displaced).reshape(-1, 3, 2, t.n_features_out_)
    return (F[:, :, 0] - F[:, :, 1]) / (2 * h)


def assert_gradient_close(G, fd, what=""):
    scale = np.abs(fd).max(axis=(0, 1), keepdims=True) + 1e-8 * np.abs(fd).max()
    err = np.abs(G - fd) / scale
    assert err.max() < 1e-6, f"{what}: gradient vs finite differences, max scaled error {err.max():.3g}"


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_molecules_finite_differences(family, gradient_route):
    t = fitted(["H", "C", "O"], 4, family)
    X = MOLECULES[:2]
    G = t.transform_gradient(X)
    assert G.shape == (sum(len(a) for a in X), 3, t.n_features_out_)
    assert_gradient_close(G, finite_difference_gradient(t, X), family)
    assert_no_rigid_motion_component(G, X)


def assert_no_rigid_motion_component(G, structures):
    """The structure sums are invariant, so each structure's gradient rows lie in its internal
    displacements: no component along a translation (or, without periodicity, a rotation).
    The Gram assembly drops those rows (``skace.fitting.internal_rows``) on this ground."""
    from skace.structures import internal_displacements

    s = 0
    for a in structures:
        rows = G[s:s + len(a)].reshape(3 * len(a), -1)
        Q = internal_displacements(a)
        assert Q.shape[1] == 3 * len(a) - (3 if a.pbc.any() else 6)
        np.testing.assert_allclose(rows - Q @ (Q.T @ rows), 0.0, atol=1e-10 * np.abs(G).max())
        s += len(a)


@pytest.mark.parametrize("nu", [1, 2, 3, 4, 5])
def test_gradient_many_atoms_of_one_element_every_order(nu, gradient_route):
    # more atoms of one element than one pass of the kernel takes (ATOMS_PER_PASS), at every
    # correlation order: below, at and above the four factors the kernel writes out
    from skace.kernels.ace import ATOMS_PER_PASS

    X = [random_cluster(11, pool=("H", "C"), n_atoms=2 * ATOMS_PER_PASS + 3, box=4.2)]
    assert max(X[0].get_chemical_symbols().count(e) for e in "HC") > ATOMS_PER_PASS
    t = ACETransformer(elements=["H", "C"], correlation_order=nu, cutoff=CUTOFF, **ORDER_SETTINGS[nu]).fit(X)
    assert_gradient_close(t.transform_gradient(X), finite_difference_gradient(t, X), f"order {nu}")
    # the kernel's plan is rebuilt on demand, not saved with the estimator
    assert "_jacobian_plan_cache" in t.__dict__
    assert "_jacobian_plan_cache" not in pickle.loads(pickle.dumps(t)).__dict__


@pytest.mark.parametrize("family", ["agnesi", "gaussian"])
def test_gradient_periodic_finite_differences(family, gradient_route):
    t = fitted(["Na", "Cl"], 4, family)
    G = t.transform_gradient(PERIODIC)
    assert_gradient_close(G, finite_difference_gradient(t, PERIODIC), family)
    assert_no_rigid_motion_component(G, PERIODIC)


def test_gradient_routes_agree_and_each_basis_takes_the_cheaper():
    """Forward mode and the Jacobian route give the same gradients and virials (to rounding);
    a small low-l basis takes forward mode, a high-l one (l_weight 0.25, as ACERegressor()'s
    default) the Jacobian, whose non-zeros are then fewer than products plus entries."""
    import skace.maths.basis as basis

    X = MOLECULES[:2] + PERIODIC
    for kw, forward in ((dict(max_degree=8, l_weight=1.5), True),
                        (dict(max_degree=[16, 8, 6, 5], l_weight=0.25, radial_basis="bessel"), False)):
        t = ACETransformer(elements=["H", "C", "O", "Na", "Cl"], cutoff=CUTOFF, correlation_order=4, **kw).fit(X)
        assert t._gradient_route()[0] == forward
        routes = []
        for above in (-1.0, np.inf):  # forced forward, forced Jacobian
            basis.FORWARD_ABOVE, saved = above, basis.FORWARD_ABOVE
            try:
                routes.append((t.transform_gradient(X), t.transform_virial(X)))
            finally:
                basis.FORWARD_ABOVE = saved
        for a, b in zip(*routes):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * np.abs(b).max())


def test_gradient_with_per_atom_and_iter_gradients():
    t = fitted(["H", "C", "O"], 3)
    G = t.transform_gradient(MOLECULES)
    G2 = clone(t).set_params(per_atom=True).fit(MOLECULES).transform_gradient(MOLECULES)
    np.testing.assert_array_equal(G, G2)
    parts = list(t.iter_gradients(MOLECULES, max_memory=0.05))
    assert len(parts) > 1
    starts = [sl.start for sl, _ in parts]
    assert starts == sorted(starts) and parts[0][0].start == 0 and parts[-1][0].stop == len(MOLECULES)
    np.testing.assert_allclose(np.concatenate([g for _, g in parts]), G, rtol=0, atol=1e-13 * np.abs(G).max())


# ======================================================================
# smoothness at the cutoff
# ======================================================================
@pytest.mark.parametrize("family", FAMILIES)
def test_smooth_at_cutoff(family):
    rc = CUTOFF
    u = np.array([0.48, -0.6, 0.64])
    u /= np.linalg.norm(u)

    def structure(d):
        # atom 2 moves radially away from atom 0 only; it is always out of reach of atom 1
        return Atoms("COH", positions=[[0, 0, 0], -1.1 * u + [0, 0.3, 0], d * u])

    t = fitted(["H", "C", "O"], 4, family)
    pa = clone(t).set_params(per_atom=True).fit(MOLECULES)
    eps = 1e-7
    inside, outside = structure(rc - eps), structure(rc + eps)
    assert np.linalg.norm(inside.positions[2] - inside.positions[1]) > rc + 0.5
    P = pa.transform([inside, outside])  # rows 0-2: inside, rows 3-5: outside
    far = pa.transform([structure(rc + 1.0)])
    scale = np.abs(far).max()
    # the distant atom's contribution to atom 0 vanishes continuously ...
    assert np.abs(P[0] - far[0]).max() < 1e-9 * scale
    assert np.abs(P[3] - far[0]).max() == 0.0
    assert np.abs(P[1] - P[4]).max() == 0.0  # atom 1 never sees atom 2
    # ... and atom 2 itself becomes isolated: its features go to zero
    assert np.abs(P[5]).max() == 0.0
    assert np.abs(P[2]).max() < 1e-9 * scale
    Gi, Go = t.transform_gradient([inside]), t.transform_gradient([outside])
    gscale = np.abs(t.transform_gradient([structure(rc - 0.5)])).max()
    assert np.abs(Gi - Go).max() < 1e-5 * gscale
    assert np.abs(Go[2]).max() == 0.0
    assert np.abs(Gi[2]).max() < 1e-5 * gscale
    # and the size of the jump shrinks with the gap (continuity, not just smallness)
    jumps = []
    for gap in [1e-2, 1e-3, 1e-4]:
        a, b = structure(rc - gap), structure(rc + gap)
        jumps.append(np.abs(t.transform_gradient([a]) - t.transform_gradient([b])).max())
    assert jumps[1] < 0.2 * jumps[0] and jumps[2] < 0.2 * jumps[1], jumps


# ======================================================================
# linear independence (completeness of the evaluated basis)
# ======================================================================
def random_environments(seed, center, pool, n_env, rc, min_dist=0.8):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_env):
        k = int(rng.integers(3, 11))

        def sampler(g):
            v = g.normal(size=3)
            return v / np.linalg.norm(v) * g.uniform(min_dist, rc * 0.98)

        pos = random_positions(rng, k, sampler, min_dist)
        pos = pos[np.linalg.norm(pos, axis=1) >= min_dist]
        out.append(Atoms([center] + list(rng.choice(pool, len(pos))), positions=np.vstack([[0, 0, 0], pos])))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_linear_independence(family):
    elements = ["H", "O"]
    t = ACETransformer(elements, cutoff=CUTOFF, correlation_order=3, max_degree=[6, 6, 5], l_weight=1.0,
                       radial_basis=family, per_atom=True).fit(MOLECULES[:1] + [Atoms("O")])
    for c, center in enumerate(elements):
        cols = np.flatnonzero([f["center"] == c for f in t.basis_.features])
        X = random_environments(100 + c, center, elements, 3 * len(cols), CUTOFF)
        F = t.transform(X)
        rows = np.cumsum([0] + [len(a) for a in X])[:-1]
        M = F[rows][:, cols]
        assert M.shape[0] > M.shape[1]
        M = M / np.linalg.norm(M, axis=0)
        s = np.linalg.svd(M, compute_uv=False)
        rank = int(np.sum(s > 1e-10 * s[0]))
        cond = s[0] / s[-1]
        print(f"{family} center {center}: {M.shape[1]} features, condition number {cond:.3g}")
        assert rank == M.shape[1], f"rank {rank} < {M.shape[1]} (condition number {cond:.3g})"


# ======================================================================
# body order
# ======================================================================
def inclusion_exclusion(t, atoms):
    n = len(atoms)
    subsets = [list(c) for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
    F = t.transform([atoms[s] for s in subsets])
    total = np.zeros(t.n_features_out_)
    for s, f in zip(subsets, F):
        total += (-1) ** (n - len(s)) * f
    return total, np.abs(F).sum(axis=0)


@pytest.mark.parametrize("nu", [1, 2, 3, 4])
def test_true_body_order(nu):
    settings = {1: dict(max_degree=6), 2: dict(max_degree=6), 3: dict(max_degree=[4, 5, 6], l_weight=0.75),
                4: dict(max_degree=[3, 3, 4, 6], l_weight=0.5)}[nu]
    t = ACETransformer(["H", "C", "O"], cutoff=CUTOFF, correlation_order=nu, **settings).fit(MOLECULES)
    rng = np.random.default_rng(30 + nu)

    def cluster(n):
        def sampler(g):
            v = g.normal(size=3)
            return v / np.linalg.norm(v) * g.uniform(0, 1.6)  # all pairs well within the cutoff

        pos = random_positions(rng, n, sampler, 0.8)
        return Atoms(list(rng.choice(["H", "C", "O"], n)), positions=pos)

    top = np.array([len(f["factors"]) == nu for f in t.basis_.features])
    assert top.any()
    for extra in (1, 2):
        S = cluster(nu + 1 + extra)
        ie, scale = inclusion_exclusion(t, S)
        assert np.abs(ie).max() <= 1e-10 * scale.max(), f"|S| = {len(S)}: {np.abs(ie).max() / scale.max():.3g}"
    S = cluster(nu + 1)
    ie, scale = inclusion_exclusion(t, S)
    # exactly (nu + 1)-body: the top-order features see the whole cluster, lower orders cancel
    assert np.abs(ie[top]).max() > 1e-3 * scale[top].max()
    if (~top).any():
        assert np.abs(ie[~top]).max() <= 1e-10 * scale.max()


def test_mixed_batch_equals_single_structures():
    """Molecules, a large cluster (binned search) and periodic cells in one batch, in any order."""
    rng = np.random.default_rng(50)
    pos = random_positions(rng, 260, lambda g: g.uniform(0, 13.0, 3), 0.9)
    big = Atoms(symbols=list(rng.choice(["H", "Na", "Cl"], 260)), positions=pos)
    X = [MOLECULES[0], PERIODIC[0], big, MOLECULES[1], PERIODIC[2], PERIODIC[1]]
    t = ACETransformer(["H", "C", "O", "Na", "Cl"], cutoff=CUTOFF, correlation_order=3, max_degree=[4, 4, 4],
                       l_weight=1.0).fit(X)
    pa = clone(t).set_params(per_atom=True).fit(X)
    F, P, G = t.transform(X), pa.transform(X), t.transform_gradient(X)
    single_F = np.concatenate([t.transform([a]) for a in X])
    single_P = np.concatenate([pa.transform([a]) for a in X])
    single_G = np.concatenate([t.transform_gradient([a]) for a in X])
    np.testing.assert_allclose(F, single_F, rtol=1e-13, atol=1e-13 * np.abs(F).max())
    np.testing.assert_allclose(P, single_P, rtol=1e-13, atol=1e-13 * np.abs(P).max())
    np.testing.assert_allclose(G, single_G, rtol=1e-12, atol=1e-13 * np.abs(G).max())


def test_in_a_pipeline():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    X = MOLECULES + [random_cluster(s) for s in (21, 22, 23)]
    y = np.arange(len(X), dtype=float)
    model = make_pipeline(ACETransformer(cutoff=CUTOFF, correlation_order=2, max_degree=4), Ridge(alpha=1e-3))
    model.fit(X, y)
    assert model.predict(X).shape == (len(X),)
    assert model[0].elements_ == ["H", "C", "O"]


# ======================================================================
# special structures and bad input
# ======================================================================
def test_isolated_atoms_give_zero_features():
    t = fitted(["H", "C", "O"], 3, per_atom=True)
    X = [
        Atoms("H"),
        Atoms("CO", positions=[[0, 0, 0], [0, 0, CUTOFF + 0.01]]),
        Atoms("O", cell=[20, 20, 20], pbc=True),
        Atoms("HC", positions=[[0, 0, 0], [0, 0, 1.1]]),
    ]
    F = t.transform(X)
    assert F.shape == (6, t.n_features_out_)
    assert np.all(F[:4] == 0.0)
    assert np.abs(F[4:]).max() > 0
    G = t.transform_gradient(X)
    assert np.all(G[:4] == 0.0)
    t2 = fitted(["H", "C", "O"], 3)
    assert np.all(t2.transform([Atoms("H")]) == 0.0)


def test_structure_with_unused_element_and_single_atoms_input():
    t = fitted(["H", "C", "O"], 2)
    a = MOLECULES[0]
    np.testing.assert_array_equal(t.transform(a), t.transform([a]))  # one Atoms is a list of one
    only_h = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.9]])
    F = t.transform([only_h])
    C_cols = [k for k, f in enumerate(t.basis_.features) if f["center"] != 0]
    assert np.all(F[0, C_cols] == 0.0)


@pytest.mark.parametrize("method", ["transform", "transform_gradient"])
def test_unknown_element(method):
    t = ACETransformer(["H", "C"], cutoff=3.0, correlation_order=2, max_degree=4).fit([Atoms("CH")])
    with pytest.raises(ValueError, match="'N'"):
        getattr(t, method)([Atoms("CH"), Atoms("CN", positions=[[0, 0, 0], [0, 0, 1.2]])])


@pytest.mark.parametrize("method", ["fit", "transform", "transform_gradient"])
def test_bad_structures(method):
    t = fitted(["H", "C", "O"], 2)
    call = (lambda X: clone(t).fit(X)) if method == "fit" else getattr(t, method)
    nan = MOLECULES[0].copy()
    nan.positions[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        call([MOLECULES[1], nan])
    inf = MOLECULES[0].copy()
    inf.positions[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        call([inf])
    with pytest.raises(ValueError, match="empty"):
        call([])
    with pytest.raises(ValueError, match="empty"):
        call(None)
    with pytest.raises(TypeError, match="str"):
        call([MOLECULES[0], "H2O"])
    with pytest.raises(TypeError, match="ndarray"):
        call([MOLECULES[0], np.zeros((3, 3))])
    with pytest.raises(ValueError, match="no atoms"):
        call([Atoms()])


@pytest.mark.parametrize("method", ["transform", "transform_gradient"])
def test_overlapping_atoms(method):
    t = fitted(["Na", "Cl"], 2)
    mol = Atoms("NaCl", positions=[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="overlapping"):
        getattr(t, method)([mol])
    # an atom on top of the periodic image of another
    cell = 3.0 * np.eye(3)
    per = Atoms("NaCl", positions=[[0.1, 0.2, 0.3], [3.1, 0.2, 0.3]], cell=cell, pbc=True)
    with pytest.raises(ValueError, match="overlapping"):
        getattr(t, method)([per])
    # closer than OVERLAP_DISTANCE is overlapping too (no bond is that short); just beyond it is not
    for d, ok in [(0.95 * OVERLAP_DISTANCE, False), (1.05 * OVERLAP_DISTANCE, True)]:
        near = [Atoms("NaCl", positions=[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5 + d]]),
                Atoms("NaCl", positions=[[0.1, 0.2, 0.3], [3.1 - d, 0.2, 0.3]], cell=cell, pbc=True)]
        for k, atoms in enumerate(near):
            if ok:
                assert np.isfinite(getattr(t, method)([atoms])).all()
            else:
                with pytest.raises(ValueError, match=rf"overlapping atoms in X\[0\]: atom 0 has a neighbour closer "
                                                     rf"than {OVERLAP_DISTANCE} Å"):
                    getattr(t, method)([atoms])
    # a periodic cell shorter than that puts each atom on its own images: said as such
    thin = Atoms("Na", positions=[[0.5, 0.5, 0.01]], cell=[3.0, 3.0, 0.05], pbc=True)
    with pytest.raises(ValueError, match=r"overlapping atoms in X\[0\]: atom 0 is closer than 0.1 Å to its own "
                                         r"periodic image"):
        getattr(t, method)([thin])
    # a cutoff no longer than the overlap distance could not see overlapping atoms
    with pytest.raises(ValueError, match="cutoff"):
        ACETransformer(elements=["Na"], cutoff=OVERLAP_DISTANCE).fit(MOLECULES)


def test_not_fitted():
    from sklearn.exceptions import NotFittedError

    t = ACETransformer()
    for method in ("transform", "transform_gradient", "get_feature_names_out", "get_feature_table"):
        with pytest.raises(NotFittedError):
            m = getattr(t, method)
            m([Atoms("H")]) if method.startswith("transform") else m()


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(cutoff=-1.0), "cutoff"),
        (dict(correlation_order=0), "correlation_order"),
        (dict(radial_basis="spline"), "radial_basis"),
        (dict(inner_cutoff=5.0, cutoff=4.0), "inner_cutoff"),
        (dict(elements=["H", "H"]), "duplicates"),
        (dict(l_weight=0.0), "l_weight"),
        (dict(max_degree=[4, 4], correlation_order=3), "max_degree"),
    ],
)
def test_bad_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        ACETransformer(**kw).fit([Atoms("H")])


# ======================================================================
# scikit-learn interface
# ======================================================================
def test_clone_pickle_set_params_fit_transform():
    t = fitted(["H", "C", "O"], 3)
    F = t.transform(MOLECULES)
    c = clone(t)
    assert not hasattr(c, "basis_")
    assert c.get_params() == t.get_params()
    np.testing.assert_array_equal(c.fit(MOLECULES).transform(MOLECULES), F)
    p = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(p.transform(MOLECULES), F)
    np.testing.assert_array_equal(p.transform_gradient(MOLECULES), t.transform_gradient(MOLECULES))
    np.testing.assert_array_equal(clone(t).fit_transform(MOLECULES), F)
    s = clone(t).set_params(correlation_order=2, max_degree=5)
    assert s.get_params()["correlation_order"] == 2
    s.fit(MOLECULES)
    fresh = ACETransformer(["H", "C", "O"], cutoff=CUTOFF, correlation_order=2, max_degree=5, l_weight=0.75).fit(
        MOLECULES)
    assert s.n_features_out_ == fresh.n_features_out_ < t.n_features_out_
    np.testing.assert_array_equal(s.transform(MOLECULES), fresh.transform(MOLECULES))
    assert np.all([len(f["factors"]) <= 2 for f in s.basis_.features])


def test_n_jobs_does_not_change_results():
    t = fitted(["H", "C", "O"], 3)
    t1 = clone(t).set_params(n_jobs=1).fit(MOLECULES)
    np.testing.assert_allclose(t1.transform(MOLECULES), t.transform(MOLECULES), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(t1.transform_gradient(MOLECULES), t.transform_gradient(MOLECULES),
                               rtol=1e-12, atol=1e-14)


def test_elements_learned_sorted():
    X = [Atoms("OH", positions=[[0, 0, 0], [0, 0, 1]]), Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.2]])]
    t = ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4).fit(X)
    assert t.elements is None
    assert t.elements_ == ["H", "C", "O"]  # by atomic number
    t2 = ACETransformer(["H", "C", "O"], cutoff=3.0, correlation_order=2, max_degree=4).fit(X)
    np.testing.assert_array_equal(t.transform(X), t2.transform(X))


def test_feature_names_and_table():
    t = fitted(["H", "C", "O"], 3)
    names = t.get_feature_names_out()
    assert len(names) == t.n_features_out_ == len(t.basis_.features) == len(set(names))
    table = t.get_feature_table()
    expected_cols = {"name", "center", "correlation_order", "body_order", "degree", "l_sum", "l_max", "n_max",
                     "factors", "neighbours", "coupling"}
    assert expected_cols <= set(table.columns)
    assert len(table) == t.n_features_out_
    el = t.elements_
    for name, f, (_, row) in zip(names, t.basis_.features, table.iterrows()):
        center, body, factors, coupling = name.split("|")
        assert center == el[f["center"]] == row["center"]
        assert body == f"{len(f['factors']) + 1}-body"
        assert row["body_order"] == len(f["factors"]) + 1 == row["correlation_order"] + 1
        assert factors == "*".join(f"{el[e]}({n},{l})" for e, n, l in f["factors"])
        assert int(coupling) == f["coupling"] == row["coupling"]
        assert row["name"] == name
        assert row["l_sum"] == sum(l for *_, l in f["factors"])
        assert row["l_max"] == max(l for *_, l in f["factors"])
        assert row["n_max"] == max(n for _, n, _ in f["factors"])
        assert row["degree"] == pytest.approx(f["degree"])
        assert row["neighbours"] == "-".join(sorted(el[e] for e, _, _ in f["factors"]))
    # one contiguous block of columns per central element, in the order of elements_
    centers = [f["center"] for f in t.basis_.features]
    assert centers == sorted(centers) and set(centers) == {0, 1, 2}


def test_per_atom_rows_sum_to_structure_rows():
    t = fitted(["Na", "Cl"], 3)
    X = PERIODIC
    F = t.transform(X)
    P = clone(t).set_params(per_atom=True).fit(X).transform(X)
    assert P.shape == (sum(len(a) for a in X), t.n_features_out_)
    bounds = np.cumsum([0] + [len(a) for a in X])
    sums = np.stack([P[a:b].sum(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
    np.testing.assert_allclose(sums, F, rtol=1e-13, atol=1e-14 * np.abs(F).max())
    # each atom's row lives in its own element's block only
    species = np.concatenate([[t.elements_.index(s) for s in a.get_chemical_symbols()] for a in X])
    centers = np.array([f["center"] for f in t.basis_.features])
    assert np.all(P[species[:, None] != centers[None, :]] == 0.0)


@pytest.mark.parametrize("per_atom", [False, True])
def test_tiny_max_memory_chunks(per_atom):
    t = fitted(["H", "C", "O"], 3, per_atom=per_atom)
    tiny = clone(t).set_params(max_memory=1e-4).fit(MOLECULES)
    X = MOLECULES + MOLECULES[::-1]
    np.testing.assert_allclose(tiny.transform(X), t.transform(X), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(tiny.transform_gradient(X), t.transform_gradient(X), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("family", FAMILIES)
def test_select_features(family):
    t = fitted(["H", "C", "O"], 3, family)
    X = MOLECULES
    F, G = t.transform(X), t.transform_gradient(X)
    # every third feature, but none of the 4-body ones: fewer products to evaluate
    idx = np.array([k for k in range(0, t.n_features_out_, 3) if len(t.basis_.features[k]["factors"]) < 3])
    s = t.select_features(idx)
    assert s.n_features_out_ == len(idx)
    np.testing.assert_array_equal(s.get_feature_names_out(), t.get_feature_names_out()[idx])
    assert_features_close(s.transform(X), F[:, idx], 1e-12, family)
    assert_features_close(s.transform_gradient(X), G[:, :, idx], 1e-12, family)
    assert s.compiled_.n_AA < t.compiled_.n_AA
    assert len(s.compiled_.vals) < len(t.compiled_.vals)


@pytest.mark.parametrize("family", FAMILIES)
def test_select_low_radial_features(family):
    """Keeping only features with small radial indices must not change their values."""
    t = fitted(["H", "C", "O"], 3, family)
    X = MOLECULES
    idx = [k for k, f in enumerate(t.basis_.features) if max(n for _, n, _ in f["factors"]) <= 2]
    s = t.select_features(idx)
    assert s.compiled_.n_radial < t.compiled_.n_radial
    assert_features_close(s.transform(X), t.transform(X)[:, idx], 1e-12, family)


def test_selected_transformer_pickles():
    t = fitted(["H", "C", "O"], 3)
    s = t.select_features([k for k, f in enumerate(t.basis_.features) if len(f["factors"]) == 2])
    p = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(p.transform(MOLECULES), s.transform(MOLECULES))
    assert p.n_features_out_ == s.n_features_out_


def test_select_features_must_be_grouped():
    t = fitted(["H", "C", "O"], 2)
    last, first = t.n_features_out_ - 1, 0
    with pytest.raises(ValueError, match="grouped"):
        t.select_features([last, first])


@pytest.mark.parametrize("family", ["bessel", "gaussian"])
def test_center_max_degree_lowers_one_central_element(family):
    """A lower bound for H centres keeps exactly the full basis's H features within it, same values."""
    t = fitted(["H", "C", "O"], 3, family)
    lower = [4, 4, 4.5]
    s = fitted(["H", "C", "O"], 3, family, center_max_degree={"H": lower, "N": 1})
    names = list(t.get_feature_names_out())
    idx = [k for k, f in enumerate(t.basis_.features)
           if t.elements_[f["center"]] != "H" or f["degree"] <= lower[len(f["factors"]) - 1]]
    assert 0 < len(idx) < t.n_features_out_
    assert [names[k] for k in idx] == list(s.get_feature_names_out())
    h = [f for f in s.basis_.features if s.elements_[f["center"]] == "H"]
    assert h and max(f["degree"] for f in h if len(f["factors"]) == 3) <= 4.5
    assert s.basis_.features_per_center()["H"] == len(h)
    assert sum(s.basis_.features_per_center().values()) == s.n_features_out_
    X = MOLECULES
    assert_features_close(s.transform(X), t.transform(X)[:, idx], 1e-12, family)
    assert_features_close(s.transform_gradient(X), t.transform_gradient(X)[:, :, idx], 1e-12, family)
    assert clone(s).get_params()["center_max_degree"] == {"H": lower, "N": 1}
