"""Assembling the weighted least-squares system of an energy + force fit, in chunks.

Rows: one energy row per structure (features summed over atoms, plus the
element counts that multiply the reference energies E0), three force rows
per atom (minus the feature gradient) and, for structures with a stress,
six virial rows (the per-feature virial against ``stress * volume``, Voigt
order, scaled like the structure's energy row). Per-structure factors (``info["weight"]``
and the ``1/sqrt(N)`` or ``1/N`` energy scaling) are applied here; the global
energy and force weights are applied later (:meth:`LinearSystem.combine`), so
that a grid search over weights, E0, priors or ``alpha`` reuses one assembly.

Force rows are kept as a design matrix when small, and otherwise only as
their Gram matrix ``X_F^T X_F`` accumulated chunk by chunk, so memory stays
``O(n_features^2)`` whatever the number of structures; or, for a fit solved
in dual form that is wide only in its internal force rows
(:func:`dual_of_internal_rows`), as those rows (:func:`internal_rows`).
"""

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .linalg import Spectrum, gram_update, symmetrize_upper
from .structures import as_structure_list, internal_components, internal_dimension


def _stored(atoms, store, key, standard):
    """``store[key]``, else the attached calculator's stored result for a standard key, else None."""
    if key in store:
        return store[key]
    results = getattr(atoms.calc, "results", None) or {}
    if key == standard and standard in results:
        return results[standard]
    return None


FORCES_HINT = "pass energies as y for an energy-only fit, or set force_weight=0"


def read_targets(structures, energy_key="energy", forces_key="forces", need_forces=True, name="X",
                 forces_hint=FORCES_HINT):
    """Energies (n,), forces (n_atoms, 3) or None, and per-structure weights from ``ase.Atoms``.

    Targets are read from ``atoms.info[energy_key]`` / ``atoms.arrays[forces_key]``,
    or else from the attached calculator's stored results (as ``ase.io.read``
    leaves them for an extxyz file). ``forces_hint`` ends the error for missing
    forces (what the caller can do instead: the command line has its own options).
    """
    energies = np.empty(len(structures))
    forces = [] if need_forces else None
    weights = np.ones(len(structures))
    for k, atoms in enumerate(structures):
        e = _stored(atoms, atoms.info, energy_key, "energy")
        if e is None:
            raise ValueError(
                f"missing energy: {name}[{k}] has no info[{energy_key!r}] and no calculator energy"
            )
        try:
            energies[k] = float(e)
        except (TypeError, ValueError):
            raise ValueError(f"energy of {name}[{k}] is not a number: {e!r}") from None
        if not np.isfinite(energies[k]):
            raise ValueError(f"energy of {name}[{k}] is NaN or infinite")
        if "weight" in atoms.info:
            weights[k] = float(atoms.info["weight"])
            if not weights[k] >= 0:
                raise ValueError(f"weight of {name}[{k}] must be non-negative, got {atoms.info['weight']!r}")
        if need_forces:
            f = _stored(atoms, atoms.arrays, forces_key, "forces")
            if f is None:
                raise ValueError(
                    f"missing forces: {name}[{k}] has no arrays[{forces_key!r}] and no calculator forces "
                    f"({forces_hint})"
                )
            f = np.asarray(f, dtype=float)
            if f.shape != (len(atoms), 3):
                raise ValueError(f"forces of {name}[{k}] have shape {f.shape}, expected ({len(atoms)}, 3)")
            if not np.all(np.isfinite(f)):
                raise ValueError(f"forces of {name}[{k}] contain NaN or infinite values")
            forces.append(f)
    return energies, (np.concatenate(forces) if need_forces else None), weights


def read_stress(structures, stress_key="stress", name="X"):
    """Stress targets (eV/Å^3, ASE's sign and Voigt order xx yy zz yz xz xy) where present.

    Read from ``atoms.info[stress_key]`` (6 Voigt numbers or a 3x3 matrix) or,
    for the standard key, the attached calculator's stored ``stress``.
    Structures without one contribute no stress rows.

    Returns
    -------
    index : ndarray of int
        Structures that have a stress.
    virial : ndarray of shape (len(index), 6)
        ``stress * volume`` (eV) of those structures.
    """
    from ase.stress import full_3x3_to_voigt_6_stress

    index, virial = [], []
    for k, atoms in enumerate(structures):
        value = _stored(atoms, atoms.info, stress_key, "stress")
        if value is None:
            continue
        try:
            sv = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"stress of {name}[{k}] is not numeric: {value!r}") from None
        if sv.shape == (3, 3):
            sv = full_3x3_to_voigt_6_stress(sv)
        if sv.shape != (6,):
            raise ValueError(f"stress of {name}[{k}] has shape {sv.shape}; expected 6 Voigt numbers or 3x3")
        if not np.all(np.isfinite(sv)):
            raise ValueError(f"stress of {name}[{k}] contains NaN or infinite values")
        volume = abs(float(np.linalg.det(atoms.cell.array)))
        if not volume > 1e-9:
            raise ValueError(f"{name}[{k}] has a stress but no cell volume (stress = virial / volume needs a cell)")
        index.append(k)
        virial.append(sv * volume)
    return np.array(index, dtype=np.int64), np.array(virial, dtype=float).reshape(-1, 6)


