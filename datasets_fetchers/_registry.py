"""What can be fetched: one row per data set, for ``list_datasets`` and the command line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class DatasetInfo:
    """A data set the fetchers know.

    Parameters
    ----------
    name : str
        The name on the command line (``afo-encoding fetch NAME``).
    fetcher : str
        The ``fetch_*`` function of :mod:`datasets_fetchers`.
    modality : str
        What was recorded.
    size : str
        What a full download weighs, and what one subject/session does.
    license : str
        The terms the data come under.
    source : str
        Where the fetcher reads from.
    subject_argument : str
        The fetcher's argument that ``--subjects`` fills.
    terms : bool
        Whether the terms must be accepted (``accept_terms=True``).
    """

    name: str
    fetcher: str
    modality: str
    size: str
    license: str
    source: str
    subject_argument: str = "subjects"
    terms: bool = False

    def load_fetcher(self) -> Callable:
        """The ``fetch_*`` function."""
        import datasets_fetchers

        return getattr(datasets_fetchers, self.fetcher)


DATASETS = {
    info.name: info
    for info in (
        DatasetInfo(
            name="nsd",
            fetcher="fetch_nsd",
            modality="fMRI 7T, 8 subjects, 73k COCO images",
            size="about 1 GB per subject-session of betas (30-40 sessions per subject), "
            "plus 0.3 MB per image",
            license="NSD Terms and Conditions (accept them first)",
            source="s3://natural-scenes-dataset (HTTPS), registered with datalad addurls",
            terms=True,
        ),
        DatasetInfo(
            name="cowley2023_v4",
            fetcher="fetch_cowley2023_v4",
            modality="macaque V4 spike counts, 45 sessions (3 monkeys)",
            size="about 0.5 GB for all sessions with single trials; 2-20 MB per session",
            license="GPL-3.0",
            source="github.com/cowleygroup/V4_compact_models @ f4552ad, registered with "
            "datalad addurls",
            subject_argument="sessions",
        ),
    )
}


def list_datasets() -> pd.DataFrame:
    """The data sets that can be fetched, with their size, licence and source.

    Returns
    -------
    table : pandas.DataFrame
        One row per data set (index: the name used by ``afo-encoding fetch NAME``),
        columns ``fetcher``, ``modality``, ``size``, ``license``, ``source``, ``terms``.

    Examples
    --------
    >>> from datasets_fetchers import list_datasets
    >>> "nsd" in list_datasets().index
    True
    """
    rows = [
        {"name": d.name, "fetcher": d.fetcher, "modality": d.modality, "size": d.size,
         "license": d.license, "source": d.source, "terms": d.terms}
        for d in DATASETS.values()
    ]
    return pd.DataFrame(rows).set_index("name")
