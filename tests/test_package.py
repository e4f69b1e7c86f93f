"""The top-level namespace: lazy public names, version, a light import."""

import subprocess
import sys

import pytest

import afo_encoding


def test_version_is_the_installed_metadata():
    from importlib.metadata import version

    assert afo_encoding.__version__ == version("afo-encoding")


@pytest.mark.parametrize("name", afo_encoding.__all__)
def test_every_public_name_resolves(name):
    assert getattr(afo_encoding, name) is not None
    assert name in dir(afo_encoding)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'TopyEncder'"):
        afo_encoding.TopyEncder  # noqa: B018


def test_import_does_not_load_torch():
    code = "import sys, afo_encoding; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "False"
