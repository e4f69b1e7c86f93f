"""Fetchers of public brain-response data sets, through DataLad, in nilearn's style.

Each ``fetch_<name>`` downloads only the files asked for into a DataLad dataset under the
data directory (the ``data_dir`` argument, else ``$AFO_DATA``, else ``~/afo_data``), or
reads them from a mirror (``url=``, else ``$AFO_DATA_MIRROR``), and returns a
:class:`sklearn.utils.Bunch` with these fields (``None`` where a source has none):

images
    The stimuli: a list of file paths, or an array ``(n_images, H, W, 3)`` when the
    source stores them packed.
stimulus_ids
    One id (str) per entry of ``images``.
responses
    One entry per subject (or recording session): an array ``(n_samples, n_voxels)``
    with ``coords``, or a 4D Niimg, a nilearn ``SurfaceImage``, an ``mne.Epochs``.
image_ids
    Per subject, the stimulus id of each response row.
coords
    Per subject, the position of each voxel (``(n_voxels, d)``), or ``None`` when the
    container carries them (Niimg, SurfaceImage, Epochs) or the source has none.
maskers
    Per subject, a fitted nilearn masker that turns array responses back into images
    (``masker.inverse_transform``), or ``None``.
splits
    The source's own train/test (and validation) image ids: ``{"train": ids, ...}``.
rois
    Per subject, a :class:`pandas.DataFrame` of ROI labels (one row per voxel, one column
    per atlas, ``""`` outside every ROI), or ``None``.
noise_ceiling
    Per subject, the noise ceiling of each voxel in percent of variance (NSD's unit;
    ``np.sqrt(nc / 100)`` is the ceiling on Pearson r).
subjects
    The ids of the subjects fetched, in the order of the lists above.
description, license, citation
    What the data are (reStructuredText), under which terms, how to cite them.

:func:`load_encoder_inputs` turns a Bunch into ``X, y, fit_params`` for an encoder's
``fit``; :func:`list_datasets` lists what can be fetched.
"""

from ._datalad import (
    DownloadError,
    GitAnnexNotFoundError,
    NotEnoughSpaceError,
    TermsNotAcceptedError,
)
from ._inputs import load_encoder_inputs
from ._registry import list_datasets
from ._utils import get_data_dir
from .bold5000 import fetch_bold5000
from .cowley2023_v4 import fetch_cowley2023_v4
from .nod import fetch_nod
from .nsd import fetch_nsd
from .things_eeg2 import fetch_things_eeg2
from .things_fmri import fetch_things_fmri
from .things_meg import fetch_things_meg

__all__ = [
    "DownloadError",
    "GitAnnexNotFoundError",
    "NotEnoughSpaceError",
    "TermsNotAcceptedError",
    "fetch_bold5000",
    "fetch_cowley2023_v4",
    "fetch_nod",
    "fetch_nsd",
    "fetch_things_eeg2",
    "fetch_things_fmri",
    "fetch_things_meg",
    "get_data_dir",
    "list_datasets",
    "load_encoder_inputs",
]
