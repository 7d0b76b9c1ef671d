"""The ``skace`` command line: fit, evaluate, features, md, sparsify, explain, export.

Every user mistake (missing file, unknown element, bad option) ends as one
line on stderr and exit status 2, never a traceback.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from .structures import as_structure_list

EPILOG = "DATA is a file ase.io.read understands (extxyz, ...), 'sample' (the bundled ethanol set), " \
         "'sample-test', or 'rmd17:MOLECULE[:SPLIT[:N]]' (reads $SKACE_RMD17_DIR)."


def read_structures(spec, energy_key="energy", forces_key="forces", limit=None, limit_option="--n-train",
                    check=True):
    """Structures from a DATA argument (see ``EPILOG``), the first ``limit`` (given as
    ``limit_option``) where not None; ``check``: each a usable ``ase.Atoms`` (errors name the
    file and the structure, "data.xyz[3] has ...")."""
    if limit == 0:
        raise ValueError(f"{limit_option} 0 leaves no structures of {spec} to use")
    from .datasets import load_rmd17, load_sample

    if spec in ("sample", "sample-train"):
        structures = load_sample("train")
    elif spec == "sample-test":
        structures = load_sample("test")
    elif spec.startswith("rmd17:"):
        parts = spec.split(":")[1:]
        molecule = parts[0]
        split = parts[1] if len(parts) > 1 else "train"
        n = int(parts[2]) if len(parts) > 2 else None
        structures = load_rmd17(molecule, split, n=n)
    else:
        import ase.io
        from ase.io.formats import UnknownFileTypeError, filetype

        if not os.path.exists(spec):
            raise FileNotFoundError(f"no such data file: {spec}")
        if os.path.isdir(spec) and not os.path.exists(os.path.join(spec, "metadata.json")):
            raise ValueError(f"data {spec} is a folder; give a structure file (extxyz, for example)")
        if os.path.isfile(spec) and os.path.getsize(spec) == 0:
            raise ValueError(f"data file {spec} is empty")
        try:
            fmt = filetype(spec)
        except UnknownFileTypeError:
            raise ValueError(f"cannot read {spec}: not a structure file format ASE recognises "
                             "(extxyz, for example)") from None
        try:
            structures = ase.io.read(spec, index=":")
        except UnknownFileTypeError:  # a name ASE guesses from the extension but cannot read
            raise ValueError(f"cannot read {spec}: ASE has no reader for {fmt!r} files; give a "
                             "structure file (extxyz, for example)") from None
        except Exception as err:  # ase raises many types for unreadable files
            raise ValueError(f"cannot read {spec} (as ASE's format {fmt!r}): {err}") from None
        if not isinstance(structures, list):
            structures = [structures]
    if limit is not None:
        if limit > len(structures):
            print(f"note: {spec} holds {len(structures)} structure(s), fewer than the {limit} asked for")
        structures = structures[:limit]
    return as_structure_list(structures, name=spec) if check else structures


def _bounded(cast, low, strict=False):
    """An argparse ``type``: ``cast(text)``, at least ``low`` (above it if ``strict``)."""
    def parse(text):
        value = cast(text)
        if not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
        return value

    parse.__name__ = cast.__name__  # argparse names the type in "invalid int value"
    return parse


_non_negative = _bounded(int, 0)
_positive_int = _bounded(int, 1)
_positive_float = _bounded(float, 0, strict=True)
_non_negative_float = _bounded(float, 0)


def output_path(path, option, *inputs, saved=False, force=False):
    """``path``, checked before any work is done: a file name (not a folder) in an existing
    folder, none of the command's input files (an output there would destroy it), and not
    an existing file unless ``force`` (``--force``: nothing a user saved is replaced by
    accident). ``saved``: written by :func:`skace.save`, by way of a temporary file beside it."""
    if not path:
        return None
    if path == "-":  # every output here is a file (models are binary): no standard output
        raise ValueError(f"{option} -: these files cannot go to standard output; give a file name")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a folder; give a file name")
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: {folder} is {'a file' if os.path.exists(folder) else 'missing'}, "
                         "not a folder")
    for source in inputs:
        if source and os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
            raise ValueError(f"{option} {path} is also an input; writing there would destroy it")
    if os.path.exists(path) and not force:
        raise ValueError(f"{option} {path} exists; pass --force to replace it")
    # the file the command will create (for skace.save, its temporary one): a name too long
    # or a folder not writable fail now, not after the work
    try:
        if saved:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp"):
                pass
        elif not os.path.exists(path):
            open(path, "x").close()
            os.unlink(path)
        elif not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write there ({err.strerror})") from None
    return path


def _degree(text):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas such as 16,8,7,7, "
                                         f"got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _center_degree(text):
    symbol, sep, degrees = text.partition("=")
    if not sep or not symbol.strip():
        raise argparse.ArgumentTypeError(f"expected SYMBOL=DEGREES such as H=16,8,6.5,5, got {text!r}")
    try:
        return symbol.strip(), _degree(degrees)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"degrees of {symbol.strip()} must be numbers, got {degrees!r}") from None


def _error_table(rows):
    """Energy and force MAE / RMSE (meV, meV/Å) of ``(name, n, errors)`` rows; n/a where the data
    have no forces."""
    cells = [[f"{1000 * r[k]:.2f}" if np.isfinite(r.get(k, np.nan)) else "n/a"
              for k in ("energy_mae", "energy_rmse", "force_mae", "force_rmse")] for _, _, r in rows]
    w = max([10] + [len(c) + 2 for row in cells for c in row])  # columns stay apart for any error
    lines = [f"{'set':<6}{'n':>6}" + "".join(f"{h:>{w}}" for h in ("E MAE", "E RMSE", "F MAE", "F RMSE")),
             f"{'':<6}{'':>6}" + "".join(f"{u:>{w}}" for u in ("meV", "meV", "meV/Å", "meV/Å"))]
    for (name, n, _), row in zip(rows, cells):
        lines.append(f"{name:<6}{n:>6}" + "".join(f"{c:>{w}}" for c in row))
    if any(row[2] == "n/a" for row in cells):
        lines.append("n/a: not every structure in these data has forces")
    return "\n".join(lines)


def check_degrees(args):
    """Fail before any data are read where a degree option gives fewer bounds than
    ``--correlation-order`` needs (one, or one per order)."""
    nu = args.correlation_order
    given = [("--max-degree", args.max_degree)] + [
        (f"--center-max-degree {symbol}", d) for symbol, d in (args.center_max_degree or ())]
    for option, degrees in given:
        if isinstance(degrees, list) and len(degrees) < nu:
            raise ValueError(f"{option} gives {len(degrees)} bounds; --correlation-order {nu} needs one, "
                             f"or one per order ({nu})")


def _degree_params(args, structures):
    """``max_degree`` and ``center_max_degree`` for ``ACETransformer``: the options, or the
    default degrees for the data's elements (one per correlation order) where not given."""
    from . import ACETransformer
    from .regressor import default_budget, default_degrees

    center = dict(args.center_max_degree) if args.center_max_degree else None
    elements = ACETransformer()._elements_of(structures)
    absent = sorted(set(center or ()) - set(elements))
    if absent:
        raise ValueError(f"--center-max-degree names {', '.join(absent)}, not in the data (elements "
                         f"{', '.join(elements)})")
    if args.max_degree is not None:
        return dict(max_degree=args.max_degree, center_max_degree=center)
    nu = args.correlation_order
    fit = lambda ladder: (list(ladder) + list(ladder[-1:]) * nu)[:nu]  # noqa: E731
    if args.max_features is None:  # as ACERegressor's default: a larger basis for few data
        from .fitting import fitting_rows, read_stress

        stress = read_stress(structures, args.stress_key)[0] if getattr(args, "stress_weight", 0.0) > 0 else ()
        budget = default_budget(elements, fitting_rows(structures, getattr(args, "force_weight", 1.0) > 0, stress))
    else:
        budget = args.max_features
    default = default_degrees(elements, budget)
    merged = {s: fit(d) for s, d in (default["center_max_degree"] or {}).items()}
    merged.update(center or {})
    return dict(max_degree=fit(default["max_degree"]), center_max_degree=merged or None)


