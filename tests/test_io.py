"""Tests of model files (``skace.save`` / ``skace.load``): bit-identical round trips,
atomic writes, and clear ``ModelFileError``s for damaged, foreign or too-new files."""

import hashlib
import json
import os
import pickle
import stat
import zlib

import numpy as np
import pytest
from ase import Atoms
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

import skace
import skace.io
from skace import ACERegressor, ACETransformer
from skace.datasets import load_sample
from skace.io import MAGIC, ModelFileError

threadpool_limits(limits=1, user_api="blas")  # see test_regressor.py: conftest's limit comes too early

KW = dict(cutoff=4.0, correlation_order=2, max_degree=5)


@pytest.fixture(scope="module")
def model():
    return ACERegressor(ACETransformer(**KW), solver="bayesian").fit(load_sample(n=20))


@pytest.fixture(scope="module")
def other_model():
    return ACERegressor(ACETransformer(**KW), solver="ridge", alpha=1e-2).fit(load_sample(n=10))


@pytest.fixture
def saved(model, tmp_path):
    path = tmp_path / "model.skace"
    skace.save(model, path)
    return path


def test_round_trip_is_bit_identical(model, saved):
    loaded = skace.load(saved)
    assert type(loaded) is ACERegressor
    X = load_sample("test", n=5)
    cell = Atoms("CHOH", positions=[[0, 0, 0], [1.1, 0, 0], [0, 1.3, 0.2], [0.5, 0.5, 1.5]],
                 cell=[3.5, 3.6, 3.7], pbc=True)
    E, std = model.predict(X, return_std=True)
    E2, std2 = loaded.predict(X, return_std=True)
    assert np.array_equal(E, E2) and np.array_equal(std, std2)
    assert np.array_equal(model.predict_forces(X), loaded.predict_forces(X))
    assert np.array_equal(model.predict_atomic_energies(X), loaded.predict_atomic_energies(X))
    assert np.array_equal(model.predict_stress([cell]), loaded.predict_stress([cell]))
    assert np.array_equal(model.coef_, loaded.coef_) and model.e0_ == loaded.e0_
    assert loaded.get_params()["descriptor__max_degree"] == KW["max_degree"]


def test_str_path_and_file_layout(model, tmp_path):
    path = str(tmp_path / "m.skace")
    skace.save(model, path)
    raw = open(path, "rb").read()
    assert raw.startswith(MAGIC)
    line, payload = raw[len(MAGIC):].split(b"\n", 1)
    header = json.loads(line)
    assert header["format"] == skace.io.FORMAT_VERSION
    assert header["skace"] == skace.__version__
    assert header["class"] == "ACERegressor"
    assert header["size"] == len(payload)
    assert header["sha256"] == hashlib.sha256(payload).hexdigest()
    assert header["compression"] == "zlib"
    pickled = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    assert np.array_equal(pickle.loads(zlib.decompress(payload)).coef_, model.coef_)
    assert len(payload) < len(pickled)
    assert np.array_equal(skace.load(path).coef_, model.coef_)


def test_save_replaces_existing_file(model, other_model, saved):
    skace.save(other_model, saved)
    assert np.array_equal(skace.load(saved).coef_, other_model.coef_)
    assert sorted(os.listdir(saved.parent)) == [saved.name]


def _failing(*args, **kwargs):
    raise RuntimeError("simulated failure")


