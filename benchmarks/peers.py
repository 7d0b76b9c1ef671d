"""Timing harness for *peer* ACE / SOAP codes, for comparison with skace.

Each ``*_features`` / ``*_soap`` / ``*_energy_forces`` function below takes a
list of :class:`ase.Atoms`, builds the peer's descriptor (or potential), times
it and returns a JSON-serialisable ``dict``.  Common keys:

``code``
    Name and version of the peer package.
``n_features_per_element``
    Number of features (basis functions) per central element, where the peer
    has such a notion; ``n_features_total`` is their sum (the number of
    feature columns a model over all elements has).
``us_per_atom``
    Best (minimum over ``n_repeat`` passes over all structures, after one
    warm-up call) wall time per atom of the timed core call, in microseconds;
    ``us_per_atom_median`` is the median pass.  ``us_per_atom_pass`` is the
    whole best pass (core call plus any other phases, reported as
    ``us_per_atom_<phase>``) and ``cpu_us_per_atom_pass`` its process CPU
    time: single-threaded, ``cpu_over_wall`` is ~1 (above 1 means several
    threads ran), which is how a run shows that it was single-threaded.
``wall_s``
    Total wall time of the function call (setup, warm-up, checks, repeats).
``settings``
    Every hyper-parameter used.

Peers (none is a dependency of skace; each is imported lazily):

* ``pyace`` (``pip install python-ace==0.4.0rc1``): pacemaker's C++ ACE.
* ``featomic`` (``pip install featomic``): SOAP power spectrum (Rust).
* ``dscribe`` (``pip install dscribe``): SOAP (C++).

A missing peer makes its function raise :class:`PeerUnavailable` (a subclass
of :class:`ImportError`); :func:`run_all` catches it and records the error.
The module itself imports only the standard library and numpy.

Threads
-------
Timings are meant to be single-threaded.  Call :func:`set_single_thread_env`
*before* numpy / featomic / numba are imported (``python -m`` this module does
so), or export ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
NUMBA_NUM_THREADS=1 RAYON_NUM_THREADS=1``.  featomic parallelises with rayon,
whose thread count is fixed the first time featomic computes anything in the
process; :func:`featomic_soap` sets ``RAYON_NUM_THREADS`` itself if it is
unset, but cannot change it afterwards.  pyace and dscribe's C++ are serial
(dscribe's ``n_jobs`` is kept at 1).  BLAS / OpenMP pools are additionally
limited with ``threadpoolctl`` when it is installed.

Running ``python benchmarks/peers.py`` (``--help`` for options) times every
available peer on ten rMD17 aspirin configurations and prints one JSON
document.  To time skace in the same process, put the repository on
``PYTHONPATH`` of the environment that has the peers.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "RAYON_NUM_THREADS",
)

if __name__ == "__main__":  # before numpy loads its BLAS
    for _var in THREAD_ENV_VARS:
        os.environ[_var] = "1"

import numpy as np  # noqa: E402

__all__ = [
    "PeerUnavailable",
    "set_single_thread_env",
    "limited_threads",
    "available_peers",
    "load_rmd17",
    "pyace_basis",
    "pyace_features",
    "pyace_energy_forces",
    "featomic_soap",
    "dscribe_soap",
    "run_all",
]

#: pacemaker's usual template for (radial, angular) maxima by body order,
#: truncated to the requested correlation order (nu = 1 ... 6).
PACE_NRADMAX_BY_ORDERS = (15, 6, 4, 3, 2, 2)
PACE_LMAX_BY_ORDERS = (0, 3, 3, 2, 2, 1)


class PeerUnavailable(ImportError):
    """Raised when a peer package is not installed (or fails to import)."""


# --------------------------------------------------------------------------
# environment helpers
# --------------------------------------------------------------------------


def set_single_thread_env(n_threads: int = 1, overwrite: bool = True) -> Dict[str, str]:
    """Set the usual thread-count environment variables to ``n_threads``.

    Only effective for libraries that have not initialised their thread pools
    yet, so call it at the very start of a benchmark script.  Returns the
    variables as they are afterwards.
    """
    for var in THREAD_ENV_VARS:
        if overwrite or var not in os.environ:
            os.environ[var] = str(n_threads)
    return {var: os.environ[var] for var in THREAD_ENV_VARS}


@contextlib.contextmanager
def limited_threads(n_threads: int = 1):
    """Limit BLAS / OpenMP thread pools with threadpoolctl, if it is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n_threads):
        yield


def _package_version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def available_peers() -> Dict[str, Optional[str]]:
    """Installed version of each peer distribution (``None`` if missing)."""
    return {
        "python-ace": _package_version("python-ace"),
        "featomic": _package_version("featomic"),
        "dscribe": _package_version("dscribe"),
    }