def check_elements(structures, name, known, lacking="the model lacks", first=0):
    """Fail, naming the structure (``name[first + k]``), where ``structures`` hold an element
    outside ``known`` (the elements of a model, or of the training data: ``lacking`` says which)."""
    for k, atoms in enumerate(structures):
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(known))
        if unknown:
            raise ValueError(f"{name}[{first + k}] has element {unknown[0]!r}, which {lacking} "
                             f"(elements {', '.join(sorted(known))})")


def check_data(structures, name, energy_key, forces_key, known=None, lacking="the model lacks",
               need_forces=False):
    """Fail before the work, not after it, where ``structures`` (read from ``name``) cannot be
    fitted or evaluated: elements outside ``known``, no energies, or, ``need_forces``, no forces."""
    from .fitting import read_targets

    if known is not None:
        check_elements(structures, name, known, lacking)
    read_targets(structures, energy_key, forces_key, need_forces=need_forces, name=name,
                 forces_hint=f"give --forces-key, or --force-weight 0 to fit energies only")


def cmd_fit(args):
    from . import ACERegressor, ACETransformer
    from .baselines import PairRepulsion
    from .metrics import evaluate

    data = args.data or "sample"
    check_degrees(args)
    if args.alpha is not None and args.solver != "ridge":
        raise ValueError(f"--alpha is for --solver ridge; --solver {args.solver} chooses alpha itself")
    output_path(args.output, "-o", data, args.test, saved=True, force=args.force)
    train = read_structures(data, args.energy_key, args.forces_key, args.n_train)
    check_data(train, data, args.energy_key, args.forces_key, need_forces=args.force_weight > 0)
    elements = ACETransformer()._elements_of(train)
    test = None
    if args.test or data in ("sample", "sample-train"):
        name = args.test or "sample-test"
        test = read_structures(name, args.energy_key, args.forces_key)
        check_data(test, name, args.energy_key, args.forces_key, known=elements, lacking="the training data lack")
    descriptor = ACETransformer(
        cutoff=args.cutoff, correlation_order=args.correlation_order, **_degree_params(args, train),
        radial_basis=args.radial_basis, l_weight=args.l_weight, n_jobs=args.threads,
    )
    alpha = {} if args.alpha is None else {"alpha": args.alpha}
    model = ACERegressor(
        descriptor, solver=args.solver, **alpha, energy_weight=args.energy_weight,
        force_weight=args.force_weight, energy_key=args.energy_key, forces_key=args.forces_key,
        stress_weight=args.stress_weight, stress_key=args.stress_key,
        baseline=PairRepulsion() if args.repulsion else None, n_jobs=args.threads, verbose=not args.quiet,
    )
    print(f"fitting {_count(len(train), 'structure')} from {data} "
          f"({_count(sum(len(a) for a in train), 'atom')}; elements {', '.join(elements)})", flush=True)
    t0 = time.perf_counter()
    model.fit(train)
    fit_time = time.perf_counter() - t0
    d = model.descriptor_
    print(f"basis: {d.n_features_out_} functions (per central element {d.basis_.features_per_center()}), "
          f"correlation order {d.correlation_order}, cutoff {d.cutoff} Å, "
          f"radial '{d.radial_basis}'")
    still = "its held-out error still fell" if args.solver == "cv" else "the evidence still rose"
    limit = (f" (the weakest regularisation the search tries, where {still}: the data would "
             f"support less)" if model.alpha_limited_ else "")
    print(f"solver {args.solver}: alpha = {model.alpha_:.3g}{limit}; fit time {fit_time:.1f} s")
    rows = [("train", len(train), evaluate(model, train))]
    if test is not None:
        rows.append(("test", len(test), evaluate(model, test)))
    print(_error_table(rows))
    _save(model, args.output, "model")
    return 0