def energy_row_scale(structures, weights, scaling):
    """Per-structure factor of the energy rows: weight times 1, 1/sqrt(N) or 1/N."""
    n = np.array([len(a) for a in structures], dtype=float)
    if scaling in (None, "none"):
        return weights.copy()
    if scaling == "sqrt_atoms":
        return weights / np.sqrt(n)
    if scaling == "atoms":
        return weights / n
    raise ValueError(f"energy_weight_scaling must be 'sqrt_atoms', 'atoms' or 'none', got {scaling!r}")


@dataclass
class LinearSystem:
    """The pieces of a weighted least-squares fit (see module docstring)."""

    XE: np.ndarray  # (n_structures, n_features + n_elements) scaled energy rows [B | counts]
    yE: np.ndarray  # (n_structures,) scaled energies
    XF: np.ndarray  # (3 n_atoms, n_features) scaled force rows, or None in Gram mode
    yF: np.ndarray  # (3 n_atoms,) or None
    GF: np.ndarray  # X_F^T X_F (Gram mode) or None
    bF: np.ndarray  # X_F^T y_F
    yyF: float
    mF: int
    n_features: int
    XS: np.ndarray = None  # (6 n_stress, n_features) scaled virial rows, or None in Gram mode / no stress
    yS: np.ndarray = None  # (6 n_stress,) scaled virial targets
    GS: np.ndarray = None  # X_S^T X_S (Gram mode) or None
    bS: np.ndarray = None  # X_S^T y_S (Gram mode) or None
    yyS: float = 0.0
    mS: int = 0
    n_atoms: np.ndarray = None  # atoms per structure (groups the force rows by structure), or None
    holdout: "LinearSystem" = None  # structures kept out of the Gram matrix, as rows, to choose alpha
    # force rows per structure where XF keeps internal rows only (internal_rows: fewer than
    # 3 n_atoms; yF their targets, while yyF and mF still count every force component)
    force_rows: np.ndarray = None

    def row_groups(self, stress_weight=0.0, force_weight=1.0):
        """Structure index of each row of the weighted design (energy rows, then force rows if
        ``force_weight`` keeps them), for leave-one-structure-out validation; None when unknown
        or with virial rows."""
        if self.n_atoms is None or (stress_weight > 0 and self.mS):
            return None
        index = np.arange(len(self.n_atoms))
        if not (force_weight > 0 and self.mF):  # energy rows only: one per structure
            return index
        per = 3 * self.n_atoms if self.force_rows is None else self.force_rows
        return np.concatenate([index, np.repeat(index, per)])

    def rigid_rows(self, force_weight=1.0):
        """``(rows, |y|^2)`` of the weighted force rows a design of internal rows leaves out
        (:func:`internal_rows`): zero rows of the design, whose targets stay in the residual
        whatever the coefficients, so a solver counts them as rows and as misfit."""
        if self.force_rows is None or not (force_weight > 0 and self.mF):
            return 0, 0.0
        return self.mF - len(self.yF), force_weight**2 * max(self.yyF - float(self.yF @ self.yF), 0.0)

    def n_rows(self, force_weight=1.0, stress_weight=0.0):
        """Rows of the weighted problem: energies, and force and virial rows where weighted."""
        return len(self.yE) + (self.mF if force_weight > 0 else 0) + (self.mS if stress_weight > 0 else 0)

    def validation_groups(self, shape, stress_weight=0.0, force_weight=1.0):
        """:meth:`row_groups` of a design of ``shape``, or None where its left singular vectors
        (rows x min(shape) doubles) would exceed :data:`CV_MAX_BYTES`: the design routes validate
        by structure only then."""
        groups = self.row_groups(stress_weight, force_weight)
        if groups is not None and shape[0] * min(shape) * 8 > CV_MAX_BYTES:
            return None  # the left singular vectors would be too large to keep
        return groups

    def combine(self, energy_weight, force_weight, e0, prior, use_design, joint_e0=False, stress_weight=0.0,
                standardize=True, cv=False, consume=False):
        """Spectral form of the weighted fit, E0 subtracted (and refined jointly if ``joint_e0``).

        ``stress_weight`` multiplies the virial rows (none without stress data). ``cv``:
        always add the leave-one-structure-out curve on the design route (where the
        structures are known and the left singular vectors fit in :data:`CV_MAX_BYTES`).
        ``consume``: the system is not solved again, so on the design route its force
        rows are released once copied into the weighted design, before the SVD
        allocates its factors (one force design's worth of memory less at the peak).

        The unknowns are the feature coefficients, followed, with
        ``joint_e0``, by corrections to ``e0`` (the element-count columns;
        ``prior`` then has one entry for each of those too). Columns are
        divided by ``scale = prior * norm``, where ``norm`` is the column's
        root-sum-square over the weighted rows (1 for empty columns), so the
        solver sees standardised features: the prior acts on standardised
        features, and the problem stays well conditioned even when it is
        only held as a Gram matrix.

        Returns
        -------
        spectrum : Spectrum
            Of the problem in ``d = scale * c``.
        scale : ndarray
        """
        if use_design and (self.XF is not None or self.mF == 0):
            # Fortran order, which the SVD then overwrites instead of copying
            X, y, scale = self.scaled_design(energy_weight, force_weight, e0, prior, joint_e0, stress_weight,
                                             standardize, consume)
            groups = self.validation_groups(X.shape, stress_weight, force_weight)
            spec = Spectrum.from_design(X, y, groups, overwrite=True, cv=cv)
            rows, yy = self.rigid_rows(force_weight)
            spec.m, spec.yy = spec.m + rows, spec.yy + yy
            if spec.cv is not None and rows:  # a left-out structure's rigid rows miss by their targets
                spec.cv = (spec.cv[0], (spec.cv[1] * (spec.m - rows) + yy) / spec.m)
            return spec, scale
        G, b, yy, m = self.gram(energy_weight, force_weight, e0, joint_e0, stress_weight)
        scale = column_scale(np.sqrt(np.diag(G).copy()), prior, standardize)
        for i0 in range(0, len(scale), 1024):  # in row blocks: no full-size temporaries
            G[i0:i0 + 1024] /= scale[i0:i0 + 1024, None] * scale[None, :]
        return Spectrum.from_gram(G, b / scale, yy, m), scale

    def scaled_design(self, energy_weight, force_weight, e0, prior, joint_e0=False, stress_weight=0.0,
                      standardize=True, consume=False):
        """``(X, y, scale)``: :meth:`weighted_design` with its columns divided by
        ``scale`` (:func:`column_scale`); ``consume`` releases the force rows once copied."""
        X, y = self.weighted_design(energy_weight, force_weight, e0, joint_e0, stress_weight)
        if consume:
            self.XF = None
        scale = column_scale(np.sqrt(np.einsum("ij,ij->j", X, X)), prior, standardize)
        X /= scale
        return X, y, scale

    def weighted_design(self, energy_weight, force_weight, e0, joint_e0=False, stress_weight=0.0):
        """``(X, y)``: the weighted rows (energy, force, virial) of a system that keeps its design,
        E0 subtracted, with the E0 columns (zero in force and virial rows) if ``joint_e0``.
        ``X`` is Fortran-ordered."""
        nf, nc = self.n_features, self.XE.shape[1] - self.n_features
        width = nf + nc if joint_e0 else nf
        yE = self.yE - self.XE[:, nf:] @ e0
        blocks = [(self.XE[:, :width], energy_weight)]  # (rows, weight)
        targets = [energy_weight * yE]
        if force_weight > 0 and self.mF:
            blocks.append((self.XF, force_weight))
            targets.append(force_weight * self.yF)
        if stress_weight > 0 and self.mS:
            blocks.append((self.XS, stress_weight))
            targets.append(stress_weight * self.yS)
        X = np.zeros((sum(len(rows) for rows, _ in blocks), width), order="F")
        row = 0
        for rows, weight in blocks:
            np.multiply(rows, weight, out=X[row:row + len(rows), :rows.shape[1]])
            row += len(rows)
        return X, np.concatenate(targets)

    def gram(self, energy_weight, force_weight, e0, joint_e0=False, stress_weight=0.0, consume=False):
        """``(G, b, |y|^2, m)`` of the weighted problem (features, then E0 corrections if ``joint_e0``).

        With ``consume``, the force Gram matrix ``GF`` is scaled and completed
        in its own storage (grown in place when it was allocated by
        :func:`gram_buffer`), so that the fit holds one n x n matrix, not two;
        the system then has no ``GF`` left and cannot be solved again.
        """
        nf = self.n_features
        width = self.XE.shape[1] if joint_e0 else nf
        yE = self.yE - self.XE[:, nf:] @ e0
        XE = self.XE[:, :width]
        forces = force_weight > 0 and self.mF
        G = None
        if consume and forces and self.GF is not None:
            G = square_in_place(self.GF, width)
            if G is not None:
                self.GF = None
                G *= force_weight**2
        if G is None:
            G = np.zeros((width, width))
            if forces:
                GF = self.GF
                if GF is None:
                    if self.XF is None:
                        raise RuntimeError("this system's force Gram matrix was consumed by a previous solve")
                    GF = symmetrize_upper(gram_update(np.zeros((nf, nf)), self.XF))
                for i0 in range(0, nf, 1024):  # row blocks: no full-size temporaries
                    G[i0:min(i0 + 1024, nf), :nf] += force_weight**2 * GF[i0:i0 + 1024]
        # the energy rows' Gram adds to the upper triangle, which then overwrites the lower one
        symmetrize_upper(gram_update(G, XE, scale=energy_weight**2))
        b = energy_weight**2 * (XE.T @ yE)
        yy = energy_weight**2 * float(yE @ yE)
        m = len(yE)
        if forces:
            bF = self.bF if self.XF is None else self.XF.T @ self.yF
            b[:nf] += force_weight**2 * bF
            yy += force_weight**2 * self.yyF
            m += self.mF
        if stress_weight > 0 and self.mS:
            GS = self.GS
            if GS is None:
                GS = symmetrize_upper(gram_update(np.zeros((nf, nf)), self.XS))
            for i0 in range(0, nf, 1024):
                G[i0:min(i0 + 1024, nf), :nf] += stress_weight**2 * GS[i0:i0 + 1024]
            b[:nf] += stress_weight**2 * (self.bS if self.XS is None else self.XS.T @ self.yS)
            yy += stress_weight**2 * self.yyS
            m += self.mS
        return G, b, yy, m