def _import(module: str, install_hint: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # includes a broken binary extension
        raise PeerUnavailable(
            f"peer module {module!r} is not importable ({exc}); install it with "
            f"`pip install {install_hint}`"
        ) from exc


def _import_pyace():
    """Import pyace without letting it reconfigure the caller's logging.

    ``pyace/__init__.py`` calls ``logging.basicConfig`` and sets the *root*
    logger to INFO; undo both so the benchmark's output stays clean.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        pyace = _import("pyace", "python-ace==0.4.0rc1")
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    # pyace's own loggers are chatty at INFO when a basis is built
    logging.getLogger("pyace").setLevel(logging.WARNING)
    return pyace


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def _rmd17_dir() -> Path:
    env = os.environ.get("SKACE_RMD17_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "shared" / "data" / "rmd17",
                      here.parents[1] / "shared" / "data" / "rmd17",
                      Path("/work/shared/data/rmd17")):
        if candidate.is_dir():
            return candidate
    return Path("/work/shared/data/rmd17")


def rmd17_source(data: Optional[str], tool: str, molecule: str = "aspirin"):
    """``(where, file)``: ``data`` (a split file, a folder in either rMD17 layout, or None for
    the default folder) checked to hold ``molecule``'s training split; exits with the reader's
    message (which says where to get the data) if it does not."""
    from skace.datasets import rmd17_files

    where = data if data else str(_rmd17_dir())
    try:
        file, _ = rmd17_files(molecule, "train", where)
    except FileNotFoundError as err:
        sys.exit(f"{tool}: {err}")
    return where, file


def load_rmd17(molecule: str = "aspirin", n_configs: int = 10, split: str = "train",
               start: int = 0, path: Optional[str] = None) -> list:
    """Configurations ``start:start + n_configs`` of an rMD17 split as non-periodic ase.Atoms.

    ``path``: a split file or a folder in either layout that ``skace.datasets.rmd17_files``
    reads; by default ``$SKACE_RMD17_DIR`` or the project's ``shared/data/rmd17``.
    Energies (kcal/mol) and forces (kcal/mol/Å) are stored in ``atoms.info``
    and ``atoms.arrays['forces_ref']``.
    """
    import ase
    from skace.datasets import rmd17_arrays

    data = rmd17_arrays(molecule, split, start + n_configs, path if path else _rmd17_dir())
    numbers = data["nuclear_charges"]
    structures = []
    for pos, energy, frc in zip(data["coords"][start:], data["energies"][start:], data["forces"][start:],
                                strict=True):
        atoms = ase.Atoms(numbers=numbers, positions=pos, pbc=False)
        atoms.info["energy_ref"] = float(energy)
        atoms.arrays["forces_ref"] = np.asarray(frc, dtype=float)
        structures.append(atoms)
    return structures


def _elements_of(structures: Sequence) -> List[str]:
    symbols = set()
    for atoms in structures:
        symbols.update(atoms.get_chemical_symbols())
    return sorted(symbols)


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------


def _time_passes(one_pass: Callable[[], Dict[str, float]], n_atoms: int,
                 n_repeat: int) -> Dict[str, object]:
    """Run ``one_pass`` ``n_repeat`` times and summarise per-atom timings.

    ``one_pass`` returns the wall seconds of its phases; the phase ``core`` is
    the one reported as ``us_per_atom``.  The best pass is the one with the
    smallest total; its phases are reported as ``us_per_atom_<phase>``.
    """
    passes = []
    for _ in range(max(1, n_repeat)):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        phases = one_pass()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        passes.append((phases["core"], wall, cpu, phases))
    best = min(passes, key=lambda p: p[0])
    per_atom = 1e6 / n_atoms
    out: Dict[str, object] = {
        "us_per_atom": best[0] * per_atom,
        "us_per_atom_median": statistics.median(p[0] for p in passes) * per_atom,
        "us_per_atom_pass": best[1] * per_atom,
        "cpu_us_per_atom_pass": best[2] * per_atom,
        "cpu_over_wall": best[2] / best[1] if best[1] > 0 else None,
        "n_repeat": len(passes),
        "n_atoms_per_pass": n_atoms,
    }
    for name, seconds in best[3].items():
        if name != "core":
            out[f"us_per_atom_{name}"] = seconds * per_atom
    return out


def _rel_err(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max |analytic - numeric| / max |numeric|."""
    scale = float(np.max(np.abs(numeric)))
    return float(np.max(np.abs(analytic - numeric)) / scale) if scale > 0 else float("nan")


# --------------------------------------------------------------------------
# pyace (pacemaker)
# --------------------------------------------------------------------------


class PyaceBasis:
    """A linear pyace B-basis and the objects that must outlive its evaluators.

    Attributes: ``config`` (``pyace.BBasisConfiguration``), ``basis``
    (``pyace.ACEBBasisSet``), ``elements`` (in the basis' order),
    ``n_functions`` (dict element -> number of B functions), ``cutoff``,
    ``settings`` and ``build_s``.

    Segfault traps (pyace 0.4.0rc1): ``ACECalculator(ACEBEvaluator(basis))``
    or ``calc.set_evaluator(ACEBEvaluator(basis))`` with an inline temporary
    evaluator segfaults at ``compute``; dropping the ``ACEBBasisSet`` while an
    evaluator built from it is alive gives ``MemoryError:
    std::bad_array_new_length`` (or worse).  Keep basis, evaluator and
    calculator all referenced, as :meth:`calculator` does.
    """

    def __init__(self, config, basis, settings: dict, build_s: float):
        self.config = config
        self.basis = basis
        self.settings = settings
        self.build_s = build_s
        self.elements = [str(e) for e in basis.elements_name]
        self.cutoff = float(basis.cutoffmax)
        self.n_functions = {
            el: len(rank1) + len(higher)
            for el, rank1, higher in zip(self.elements, basis.basis_rank1, basis.basis,
                                         strict=True)
        }
        self._keep_alive: list = []

    @property
    def elements_mapper(self) -> Dict[str, int]:
        """element symbol -> species index, as pyace's neighbour list wants."""
        return {el: i for i, el in enumerate(self.elements)}

    def calculator(self):
        """A ``pyace.ACECalculator`` on an ``ACEBEvaluator`` of this basis.

        The evaluator is stored on this object so it cannot be collected.
        """
        from pyace import ACEBEvaluator, ACECalculator

        evaluator = ACEBEvaluator(self.basis)
        calc = ACECalculator()
        calc.set_evaluator(evaluator)
        self._keep_alive.append((evaluator, calc))
        return calc

    def atomic_environment(self, atoms):
        """pyace neighbour list (``ACEAtomicEnvironment``) of an ase.Atoms."""
        from pyace.atomicenvironment import aseatoms_to_atomicenvironment

        return aseatoms_to_atomicenvironment(atoms, cutoff=self.cutoff,
                                             elements_mapper_dict=self.elements_mapper)


def pyace_basis(elements: Iterable[str], cutoff: float = 5.0, correlation_order: int = 4,
                nradmax_by_orders: Optional[Sequence[int]] = None,
                lmax_by_orders: Optional[Sequence[int]] = None,
                number_of_functions_per_element: Optional[int] = None,
                radbase: str = "SBessel", radparameters: Sequence[float] = (5.25,),
                dcut: float = 0.01, coefficients: str = "random", seed: int = 0) -> PyaceBasis:
    """Build a linear multi-species pyace B-basis with
    ``pyace.create_multispecies_basis_config``.

    The basis has every body order ``nu = 1 .. correlation_order`` (pacemaker
    "rank"), with radial / angular maxima ``nradmax_by_orders[nu-1]`` /
    ``lmax_by_orders[nu-1]`` (defaults: pacemaker's template
    ``(15, 6, 4, 3, 2, 2)`` / ``(0, 3, 3, 2, 2, 1)`` truncated to
    ``correlation_order``).  This full basis is large (~25,500 functions per
    element for C/H/O at nu = 4); ``number_of_functions_per_element`` trims
    it with pacemaker's own "power_order" ladder to about that many functions
    per element (the actual count, which can be a little lower, is in
    ``PyaceBasis.n_functions``).  Smaller maxima give a smaller basis too,
    and a cheaper one per function (fewer high-degree products).

    The embedding is linear (``FinnisSinclairShiftedScaled`` with
    ``fs_parameters=[1, 1]``, ``ndensity=1``), i.e. a linear ACE model
    ``E_i = sum_k c_k B_k(i)``; ``coefficients="random"`` draws
    ``c_k ~ 1e-4 N(0, 1)`` (seeded), ``"zero"`` leaves them zero.
    """
    _import_pyace()
    from pyace import ACEBBasisSet, create_multispecies_basis_config

    elements = sorted(set(elements))
    nradmax = list(nradmax_by_orders or PACE_NRADMAX_BY_ORDERS[:correlation_order])
    lmax = list(lmax_by_orders or PACE_LMAX_BY_ORDERS[:correlation_order])
    if len(nradmax) != len(lmax):
        raise ValueError("nradmax_by_orders and lmax_by_orders must have the same length")
    functions: dict = {"ALL": {"nradmax_by_orders": nradmax, "lmax_by_orders": lmax}}
    if number_of_functions_per_element:
        functions["number_of_functions_per_element"] = int(number_of_functions_per_element)
    potential_config = {
        "deltaSplineBins": 0.001,
        "elements": elements,
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled",
                               "fs_parameters": [1, 1], "ndensity": 1}},
        "bonds": {"ALL": {"radbase": radbase, "radparameters": list(radparameters),
                          "rcut": float(cutoff), "dcut": float(dcut),
                          "NameOfCutoffFunction": "cos"}},
        "functions": functions,
    }
    settings = {
        "elements": elements, "cutoff": float(cutoff), "correlation_order": len(nradmax),
        "nradmax_by_orders": nradmax, "lmax_by_orders": lmax,
        "number_of_functions_per_element_requested": number_of_functions_per_element,
        "radbase": radbase, "radparameters": list(radparameters), "coefficients": coefficients,
    }
    start = time.perf_counter()
    state = np.random.get_state()
    np.random.seed(seed)  # pyace draws its random coefficients from numpy's global RNG
    try:
        config = create_multispecies_basis_config(potential_config,
                                                  func_coefs_initializer=coefficients)
    finally:
        np.random.set_state(state)
    basis = ACEBBasisSet(config)
    return PyaceBasis(config, basis, settings, time.perf_counter() - start)


