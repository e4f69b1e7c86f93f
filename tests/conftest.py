"""Shared test configuration: headless plotting, one compute thread, no network.

The tests' arrays are small, so a second BLAS/OpenMP thread buys little, while on a busy
or shared CPU it makes small operations wait on each other (10-100x slower was measured on
2 shared cores); one thread also makes float rounding independent of the machine. The
variables must be set before numpy or torch is imported, hence here.
"""

import os

import pytest

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_compute_thread():
    """Hold torch and BLAS to one thread even where the environment asked for more."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def realdata():
    """The real recordings beside the project (``../shared/realdata``, or $AFO_REALDATA);
    tests that need them skip in a fresh clone where they are absent."""
    from pathlib import Path

    root = Path(os.environ.get("AFO_REALDATA", Path(__file__).parents[2] / "shared" / "realdata"))
    if not (root / "cowley2023_v4").is_dir():
        pytest.skip(f"the real recordings are not at {root} (set AFO_REALDATA to their folder)")
    return root


@pytest.fixture(scope="session")
def things_osf(tmp_path_factory):
    """A stand-in of the THINGS images on OSF (see tests/standins_things.py)."""
    from standins_things import make_things_images

    root = tmp_path_factory.mktemp("things_osf")
    return root, make_things_images(root)


@pytest.fixture(scope="session")
def ds004212(tmp_path_factory):
    """A stand-in of THINGS-MEG (OpenNeuro ds004212), a local DataLad dataset."""
    from standins_things import make_things_meg

    root = tmp_path_factory.mktemp("ds004212")
    return root, make_things_meg(root)


@pytest.fixture
def things_images_here(monkeypatch, things_osf):
    """Point the THINGS images' addresses to the local stand-in."""
    from datasets_fetchers import _things_images

    root, truth = things_osf
    monkeypatch.setattr(_things_images, "ARCHIVE_URL", (root / "images_THINGS.zip").as_uri())
    monkeypatch.setattr(_things_images, "TERMS_URL", (root / "password_images.txt").as_uri())
    return truth
