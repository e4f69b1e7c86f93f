"""Scaling out: All-for-One's stage fits on a Dask cluster, one GPU per parallel stage fit,
and one model trained by processes that torchrun started.

The cluster and torchrun tests start real processes (slow); the device assignment is a pure
function, tested with a made-up GPU count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from afo_encoding._devices import assign_devices
from afo_encoding.encoders import afo_stages
from afo_encoding.encoders.afo import AllForOneEncoder
from afo_encoding.encoders.topy import TopyEncoder

REPO = Path(__file__).parents[1]


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


def test_parallel_fits_take_one_gpu_each_round_robin_over_devices():
    # every GPU by default (devices=1, -1, "auto"), in turn
    assert assign_devices(5, "auto", 1, n_gpus=2) == ["cuda:0", "cuda:1"] * 2 + ["cuda:0"]
    assert assign_devices(3, "cuda", -1, n_gpus=4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert assign_devices(2, "gpu", "auto", n_gpus=2) == ["cuda:0", "cuda:1"]
    # those listed, or the first ones for a count
    assert assign_devices(4, "auto", [1, 3], n_gpus=4) == ["cuda:1", "cuda:3"] * 2
    assert assign_devices(3, "cuda", "2,0", n_gpus=4) == ["cuda:2", "cuda:0", "cuda:2"]
    assert assign_devices(3, "auto", 2, n_gpus=4) == ["cuda:0", "cuda:1", "cuda:0"]
    # a CPU-only machine, the CPU, a named GPU: nothing changes
    assert assign_devices(3, "auto", 1, n_gpus=0) == ["auto"] * 3
    assert assign_devices(2, "cpu", 1, n_gpus=2) == ["cpu", "cpu"]
    assert assign_devices(2, "cuda:1", 1, n_gpus=2) == ["cuda:1", "cuda:1"]
    with pytest.raises(ValueError, match=r"devices=\[0, 2\] names GPUs \[2\].*sees 2 GPU"):
        assign_devices(2, "auto", [0, 2], n_gpus=2)


def _record_placements(monkeypatch, n_gpus):
    """StageRunner with ``n_gpus`` made-up GPUs and a run_fit that records its device."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: n_gpus)
    placed = []

    def fake_fit(spec, params, *args):
        placed.append((spec.name, args[-1], params["device"]))
        return afo_stages.FitOutput(None, [None], [np.zeros(1)])

    monkeypatch.setattr(afo_stages, "run_fit", fake_fit)
    specs = [afo_stages.FitSpec(f"fit{i}", [None], [None]) for i in range(3)]
    runner = afo_stages.StageRunner(
        {"device": "auto", "devices": 1}, [None], [np.zeros((4, 1))], [None], False, 0, [[0]],
        n_jobs=2,
    )  # fmt: skip
    return runner, specs, placed


def test_stage_runner_gives_parallel_fits_their_own_gpu(monkeypatch):
    from joblib import parallel_config

    runner, specs, placed = _record_placements(monkeypatch, n_gpus=2)
    with warnings.catch_warnings(), parallel_config(backend="threading"):
        warnings.simplefilter("ignore", UserWarning)  # threads: not reproducible, said so
        runner.stage("stage1", specs)
    assert sorted(placed) == [
        ("fit0", "cuda:0", "auto"), ("fit1", "cuda:1", "auto"), ("fit2", "cuda:0", "auto"),
    ]  # fmt: skip
    # one after the other, or on a machine without a GPU: the stage fits' own device
    placed.clear()
    runner.n_jobs = 1
    runner.stage("stage1", specs)
    assert [device for _, device, _ in placed] == [None] * 3
    runner, specs, placed = _record_placements(monkeypatch, n_gpus=0)
    with warnings.catch_warnings(), parallel_config(backend="threading"):
        warnings.simplefilter("ignore", UserWarning)
        runner.stage("stage1", specs)
    assert [device for _, device, _ in placed] == [None] * 3