def _basis_from_kwargs(structures, elements, basis_kwargs, basis):
    if basis is not None:
        return basis
    return pyace_basis(elements or _elements_of(structures), **basis_kwargs)


def _pyace_feature_check(pb: PyaceBasis, calc, atoms, check_atoms, h=1e-4) -> dict:
    """Finite-difference check of pyace's ``forces_bfuncs``.

    ``forces_bfuncs[j, k, :]`` is ``-d/dr_j sum_i B_k(i)`` (gradient of the
    structure sum of each basis function, with the sign of a force), where
    the function index ``k`` runs over all elements' functions in order.
    """
    shift = np.cumsum([0] + [pb.n_functions[e] for e in pb.elements])
    species = [pb.elements_mapper[s] for s in atoms.get_chemical_symbols()]

    def summed(positions):
        trial = atoms.copy()
        trial.positions = positions
        calc.compute(pb.atomic_environment(trial), compute_projections=True)
        total = np.zeros(shift[-1])
        for s, proj in zip(species, calc.projections, strict=True):
            total[shift[s]:shift[s] + len(proj)] += proj
        return total

    calc.compute(pb.atomic_environment(atoms), compute_projections=True, compute_b_grad=True)
    analytic = np.asarray(calc.forces_bfuncs)
    analytic_cols, numeric_cols = [], []
    for j in check_atoms:
        for d in range(3):
            plus, minus = atoms.positions.copy(), atoms.positions.copy()
            plus[j, d] += h
            minus[j, d] -= h
            numeric = -(summed(plus) - summed(minus)) / (2 * h)
            analytic_cols.append(analytic[j, :, d])
            numeric_cols.append(numeric)
    err = _rel_err(np.concatenate(analytic_cols), np.concatenate(numeric_cols))
    return {"grad_check_rel_err": err, "grad_check_atoms": list(check_atoms),
            "grad_check_step": h}


