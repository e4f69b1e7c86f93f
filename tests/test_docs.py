"""Docstring templates: fragments are filled in with the placeholder's indentation."""

import pytest

from afo_encoding import plotting, simulation
from afo_encoding._docs import fill_doc


def test_fragment_takes_the_indentation_of_its_placeholder():
    @fill_doc({"size": "\n    size : int\n        How many.\n\n        At least 1."})
    def f(size=1):
        """Do it.

        Parameters
        ----------
        %(size)s
        """

    assert f.__doc__ == (
        "Do it.\n\n        Parameters\n        ----------\n        size : int\n"
        "            How many.\n\n            At least 1.\n        "
    )


def test_unknown_placeholder_is_an_error():
    with pytest.raises(KeyError, match="No docstring fragment 'sise'"):

        @fill_doc({"size": "size : int"})
        def f():
            """%(sise)s"""


@pytest.mark.parametrize(
    "function", [*(getattr(plotting, n) for n in plotting.__all__),
                 simulation.make_retinotopic_dataset],
)
def test_public_docstrings_are_filled(function):
    assert "%(" not in function.__doc__
    assert "Parameters\n" in function.__doc__
