"""Datasets: rMD17 reader and the bundled ethanol sample.

Energies and forces are converted from kcal/mol (rMD17's unit) to eV and
eV/Å and attached to each ``ase.Atoms`` as ``atoms.info["energy"]`` and
``atoms.arrays["forces"]``, the keys :class:`skace.ACERegressor` reads by
default.
"""

import operator
import os
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import kcal, mol

from ._emt import make_emt_dataset  # noqa: F401

#: 1 kcal/mol in eV.
KCAL_PER_MOL = kcal / mol

RMD17_MOLECULES = (
    "aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde",
    "naphthalene", "paracetamol", "salicylic", "toluene", "uracil",
)

#: Environment variable naming the folder that holds the rMD17 ``.npz`` files.
RMD17_ENV = "SKACE_RMD17_DIR"


def _structures(numbers, coords, energies, forces, indices=None):
    """``ase.Atoms`` with energy (eV) and forces (eV/Å) from kcal/mol arrays."""
    out = []
    for k in range(len(coords)):
        atoms = Atoms(numbers=numbers, positions=coords[k])
        atoms.info["energy"] = float(energies[k]) * KCAL_PER_MOL
        atoms.arrays["forces"] = np.asarray(forces[k], dtype=float) * KCAL_PER_MOL
        if indices is not None:
            atoms.info["rmd17_index"] = int(indices[k])
        out.append(atoms)
    return out


def _first(n):
    """The slice of the first ``n`` configurations (all for None)."""
    if n is None:
        return slice(None)
    try:
        k = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be a whole number of configurations, got {n!r}") from None
    if k < 0:
        raise ValueError(f"n must be >= 0 (the first n configurations), got {k}")
    return slice(0, k)


def _default_rmd17_dirs():
    env = os.environ.get(RMD17_ENV)
    if env:
        yield Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        yield parent / "shared" / "data" / "rmd17"
        yield parent.parent / "shared" / "data" / "rmd17"


#: The rMD17 release (Christensen & von Lilienfeld 2020, CC0): figshare article 12672038.
RMD17_URL = "https://figshare.com/ndownloader/files/23950376"


def _release_files(folder, name, split):
    """``(npz, index csv)`` of the release's own layout under ``folder``, or None."""
    for root in (folder, folder / "rmd17"):
        npz = root / "npz_data" / f"rmd17_{name}.npz"
        index = root / "splits" / f"index_{split}_01.csv"
        if npz.is_file() and index.is_file():
            return npz, index
    return None