def pyace_features(structures: Sequence, elements: Optional[Sequence[str]] = None,
                   cutoff: float = 5.0, correlation_order: int = 4,
                   nradmax_by_orders: Optional[Sequence[int]] = None,
                   lmax_by_orders: Optional[Sequence[int]] = None,
                   number_of_functions_per_element: Optional[int] = 3000,
                   n_repeat: int = 3, basis: Optional[PyaceBasis] = None,
                   check_gradients: bool = True,
                   check_atoms: Sequence[int] = (0, 7, 20)) -> dict:
    """Time pacemaker ACE per-atom features *with gradients* (pyace).

    API: ``ACECalculator.compute(ae, compute_projections=True,
    compute_b_grad=True)`` on an ``ACEBEvaluator``, ``ae`` from
    ``pyace.atomicenvironment.aseatoms_to_atomicenvironment``.  Outputs:
    ``calc.projections`` (per atom, the B functions of its element) and
    ``calc.forces_bfuncs`` of shape (n_atoms, n_functions_all_elements, 3):
    the gradient of the *structure sum* of each B function (force sign) --
    what a linear energy+force fit needs, not the per-(centre, neighbour)
    gradients that featomic / dscribe return.

    ``us_per_atom`` times ``compute`` only;  ``us_per_atom_neighbour_list``
    is building ``ae`` and ``us_per_atom_extract`` converting the two outputs
    to numpy (pybind returns nested lists -- expensive, ~3 * n_functions_all
    floats per atom).  Basis settings are those of :func:`pyace_basis`, or
    pass a prebuilt ``basis`` (then basis arguments are ignored).
    """
    wall0 = time.perf_counter()
    pb = _basis_from_kwargs(structures, elements, dict(
        cutoff=cutoff, correlation_order=correlation_order,
        nradmax_by_orders=nradmax_by_orders, lmax_by_orders=lmax_by_orders,
        number_of_functions_per_element=number_of_functions_per_element), basis)
    pyace = _import_pyace()
    calc = pb.calculator()
    n_atoms = sum(len(a) for a in structures)

    result: dict = {"code": f"pyace {pyace.__version__}", "peer": "pyace",
                    "what": "ACE B-basis projections + structure-summed position gradients",
                    "n_features_per_element": dict(pb.n_functions),
                    "n_features_total": int(sum(pb.n_functions.values())),
                    "basis_build_s": pb.build_s, "settings": dict(pb.settings)}

    def one_pass():
        t_nl = t_core = t_extract = 0.0
        for atoms in structures:
            t0 = time.perf_counter()
            ae = pb.atomic_environment(atoms)
            t1 = time.perf_counter()
            calc.compute(ae, compute_projections=True, compute_b_grad=True)
            t2 = time.perf_counter()
            projections = [np.asarray(p) for p in calc.projections]
            gradients = np.asarray(calc.forces_bfuncs)
            t3 = time.perf_counter()
            t_nl, t_core, t_extract = t_nl + t1 - t0, t_core + t2 - t1, t_extract + t3 - t2
        result["gradient_shape_last"] = list(gradients.shape)
        result["projection_len_first_atom"] = int(len(projections[0]))
        return {"core": t_core, "neighbour_list": t_nl, "extract": t_extract}

    with limited_threads(1):
        if check_gradients:
            result.update(_pyace_feature_check(pb, calc, structures[0], check_atoms))
        calc.compute(pb.atomic_environment(structures[0]), compute_projections=True,
                     compute_b_grad=True)  # warm-up
        result.update(_time_passes(one_pass, n_atoms, n_repeat))
    result["wall_s"] = time.perf_counter() - wall0
    return result


