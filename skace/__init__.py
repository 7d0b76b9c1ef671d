"""skace: linear Atomic Cluster Expansion potentials with a scikit-learn interface."""

from .descriptor import ACETransformer
from .regressor import ACERegressor

__version__ = "0.1.0"

__all__ = ["ACETransformer", "ACERegressor", "__version__"]
