"""Where data sets live on disk."""

from __future__ import annotations

import os
from pathlib import Path


def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: ``data_dir``, then ``$AFO_DATA``, then ``~/afo_data``.

    Parameters
    ----------
    data_dir : str | path-like | None
        An explicit directory; wins over everything else.

    Returns
    -------
    path : pathlib.Path
        The directory, created if it did not exist.
    """
    if data_dir is None:
        data_dir = os.environ.get("AFO_DATA") or Path.home() / "afo_data"
    path = Path(data_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_description(name: str) -> str:
    """The ``.rst`` description of a data set, shipped in ``datasets_fetchers/descr``."""
    return (Path(__file__).parent / "descr" / f"{name}.rst").read_text(encoding="utf-8")
