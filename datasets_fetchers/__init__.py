"""Fetchers of public brain-response data sets, through DataLad, in nilearn's style.

Each ``fetch_<name>`` gets only the files asked for and returns a :class:`sklearn.utils.Bunch`.
"""

from ._utils import get_data_dir

__all__ = ["get_data_dir"]
