"""``ACECalculator``: a fitted skace model as an ASE calculator."""

from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress


class ACECalculator(Calculator):
    """ASE calculator for a fitted :class:`skace.ACERegressor`.

    Gives ``energy``, ``free_energy``, ``forces``, per-atom ``energies`` and,
    for cells periodic in all directions, ``stress`` (eV/Å^3, Voigt order),
    all from one pass of the adjoint kernel.

    Parameters
    ----------
    model : ACERegressor or str or path
        A fitted model, or a model file written by :func:`skace.save`.
    device : {"cpu", "cuda"}, optional
        Where energies and forces are computed; None: the model's ``device``.
        With "cuda" the basis and coefficients stay in GPU memory between
        calls; each call moves positions in and energies and forces out.

    Examples
    --------
    >>> from ase.build import molecule
    >>> from skace import ACECalculator, ACERegressor, ACETransformer
    >>> from skace.datasets import load_sample
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(load_sample(n=30))
    >>> atoms = load_sample("test", n=1)[0]
    >>> atoms.calc = ACECalculator(model)
    >>> atoms.get_forces().shape
    (9, 3)

    The same on an NVIDIA GPU (needs ``numba-cuda``):

    >>> from skace.gpu import cuda_available
    >>> if cuda_available():
    ...     atoms.calc = ACECalculator(model, device="cuda")
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, device=None, **kwargs):
        from sklearn.utils.validation import check_is_fitted

        if not hasattr(model, "_evaluate"):
            from .io import load_potential

            model = load_potential(model)
        check_is_fitted(model, "coef_")
        self.model = model
        self.device = getattr(model, "device", "cpu") if device is None else device
        if self.device != "cpu":
            from .gpu import check_device

            check_device(self.device, "ACECalculator")
        super().__init__(**kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from .structures import as_structure_list

        super().calculate(atoms, properties, system_changes)
        atoms = as_structure_list(self.atoms, name="atoms")[0]  # NaN positions would reach the kernels
        want_stress = "stress" in properties
        if want_stress and not atoms.pbc.all():
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        if self.device == "cuda":
            from .gpu import evaluate

            res = evaluate(self.model, [atoms], forces=True, stress=bool(atoms.pbc.all()), labels=["atoms"])
            if getattr(self.model, "baseline", None) is not None:
                self.model._add_baseline([atoms], res, True, bool(atoms.pbc.all()))
        else:
            res = self.model._evaluate([atoms], forces=True, stress=bool(atoms.pbc.all()), labels=["atoms"])
        if "energy_offset" not in res:  # a baseline without per-atom energies has none to give
            self.results["energies"] = res["energies"]
        energy = float(self.model._structure_energies(res)[0])
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = res["forces"]
        if atoms.pbc.all():
            self.results["stress"] = full_3x3_to_voigt_6_stress(res["virial"][0] / atoms.get_volume())
        return self.results

