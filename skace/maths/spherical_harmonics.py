"""Real spherical harmonics: the convention skace uses, and its link to complex ones.

Convention
----------
Index ``(l, m)`` of a harmonic is stored at flat position ``l * l + l + m``.
The real harmonics are built from the complex ones :math:`Y_l^m` (with the
Condon-Shortley phase, as in :func:`scipy.special.sph_harm_y`) by

.. math::

    Y_{l,m} = \\begin{cases}
        \\frac{i}{\\sqrt 2}\\,(Y_l^{m} - (-1)^m Y_l^{-m}) & m < 0 \\\\
        Y_l^0 & m = 0 \\\\
        \\frac{1}{\\sqrt 2}\\,(Y_l^{-m} + (-1)^m Y_l^{m}) & m > 0
    \\end{cases}

so they are orthonormal on the unit sphere, and :math:`Y_{l,m}(-\\hat r) =
(-1)^l Y_{l,m}(\\hat r)`. The numba kernel :mod:`skace.kernels.harmonics`
evaluates exactly these functions with a Cartesian recurrence.
"""

import numpy as np


def lm_index(l, m):
    """Flat position of harmonic ``(l, m)`` in an array holding all ``l <= l_max``."""
    return l * l + l + m


def n_harmonics(l_max):
    """Number of real harmonics with ``l <= l_max``."""
    return (l_max + 1) ** 2


def real_from_complex(l):
    """Unitary matrix ``U`` with ``Y_real[m] = sum_mu U[m, mu] Y_complex[mu]``.

    Rows and columns run over ``m, mu = -l .. l``.
    """
    d = 2 * l + 1
    U = np.zeros((d, d), dtype=complex)
    s = 1.0 / np.sqrt(2.0)
    for m in range(-l, l + 1):
        if m < 0:
            U[m + l, m + l] = 1j * s
            U[m + l, -m + l] = -1j * s * (-1) ** m
        elif m == 0:
            U[l, l] = 1.0
        else:
            U[m + l, -m + l] = s
            U[m + l, m + l] = s * (-1) ** m
    return U


def real_spherical_harmonics_reference(l_max, vectors):
    """Slow reference: real harmonics of the directions of ``vectors`` via scipy.

    Parameters
    ----------
    l_max : int
        Largest degree.
    vectors : ndarray of shape (n, 3)
        Non-zero vectors; only their directions matter.

    Returns
    -------
    Y : ndarray of shape (n, (l_max + 1) ** 2)
    """
    from scipy.special import sph_harm_y

    v = np.asarray(vectors, dtype=float)
    r = np.linalg.norm(v, axis=1)
    theta = np.arccos(np.clip(v[:, 2] / r, -1.0, 1.0))
    phi = np.arctan2(v[:, 1], v[:, 0])
    out = np.empty((len(v), n_harmonics(l_max)))
    for l in range(l_max + 1):
        ms = np.arange(-l, l + 1)
        Yc = np.stack([sph_harm_y(l, m, theta, phi) for m in ms], axis=1)
        Yr = Yc @ real_from_complex(l).T
        out[:, l * l:(l + 1) ** 2] = Yr.real
    return out
