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
# class pages list their own methods (doc/_templates/autosummary/class.rst), as
# scikit-learn's do; numpydoc's own member tables would repeat them
numpydoc_show_class_members = False
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]
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
    # "Gallery examples using X" on every API page (the minigallery of the templates)
    "doc_module": ("afo_encoding",),
    "backreferences_dir": "gen_modules/backreferences",
}

html_theme = "pydata_sphinx_theme"
html_title = "afo-encoding"


def _undocumented_methods(env) -> list[str]:
    """Public methods of the documented classes that have no entry of their own."""
    import importlib
    import inspect

    objects = env.get_domain("py").objects
    missing = []
    for name, entry in objects.items():
        if entry.objtype not in ("class", "exception") or entry.aliased:
            continue
        module_name, _, class_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        for attr, value in vars(cls).items():
            if attr.startswith("_") or attr.endswith("_request"):
                continue  # private, or scikit-learn's generated metadata-routing setters
            method = inspect.isfunction(value) or isinstance(value, (classmethod,
                                                                     staticmethod))
            if method and f"{name}.{attr}" not in objects:
                missing.append(f"{name}.{attr}")
    return sorted(missing)


def _check_methods_documented(app, env) -> None:
    """Fail the build (-W) when a public method of an API class is not on its page."""
    from sphinx.util import logging

    for name in _undocumented_methods(env):
        logging.getLogger(__name__).warning(
            "%s is public but not documented: give it a docstring (class pages list "
            "their methods through doc/_templates/autosummary/class.rst).", name)


def setup(app):
    app.connect("env-check-consistency", _check_methods_documented)
