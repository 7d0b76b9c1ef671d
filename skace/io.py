"""Model files: versioned, checksummed, written atomically.

Layout: a magic line, one line of JSON header (format version, skace version,
payload size and SHA-256, compression), then the pickled model, compressed
with zlib since format 2 (the descriptor's evaluation tables shrink about
six-fold; format 1 files, uncompressed, still load). Writing goes to a
temporary file in the target folder that replaces the target only once it is
complete, so an interrupted save never leaves a half-written model (and never
destroys the previous one). Loading checks every part and names what is wrong.
"""

import hashlib
import json
import os
import pickle
import tempfile
import zlib
from pathlib import Path

MAGIC = b"SKACE-MODEL\n"
FORMAT_VERSION = 2

#: zlib level of the payload: level 1 takes most of the gain (the default rMD17 ethanol model:
#: 117 MiB of pickle to 18.5 MiB at level 1, 13.9 MiB at 6 for 2.6 times the time).
COMPRESS_LEVEL = 1


class ModelFileError(ValueError):
    """A model file that is not a skace model, is damaged, or is too new."""


def save(model, path):
    """Write a fitted model to ``path`` atomically.

    The file is a short header followed by a pickle of ``model``. A posterior
    larger than ``skace.regressor.POSTERIOR_SAVE_BYTES`` (64 MiB; the default
    basis's is gigabytes) is left out, so ``predict(return_std=True)`` needs
    the fitted object itself, not the loaded copy; everything else survives.

    Parameters
    ----------
    model : ACERegressor
        A fitted estimator (anything picklable is accepted).
    path : str or Path

    Examples
    --------
    >>> import tempfile, os
    >>> from skace import ACERegressor, ACETransformer, save, load
    >>> from skace.datasets import load_sample
    >>> model = ACERegressor(ACETransformer(cutoff=4.0, correlation_order=2, max_degree=6)).fit(load_sample(n=30))
    >>> path = os.path.join(tempfile.mkdtemp(), "ethanol.skace")
    >>> save(model, path)
    >>> load(path).predict(load_sample(n=2)).shape
    (2,)
    """
    from . import __version__

    path = Path(path)
    payload = zlib.compress(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), COMPRESS_LEVEL)
    header = {
        "format": FORMAT_VERSION,
        "skace": __version__,
        "class": type(model).__name__,
        "compression": "zlib",
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC)
            fh.write(json.dumps(header).encode() + b"\n")
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would
        # (or keep the mode of the file it replaces)
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path):
    """Read a model written by :func:`save`.

    The model is unpickled: as with any pickle, load only files from a source
    you trust, since a crafted file can run code.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a skace model, is truncated or corrupted, was
        written by a newer skace format, or holds objects this installation
        cannot rebuild (a class that no longer exists or is not installed).
    """
    path = Path(path)
    if not path.exists():  # a missing model, said as such (not as the OS's errno text)
        raise FileNotFoundError(f"no such model file: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise ModelFileError(f"{path} is not a skace model file")
        line = fh.readline()
        try:
            header = json.loads(line)
        except ValueError:
            raise ModelFileError(f"{path}: damaged header") from None
        if not isinstance(header, dict) or not isinstance(header.get("format"), int) \
                or isinstance(header.get("format"), bool):
            raise ModelFileError(f"{path}: damaged header")
        if header["format"] > FORMAT_VERSION:
            raise ModelFileError(
                f"{path} uses model format {header['format']} (written by skace {header.get('skace')}); "
                f"this skace reads format {FORMAT_VERSION} or older: upgrade skace"
            )
        payload = fh.read()
    size = header.get("size")
    if len(payload) != size:
        what = "truncated" if isinstance(size, int) and len(payload) < size else "damaged (wrong size)"
        raise ModelFileError(f"{path} is {what}: payload has {len(payload)} bytes, header says {size}")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ModelFileError(f"{path} is corrupted (checksum mismatch)")
    if header["format"] >= 2:  # compressed since format 2
        if header.get("compression") != "zlib":
            raise ModelFileError(f"{path}: damaged header (compression {header.get('compression')!r}, not 'zlib')")
        try:
            payload = zlib.decompress(payload)
        except zlib.error as err:
            raise ModelFileError(f"{path} is corrupted (its compressed payload does not inflate: {err})") from None
    try:
        model = pickle.loads(payload)
    except Exception as err:  # intact bytes that this installation cannot rebuild into objects
        raise ModelFileError(
            f"{path} is intact but its model cannot be rebuilt here ({type(err).__name__}: {err}); it was "
            f"written by skace {header.get('skace')}: load it with that version, or check that the packages "
            "its model refers to (for example a baseline calculator's) are installed"
        ) from err
    _check_features_unchanged(model, header, path)
    return model


def _version(text):
    try:
        return tuple(int(part) for part in str(text).split(".")[:3])
    except ValueError:
        return (0,)


def _descriptors(model):
    """ACE transformers inside ``model`` (itself, a regressor's descriptor, pipeline steps)."""
    found = []
    for obj in [model, getattr(model, "descriptor_", None)] + [step for _, step in getattr(model, "steps", [])]:
        if hasattr(obj, "radial_basis") and hasattr(obj, "inner_cutoff"):
            found.append(obj)
        elif obj is not model and hasattr(obj, "descriptor_"):
            found.extend(_descriptors(obj))
    return found


def _check_features_unchanged(model, header, path):
    """Refuse models whose features this skace computes differently from the one that fitted them.

    Before skace 0.2.0 the Bessel radial functions ignored ``inner_cutoff``; now
    they span ``[inner_cutoff, cutoff]``, so such a model's coefficients no
    longer match its features.
    """
    if _version(header.get("skace")) >= (0, 2, 0):
        return
    for desc in _descriptors(model):
        if desc.radial_basis == "bessel" and desc.inner_cutoff > 0:
            raise ModelFileError(
                f"{path} was written by skace {header.get('skace')} with Bessel radial functions and "
                f"inner_cutoff={desc.inner_cutoff}, which that version ignored and this one uses: "
                "refit the model (or set inner_cutoff=0 to reproduce it) with this skace"
            )


def load_potential(path):
    """:func:`load` a file that must hold a fitted skace potential (an ``ACERegressor``)."""
    model = load(path)
    if not hasattr(model, "predict_energy_forces"):
        raise ModelFileError(f"{path} holds a {type(model).__name__}, not a skace potential (ACERegressor)")
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "coef_")
    return model
