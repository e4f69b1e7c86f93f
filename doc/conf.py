"""Sphinx configuration: numpydoc API pages and a sphinx-gallery of the examples.

Build with ``pip install ".[doc]" && sphinx-build -b html doc doc/_build/html``.
"""

import os
import socket
from importlib.metadata import version as _version

os.environ.setdefault("MPLBACKEND", "Agg")

project = "afo-encoding"
copyright = "2026, afo-encoding developers"
release = _version("afo-encoding")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

autosummary_generate = True
numpydoc_show_class_members = False
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "sklearn": ("https://scikit-learn.org/stable", None),
    "nilearn": ("https://nilearn.github.io/stable", None),
    "mne": ("https://mne.tools/stable", None),
    "torch": ("https://pytorch.org/docs/stable", None),
}



def _sources_reachable(timeout: float = 5.0) -> bool:
    """Whether the hosts of the data sets that the plot_fetch_* examples download answer."""
    for host in ("natural-scenes-dataset.s3.amazonaws.com", "raw.githubusercontent.com",
                 "github.com", "api.figshare.com", "osf.io"):
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                pass
        except OSError:
            return False
    return True


# The examples that download data sets (plot_fetch_*) run only where their sources answer;
# offline, the gallery shows them without running them, and links to other projects'
# documentation (intersphinx) are left out rather than warned about, so that an offline
# build can treat warnings as errors (-W). AFO_DOCS_NETWORK=0 or 1 skips the probe.
_network = os.environ.get("AFO_DOCS_NETWORK")
_online = _sources_reachable() if _network is None else _network == "1"
if not _online:
    intersphinx_mapping = {}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # THINGS-fMRI and THINGS-MEG need the 12 GB THINGS image archive: never run here
    "filename_pattern": r"/plot_(?!fetch_things_(fmri|meg))" if _online
    else r"/plot_(?!fetch_)",
    "download_all_examples": False,
    "reference_url": {"afo_encoding": None},
}

html_theme = "pydata_sphinx_theme"
html_title = "afo-encoding"
