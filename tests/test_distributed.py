"""Scaling out: All-for-One's stage fits on a Dask cluster, one GPU per parallel stage fit,
and one model trained by processes that torchrun started.

The cluster and torchrun tests start real processes (slow); the device assignment is a pure
function, tested with a made-up GPU count.
"""

from __future__ import annotations

import tempfile
import warnings

import numpy as np
import pandas as pd
import pytest

from afo_encoding.encoders.afo import AllForOneEncoder
from afo_encoding.encoders.topy import TopyEncoder


def _image_data(n=40, n_voxels=6):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    gray = images.mean(-1)
    Y = gray[:, :8, :8].mean((1, 2))[:, None] + rng.normal(size=(n, n_voxels))
    return images, Y.astype(np.float32), rng.normal(size=(n_voxels, 3))


def _afo(**kw):
    stage_fit = TopyEncoder(
        head_solver="sgd", d_model=4, max_epochs=1, n_iter_no_change=1, top_k=1, soup=False,
        batch_size=32, device="cpu", backbone_params={"image_size": 16, "n_scales": 2},
    )  # fmt: skip
    params = {"rois": np.repeat([0, 1], 3), "dark_knowledge": "in_sample", "random_state": 0}
    return AllForOneEncoder(stage_fit, keep_stage_estimators=True, **params, **kw)


@pytest.mark.slow  # starts a cluster of 2 worker processes: ~20 s on 2 cores
def test_stage_fits_on_a_dask_cluster_match_one_process(tmp_path, monkeypatch):
    """On a Dask cluster, the stage fits give what they give with n_jobs=1, bit for bit.
    The backbone runs once, in the client; the workers read the features from the shared
    ``memory`` folder (or from a temporary folder, deleted after the fit)."""
    distributed = pytest.importorskip("distributed")
    from joblib import parallel_config

    from afo_encoding.backbones import clear_feature_cache
    from afo_encoding.backbones.pyramid import PyramidBackbone

    images, Y, coords = _image_data()
    computed = []
    forward = PyramidBackbone.forward

    def counting(self, x):
        computed.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(PyramidBackbone, "forward", counting)
    clear_feature_cache()
    serial = _afo(n_jobs=1).fit(images, Y, coords=coords)
    expected = serial.predict(images)

    cache = tmp_path / "features"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with (
        warnings.catch_warnings(),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
        parallel_config(backend="dask"),
    ):  # fmt: skip
        warnings.simplefilter("ignore", UserWarning)
        clear_feature_cache()
        computed.clear()
        with distributed.get_task_stream(client) as stream:
            shared = _afo(memory=cache).fit(images, Y, coords=coords)
        assert sum(computed) == len(images)  # in the client, once for the whole recipe
        assert any(cache.rglob("*")), "the features are in the shared folder"
        clear_feature_cache()
        computed.clear()
        temporary = _afo().fit(images, Y, coords=coords)
        assert sum(computed) == len(images)
        workers = set(client.scheduler_info()["workers"])
    # the 5 stage fits ran in the workers, both of them taking some
    assert len(stream.data) == 5
    assert {task["worker"] for task in stream.data} == workers
    for parallel in (shared, temporary):
        np.testing.assert_array_equal(parallel.predict(images), expected)
        pd.testing.assert_frame_equal(parallel.stage_scores_, serial.stage_scores_)
    # the temporary feature folder is gone, and the models do not point at it
    assert not list(tmp_path.glob("afo_features_*"))
    assert temporary.final_estimator_.memory is None
