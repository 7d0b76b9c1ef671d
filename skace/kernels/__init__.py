"""Numba kernels: the numerics of skace (neighbour lists, radial functions, harmonics, ACE).

``cache=True`` keys a compiled kernel on its own source file only, so a kernel
that calls into another module (``ace.py`` into ``radial.py``, ``export.py``
into ``radial.py``) would keep running the old callee after that module
changed, as in an editable install after ``git pull``. Importing this package
therefore drops skace's numba caches (beside the sources, or under
``NUMBA_CACHE_DIR``) whenever the kernel sources differ from those the caches
were built from. A process that imported the old sources and is still running
(a notebook kernel) can write old entries again: restart it after an upgrade.
"""

import hashlib
import os
from pathlib import Path

import numba

_KERNELS = Path(os.path.abspath(__file__)).parent  # numba keys caches on abspath, not the resolved path
_PACKAGE = _KERNELS.parent
_STAMP = _KERNELS / "__pycache__" / "skace-kernels.sha256"


def _user_cache_dir():
    """numba's per-user cache folder (used when the sources' folder is read-only), or None."""
    try:
        from numba.misc.appdirs import AppDirs
    except ImportError:
        return None
    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)


def _cache_dirs_elsewhere():
    """Folders where numba caches skace's kernels when not beside the sources: ``NUMBA_CACHE_DIR``, or
    the per-user cache (read-only installs); numba names one subfolder per source folder."""
    try:
        from numba.core.caching import _CacheLocator
    except ImportError:  # numba reorganised: only the caches beside the sources are dropped
        return []
    bases = [Path(numba.config.CACHE_DIR)] if numba.config.CACHE_DIR else []
    bases += [base for base in [_user_cache_dir()] if base is not None]
    folders = {path.parent for path in _PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    return [base / _CacheLocator.get_suitable_cache_subpath(str(folder / "x.py")) for base in bases for folder in folders]


def _stamps():
    """Where the digest of the sources the caches were built from is kept: beside the kernels, or, for a
    read-only install, in the per-user cache."""
    user = _user_cache_dir()
    key = hashlib.sha1(str(_PACKAGE).encode()).hexdigest()[:16]
    return [_STAMP] + ([] if user is None else [user / f"skace-kernels-{key}.sha256"])


def kernel_sources_digest():
    """SHA-256 of the kernel sources (``skace/kernels/*.py``)."""
    digest = hashlib.sha256()
    for path in sorted(_KERNELS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def drop_stale_numba_caches():
    """Delete skace's numba cache files if they were built from other kernel sources.

    Returns the number of files deleted (0 when the caches are current).
    """
    current = kernel_sources_digest()
    stamps = _stamps()
    for stamp in stamps:
        try:
            if stamp.read_text() == current:
                return 0
        except OSError:
            pass
    files = list(_PACKAGE.rglob("__pycache__/*.nb[ic]"))
    for folder in _cache_dirs_elsewhere():
        files += list(folder.glob("*.nb[ic]"))
    dropped = 0
    for path in files:
        try:
            path.unlink()
            dropped += 1
        except OSError:  # gone already (a concurrent import), or not ours to delete
            pass
    for stamp in stamps:
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            partial = stamp.with_name(f"{stamp.name}.{os.getpid()}")
            partial.write_text(current)
            os.replace(partial, stamp)  # atomic: a concurrent import never reads half a stamp
            break
        except OSError:
            continue
    return dropped


drop_stale_numba_caches()