@pytest.mark.parametrize("where", ["pickle.dumps", "fsync", "write", "replace"])
def test_failed_save_keeps_old_file(other_model, saved, monkeypatch, where):
    before = saved.read_bytes()
    if where == "pickle.dumps":
        monkeypatch.setattr(skace.io.pickle, "dumps", _failing)
    elif where == "fsync":
        monkeypatch.setattr(skace.io.os, "fsync", _failing)
    elif where == "replace":
        monkeypatch.setattr(skace.io.os, "replace", _failing)
    else:  # the disk fills up half-way through: the header is written, the payload is not
        real_fdopen = os.fdopen

        class Failing:
            def __init__(self, fh):
                self.fh, self.calls = fh, 0

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, data):
                self.calls += 1
                if self.calls == 3:
                    self.fh.write(data[: len(data) // 2])
                    raise RuntimeError("simulated failure")
                return self.fh.write(data)

            def __getattr__(self, name):
                return getattr(self.fh, name)

        monkeypatch.setattr(skace.io.os, "fdopen", lambda *a, **k: Failing(real_fdopen(*a, **k)))
    with pytest.raises(RuntimeError, match="simulated failure"):
        skace.save(other_model, saved)
    assert saved.read_bytes() == before
    assert sorted(os.listdir(saved.parent)) == [saved.name], "temporary file left behind"
    monkeypatch.undo()
    assert isinstance(skace.load(saved), ACERegressor)


def test_failed_first_save_leaves_nothing(model, tmp_path, monkeypatch):
    monkeypatch.setattr(skace.io.os, "fsync", _failing)
    with pytest.raises(RuntimeError):
        skace.save(model, tmp_path / "new.skace")
    assert os.listdir(tmp_path) == []


def test_saved_file_has_normal_permissions(model, tmp_path):
    """A model file should be as readable as any file the user writes (mode 0o666 & ~umask),
    e.g. for a model shared on a cluster; a temporary file created by mkstemp is 0o600 and
    os.replace keeps that mode."""
    umask = os.umask(0o022)
    try:
        path = tmp_path / "shared.skace"
        skace.save(model, path)
        plain = tmp_path / "plain"
        plain.write_bytes(b"x")
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
    finally:
        os.umask(umask)


def test_saving_into_missing_folder(model, tmp_path):
    with pytest.raises(FileNotFoundError):
        skace.save(model, tmp_path / "no" / "such" / "folder" / "m.skace")


# ======================================================================
# damaged and foreign files
# ======================================================================
def _payload_start(raw):
    return raw.index(b"\n", len(MAGIC)) + 1


def test_truncated_payload(saved):
    raw = saved.read_bytes()
    start = _payload_start(raw)
    for keep in (start, start + 10, len(raw) - 1):
        saved.write_bytes(raw[:keep])
        with pytest.raises(ModelFileError, match="truncated"):
            skace.load(saved)


@pytest.mark.parametrize("keep", [0, 5, len(MAGIC), len(MAGIC) + 10])
def test_truncated_before_payload(saved, keep):
    saved.write_bytes(saved.read_bytes()[:keep])
    with pytest.raises(ModelFileError, match=str(saved.name)):
        skace.load(saved)


def test_flipped_payload_bytes(saved):
    raw = bytearray(saved.read_bytes())
    start = _payload_start(bytes(raw))
    for pos in (start, start + (len(raw) - start) // 2, len(raw) - 1):
        damaged = bytearray(raw)
        damaged[pos] ^= 0x40
        saved.write_bytes(bytes(damaged))
        with pytest.raises(ModelFileError, match="corrupted"):
            skace.load(saved)


def test_extra_trailing_bytes(saved):
    """A file with bytes appended is damaged, but it is not 'truncated'."""
    saved.write_bytes(saved.read_bytes() + b"\x00garbage")
    with pytest.raises(ModelFileError) as err:
        skace.load(saved)
    assert "truncated" not in str(err.value), str(err.value)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x89PNG\r\n\x1a\n" + bytes(100),
                                     pickle.dumps({"coef": [1, 2, 3]}), b"SKACE-MODEL"])
def test_not_a_model_file(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a skace model"):
        skace.load(path)


def test_joblib_file_is_not_a_model(model, tmp_path):
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    with pytest.raises(ModelFileError, match="not a skace model"):
        skace.load(path)


def _rewrite_header(path, **changes):
    raw = path.read_bytes()
    start = _payload_start(raw)
    header = json.loads(raw[len(MAGIC):start])
    header.update(changes)
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + raw[start:])


def test_newer_format(saved):
    _rewrite_header(saved, format=skace.io.FORMAT_VERSION + 1, skace="9.0")
    with pytest.raises(ModelFileError, match=rf"format {skace.io.FORMAT_VERSION + 1}.*upgrade skace"):
        skace.load(saved)


@pytest.mark.parametrize("header", [b"{not json", b"[1, 2]", b'{"skace": "0.1.0"}', b"", b"\xff\xfe"])
def test_damaged_header(saved, header):
    raw = saved.read_bytes()
    saved.write_bytes(MAGIC + header + b"\n" + raw[_payload_start(raw):])
    with pytest.raises(ModelFileError, match="header"):
        skace.load(saved)


@pytest.mark.parametrize("value", ["1", None, [1], 1.5])
def test_header_with_malformed_format_field(saved, value):
    """Valid JSON whose "format" is not an integer is a damaged header, not a TypeError."""
    _rewrite_header(saved, format=value)
    with pytest.raises(ModelFileError):
        skace.load(saved)


def test_header_with_wrong_size(saved):
    raw = saved.read_bytes()
    size = len(raw) - _payload_start(raw)
    _rewrite_header(saved, size=size + 7)
    with pytest.raises(ModelFileError, match="truncated"):
        skace.load(saved)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file: .*missing.skace"):
        skace.load(tmp_path / "missing.skace")
    with pytest.raises((IsADirectoryError, PermissionError, ModelFileError)):
        skace.load(tmp_path)


def test_model_file_error_is_value_error():
    assert issubclass(ModelFileError, ValueError)


def _write_with_payload(path, payload, compress=True, **changes):
    """A model file around ``payload`` (a pickle, zlib-compressed unless ``compress`` is False)."""
    if compress:
        payload = zlib.compress(payload)
    header = {"format": skace.io.FORMAT_VERSION, "skace": "9.9.9", "class": "ACERegressor", "compression": "zlib",
              **changes, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)


def test_format_1_files_uncompressed_still_load(model, tmp_path):
    """Files written before compression (format 1: the bare pickle) load to the same model."""
    path = tmp_path / "old.skace"
    _write_with_payload(path, pickle.dumps(model), compress=False, format=1, skace="0.2.0")
    X = load_sample("test", n=3)
    assert np.array_equal(skace.load(path).predict_forces(X), model.predict_forces(X))


def test_compressed_payload_that_does_not_inflate(model, tmp_path):
    """A checksum-valid payload that is not zlib data (only a crafted file), or a format-2 header
    without the compression it was written with, is a ModelFileError, not a zlib or pickle error."""
    path = tmp_path / "bad.skace"
    _write_with_payload(path, pickle.dumps(model), compress=False)
    with pytest.raises(ModelFileError, match="does not inflate"):
        skace.load(path)
    for compression in ("lzma", None):
        _write_with_payload(path, pickle.dumps(model), compression=compression)
        with pytest.raises(ModelFileError, match=rf"damaged header \(compression {compression!r}, not 'zlib'\)"):
            skace.load(path)


def test_intact_file_that_cannot_be_rebuilt(tmp_path):
    """A checksum-valid payload this installation cannot unpickle (a class from another
    version or a missing package; plain garbage) is a ModelFileError naming the writer."""
    path = tmp_path / "other.skace"
    # a pickle referring to a class that does not exist here
    _write_with_payload(path, pickle.dumps(object).replace(b"builtins", b"skace_xx").replace(b"object", b"Nope__"))
    with pytest.raises(ModelFileError, match=r"cannot be rebuilt.*skace 9\.9\.9"):
        skace.load(path)
    _write_with_payload(path, b"\x80\x05not a pickle at all")
    with pytest.raises(ModelFileError, match="cannot be rebuilt"):
        skace.load(path)


def test_model_pickled_before_new_parameters(model, tmp_path):
    """Models saved before stress_weight / stress_key / baseline / svd_memory_limit / the prior
    weights existed load with their defaults."""
    state = model.__getstate__()
    for name in ("stress_weight", "stress_key", "baseline", "svd_memory_limit", "prior_l_weight",
                 "prior_correlation_weight"):
        state.pop(name)
    old = ACERegressor.__new__(ACERegressor)
    old.__setstate__(state)
    params = old.get_params()
    assert params["stress_weight"] == 1.0 and params["baseline"] is None and params["stress_key"] == "stress"
    assert params["svd_memory_limit"] == "auto"
    assert params["prior_l_weight"] == 1.0 and params["prior_correlation_weight"] == 1.0
    X = load_sample("test", n=2)
    np.testing.assert_array_equal(old.predict(X), model.predict(X))


@pytest.mark.parametrize("inner, version, refused", [(0.5, "0.1.0", True), (0.0, "0.1.0", False), (0.5, "0.2.0", False)])
@pytest.mark.parametrize("pipeline", [False, True])
def test_bessel_inner_cutoff_models_of_0_1_are_refused(tmp_path, inner, version, refused, pipeline):
    """skace 0.1 ignored inner_cutoff for Bessel functions: such a model's coefficients do not fit today's features."""
    data = load_sample(n=5)
    desc = ACETransformer(cutoff=4.0, correlation_order=2, max_degree=5, radial_basis="bessel", inner_cutoff=inner)
    if pipeline:
        model = Pipeline([("ace", desc), ("ridge", Ridge())]).fit(data, [a.info["energy"] for a in data])
    else:
        model = ACERegressor(desc, solver="ridge", alpha=1e-3).fit(data)
    path = tmp_path / "m.skace"
    skace.save(model, path)
    _rewrite_header(path, skace=version)
    if refused:
        with pytest.raises(ModelFileError, match="inner_cutoff=0.5.*refit"):
            skace.load(path)
    else:
        assert type(skace.load(path)) is type(model)
