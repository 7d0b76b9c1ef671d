"""Distributed and streamed fitting: the least-squares system assembled in joblib blocks gives
the one-block coefficients; on a local dask.distributed cluster, exactly the local blocked
ones; fitting from a generator or an ASE database equals fitting from a list."""

import ase.db
import joblib
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from threadpoolctl import threadpool_limits

import skace.streaming
from skace import ACERegressor, ACETransformer
from skace.datasets import make_emt_dataset
from skace.structures import read_database

threadpool_limits(limits=1, user_api="blas")

KW = dict(cutoff=4.5, correlation_order=2, max_degree=6)


@pytest.fixture(scope="module")
def data():
    return make_emt_dataset(n_structures=14, size=1, random_state=4)


def fit(data, **kw):
    # standardised columns: the Gram route is then well conditioned, so blocked and one-block
    # assemblies (different summation orders) agree to rounding in the coefficients too
    params = dict(descriptor=ACETransformer(**KW), solver="ridge", alpha=1e-6, cache=False, standardize=True)
    params.update(kw)
    return ACERegressor(**params).fit(data)


@pytest.mark.parametrize("design_limit", [10**9, 0], ids=["design", "gram"])
def test_blocks_give_the_one_block_fit(data, design_limit):
    one = fit(data, design_limit=design_limit)
    blocked = fit(data, design_limit=design_limit, n_blocks=4)
    np.testing.assert_allclose(blocked.coef_, one.coef_, rtol=1e-8, atol=1e-8 * np.abs(one.coef_).max())
    assert blocked.e0_ == pytest.approx(one.e0_, rel=1e-8)
    # energy-only with stress rows, and more blocks than structures
    e_one = fit(data, force_weight=0.0)
    e_blocked = fit(data, force_weight=0.0, n_blocks=50)
    np.testing.assert_allclose(e_blocked.coef_, e_one.coef_, rtol=1e-8, atol=1e-8 * np.abs(e_one.coef_).max())


def test_dask_cluster_gives_identical_coefficients(data):
    distributed = pytest.importorskip("dask.distributed")
    local = fit(data, n_blocks=3, design_limit=0)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = fit(data, n_blocks=3, design_limit=0)
        assert len(stream.data) >= 3  # the blocks ran as tasks on the cluster
    np.testing.assert_array_equal(remote.coef_, local.coef_)
    assert remote.e0_ == local.e0_


def test_generator_and_database_inputs(data, tmp_path, monkeypatch):
    reference = fit(data)
    # a generator of unknown elements is read into a list: the ordinary fit
    np.testing.assert_array_equal(fit(a for a in data).coef_, reference.coef_)
    # with the elements known it is streamed: blocks are assembled as they are read
    monkeypatch.setattr(skace.streaming, "STREAM_BLOCK_ATOMS", 10)
    produced, seen = [0], []
    assemble_block = skace.streaming.assemble_block

    def recording(descriptor, block, *args, **kwargs):
        seen.append((produced[0], len(block)))
        return assemble_block(descriptor, block, *args, **kwargs)

    def generate():
        for a in data:
            produced[0] += 1
            yield a

    monkeypatch.setattr(skace.streaming, "assemble_block", recording)
    gram = fit(data, design_limit=0)
    streamed = fit(generate(), descriptor=ACETransformer(**KW, elements=["Cu", "Au"]))
    assert len(seen) >= 4 and seen[0][0] < len(data)  # the first block before the rest was read
    assert sum(n for _, n in seen) == len(data)
    np.testing.assert_allclose(streamed.coef_, gram.coef_, rtol=1e-8, atol=1e-10 * np.abs(gram.coef_).max())
    np.testing.assert_allclose(streamed.predict(data), gram.predict(data), rtol=1e-10)
    # an ASE database path is streamed too (elements from a first pass over its rows)
    path = tmp_path / "emt.db"
    with ase.db.connect(path) as db:
        for a in data:
            b = a.copy()
            b.info = {}
            del b.arrays["forces"]
            b.calc = SinglePointCalculator(b, energy=a.info["energy"], forces=a.arrays["forces"],
                                           stress=a.info["stress"])
            db.write(b, config=a.info["config_type"])
    rows = read_database(path)
    assert len(rows) == len(data) and rows[0].info["config"] == data[0].info["config_type"]
    seen.clear()
    from_db = fit(str(path))
    assert len(seen) >= 4
    np.testing.assert_allclose(from_db.coef_, gram.coef_, rtol=1e-8, atol=1e-10 * np.abs(gram.coef_).max())
    assert from_db.descriptor_.elements_ == reference.descriptor_.elements_
    only_bulk = read_database(path, selection="config=bulk_300K")
    assert 0 < len(only_bulk) < len(data)
    np.testing.assert_allclose(from_db.predict(path), from_db.predict(data), rtol=1e-13)
    with pytest.raises(FileNotFoundError, match="no ASE database"):
        fit(str(tmp_path / "missing.db"))
    with pytest.raises(ValueError, match=r"unknown element 'Au' in X\[0:"):
        fit(iter(data), descriptor=ACETransformer(**KW, elements=["Cu"]))


@pytest.mark.slow
def test_dask_worker_processes_give_identical_coefficients(data):
    """Blocks pickled to two worker processes (about 10 s: worker start-up and numba cache loads)."""
    distributed = pytest.importorskip("dask.distributed")
    local = fit(data, n_blocks=3, design_limit=0)
    with distributed.Client(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None):
        with joblib.parallel_backend("dask"):
            remote = fit(data, n_blocks=3, design_limit=0)
    np.testing.assert_array_equal(remote.coef_, local.coef_)
