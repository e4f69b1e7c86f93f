"""BOLD5000 (Chang et al. 2019; release 2.0): single-trial fMRI of 4 people to 4,916 images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from afo_encoding._logging import logger, use_log_level

from ._archives import extract_members
from ._datalad import FetchedDataset, Source, open_dataset
from ._inputs import make_bunch
from ._repositories import figshare_files, resolve
from ._utils import read_description

NAME = "bold5000"
SOURCE = Source(
    name=NAME,
    clone_url="https://github.com/OpenNeuroDatasets/ds001499.git",
    fallback_url="https://s3.amazonaws.com/openneuro.org/ds001499",
)
LICENSE = "CC0 (BOLD5000: OpenNeuro ds001499 and its release 2.0 on Figshare); the " \
    "COCO, ImageNet and SUN images under their own terms"
CITATION = (
    "Chang, N., Pyles, J. A., Marcus, A., Gupta, A., Tarr, M. J., & Aminoff, E. M. (2019). "
    "BOLD5000, a public fMRI dataset while viewing 5000 visual images. Scientific Data, 6, "
    "49. https://doi.org/10.1038/s41597-019-0052-3"
)
SUBJECTS = (1, 2, 3, 4)
TRIALS_PER_RUN = 37
# Runs of the 5000scenes task per session, from ds001499's BIDS events (v1.3.1 tree);
# 37 trials each, so 5,254 trials for CSI1-3 and 3,108 for CSI4 as the authors state.
RUNS = {
    1: (10, 10, 10, 9, 10, 9, 10, 9, 9, 10, 9, 9, 9, 9, 10),
    2: (10, 9, 10, 10, 10, 9, 9, 9, 9, 9, 10, 10, 9, 10, 9),
    3: (10, 9, 10, 9, 10, 10, 10, 9, 9, 9, 10, 9, 9, 9, 10),
    4: (10, 9, 9, 10, 9, 9, 9, 9, 10),
}
# Release 2.0 (GLMsingle betas, the authors' recommended TYPED version, one file per
# session), brain masks and trial image names: Figshare article 14456124 (the authors'
# README points to it; file names from bonner-datasets' chang2019 loader); looked up by name.
RELEASE2_ARTICLE = 14456124
RELEASE2 = "derivatives/release2"
BETAS = "GLMbetas-TYPED-FITHRF-GLMDENOISE-RR"
# The ROI masks of the first release, in the dataset: derivatives/spm, names as in its
# tree (CSI2/CSI3 write LO for LOC, CSI2 RRSC for RSC).
ROIS = ("EarlyVis", "LOC", "OPA", "PPA", "RSC")
_ROI_FILE_NAMES = {2: {"LHLOC": "LHLO", "RHLOC": "RHLO", "RHRSC": "RHRRSC"},
                   3: {"LHLOC": "LHLO", "RHLOC": "RHLO"}}
# The stimuli: BOLD5000_Stimuli.zip on Dropbox (linked from bold5000.org's download page;
# address from bonner-datasets' chang2019 loader).
STIMULI = "stimuli/BOLD5000_Stimuli.zip"
STIMULI_URL = "https://www.dropbox.com/s/5ie18t4rjjvsl47/BOLD5000_Stimuli.zip?dl=1"
_PRESENTED = "Scene_Stimuli/Presented_Stimuli"
_DERIVED = "derived"


def _betas_name(subject: int, session: int) -> str:
    return f"CSI{subject}_{BETAS}_ses-{session:02d}.nii.gz"


def _roi_file(subject: int, hemi: str, roi: str) -> str:
    name = _ROI_FILE_NAMES.get(subject, {}).get(f"{hemi}{roi}", f"{hemi}{roi}")
    return f"derivatives/spm/sub-CSI{subject}/sub-CSI{subject}_mask-{name}.nii.gz"


def _check_subjects(subjects) -> list[int]:
    if isinstance(subjects, (int, np.integer, str)):
        subjects = [subjects]
    chosen = []
    for s in subjects:
        text = str(s).upper().removeprefix("SUB-").removeprefix("CSI")
        if not text.isdigit() or int(text) not in SUBJECTS:
            raise ValueError(f"BOLD5000 has subjects 1 to 4 (CSI1-4); got {s!r}.")
        chosen.append(int(text))
    if not chosen:
        raise ValueError("subjects is empty: pass at least one subject, e.g. [1].")
    return list(dict.fromkeys(chosen))


def _check_sessions(sessions, subject: int) -> list[int]:
    n = len(RUNS[subject])
    if sessions is None:
        return list(range(1, n + 1))
    if isinstance(sessions, (int, np.integer)):
        sessions = [sessions]
    sessions = [int(s) for s in sessions]
    bad = [s for s in sessions if not 1 <= s <= n]
    if bad or not sessions:
        raise ValueError(
            f"CSI{subject} has sessions 1 to {n}; got {sessions}. (CSI1-3 have 15, CSI4 9.)"
        )
    return list(dict.fromkeys(sessions))


def _fetch_release2(dataset: FetchedDataset, names: list[str], resume: bool,
                    verbose: int) -> None:
    relpaths = [f"{RELEASE2}/{n}" for n in names]
    urls = None
    if not dataset.override and any(not dataset.registered(p) for p in relpaths):
        found = resolve(names, figshare_files(RELEASE2_ARTICLE),
                        f"Figshare article {RELEASE2_ARTICLE}")
        urls = {f"{RELEASE2}/{n}": u for n, u in found.items()}
    dataset.fetch(relpaths, urls=urls, resume=resume, verbose=verbose)


def fetch_bold5000(
    subjects: Sequence[int] | int = (1,),
    sessions: Sequence[int] | int | None = None,
    *,
    mask: str = "rois",
    average_repeats: bool = False,
    standardize: bool = True,
    data_dir=None,
    url: str | None = None,
    resume: bool = True,
    verbose: int = 1,
) -> Bunch:
    """BOLD5000 release 2.0: single-trial betas of 4 people to COCO, ImageNet and SUN images.

    Four people saw 4,916 distinct scenes (2,000 COCO, 1,916 ImageNet, 1,000 SUN), most
    once and 113 four times, each for 1 s every 10 s, in 15 sessions (CSI4: 9) of 3T
    fMRI (2 mm, TR 2 s). The fetcher clones OpenNeuro ``ds001499`` (DataLad; raw data,
    events and the ROI masks of the first release) and adds to it the betas of release
    2.0 (GLMsingle with fitted HRFs, GLMdenoise and ridge regression, "TYPED", the
    authors' recommendation; one file per session, about 270 MB) with the brain masks and
    the trials' image names, from Figshare, and the stimuli (one zip, from bold5000.org's
    Dropbox).

    Parameters
    ----------
    subjects : int or sequence of int
        Subjects 1 to 4 (CSI1-CSI4).
    sessions : int, sequence of int, or None
        Sessions (1-15; CSI4 1-9); ``None`` for all.
    mask : {"rois", "brain"}
        The voxels kept: those of the ten ROIs of the first release (early visual, LOC,
        OPA, PPA and RSC of each hemisphere; about 3,000-5,000 voxels), or the release's
        whole brain mask.
    average_repeats : bool
        ``False``: one row per trial. ``True``: one row per image, the mean of its trials.
    standardize : bool
        z-score each voxel within each session, as the authors recommend.
    data_dir : str or path-like, optional
        Where data sets live: this argument, else ``$AFO_DATA``, else ``~/afo_data``.
    url : str, optional
        Read from here instead of the sources: a DataLad dataset made by this fetcher
        (another machine's ``<data_dir>/bold5000``) or a folder or URL prefix with its
        layout. Default: ``$AFO_DATA_MIRROR/bold5000`` if set.
    resume : bool
        Resume interrupted downloads (``False`` starts them over).
    verbose : int
        0 silent, 1 progress, 2 DataLad's own messages.

    Returns
    -------
    data : sklearn.utils.Bunch
        The fields common to every fetcher (see :mod:`datasets_fetchers`), here:

        - ``images``: the stimuli of the fetched trials; ``stimulus_ids``: their file
          stems (``"COCO_train2014_000000420713"``, ``"n01930112_19568"``...).
        - ``responses``: per subject, float32 ``(n_rows, n_voxels)``; ``image_ids``: the
          stimulus of each row; ``trials``: per subject, each row's ``session``,
          ``trial`` (within the session), ``image`` and ``n_repeats``.
        - ``coords``: per subject, voxel positions (mm, the subject's T1w space);
          ``maskers``: a fitted :class:`~nilearn.maskers.NiftiMasker` back to volumes.
        - ``rois``: per subject, the ROI of each voxel (``"LHPPA"``, ``""``...).
        - ``noise_ceiling``: per subject and voxel, NSD's noise ceiling (percent) from the
          repeated images, for rows as returned; ``None`` if no image repeats.
        - ``splits``: ``"test"``: the images seen more than once; ``"train"``: the others.
        - ``subjects``; ``description``, ``license``, ``citation``.

    Raises
    ------
    ValueError
        Unknown subjects, sessions or masks.
    DownloadError, NotEnoughSpaceError, GitAnnexNotFoundError
        See :mod:`datasets_fetchers`.

    Examples
    --------
    >>> from datasets_fetchers import fetch_bold5000, load_encoder_inputs
    >>> bold = fetch_bold5000(subjects=[1], sessions=[1, 2])  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(bold, subject=1)  # doctest: +SKIP
    """
    import nibabel as nib
    from nilearn.maskers import NiftiMasker

    from afo_encoding.metrics import ncsnr, noise_ceiling

    chosen = _check_subjects(subjects)
    per_subject = {s: _check_sessions(sessions, s) for s in chosen}
    if mask not in ("rois", "brain"):
        raise ValueError(f"mask must be 'rois' or 'brain'; got {mask!r}.")
    with use_log_level(verbose):
        dataset = open_dataset(SOURCE, data_dir=data_dir, url=url, verbose=verbose)
        names, rois = [], []
        for subject in chosen:
            names += [f"CSI{subject}_brainmask.nii.gz", f"CSI{subject}_imgnames.txt"]
            names += [_betas_name(subject, s) for s in per_subject[subject]]
            rois += [_roi_file(subject, h, r) for h in ("LH", "RH") for r in ROIS]
        _fetch_release2(dataset, names, resume, verbose)
        dataset.fetch(rois, resume=resume, verbose=verbose)
        root = dataset.path
        results = []
        for subject in chosen:
            release = root / RELEASE2
            brain = nib.load(release / f"CSI{subject}_brainmask.nii.gz")
            shape, affine = brain.shape[:3], brain.affine
            labels = np.full(shape, "", dtype=object)
            for hemi in ("LH", "RH"):
                for roi in ROIS:
                    img = nib.load(root / _roi_file(subject, hemi, roi))
                    if img.shape[:3] != shape:
                        raise ValueError(
                            f"The ROI mask {_roi_file(subject, hemi, roi)} has shape "
                            f"{img.shape[:3]} but the release-2 betas {shape}; they are "
                            "not on the same grid."
                        )
                    on = np.asarray(img.dataobj).reshape(shape) > 0
                    labels[on] = [f"{v}+{hemi}{roi}" if v else f"{hemi}{roi}"
                                  for v in labels[on]]
            keep = (labels != "") if mask == "rois" else \
                (np.asarray(brain.dataobj).reshape(shape) > 0)
            image_names = (release / f"CSI{subject}_imgnames.txt").read_text().split()
            offsets = np.cumsum([0, *RUNS[subject]]) * TRIALS_PER_RUN
            rows, tables = [], []
            for session in per_subject[subject]:
                betas = nib.load(release / _betas_name(subject, session))
                if betas.shape[:3] != shape:
                    raise ValueError(f"{_betas_name(subject, session)} is not on the grid "
                                     f"of CSI{subject}'s brain mask ({betas.shape[:3]}).")
                Y = np.asarray(betas.dataobj, dtype=np.float32)[keep].T
                start, stop = offsets[session - 1], offsets[session]
                if Y.shape[0] != stop - start or len(image_names) < stop:
                    raise ValueError(
                        f"{_betas_name(subject, session)} holds {Y.shape[0]} trials, but "
                        f"CSI{subject} ran {stop - start} in session {session} "
                        f"({RUNS[subject][session - 1]} runs of {TRIALS_PER_RUN}); the "
                        "files are not release 2.0's."
                    )
                rows.append(_zscore(Y) if standardize else Y)
                tables.append(pd.DataFrame({"session": session,
                                            "trial": np.arange(stop - start),
                                            "image": image_names[start:stop],
                                            "n_repeats": 1}))
            Y = np.concatenate(rows)
            table = pd.concat(tables, ignore_index=True)
            snr = _repeat_snr(Y, table["image"].to_numpy(), ncsnr)
            if average_repeats:
                Y, table = _average(Y, table)
            nc = None if snr is None else noise_ceiling(
                snr, 1.0 / np.mean(1.0 / table["n_repeats"].to_numpy()))
            ijk = np.argwhere(keep)
            masker = NiftiMasker(mask_img=nib.Nifti1Image(keep.astype(np.uint8), affine)).fit()
            logger.info("BOLD5000 CSI%d: %d rows x %d voxels", subject, *Y.shape)
            results.append({"responses": Y, "trials": table, "masker": masker,
                            "coords": ijk @ affine[:3, :3].T + affine[:3, 3],
                            "rois": pd.DataFrame({"roi": labels[keep]}), "nc": nc})
        all_names = [n for r in results for n in r["trials"]["image"]]
        unique = list(dict.fromkeys(all_names))
        dataset.exclude_from_git(_DERIVED)
        paths = extract_members(
            dataset, STIMULI, STIMULI_URL,
            {n: f"{_DERIVED}/{_PRESENTED}/{n}" for n in unique}, save=False, resume=resume,
            verbose=verbose)
    counts = pd.concat([r["trials"] for r in results]).groupby("image")["n_repeats"].sum()
    repeated = {n for n, c in counts.items() if c > 1}
    stems = np.array([n.rsplit(".", 1)[0] for n in unique])
    return make_bunch(
        images=[str(p) for p in paths],
        stimulus_ids=stems,
        responses=[r["responses"] for r in results],
        image_ids=[np.array([n.rsplit(".", 1)[0] for n in r["trials"]["image"]])
                   for r in results],
        coords=[r["coords"] for r in results],
        maskers=[r["masker"] for r in results],
        splits={"train": stems[[n not in repeated for n in unique]],
                "test": stems[[n in repeated for n in unique]]},
        rois=[r["rois"] for r in results],
        noise_ceiling=[r["nc"] for r in results],
        subjects=chosen,
        trials=[r["trials"] for r in results],
        data_dir=str(root),
        description=read_description(NAME),
        license=LICENSE,
        citation=CITATION,
    )


def _zscore(values: np.ndarray) -> np.ndarray:
    mean = values.mean(0, keepdims=True)
    std = values.std(0, keepdims=True)
    return np.divide(values - mean, std, out=np.zeros_like(values), where=std > 0)


def _repeat_snr(Y: np.ndarray, names: np.ndarray, ncsnr) -> np.ndarray | None:
    unique, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts > 1)
    if len(repeated) < 2:
        return None
    index = {k: i for i, k in enumerate(repeated)}
    repeats = np.full((len(repeated), counts.max(), Y.shape[1]), np.nan, np.float32)
    slot = np.zeros(len(repeated), int)
    for row, k in enumerate(inverse):
        if k in index:
            i = index[k]
            repeats[i, slot[i]] = Y[row]
            slot[i] += 1
    return ncsnr(repeats)


def _average(Y: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """One row per image (first-appearance order): the mean of its trials."""
    names = table["image"].to_numpy()
    unique, first, inverse, counts = np.unique(names, return_index=True, return_inverse=True,
                                               return_counts=True)
    sums = np.zeros((len(unique), Y.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, Y)
    order = np.argsort(first)
    rows = table.iloc[first[order]].reset_index(drop=True).assign(n_repeats=counts[order],
                                                                  trial=-1)
    return (sums / counts[:, None]).astype(np.float32)[order], rows
