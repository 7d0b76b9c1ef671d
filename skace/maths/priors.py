"""Smoothness priors: how strongly each basis function's coefficient is regularised.

The fit minimises ``|W (X c - y)|^2 + alpha |Gamma c|^2`` with a diagonal
``Gamma``; rough (high ``n``, high ``l``) basis functions get large ``gamma_k``
so that the potential stays smooth away from the training data. For a feature
with factors ``(n_t, l_t)`` and order ``p``:

``"algebraic"`` (ACEpotentials.jl's default form)
    ``gamma = w_nu^(nu - 1) sum_t (n_t^p + w_l l_t^p)``
``"exponential"``
    ``gamma = w_nu^(nu - 1) exp(sum_t (n_t + w_l l_t) / p)``
``"none"``
    ``gamma = 1`` (plain ridge)

``nu`` is the feature's correlation order (number of factors). The weights
``w_l`` (angular against radial roughness, ACEpotentials.jl's ``wL``) and
``w_nu`` (per extra factor: below 1 eases the sum's growth with the body
order) are 1 by default.
"""

import numpy as np

PRIORS = ("algebraic", "exponential", "none")


def smoothness_prior(features, kind="algebraic", order=4.0, l_weight=1.0, correlation_weight=1.0):
    """Diagonal ``Gamma`` for a list of basis features (``ACEBasis.features``).

    Parameters
    ----------
    features : list of dict
        ``ACEBasis.features``: each with ``"factors"``, tuples ``(z, n, l)``.
    kind : {"algebraic", "exponential", "none"}
    order : float
        ``p`` above.
    l_weight, correlation_weight : float
        ``w_l`` and ``w_nu`` above.

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
            out[k] = np.sum(n**order + l_weight * l**order)
        else:
            out[k] = np.exp(np.sum(n + l_weight * l) / order)
        out[k] *= correlation_weight ** (len(n) - 1)
    return out