def rmd17_files(molecule, split="train", path=None):
    """Where one molecule's split 01 is: ``(npz file, index file or None)``.

    Either a file ``rmd17_<molecule>_<split>_01.npz`` holding that split alone
    (index file None), or the release as downloaded, whose
    ``rmd17/npz_data/rmd17_<molecule>.npz`` holds every configuration and
    ``rmd17/splits/index_<split>_01.csv`` the split's rows. Raises a
    FileNotFoundError that says where to get the data when neither is found.

    Examples
    --------
    >>> from skace.datasets import rmd17_files
    >>> npz, index = rmd17_files("ethanol", "test")  # doctest: +SKIP
    """
    name = "salicylic" if molecule in ("salicylic acid", "salicylic_acid") else molecule
    if name not in RMD17_MOLECULES:
        raise ValueError(f"unknown rMD17 molecule {molecule!r}; choose one of {list(RMD17_MOLECULES)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    filename = f"rmd17_{name}_{split}_01.npz"
    candidates = [Path(path)] if path is not None else list(_default_rmd17_dirs())
    for folder in candidates:
        if (folder / filename).is_file():
            return folder / filename, None
        if folder.is_file() and folder.name == filename:
            return folder, None
        release = _release_files(folder, name, split)
        if release is not None:
            return release
    where = str(path) if path is not None else f"${RMD17_ENV} or shared/data/rmd17"
    raise FileNotFoundError(
        f"rMD17 file {filename} (or the release's npz_data/rmd17_{name}.npz with splits/index_{split}_01.csv) "
        f"not found in {where}. Get the revised MD17 data set (Christensen & von Lilienfeld 2020, CC0) from "
        f"{RMD17_URL} (rmd17.tar.bz2), unpack it, and set {RMD17_ENV} to the folder holding rmd17/ "
        "(or pass path=... to load_rmd17)."
    )


def _split_rows(index_file, n_all, sl):
    """Rows of the release's npz that make up a split (``sl`` of its index file)."""
    try:
        with warnings.catch_warnings():  # an empty file: said below, as an error
            warnings.simplefilter("ignore", UserWarning)
            rows = np.loadtxt(index_file, dtype=np.int64, ndmin=1)
    except ValueError as err:
        raise ValueError(f"{index_file} is not a list of configuration numbers, one per line ({err})") from None
    if len(rows) == 0:
        raise ValueError(f"{index_file} lists no configurations")
    if rows.min() < 0 or rows.max() >= n_all:
        raise ValueError(f"{index_file} lists configurations outside the {n_all} of the release's file")
    return rows[sl]


def rmd17_arrays(molecule, split="train", n=None, path=None):
    """The arrays of one molecule's split 01 in rMD17's own units (kcal/mol, Å).

    Parameters
    ----------
    molecule, split, n, path
        As for :func:`load_rmd17`.

    Returns
    -------
    dict
        ``nuclear_charges`` (n_atoms,), ``coords`` (n, n_atoms, 3) in Å,
        ``energies`` (n,) in kcal/mol, ``forces`` (n, n_atoms, 3) in
        kcal/mol/Å, and ``old_indices`` (n,) where the file has them.

    Examples
    --------
    >>> from skace.datasets import rmd17_arrays
    >>> rmd17_arrays("ethanol", n=10)["coords"].shape  # doctest: +SKIP
    (10, 9, 3)
    """
    file, index_file = rmd17_files(molecule, split, path)
    sl = _first(n)
    with np.load(file) as d:
        n_all = len(d["energies"])
        rows = np.arange(n_all)[sl] if index_file is None else _split_rows(index_file, n_all, sl)
        out = {key: d[key][rows] for key in ("coords", "energies", "forces", "old_indices") if key in d}
        out["nuclear_charges"] = d["nuclear_charges"]
    return out


def load_rmd17(molecule, split="train", n=None, path=None):
    """Read one molecule of rMD17 (split 01) as a list of ``ase.Atoms``.

    Parameters
    ----------
    molecule : str
        One of :data:`RMD17_MOLECULES` ("salicylic acid" is accepted).
    split : {"train", "test"}
        The 1000-configuration training or test part of split 01.
    n : int, optional
        Keep the first ``n`` configurations.
    path : str or Path, optional
        Folder with the split's files (``rmd17_<molecule>_<split>_01.npz``)
        or with the release as downloaded from :data:`RMD17_URL` and unpacked
        (``rmd17/npz_data``, ``rmd17/splits``); by default ``$SKACE_RMD17_DIR``.

    Returns
    -------
    list of ase.Atoms
        Energies in ``info["energy"]`` (eV), forces in ``arrays["forces"]`` (eV/Å).

    Examples
    --------
    >>> from skace.datasets import load_rmd17
    >>> train = load_rmd17("ethanol", n=10)  # doctest: +SKIP
    >>> len(train), len(train[0])  # doctest: +SKIP
    (10, 9)
    """
    d = rmd17_arrays(molecule, split, n, path)
    return _structures(d["nuclear_charges"], d["coords"], d["energies"], d["forces"], d.get("old_indices"))


def load_sample(split="train", n=None):
    """The bundled sample: rMD17 ethanol, 250 training and 250 test configurations.

    Taken from the first configurations of rMD17 split 01 (CC0), so examples
    and the README's command work with no download.

    Parameters
    ----------
    split : {"train", "test"}
    n : int, optional
        Keep the first ``n`` configurations.

    Returns
    -------
    list of ase.Atoms
        With ``info["energy"]`` (eV) and ``arrays["forces"]`` (eV/Å).

    Examples
    --------
    >>> from skace.datasets import load_sample
    >>> train = load_sample()
    >>> len(train), train[0].get_chemical_formula()
    (250, 'C2H6O')
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    with resources.files(__package__).joinpath("data/ethanol_sample.npz").open("rb") as fh:
        with np.load(fh) as d:
            sl = _first(n)
            return _structures(d["nuclear_charges"], d[f"{split}_coords"][sl], d[f"{split}_energies"][sl],
                               d[f"{split}_forces"][sl], d[f"{split}_old_indices"][sl])
