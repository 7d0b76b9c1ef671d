"""Synthetic materials data: fcc metals and alloys sampled by molecular dynamics under ASE's EMT."""

from numbers import Integral, Real

import numpy as np
from ase.build import bulk

#: EMT lattice constants (Å) near which the fcc cells are built (ASE's EMT minima, rounded).
EMT_LATTICE = {"Cu": 3.59, "Ni": 3.51, "Ag": 4.06, "Au": 4.06, "Pd": 3.94, "Pt": 3.92, "Al": 4.05}


def make_emt_dataset(n_structures=40, elements=("Cu", "Au"), size=2, temperatures=(300.0, 800.0, 1500.0),
                     max_strain=0.04, vacancy_fraction=0.25, md_steps=20, timestep=5.0, random_state=None):
    """Configurations of an fcc metal or alloy from Langevin MD under ASE's EMT calculator.

    Every structure is an independent short trajectory: a cubic fcc cell of
    ``size**3`` conventional cells (4 atoms each), a random composition (the
    first element is the host; the others substitute a random fraction of up
    to one half of the sites), a lattice constant from Vegard's law, a random
    symmetric strain of up to ``max_strain`` per component, a vacancy with
    probability ``vacancy_fraction``, then ``md_steps`` steps of Langevin
    dynamics at a temperature drawn from ``temperatures`` (K). The last frame
    is kept, labelled by EMT.

    Parameters
    ----------
    n_structures : int, default=40
    elements : sequence of str, default=("Cu", "Au")
        Elements EMT knows: Cu, Ni, Ag, Au, Pd, Pt, Al. One element gives the pure metal.
    size : int, default=2
        Conventional cells along each axis (``4 * size**3`` atoms, one fewer with a vacancy).
    temperatures : sequence of float, default=(300, 800, 1500)
        Langevin temperatures (K), cycled over the structures.
    max_strain : float, default=0.04
        Largest absolute strain component.
    vacancy_fraction : float, default=0.25
        Probability that a structure has one vacancy.
    md_steps : int, default=20
        Langevin steps per structure (from a lattice with Maxwell-Boltzmann velocities).
    timestep : float, default=5.0
        MD time step (fs).
    random_state : int or numpy Generator, optional

    Returns
    -------
    list of ase.Atoms
        Periodic structures with ``info["energy"]`` (eV), ``arrays["forces"]``
        (eV/Å), ``info["stress"]`` (eV/Å^3, ASE's Voigt order and sign) and
        ``info["temperature"]``, ``info["strain"]``, ``info["vacancy"]``,
        ``info["config_type"]``; no calculator attached.

    Examples
    --------
    >>> from skace.datasets import make_emt_dataset
    >>> data = make_emt_dataset(n_structures=3, size=1, md_steps=5, random_state=0)
    >>> len(data), sorted(set(data[0].get_chemical_symbols())) <= ["Au", "Cu"]
    (3, True)
    >>> data[0].info["stress"].shape
    (6,)
    """
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    try:  # ASE >= 3.29 deprecates MaxwellBoltzmannDistribution for this equivalent
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    elements = list(elements)
    unknown = [e for e in elements if e not in EMT_LATTICE]
    if not elements or unknown:
        raise ValueError(f"elements must be among EMT's {sorted(EMT_LATTICE)}, got {elements}")
    for name, value, low in (("n_structures", n_structures, 1), ("size", size, 1), ("md_steps", md_steps, 0)):
        if not isinstance(value, Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not temperatures or any(not isinstance(t, Real) or t < 0 for t in temperatures):
        raise ValueError(f"temperatures must be non-negative numbers, got {temperatures!r}")
    if not 0 <= max_strain < 0.5:
        raise ValueError(f"max_strain must be in [0, 0.5), got {max_strain!r}")
    if not 0 <= vacancy_fraction <= 1:
        raise ValueError(f"vacancy_fraction must be in [0, 1], got {vacancy_fraction!r}")
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    out = []
    for k in range(n_structures):
        T = float(temperatures[k % len(temperatures)])
        host = elements[0]
        atoms = bulk(host, "fcc", a=EMT_LATTICE[host], cubic=True).repeat((size, size, size))
        symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
        if len(elements) > 1:
            fraction = rng.uniform(0.0, 0.5)
            sub = rng.random(len(atoms)) < fraction
            symbols[sub] = rng.choice(elements[1:], sub.sum())
        atoms.set_chemical_symbols(list(symbols))
        a = float(np.mean([EMT_LATTICE[s] for s in symbols]))  # Vegard's law
        atoms.set_cell(atoms.cell.array * a / EMT_LATTICE[host], scale_atoms=True)
        eps = rng.uniform(-max_strain, max_strain, (3, 3))
        eps = 0.5 * (eps + eps.T)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps).T, scale_atoms=True)
        vacancy = bool(rng.random() < vacancy_fraction) and len(atoms) > 1
        if vacancy:
            del atoms[int(rng.integers(len(atoms)))]
        atoms.calc = EMT()
        if md_steps:
            thermalize_momenta(atoms, temperature_K=T, rng=rng)
            dyn = Langevin(atoms, timestep * units.fs, temperature_K=T, friction=0.02, fixcm=False, rng=rng)
            dyn.run(md_steps)
        frame = atoms.copy()
        frame.info["energy"] = float(atoms.get_potential_energy())
        frame.arrays["forces"] = atoms.get_forces().copy()
        frame.info["stress"] = atoms.get_stress().copy()
        frame.info["temperature"] = T
        frame.info["strain"] = eps.copy()
        frame.info["vacancy"] = vacancy
        frame.info["config_type"] = ("vacancy" if vacancy else "bulk") + f"_{int(T)}K"
        del frame.arrays["momenta"]
        out.append(frame)
    return out
