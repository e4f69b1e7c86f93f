"""Where data sets live on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


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


def scale_noise_ceiling(nc_single, n_trials: float) -> np.ndarray:
    """NSD's noise ceiling (percent) of averages of ``n_trials`` trials, from that of
    single trials: ``ncsnr**2 = p / (1 - p)`` with ``p = nc_single / 100``."""
    from afo_encoding.metrics import noise_ceiling

    p = np.clip(np.asarray(nc_single, dtype=np.float64) / 100.0, 0.0, 1.0 - 1e-12)
    return noise_ceiling(np.sqrt(p / (1.0 - p)), n_trials)