def pyace_energy_forces(structures: Sequence, elements: Optional[Sequence[str]] = None,
                        cutoff: float = 5.0, correlation_order: int = 4,
                        nradmax_by_orders: Optional[Sequence[int]] = None,
                        lmax_by_orders: Optional[Sequence[int]] = None,
                        number_of_functions_per_element: Optional[int] = 3000,
                        n_repeat: int = 3, basis: Optional[PyaceBasis] = None,
                        evaluator: str = "recursive", compute_projections: bool = False,
                        check_forces: bool = True,
                        check_atoms: Sequence[int] = (0, 7, 20)) -> dict:
    """Time energy + forces of a linear ACE potential via ``pyace.PyACECalculator``.

    The potential is the :func:`pyace_basis` basis with its random (nonzero)
    coefficients.  ``evaluator`` picks pyace's evaluation path:

    ``"recursive"`` (default; what LAMMPS ``pair_style pace`` uses by default)
        ``ACEBBasisSet.to_ACECTildeBasisSet()`` evaluated by
        ``ACERecursiveEvaluator`` (``PyACECalculator(ctilde,
        recursive_evaluator=True, recursive=True)``): products are shared
        through a recursion DAG -- ~3-4x faster than the product form for a
        ~3,000-function nu = 4 basis.
    ``"ctilde"``
        the same C-tilde basis, product form (``ACECTildeEvaluator``; LAMMPS
        ``pair_style pace product``).
    ``"b"``
        the ``ACEBBasisSet`` itself (``ACEBEvaluator``).

    Do not time with zero coefficients: the recursive evaluator prunes
    zero terms and then does almost nothing.  PyACECalculator
    computes per-atom projections by default (``calc.compute_projections =
    True``, for extrapolation grades); that extra work is switched off unless
    ``compute_projections=True``.

    ``us_per_atom`` is the ASE-level cost per structure (``calc.reset()``,
    ``get_potential_energy``, ``get_forces``, including pyace's neighbour
    list); ``us_per_atom_compute`` is the bare C++ ``ACECalculator.compute``
    on prebuilt neighbour lists.  ``force_check_rel_err`` compares forces
    with central finite differences of the energy on ``check_atoms``.
    """
    wall0 = time.perf_counter()
    pb = _basis_from_kwargs(structures, elements, dict(
        cutoff=cutoff, correlation_order=correlation_order,
        nradmax_by_orders=nradmax_by_orders, lmax_by_orders=lmax_by_orders,
        number_of_functions_per_element=number_of_functions_per_element), basis)
    pyace = _import_pyace()
    options: dict = {}
    if evaluator in ("ctilde", "recursive"):
        potential = pb.basis.to_ACECTildeBasisSet()
        if evaluator == "recursive":
            options = {"recursive_evaluator": True, "recursive": True}
    elif evaluator == "b":
        potential = pb.basis
    else:
        raise ValueError("evaluator must be 'recursive', 'ctilde' or 'b'")
    # PyACECalculator keeps the potential and its evaluator referenced
    calc = pyace.PyACECalculator(potential, **options)
    calc.compute_projections = bool(compute_projections)
    n_atoms = sum(len(a) for a in structures)
    settings = dict(pb.settings, evaluator=evaluator, compute_projections=compute_projections)
    result: dict = {"code": f"pyace {pyace.__version__}", "peer": "pyace",
                    "what": "linear ACE energy + forces (ASE calculator)",
                    "n_features_per_element": dict(pb.n_functions),
                    "n_features_total": int(sum(pb.n_functions.values())),
                    "basis_build_s": pb.build_s, "settings": settings}

    def energy_forces(atoms):
        calc.reset()
        energy = calc.get_potential_energy(atoms)
        return energy, calc.get_forces(atoms)

    def one_pass():
        t0 = time.perf_counter()
        for atoms in structures:
            energy, forces = energy_forces(atoms)
        result["energy_last"] = float(energy)
        result["max_abs_force_last"] = float(np.max(np.abs(forces)))
        return {"core": time.perf_counter() - t0}

    with limited_threads(1):
        if check_forces:
            atoms = structures[0].copy()
            forces = energy_forces(atoms)[1]
            h, analytic, numeric = 1e-4, [], []
            for j in check_atoms:
                for d in range(3):
                    trial = atoms.copy()
                    trial.positions[j, d] += h
                    e_plus = energy_forces(trial)[0]
                    trial.positions[j, d] -= 2 * h
                    e_minus = energy_forces(trial)[0]
                    analytic.append(forces[j, d])
                    numeric.append(-(e_plus - e_minus) / (2 * h))
            result["force_check_rel_err"] = _rel_err(np.array(analytic), np.array(numeric))
        energy_forces(structures[0])  # warm-up
        result.update(_time_passes(one_pass, n_atoms, n_repeat))

        environments = [calc.get_atomic_env(atoms) for atoms in structures]
        ace = calc.ace  # the calculator's own ACECalculator (evaluator held by calc)

        def bare_pass():
            t0 = time.perf_counter()
            for ae in environments:
                ace.compute(ae, compute_projections=False)
            return {"core": time.perf_counter() - t0}

        bare = _time_passes(bare_pass, n_atoms, n_repeat)
        result["us_per_atom_compute"] = bare["us_per_atom"]
    result["wall_s"] = time.perf_counter() - wall0
    return result


