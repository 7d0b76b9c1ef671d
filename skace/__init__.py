"""skace: linear Atomic Cluster Expansion potentials with a scikit-learn interface.

The package is layered: :mod:`skace.maths` (radial bases, spherical
harmonics, coupling coefficients, basis specification, priors) is pure maths;
:mod:`skace.kernels` holds the numba kernels; :class:`ACETransformer`,
:class:`ACERegressor` and :class:`ACECalculator` are the scikit-learn and ASE
layer; :mod:`skace.io`, :mod:`skace.datasets` and :mod:`skace.cli` are the edge.
"""

from .calculator import ACECalculator
from .descriptor import ACETransformer
from .io import load, save
from .regressor import ACERegressor

__version__ = "0.3.0"

__all__ = ["ACETransformer", "ACERegressor", "ACECalculator", "save", "load", "__version__"]
