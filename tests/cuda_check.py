"""CPU vs CUDA backend on tiny systems; prints one JSON object of maximum errors.

Run in a fresh process (numba reads ``NUMBA_ENABLE_CUDASIM`` when it is first
imported): ``NUMBA_ENABLE_CUDASIM=1 python tests/cuda_check.py core`` (or ``extra``).
Without the variable it runs on a real GPU. Each error is
``max |cuda - cpu| / max(1, max |cpu|)``; ``tests/test_cuda.py`` asserts on them.
"""

import argparse
import json

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule

from skace import ACECalculator, ACERegressor, ACETransformer

RNG = np.random.default_rng(7)


def error(cpu, gpu):
    cpu, gpu = np.asarray(cpu, dtype=float), np.asarray(gpu, dtype=float)
    assert cpu.shape == gpu.shape, (cpu.shape, gpu.shape)
    return float(np.abs(cpu - gpu).max() / max(1.0, np.abs(cpu).max()))


def molecules():
    out = []
    for name in ["CH3OH", "H2O", "NH3"]:
        a = molecule(name)
        a.positions += 0.1 * RNG.standard_normal(a.positions.shape)
        out.append(a)
    # a random mixed cluster with every element, exercising all element pairs
    cluster = Atoms("CHONHC", positions=RNG.uniform(0.0, 2.6, (6, 3)))
    out.append(cluster)
    return out


def periodic():
    cubic = bulk("Cu", "fcc", a=3.6, cubic=True)
    cubic.symbols[[1, 2]] = "Ni"
    cubic.rattle(0.05, seed=1)
    prim = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))  # triclinic, cutoff > cell: several images
    prim.symbols[1] = "Ni"
    prim.rattle(0.05, seed=2)
    slab = cubic.copy()
    slab.pbc = [True, True, False]
    return [cubic, prim, slab]


def random_model(structures, **descriptor):
    """A model on these elements whose every feature has a random O(1) coefficient."""
    for a in structures:
        a.info["energy"] = float(RNG.standard_normal())
        a.arrays["forces"] = RNG.standard_normal((len(a), 3))
    model = ACERegressor(ACETransformer(**descriptor), solver="ridge", alpha=1e-3).fit(structures)
    model.coef_ = RNG.standard_normal(model.coef_.shape) / np.sqrt(model.coef_.size)
    model._fold()
    return model


def compare_model(model, structures, stress, report, tag):
    cpu = model.set_params(device="cpu")
    E, F = cpu.predict_energy_forces(structures)
    Ea = cpu.predict_atomic_energies(structures)
    S = cpu.predict_stress(structures) if stress else None
    gpu = model.set_params(device="cuda")
    E2, F2 = gpu.predict_energy_forces(structures)
    report[f"{tag}_energy"] = error(E, E2)
    report[f"{tag}_forces"] = error(F, F2)
    report[f"{tag}_atomic_energies"] = error(Ea, gpu.predict_atomic_energies(structures))
    report[f"{tag}_predict"] = error(E, gpu.predict(structures))
    if stress:
        report[f"{tag}_stress"] = error(S, gpu.predict_stress(structures))
    model.set_params(device="cpu")


def compare_features(descriptor, structures, report, tag, gradients=False):
    cpu = ACETransformer(**descriptor).fit(structures)
    gpu = ACETransformer(**descriptor, device="cuda").fit(structures)
    report[f"{tag}_features"] = error(cpu.transform(structures), gpu.transform(structures))
    if gradients:
        report[f"{tag}_feature_gradients"] = error(cpu.transform_gradient(structures),
                                                   gpu.transform_gradient(structures))
    cpu.set_params(per_atom=True)
    gpu.set_params(per_atom=True)
    report[f"{tag}_features_per_atom"] = error(cpu.transform(structures), gpu.transform(structures))


