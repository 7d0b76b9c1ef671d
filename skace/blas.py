"""In-place level-3 BLAS on blocks of large row-major matrices.

numpy's ``@`` writes every product to fresh memory, so updating a block of an
n x n Gram matrix (``G[i, j] += X_i^T X_j``) costs a temporary and a second
pass over the block; at 37062 functions that is a tenth of the time of a
Gram matrix or a Cholesky factorisation. scipy exports its BLAS to compiled
code (:mod:`scipy.linalg.cython_blas`); called through ctypes with the
block's own leading dimension, ``dgemm``, ``dsyrk`` and ``dtrsm`` update a
block where it lies.

Every argument is a 2-D float64 view with unit column stride (any block of a
C-contiguous array): its transpose is a column-major matrix whose leading
dimension is the row stride, which is what the Fortran routines take.
"""

import ctypes

import numpy as np

_P = ctypes.c_void_p
_ROUTINES = {"dgemm": 13, "dsyrk": 10, "dtrsm": 11}
_cache = {}


def _routine(name):
    """The ctypes function of scipy's BLAS routine ``name`` (looked up once)."""
    if name not in _cache:
        from numba.extending import get_cython_function_address

        address = get_cython_function_address("scipy.linalg.cython_blas", name)
        _cache[name] = ctypes.CFUNCTYPE(None, *[_P] * _ROUTINES[name])(address)
    return _cache[name]


def _char(c):
    return ctypes.byref(ctypes.c_char(c.encode()))


def _int(i):
    if not 0 <= i < 2**31:
        raise ValueError(f"BLAS dimension {i} out of the 32-bit range")
    return ctypes.byref(ctypes.c_int(int(i)))


def _double(x):
    return ctypes.byref(ctypes.c_double(float(x)))


def _fortran(a, name):
    """``(pointer, leading dimension)`` of the column-major transpose of the row-major view ``a``."""
    if a.dtype != np.float64 or a.ndim != 2 or (a.shape[1] > 1 and a.strides[1] != 8) or a.strides[0] < 0 or a.strides[0] % 8:
        raise ValueError(f"{name} must be a 2-D float64 view with unit column stride")
    ld = max(a.strides[0] // 8, a.shape[1], 1)
    return _P(a.ctypes.data), _int(ld)


def gemm_tn(C, A, B, alpha=1.0, beta=1.0):
    """``C = alpha A^T B + beta C`` in place (``A``: k x p, ``B``: k x q, ``C``: p x q).

    Examples
    --------
    >>> import numpy as np
    >>> from skace.blas import gemm_tn
    >>> A, B = np.arange(6.0).reshape(2, 3), np.ones((2, 2)); C = np.zeros((5, 5))
    >>> gemm_tn(C[1:4, 2:4], A, B)
    >>> bool(np.array_equal(C[1:4, 2:4], A.T @ B))
    True
    """
    (k, p), q = A.shape, B.shape[1]
    if B.shape[0] != k or C.shape != (p, q):
        raise ValueError(f"shapes {A.shape}^T x {B.shape} -> {C.shape} do not match")
    if min(p, q) == 0:
        return
    if k == 0:
        C *= beta
        return
    a, lda = _fortran(A, "A")
    b, ldb = _fortran(B, "B")
    c, ldc = _fortran(C, "C")
    # row-major C = A^T B is column-major C^T = B^T A: B's view untransposed, A's transposed
    _routine("dgemm")(_char("N"), _char("T"), _int(q), _int(p), _int(k), _double(alpha), b, ldb, a, lda,
                      _double(beta), c, ldc)


def syrk_tn_upper(C, A, alpha=1.0, beta=1.0):
    """Upper triangle of ``C = alpha A^T A + beta C`` in place; the strict lower triangle is
    not touched (``A``: k x p, ``C``: p x p).

    Examples
    --------
    >>> import numpy as np
    >>> from skace.blas import syrk_tn_upper
    >>> A = np.arange(6.0).reshape(2, 3); C = np.full((3, 3), -1.0)
    >>> syrk_tn_upper(C, A, beta=0.0)
    >>> C
    array([[ 9., 12., 15.],
           [-1., 17., 22.],
           [-1., -1., 29.]])
    """
    k, p = A.shape
    if C.shape != (p, p):
        raise ValueError(f"shapes {A.shape}^T x {A.shape} -> {C.shape} do not match")
    if p == 0:
        return
    if k == 0:
        C[np.triu_indices(p)] *= beta
        return
    a, lda = _fortran(A, "A")
    c, ldc = _fortran(C, "C")
    # the row-major upper triangle is the column-major lower one
    _routine("dsyrk")(_char("L"), _char("N"), _int(p), _int(k), _double(alpha), a, lda, _double(beta), c, ldc)


def trsm_upper_t(U, B):
    """``B = U^-T B`` in place, ``U`` upper triangular (only its upper triangle is read).

    Examples
    --------
    >>> import numpy as np
    >>> from skace.blas import trsm_upper_t
    >>> U = np.array([[2.0, 1.0], [9.0, 4.0]]); B = np.array([[2.0, 4.0], [9.0, 6.0]])
    >>> trsm_upper_t(U, B)
    >>> B
    array([[1., 2.],
           [2., 1.]])
    """
    p, q = B.shape
    if U.shape != (p, p):
        raise ValueError(f"triangular factor of shape {U.shape} does not match {B.shape}")
    if p == 0 or q == 0:
        return
    u, ldu = _fortran(U, "U")
    b, ldb = _fortran(B, "B")
    # row-major B' = U^-T B is column-major B'^T = B^T U^-1, and U is the transpose of the
    # column-major lower triangle L that the view of U holds: B^T (L^T)^-1
    _routine("dtrsm")(_char("R"), _char("L"), _char("T"), _char("N"), _int(q), _int(p), _double(1.0), u, ldu,
                      b, ldb)