def gram_buffer(n_features, width):
    """A zero ``n_features`` x ``n_features`` Gram matrix held at the top left of a
    ``width`` x ``width`` buffer (``width``: features plus E0 columns), so that
    :meth:`LinearSystem.gram` can grow it in place into the joint system's matrix."""
    return np.zeros((width, width))[:n_features, :n_features]


def square_in_place(G, width):
    """The storage of the square ``G`` reused as a C-contiguous ``width`` x ``width`` matrix with
    ``G`` at its top left and zeros elsewhere, or None when that storage is too small.

    ``G`` is either C-contiguous or the top-left view made by :func:`gram_buffer`.
    Rows move to their new places in increasing order, so no row is overwritten
    before it has moved. ``G`` itself must not be used afterwards.

    Examples
    --------
    >>> import numpy as np
    >>> from skace.fitting import gram_buffer, square_in_place
    >>> G = gram_buffer(2, 3); G[...] = [[1.0, 2.0], [2.0, 5.0]]
    >>> square_in_place(G, 3)
    array([[1., 2., 0.],
           [2., 5., 0.],
           [0., 0., 0.]])
    """
    n = G.shape[0]
    base = G if G.base is None else G.base
    if (not isinstance(base, np.ndarray) or base.ndim != 2 or not base.flags.c_contiguous
            or base.dtype != np.float64 or base.ctypes.data != G.ctypes.data
            or G.strides != (base.strides[0], G.itemsize)):
        return None
    stride = base.shape[1]
    if not n <= width <= stride or base.size < width * width:
        return None  # rows would have to spread out: a later row's source would be overwritten
    if stride == width:
        return base[:width]
    flat = base.reshape(-1)
    for i in range(n):  # compact the rows: a destination never passes an unread source
        flat[i * width:i * width + n] = flat[i * stride:i * stride + n]
        flat[i * width + n:(i + 1) * width] = 0.0
    flat[n * width:width * width] = 0.0
    return flat[:width * width].reshape(width, width)


