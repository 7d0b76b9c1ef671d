"""Numba kernels: the numerics of skace (neighbour lists, radial functions, harmonics, ACE).

``cache=True`` keys a compiled kernel on its own source file only, so a kernel
that calls into another module (``ace.py`` into ``radial.py``, ``export.py``
into ``radial.py``) would keep running the old callee after that module
changed, as in an editable install after ``git pull``. Importing this package
therefore drops skace's numba caches whenever the kernel sources differ from
those the caches were built from.
"""

import hashlib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
_STAMP = Path(__file__).resolve().parent / "__pycache__" / "skace-kernels.sha256"


def kernel_sources_digest():
    """SHA-256 of the kernel sources (``skace/kernels/*.py``)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def drop_stale_numba_caches():
    """Delete skace's numba cache files if they were built from other kernel sources.

    Returns the number of files deleted (0 when the caches are current, or when
    the install is read-only: numba then caches elsewhere or recompiles).
    """
    current = kernel_sources_digest()
    try:
        if _STAMP.read_text() == current:
            return 0
    except OSError:
        pass
    dropped = 0
    try:
        for path in _PACKAGE.rglob("__pycache__/*.nb[ic]"):
            path.unlink(missing_ok=True)
            dropped += 1
        _STAMP.parent.mkdir(exist_ok=True)
        _STAMP.write_text(current)
    except OSError:
        pass
    return dropped


drop_stale_numba_caches()
