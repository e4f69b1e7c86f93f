"""The Natural Scenes Dataset (Allen et al. 2022): single-trial 7T fMRI betas to COCO images."""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from afo_encoding._logging import progress, use_log_level

from ._archives import RangesNotSupportedError, open_remote
from ._datalad import DownloadError, FetchedDataset, Source, check_terms, open_dataset
from ._inputs import make_bunch
from ._utils import read_description

NAME = "nsd"
SOURCE = Source(name=NAME, base_url="https://natural-scenes-dataset.s3.amazonaws.com")
TERMS_URL = "https://cvnlab.slite.page/p/IB6BSeW_7o/Terms-and-Conditions"
LICENSE = (
    "NSD Terms and Conditions (free for research after accepting them; "
    f"{TERMS_URL}); the images are from COCO (their own terms of use)"
)
CITATION = (
    "Allen, E. J., St-Yves, G., Wu, Y., Breedlove, J. L., Prince, J. S., Dowdle, L. T., "
    "Nau, M., Caron, B., Pestilli, F., Charest, I., Hutchinson, J. B., Naselaris, T., & "
    "Kay, K. (2022). A massive 7T fMRI dataset to bridge cognitive neuroscience and "
    "artificial intelligence. Nature Neuroscience, 25(1), 116-126. "
    "https://doi.org/10.1038/s41593-021-00962-x"
)
N_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
TRIALS_PER_SESSION = 750
SPACES = ("func1pt8mm", "fsaverage")
ROI_ATLASES = ("prf-visualrois", "streams", "floc-faces", "floc-bodies", "floc-places",
               "floc-words")
MASKS = ("nsdgeneral", "rois", "brain")
MESHES = ("sphere", "white", "pial", "inflated")
BETAS = "betas_fithrf_GLMdenoise_RR"
EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"
# Images of the requested trials, read from the HDF5 file above by byte ranges and saved
# in the dataset (so a mirror made from this dataset carries them); not an upstream path.
IMAGES = "afo_stimuli"
_HEMIS = {"left": "lh", "right": "rh"}


def _subject_dir(subject: int) -> str:
    return f"subj{subject:02d}"


def _betas_dir(subject: int, space: str) -> str:
    return f"nsddata_betas/ppdata/{_subject_dir(subject)}/{space}/{BETAS}"


def _betas_files(subject: int, space: str, session: int) -> list[str]:
    base = _betas_dir(subject, space)
    if space == "func1pt8mm":
        return [f"{base}/betas_session{session:02d}.nii.gz"]
    return [f"{base}/{h}.betas_session{session:02d}.mgh" for h in _HEMIS.values()]


def _ncsnr_files(subject: int, space: str) -> list[str]:
    base = _betas_dir(subject, space)
    if space == "func1pt8mm":
        return [f"{base}/ncsnr.nii.gz"]
    return [f"{base}/{h}.ncsnr.mgh" for h in _HEMIS.values()]


def _atlas_files(subject: int, space: str, atlas: str) -> list[str]:
    if atlas == "brain":
        return [f"nsddata/ppdata/{_subject_dir(subject)}/func1pt8mm/brainmask.nii.gz"]
    if space == "func1pt8mm":
        return [f"nsddata/ppdata/{_subject_dir(subject)}/func1pt8mm/roi/{atlas}.nii.gz"]
    return [f"nsddata/freesurfer/fsaverage/label/{h}.{atlas}.mgz" for h in _HEMIS.values()]


def _ctab_file(subject: int, atlas: str) -> str:
    # the labels of an atlas are the same in every space; the subject's table is the one
    # every NSD subject folder has
    return f"nsddata/freesurfer/{_subject_dir(subject)}/label/{atlas}.mgz.ctab"


def _mesh_files(mesh: str) -> list[str]:
    return [f"nsddata/freesurfer/fsaverage/surf/{h}.{mesh}" for h in _HEMIS.values()]


def _image_file(nsd_id: int) -> str:
    return f"{IMAGES}/nsd-{nsd_id:05d}.png"


# ----------------------------------------------------------------------------------------
# arguments


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}.")