def column_scale(norm, prior, standardize=True):
    """Divisors of the design's columns: ``prior`` times the column norms
    (standardised features; empty columns count as norm 1), or, without
    ``standardize``, ``prior`` alone (the prior then acts on the raw
    coefficients, as in ACE1)."""
    return prior * _safe_norm(norm) if standardize else np.array(prior, dtype=float)


def _safe_norm(norm):
    """Column norms with empty (or numerically empty) columns set to 1."""
    out = norm.copy()
    out[out <= 1e-12 * max(out.max(initial=0.0), 1e-300)] = 1.0
    return out


def fingerprint(structures, *extra):
    """Hash of the structures' geometry, species, targets and weights, plus ``extra``."""
    h = hashlib.sha1()
    for atoms in structures:
        h.update(atoms.numbers.tobytes())
        h.update(np.ascontiguousarray(atoms.positions).tobytes())
        h.update(np.ascontiguousarray(atoms.cell.array).tobytes())
        h.update(atoms.pbc.tobytes())
        h.update(repr(sorted((k, repr(v)) for k, v in atoms.info.items())).encode())
        for k in sorted(atoms.arrays):
            if k not in ("numbers", "positions"):
                h.update(k.encode())
                h.update(np.ascontiguousarray(atoms.arrays[k]).tobytes())
        if atoms.calc is not None:
            for k, v in sorted(getattr(atoms.calc, "results", {}).items()):
                h.update(k.encode())
                h.update(np.ascontiguousarray(v).tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()


def _nbytes(value):
    """Bytes held by the arrays inside ``value`` (dataclass, tuple or array)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dict__"):
        return sum(_nbytes(v) for v in vars(value).values())
    return 0


class LRUCache:
    """A least-recently-used cache bounded by the bytes of the arrays it holds (per process)."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.data = OrderedDict()

    def get(self, key):
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key][0]
        return None

    def put(self, key, value):
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        self.data[key] = (value, size)
        self.data.move_to_end(key)
        while sum(v[1] for v in self.data.values()) > self.max_bytes:
            self.data.popitem(last=False)

    def clear(self):
        self.data.clear()


#: Assembled systems, keyed by data + descriptor fingerprint (reused across a
#: grid search; enough room for the folds of a cross-validation).
SYSTEM_CACHE = LRUCache(3 * 2**30)

#: Largest left-singular-vector matrix (bytes) kept for leave-one-structure-out validation
#: of the regularisation (:func:`skace.linalg.group_cv_curve`) on the design route.
CV_MAX_BYTES = 1 * 2**30

#: Spectral decompositions, keyed by system + weights + E0 + prior.
SPECTRUM_CACHE = LRUCache(2 * 2**30)


def clearly_underdetermined(rows, unknowns):
    """At most 3/4 as many rows as unknowns: a fit that can interpolate its data."""
    return 4 * rows <= 3 * unknowns


def fitting_rows(structures, with_forces=True, stress_index=()):
    """Rows of a fit of ``structures``: an energy each, the force components of their atoms
    ``with_forces``, 6 stress components per structure in ``stress_index`` (``read_stress``)."""
    return len(structures) + (3 * sum(len(a) for a in structures) if with_forces else 0) + 6 * len(stress_index)