def _count(n, noun):
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _save(model, path, what):
    """Write ``model`` to ``path`` (checked by :func:`output_path` before the work), or say
    that it was not kept: a fit of several minutes should not vanish silently."""
    from . import save

    if path:
        save(model, path)
        print(f"{what} written to {path}")
    else:
        print(f"{what} not saved (give -o FILE to keep it)")


def _with_keys(model, args):
    """``model`` reading targets under ``--energy-key`` / ``--forces-key`` where given (the keys
    it was fitted with otherwise); the file on disk is not changed."""
    keys = {k: v for k, v in (("energy_key", args.energy_key), ("forces_key", args.forces_key)) if v}
    return model.set_params(**keys) if keys else model


def cmd_evaluate(args):
    from .io import load_potential
    from .metrics import evaluate

    model = _with_keys(load_potential(args.model), args)
    data = read_structures(args.data, model.energy_key, model.forces_key)
    check_data(data, args.data, model.energy_key, model.forces_key, known=model.descriptor_.elements_)
    print(_error_table([(("data"), len(data), evaluate(model, data))]))
    return 0


def cmd_features(args):
    from . import ACETransformer

    check_degrees(args)
    structures = read_structures(args.data or "sample")
    t = ACETransformer(cutoff=args.cutoff, correlation_order=args.correlation_order,
                       **_degree_params(args, structures),
                       radial_basis=args.radial_basis, l_weight=args.l_weight, n_jobs=args.threads)
    t0 = time.perf_counter()
    B = t.fit_transform(structures)
    elapsed = time.perf_counter() - t0
    table = t.get_feature_table()
    n_atoms = sum(len(a) for a in structures)
    print(f"{len(structures)} structures, {n_atoms} atoms, elements {t.elements_}")
    print(f"{t.n_features_out_} features in {elapsed:.2f} s ({1e6 * elapsed / n_atoms:.1f} µs/atom incl. compile)")
    print(table.groupby(["center", "body_order"]).size().unstack(fill_value=0).to_string())
    print(f"feature matrix {B.shape}, mean |B| {np.abs(B).mean():.4g}")
    return 0