def _check_subjects(subjects: Any) -> list[int]:
    if isinstance(subjects, (int, np.integer, str)):
        subjects = [subjects]
    chosen = []
    for s in subjects:
        text = str(s).lower().removeprefix("subj")
        if not text.isdigit() or int(text) not in N_SESSIONS:
            raise ValueError(
                f"NSD has subjects 1 to 8; got {s!r}. Pass integers (subjects=[1, 2]) or "
                "'subj01'-style names."
            )
        chosen.append(int(text))
    if not chosen:
        raise ValueError("subjects is empty: pass at least one subject, e.g. subjects=[1].")
    return list(dict.fromkeys(chosen))


def _check_sessions(sessions: Any, subjects: list[int]) -> dict[int, list[int]]:
    if sessions is None:
        return {s: list(range(1, N_SESSIONS[s] + 1)) for s in subjects}
    if isinstance(sessions, (int, np.integer)):
        sessions = [sessions]
    sessions = [int(x) for x in sessions]
    if not sessions:
        raise ValueError("sessions is empty: pass session numbers (1-based), or None for all.")
    for s in subjects:
        bad = [x for x in sessions if not 1 <= x <= N_SESSIONS[s]]
        if bad:
            raise ValueError(
                f"Subject {s} has sessions 1 to {N_SESSIONS[s]}; got {bad}. (Subjects 1, 2, "
                "5 and 7 have 40 sessions, 3 and 6 have 32, 4 and 8 have 30.)"
            )
    return {s: list(dict.fromkeys(sessions)) for s in subjects}


def _check_rois(rois: Any) -> list[str]:
    if rois is None:
        return []
    if isinstance(rois, str):
        rois = [rois]
    rois = list(dict.fromkeys(rois))
    for atlas in rois:
        _check_choice("each of rois", atlas, ROI_ATLASES)
    return rois


# ----------------------------------------------------------------------------------------
# reading the files


def _trial_images(expdesign: Path, subject: int, session: int) -> np.ndarray:
    """The 0-based 73k id of the image of each trial of a session, in scan order."""
    from scipy.io import loadmat

    design = loadmat(expdesign, variable_names=("masterordering", "subjectim"))
    order = np.asarray(design["masterordering"]).ravel().astype(np.int64)
    subjectim = np.asarray(design["subjectim"]).astype(np.int64)
    trials = order[(session - 1) * TRIALS_PER_SESSION : session * TRIALS_PER_SESSION]
    return subjectim[subject - 1, trials - 1] - 1


def _shared_images(expdesign: Path) -> np.ndarray:
    from scipy.io import loadmat

    return np.asarray(loadmat(expdesign, variable_names=("sharedix",))["sharedix"]).ravel() - 1


def _read_ctab(path: Path) -> dict[int, str]:
    labels = {}
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0].lstrip("-").isdigit():
            labels[int(parts[0])] = parts[1].strip()
    return labels


def _surface_values(paths: list[Path]) -> np.ndarray:
    """Per-vertex values of the two hemispheres (``lh``, ``rh``), concatenated."""
    import nibabel as nib

    return np.concatenate([np.asarray(nib.load(p).dataobj).reshape(-1) for p in paths])