#: Work ``rows^2 x unknowns`` above which a wide design (fewer rows than unknowns) is solved
#: in its dual form (:class:`skace.linalg.KernelSolver`, Cholesky factorisations of
#: ``X X^T``) rather than by its SVD. The SVD's reduction is memory bound: rMD17 ethanol, 250
#: configurations (7000 x 37062, 1.8e12) took 270 s by SVD, 25 s to form ``X X^T`` and 2 s per
#: factorisation. Below it (fits of 50 to 100 configurations) the SVD costs little and
#: resolves the weakest regularisation these fits choose exactly.
KERNEL_MIN_WORK = 1e12


def kernel_pays(rows, unknowns):
    """Whether a design-route fit of ``rows`` x ``unknowns`` is solved in dual form
    (:data:`KERNEL_MIN_WORK`).

    Examples
    --------
    >>> from skace.fitting import kernel_pays
    >>> kernel_pays(250 * 28, 37062), kernel_pays(50 * 28, 54009)  # rMD17 ethanol, 250 and 50
    (True, False)
    """
    return rows < unknowns and float(rows) ** 2 * unknowns >= KERNEL_MIN_WORK


def dual_bytes(rows, n_features):
    """Estimated peak memory of a dual-form fit (:class:`skace.linalg.KernelSolver`): the
    force rows and the weighted design beside them while it is copied (``2 m n`` doubles),
    then the design with ``X X^T`` (``m n + m^2``).

    Examples
    --------
    >>> from skace.fitting import dual_bytes
    >>> round(dual_bytes(22000, 37062) / 2**30, 1)  # rMD17 ethanol, 1000, internal rows
    15.8
    """
    m, n = float(rows), float(n_features)
    return 8 * (2 * m * n + m * m)


def dual_of_internal_rows(structures, n_features, memory_limit=None):
    """Whether a fit that the design route does not take (:func:`keeps_design`: too tall,
    or its SVD beyond ``memory_limit``) is clearly wide in its internal force rows
    (:func:`internal_rows`, plus one energy row per structure: at most 3/4 as many as
    features, :func:`clearly_underdetermined`) and is solved in dual form
    (:func:`kernel_pays`, within ``memory_limit`` by :func:`dual_bytes`).
    Then ``X X^T`` (``m^2 n``) and its factorisations (``m^3 / 3``) cost clearly less than
    the Gram matrix (``m n^2``) and its factorisations (``n^3 / 3``): rMD17 ethanol, 1000
    configurations, has 28000 rows, 22000 of them internal, for 37062 features (fit in 492 s
    instead of 1080 s); rMD17 salicylic acid, 500 configurations, whose SVD exceeds 3/4 of
    24 GiB, 21500 internal rows for 37062 features (482 s instead of 1457 s on the Gram
    route). Nearer square the dual form gains little: rMD17 toluene, 500 configurations,
    20500 internal rows for 23306 features, took 602 s.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from skace.fitting import dual_of_internal_rows
    >>> ethanol = [molecule("CH3CH2OH")] * 1000  # 27 force rows each, 21 internal
    >>> dual_of_internal_rows(ethanol, 37062), dual_of_internal_rows(ethanol, 25000)
    (True, False)
    """
    rows = len(structures) + sum(internal_dimension(a) for a in structures)
    return (clearly_underdetermined(rows, n_features) and kernel_pays(rows, n_features)
            and (memory_limit is None or dual_bytes(rows, n_features) <= memory_limit))


def few_data(rows, unknowns):
    """At most a tenth as many rows as unknowns: a fit that its prior, more than its data, decides."""
    return 10 * rows <= unknowns


def physical_memory():
    """Bytes of physical memory of this machine (16 GiB where the OS does not say).

    Examples
    --------
    >>> from skace.fitting import physical_memory
    >>> physical_memory() > 0
    True
    """
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 16 * 2**30


def svd_bytes(rows, n_features):
    """Estimated peak memory of the design route's SVD.

    The design and its right singular vectors (``m n`` doubles each) and the
    left ones with the part of LAPACK's workspace that gets touched (about
    ``2.5 m^2``), for ``m = min(rows, n_features)``, ``n = max(...)``. Against
    the resident memory of whole fits: rMD17 uracil, 500 configurations (18500
    rows, 27494 unknowns), 14.0 GiB estimated, 14.8 GiB measured.

    Parameters
    ----------
    rows, n_features : int

    Returns
    -------
    float
        Bytes.

    Examples
    --------
    >>> from skace.fitting import svd_bytes
    >>> round(svd_bytes(18500, 27494) / 2**30, 1)
    14.0
    """
    m, n = int(rows), int(n_features)
    k = min(m, n)
    return 8 * (2 * max(m, n) * k + 2.5 * k * k)


def keeps_design(n_atoms, n_structures, n_features, design_limit, memory_limit=None):
    """Whether a fit keeps its force rows as a design (SVD route) rather than a Gram matrix.

    Small designs, and clearly underdetermined fits (rows <= 3/4 features):
    their SVD then costs about what the Gram route does, and such a fit may
    interpolate, which only the design's exact zero singular values handle.
    An underdetermined fit whose SVD would take more than ``memory_limit``
    bytes (:func:`svd_bytes`) takes the Gram route instead: its matrix,
    ``n_features`` squared, is the smaller one there.
    """
    rows = 3 * n_atoms + n_structures
    if 3 * n_atoms * n_features <= design_limit:
        return True
    return clearly_underdetermined(rows, n_features) and (memory_limit is None
                                                           or svd_bytes(rows, n_features) <= memory_limit)