def cmd_md(args):
    from ase import units
    from ase.md.langevin import Langevin
    try:  # ASE >= 3.29
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from .calculator import ACECalculator

    trajectory = output_path(args.trajectory, "--trajectory", args.model, args.structure, force=args.force)
    try:
        calc = ACECalculator(args.model, device=args.device)
    except RuntimeError as err:  # --device cuda where no GPU is usable: a usage error like the others
        raise ValueError(str(err)) from None
    structures = read_structures(args.structure, check=False)  # only the one run is checked
    if not -len(structures) <= args.index < len(structures):
        raise ValueError(f"--index {args.index}: {args.structure} holds {len(structures)} structure(s)")
    index = args.index % len(structures)
    atoms = as_structure_list(structures[index], name=f"{args.structure}[{index}]")[0]
    check_elements([atoms], args.structure, calc.model.descriptor_.elements_, first=index)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(args.seed))
    if args.thermostat == "langevin":
        dyn = Langevin(atoms, args.timestep * units.fs, temperature_K=args.temperature, friction=0.01,
                       fixcm=False, rng=np.random.default_rng(args.seed), trajectory=trajectory)
    else:
        dyn = VelocityVerlet(atoms, args.timestep * units.fs, trajectory=trajectory)
    e_start = atoms.get_total_energy()
    atoms.get_forces()  # compiled (or loaded from numba's cache) before the timing
    t0 = time.perf_counter()
    try:
        dyn.run(args.steps)
    except ValueError as err:  # the structure collapsed or blew up (overlapping atoms, NaN positions)
        kept = f"; the trajectory up to there is in {trajectory}" if trajectory else ""
        raise ValueError(f"MD stopped after {dyn.nsteps} of {args.steps} steps: {err}{kept}") from None
    elapsed = time.perf_counter() - t0
    e_end = atoms.get_total_energy()
    rate = f" ({1e6 * elapsed / args.steps / len(atoms):.1f} µs/atom/step)" if args.steps else ""
    print(f"{args.steps} steps of {args.timestep} fs ({args.thermostat}) in {elapsed:.1f} s{rate}")
    change = "drift" if args.thermostat == "nve" else "change, thermostat included"
    print(f"total energy {e_start:.6f} -> {e_end:.6f} eV ({change} {1000 * (e_end - e_start):.3f} meV)")
    if trajectory:
        print(f"trajectory written to {trajectory}")
    return 0


