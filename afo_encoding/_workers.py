"""Worker processes and temporary folders that do not outlive the fit that made them.

- :func:`exit_with_parent`: a worker process (joblib's loky, multiprocessing) started by a
  fit exits within about a second of its parent's death, instead of finishing a stage fit
  nobody will read.
- :func:`new_temporary_folder`: a temporary folder named after the process that made it
  (``<prefix><pid>_<random>``); the fit removes it when it ends, and a folder left by a
  process that was killed is removed by the next one that makes a folder of that prefix.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_WATCHING = threading.Event()


def exit_with_parent(interval: float = 1.0) -> None:
    """In a worker process, exit (status 1) as soon as the parent process is gone.

    Does nothing in a process that no multiprocessing parent started (the user's own
    process) and is called safely many times.
    """
    if multiprocessing.parent_process() is None or _WATCHING.is_set():
        return
    _WATCHING.set()
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:  # re-parented: the parent died
                os._exit(1)

    threading.Thread(target=watch, name="afo-exit-with-parent", daemon=True).start()


def parallel_options(backend: Any) -> dict:
    """Keywords of :class:`joblib.Parallel` that make the workers of ``backend`` (the active
    joblib backend) run :func:`exit_with_parent` when they start: loky's, the default; other
    backends get none (a busy worker still calls it when its task starts)."""
    from joblib._parallel_backends import LokyBackend

    return {"initializer": exit_with_parent} if isinstance(backend, LokyBackend) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_orphaned_folders(prefix: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Remove the folders ``<root>/<prefix><pid>_*`` whose process is gone; return them."""
    root = Path(tempfile.gettempdir() if root is None else root)
    removed = []
    for folder in root.glob(f"{prefix}*"):
        pid_text = folder.name[len(prefix) :].split("_", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def new_temporary_folder(prefix: str) -> str:
    """A new temporary folder ``<prefix><pid>_<random>``, after removing those of the same
    prefix that processes which no longer run left behind. The caller removes it."""
    remove_orphaned_folders(prefix)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}_")
