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
    sessions : bool
        Whether the fetcher takes ``sessions`` (``--sessions``).
    """

    name: str
    fetcher: str
    modality: str
    size: str
    license: str
    source: str
    subject_argument: str = "subjects"
    terms: bool = False
    sessions: bool = True

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
        DatasetInfo(
            name="things_fmri",
            fetcher="fetch_things_fmri",
            modality="fMRI 3T, 3 subjects, 8,740 THINGS images (+100 test images x 12)",
            size="about 14 GB per subject of single-trial tables (its part of one 43 GB "
            "zip, read by HTTP ranges), plus the 12 GB THINGS image archive (shared with "
            "things_meg)",
            license="CC0; the THINGS images under the THINGS terms (accept them first)",
            source="OpenNeuro ds004192 (DataLad clone) + Figshare+ article 20492835 + "
            "THINGS images on OSF (jum2f)",
            terms=True,
        ),
        DatasetInfo(
            name="things_meg",
            fetcher="fetch_things_meg",
            modality="MEG (271 sensors, 200 Hz), 4 participants, 22,448 THINGS images",
            size="about 8 GB per participant (preprocessed epochs, 4 FIF parts), plus the "
            "12 GB THINGS image archive (shared with things_fmri)",
            license="CC0; the THINGS images under the THINGS terms (accept them first)",
            source="OpenNeuro ds004212 (DataLad clone) + THINGS images on OSF (jum2f)",
            terms=True,
            sessions=False,
        ),
        DatasetInfo(
            name="things_eeg2",
            fetcher="fetch_things_eeg2",
            modality="EEG (17 channels, 100 Hz), 10 subjects, 16,540 + 200 THINGS images",
            size="about 1 GB per subject (preprocessed), plus the image set zips",
            license="CC-BY-4.0",
            source="OSF 3jk45 (components anp5v, y63gw), registered with datalad addurls",
            sessions=False,
        ),
        DatasetInfo(
            name="bold5000",
            fetcher="fetch_bold5000",
            modality="fMRI 3T, 4 subjects, 4,916 COCO/ImageNet/SUN images (release 2.0)",
            size="about 270 MB per subject and session (15 sessions, CSI4 9), plus the "
            "stimuli zip",
            license="CC0; COCO, ImageNet and SUN images under their own terms",
            source="OpenNeuro ds001499 (DataLad clone) + Figshare article 14456124 + "
            "BOLD5000_Stimuli.zip",
        ),
        DatasetInfo(
            name="nod",
            fetcher="fetch_nod",
            modality="fMRI 3T on the fsLR surface, 30 subjects, 57,000 ImageNet + 120 COCO "
            "images",
            size="about 25 MB per run: about 1 GB for subjects 1-9 (40 ImageNet and 10-11 "
            "COCO runs), 0.25 GB for subjects 10-30; stimuli 0.1 MB each",
            license="CC0; ImageNet and COCO images under their own terms",
            source="OpenNeuro ds004496 (DataLad clone) + the authors' NOD-fmri support "
            "files + COCO's image server",
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
