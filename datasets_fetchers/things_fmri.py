"""THINGS-fMRI (Hebart et al. 2023): single-trial 3T fMRI responses to 8,740 THINGS images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from afo_encoding._logging import logger, use_log_level

from ._archives import extract_members
from ._datalad import FetchedDataset, Source, open_dataset
from ._formats import PandasFrameBlocks
from ._inputs import make_bunch
from ._repositories import figshare_files, resolve
from ._things_images import check_things_terms, concept_of, fetch_things_images
from ._utils import read_description, scale_noise_ceiling
from .things_meg import CITATION

NAME = "things_fmri"
SOURCE = Source(
    name=NAME,
    clone_url="https://github.com/OpenNeuroDatasets/ds004192.git",
    fallback_url="https://s3.amazonaws.com/openneuro.org/ds004192",
)
LICENSE = "CC0 (THINGS-fMRI: OpenNeuro ds004192 and Figshare+); the THINGS images under " \
    "the THINGS terms"
SUBJECTS = (1, 2, 3)
N_SESSIONS = 12
# The single-trial responses in table format: Figshare+ article 20492835 ("THINGS-data:
# fMRI Single Trial Responses (table format)", doi:10.25452/figshare.plus.20492835), one
# zip for the three subjects (43 GB: betas_csv/sub-XX_ResponseData.h5, _StimulusMetadata.csv,
# _VoxelMetadata.csv; ViCCo-Group/THINGS-data, MRI/notebooks/fmri_usage.ipynb). Its file
# id changed with version 2 (36789690 -> 43635873), hence the lookup by name.
BETAS_ARTICLE = 20492835
BETAS_ARCHIVE_NAME = "betas_csv.zip"
# The brain masks (sub-XX_space-T1w_brainmask.nii.gz) of the subjects' functional grid,
# from the THINGS-data collection (file id from neurodatasets' hebart2023 loader).
BRAINMASKS_URL = "https://plus.figshare.com/ndownloader/files/36682242"
BETAS = "derivatives/betas_csv"
MASKS = "derivatives/brainmasks"
# ROI columns of the VoxelMetadata tables (fmri_usage.ipynb), grouped.
ROI_GROUPS = {
    "prf": ("V1", "V2", "V3", "hV4", "VO1", "VO2", "LO1 (prf)", "LO2 (prf)", "TO1", "TO2",
            "V3b", "V3a"),
    "category": ("lEBA", "rEBA", "lFFA", "rFFA", "lOFA", "rOFA", "lSTS", "rSTS", "lPPA",
                 "rPPA", "lRSC", "rRSC", "lTOS", "rTOS", "lLOC", "rLOC"),
    "IT": ("IT",),
}
VISUAL = ("prf", "category", "IT")


def _files(subject: int) -> dict[str, str]:
    sub = f"sub-{subject:02d}"
    return {kind: f"{BETAS}/{sub}_{kind}" for kind in
            ("ResponseData.h5", "StimulusMetadata.csv", "VoxelMetadata.csv")}


def _mask_file(subject: int) -> str:
    return f"{MASKS}/sub-{subject:02d}_space-T1w_brainmask.nii.gz"


def _check_subjects(subjects) -> list[int]:
    if isinstance(subjects, (int, np.integer, str)):
        subjects = [subjects]
    chosen = []
    for s in subjects:
        text = str(s).lower().removeprefix("sub-")
        if not text.isdigit() or int(text) not in SUBJECTS:
            raise ValueError(f"THINGS-fMRI has subjects 1 to 3; got {s!r}. Pass e.g. [1].")
        chosen.append(int(text))
    if not chosen:
        raise ValueError("subjects is empty: pass at least one subject, e.g. [1].")
    return list(dict.fromkeys(chosen))


def _check_sessions(sessions) -> list[int]:
    if sessions is None:
        return list(range(1, N_SESSIONS + 1))
    if isinstance(sessions, (int, np.integer)):
        sessions = [sessions]
    sessions = [int(s) for s in sessions]
    bad = [s for s in sessions if not 1 <= s <= N_SESSIONS]
    if bad or not sessions:
        raise ValueError(f"THINGS-fMRI has sessions 1 to 12; got {sessions}.")
    return list(dict.fromkeys(sessions))


def _roi_columns(rois, columns: Sequence[str]) -> list[str] | None:
    """The VoxelMetadata columns whose voxels are kept (``None``: every voxel)."""
    if rois is None:
        return None
    if isinstance(rois, str):
        rois = [rois]
    glasser = [c for c in columns if c.startswith("glasser-")]
    groups = {**ROI_GROUPS, "glasser": tuple(glasser)}
    chosen: list[str] = []
    for roi in rois:
        if roi == "visual":
            chosen += [c for g in VISUAL for c in groups[g]]
        elif roi in groups:
            chosen += groups[roi]
        elif roi in columns and roi not in ("voxel_id", "subject_id"):
            chosen.append(roi)
        else:
            raise ValueError(
                f"Unknown ROI {roi!r}: pass 'visual', a group among {sorted(groups)}, or "
                f"ROI columns of the voxel metadata, e.g. {list(ROI_GROUPS['prf'][:4])}, "
                "'lFFA', 'glasser-V1'; or rois=None for every voxel of the brain mask."
            )
    return list(dict.fromkeys(chosen))


def _roi_labels(voxels: pd.DataFrame) -> pd.DataFrame:
    """One label column per ROI group ('' outside, '+'-joined where ROIs overlap)."""
    out = {}
    glasser = [c for c in voxels.columns if c.startswith("glasser-")]
    for group, columns in {**ROI_GROUPS, "glasser": tuple(glasser)}.items():
        present = [c for c in columns if c in voxels.columns]
        member = voxels[present].to_numpy(dtype=bool) if present else np.zeros((len(voxels), 0))
        names = [c.removeprefix("glasser-") for c in present]
        out[group] = ["+".join(n for n, m in zip(names, row) if m) for row in member]
    return pd.DataFrame(out)


def _standardize(values: np.ndarray, sessions: np.ndarray) -> np.ndarray:
    """z-score each voxel (row) within each session (columns)."""
    out = np.empty_like(values)
    for session in np.unique(sessions):
        cols = sessions == session
        block = values[:, cols]
        mean = block.mean(1, keepdims=True)
        std = block.std(1, keepdims=True)
        out[:, cols] = np.divide(block - mean, std, out=np.zeros_like(block), where=std > 0)
    return out


def _fetch_tables(dataset: FetchedDataset, subjects: list[int], resume: bool,
                  verbose: int) -> None:
    """Extract each subject's three tables from the 43 GB zip by HTTP ranges."""
    betas = {}
    for subject in subjects:
        betas.update({f"betas_csv/{p.rsplit('/', 1)[1]}": p for p in _files(subject).values()})
    masks = {f"sub-{s:02d}_space-T1w_brainmask.nii.gz": _mask_file(s) for s in subjects}
    missing = [p for p in [*betas.values(), *masks.values()] if not dataset.has(p)]
    if not missing:
        return
    archive = f"derivatives/{BETAS_ARCHIVE_NAME}"
    url = None
    if not dataset.override and any(p in missing and not dataset.registered(p)
                                    for p in betas.values()):
        url = resolve([BETAS_ARCHIVE_NAME], figshare_files(BETAS_ARTICLE),
                      f"Figshare article {BETAS_ARTICLE}")[BETAS_ARCHIVE_NAME]
    extract_members(dataset, archive, url, betas, ranged=True, resume=resume,
                    verbose=verbose)
    extract_members(dataset, "derivatives/brain_masks.zip", BRAINMASKS_URL, masks,
                    ranged=True, resume=resume, verbose=verbose)


