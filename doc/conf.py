"""Sphinx configuration: numpydoc API pages and a sphinx-gallery of the examples.

Build with ``pip install ".[doc]" && sphinx-build -b html doc doc/_build/html``.
"""

import os
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

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "reference_url": {"afo_encoding": None},
}

html_theme = "pydata_sphinx_theme"
html_title = "afo-encoding"