def _volume_values(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(path)
    return np.asarray(img.dataobj), np.asarray(img.affine)


def _session_betas(paths: list[Path], space: str, selected: np.ndarray,
                   n_values: int) -> np.ndarray:
    """Betas of one session, float32 ``(n_trials, n_selected)``, in percent signal change.

    ``n_values`` is the number of voxels (vertices) of the mask's grid (mesh)."""
    import nibabel as nib

    if space == "func1pt8mm":
        data = np.asarray(nib.load(paths[0]).dataobj)  # int16, percent signal change x 300
        flat = data.reshape(-1, data.shape[-1])
        scale = 1.0 / 300.0
    else:
        parts = [np.asarray(nib.load(p).dataobj) for p in paths]
        flat = np.concatenate([p.reshape(p.shape[0], -1) for p in parts])
        scale = 1.0
    if flat.shape[0] != n_values:
        raise ValueError(
            f"{paths[0]} has {flat.shape[0]} voxels (vertices) per trial, but the masks "
            f"have {n_values}: the files are not on the same grid, or not NSD's. Remove "
            "them and fetch again."
        )
    return flat[selected].T.astype(np.float32) * np.float32(scale)


def _standardize(betas: np.ndarray) -> np.ndarray:
    mean = betas.mean(0, keepdims=True)
    std = betas.std(0, keepdims=True)
    return np.divide(betas - mean, std, out=np.zeros_like(betas), where=std > 0)


def _open_stimuli(dataset: FetchedDataset):
    """The NSD stimulus file (73,000 x 425 x 425 x 3), opened without downloading it."""
    import h5py

    if dataset.has(STIMULI):  # someone fetched the whole file: read it locally
        return h5py.File(dataset.path / STIMULI, "r")
    url = dataset.url_of(STIMULI)
    if url.startswith("file://"):
        from urllib.parse import urlparse

        return h5py.File(urllib.request.url2pathname(urlparse(url).path), "r")
    try:
        return h5py.File(open_remote(url), "r")
    except RangesNotSupportedError as err:
        raise DownloadError(
            f"Could not read the NSD images from {url}: the server does not serve byte "
            "ranges. Read from another mirror (url= or AFO_DATA_MIRROR).", urls=[url]) from err


def _fetch_images(dataset: FetchedDataset, nsd_ids: np.ndarray, resume: bool,
                  verbose: int) -> list[str]:
    """PNG files of the given images: from the dataset (or its mirror) when registered
    there, else cut out of the stimulus file, written and saved in the dataset."""
    from PIL import Image

    wanted = [int(i) for i in np.unique(nsd_ids)]
    relpaths = {i: _image_file(i) for i in wanted}
    registered = [p for p in relpaths.values() if dataset.registered(p) and not dataset.has(p)]
    if registered:
        dataset.fetch(registered, resume=resume, verbose=verbose)
    todo = [i for i in wanted if not dataset.has(relpaths[i])]
    if todo:
        (dataset.path / IMAGES).mkdir(exist_ok=True)
        with _open_stimuli(dataset) as stimuli:
            brick = stimuli["imgBrick"]
            for nsd_id in progress(todo, verbose, desc="NSD images", unit="image"):
                path = dataset.path / relpaths[nsd_id]
                partial = path.with_suffix(".part.png")
                Image.fromarray(np.asarray(brick[nsd_id])).save(partial)
                partial.replace(path)
    unsaved = [p for p in relpaths.values() if not (dataset.path / p).is_symlink()]
    if unsaved:
        dataset.save(unsaved, f"afo-encoding: {len(unsaved)} NSD image(s) from {STIMULI}")
    return [str(dataset.path / relpaths[i]) for i in wanted]


def _fsaverage_mesh(paths: list[Path]):
    from nilearn.surface import PolyMesh

    return PolyMesh(left=str(paths[0]), right=str(paths[1]))


def _surface_coords(mesh) -> np.ndarray:
    from afo_encoding.responses.surface import hemisphere_coords

    return hemisphere_coords(mesh)[0]


# ----------------------------------------------------------------------------------------
# the fetcher


def fetch_nsd(
    subjects: Sequence[int] | int = (1,),
    sessions: Sequence[int] | int | None = None,
    *,
    space: str = "func1pt8mm",
    rois: Sequence[str] | str | None = ROI_ATLASES,
    mask: str = "nsdgeneral",
    average_repeats: bool = False,
    standardize: bool = True,
    mesh: str = "sphere",
    accept_terms: bool = False,
    data_dir=None,
    url: str | None = None,
    resume: bool = True,
    verbose: int = 1,
) -> Bunch:
    """The Natural Scenes Dataset: 7T fMRI single-trial betas of 8 subjects to COCO images.

    Each NSD subject saw 9,000-10,000 natural scenes three times each over 30-40 scan
    sessions of 750 trials (1,000 images were shared by all subjects). This fetcher gets,
    from the public bucket ``s3://natural-scenes-dataset`` (through its HTTPS address),
    only the files asked for: the single-trial betas ``betas_fithrf_GLMdenoise_RR`` of the
    requested sessions, the experimental design (``nsd_expdesign.mat``), the visual ROI
    labels, the noise-ceiling SNR (``ncsnr``), and the images of the requested trials, cut
    out of the 37 GB stimulus file by byte ranges. Each file is registered in a DataLad
    dataset (``datalad addurls``), so git-annex keeps its checksum.

    Parameters
    ----------
    subjects : int or sequence of int
        Subjects 1 to 8.
    sessions : int, sequence of int, or None
        Scan sessions (1-based) of every subject; ``None`` for all of them (40, 40, 32,
        30, 40, 32, 40, 30). One session is about 1 GB of betas and 750 trials.
    space : {"func1pt8mm", "fsaverage"}
        Betas in each subject's 1.8 mm functional volume, or on the fsaverage surface
        (both hemispheres, the space of the Algonauts 2023 challenge and of the paper).
    rois : str, sequence of str, or None
        ROI atlases whose labels are returned per voxel: among ``"prf-visualrois"`` (V1v
        to hV4), ``"streams"`` (early, ventral, lateral, parietal...), ``"floc-faces"``,
        ``"floc-bodies"``, ``"floc-places"``, ``"floc-words"``.
    mask : {"nsdgeneral", "rois", "brain"}
        Which voxels (vertices) to keep: NSD's visual-cortex mask ``nsdgeneral``, the
        voxels labelled by any of ``rois``, or the whole brain mask (volumes) / every
        vertex (fsaverage; about 1 GB of memory per session).
    average_repeats : bool
        ``False``: one response row per trial (an image appears up to three times).
        ``True``: one row per image, the mean of its trials in the fetched sessions.
    standardize : bool
        z-score each voxel within each session (before any averaging), as the NSD
        authors and the paper do; ``False`` keeps percent signal change.
    mesh : {"sphere", "white", "pial", "inflated"}
        fsaverage only: the surface whose vertex positions are ``coords`` and whose mesh
        the masker carries (the paper used the sphere).
    accept_terms : bool
        NSD may only be used after accepting its Terms and Conditions; read them at
        https://cvnlab.slite.page/p/IB6BSeW_7o/Terms-and-Conditions and pass ``True``.
    data_dir : str or path-like, optional
        Where data sets live: this argument, else ``$AFO_DATA``, else ``~/afo_data``.
    url : str, optional
        Read from here instead of the bucket: a folder or URL prefix with the bucket's
        layout (an institutional copy of NSD), or a DataLad dataset made by this fetcher
        (another machine's data directory). Default: ``$AFO_DATA_MIRROR/nsd`` if set.
    resume : bool
        Resume interrupted downloads (``False`` starts them over).
    verbose : int
        0 silent, 1 progress, 2 DataLad's own messages.

    Returns
    -------
    data : sklearn.utils.Bunch
        The fields common to every fetcher (see :mod:`datasets_fetchers`), here:

        - ``images``: paths of the PNG images (425 x 425) of the fetched trials;
          ``stimulus_ids``: ``"nsd-NNNNN"``, the 0-based 73k index as in Algonauts 2023.
        - ``responses``: per subject, float32 ``(n_rows, n_voxels)`` betas of the kept
          voxels; ``image_ids``: the stimulus id of each row; ``trials``: per subject, a
          DataFrame of each row's ``session``, ``trial`` (0-based within the session; -1
          for averaged rows), ``nsd_id`` and ``n_repeats``.
        - ``coords``: per subject, voxel positions (world mm of the functional volume, or
          fsaverage vertex positions, hemispheres kept apart); ``maskers``: a fitted
          :class:`~nilearn.maskers.NiftiMasker` or :class:`~nilearn.maskers.SurfaceMasker`
          whose ``inverse_transform`` gives 4D images / SurfaceImages back.
        - ``rois``: per subject, a DataFrame of label names, one column per atlas.
        - ``ncsnr``: per subject and voxel; ``noise_ceiling``: NSD's noise ceiling in
          percent for rows averaged as returned (``100 ncsnr² / (ncsnr² + 1/n)`` with
          ``n`` the mean number of trials per row, harmonically).
        - ``splits``: ``"test"``: the shared 1,000 images (``sharedix``), NSD's usual
          test set; ``"train"``: every other fetched image.
        - ``subjects``; ``description``, ``license``, ``citation``.

    Raises
    ------
    TermsNotAcceptedError
        Without ``accept_terms=True``; nothing is downloaded.
    ValueError
        Unknown subjects, sessions, spaces, atlases or masks.
    DownloadError, NotEnoughSpaceError, GitAnnexNotFoundError
        See :mod:`datasets_fetchers`.

    Notes
    -----
    The Algonauts 2023 challenge data are NSD on fsaverage, restricted to the
    ``nsdgeneral`` vertices (plus the floc-places ROIs in the volume version), with
    repeats averaged: ``space="fsaverage", mask="nsdgeneral", average_repeats=True``
    gives the same responses from the original files. Its own train/test selection of
    images (test images from sessions held out at the time) is not rebuilt.

    Examples
    --------
    >>> from datasets_fetchers import fetch_nsd, load_encoder_inputs
    >>> nsd = fetch_nsd(subjects=[1], sessions=[1], accept_terms=True)  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(nsd, subject=1)  # doctest: +SKIP
    >>> y.shape  # doctest: +SKIP
    (750, 15724)
    """
    chosen = _check_subjects(subjects)
    per_subject = _check_sessions(sessions, chosen)
    _check_choice("space", space, SPACES)
    _check_choice("mask", mask, MASKS)
    _check_choice("mesh", mesh, MESHES)
    atlases = _check_rois(rois)
    if mask == "rois" and not atlases:
        raise ValueError("mask='rois' needs at least one atlas in rois.")
    check_terms(accept_terms, "The Natural Scenes Dataset (NSD)", TERMS_URL)

    with use_log_level(verbose):
        dataset = open_dataset(SOURCE, data_dir=data_dir, url=url, verbose=verbose)
        files = [EXPDESIGN]
        mask_atlases = {"nsdgeneral": ["nsdgeneral"], "rois": [], "brain": ["brain"]}[mask]
        if space == "fsaverage":
            files += _mesh_files(mesh)
            mask_atlases = [a for a in mask_atlases if a != "brain"]
        for subject in chosen:
            files += _ncsnr_files(subject, space)
            for atlas in [*mask_atlases, *atlases]:
                files += _atlas_files(subject, space, atlas)
            files += [_ctab_file(subject, atlas) for atlas in atlases]
            for session in per_subject[subject]:
                files += _betas_files(subject, space, session)
        dataset.fetch(files, resume=resume, verbose=verbose)
        root = dataset.path
        expdesign = root / EXPDESIGN
        surface = _fsaverage_mesh([root / p for p in _mesh_files(mesh)]) \
            if space == "fsaverage" else None

        responses, image_ids, trials, coords, maskers = [], [], [], [], []
        roi_tables, snrs, ceilings, all_ids = [], [], [], []
        for subject in chosen:
            selected, subject_coords, masker, n_values = _voxels(
                dataset, subject, space, mask, mask_atlases, atlases, surface)
            rows, info = [], []
            for session in per_subject[subject]:
                betas = _session_betas([root / p for p in _betas_files(subject, space, session)],
                                       space, selected, n_values)
                if betas.shape[0] != TRIALS_PER_SESSION:
                    raise ValueError(
                        f"{_betas_files(subject, space, session)[0]} holds {betas.shape[0]} "
                        f"trials, not {TRIALS_PER_SESSION}: the file is damaged or not NSD's. "
                        "Remove it and fetch again."
                    )
                rows.append(_standardize(betas) if standardize else betas)
                ids = _trial_images(expdesign, subject, session)
                info.append(pd.DataFrame({"session": session,
                                          "trial": np.arange(len(ids)), "nsd_id": ids,
                                          "n_repeats": 1}))
            Y = np.concatenate(rows)
            table = pd.concat(info, ignore_index=True)
            if average_repeats:
                Y, table = _average(Y, table)
            ncsnr = _read_selected(dataset, _ncsnr_files(subject, space), space, selected)
            ncsnr = np.nan_to_num(np.clip(ncsnr, 0, None))
            n_eff = 1.0 / np.mean(1.0 / table["n_repeats"].to_numpy())
            from afo_encoding.metrics import noise_ceiling

            responses.append(Y)
            trials.append(table)
            image_ids.append(np.array([f"nsd-{i:05d}" for i in table["nsd_id"]]))
            coords.append(subject_coords)
            maskers.append(masker)
            roi_tables.append(_roi_labels(dataset, subject, space, atlases, selected))
            snrs.append(ncsnr.astype(np.float32))
            ceilings.append(noise_ceiling(ncsnr, n_eff))
            all_ids.append(table["nsd_id"].to_numpy())
        nsd_ids = np.unique(np.concatenate(all_ids))
        images = _fetch_images(dataset, nsd_ids, resume, verbose)
    shared = np.isin(nsd_ids, _shared_images(expdesign))
    name = np.array([f"nsd-{i:05d}" for i in nsd_ids])
    return make_bunch(
        images=images,
        stimulus_ids=name,
        responses=responses,
        image_ids=image_ids,
        coords=coords,
        maskers=maskers,
        splits={"train": name[~shared], "test": name[shared]},
        rois=roi_tables if atlases else None,
        noise_ceiling=ceilings,
        subjects=chosen,
        ncsnr=snrs,
        trials=trials,
        space=space,
        data_dir=str(root),
        description=read_description(NAME),
        license=LICENSE,
        citation=CITATION,
    )


def _average(Y: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """One row per image (first-appearance order): the mean of its trials."""
    ids = table["nsd_id"].to_numpy()
    unique, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True,
                                               return_counts=True)
    sums = np.zeros((len(unique), Y.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, Y)
    order = np.argsort(first)
    mean = (sums / counts[:, None]).astype(np.float32)[order]
    averaged = pd.DataFrame({"session": table["session"].to_numpy()[first[order]],
                             "trial": -1, "nsd_id": unique[order],
                             "n_repeats": counts[order]})
    return mean, averaged


def _read_selected(dataset: FetchedDataset, relpaths: list[str], space: str,
                   selected: np.ndarray) -> np.ndarray:
    paths = [dataset.path / p for p in relpaths]
    values = _volume_values(paths[0])[0].reshape(-1) if space == "func1pt8mm" \
        else _surface_values(paths)
    return values[selected].astype(np.float64)


def _voxels(dataset: FetchedDataset, subject: int, space: str, mask: str,
            mask_atlases: list[str], atlases: list[str], surface) -> tuple:
    """Kept voxels (flat indices), their positions, a masker that maps them back, and the
    number of voxels (vertices) of the grid (mesh)."""
    root = dataset.path
    if space == "func1pt8mm":
        import nibabel as nib
        from nilearn.maskers import NiftiMasker

        sources = mask_atlases if mask != "rois" else atlases
        first = root / _atlas_files(subject, space, sources[0])[0]
        shape = nib.load(first).shape[:3]
        keep = np.zeros(shape, dtype=bool)
        affine = None
        for atlas in sources:
            values, affine = _volume_values(root / _atlas_files(subject, space, atlas)[0])
            keep |= values > 0
        mask_img = nib.Nifti1Image(keep.astype(np.uint8), affine)
        masker = NiftiMasker(mask_img=mask_img).fit()
        ijk = np.argwhere(keep)
        xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
        # C-order flat indices match np.argwhere's order and nilearn's masker order
        return np.flatnonzero(keep.reshape(-1)), xyz.astype(np.float64), masker, keep.size
    from nilearn.maskers import SurfaceMasker
    from nilearn.surface import SurfaceImage

    n_vertices = surface.n_vertices
    if mask == "brain":
        keep = np.ones(n_vertices, dtype=bool)
    else:
        keep = np.zeros(n_vertices, dtype=bool)
        for atlas in (mask_atlases if mask != "rois" else atlases):
            values = _surface_values([root / p for p in _atlas_files(subject, space, atlas)])
            if values.size != n_vertices:
                raise ValueError(
                    f"The {atlas} labels have {values.size} vertices but the fsaverage mesh "
                    f"has {n_vertices}; the files are not NSD's."
                )
            keep |= values > 0
    n_left = surface.parts["left"].n_vertices
    mask_img = SurfaceImage(mesh=surface, data={"left": keep[:n_left],
                                                "right": keep[n_left:]})
    masker = SurfaceMasker(mask_img=mask_img).fit()
    selected = np.flatnonzero(keep)
    return selected, _surface_coords(surface)[selected], masker, n_vertices


def _roi_labels(dataset: FetchedDataset, subject: int, space: str, atlases: list[str],
                selected: np.ndarray) -> pd.DataFrame:
    root = dataset.path
    columns = {}
    for atlas in atlases:
        names = _read_ctab(root / _ctab_file(subject, atlas))
        values = _read_selected(dataset, _atlas_files(subject, space, atlas), space,
                                selected).astype(np.int64)
        columns[atlas] = [names.get(int(v), "") if v > 0 else "" for v in values]
    return pd.DataFrame(columns)