# --------------------------------------------------------------------------
# featomic
# --------------------------------------------------------------------------


def _featomic_calculator(featomic, cutoff, max_radial, max_angular, gaussian_width,
                         smoothing_width):
    return featomic.SoapPowerSpectrum(
        cutoff={"radius": float(cutoff),
                "smoothing": {"type": "ShiftedCosine", "width": float(smoothing_width)}},
        density={"type": "Gaussian", "width": float(gaussian_width)},
        basis={"type": "TensorProduct", "max_angular": int(max_angular),
               "radial": {"type": "Gto", "max_radial": int(max_radial)}},
    )


def _featomic_check(calculator, atoms, check_atoms, h=1e-4) -> dict:
    """Central finite differences of featomic's position gradients."""
    def values(positions):
        trial = atoms.copy()
        trial.positions = positions
        tmap = calculator.compute(trial)
        return {tuple(int(v) for v in key.values): block.values.copy()
                for key, block in tmap.items()}

    tmap = calculator.compute(atoms, gradients=["positions"])
    analytic, numeric = [], []
    for j in check_atoms:
        for d in range(3):
            plus, minus = atoms.positions.copy(), atoms.positions.copy()
            plus[j, d] += h
            minus[j, d] -= h
            v_plus, v_minus = values(plus), values(minus)
            for key, block in tmap.items():
                k = tuple(int(v) for v in key.values)
                fd = (v_plus[k] - v_minus[k]) / (2 * h)
                grad = block.gradient("positions")
                rows = np.asarray(grad.samples.values)
                mine = np.zeros_like(fd)
                sel = rows[:, 2] == j
                mine[rows[sel, 0]] = grad.values[sel, d, :]
                analytic.append(mine.ravel())
                numeric.append(fd.ravel())
    return {"grad_check_rel_err": _rel_err(np.concatenate(analytic), np.concatenate(numeric)),
            "grad_check_atoms": list(check_atoms), "grad_check_step": h}


