"""The Natural Object Dataset (NOD; Gong et al. 2023): fMRI of 30 people to 57,120 images."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from afo_encoding._logging import logger, use_log_level

from ._datalad import DownloadError, FetchedDataset, Source, open_dataset
from ._inputs import make_bunch
from ._utils import read_description

NAME = "nod"
SOURCE = Source(
    name=NAME,
    clone_url="https://github.com/OpenNeuroDatasets/ds004496.git",
    fallback_url="https://s3.amazonaws.com/openneuro.org/ds004496",
)
LICENSE = "CC0 (NOD, OpenNeuro ds004496); ImageNet and COCO images under their own terms"
CITATION = (
    "Gong, Z., Zhou, M., Dai, Y., Wen, Y., Liu, Y., & Zhen, Z. (2023). A large-scale fMRI "
    "dataset for the visual processing of naturalistic scenes. Scientific Data, 10, 559. "
    "https://doi.org/10.1038/s41597-023-02471-x"
)
SUBJECTS = tuple(range(1, 31))
# Sessions and runs with betas, from the dataset's git tree (ds004496 v2.1.2):
# subjects 1-9 have 4 ImageNet sessions and a COCO session (10 runs for subject 1, 11 for
# the others), subjects 10-30 one ImageNet session; every ImageNet session has 10 runs.
IMAGENET_SESSIONS = {s: 4 if s <= 9 else 1 for s in SUBJECTS}
IMAGENET_RUNS = 10
COCO_RUNS = {s: 10 if s == 1 else 11 for s in SUBJECTS if s <= 9}
TASKS = ("imagenet", "coco")
MESHES = ("inflated", "very_inflated", "midthickness", "white", "pial")
FLOC = ("bodies", "faces", "places", "words")
# The HCP-MMP (Glasser) areas on the same 59,412 cortical grayordinates as the betas, and
# the visual ones, from the authors' code (validation/supportfiles; nod_utils.py reads
# them), pinned to a commit.
CODE = "code/NOD-fmri"
_CODE_URL = ("https://raw.githubusercontent.com/GongZhengxin/NOD-fmri/"
             "f970ac583bd7d30e36f7165486655841b53d8cd2/validation/supportfiles")
MMP_FILES = {name: f"{CODE}/{name}" for name in
             ("MMP_mpmLR32k.mat", "roilbl_mmp.csv", "HCP-MMP1_visual-cortex1.csv")}
MMP_URLS = {path: f"{_CODE_URL}/{name}" for name, path in MMP_FILES.items()}
# COCO images are not in NOD (stimuli/coco holds their list); they come from COCO's own
# server, which keeps the 2017 images in a train and a val folder.
COCO_IMAGES = ("http://images.cocodataset.org/train2017",
               "http://images.cocodataset.org/val2017")
_IMAGE_NAME = re.compile(r"[\w-]+\.(?:JPEG|jpeg|jpg|JPG|png)")


def _sub(subject: int) -> str:
    return f"sub-{subject:02d}"


def _session(task: str, index: int) -> str:
    return f"imagenet{index:02d}" if task == "imagenet" else "coco"


def _runs(subject: int, task: str, sessions: list[int]) -> list[tuple[str, int]]:
    """(session, run) pairs with betas."""
    if task == "imagenet":
        return [(_session(task, s), r) for s in sessions
                for r in range(1, IMAGENET_RUNS + 1)]
    return [("coco", r) for r in range(1, COCO_RUNS.get(subject, 0) + 1)]


def _run_files(subject: int, session: str, run: int) -> dict[str, str]:
    task = "coco" if session == "coco" else "imagenet"
    name = f"ses-{session}_task-{task}_run-{run}"
    base = f"derivatives/ciftify/{_sub(subject)}/results/{name}/{name}"
    events = (f"{_sub(subject)}/ses-{session}/func/"
              f"{_sub(subject)}_ses-{session}_task-{task}_run-{run:02d}_events.tsv")
    return {"beta": f"{base}_beta.dscalar.nii", "label": f"{base}_label.txt",
            "events": events}


def _mesh_files(subject: int, mesh: str) -> list[str]:
    base = f"derivatives/ciftify/{_sub(subject)}/standard_fsLR_surface/{_sub(subject)}"
    return [f"{base}.{h}.{mesh}.32k_fs_LR.surf.gii" for h in ("L", "R")]


def _floc_file(subject: int, kind: str) -> str:
    return f"derivatives/ciftify/{_sub(subject)}/results/ses-floc_task-floc/floc-{kind}.dlabel.nii"


# ----------------------------------------------------------------------------------------
# arguments


def _check_subjects(subjects) -> list[int]:
    if isinstance(subjects, (int, np.integer, str)):
        subjects = [subjects]
    chosen = []
    for s in subjects:
        text = str(s).lower().removeprefix("sub-")
        if not text.isdigit() or int(text) not in SUBJECTS:
            raise ValueError(f"NOD has subjects 1 to 30; got {s!r}. Pass e.g. [1].")
        chosen.append(int(text))
    if not chosen:
        raise ValueError("subjects is empty: pass at least one subject, e.g. [1].")
    return list(dict.fromkeys(chosen))


def _check_tasks(tasks) -> list[str]:
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(dict.fromkeys(tasks))
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ValueError(f"tasks must be among {list(TASKS)}; got {tasks!r}.")
    return tasks


def _check_sessions(sessions, subject: int) -> list[int]:
    n = IMAGENET_SESSIONS[subject]
    if sessions is None:
        return list(range(1, n + 1))
    if isinstance(sessions, (int, np.integer)):
        sessions = [sessions]
    sessions = [int(s) for s in sessions]
    bad = [s for s in sessions if not 1 <= s <= n]
    if bad or not sessions:
        raise ValueError(
            f"Subject {subject} has ImageNet sessions 1 to {n}; got {sessions}. (Subjects "
            "1-9 have 4, subjects 10-30 one.)"
        )
    return list(dict.fromkeys(sessions))


# ----------------------------------------------------------------------------------------
# reading the files


def _read_cifti(path) -> tuple[np.ndarray, list[str], dict]:
    """Maps x grayordinates (float32), the map names, and the cortex vertex indices."""
    import nibabel as nib

    img = nib.load(path)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    names = [str(n) for n in getattr(img.header.get_axis(0), "name", [])]
    return data, names, _cortex(img.header.get_axis(1))


def _cortex(axis) -> dict:
    """For each hemisphere: (slice of its grayordinates, vertex indices, n vertices)."""
    parts = {}
    for structure, sl, bm in axis.iter_structures():
        hemi = {"CIFTI_STRUCTURE_CORTEX_LEFT": "left",
                "CIFTI_STRUCTURE_CORTEX_RIGHT": "right"}.get(structure)
        if hemi:
            parts[hemi] = (sl, np.asarray(bm.vertex), int(bm.nvertices[structure]))
    if set(parts) != {"left", "right"}:
        raise ValueError(f"Expected left and right cortex in the CIFTI file; got {list(parts)}.")
    return parts


def _numbers(names: list[str]) -> list[float] | None:
    values = []
    for n in names:
        found = re.findall(r"\d+(?:\.\d+)?", n)
        if len(found) != 1:
            return None
        values.append(float(found[0]))
    return values


def run_images(map_names: list[str], label_text: str, events: pd.DataFrame,
               n_maps: int) -> list[str]:
    """The image file name of each beta map of a run.

    The authors' GLM (NOD-fmri, validation/GLM.py) saves the image names as the CIFTI map
    names and writes them to ``_label.txt`` with ``writelines``, without separators. For
    ImageNet runs the maps follow the trials; for COCO runs they follow the sorted image
    numbers (``trial_type`` 1-120 of the events; ``condition`` names the image). The names
    are taken from the first of: the map names, the label file, the events.
    """
    from_maps = [_IMAGE_NAME.findall(n) for n in map_names]
    if len(from_maps) == n_maps and all(len(f) == 1 for f in from_maps):
        return [f[0] for f in from_maps]
    from_label = _IMAGE_NAME.findall(label_text)
    if len(from_label) == n_maps:
        return from_label
    if "stim_file" in events:  # ImageNet: one map per trial, in order
        files = [str(f).rsplit("/", 1)[-1] for f in events["stim_file"]]
        if len(files) == n_maps:
            return files
    if "condition" in events:  # COCO: one map per image number
        images = events[events["condition"].astype(str).str.contains(r"\.jpg", na=False)]
        by_number = dict(zip(images["trial_type"].astype(float),
                             images["condition"].astype(str).str.rsplit("/", n=1).str[-1]))
        numbers = _numbers(map_names)
        if numbers is None or len(numbers) != n_maps or not set(numbers) <= set(by_number):
            numbers = sorted(by_number)
        if len(numbers) == n_maps:
            return [by_number[k] for k in numbers]
    raise ValueError(
        f"Cannot tell which image each of the {n_maps} beta maps shows: the map names "
        f"({map_names[:3]}...), the label file and the events disagree in number."
    )


def _zscore(values: np.ndarray) -> np.ndarray:
    mean = values.mean(0, keepdims=True)
    std = values.std(0, keepdims=True)
    return np.divide(values - mean, std, out=np.zeros_like(values), where=std > 0)


def _mmp(dataset: FetchedDataset, n_cortex: int, n_left: int) -> tuple[np.ndarray, set[str]]:
    """HCP-MMP label of each cortical grayordinate (``"L_V1"``...) and the visual areas."""
    from scipy.io import loadmat

    root = dataset.path
    values = np.asarray(loadmat(root / MMP_FILES["MMP_mpmLR32k.mat"])["glasser_MMP"]).ravel()
    if values.size != n_cortex:
        raise ValueError(
            f"The HCP-MMP atlas has {values.size} grayordinates, the betas {n_cortex}."
        )
    table = pd.read_csv(root / MMP_FILES["roilbl_mmp.csv"])
    areas = [str(n).split("_")[1] for n in table.iloc[:, 0]]
    # the hemisphere comes from the grayordinate's place: the file numbers the left
    # cortex's areas 181-360 (the HCP convention), nod_utils.py calls 1-180 'L'
    hemi = np.where(np.arange(values.size) < n_left, "L", "R")
    labels = np.array([f"{h}_{areas[(int(v) - 1) % len(areas)]}" if v > 0 else ""
                       for h, v in zip(hemi, values)], dtype=object)
    visual = pd.read_csv(root / MMP_FILES["HCP-MMP1_visual-cortex1.csv"])
    visual_areas = set(visual.loc[visual.iloc[:, 0].notna(), "area_name"].astype(str))
    return labels, visual_areas


def _floc(dataset: FetchedDataset, subject: int, n_cortex: int) -> np.ndarray:
    """The category-selective region of each cortical grayordinate (``""`` outside)."""
    import nibabel as nib

    out = np.full(n_cortex, "", dtype=object)
    for kind in FLOC:
        path = dataset.path / _floc_file(subject, kind)
        img = nib.load(path)
        values = np.asarray(img.get_fdata()).ravel()[:n_cortex].astype(int)
        table = img.header.get_axis(0).label[0]
        for key in np.unique(values[values > 0]):
            name = table.get(int(key), (f"{kind}-{key}",))[0]
            hit = values == key
            out[hit] = [f"{o}+{name}" if o else name for o in out[hit]]
    return out


def _fetch_coco_images(dataset: FetchedDataset, names: list[str], resume: bool,
                       verbose: int) -> dict[str, str]:
    relpaths = {n: f"stimuli/coco/images/{n}" for n in names}
    todo = [n for n in names if not dataset.has(relpaths[n])]
    for base in COCO_IMAGES:
        if not todo:
            break
        try:
            dataset.fetch([relpaths[n] for n in todo],
                          urls={relpaths[n]: f"{base}/{n}" for n in todo},
                          resume=resume, verbose=verbose)
        except DownloadError:
            if base == COCO_IMAGES[-1] or dataset.override:
                raise
        todo = [n for n in todo if not dataset.has(relpaths[n])]
    return {n: str(dataset.path / p) for n, p in relpaths.items()}


# ----------------------------------------------------------------------------------------
# the fetcher


def fetch_nod(
    subjects: Sequence[int] | int = (1,),
    sessions: Sequence[int] | int | None = None,
    *,
    tasks: Sequence[str] | str = ("imagenet", "coco"),
    mask: str = "visual",
    mesh: str = "inflated",
    average_repeats: bool = False,
    standardize: bool = True,
    data_dir=None,
    url: str | None = None,
    resume: bool = True,
    verbose: int = 1,
) -> Bunch:
    """The Natural Object Dataset: single-trial fMRI betas of 30 people on the fsLR surface.

    Thirty people saw ImageNet images (1,000 categories) once each: subjects 1-9 4,000
    images in 4 sessions, subjects 10-30 1,000 in one session (57,000 in all); subjects
    1-9 also saw 120 COCO images 10 or 11 times (one COCO session), the repeats that give
    NOD's reliability. 3T fMRI, 2 mm, TR 2 s, on the 32k fsLR surface (ciftify). This
    fetcher clones OpenNeuro ``ds004496`` (DataLad) and gets the authors' beta maps
    (``derivatives/ciftify/sub-XX/results/<run>/<run>_beta.dscalar.nii``, one map per
    trial or image, 59,412 cortical grayordinates) with their labels, the subject's
    fsLR meshes, the category-selective ROIs, the HCP-MMP atlas of the authors' code, and
    the stimuli (ImageNet images in the dataset, COCO images from COCO's server).

    Parameters
    ----------
    subjects : int or sequence of int
        Subjects 1 to 30.
    sessions : int, sequence of int, or None
        ImageNet sessions (1-4 for subjects 1-9, 1 for the others); ``None`` for all.
    tasks : str or sequence of str
        ``"imagenet"`` (the training images) and/or ``"coco"`` (the repeated test images;
        subjects 1-9 only, ignored for the others).
    mask : {"visual", "cortex"}
        The vertices kept: the visual areas of the HCP-MMP atlas as the authors group them
        (``HCP-MMP1_visual-cortex1.csv``), or the whole cortex (59,412 vertices).
    mesh : {"inflated", "very_inflated", "midthickness", "white", "pial"}
        The subject's fsLR surface whose vertex positions are ``coords`` (hemispheres
        kept apart) and whose mesh the masker carries.
    average_repeats : bool
        ``False``: one row per trial. ``True``: one row per image (the COCO images' runs
        averaged; ImageNet images are seen once).
    standardize : bool
        z-score each vertex within each run, as the authors do.
    data_dir : str or path-like, optional
        Where data sets live: this argument, else ``$AFO_DATA``, else ``~/afo_data``.
    url : str, optional
        Read from here instead of OpenNeuro: a DataLad dataset (e.g. another machine's
        ``<data_dir>/nod``) or a folder or URL prefix with the dataset's layout. Default:
        ``$AFO_DATA_MIRROR/nod`` if set.
    resume : bool
        Resume interrupted downloads (``False`` starts them over).
    verbose : int
        0 silent, 1 progress, 2 DataLad's own messages.

    Returns
    -------
    data : sklearn.utils.Bunch
        The fields common to every fetcher (see :mod:`datasets_fetchers`), here:

        - ``images``: the stimuli of the fetched runs (JPEG); ``stimulus_ids``: their file
          stems (``"n01440764_10043"``, ``"000000124419"``).
        - ``responses``: per subject, float32 ``(n_rows, n_vertices)``; ``image_ids``:
          the stimulus of each row; ``trials``: per subject, each row's ``task``,
          ``session``, ``run``, ``image``, ``n_repeats``.
        - ``coords``: per subject, vertex positions on ``mesh``; ``maskers``: a fitted
          :class:`~nilearn.maskers.SurfaceMasker` on the subject's fsLR mesh.
        - ``rois``: per subject, the ``mmp`` area (``"L_V1"``) and the ``floc``
          category-selective region (subjects 1-9) of each vertex.
        - ``noise_ceiling``: per subject, NSD's noise ceiling (percent) of each vertex from
          the COCO repeats, for rows as returned; ``None`` for subjects without COCO.
        - ``splits``: ``"train"``: the ImageNet images; ``"test"``: the COCO images.
        - ``subjects``; ``description``, ``license``, ``citation``.

    Raises
    ------
    ValueError
        Unknown subjects, sessions, tasks, masks or meshes.
    DownloadError, NotEnoughSpaceError, GitAnnexNotFoundError
        See :mod:`datasets_fetchers`.

    Examples
    --------
    >>> from datasets_fetchers import fetch_nod, load_encoder_inputs
    >>> nod = fetch_nod(subjects=[10])  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(nod, subject=10)  # doctest: +SKIP
    >>> y.shape  # doctest: +SKIP
    (1000, 14382)
    """
    chosen = _check_subjects(subjects)
    kept_tasks = _check_tasks(tasks)
    per_subject = {s: _check_sessions(sessions, s) for s in chosen}
    without = [s for s in chosen if "imagenet" not in kept_tasks and s not in COCO_RUNS]
    if without:
        raise ValueError(
            f"Subjects {without} saw no COCO images (only subjects 1-9 did): add 'imagenet' "
            "to tasks, or choose among subjects 1-9."
        )
    if mask not in ("visual", "cortex"):
        raise ValueError(f"mask must be 'visual' or 'cortex'; got {mask!r}.")
    if mesh not in MESHES:
        raise ValueError(f"mesh must be one of {list(MESHES)}; got {mesh!r}.")
    with use_log_level(verbose):
        dataset = open_dataset(SOURCE, data_dir=data_dir, url=url, verbose=verbose)
        files = list(MMP_FILES.values())
        runs = {}
        for subject in chosen:
            runs[subject] = [(task, session, run) for task in kept_tasks
                             for session, run in _runs(subject, task, per_subject[subject])]
            files += _mesh_files(subject, mesh)
            if subject in COCO_RUNS:
                files += [_floc_file(subject, kind) for kind in FLOC]
            for _, session, run in runs[subject]:
                files += list(_run_files(subject, session, run).values())
        dataset.fetch(files, urls=MMP_URLS, resume=resume, verbose=verbose)
        root = dataset.path
        results = [_subject(dataset, s, runs[s], mask, mesh, average_repeats, standardize)
                   for s in chosen]
        names = [n for r in results for n in r["trials"]["image"]]
        imagenet = sorted({n for n in names if not n.endswith(".jpg")})
        coco = sorted({n for n in names if n.endswith(".jpg")})
        stimuli = {n: f"stimuli/imagenet/{n.split('_')[0]}/{n}" for n in imagenet}
        dataset.fetch(list(stimuli.values()), resume=resume, verbose=verbose)
        paths = {n: str(root / p) for n, p in stimuli.items()}
        paths.update(_fetch_coco_images(dataset, coco, resume, verbose))
    unique = list(dict.fromkeys(names))
    return make_bunch(
        images=[paths[n] for n in unique],
        stimulus_ids=np.array([n.rsplit(".", 1)[0] for n in unique]),
        responses=[r["responses"] for r in results],
        image_ids=[np.array([n.rsplit(".", 1)[0] for n in r["trials"]["image"]])
                   for r in results],
        coords=[r["coords"] for r in results],
        maskers=[r["masker"] for r in results],
        splits={k: v for k, v in (("train", np.array([n.rsplit(".", 1)[0] for n in imagenet])),
                                  ("test", np.array([n.rsplit(".", 1)[0] for n in coco])))
                if len(v)},
        rois=[r["rois"] for r in results],
        noise_ceiling=[r["noise_ceiling"] for r in results],
        subjects=chosen,
        trials=[r["trials"] for r in results],
        data_dir=str(root),
        description=read_description(NAME),
        license=LICENSE,
        citation=CITATION,
    )


def _subject(dataset: FetchedDataset, subject: int, runs: list, mask: str, mesh: str,
             average: bool, standardize: bool) -> dict:
    from nilearn.maskers import SurfaceMasker
    from nilearn.surface import PolyMesh, SurfaceImage

    from afo_encoding.metrics import ncsnr, noise_ceiling
    from afo_encoding.responses.surface import hemisphere_coords

    root = dataset.path
    rows, tables, cortex = [], [], None
    for task, session, run in runs:
        paths = {k: root / v for k, v in _run_files(subject, session, run).items()}
        data, map_names, parts = _read_cifti(paths["beta"])
        cortex = cortex or parts
        events = pd.read_csv(paths["events"], sep="\t")
        label = paths["label"].read_text(errors="replace") if paths["label"].exists() else ""
        images = run_images(map_names, label, events, data.shape[0])
        n_cortex = sum(p[1].size for p in parts.values())
        values = data[:, :n_cortex]
        rows.append(_zscore(values) if standardize else values)
        tables.append(pd.DataFrame({"task": task, "session": session, "run": run,
                                    "image": images, "n_repeats": 1}))
    Y = np.concatenate(rows).astype(np.float32)
    table = pd.concat(tables, ignore_index=True)
    n_left = cortex["left"][1].size
    mmp, visual = _mmp(dataset, Y.shape[1], n_left)
    if mask == "visual":
        keep = np.array([bool(label) and label.split("_", 1)[1] in visual for label in mmp])
    else:
        keep = np.ones(Y.shape[1], dtype=bool)
    # kept grayordinates, ordered as the masker orders vertices (by index, left first)
    columns, vertex_mask, offset, selected = [], {}, 0, []
    for hemi in ("left", "right"):
        sl, vertices, n_vertices = cortex[hemi]
        positions = np.arange(Y.shape[1])[sl][keep[sl]]
        order = np.argsort(vertices[keep[sl]], kind="stable")
        columns.append(positions[order])
        selected.append(offset + vertices[keep[sl]][order])
        vertex_mask[hemi] = np.zeros(n_vertices, dtype=bool)
        vertex_mask[hemi][vertices[keep[sl]]] = True
        offset += n_vertices
    columns = np.concatenate(columns)
    Y = np.ascontiguousarray(Y[:, columns])
    coco = (table["task"] == "coco").to_numpy()
    snr = None
    if coco.any():
        names = table.loc[coco, "image"].to_numpy()
        unique, inverse = np.unique(names, return_inverse=True)
        repeats = np.full((len(unique), np.bincount(inverse).max(), Y.shape[1]), np.nan,
                          np.float32)
        slot = np.zeros(len(unique), int)
        for y, k in zip(Y[coco], inverse):
            repeats[k, slot[k]] = y
            slot[k] += 1
        snr = ncsnr(repeats)
    if average:
        Y, table = _average(Y, table)
    nc = None
    if snr is not None:
        nc = noise_ceiling(snr, 1.0 / np.mean(1.0 / table["n_repeats"].to_numpy()))
    surface = PolyMesh(left=str(root / _mesh_files(subject, mesh)[0]),
                       right=str(root / _mesh_files(subject, mesh)[1]))
    masker = SurfaceMasker(mask_img=SurfaceImage(mesh=surface, data=vertex_mask)).fit()
    coords = hemisphere_coords(surface)[0][np.concatenate(selected)]
    rois = pd.DataFrame({"mmp": mmp[columns]})
    if subject in COCO_RUNS:
        rois["floc"] = _floc(dataset, subject, keep.size)[columns]
    logger.info("NOD sub-%02d: %d rows x %d vertices", subject, *Y.shape)
    return {"responses": Y, "trials": table, "coords": coords, "masker": masker,
            "rois": rois, "noise_ceiling": nc}


def _average(Y: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """One row per image (first-appearance order): the mean of its trials."""
    names = table["image"].to_numpy()
    unique, first, inverse, counts = np.unique(names, return_index=True, return_inverse=True,
                                               return_counts=True)
    sums = np.zeros((len(unique), Y.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, Y)
    order = np.argsort(first)
    rows = table.iloc[first[order]].reset_index(drop=True).assign(n_repeats=counts[order])
    return (sums / counts[:, None]).astype(np.float32)[order], rows
