"""Shared pytest configuration for the skace test suite.

The suite runs on small matrices; multi-threaded BLAS only adds overhead
(and oversubscribes small machines alongside the numba kernels' own threads).
"""

import os
import sys

import numpy  # noqa: F401  (load OpenBLAS first: threadpool_limits acts on loaded libraries only)
import scipy.linalg  # noqa: F401
import pytest
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(__file__))  # `import reference` from any working directory

threadpool_limits(limits=1, user_api="blas")


@pytest.fixture(params=["forward", "jacobian"])
def gradient_route(request, monkeypatch):
    """Run a gradient test through each of the kernel's two routes (forward mode through the
    product tree, the Jacobian dB/dA), whichever skace.maths.basis.gradient_route would pick."""
    import skace.maths.basis as basis

    monkeypatch.setattr(basis, "FORWARD_ABOVE", -1.0 if request.param == "forward" else float("inf"))
    return request.param