def force_route(structures, n_features, design_limit, memory_limit=None, dual=False):
    """How a fit of ``structures`` with forces keeps its force rows: ``True``, as a design
    (:func:`keeps_design`); ``"internal"``, as the design of their internal rows, with
    ``dual`` (the solver takes the dual form) where :func:`dual_of_internal_rows` holds for
    a fit the design route does not take (too tall, or its SVD beyond ``memory_limit``);
    else ``False``, as their Gram matrix.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from skace.fitting import force_route
    >>> ethanol = [molecule("CH3CH2OH")] * 1000
    >>> force_route(ethanol, 37062, 2_000_000), force_route(ethanol, 37062, 2_000_000, dual=True)
    (False, 'internal')
    """
    n_atoms = sum(len(a) for a in structures)
    if keeps_design(n_atoms, len(structures), n_features, design_limit, memory_limit):
        return True
    if dual and dual_of_internal_rows(structures, n_features, memory_limit):
        return "internal"
    return False


def svd_exceeds_memory(n_atoms, n_structures, n_features, design_limit, memory_limit):
    """Whether ``memory_limit`` alone moves a fit that would keep its design off the design
    route (:func:`keeps_design`). Such a fit can interpolate its data, so on the Gram route
    the evidence cannot choose its regularisation: held-out structures do."""
    return (keeps_design(n_atoms, n_structures, n_features, design_limit)
            and not keeps_design(n_atoms, n_structures, n_features, design_limit, memory_limit))


def assemble(descriptor, X, energies, forces, energy_scale, weights, n_elements, species_counts,
             design_limit, progress=None, stress=None, n_blocks=None, holdout=0.0, memory_limit=None,
             dual=False):
    """Build the :class:`LinearSystem` of a fitted descriptor on ``X``.

    With ``n_blocks``, the structures are split into that many consecutive
    blocks of about equal atom counts, each block's system is assembled by
    :func:`assemble_block` as a ``joblib`` task (sequential by default; in a
    ``joblib.parallel_backend("dask")`` context, on a dask cluster) and the
    blocks are merged in order (:func:`merge_systems`), so the result does not
    depend on where the blocks ran.

    Parameters
    ----------
    descriptor : fitted ACETransformer
    X : list of ase.Atoms
    energies : ndarray (n,)
    forces : ndarray (n_atoms, 3) or None
        None for an energy-only fit.
    energy_scale, weights : ndarray (n,)
        Per-structure factors of energy (and virial) rows and of force rows.
    species_counts : ndarray (n, n_elements)
    design_limit : int
        Keep force rows as a design matrix while it has at most this many
        entries, or while there are at most 3/4 as many rows as features
        (then the design is smaller than its Gram matrix, and when the fit
        can interpolate, the Gram route's evidence is decided by rounding
        noise: with no residual left, its maximum runs off to vanishing
        regularisation); beyond, accumulate their Gram matrix.
    progress : callable, optional
        Called with the number of structures done after each chunk.
    stress : tuple (index, virial), optional
        From :func:`read_stress`: structures with a stress and their target
        virials ``stress * volume`` (n_stress, 6).
    n_blocks : int, optional
        Assemble in this many joblib tasks.
    holdout : float, default=0.0
        On the Gram route, this fraction of the structures (:func:`holdout_indices`) is
        kept out of the Gram matrix and returned as rows in the system's ``holdout``
        (for choosing the regularisation by their error, then added to the fit).
    memory_limit : int, optional
        Largest estimated SVD memory (bytes) of an underdetermined fit's design route
        (:func:`keeps_design`), and of a dual-form fit (:func:`dual_bytes`).
    dual : bool, default=False
        The fit will be solved in dual form where that pays: a fit that would take the
        Gram route but is wide in its internal force rows (:func:`dual_of_internal_rows`)
        keeps those rows as its design instead (``force_rows`` of the system).
    """
    structures = as_structure_list(X)
    use_design = forces is not None and force_route(structures, descriptor.n_features_out_, design_limit,
                                                    memory_limit, dual)
    held = holdout_indices(len(structures), holdout) if forces is not None and not use_design else None
    if held is None:
        return _assemble_part(descriptor, structures, energies, forces, energy_scale, weights, species_counts,
                              use_design, progress, stress, n_blocks)
    kept = np.setdiff1d(np.arange(len(structures)), held)
    parts = [_subset(k, structures, energies, forces, energy_scale, weights, species_counts, stress)
             for k in (kept, held)]
    (*rows, part_stress), (*held_rows, held_stress) = parts
    system = _assemble_part(descriptor, *rows, False, progress, part_stress, n_blocks, index=kept)
    system.holdout = assemble_block(descriptor, *held_rows, True, progress, held_stress, index=held)
    return system


def holdout_indices(n_structures, fraction, seed=0):
    """Sorted indices of ``round(fraction * n_structures)`` structures (at least one) drawn
    at random with a fixed seed, or None when ``fraction`` is 0 or fewer than 10 structures
    would remain to fit (too few to spare any).

    Examples
    --------
    >>> from skace.fitting import holdout_indices
    >>> holdout_indices(20, 0.1)
    array([12, 16])
    """
    n_held = max(1, int(round(fraction * n_structures))) if fraction > 0 else 0
    if n_held == 0 or n_structures - n_held < 10:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_structures, n_held, replace=False))


