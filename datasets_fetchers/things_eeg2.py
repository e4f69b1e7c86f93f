"""THINGS-EEG2 (Gifford et al. 2022): EEG of 10 people to 16,740 THINGS images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from afo_encoding._logging import logger, use_log_level

from ._archives import extract_members, resolve_members
from ._datalad import FetchedDataset, Source, open_dataset
from ._formats import load_pickled_npy
from ._inputs import make_bunch
from ._repositories import osf_files, resolve
from ._utils import read_description, scale_noise_ceiling

NAME = "things_eeg2"
SOURCE = Source(name=NAME)
LICENSE = "CC-BY-4.0 (THINGS-EEG2, OSF project 3jk45); the images are from THINGS"
CITATION = (
    "Gifford, A. T., Dwivedi, K., Roig, G., & Cichy, R. M. (2022). A large and rich EEG "
    "dataset for modeling human visual object recognition. NeuroImage, 264, 119754. "
    "https://doi.org/10.1016/j.neuroimage.2022.119754"
)
SUBJECTS = tuple(range(1, 11))
# OSF project 3jk45 has components: the image set (y63gw) and the preprocessed EEG
# (anp5v, one zip per subject: sub-XX.zip with sub-XX/preprocessed_eeg_training.npy and
# _test.npy). Download addresses of the image set from the THINGS-EEG2 download scripts
# of ReAlnet and others ("test_images.zip: https://osf.io/download/znu7b/", ...); the
# subjects' zips are looked up by name in the OSF API, their ids being unpublished.
IMAGE_SET = "image_set"
PREPROCESSED = "preprocessed_data"
PREPROCESSED_NODE = "anp5v"
URLS = {
    f"{IMAGE_SET}/image_metadata.npy": "https://osf.io/download/qkgtf/",
    f"{IMAGE_SET}/training_images.zip": "https://osf.io/download/3v527/",
    f"{IMAGE_SET}/test_images.zip": "https://osf.io/download/znu7b/",
}
# The recording cap (EASYCAP, 64 channels in the 10-10 system); the preprocessed data
# keep the 17 occipital and parietal channels.
MONTAGE = "easycap-M1"
_SPLITS = {"train": ("training", "train"), "test": ("test", "test")}
_DERIVED = "derived"


def _subject_zip(subject: int) -> str:
    return f"{PREPROCESSED}/sub-{subject:02d}.zip"


def _check_subjects(subjects) -> list[int]:
    if isinstance(subjects, (int, np.integer, str)):
        subjects = [subjects]
    chosen = []
    for s in subjects:
        text = str(s).lower().removeprefix("sub-")
        if not text.isdigit() or int(text) not in SUBJECTS:
            raise ValueError(f"THINGS-EEG2 has subjects 1 to 10; got {s!r}. Pass e.g. [1].")
        chosen.append(int(text))
    if not chosen:
        raise ValueError("subjects is empty: pass at least one subject, e.g. [1].")
    return list(dict.fromkeys(chosen))


def _check_splits(splits) -> list[str]:
    if isinstance(splits, str):
        splits = [splits]
    splits = list(dict.fromkeys(splits))
    bad = [s for s in splits if s not in _SPLITS]
    if bad or not splits:
        raise ValueError(
            f"splits must be among 'train' (16,540 images, 4 repeats) and 'test' (200 "
            f"images, 80 repeats); got {splits!r}."
        )
    return splits


def _fetch_subjects(dataset: FetchedDataset, subjects: list[int], resume: bool,
                    verbose: int) -> None:
    files = [_subject_zip(s) for s in subjects]
    urls = None
    if not dataset.override and any(not dataset.registered(f) for f in files):
        names = [f.rsplit("/", 1)[1] for f in files]
        found = resolve(names, osf_files(PREPROCESSED_NODE), f"OSF project {PREPROCESSED_NODE}")
        urls = {f: found[f.rsplit("/", 1)[1]] for f in files}
    dataset.fetch(files, urls=urls, resume=resume, verbose=verbose)


def _read_subject(path, subject: int, split: str) -> dict:
    import zipfile

    name = f"sub-{subject:02d}/preprocessed_eeg_{_SPLITS[split][0]}.npy"
    with zipfile.ZipFile(path) as zf:
        member = resolve_members(zf.namelist(), [name], str(path))[name]
        with zf.open(member) as f:
            content = load_pickled_npy(f)
    missing = {"preprocessed_eeg_data", "ch_names", "times"} - set(content)
    if missing:
        raise ValueError(f"{path}:{name} lacks {sorted(missing)}; not THINGS-EEG2's format.")
    return content


def _epochs(content: dict, images: list[str], split: str, average: bool, start: int):
    """An EpochsArray of one split: images x repetitions, or one epoch per image."""
    import mne

    data = np.asarray(content["preprocessed_eeg_data"], dtype=np.float32)
    n_images, n_reps = data.shape[:2]
    if n_images != len(images):
        raise ValueError(
            f"The {split} EEG has {n_images} image conditions but the image metadata "
            f"{len(images)}: the files do not belong together."
        )
    times = np.asarray(content["times"], dtype=np.float64)
    info = mne.create_info([str(c) for c in content["ch_names"]],
                           sfreq=float(np.round(1.0 / np.median(np.diff(times)), 6)),
                           ch_types="eeg")
    info.set_montage(MONTAGE, on_missing="warn")
    if average:
        epochs_data = data.mean(1)
        table = pd.DataFrame({"image": images, "split": split, "repetition": -1,
                              "n_repeats": n_reps})
    else:
        epochs_data = data.reshape(n_images * n_reps, *data.shape[2:])
        table = pd.DataFrame({"image": np.repeat(images, n_reps), "split": split,
                              "repetition": np.tile(np.arange(n_reps), n_images),
                              "n_repeats": 1})
    code = 1 if split == "train" else 2
    events = np.column_stack([start + np.arange(len(table)), np.zeros(len(table), int),
                              np.full(len(table), code)])
    epochs = mne.EpochsArray(epochs_data, info, events=events, tmin=float(times[0]),
                             event_id={split: code}, metadata=table, verbose=False)
    return epochs, table, data


def fetch_things_eeg2(
    subjects: Sequence[int] | int = (1,),
    *,
    splits: Sequence[str] | str = ("train", "test"),
    average_repeats: bool = False,
    data_dir=None,
    url: str | None = None,
    resume: bool = True,
    verbose: int = 1,
) -> Bunch:
    """THINGS-EEG2: preprocessed EEG of 10 people to 16,540 training and 200 test images.

    Ten people saw, in rapid serial visual presentation (100 ms on, 100 ms off), 16,540
    training images of 1,654 THINGS concepts 4 times each and 200 test images of 200
    other concepts 80 times each, in 4 sessions of 64-channel EEG. This fetcher registers
    with DataLad and downloads, from the authors' OSF project (3jk45), each requested
    subject's preprocessed EEG (17 occipital and parietal channels, -200 to 800 ms at
    100 Hz, multivariate noise normalised; about 1 GB per subject) and the image set.

    Parameters
    ----------
    subjects : int or sequence of int
        Subjects 1 to 10.
    splits : str or sequence of str
        ``"train"`` and/or ``"test"``.
    average_repeats : bool
        ``False``: one epoch per trial (images x repetitions). ``True``: one epoch per
        image, the mean of its repetitions.
    data_dir : str or path-like, optional
        Where data sets live: this argument, else ``$AFO_DATA``, else ``~/afo_data``.
    url : str, optional
        Read from here instead of OSF: a DataLad dataset made by this fetcher (another
        machine's ``<data_dir>/things_eeg2``), or a folder or URL prefix with its layout
        (``image_set/...``, ``preprocessed_data/sub-XX.zip``). Default:
        ``$AFO_DATA_MIRROR/things_eeg2`` if set.
    resume : bool
        Resume interrupted downloads (``False`` starts them over).
    verbose : int
        0 silent, 1 progress, 2 DataLad's own messages.

    Returns
    -------
    data : sklearn.utils.Bunch
        The fields common to every fetcher (see :mod:`datasets_fetchers`), here:

        - ``images``: the JPEG images (500 x 500) of the splits fetched;
          ``stimulus_ids``: their file stems (``"aardvark_01b"``), as in THINGS.
        - ``responses``: per subject, an :class:`mne.EpochsArray` with the channels at
          their positions on the standard EASYCAP montage and the trial table as
          ``metadata`` (``image``, ``split``, ``repetition``, ``n_repeats``);
          ``image_ids``: the stimulus id of each epoch.
        - ``splits``: the authors' ``"train"`` and ``"test"`` images.
        - ``noise_ceiling``: per subject, NSD's noise ceiling (percent) of each
          (channel, time) column (``c * n_times + t``) from the test images' repeats,
          for epochs as returned; ``None`` without the test split.
        - ``image_metadata``: the authors' image table (files, concepts, THINGS concepts).
        - ``coords``, ``maskers``, ``rois``: ``None``.
        - ``subjects``; ``description``, ``license``, ``citation``.

    Raises
    ------
    ValueError
        Unknown subjects or splits.
    DownloadError, NotEnoughSpaceError, GitAnnexNotFoundError
        See :mod:`datasets_fetchers`.

    Examples
    --------
    >>> from datasets_fetchers import fetch_things_eeg2, load_encoder_inputs
    >>> eeg = fetch_things_eeg2(subjects=[1], average_repeats=True)  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(eeg, subject=1, split="test")  # doctest: +SKIP
    >>> len(y)  # doctest: +SKIP
    200
    """
    import mne

    chosen = _check_subjects(subjects)
    kept = _check_splits(splits)
    with use_log_level(verbose), mne.utils.use_log_level("error"):
        dataset = open_dataset(SOURCE, data_dir=data_dir, url=url, verbose=verbose)
        metadata_file = f"{IMAGE_SET}/image_metadata.npy"
        dataset.fetch([metadata_file], urls=URLS, resume=resume, verbose=verbose)
        with open(dataset.path / metadata_file, "rb") as f:
            metadata = load_pickled_npy(f)
        _fetch_subjects(dataset, chosen, resume, verbose)
        image_paths = _fetch_images(dataset, metadata, kept, resume, verbose)
        responses, image_ids, ceilings = [], [], []
        for subject in chosen:
            parts, nc = [], None
            for split in kept:
                content = _read_subject(dataset.path / _subject_zip(subject), subject, split)
                files = metadata[f"{_SPLITS[split][1]}_img_files"]
                stems = [str(f).rsplit(".", 1)[0] for f in files]
                epochs, _, data = _epochs(content, stems, split, average_repeats,
                                          sum(len(e) for e in parts))
                parts.append(epochs)
                if split == "test":
                    nc = _noise_ceiling(data, average_repeats)
            epochs = mne.concatenate_epochs(parts, add_offset=False, verbose=False) \
                if len(parts) > 1 else parts[0]
            logger.info("THINGS-EEG2 sub-%02d: %d epochs", subject, len(epochs))
            responses.append(epochs)
            image_ids.append(epochs.metadata["image"].to_numpy())
            ceilings.append(nc)
    stimulus_ids = np.array(list(image_paths))
    return make_bunch(
        images=list(image_paths.values()),
        stimulus_ids=stimulus_ids,
        responses=responses,
        image_ids=image_ids,
        coords=None,
        maskers=None,
        splits={split: np.array([str(f).rsplit(".", 1)[0] for f in
                                 metadata[f"{_SPLITS[split][1]}_img_files"]])
                for split in kept},
        rois=None,
        noise_ceiling=ceilings if any(c is not None for c in ceilings) else None,
        subjects=chosen,
        image_metadata={k: list(v) for k, v in metadata.items()},
        data_dir=str(dataset.path),
        description=read_description(NAME),
        license=LICENSE,
        citation=CITATION,
    )


def _noise_ceiling(data: np.ndarray, average: bool) -> np.ndarray:
    """From (images, repetitions, channels, times) test data: per (channel, time)."""
    from afo_encoding.metrics import ncsnr, noise_ceiling

    repeats = data.reshape(data.shape[0], data.shape[1], -1)
    single = noise_ceiling(ncsnr(repeats), 1)
    return scale_noise_ceiling(single, data.shape[1]) if average else single


def _fetch_images(dataset: FetchedDataset, metadata: dict, splits: list[str], resume: bool,
                  verbose: int) -> dict[str, str]:
    """Stimulus id to path, unpacked from the split's zip into a folder git ignores."""
    dataset.exclude_from_git(_DERIVED)
    out = {}
    for split in splits:
        folder, key = _SPLITS[split]
        archive = f"{IMAGE_SET}/{folder}_images.zip"
        files = [str(f) for f in metadata[f"{key}_img_files"]]
        concepts = [str(c) for c in metadata[f"{key}_img_concepts"]]
        members = {f"{folder}_images/{c}/{f}": f"{_DERIVED}/{IMAGE_SET}/{folder}_images/{c}/{f}"
                   for c, f in zip(concepts, files)}
        paths = extract_members(dataset, archive, URLS[archive], members, save=False,
                                resume=resume, verbose=verbose)
        out.update({f.rsplit(".", 1)[0]: str(p) for f, p in zip(files, paths)})
    return out