def cmd_sparsify(args):
    from .io import load_potential
    from .metrics import evaluate
    from .sparsify import ACESparsifier, time_energy_forces
    from .structures import as_structure_list

    output_path(args.output, "-o", args.model, args.data, args.test, saved=True, force=args.force)
    model = _with_keys(load_potential(args.model), args)
    train = as_structure_list(read_structures(args.data, model.energy_key, model.forces_key, args.n_train),
                              name="training data")
    test = read_structures(args.test, model.energy_key, model.forces_key) if args.test else None
    model.set_params(verbose=not args.quiet)
    if args.n_features >= model.n_features_:
        print(f"note: -n {args.n_features} keeps every one of the model's {model.n_features_} functions")
    print(f"refitting the full model on {len(train)} structures, then selecting {args.n_features} "
          f"functions by '{args.method}'", flush=True)
    t0 = time.perf_counter()
    sp = ACESparsifier(model, n_features=args.n_features, method=args.method, cost_weight=args.cost_weight)
    sp.fit(train)
    elapsed = time.perf_counter() - t0
    check = test if test is not None else train
    head = f"{'model':<8}{'functions':>10}{'µs/atom':>10}{'E MAE':>10}{'F MAE':>10}"
    lines = [head, f"{'':<8}{'':>10}{'E+F':>10}{'meV':>10}{'meV/Å':>10}"]
    for name, m in (("full", sp.full_model_), ("sparse", sp.model_)):
        err = evaluate(m, check)
        lines.append(f"{name:<8}{m.n_features_:>10}{time_energy_forces(m, check):>10.1f}"
                     f"{1000 * err['energy_mae']:>10.2f}{1000 * err['force_mae']:>10.2f}")
    print(f"selection and refits took {elapsed:.1f} s; errors on the {'test' if test is not None else 'training'} data")
    print("\n".join(lines))
    _save(sp.model_, args.output, "sparse model")
    return 0


def cmd_explain(args):
    from .explain import GROUP_BY, explain_energy, group_explanation, save_plot
    from .io import load_potential

    if args.plot:
        from matplotlib.figure import Figure

        if not os.path.splitext(args.plot)[1]:
            args.plot += ".png"  # matplotlib would add it anyway; say where the plot really is
        output_path(args.plot, "--plot", args.model, args.data, force=args.force)
        formats = Figure().canvas.get_supported_filetypes()
        if os.path.splitext(args.plot)[1][1:].lower() not in formats:
            raise ValueError(f"--plot {args.plot}: matplotlib writes {', '.join(sorted(formats))}, not "
                             f"{os.path.splitext(args.plot)[1]!r}")
    model = _with_keys(load_potential(args.model), args)
    data = read_structures(args.data, model.energy_key, model.forces_key, args.n, limit_option="-n")
    if args.by not in GROUP_BY + ("feature",):
        raise ValueError(f"unknown --by {args.by!r}; choose one of {['feature', *GROUP_BY]}")
    explanation = explain_energy(model, data)
    if args.by != "feature":
        explanation = group_explanation(explanation, model, args.by)
    importance = np.abs(explanation.values).mean(axis=0)
    order = np.argsort(-importance, kind="stable")[: args.top]
    print(f"mean |SHAP| of the energy over {len(data)} structures, by {args.by} (meV):")
    width = max(len(str(explanation.feature_names[k])) for k in order)
    for k in order:
        print(f"  {str(explanation.feature_names[k]):<{width}}  {1000 * importance[k]:10.3f}")
    if args.plot:
        save_plot(explanation, args.plot, kind=args.kind, max_display=args.top,
                  title=f"energy SHAP by {args.by}")
        print(f"plot written to {args.plot}")
    return 0


