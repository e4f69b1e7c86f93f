"""An All-for-One fit killed with its workers running leaves nothing behind for long
(issue 18, item 13): its loky workers exit within seconds of the parent's death, and its
temporary feature folder is removed by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from afo_encoding._workers import new_temporary_folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from afo_encoding.encoders.afo import AllForOneEncoder
    from afo_encoding.encoders.topy import TopyEncoder

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    Y = (X @ rng.normal(size=(5, 6))).astype(np.float32)
    # stage fits that would run for a long time
    slow = TopyEncoder(head_solver="sgd", d_model=4, max_epochs=10**6, n_iter_no_change=10**6,
                       device="cpu")
    AllForOneEncoder(slow, rois=np.repeat([0, 1], 3), n_jobs=2).fit(
        X, Y, coords=rng.normal(size=(6, 3))
    )
    """
)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid and stat[0] != "Z":
                out.append(int(entry.name))
    return out


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def test_killed_parent_leaves_no_workers_and_its_folder_goes_on_the_next_run(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and parent.poll() is None:
            workers = [
                p for p in _children(parent.pid)
                if b"loky" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]  # fmt: skip
            if len(workers) >= 2 and list(tmp.glob("afo_features_*")):
                break
            time.sleep(0.5)
        assert parent.poll() is None, "the fit ended before the test could kill it"
        assert len(workers) >= 2, "no loky workers were started"
        time.sleep(2)  # the workers are inside their stage fits
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_running(p) for p in workers):
            time.sleep(0.5)
        alive = [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in workers if _running(p)]
        assert not alive, f"workers outlived their parent: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    (left,) = tmp.glob("afo_features_*")
    assert left.name.startswith(f"afo_features_{parent.pid}_")
    os.environ["TMPDIR"], previous = str(tmp), os.environ.get("TMPDIR")
    try:
        import tempfile

        tempfile.tempdir = None  # read TMPDIR again
        mine = new_temporary_folder("afo_features_")
    finally:
        if previous is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = previous
        tempfile.tempdir = None
    assert not left.exists()  # the next run removed the killed run's folder
    assert Path(mine).is_dir()