def _subset(index, structures, energies, forces, energy_scale, weights, species_counts, stress):
    """The arguments of :func:`assemble_block` for the structures ``index`` (sorted)."""
    chosen = np.zeros(len(structures), dtype=bool)
    chosen[index] = True
    sub_forces = None if forces is None else forces[np.repeat(chosen, [len(a) for a in structures])]
    sub_stress = None
    if stress is not None:
        where = np.full(len(structures), -1)
        where[index] = np.arange(len(index))
        sel = where[stress[0]] >= 0
        sub_stress = (where[stress[0][sel]], stress[1][sel])
    return ([structures[k] for k in index], energies[index], sub_forces, energy_scale[index], weights[index],
            species_counts[index], sub_stress)


def _assemble_part(descriptor, structures, energies, forces, energy_scale, weights, species_counts, use_design,
                   progress=None, stress=None, n_blocks=None, index=None):
    if n_blocks is not None and n_blocks > 1 and len(structures) > 1:
        return _assemble_blocks(descriptor, structures, energies, forces, energy_scale, weights, species_counts,
                                use_design, progress, stress, n_blocks, index)
    return assemble_block(descriptor, structures, energies, forces, energy_scale, weights, species_counts,
                          use_design, progress, stress, index)


def _assemble_blocks(descriptor, structures, energies, forces, energy_scale, weights, species_counts, use_design,
                     progress, stress, n_blocks, index=None):
    from joblib import Parallel, delayed

    sizes = np.array([len(a) for a in structures])
    atom_start = np.concatenate([[0], np.cumsum(sizes)])
    # consecutive blocks of about equal atom counts
    cuts = np.searchsorted(atom_start, np.linspace(0, atom_start[-1], n_blocks + 1)[1:-1])
    bounds = [int(b) for b in np.unique(np.concatenate([[0], cuts, [len(structures)]]))]
    s_index = None if stress is None else stress[0]
    tasks = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi <= lo:
            continue
        block_stress = None
        if stress is not None:
            sel = (s_index >= lo) & (s_index < hi)
            block_stress = (s_index[sel] - lo, stress[1][sel])
        block_forces = None if forces is None else forces[atom_start[lo]:atom_start[hi]]
        tasks.append(delayed(assemble_block)(descriptor, structures[lo:hi], energies[lo:hi], block_forces,
                                             energy_scale[lo:hi], weights[lo:hi], species_counts[lo:hi],
                                             use_design, None, block_stress,
                                             np.arange(lo, hi) if index is None else index[lo:hi]))
    parts = []
    for part in Parallel(return_as="generator")(tasks):
        parts.append(part)
        if progress is not None:
            progress(len(part.yE))
    return merge_systems(parts)


def merge_systems(parts):
    """One :class:`LinearSystem` from the systems of consecutive blocks of structures (in order)."""
    def stack(name):
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    def total(name):
        arrays = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        if not arrays:
            return None
        if name == "GF":  # keeps room for the E0 columns (see gram_buffer)
            out = gram_buffer(len(arrays[0]), parts[0].XE.shape[1])
            out += arrays[0]
        else:
            out = arrays[0].copy()
        for a in arrays[1:]:
            out += a
        return out

    first = parts[0]
    has_stress = any(p.mS for p in parts)
    gram_stress = has_stress and any(p.GS is not None for p in parts)
    merged = LinearSystem(
        stack("XE"), stack("yE"), stack("XF"), stack("yF"), total("GF"),
        total("bF") if first.bF is not None else None,
        float(sum(p.yyF for p in parts)), int(sum(p.mF for p in parts)), first.n_features,
        n_atoms=stack("n_atoms"), force_rows=stack("force_rows"))
    if has_stress:
        nf = first.n_features
        if gram_stress:
            merged.GS = sum((p.GS if p.GS is not None else np.zeros((nf, nf)) for p in parts), np.zeros((nf, nf)))
            merged.bS = sum((p.bS if p.bS is not None else np.zeros(nf) for p in parts), np.zeros(nf))
        else:
            merged.XS = np.concatenate([p.XS for p in parts if p.mS])
            merged.yS = np.concatenate([p.yS for p in parts if p.mS])
        merged.yyS = float(sum(p.yyS for p in parts))
        merged.mS = int(sum(p.mS for p in parts))
    return merged


#: Serialises kernel work of blocks that share a process (the kernels use every core already).
_BLOCK_LOCK = __import__("threading").Lock()


def assemble_block(descriptor, structures, energies, forces, energy_scale, weights, species_counts, use_design,
                   progress=None, stress=None, index=None):
    """The :class:`LinearSystem` of one block of structures (see :func:`assemble`).

    ``use_design`` (decided for the whole fit) keeps force and virial rows as
    a design (``"internal"``: the force rows projected on each structure's internal
    displacements, :func:`internal_rows`); otherwise only their Gram matrices are kept.
    ``index``: each structure's place in the whole input, for error messages (default: its own).
    """
    with _BLOCK_LOCK:
        return _assemble_block(descriptor, structures, energies, forces, energy_scale, weights, species_counts,
                               use_design, progress, stress, index)