def cmd_export(args):
    from .io import load_potential

    if args.spline_step <= 0:
        raise ValueError(f"--spline-step must be positive, got {args.spline_step}")
    output_path(args.output, "-o", args.model, force=args.force)
    model = load_potential(args.model)
    info = model.export_yace(args.output, degree=args.degree, spline_step=args.spline_step)
    r = info.radial
    print(f"wrote {info.path}: {info.n_functions} C-tilde functions, {info.n_ms_combs} m-combinations, "
          f"elements {' '.join(model.descriptor_.elements_)}")
    print(f"radial functions: ChebPow degree {r.degree}, projection error {r.fit_max_abs_error:.2g}; "
          f"with PACE's table (step {r.spline_step:g} Å) max error {r.max_abs_error:.2g}, "
          f"derivative {r.max_abs_derivative_error:.2g}")
    print(f"LAMMPS: pair_style pace / pair_coeff * * {info.path} {' '.join(model.descriptor_.elements_)}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="skace", description="Linear ACE potentials with scikit-learn.",
                                     epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)
    parser.subparser = lambda name: sub.choices[name]

    from .regressor import DEFAULT_DESCRIPTOR as D

    def basis_options(p):
        p.add_argument("--cutoff", type=_positive_float, default=D["cutoff"],
                       help=f"cutoff radius in Å (default {D['cutoff']})")
        p.add_argument("--correlation-order", type=_positive_int, default=D["correlation_order"],
                       help=f"largest ν; body order ν+1 (default {D['correlation_order']})")
        p.add_argument("--max-degree", type=_degree, default=None,
                       help="total degree bound, one value or one per order (default: the largest that keeps "
                            "the basis within 37100 functions for the data's elements, e.g. 16,8,7,7.5 for C, H, O "
                            "with H=16,8,6.5,5 and O=16,8,7,7; within 55000 for few data)")
        p.add_argument("--max-features", type=_positive_int, default=None, metavar="N",
                       help="without --max-degree: the default degrees' budget of functions (default 37100, or 55000 "
                            "where the fitting rows are at most a tenth of the default basis's size); "
                            "28200 gives C, H, O 16,8,7,7 (28152 functions, a 6.4 GB Gram matrix instead of "
                            "11 GB, 1.8 times faster to predict with)")
        p.add_argument("--center-max-degree", type=_center_degree, action="append", metavar="SYMBOL=DEGREES",
                       help="lower degree bounds for the features of one central element, e.g. H=16,8,6.5,5 "
                            "(repeatable; without --max-degree, added to the default's)")
        p.add_argument("--l-weight", type=float, default=D["l_weight"],
                       help=f"weight of l in a factor's degree (default {D['l_weight']})")
        p.add_argument("--radial-basis", default=D["radial_basis"],
                       choices=["agnesi", "bessel", "gaussian", "chebexp"],
                       help=f"radial function family (default {D['radial_basis']})")
        p.add_argument("--threads", type=_positive_int, default=None, help="numba threads (default: all)")

    def force_option(p):
        p.add_argument("-f", "--force", action="store_true", help="replace output files that exist")

    def key_options(p):
        p.add_argument("--energy-key", help="the data's energy key (default: the model's, from its fit)")
        p.add_argument("--forces-key", help="the data's forces key (default: the model's, from its fit)")

    p = sub.add_parser("fit", help="fit a model", epilog=EPILOG)
    p.add_argument("data", nargs="?", help="training data (default: the bundled sample)")
    p.add_argument("--test", help="test data, evaluated after the fit")
    p.add_argument("-o", "--output", help="write the model here (read by skace.load and ACECalculator)")
    p.add_argument("--n-train", type=_non_negative, help="use only the first N training structures")
    basis_options(p)
    p.add_argument("--solver", default="bayesian", choices=["bayesian", "ridge", "gcv", "ard", "cv"],
                   help="how alpha is chosen: Bayesian evidence (default), fixed (ridge), generalised CV, "
                        "ARD, or the error of held-out structures (cv)")
    p.add_argument("--alpha", type=_non_negative_float, default=None,
                   help="ridge strength for --solver ridge (default 1e-6)")
    p.add_argument("--energy-weight", type=_non_negative_float, default=30.0,
                   help="weight of a structure's energy residual in eV, divided by the square root of its "
                        "atom count (default 30)")
    p.add_argument("--force-weight", type=_non_negative_float, default=1.0,
                   help="weight of a force component's residual in eV/Å (default 1; 0 fits energies only)")
    p.add_argument("--energy-key", default="energy",
                   help="atoms.info key of the energies in eV (default energy; else the calculator's)")
    p.add_argument("--forces-key", default="forces",
                   help="atoms.arrays key of the forces in eV/Å (default forces; else the calculator's)")
    p.add_argument("--stress-weight", type=float, default=1.0,
                   help="weight of virial rows of structures with a stress (default 1; 0 ignores stresses)")
    p.add_argument("--stress-key", default="stress",
                   help="atoms.info key of the stresses in eV/Å^3 (default stress; else the calculator's)")
    p.add_argument("--repulsion", action="store_true",
                   help="fit on top of a short-range ZBL repulsion (skace.baselines.PairRepulsion)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    force_option(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="errors of a saved model on data", epilog=EPILOG)
    p.add_argument("model", help="a model written by skace fit (or skace.save)")
    p.add_argument("data", help="structures with energies (and forces) to compare with (DATA)")
    key_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("features", help="compute ACE features of data and summarise them", epilog=EPILOG)
    p.add_argument("data", nargs="?", help="structures (DATA; default: the bundled sample)")
    basis_options(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("md", help="short molecular dynamics with a saved model", epilog=EPILOG)
    p.add_argument("model", help="a model written by skace fit (or skace.save)")
    p.add_argument("structure", help="starting structure (DATA; the first one unless --index)")
    p.add_argument("--index", type=int, default=0, help="which structure of STRUCTURE (default 0)")
    p.add_argument("--steps", type=_non_negative, default=200, help="time steps (default 200)")
    p.add_argument("--timestep", type=_positive_float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--temperature", type=_non_negative_float, default=300.0,
                   help="K, of the initial velocities and the Langevin thermostat (default 300)")
    p.add_argument("--thermostat", default="nve", choices=["nve", "langevin"],
                   help="nve: velocity Verlet; langevin: friction 0.01 (default nve)")
    p.add_argument("--seed", type=int, default=0, help="random seed of velocities and thermostat (default 0)")
    p.add_argument("--trajectory", default="md.traj",
                   help="output trajectory (default md.traj; an existing file only with --force; '' for none)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where forces are computed (default: the model's)")
    force_option(p)
    p.set_defaults(func=cmd_md)

    p = sub.add_parser("sparsify", help="keep the basis functions worth their cost and refit", epilog=EPILOG)
    p.add_argument("model", help="a saved model; its settings are refitted on DATA")
    p.add_argument("data", help="training data")
    p.add_argument("--test", help="data on which the full and sparse models are compared (default: DATA)")
    p.add_argument("--n-train", type=_non_negative, help="use only the first N training structures")
    p.add_argument("-n", "--n-features", type=_positive_int, default=200, help="functions to keep (default 200)")
    p.add_argument("--method", default="cost", choices=["omp", "cost", "lasso", "ard", "shap"],
                   help="selection method (default cost: OMP that weighs evaluation cost)")
    p.add_argument("--cost-weight", type=float, default=1.0, help="cost penalty for --method cost")
    p.add_argument("-o", "--output", help="write the sparse model here")
    key_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    force_option(p)
    p.set_defaults(func=cmd_sparsify)

    p = sub.add_parser("explain", help="SHAP importance of the basis functions of a saved model", epilog=EPILOG)
    p.add_argument("model", help="a model written by skace fit (or skace.save)")
    p.add_argument("data", help="structures to explain (their mean prediction is the base value)")
    p.add_argument("-n", type=_non_negative, help="use only the first N structures")
    p.add_argument("--by", default="body_order",
                   help="group features by body_order, correlation_order, degree, center, neighbours, l_max, "
                        "or 'feature' for none (default body_order)")
    p.add_argument("--top", type=_positive_int, default=10, help="rows to print and plot (default 10)")
    p.add_argument("--plot", help="save a SHAP plot here (PNG)")
    p.add_argument("--kind", default="bar", choices=["bar", "beeswarm"], help="plot kind (default bar)")
    key_options(p)
    force_option(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("export", help="write a saved model as an ML-PACE .yace potential (LAMMPS pair_style pace)")
    p.add_argument("model", help="a model written by skace fit (or skace.save)")
    p.add_argument("-o", "--output", required=True, help="output .yace file")
    p.add_argument("--spline-step", type=float, default=1e-3,
                   help="PACE's radial table spacing in Å (deltaSplineBins; default 0.001)")
    p.add_argument("--degree", type=_positive_int, default=None,
                   help="polynomial degree of the radial projection (default: automatic)")
    force_option(p)
    p.set_defaults(func=cmd_export)
    return parser


def main(argv=None):
    from .io import ModelFileError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported with the command's own usage, not the top-level one
        parser.subparser(args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ModelFileError, KeyError, IndexError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"skace {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
