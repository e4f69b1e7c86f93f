"""Docstring templates: documentation written once and filled in where it repeats.

A line of a docstring that holds only ``%(name)s`` is replaced by the fragment ``name``,
indented like that line (the model is nilearn's ``fill_doc``)::

    _DOCS = {"output_file": '''
    output_file : str | Path | None
        Save the figure there.'''}

    @fill_doc(_DOCS)
    def plot_something(..., output_file=None):
        '''Plot something.

        Parameters
        ----------
        %(output_file)s
        '''

A placeholder without a fragment is an error when the module is imported.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping
from typing import TypeVar

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.MULTILINE)

T = TypeVar("T")


def fill_doc(fragments: Mapping[str, str]) -> Callable[[T], T]:
    """Decorator that fills the ``%(name)s`` lines of a docstring from ``fragments``.

    Parameters
    ----------
    fragments : mapping of str to str
        Fragment text by name; its common indentation is removed, then every line is
        indented like the placeholder it replaces.

    Returns
    -------
    decorator : callable
        Sets ``obj.__doc__`` to the filled docstring and returns ``obj``.
    """

    def fill(match: re.Match) -> str:
        indent, name = match.groups()
        if name not in fragments:
            raise KeyError(f"No docstring fragment {name!r}; known: {sorted(fragments)}.")
        return textwrap.indent(textwrap.dedent(fragments[name]).strip("\n"), indent)

    def decorate(obj: T) -> T:
        if obj.__doc__:  # None under python -OO
            obj.__doc__ = _PLACEHOLDER.sub(fill, obj.__doc__)
        return obj

    return decorate
