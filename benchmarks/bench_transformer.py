"""Benchmark skace's ``ACETransformer`` against peer ACE / SOAP codes.

Times, single-threaded, on the first ``--n-structures`` rMD17 aspirin
configurations (21 atoms each, elements C, H, O):

* skace ``ACETransformer`` for every requested ``(nu, max_degree)``:
  basis build (``fit``), ``transform`` and ``transform_gradient`` in
  microseconds per atom (best of ``--repeat`` passes after a warm-up call
  that excludes numba compilation / cache loading), feature counts in
  total and per central element, and a finite-difference check of the
  gradient;
* pyace (pacemaker) features + structure-summed gradients
  (``compute_projections=True, compute_b_grad=True``) with a nu = 4 basis
  sized to about the same number of functions per element as each matched
  skace nu = 4 case;
* featomic SOAP power spectrum with position gradients and dscribe SOAP
  with ``attach=True`` derivatives, for a few (radial, angular) sizes;

and the ratios: pyace time / skace time for features + gradients at matched
per-element size (the project's target is >= 10x) and per-feature cost
ratios against featomic and dscribe.  The result is one JSON document on
stdout (and in ``--output`` if given).  A peer that is missing or fails is
recorded as ``{"skipped": true, "reason": ...}``.

Usage (the environment needs skace's dependencies and the peers)::

    cd /work/main
    PYTHONPATH=/work/main /work/bench-venv/bin/python benchmarks/bench_transformer.py \
        --n-structures 20 --repeat 3 --output bench.json

What the numbers mean
---------------------
``us_per_atom``
    wall time of one call over all structures divided by the number of
    atoms, best of ``--repeat`` calls.  skace's ``transform`` includes its
    neighbour list; pyace's ``us_per_atom`` is the bare C++ ``compute``
    (its neighbour list and the conversion of its outputs to numpy are
    reported separately as ``us_per_atom_neighbour_list`` /
    ``us_per_atom_extract``).
``features_plus_gradients_us_per_atom`` (skace)
    ``transform`` + ``transform_gradient``; skace computes them in two
    calls, and the gradient call does not return the features.
Gradient outputs differ between codes: skace and pyace return the gradient
of each structure's *summed* features w.r.t. every position, (n_atoms, 3,
n_features_total) per structure (what a linear energy + force fit needs);
featomic returns per (centre, neighbour) pair gradients of per-centre
features (sparse); dscribe returns dense per-centre derivatives
(n_centres, n_atoms, 3, n_features).

Per-feature conventions (``ratios.per_feature_vs_featomic``)
    ``us/atom/feature = features+gradients us_per_atom / features per atom``.
    ``briefed``: skace per element (each atom evaluates only its own
    element's block), featomic *total* (8,064 for the default hypers).
    ``symmetric``: both per central element (identical to both total,
    since both codes have three equal per-element blocks for C/H/O).
    featomic's SOAP blocks are keyed by (centre type, neighbour type,
    neighbour type), so an atom is only a sample of the blocks of its own
    type: it evaluates the per-centre count (2,688 by default), not the
    total; the ``briefed`` convention therefore credits featomic with 3x
    more features per atom than it computes.  dscribe has no split by
    centre type: each atom evaluates all ``n_features`` (one convention).
    Ratios are peer cost / skace cost: above 1 means skace is cheaper.
"""

from __future__ import annotations

import os

_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS")
for _var in _THREAD_ENV_VARS:  # before numpy (imported by peers) loads its BLAS
    os.environ[_var] = "1"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (imports only the standard library and numpy)

THREAD_ENV = peers.set_single_thread_env(1)

import argparse  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from typing import Dict, List, Optional, Sequence, Tuple  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

DEFAULT_DEGREES = {2: [10, 14, 18], 3: [8, 10, 12], 4: [8, 10, 11]}
# featomic: (max_radial index, max_angular); per centre 6 * (L+1) * (N+1)**2 for C/H/O
DEFAULT_FEATOMIC = [(5, 5), (7, 6), (9, 9)]      # 1296 / 2688 / 6000 per centre type
# dscribe: (n_max count, l_max); n_features = 3n (3n+1) / 2 * (l+1) for C/H/O
DEFAULT_DSCRIBE = [(6, 5), (8, 6), (12, 9)]      # 1026 / 2100 / 6660 features
CHECK_ATOMS = (0, 7, 20)


# --------------------------------------------------------------------------
# environment information
# --------------------------------------------------------------------------


