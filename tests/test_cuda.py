"""The CUDA backend (``device="cuda"``) against the CPU kernels.

numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, so the
comparisons run in fresh processes (``tests/cuda_check.py``) with the
simulator switched on; set ``SKACE_CUDA_TEST_REAL=1`` to run them on a real
GPU instead. They skip when numba-cuda is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.build import molecule

from skace import ACECalculator, ACERegressor, ACETransformer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _has_numba_cuda():
    try:
        return importlib.util.find_spec("numba.cuda") is not None
    except (ImportError, ValueError):
        return False


needs_numba_cuda = pytest.mark.skipif(not _has_numba_cuda(), reason="numba-cuda is not installed")


def _run(args, simulate=True, timeout=600):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if simulate and env.get("SKACE_CUDA_TEST_REAL") != "1":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


def _structures():
    return [molecule("H2O"), molecule("CH3OH")]


def test_import_skace_does_not_load_the_cuda_backend():
    res = _run(["-c", "import sys, skace; print(sorted(m for m in sys.modules "
                      "if m in ('skace.gpu', 'skace.kernels.gpu')))"], simulate=False, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("estimator", [ACETransformer, ACERegressor])
def test_device_is_validated_in_fit_not_init(estimator):
    bad = estimator(device="gpu")  # __init__ only stores it
    assert bad.get_params()["device"] == "gpu"
    with pytest.raises(ValueError, match="device"):
        bad.fit(_structures())


def test_cuda_unavailable_gives_a_clear_error():
    from skace.gpu import cuda_available

    if cuda_available():
        pytest.skip("a GPU (or the simulator) is usable in this process")
    with pytest.raises(RuntimeError, match="numba-cuda"):
        ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4, device="cuda").fit(_structures())
    with pytest.raises(RuntimeError, match="numba-cuda"):
        ACERegressor(device="cuda").fit(_structures())
    X = _structures()
    for k, a in enumerate(X):
        a.info["energy"] = float(k)
        a.arrays["forces"] = np.zeros((len(a), 3))
    model = ACERegressor(ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4), solver="ridge").fit(X)
    with pytest.raises(RuntimeError, match="ACECalculator"):
        ACECalculator(model, device="cuda")
    model.device = "cuda"  # e.g. a model saved on a GPU machine, loaded here
    with pytest.raises(RuntimeError, match="numba-cuda"):
        model.predict(X)


def test_cli_md_device_cuda_without_gpu_is_a_usage_error(tmp_path, capsys):
    import skace
    from skace.cli import main
    from skace.gpu import cuda_available

    if cuda_available():
        pytest.skip("a GPU (or the simulator) is usable in this process")
    X = _structures()
    for k, a in enumerate(X):
        a.info["energy"] = float(k)
        a.arrays["forces"] = np.zeros((len(a), 3))
    path = tmp_path / "tiny.skace"
    skace.save(ACERegressor(ACETransformer(cutoff=3.0, correlation_order=2, max_degree=4), solver="ridge").fit(X),
               path)
    code = main(["md", str(path), "sample-test", "--steps", "1", "--device", "cuda",
                 "--trajectory", str(tmp_path / "md.traj")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("skace md: error:") and "numba-cuda" in err


@needs_numba_cuda
@pytest.mark.parametrize("part", ["core", pytest.param("extra", marks=pytest.mark.slow)])
def test_cuda_backend_matches_cpu(part):
    # the simulator's "extra" part takes about 12 minutes on one core (2-core Intel Xeon, session 10)
    res = _run([os.path.join(HERE, "cuda_check.py"), part], timeout=600 if part == "core" else 2400)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    errors = {k: v for k, v in report.items() if k not in ("overlap_error", "reference_scale")}
    assert len(errors) >= 10
    bad = {k: v for k, v in errors.items() if not v < 1e-10}
    assert not bad, bad
    if part == "core":
        assert report["reference_scale"] > 1e-3  # the compared quantities are not all zero
        bad_input = [molecule("CH3OH"), molecule("H2O")]
        bad_input[1].positions[2] = bad_input[1].positions[1]
        with pytest.raises(ValueError) as cpu_error:
            ACETransformer(cutoff=3.0, correlation_order=3, max_degree=6, l_weight=1.0).fit(
                bad_input[:1]).transform(bad_input)
        assert report["overlap_error"] == str(cpu_error.value)


@needs_numba_cuda
def test_cuda_kernels_compile_for_the_device():
    """Type and lower every kernel for sm_90 (the simulator checks neither); needs NVVM and NVRTC."""
    res = _run([os.path.join(HERE, "cuda_ptx.py")], simulate=False)
    if res.returncode and any(s in res.stderr for s in ("DynamicLibNotFoundError", "NvvmSupportError",
                                                        "libnvvm", "libnvrtc")):
        pytest.skip("no CUDA toolkit libraries (NVVM, NVRTC) to compile with")
    assert res.returncode == 0, res.stderr[-3000:]
    kernels = [json.loads(line)["kernel"] for line in res.stdout.splitlines()]
    assert len(kernels) == 11
