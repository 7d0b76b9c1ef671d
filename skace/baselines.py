"""Baselines for delta learning: physical terms an ACE model is fitted on top of.

:class:`skace.ACERegressor` accepts any ASE calculator as ``baseline``: its
energies, forces and stresses are subtracted from the targets before the fit
and added back in every prediction (and in :class:`skace.ACECalculator`).
:class:`PairRepulsion` is a built-in short-range repulsive pair term for
well-behaved close contacts, where training data are usually absent.
"""

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import covalent_radii
from ase.stress import full_3x3_to_voigt_6_stress

from .kernels.neighbours import check_overlap, neighbour_list

#: e^2 / (4 pi eps0) in eV Å.
COULOMB = 14.399645
#: Universal ZBL screening function: coefficients and exponents.
ZBL_C = np.array([0.18175, 0.50986, 0.28022, 0.02817])
ZBL_D = np.array([3.19980, 0.94229, 0.40290, 0.20162])


class PairRepulsion(Calculator):
    """A smooth, short-range repulsive pair potential as an ASE calculator.

    ``E = sum_{i<j} phi(r_ij) S(r_ij)`` with either the universal
    Ziegler-Biersack-Littmark screened nuclear repulsion (``kind="zbl"``),
    ``phi(r) = k Z_i Z_j / r * sum_m c_m exp(-d_m r / a)``, ``a = 0.4685 /
    (Z_i^0.23 + Z_j^0.23)`` Å, or an inverse-power wall ``phi(r) = epsilon
    (sigma / r)^12`` (``kind="r12"``), switched off smoothly (continuous
    second derivative) between ``inner`` and ``cutoff``:
    ``S = 1 - 10 x^3 + 15 x^4 - 6 x^5``, ``x = (r - inner) / (cutoff - inner)``.

    Parameters
    ----------
    kind : {"zbl", "r12"}, default="zbl"
    cutoff : float or "covalent", default="covalent"
        Distance (Å) beyond which the term is zero; "covalent": ``scale``
        times the sum of the two elements' covalent radii, per element pair.
    scale : float, default=0.75
        Multiplier of the covalent radii for ``cutoff="covalent"``.
    inner : float, default=0.5
        Start of the switching region as a fraction of the cutoff.
    epsilon : float, default=1.0
        Energy scale (eV) of ``kind="r12"``.
    sigma : float, optional
        Length scale (Å) of ``kind="r12"``; default: the pair's inner radius.

    Examples
    --------
    >>> from ase import Atoms
    >>> from skace.baselines import PairRepulsion
    >>> dimer = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 1.2]])
    >>> dimer.calc = PairRepulsion()
    >>> bool(dimer.get_potential_energy() > 0), bool(dimer.get_forces()[1, 2] > 0)
    (True, True)
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, kind="zbl", cutoff="covalent", scale=0.75, inner=0.5, epsilon=1.0, sigma=None, **kwargs):
        if kind not in ("zbl", "r12"):
            raise ValueError(f"kind must be 'zbl' or 'r12', got {kind!r}")
        if not (cutoff == "covalent" or (isinstance(cutoff, (int, float)) and cutoff > 0)):
            raise ValueError(f"cutoff must be a positive number or 'covalent', got {cutoff!r}")
        if not 0 <= inner < 1:
            raise ValueError(f"inner must be a fraction in [0, 1), got {inner!r}")
        if not scale > 0 or not epsilon > 0 or (sigma is not None and not sigma > 0):
            raise ValueError("scale, epsilon and sigma must be positive")
        self.kind, self.cutoff, self.scale, self.inner = kind, cutoff, float(scale), float(inner)
        self.epsilon, self.sigma = float(epsilon), sigma
        super().__init__(**kwargs)

    def __repr__(self):
        return (f"PairRepulsion(kind={self.kind!r}, cutoff={self.cutoff!r}, scale={self.scale!r}, "
                f"inner={self.inner!r}, epsilon={self.epsilon!r}, sigma={self.sigma!r})")

    def pair_cutoff(self, Zi, Zj):
        """Cutoff (Å) of the element pairs with atomic numbers ``Zi``, ``Zj`` (arrays)."""
        if self.cutoff == "covalent":
            return self.scale * (covalent_radii[Zi] + covalent_radii[Zj])
        return np.full(np.broadcast(Zi, Zj).shape, float(self.cutoff))

    def pair_energy(self, r, Zi, Zj):
        """``phi(r) S(r)`` and its derivative with respect to ``r`` (arrays of pairs)."""
        rc = self.pair_cutoff(Zi, Zj)
        r_in = self.inner * rc
        if self.kind == "zbl":
            a = 0.46850 / (Zi ** 0.23 + Zj ** 0.23)
            ex = np.exp(-np.outer(r / a, ZBL_D))
            screen = ex @ ZBL_C
            dscreen = -(ex @ (ZBL_C * ZBL_D)) / a
            k = COULOMB * Zi * Zj
            phi = k * screen / r
            dphi = k * (dscreen / r - screen / r**2)
        else:
            sigma = r_in if self.sigma is None else float(self.sigma)
            phi = self.epsilon * (sigma / r) ** 12
            dphi = -12.0 * phi / r
        x = np.clip((r - r_in) / (rc - r_in), 0.0, 1.0)
        S = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
        dS = -30.0 * x**2 * (1.0 - x) ** 2 / (rc - r_in)
        return phi * S, dphi * S + phi * dS

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        Z = atoms.numbers
        present = np.unique(Z)
        rmax = float(self.pair_cutoff(present[:, None], present[None, :]).max())
        first, j, D, close = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, rmax)
        try:
            check_overlap("the structure", close, first, j, D)
        except ValueError as err:
            raise ValueError(f"PairRepulsion: {err}") from None
        n = len(atoms)
        i = np.repeat(np.arange(n), np.diff(first))
        r = np.sqrt(np.einsum("pd,pd->p", D, D))
        keep = r < self.pair_cutoff(Z[i], Z[j])
        i, j, D, r = i[keep], j[keep], D[keep], r[keep]
        e, de = self.pair_energy(r, Z[i], Z[j])
        # every pair appears twice (i -> j and j -> i): half of each to its centre
        energies = 0.5 * np.bincount(i, e, minlength=n)
        g = (0.5 * de / r)[:, None] * D  # dE / dD_p
        forces = np.zeros((n, 3))
        for a in range(3):
            forces[:, a] = np.bincount(i, g[:, a], minlength=n) - np.bincount(j, g[:, a], minlength=n)
        self.results["energies"] = energies
        self.results["energy"] = self.results["free_energy"] = float(energies.sum())
        self.results["forces"] = forces
        volume = abs(np.linalg.det(atoms.cell.array))
        if volume > 1e-9:
            virial = g.T @ D
            self.results["stress"] = full_3x3_to_voigt_6_stress(0.5 * (virial + virial.T) / volume)
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell of non-zero volume")


def baseline_terms(calc, structures, forces=True, virial=False, name="X"):
    """Energies, per-atom energies, forces and virials of ``calc`` on ``structures``.

    Each structure is evaluated on a copy (the caller's atoms keep their own
    calculator).

    Returns
    -------
    dict
        ``energy`` (n_structures,); ``energies`` (total atoms,) or None when
        the calculator has no per-atom energies; ``forces`` (total atoms, 3)
        if ``forces``; ``virial`` (n_structures, 6), ``stress * volume`` in
        Voigt order, if ``virial``.
    """
    per_atom = "energies" in getattr(calc, "implemented_properties", ())
    energy = np.empty(len(structures))
    energies, F, W = [], [], np.zeros((len(structures), 6))
    for k, atoms in enumerate(structures):
        a = atoms.copy()
        a.calc = calc
        try:
            energy[k] = a.get_potential_energy()
            if per_atom:
                energies.append(np.asarray(a.get_potential_energies(), dtype=float))
            if forces:
                F.append(np.asarray(a.get_forces(), dtype=float))
            if virial:
                W[k] = np.asarray(a.get_stress(voigt=True), dtype=float) * abs(np.linalg.det(a.cell.array))
        except PropertyNotImplementedError as err:
            raise ValueError(f"baseline {type(calc).__name__} cannot evaluate {name}[{k}]: {err}") from None
        finally:
            a.calc = None
    out = dict(energy=energy, energies=np.concatenate(energies) if per_atom else None)
    out["forces"] = np.concatenate(F) if forces else None
    out["virial"] = W if virial else None
    for key, v in out.items():
        if v is not None and not np.all(np.isfinite(v)):
            raise ValueError(f"baseline {type(calc).__name__} gave NaN or infinite {key}")
    return out