def _cpu_info() -> dict:
    info: dict = {"logical_cpus": os.cpu_count()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    fields: Dict[str, str] = {}
    physical = set()
    phys_id = None
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        fields.setdefault(key, value)
        if key == "physical id":
            phys_id = value
        elif key == "core id":
            physical.add((phys_id, value))
    info["cpu_model"] = fields.get("model name")
    if "cpu cores" in fields:
        info["cpu_cores_per_socket"] = int(fields["cpu cores"])
    if physical:
        info["physical_cores"] = len(physical)
    if "cpu MHz" in fields:
        info["cpu_mhz"] = float(fields["cpu MHz"])
    flags = fields.get("flags", "").split()
    info["simd"] = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    return info


def _load_average() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git() -> dict:
    def run(*args):
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                 timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = run("status", "--porcelain", "--", "skace")
    digest = hashlib.sha1()
    for file in sorted((REPO / "skace").rglob("*.py")):
        digest.update(str(file.relative_to(REPO)).encode())
        digest.update(file.read_bytes())
    return {"commit": run("rev-parse", "--short", "HEAD"),
            "skace_dir_modified": None if status is None else bool(status),
            # the commit does not pin uncommitted skace edits; this hash does
            "skace_source_sha1": digest.hexdigest()[:12]}


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _environment() -> dict:
    import numba

    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "numba": numba.__version__}
    for dist in ("scipy", "scikit-learn", "ase"):
        versions[dist] = _version(dist)
    versions.update(peers.available_peers())
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "platform": platform.platform(),
            "machine": _cpu_info(), "versions": versions, "git": _git(),
            "thread_env": dict(THREAD_ENV), "numba_threads": numba.get_num_threads(),
            "load_average_start": _load_average()}


# --------------------------------------------------------------------------
# skace
# --------------------------------------------------------------------------


def _skace_gradient_check(ace, atoms, h: float = 1e-4) -> float:
    """max rel. error of transform_gradient vs central differences of transform."""
    analytic = ace.transform_gradient([atoms])
    a, n = [], []
    for j in CHECK_ATOMS:
        if j >= len(atoms):
            continue
        for d in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[j, d] += h
            minus.positions[j, d] -= h
            fd = (ace.transform([plus])[0] - ace.transform([minus])[0]) / (2 * h)
            a.append(analytic[j, d])
            n.append(fd)
    return peers._rel_err(np.concatenate(a), np.concatenate(n))


def skace_case(structures, nu: int, degree: float, cutoff: float, radial_basis: str,
               repeat: int, check: bool) -> dict:
    import skace
    from skace import ACETransformer

    n_atoms = sum(len(a) for a in structures)
    elements = peers._elements_of(structures)
    ace = ACETransformer(cutoff=cutoff, correlation_order=nu, max_degree=degree,
                         radial_basis=radial_basis, n_jobs=1)
    t0 = time.perf_counter()
    ace.fit(structures)
    build_s = time.perf_counter() - t0
    n_total = int(ace.n_features_out_)
    per_element = n_total // len(elements)
    result: dict = {
        "code": f"skace {skace.__version__}", "nu": nu, "max_degree": degree,
        "n_features_total": n_total, "n_features_per_element": per_element,
        "basis_build_s": build_s,
        "settings": {"cutoff": cutoff, "correlation_order": nu, "max_degree": degree,
                     "radial_basis": radial_basis, "n_jobs": 1,
                     "elements": list(ace.elements_)},
    }
    if per_element * len(elements) != n_total:
        result["warning"] = "n_features_out_ is not divisible by the number of elements"

    t0 = time.perf_counter()  # warm-up: numba compilation or cache load
    ace.transform(structures[:1])
    ace.transform_gradient(structures[:1])
    result["warmup_s"] = time.perf_counter() - t0

    shapes: dict = {}

    def transform_pass():
        t = time.perf_counter()
        out = ace.transform(structures)
        elapsed = time.perf_counter() - t
        shapes["transform"] = list(out.shape)
        return {"core": elapsed}

    def gradient_pass():
        t = time.perf_counter()
        out = ace.transform_gradient(structures)
        elapsed = time.perf_counter() - t
        shapes["transform_gradient"] = list(out.shape)
        del out
        return {"core": elapsed}

    with peers.limited_threads(1):
        result["transform"] = peers._time_passes(transform_pass, n_atoms, repeat)
        result["transform_gradient"] = peers._time_passes(gradient_pass, n_atoms, repeat)
        if check:
            result["grad_check_rel_err"] = _skace_gradient_check(ace, structures[0])
            result["grad_check_atoms"] = list(CHECK_ATOMS)
    result["output_shapes"] = shapes
    result["features_plus_gradients_us_per_atom"] = (
        result["transform"]["us_per_atom"] + result["transform_gradient"]["us_per_atom"])
    return result