def fetch_things_fmri(
    subjects: Sequence[int] | int = (1,),
    sessions: Sequence[int] | int | None = None,
    *,
    rois: str | Sequence[str] | None = "visual",
    average_repeats: bool = False,
    standardize: bool = True,
    accept_terms: bool = False,
    data_dir=None,
    url: str | None = None,
    resume: bool = True,
    verbose: int = 1,
) -> Bunch:
    """THINGS-fMRI: single-trial 3T fMRI responses of 3 people to 8,740 THINGS images.

    Three people saw 8,740 images of 720 THINGS concepts once and 100 test images 12
    times (once per session), each for 500 ms every 4.5 s, in 12 sessions of 3T fMRI
    (2 mm, TR 1.5 s). The fetcher clones OpenNeuro ``ds004192`` (DataLad) and adds to its
    ``derivatives/`` the authors' single-trial responses in table format (GLMsingle betas;
    Figshare+), read out of the published 43 GB zip by HTTP byte ranges so that only the
    requested subjects' tables are downloaded (4-17 GB per subject), and the brain
    masks; then the THINGS images of the trials (see ``accept_terms``).

    Parameters
    ----------
    subjects : int or sequence of int
        Subjects 1 to 3.
    sessions : int, sequence of int, or None
        Sessions (1-12) whose trials are returned; ``None`` for all.
    rois : str, sequence of str, or None
        Which voxels to keep: those in any of the ROIs named, ROI columns of the voxel
        metadata (``"V1"``, ``"lFFA"``, ``"IT"``, ``"glasser-V4"``...) or groups of them
        (``"prf"``: V1-V3b from population receptive fields, ``"category"``: the category
        localiser's EBA, FFA, OFA, STS, PPA, RSC, TOS, LOC, ``"IT"``, ``"glasser"``);
        ``"visual"`` (default) is ``prf``, ``category`` and ``IT``. ``None`` keeps every
        voxel of the brain mask (about 210,000; 8 GB of memory per subject).
    average_repeats : bool
        ``False``: one row per trial. ``True``: one row per image, the mean of its trials
        (the test images' 12 repeats, or those of the sessions fetched).
    standardize : bool
        z-score each voxel within each session (before averaging), as commonly done with
        these betas; ``False`` keeps the published values.
    accept_terms : bool
        The THINGS images may only be used under the THINGS terms of use; read them at
        https://osf.io/jum2f/files/52wrx and pass ``True``.
    data_dir : str or path-like, optional
        Where data sets live: this argument, else ``$AFO_DATA``, else ``~/afo_data``.
    url : str, optional
        Read from here instead of the sources: a DataLad dataset made by this fetcher
        (another machine's ``<data_dir>/things_fmri``), or a folder or URL prefix with its
        layout. Default: ``$AFO_DATA_MIRROR/things_fmri`` if set.
    resume : bool
        Resume interrupted downloads (``False`` starts them over).
    verbose : int
        0 silent, 1 progress, 2 DataLad's own messages.

    Returns
    -------
    data : sklearn.utils.Bunch
        The fields common to every fetcher (see :mod:`datasets_fetchers`), here:

        - ``images``: the THINGS images of the fetched trials; ``stimulus_ids``: their
          file stems (``"dog_12s"``).
        - ``responses``: per subject, float32 ``(n_rows, n_voxels)``; ``image_ids``: the
          stimulus of each row; ``trials``: per subject, the stimulus metadata of each
          row (``trial_type``, ``session``, ``run``, ``stimulus``, ``concept``,
          ``n_repeats``).
        - ``coords``: per subject, voxel positions (mm, the subject's T1w space);
          ``maskers``: a fitted :class:`~nilearn.maskers.NiftiMasker` back to volumes.
        - ``rois``: per subject, labels per voxel in the columns ``prf``, ``category``,
          ``IT``, ``glasser``; ``voxels``: the full voxel metadata of the kept voxels
          (pRF parameters, reliabilities).
        - ``noise_ceiling``: per subject and voxel, the authors' single-trial noise
          ceiling (``nc_singletrial``, percent) carried to rows as returned.
        - ``splits``: ``"train"`` and ``"test"`` images (the 100 repeated ones).
        - ``subjects``; ``description``, ``license``, ``citation``.

    Raises
    ------
    TermsNotAcceptedError
        Without ``accept_terms=True``; nothing is downloaded.
    ValueError
        Unknown subjects, sessions or ROIs.
    DownloadError, NotEnoughSpaceError, GitAnnexNotFoundError
        See :mod:`datasets_fetchers`.

    Examples
    --------
    >>> from datasets_fetchers import fetch_things_fmri, load_encoder_inputs
    >>> fmri = fetch_things_fmri(subjects=[1], accept_terms=True)  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(fmri, subject=1, split="train")  # doctest: +SKIP
    """
    import nibabel as nib
    from nilearn.maskers import NiftiMasker

    chosen = _check_subjects(subjects)
    kept_sessions = _check_sessions(sessions)
    if not isinstance(rois, (str, type(None))):
        rois = list(rois)
    check_things_terms(accept_terms, "THINGS-fMRI")
    with use_log_level(verbose):
        dataset = open_dataset(SOURCE, data_dir=data_dir, url=url, verbose=verbose)
        _fetch_tables(dataset, chosen, resume, verbose)
        root = dataset.path
        responses, image_ids, trials, coords, maskers = [], [], [], [], []
        roi_tables, voxel_tables, ceilings, names = [], [], [], []
        for subject in chosen:
            files = {k: root / v for k, v in _files(subject).items()}
            stimuli = pd.read_csv(files["StimulusMetadata.csv"])
            voxels = pd.read_csv(files["VoxelMetadata.csv"])
            columns = _roi_columns(rois, list(voxels.columns))
            keep = np.ones(len(voxels), bool) if columns is None else \
                voxels[columns].to_numpy(dtype=bool).any(1)
            voxels = voxels.loc[keep].reset_index(drop=True)
            if not len(voxels):
                raise ValueError(f"Subject {subject} has no voxel in the ROIs {rois}.")
            mask_img = nib.load(root / _mask_file(subject))
            ijk = voxels[["voxel_x", "voxel_y", "voxel_z"]].to_numpy(dtype=np.int64)
            flat = np.ravel_multi_index(ijk.T, mask_img.shape[:3])
            order = np.argsort(flat, kind="stable")  # nilearn's (C) order of mask voxels
            voxels, ijk, flat = voxels.iloc[order].reset_index(drop=True), ijk[order], \
                flat[order]
            trial_cols = np.flatnonzero(stimuli["session"].isin(kept_sessions).to_numpy())
            table = stimuli.iloc[trial_cols].reset_index(drop=True).assign(n_repeats=1)
            with PandasFrameBlocks(files["ResponseData.h5"]) as frame:
                block = frame.float_block()
                n_trials = frame.values(block).shape[1]
                if n_trials != len(stimuli):
                    raise ValueError(
                        f"{files['ResponseData.h5']} has {n_trials} trials but the stimulus "
                        f"metadata {len(stimuli)}: the files do not belong together."
                    )
                row_of = {int(v): k for k, v in enumerate(frame.find_column("voxel_id"))}
                rows = np.array([row_of[int(v)] for v in voxels["voxel_id"]])
                Y = np.empty((len(rows), len(trial_cols)), dtype=np.float32)
                for pos, values in frame.iter_rows(block, rows):
                    Y[pos] = values[:, trial_cols]
            if standardize:
                Y = _standardize(Y, table["session"].to_numpy())
            Y = Y.T
            if average_repeats:
                Y, table = _average(Y, table)
            n_eff = 1.0 / np.mean(1.0 / table["n_repeats"].to_numpy())
            grid = np.zeros(mask_img.shape[:3], dtype=np.uint8)
            grid.reshape(-1)[flat] = 1
            masker = NiftiMasker(mask_img=nib.Nifti1Image(grid, mask_img.affine)).fit()
            logger.info("THINGS-fMRI sub-%02d: %d rows x %d voxels", subject, *Y.shape)
            responses.append(np.ascontiguousarray(Y, dtype=np.float32))
            trials.append(table)
            image_ids.append(np.array([s.rsplit(".", 1)[0] for s in table["stimulus"]]))
            coords.append(ijk @ mask_img.affine[:3, :3].T + mask_img.affine[:3, 3])
            maskers.append(masker)
            roi_tables.append(_roi_labels(voxels))
            voxel_tables.append(voxels)
            ceilings.append(scale_noise_ceiling(voxels["nc_singletrial"].to_numpy(), n_eff))
            names += [f"{c}/{s}" for c, s in zip(_concepts(table), table["stimulus"])]
        paths = fetch_things_images(names, data_dir=data_dir, resume=resume, verbose=verbose)
    unique = list(dict.fromkeys(n.rsplit("/", 1)[1] for n in names))
    all_trials = pd.concat(trials, ignore_index=True)
    splits = {split: np.unique(all_trials.loc[all_trials["trial_type"] == split, "stimulus"]
                               .str.rsplit(".", n=1).str[0].to_numpy())
              for split in ("train", "test")}
    return make_bunch(
        images=[paths[n] for n in unique],
        stimulus_ids=np.array([n.rsplit(".", 1)[0] for n in unique]),
        responses=responses,
        image_ids=image_ids,
        coords=coords,
        maskers=maskers,
        splits={k: v for k, v in splits.items() if len(v)},
        rois=roi_tables,
        noise_ceiling=ceilings,
        subjects=chosen,
        trials=trials,
        voxels=voxel_tables,
        data_dir=str(root),
        description=read_description(NAME),
        license=LICENSE,
        citation=CITATION,
    )


def _concepts(table: pd.DataFrame) -> list[str]:
    if "concept" in table:
        return [str(c) for c in table["concept"]]
    return [concept_of(s) for s in table["stimulus"]]


def _average(Y: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """One row per stimulus (first-appearance order): the mean of its trials."""
    names = table["stimulus"].to_numpy()
    unique, first, inverse, counts = np.unique(names, return_index=True, return_inverse=True,
                                               return_counts=True)
    sums = np.zeros((len(unique), Y.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, Y)
    order = np.argsort(first)
    rows = table.iloc[first[order]].reset_index(drop=True).assign(n_repeats=counts[order])
    return (sums / counts[:, None]).astype(np.float32)[order], rows