def featomic_soap(structures: Sequence, cutoff: float = 5.0, max_radial: int = 7,
                  max_angular: int = 6, gradients: bool = True, n_repeat: int = 3,
                  gaussian_width: float = 0.3, smoothing_width: float = 0.5,
                  batch: bool = True, check_gradients: bool = True,
                  check_atoms: Sequence[int] = (0, 7, 20), n_threads: int = 1) -> dict:
    """Time featomic's SOAP power spectrum (``featomic.SoapPowerSpectrum``).

    Hypers follow featomic >= 0.6: ``max_radial`` is the largest radial
    *index*, so there are ``max_radial + 1`` GTO radial functions (the
    defaults, 8 radial x l <= 6, give 2,688 features per central element for
    C/H/O and 8,064 over the three elements).  ``compute(systems,
    gradients=["positions"])`` returns a metatensor TensorMap with one block
    per (center_type, neighbor_1_type, neighbor_2_type); each block has
    ``(max_angular+1) * (max_radial+1)**2`` properties and position
    gradients per (centre, neighbour) pair.

    ``batch=True`` passes all structures in one ``compute`` call, otherwise
    one call per structure.  ``n_threads`` is written to ``RAYON_NUM_THREADS``
    only if that variable is unset (rayon reads it once per process).
    """
    os.environ.setdefault("RAYON_NUM_THREADS", str(n_threads))
    wall0 = time.perf_counter()
    featomic = _import("featomic", "featomic")
    calculator = _featomic_calculator(featomic, cutoff, max_radial, max_angular,
                                      gaussian_width, smoothing_width)
    grads = ["positions"] if gradients else None
    n_atoms = sum(len(a) for a in structures)

    from ase.data import chemical_symbols

    probe = calculator.compute(list(structures))  # no gradients: just the block sizes
    per_center: Dict[str, int] = {}
    for key, block in probe.items():
        symbol = chemical_symbols[int(key["center_type"])]
        per_center[symbol] = per_center.get(symbol, 0) + block.values.shape[1]
    result: dict = {
        "code": f"featomic {_package_version('featomic')}", "peer": "featomic",
        "what": "SOAP power spectrum" + (" + position gradients" if gradients else ""),
        "n_features_per_element": per_center,
        "n_features_total": int(sum(per_center.values())),
        "settings": {"cutoff": cutoff, "max_radial": max_radial,
                     "n_radial": max_radial + 1, "max_angular": max_angular,
                     "gaussian_width": gaussian_width, "smoothing_width": smoothing_width,
                     "radial_basis": "Gto", "gradients": grads, "batch": batch,
                     "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS")},
    }

    def one_pass():
        t0 = time.perf_counter()
        if batch:
            out = calculator.compute(list(structures), gradients=grads)
        else:
            for atoms in structures:
                out = calculator.compute(atoms, gradients=grads)
        elapsed = time.perf_counter() - t0
        if gradients:
            result["n_gradient_rows_last"] = int(sum(
                b.gradient("positions").values.shape[0] for b in out.blocks()))
        return {"core": elapsed}

    with limited_threads(1):
        if check_gradients and gradients:
            result.update(_featomic_check(calculator, structures[0], check_atoms))
        calculator.compute(structures[0], gradients=grads)  # warm-up
        result.update(_time_passes(one_pass, n_atoms, n_repeat))
    result["wall_s"] = time.perf_counter() - wall0
    return result


# --------------------------------------------------------------------------
# dscribe
# --------------------------------------------------------------------------


def _dscribe_check(soap, atoms, attach: bool, h=1e-4) -> float:
    """max relative error of dscribe's derivatives vs central differences.

    The finite differences move the atom *and* the SOAP centre on it (the
    physical descriptor), which is what ``attach=True`` differentiates.
    """
    analytic = soap.derivatives(atoms, attach=attach, method="analytical",
                                return_descriptor=False, n_jobs=1)
    numeric = np.zeros_like(analytic)
    for j in range(len(atoms)):
        for d in range(3):
            trial = atoms.copy()
            trial.positions[j, d] += h
            plus = soap.create(trial, n_jobs=1)
            trial.positions[j, d] -= 2 * h
            minus = soap.create(trial, n_jobs=1)
            numeric[:, j, d, :] = (plus - minus) / (2 * h)
    return _rel_err(analytic, numeric)


