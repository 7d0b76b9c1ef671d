"""Smoothness priors: how strongly each basis function's coefficient is regularised.

The fit minimises ``|W (X c - y)|^2 + alpha |Gamma c|^2`` with a diagonal
``Gamma``; rough (high ``n``, high ``l``) basis functions get large ``gamma_k``
so that the potential stays smooth away from the training data. For a feature
with factors ``(n_t, l_t)`` and order ``p``:

``"algebraic"`` (ACEpotentials.jl's default form)
    ``gamma = sum_t (n_t^p + l_t^p)``
``"exponential"``
    ``gamma = exp(sum_t (n_t + l_t) / p)``
``"none"``
    ``gamma = 1`` (plain ridge)
"""

import numpy as np

PRIORS = ("algebraic", "exponential", "none")


def smoothness_prior(features, kind="algebraic", order=4.0):
    """Diagonal ``Gamma`` for a list of basis features (``ACEBasis.features``).

    Returns
    -------
    ndarray of shape (n_features,)
        Positive scales ``gamma_k``.
    """
    if kind not in PRIORS:
        raise ValueError(f"unknown prior {kind!r}; choose one of {list(PRIORS)}")
    if kind == "none":
        return np.ones(len(features))
    out = np.empty(len(features))
    for k, f in enumerate(features):
        n = np.array([n for _, n, _ in f["factors"]], dtype=float)
        l = np.array([l for _, _, l in f["factors"]], dtype=float)
        if kind == "algebraic":
            out[k] = np.sum(n**order + l**order)
        else:
            out[k] = np.exp(np.sum(n + l) / order)
    return out