#: the data and parameters of the small DDP fit, the same in the test and its torchrun script
DDP_FIT = """
import numpy as np

rng = np.random.default_rng(0)
X = rng.standard_normal((400, 8)).astype(np.float32)
y = X @ rng.standard_normal((8, 12)) + 0.5 * rng.standard_normal((400, 12))
coords = rng.standard_normal((12, 3))
PARAMS = {
    "head_solver": "sgd", "d_model": 16, "max_epochs": 8, "batch_size": 32,
    "learning_rate": 1e-2, "top_k": 2, "device": "cpu", "devices": 2, "random_state": 0,
}
"""

TORCHRUN_SCRIPT = """
import os
import sys

import numpy as np
import torch

from afo_encoding.encoders.topy import TopyEncoder

torch.set_num_threads(1)
{fit}
encoder = TopyEncoder(**PARAMS, strategy="ddp").fit(X[:300], y[:300], coords=coords)
if os.environ["RANK"] == "0":
    np.save(sys.argv[1], encoder.predict(X[300:]))
"""


def _torchrun(script: Path, *args, timeout=120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), *map(str, args),
    ]  # fmt: skip
    # a hang would stop the test here, as an error
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _torchrun_once_more_if_it_hangs(script: Path, *args, timeout=90):
    """A torchrun launch of the DDP fit hung once in 7 runs of this test on the loaded CI
    machine, and 2 in 5 launches beside two busy processes: gloo's process group was
    destroyed, holding the GIL, while a worker thread waited for the GIL to free a
    finished barrier (py-spy). The engine now frees the DDP wrapper first and leaves the
    GIL to gloo's threads before destroying the group (0 hangs in 12 launches under the
    same load). Should it come back, launch once more, and keep the hung launch's output
    in the test report as a warning, so the hang stays visible."""
    try:
        return _torchrun(script, *args, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        tail = err.stderr or b""
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        warnings.warn(f"torchrun hung for {timeout} s and was launched again; its stderr "
                      f"ended with: {tail[-2000:]!r}", stacklevel=2)
        return _torchrun(script, *args, timeout=timeout)


@pytest.mark.slow  # two torchrun processes and two spawned ones: ~40 s on 2 cores
def test_torchrun_ddp_fit_matches_the_spawned_one(tmp_path):
    """``strategy="ddp"`` in a script that torchrun started twice (gloo on the CPU) trains
    the model that ``strategy="ddp_spawn"`` trains from Python."""
    from afo_encoding.metrics import pearson_r

    namespace: dict = {}
    exec(DDP_FIT, namespace)
    X, y, coords, params = (namespace[k] for k in ("X", "y", "coords", "PARAMS"))
    script = tmp_path / "fit.py"
    script.write_text(TORCHRUN_SCRIPT.format(fit=DDP_FIT))
    run = _torchrun_once_more_if_it_hangs(script, tmp_path / "predicted.npy")
    assert run.returncode == 0, run.stderr[-3000:]
    launched = np.load(tmp_path / "predicted.npy")

    spawned = TopyEncoder(**params, strategy="ddp_spawn").fit(X[:300], y[:300], coords=coords)
    expected = spawned.predict(X[300:])
    assert pearson_r(y[300:], expected).mean() > 0.5  # it learnt something
    np.testing.assert_allclose(launched, expected, rtol=1e-4, atol=1e-4)


HANG_SCRIPT = """
import os
import time

from afo_encoding.training import EngineConfig

fabric = EngineConfig(accelerator="cpu", devices=2, strategy="ddp", timeout=5).fabric()
if os.environ["RANK"] == "1":
    time.sleep(120)  # a process that never joins
fabric.launch()
fabric.barrier()
"""


@pytest.mark.slow  # ~15 s: two torchrun processes, one of which waits 5 s for the other
def test_a_process_that_never_joins_is_an_error_not_a_hang(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(HANG_SCRIPT)
    run = _torchrun(script, timeout=90)  # torch's default would wait 30 minutes
    assert run.returncode != 0
    assert "timeout after 5000ms" in run.stderr, run.stderr[-3000:]
