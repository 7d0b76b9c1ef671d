"""Compile every CUDA kernel of :mod:`skace.kernels.gpu` to PTX (no GPU needed).

The CUDA simulator runs kernels as Python, so it cannot catch code that
numba cannot type or lower for the device. This script compiles each kernel
with the argument types the backend launches it with, for compute capability
``--cc`` (default 9.0), and prints one JSON line per kernel; with ``--ptxas``
it also runs ``ptxas -v`` and reports registers, stack and spills.

Needs numba-cuda with NVVM and NVRTC libraries findable (a CUDA toolkit), not
a driver. Run in a process without ``NUMBA_ENABLE_CUDASIM``.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from numba import typeof, types


def arr(dtype, ndim):
    return typeof(np.empty((1,) * ndim, dtype=dtype))


I, F, B = types.int64, types.float64, types.boolean
IV, FV, FM, F3 = arr(np.int64, 1), arr(np.float64, 1), arr(np.float64, 2), arr(np.float64, 3)

SIGNATURES = {
    "molecule_pairs": (FM, IV, IV, IV, F, B, IV, IV, IV, IV, FM, IV),
    "binned_pairs": (FM, IV, I, I, F, IV, IV, IV, IV, B, IV, IV, IV, IV, FM, IV),
    "pair_radial_harmonics": (I, I, IV, IV, FM, IV, I, F3, I, I, FM, FM, FM, FM, F3),
    "atomic_base": (I, I, I, IV, IV, IV, IV, IV, IV, I, I, FM, FM, FM),
    "products_forward": (I, I, IV, IV, FM),
    "features_from_products": (I, I, IV, IV, IV, IV, IV, FV, FM, FM),
    "energy_adjoint": (I, I, IV, I, IV, IV, IV, IV, IV, FV, B, FM, FM, FV),
    "pair_forces": (I, I, I, IV, IV, FM, IV, IV, IV, IV, I, FM, FM, FM, F3, FM, FM, FM),
    "own_forces_and_virials": (I, I, I, IV, FM, FM, B, FM, FM),
    "feature_gradient_columns": (I, I, I, IV, IV, FM, IV, I, I, I, IV, IV, IV, IV, IV, IV, IV, IV, FV, FM, FM, FM, F3,
                                 FM, FM, F3),
    "fill_zero": (FV,),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", default="9.0")
    parser.add_argument("--ptxas", action="store_true")
    args = parser.parse_args()
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.exit("run without NUMBA_ENABLE_CUDASIM: the simulator compiles nothing")
    from types import SimpleNamespace

    from numba import cuda
    from numba.cuda import dispatcher

    from skace.kernels import gpu

    cc = tuple(int(x) for x in args.cc.split("."))
    kernels = {name for name, obj in vars(gpu).items()
               if hasattr(obj, "py_func") and hasattr(obj, "targetoptions") and not obj.targetoptions.get("device")}
    if kernels != set(SIGNATURES):
        sys.exit(f"SIGNATURES is out of date: kernels {sorted(kernels)}, table {sorted(SIGNATURES)}")
    # device functions ask the current device for its compute capability; there is none here
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    for name, sig in SIGNATURES.items():
        kernel = getattr(gpu, name)
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
        row = {"kernel": name, "ptx_lines": ptx.count("\n")}
        if args.ptxas:
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as fh:
                fh.write(ptx)
            res = subprocess.run(["ptxas", f"-arch=sm_{cc[0]}{cc[1]}", "-v", fh.name, "-o", os.devnull],
                                 capture_output=True, text=True)
            os.unlink(fh.name)
            info = res.stderr
            for key, pattern in [("registers", r"Used (\d+) registers"), ("stack_bytes", r"(\d+) bytes stack frame"),
                                 ("spill_stores", r"(\d+) bytes spill stores"),
                                 ("spill_loads", r"(\d+) bytes spill loads")]:
                m = re.search(pattern, info)
                row[key] = int(m.group(1)) if m else None
            if res.returncode:
                row["ptxas_error"] = info.strip()[-500:]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