# --------------------------------------------------------------------------
# peers
# --------------------------------------------------------------------------


def _skipped(exc: BaseException) -> dict:
    if isinstance(exc, peers.PeerUnavailable):
        return {"skipped": True, "reason": str(exc)}
    return {"skipped": True, "reason": f"failed: {type(exc).__name__}: {exc}"}


def _log_distance(a: float, b: float) -> float:
    return abs(math.log(max(a, 1) / max(b, 1)))


def matched_pyace_basis(elements, cutoff: float, target: int, max_tries: int = 3):
    """A nu = 4 pyace basis with about ``target`` functions per element.

    pacemaker's ``number_of_functions_per_element`` trims along a ladder and
    can land well below the request, so the request is rescaled up to
    ``max_tries`` times; the closest basis (log distance) is kept.
    """
    best, tries = None, []
    request = int(target)
    for _ in range(max_tries):
        pb = peers.pyace_basis(elements, cutoff=cutoff, correlation_order=4,
                               number_of_functions_per_element=request)
        got = min(pb.n_functions.values())
        tries.append({"requested": request, "got": got, "build_s": pb.build_s})
        if best is None or _log_distance(got, target) < _log_distance(best[1], target):
            best = (pb, got)
        if abs(got - target) <= 0.03 * target:
            break
        new_request = int(math.ceil(request * target / max(got, 1)))
        if new_request == request or any(t["requested"] == new_request for t in tries):
            break
        request = new_request
    return best[0], tries


def run_pyace(structures, skace_cases: Sequence[dict], match_degrees: Sequence[float],
              cutoff: float, repeat: int, check: bool) -> List[dict]:
    elements = peers._elements_of(structures)
    out = []
    targets = [c for c in skace_cases if c["nu"] == 4 and c["max_degree"] in match_degrees]
    if not targets:
        return [{"skipped": True, "reason": "no skace nu=4 case to match "
                 f"(--pyace-match-degrees {list(match_degrees)})"}]
    for case in targets:
        target = case["n_features_per_element"]
        entry: dict = {"matched_to": {"nu": 4, "max_degree": case["max_degree"],
                                      "skace_n_features_per_element": target}}
        try:
            pb, tries = matched_pyace_basis(elements, cutoff, target)
            entry["basis_requests"] = tries
            entry.update(peers.pyace_features(structures, basis=pb, n_repeat=repeat,
                                              check_gradients=check))
        except Exception as exc:  # noqa: BLE001 -- a peer must never stop the benchmark
            entry.update(_skipped(exc))
            out.append(entry)
            if isinstance(exc, peers.PeerUnavailable):
                break
            continue
        out.append(entry)
    return out


def run_soap(name: str, fn, structures, sizes: Sequence[Tuple[int, int]], cutoff: float,
             repeat: int, check: bool) -> List[dict]:
    out = []
    for n, l in sizes:
        try:
            if name == "featomic":
                entry = fn(structures, cutoff=cutoff, max_radial=n, max_angular=l,
                           gradients=True, n_repeat=repeat, check_gradients=check)
            else:
                entry = fn(structures, cutoff=cutoff, n_max=n, l_max=l, n_repeat=repeat,
                           check_gradients=check)
        except Exception as exc:  # noqa: BLE001
            entry = {"settings": {"radial": n, "angular": l}, **_skipped(exc)}
            out.append(entry)
            if isinstance(exc, peers.PeerUnavailable):
                break
            continue
        out.append(entry)
    return out


# --------------------------------------------------------------------------
# ratios
# --------------------------------------------------------------------------


def _ok(entries):
    return [e for e in entries if not e.get("skipped") and "us_per_atom" in e]


def pyace_ratios(skace_cases, pyace_entries) -> List[dict]:
    rows = []
    for p in _ok(pyace_entries):
        m = p["matched_to"]
        s = next(c for c in skace_cases if c["nu"] == 4 and c["max_degree"] == m["max_degree"])
        skace_fg = s["features_plus_gradients_us_per_atom"]
        pyace_n = min(p["n_features_per_element"].values())
        pyace_core = p["us_per_atom"]
        pyace_with_extract = pyace_core + p.get("us_per_atom_extract", 0.0)
        rows.append({
            "skace": f"nu=4 D={s['max_degree']}",
            "skace_n_features_per_element": s["n_features_per_element"],
            "pyace_n_features_per_element": pyace_n,
            "skace_features_plus_gradients_us_per_atom": skace_fg,
            "pyace_compute_us_per_atom": pyace_core,
            "pyace_compute_plus_extract_us_per_atom": pyace_with_extract,
            "ratio_pyace_over_skace": pyace_core / skace_fg,
            "ratio_pyace_with_extract_over_skace": pyace_with_extract / skace_fg,
            "ratio_per_feature": (pyace_core / pyace_n) / (skace_fg / s["n_features_per_element"]),
            "meets_10x_target": pyace_core / skace_fg >= 10.0,
        })
    return rows