def dscribe_soap(structures: Sequence, cutoff: float = 5.0, n_max: int = 8, l_max: int = 6,
                 sigma: float = 0.3, species: Optional[Sequence[str]] = None,
                 n_repeat: int = 3, check_gradients: bool = True,
                 method: str = "analytical") -> dict:
    """Time dscribe's SOAP with position derivatives.

    API: ``dscribe.descriptors.SOAP(species=..., r_cut=..., n_max=...,
    l_max=..., sigma=..., rbf="gto", periodic=False)`` and
    ``soap.derivatives(atoms, attach=True, method="analytical",
    return_descriptor=True, n_jobs=1)`` per structure; derivatives are dense,
    shape (n_centres, n_atoms, 3, n_features).  ``n_max`` is the number of
    radial functions (not an index as in featomic).  dscribe has no split by
    central element: every atom gets the same ``n_features``.

    ``attach=True`` is essential: with the default ``attach=False`` dscribe
    keeps the centres fixed in space while differentiating, which is not the
    gradient of the descriptor of a moving atom.  Both are checked against
    central finite differences on the first structure when
    ``check_gradients`` (``grad_check_rel_err`` for ``attach=True``,
    ``grad_check_rel_err_attach_false`` for the wrong default).
    """
    wall0 = time.perf_counter()
    _import("dscribe", "dscribe")
    from dscribe.descriptors import SOAP

    species = sorted(species or _elements_of(structures))
    soap = SOAP(species=species, r_cut=float(cutoff), n_max=int(n_max), l_max=int(l_max),
                sigma=float(sigma), rbf="gto", periodic=False)
    n_features = int(soap.get_number_of_features())
    n_atoms = sum(len(a) for a in structures)
    result: dict = {
        "code": f"dscribe {_package_version('dscribe')}", "peer": "dscribe",
        "what": "SOAP + position derivatives (attach=True)",
        "n_features_per_element": {el: n_features for el in species},
        "n_features_total": n_features,
        "settings": {"cutoff": cutoff, "n_max": n_max, "l_max": l_max, "sigma": sigma,
                     "species": species, "rbf": "gto", "method": method, "attach": True},
    }

    def one_pass():
        t0 = time.perf_counter()
        for atoms in structures:
            derivatives, descriptor = soap.derivatives(
                atoms, attach=True, method=method, return_descriptor=True, n_jobs=1)
        result["derivatives_shape_last"] = list(derivatives.shape)
        return {"core": time.perf_counter() - t0}

    with limited_threads(1):
        if check_gradients:
            result["grad_check_rel_err"] = _dscribe_check(soap, structures[0], attach=True)
            result["grad_check_rel_err_attach_false"] = _dscribe_check(
                soap, structures[0], attach=False)
        soap.derivatives(structures[0], attach=True, method=method, n_jobs=1)  # warm-up
        result.update(_time_passes(one_pass, n_atoms, n_repeat))
    result["wall_s"] = time.perf_counter() - wall0
    return result


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def run_all(structures: Sequence, n_repeat: int = 3, cutoff: float = 5.0,
            pyace_functions_per_element: int = 3000,
            pyace_nradmax_by_orders: Optional[Sequence[int]] = None,
            pyace_lmax_by_orders: Optional[Sequence[int]] = None,
            check_gradients: bool = True) -> dict:
    """Run every peer; a missing or failing peer gives ``{"error": ...}``.

    pyace features and energy+forces share one basis; energy+forces is timed
    with the recursive and the product (C-tilde) evaluator.
    """
    out: dict = {"peers_installed": available_peers(),
                 "n_structures": len(structures),
                 "n_atoms": sum(len(a) for a in structures),
                 "thread_env": {v: os.environ.get(v) for v in THREAD_ENV_VARS}}

    def attempt(name, fn):
        try:
            out[name] = fn()
        except PeerUnavailable as exc:
            out[name] = {"error": str(exc)}
        except Exception as exc:  # a peer failing must not stop the others
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}

    basis_holder: dict = {}

    def basis():
        if "basis" not in basis_holder:
            basis_holder["basis"] = pyace_basis(
                _elements_of(structures), cutoff=cutoff,
                nradmax_by_orders=pyace_nradmax_by_orders, lmax_by_orders=pyace_lmax_by_orders,
                number_of_functions_per_element=pyace_functions_per_element)
        return basis_holder["basis"]

    attempt("pyace_features", lambda: pyace_features(
        structures, basis=basis(), n_repeat=n_repeat, check_gradients=check_gradients))
    for evaluator in ("recursive", "ctilde"):
        attempt(f"pyace_energy_forces_{evaluator}", lambda ev=evaluator: pyace_energy_forces(
            structures, basis=basis(), n_repeat=n_repeat, evaluator=ev,
            check_forces=check_gradients))
    attempt("featomic_soap", lambda: featomic_soap(
        structures, cutoff=cutoff, n_repeat=n_repeat, check_gradients=check_gradients))
    attempt("dscribe_soap", lambda: dscribe_soap(
        structures, cutoff=cutoff, n_repeat=n_repeat, check_gradients=check_gradients))
    return out


def _main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-configs", type=int, default=10)
    parser.add_argument("--molecule", default="aspirin")
    parser.add_argument("--n-repeat", type=int, default=3)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--pyace-functions", type=int, default=3000,
                        help="pyace basis functions per element (0: full template basis)")
    parser.add_argument("--pyace-nradmax", type=int, nargs="+", default=None)
    parser.add_argument("--pyace-lmax", type=int, nargs="+", default=None)
    parser.add_argument("--no-check", action="store_true", help="skip gradient checks")
    args = parser.parse_args(argv)

    structures = load_rmd17(args.molecule, args.n_configs)
    results = run_all(structures, n_repeat=args.n_repeat, cutoff=args.cutoff,
                      pyace_functions_per_element=args.pyace_functions or None,
                      pyace_nradmax_by_orders=args.pyace_nradmax,
                      pyace_lmax_by_orders=args.pyace_lmax,
                      check_gradients=not args.no_check)
    results["molecule"] = args.molecule
    json.dump(results, sys.stdout, indent=1, default=float)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