def internal_rows(rows, structures):
    """Force rows projected on each structure's internal displacements.

    The features are invariant, so their gradient has no rigid-motion component
    (:func:`~skace.structures.internal_displacements`): the projection keeps
    ``rows^T rows`` (up to rounding) in ``r`` fewer rows per structure (6, or 3
    when periodic), and the Gram matrix costs that much less (a fifth for a
    9-atom molecule). The fit keeps the full targets, ``X^T y``, ``|y|^2`` and
    row count, so its solution and evidence are unchanged.

    Parameters
    ----------
    rows : ndarray (3 n_atoms, n_features)
        Force rows of ``structures``, structure by structure, atom by atom, x y z.
    structures : list of ase.Atoms

    Returns
    -------
    ndarray (3 n_atoms - sum r, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import molecule
    >>> from skace import ACETransformer
    >>> water = [molecule("H2O")]
    >>> t = ACETransformer(correlation_order=2, max_degree=4).fit(water)
    >>> rows = t.transform_gradient(water).reshape(9, -1)
    >>> small = internal_rows(rows, water)
    >>> small.shape[0], bool(np.allclose(small.T @ small, rows.T @ rows))
    (3, True)
    """
    out, start = [], 0
    for atoms in structures:
        stop = start + 3 * len(atoms)
        out.append(internal_components(atoms, rows[start:stop]))
        start = stop
    return np.concatenate(out) if out else rows[:0]


def _assemble_block(descriptor, structures, energies, forces, energy_scale, weights, species_counts, use_design,
                    progress, stress, index):
    nf = descriptor.n_features_out_
    B = descriptor._features(structures, index) if descriptor.per_atom is False else None
    if B is None:
        raise ValueError("the descriptor of a regressor must have per_atom=False")
    XE = np.hstack([B, species_counts]) * energy_scale[:, None]
    yE = energies * energy_scale
    has_stress = stress is not None and len(stress[0]) > 0
    if has_stress:
        s_index, s_virial = stress
        s_row = np.full(len(structures), -1, dtype=np.int64)
        s_row[s_index] = np.arange(len(s_index))
        yS = (s_virial * energy_scale[s_index, None]).ravel()
    if forces is None:
        sizes = np.array([len(a) for a in structures])  # one energy row each: the CV groups
        if not has_stress:
            return LinearSystem(XE, yE, None, None, None, None, 0.0, 0, nf, n_atoms=sizes)
        W = descriptor.transform_virial([structures[k] for k in s_index])
        XS = (W * energy_scale[s_index, None, None]).reshape(-1, nf)
        return LinearSystem(XE, yE, None, None, None, None, 0.0, 0, nf, XS=XS, yS=yS, yyS=float(yS @ yS),
                            mS=len(yS), n_atoms=sizes)
    n_atoms = len(forces)
    atom_weight = np.repeat(weights, [len(a) for a in structures])
    yF = (forces * atom_weight[:, None]).ravel()
    yyF, mF = float(yF @ yF), len(yF)
    force_rows = None
    if use_design == "internal":
        force_rows = np.array([internal_dimension(a) for a in structures])
        yF = internal_rows(yF[:, None], structures)[:, 0]
    XF = np.empty((len(yF), nf)) if use_design else None
    GF = None if use_design else gram_buffer(nf, XE.shape[1])
    bF = np.zeros(nf)
    XS = np.empty((len(yS), nf)) if has_stress and use_design else None
    GS = np.zeros((nf, nf)) if has_stress and not use_design else None
    bS = np.zeros(nf) if has_stress else None
    a0 = r0 = 0
    # gradient chunks of at most 512 MiB: they sit beside the Gram matrices
    for sl, grad, vir in descriptor._gradient_chunks(structures, min(descriptor.max_memory, 512), has_stress, index):
        n = grad.shape[0]
        rows = grad.reshape(3 * n, nf)
        rows *= -np.repeat(atom_weight[a0:a0 + n], 3)[:, None]  # F = -dE/dr
        if use_design:
            if force_rows is not None:
                rows = internal_rows(rows, structures[sl])
            XF[r0:r0 + len(rows)] = rows
            r0 += len(rows)
        else:
            gram_update(GF, internal_rows(rows, structures[sl]))
            bF += rows.T @ yF[3 * a0:3 * (a0 + n)]
        if has_stress:
            local = np.flatnonzero(s_row[sl] >= 0)
            if len(local):
                srows = (vir[local] * energy_scale[sl][local, None, None]).reshape(-1, nf)
                r = s_row[sl.start + local]
                target = (6 * r[:, None] + np.arange(6)).ravel()
                if use_design:
                    XS[target] = srows
                else:
                    gram_update(GS, srows)
                    bS += srows.T @ yS[target]
        a0 += n
        if progress is not None:
            progress(sl.stop - sl.start)
    if GF is not None:
        symmetrize_upper(GF)
    if GS is not None:
        symmetrize_upper(GS)
    extra = {}
    if has_stress:
        extra = dict(XS=XS, yS=yS if use_design else None, GS=GS, bS=None if use_design else bS,
                     yyS=float(yS @ yS), mS=len(yS))
    return LinearSystem(XE, yE, XF, yF if use_design else None, GF, bF, yyF, mF, nf,
                        n_atoms=np.array([len(a) for a in structures]), force_rows=force_rows, **extra)