def soap_ratios(skace_cases, soap_entries, featomic: bool) -> List[dict]:
    """For every skace case, the per-feature cost ratio against the peer size
    nearest in per-atom feature count (per element for skace)."""
    ok = _ok(soap_entries)
    if not ok:
        return []
    rows = []
    for s in skace_cases:
        s_fg = s["features_plus_gradients_us_per_atom"]
        s_elem = s["n_features_per_element"]

        def per_centre(e):
            return min(e["n_features_per_element"].values())

        peer = min(ok, key=lambda e: _log_distance(per_centre(e), s_elem))
        p_elem, p_total, p_t = per_centre(peer), peer["n_features_total"], peer["us_per_atom"]
        skace_pf = s_fg / s_elem
        row = {
            "skace": f"nu={s['nu']} D={s['max_degree']}",
            "skace_n_features_per_element": s_elem,
            "skace_us_per_atom_per_feature": skace_pf,
            "peer_settings": {k: peer["settings"].get(k) for k in
                              (("max_radial", "max_angular") if featomic else ("n_max", "l_max"))},
            "peer_n_features_per_centre": p_elem,
            "peer_n_features_total": p_total,
            "peer_us_per_atom": p_t,
        }
        if featomic:
            row.update({
                "briefed_peer_us_per_atom_per_feature": p_t / p_total,
                "ratio_briefed": (p_t / p_total) / skace_pf,
                "symmetric_peer_us_per_atom_per_feature": p_t / p_elem,
                "ratio_symmetric": (p_t / p_elem) / skace_pf,
            })
        else:
            row.update({"peer_us_per_atom_per_feature": p_t / p_elem,
                        "ratio": (p_t / p_elem) / skace_pf})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def _contended(result: dict, threshold: float = 0.9) -> List[str]:
    """Timings whose best pass got under ``threshold`` CPU seconds per wall second.

    Single-threaded, cpu_over_wall well below 1 means the process was
    descheduled (other work on the machine), inflating that wall time.
    """
    flagged = []
    for c in result.get("skace", []):
        for part in ("transform", "transform_gradient"):
            ratio = c[part].get("cpu_over_wall")
            if ratio is not None and ratio < threshold:
                flagged.append(f"skace nu={c['nu']} D={c['max_degree']} {part}: "
                               f"cpu_over_wall={ratio:.2f}")
    for name, entries in result.get("peers", {}).items():
        for e in entries:
            ratio = e.get("cpu_over_wall")
            if ratio is not None and ratio < threshold:
                size = e.get("n_features_total")
                flagged.append(f"{name} (n_features_total={size}): cpu_over_wall={ratio:.2f}")
    return flagged


def _pairs(text: str) -> List[Tuple[int, int]]:
    pairs = []
    for item in text.split(","):
        a, b = item.split(":")
        pairs.append((int(a), int(b)))
    return pairs