def core(report):
    """Molecules (energies, forces, per-atom energies, features; gradients on a small basis), a periodic
    alloy (with stress), the calculator, atoms without neighbours, nu = 1."""
    mols = molecules()
    basis = dict(cutoff=3.0, correlation_order=3, max_degree=6, l_weight=1.0)
    compare_model(random_model(mols, radial_basis="agnesi", **basis), mols, False, report, "molecules")
    compare_features(dict(radial_basis="agnesi", **basis), mols, report, "molecules_agnesi")
    small = dict(cutoff=3.0, correlation_order=3, max_degree=4, l_weight=1.0, radial_basis="agnesi")
    compare_features(small, mols[1:], report, "small_molecules", gradients=True)

    # overlapping atoms give the CPU backend's error
    bad = molecule("H2O")
    bad.positions[2] = bad.positions[1] + [0.0, 0.0, 0.05]  # closer than OVERLAP_DISTANCE, not on top
    try:
        ACETransformer(**basis, device="cuda").fit(mols).transform([mols[0], bad])
        report["overlap_error"] = None
    except ValueError as err:
        report["overlap_error"] = str(err)

    cells = periodic()[:2]
    model = random_model(cells, **PERIODIC_BASIS)
    compare_model(model, cells, True, report, "periodic")
    from skace.gpu import release

    release(model)  # the calculator below starts from a fresh copy on the device

    atoms = cells[0].copy()
    atoms.calc = ACECalculator(model, device="cpu")
    ref = {k: np.array(atoms.calc.get_property(k, atoms)) for k in ["energy", "energies", "forces", "stress"]}
    atoms.calc = ACECalculator(model, device="cuda")
    for k, v in ref.items():
        report[f"calculator_{k}"] = error(v, atoms.calc.get_property(k, atoms))
    report["reference_scale"] = float(min(np.abs(ref["energy"]), np.abs(ref["forces"]).max()))

    # atoms without neighbours, a batch without any pair, a basis without products (nu = 1)
    lonely = [Atoms("CO", positions=[[0, 0, 0], [9, 0, 0]]), Atoms("H", positions=[[0, 0, 0]])]
    two_body = dict(basis, correlation_order=1)
    compare_model(random_model(mols + lonely, radial_basis="agnesi", **two_body), mols + lonely, False, report,
                  "two_body")
    compare_model(random_model(mols + lonely, radial_basis="agnesi", **basis), lonely, False, report, "no_pairs")


def extra(report):
    """Every radial family, a slab (mixed periodicity), feature gradients (molecules, periodic) and a fit
    on the GPU, many small chunks, the binned search for molecules."""
    import skace.gpu
    from skace import structures as host_structures

    mols = molecules()
    basis = dict(cutoff=3.0, correlation_order=3, max_degree=6, l_weight=1.0)
    compare_features(dict(radial_basis="agnesi", **basis), mols, report, "molecules_agnesi", gradients=True)
    for family in ["bessel", "gaussian", "chebexp"]:
        compare_features(dict(radial_basis=family, **basis), mols, report, f"molecules_{family}")
    cells = periodic()
    model = random_model(cells, **PERIODIC_BASIS)
    compare_model(model, cells, False, report, "mixed_pbc")
    compare_features(PERIODIC_BASIS, cells, report, "periodic", gradients=True)

    # a fit whose features and gradients come from the GPU: the same coefficients
    fits = [ACERegressor(ACETransformer(**PERIODIC_BASIS, device=device), solver="ridge", alpha=1e-3, cache=False)
            .fit(cells) for device in ("cpu", "cuda")]
    report["fit_coefficients"] = error(fits[0].coef_, fits[1].coef_)
    skace.gpu.CHUNK_MEMORY_MIB = 0.01  # one atom per chunk
    host_structures.SMALL_MOLECULE = 4  # molecules above 4 atoms take the binned search
    try:
        compare_model(model, cells, False, report, "chunked")
        compare_features(PERIODIC_BASIS, cells[:2], report, "chunked_periodic", gradients=True)
        compare_model(random_model(mols, radial_basis="agnesi", **basis), mols, False, report, "binned_molecules")
    finally:
        skace.gpu.CHUNK_MEMORY_MIB = None
        host_structures.SMALL_MOLECULE = 256


PERIODIC_BASIS = dict(cutoff=4.2, correlation_order=3, max_degree=5, l_weight=1.0, radial_basis="bessel")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["core", "extra"])
    args = parser.parse_args()
    report = {}
    {"core": core, "extra": extra}[args.part](report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