def _degrees(values: Optional[List[str]], nu: int) -> List[float]:
    if values is None:
        return list(DEFAULT_DEGREES[nu])
    out = []
    for v in values:
        x = float(v)
        out.append(int(x) if x.is_integer() else x)
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-structures", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--radial-basis", default="agnesi")
    p.add_argument("--data", default=None, help="rMD17 folder (either layout) or aspirin train .npz (default: $SKACE_RMD17_DIR or shared data)")
    for nu in (2, 3, 4):
        p.add_argument(f"--degrees-nu{nu}", nargs="*", default=None, metavar="D",
                       help=f"skace max_degree values for nu={nu} (default "
                            f"{DEFAULT_DEGREES[nu]}; empty: skip nu={nu})")
    p.add_argument("--pyace-match-degrees", nargs="*", default=None, metavar="D",
                   help="nu=4 degrees whose per-element size pyace is matched to "
                        "(default: all nu=4 degrees)")
    p.add_argument("--featomic", type=_pairs, default=DEFAULT_FEATOMIC,
                   metavar="N:L,...", help="featomic max_radial:max_angular list "
                   "(default 5:5,7:6,9:9)")
    p.add_argument("--dscribe", type=_pairs, default=DEFAULT_DSCRIBE, metavar="N:L,...",
                   help="dscribe n_max:l_max list (default 6:5,8:6,12:9)")
    p.add_argument("--skip-peers", nargs="*", default=[], choices=["pyace", "featomic", "dscribe"])
    p.add_argument("--peer-checks", action="store_true",
                   help="also finite-difference check the peers' gradients (slow for pyace)")
    p.add_argument("--no-skace-check", action="store_true",
                   help="skip skace's finite-difference gradient check")
    p.add_argument("--output", default=None, help="also write the JSON to this file")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    data, file = peers.rmd17_source(args.data, "bench_transformer")
    structures = peers.load_rmd17("aspirin", args.n_structures, path=str(data))
    if not structures:
        sys.exit("bench_transformer: --n-structures must be positive")
    import numba

    numba.set_num_threads(1)
    n_atoms = sum(len(a) for a in structures)
    wall0 = time.perf_counter()
    result: dict = {
        "benchmark": "skace ACETransformer vs pyace / featomic / dscribe",
        "provisional_note": None,
        **_environment(),
        "data": {"file": str(file), "molecule": "aspirin", "n_structures": len(structures),
                 "n_atoms": n_atoms, "elements": peers._elements_of(structures)},
        "settings": {"repeat": args.repeat, "cutoff": args.cutoff,
                     "radial_basis": args.radial_basis, "threads": 1,
                     "timing": "best of --repeat passes over all structures, after a warm-up"},
    }

    skace_cases = []
    for nu in (2, 3, 4):
        for degree in _degrees(getattr(args, f"degrees_nu{nu}"), nu):
            _log(f"skace nu={nu} D={degree}")
            skace_cases.append(skace_case(structures, nu, degree, args.cutoff,
                                          args.radial_basis, args.repeat,
                                          not args.no_skace_check))
    result["skace"] = skace_cases

    peer_out: dict = {}
    match = ([c["max_degree"] for c in skace_cases if c["nu"] == 4]
             if args.pyace_match_degrees is None else _degrees(args.pyace_match_degrees, 4))
    if "pyace" in args.skip_peers:
        peer_out["pyace_features"] = [{"skipped": True, "reason": "--skip-peers"}]
    else:
        _log(f"pyace matched to nu=4 D={match}")
        peer_out["pyace_features"] = run_pyace(structures, skace_cases, match, args.cutoff,
                                               args.repeat, args.peer_checks)
    for name, fn, sizes in (("featomic", peers.featomic_soap, args.featomic),
                            ("dscribe", peers.dscribe_soap, args.dscribe)):
        key = f"{name}_soap"
        if name in args.skip_peers:
            peer_out[key] = [{"skipped": True, "reason": "--skip-peers"}]
            continue
        _log(f"{name} sizes {sizes}")
        peer_out[key] = run_soap(name, fn, structures, sizes, args.cutoff, args.repeat,
                                 args.peer_checks)
    result["peers"] = peer_out

    result["ratios"] = {
        "pyace_over_skace_features_gradients": pyace_ratios(
            skace_cases, peer_out["pyace_features"]),
        "per_feature_vs_featomic": soap_ratios(skace_cases, peer_out["featomic_soap"],
                                               featomic=True),
        "per_feature_vs_dscribe": soap_ratios(skace_cases, peer_out["dscribe_soap"],
                                              featomic=False),
        "conventions": {
            "pyace": "pyace ACECalculator.compute (projections + b-grad, no neighbour list, "
                     "no numpy conversion) / skace transform + transform_gradient, at matched "
                     "per-element basis size; target >= 10",
            "briefed": "peer us/atom / featomic TOTAL features vs skace us/atom / skace "
                       "features PER ELEMENT",
            "symmetric": "both per central element (same as both total); featomic's atoms "
                         "only enter the blocks of their own centre type",
            "direction": "peer per-feature cost / skace per-feature cost (>1: skace cheaper)",
            "dscribe": "dscribe evaluates all n_features for every atom; derivatives are "
                       "dense per centre (attach=True)",
        },
    }
    return finish(result, wall0, _contended(result), args.output)


def finish(result, wall0, contended_timings, output):
    """Close a benchmark record (load, contention, wall time), print it as JSON, write it to ``output``."""
    result["load_average_end"] = _load_average()
    result["contended_timings"] = contended_timings
    result["wall_s"] = time.perf_counter() - wall0
    usable = result["machine"].get("usable_cpus") or 0
    load = max((result["load_average_start"] or [0]) + (result["load_average_end"] or [0]))
    if usable and (usable < 4 or load > 0.5 * usable):
        result["provisional_note"] = (
            f"provisional: {usable} usable CPUs, load average up to {load:.2f}; "
            "timings may be perturbed by other work")
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if output:
        Path(output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
