"""THINGS-MEG (Hebart et al. 2023): MEG epochs of 4 people to 22,448 THINGS images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from afo_encoding._logging import logger, use_log_level

from ._datalad import Source, open_dataset
from ._inputs import make_bunch
from ._things_images import CITATION as THINGS_CITATION
from ._things_images import check_things_terms, fetch_things_images
from ._utils import read_description, scale_noise_ceiling

NAME = "things_meg"
# OpenNeuro ds004212 as a DataLad dataset on GitHub; its files are also served over
# plain HTTPS from OpenNeuro's S3 bucket, the fallback when the special remote fails.
SOURCE = Source(
    name=NAME,
    clone_url="https://github.com/OpenNeuroDatasets/ds004212.git",
    fallback_url="https://s3.amazonaws.com/openneuro.org/ds004212",
)
LICENSE = "CC0 (THINGS-MEG, OpenNeuro ds004212); the THINGS images under the THINGS terms"
CITATION = (
    "Hebart, M. N., Contier, O., Teichmann, L., Rockter, A. H., Zheng, C. Y., Kidder, A., "
    "Corriveau, A., Vaziri-Pashkam, M., & Baker, C. I. (2023). THINGS-data, a multimodal "
    "collection of large-scale datasets for investigating object representations in human "
    "brain and behavior. eLife, 12, e82580. https://doi.org/10.7554/eLife.82580. "
    "Images: " + THINGS_CITATION
)
SUBJECTS = (1, 2, 3, 4)
# The epochs of each participant are one FIF file split by MNE in four parts (2 GB each);
# names as in the dataset's git tree (derivatives/preprocessed/, ds004212 v3.0.0).
PARTS = ("", "-1", "-2", "-3")
TRIAL_TYPES = ("exp", "test", "catch")


def _epochs_files(subject: int) -> list[str]:
    return [f"derivatives/preprocessed/preprocessed_P{subject}-epo{p}.fif" for p in PARTS]


def _attributes_file(subject: int) -> str:
    return f"sourcedata/sample_attributes_P{subject}.csv"


def _check_subjects(subjects) -> list[int]:
    if isinstance(subjects, (int, np.integer, str)):
        subjects = [subjects]
    chosen = []
    for s in subjects:
        text = str(s).upper().removeprefix("BIGMEG").removeprefix("P")
        if not text.isdigit() or int(text) not in SUBJECTS:
            raise ValueError(
                f"THINGS-MEG has participants 1 to 4 (BIGMEG1-4); got {s!r}. Pass integers, "
                "e.g. subjects=[1]."
            )
        chosen.append(int(text))
    if not chosen:
        raise ValueError("subjects is empty: pass at least one participant, e.g. [1].")
    return list(dict.fromkeys(chosen))


def _check_trial_types(trial_types) -> list[str]:
    if isinstance(trial_types, str):
        trial_types = [trial_types]
    trial_types = list(dict.fromkeys(trial_types))
    bad = [t for t in trial_types if t not in ("exp", "test")]
    if bad or not trial_types:
        raise ValueError(
            f"trial_types must be among 'exp' (each image once) and 'test' (200 images, 12 "
            f"times each); got {trial_types!r}. Catch trials show no THINGS image and are "
            "always left out."
        )
    return trial_types


def image_name(image_path: str) -> str:
    """The THINGS file name of an ``image_path`` of the sample attributes.

    ``images_meg/aardvark/aardvark_01b.jpg`` and ``images_test_meg/aardvark_01b.jpg`` both
    give ``aardvark_01b.jpg``.
    """
    return str(image_path).replace("\\", "/").rsplit("/", 1)[-1]


def _average_repeats(epochs, table: pd.DataFrame):
    """One epoch per image: the mean of its trials (an :class:`mne.EpochsArray`)."""
    import mne

    names = table["image"].to_numpy()
    unique, first, inverse = np.unique(names, return_index=True, return_inverse=True)
    order = np.argsort(first)
    data = epochs.get_data(copy=False)
    sums = np.zeros((len(unique), *data.shape[1:]), dtype=np.float64)
    np.add.at(sums, inverse, data)
    counts = np.bincount(inverse, minlength=len(unique))
    mean = (sums / counts[:, None, None])[order]
    rows = table.iloc[first[order]].reset_index(drop=True).assign(n_repeats=counts[order])
    events = np.column_stack([np.arange(len(rows)), np.zeros(len(rows), int),
                              np.where(rows["trial_type"] == "test", 2, 1)])
    event_id = {k: v for k, v in (("exp", 1), ("test", 2)) if v in events[:, 2]}
    return mne.EpochsArray(mean, epochs.info, events=events, tmin=epochs.tmin,
                           event_id=event_id, metadata=rows, verbose=False), rows


def _test_noise_ceiling(epochs, table: pd.DataFrame, n_eff: float) -> np.ndarray:
    """NSD's noise ceiling of each (channel, time) from the repeats of the test images."""
    from afo_encoding.metrics import ncsnr, noise_ceiling

    test = np.flatnonzero(table["trial_type"].to_numpy() == "test")
    names = table["image"].to_numpy()[test]
    unique, inverse = np.unique(names, return_inverse=True)
    if len(unique) < 2:
        return None
    counts = np.bincount(inverse)
    data = epochs[test].get_data(copy=False).reshape(len(test), -1)
    repeats = np.full((len(unique), counts.max(), data.shape[1]), np.nan, dtype=np.float32)
    slot = np.zeros(len(unique), dtype=int)
    for row, image in zip(data, inverse):
        repeats[image, slot[image]] = row
        slot[image] += 1
    return noise_ceiling(ncsnr(repeats), n_eff)


def fetch_things_meg(
    subjects: Sequence[int] | int = (1,),
    *,
    trial_types: Sequence[str] | str = ("exp", "test"),
    average_repeats: bool = False,
    accept_terms: bool = False,
    data_dir=None,
    url: str | None = None,
    resume: bool = True,
    verbose: int = 1,
) -> Bunch:
    """THINGS-MEG: preprocessed MEG epochs of 4 participants to 22,448 THINGS images.

    Four people each saw 22,248 images of the 1,854 THINGS concepts once and 200 test
    images 12 times (once per session), for 500 ms every 1.5 s, in 12 sessions of
    275-channel CTF MEG. This fetcher clones OpenNeuro ``ds004212`` (DataLad) and gets,
    per participant, the authors' preprocessed epochs (``derivatives/preprocessed``, -100
    to 1300 ms at 200 Hz, 271 magnetometers, 0.1-40 Hz, baseline z-scored; about 8 GB in
    four FIF parts) and the trial table (``sourcedata/sample_attributes_P<k>.csv``), and
    the THINGS images of the trials (see ``accept_terms``).

    Parameters
    ----------
    subjects : int or sequence of int
        Participants 1 to 4.
    trial_types : str or sequence of str
        ``"exp"`` (the 22,248 images seen once) and/or ``"test"`` (the 200 repeated
        images). Catch trials (artificial images for the oddball task) are left out.
    average_repeats : bool
        ``False``: one epoch per trial, read from disk when used (``preload=False``).
        ``True``: one epoch per image, the mean of its trials, in memory
        (an :class:`mne.EpochsArray`; about 7 GB per participant).
    accept_terms : bool
        The THINGS images may only be used under the THINGS terms of use; read them at
        https://osf.io/jum2f/files/52wrx and pass ``True``.
    data_dir : str or path-like, optional
        Where data sets live: this argument, else ``$AFO_DATA``, else ``~/afo_data``.
    url : str, optional
        Read from here instead of OpenNeuro: a DataLad dataset (e.g. another machine's
        ``<data_dir>/things_meg``) or a folder or URL prefix with the dataset's layout.
        Default: ``$AFO_DATA_MIRROR/things_meg`` if set. The images follow
        ``$AFO_DATA_MIRROR/things_images``.
    resume : bool
        Resume interrupted downloads (``False`` starts them over).
    verbose : int
        0 silent, 1 progress, 2 DataLad's own messages.

    Returns
    -------
    data : sklearn.utils.Bunch
        The fields common to every fetcher (see :mod:`datasets_fetchers`), here:

        - ``images``: paths of the THINGS images of the kept trials; ``stimulus_ids``:
          their file stems (``"aardvark_01b"``), the ids THINGS-fMRI and THINGS-EEG2 use.
        - ``responses``: per participant, an :class:`mne.Epochs` with the sensors'
          positions in ``info`` and the trial table as ``metadata``; ``image_ids``: the
          stimulus id of each epoch; ``trials``: per participant, the kept rows of the
          sample attributes (``trial_type``, ``session_nr``, ``run_nr``, ``image_path``,
          ...) with the columns ``image`` and ``n_repeats`` added.
        - ``splits``: ``"train"``: the images of the ``exp`` trials; ``"test"``: the 200
          repeated images.
        - ``noise_ceiling``: per participant, NSD's noise ceiling (percent) of each
          (channel, time) column (``c * n_times + t``), from the repeats of the test
          images, for epochs as returned; ``None`` without test trials.
        - ``coords``, ``maskers``, ``rois``: ``None`` (the Epochs carry their positions).
        - ``subjects``; ``description``, ``license``, ``citation``.

    Raises
    ------
    TermsNotAcceptedError
        Without ``accept_terms=True``; nothing is downloaded.
    ValueError
        Unknown participants or trial types.
    DownloadError, NotEnoughSpaceError, GitAnnexNotFoundError
        See :mod:`datasets_fetchers`.

    Examples
    --------
    >>> from datasets_fetchers import fetch_things_meg, load_encoder_inputs
    >>> meg = fetch_things_meg(subjects=[1], accept_terms=True)  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(meg, subject=1, split="test")  # doctest: +SKIP
    >>> y  # doctest: +SKIP
    <EpochsFIF | 2400 events (good & bad), -0.1 – 1.3 s ...>
    """
    import mne

    chosen = _check_subjects(subjects)
    kept_types = _check_trial_types(trial_types)
    check_things_terms(accept_terms, "THINGS-MEG")
    with use_log_level(verbose), mne.utils.use_log_level("error"):
        dataset = open_dataset(SOURCE, data_dir=data_dir, url=url, verbose=verbose)
        files = []
        for subject in chosen:
            files += [_attributes_file(subject), *_epochs_files(subject)]
        dataset.fetch(files, resume=resume, verbose=verbose)
        responses, image_ids, trials, ceilings, names = [], [], [], [], []
        for subject in chosen:
            table = pd.read_csv(dataset.path / _attributes_file(subject))
            epochs = mne.read_epochs(dataset.path / _epochs_files(subject)[0], preload=False,
                                     verbose=False)
            if len(epochs) != len(table):
                raise ValueError(
                    f"Participant {subject} has {len(epochs)} epochs but "
                    f"{len(table)} rows in {_attributes_file(subject)}; the files do not "
                    "belong together. Remove them and fetch again."
                )
            table = table.assign(image=[image_name(p) for p in table["image_path"]],
                                 n_repeats=1)
            keep = np.flatnonzero(table["trial_type"].isin(kept_types).to_numpy())
            table = table.iloc[keep].reset_index(drop=True)
            epochs = epochs[keep]
            epochs.metadata = table
            nc = _test_noise_ceiling(epochs, table, 1.0)
            if average_repeats:
                epochs, table = _average_repeats(epochs, table)
                if nc is not None:
                    n_eff = 1.0 / np.mean(1.0 / table["n_repeats"].to_numpy())
                    nc = scale_noise_ceiling(nc, n_eff)
            logger.info("THINGS-MEG P%d: %d epochs of %d channels x %d times", subject,
                        len(epochs), len(epochs.ch_names), len(epochs.times))
            responses.append(epochs)
            trials.append(table)
            image_ids.append(np.array([n.rsplit(".", 1)[0] for n in table["image"]]))
            ceilings.append(nc)
            names += list(table["image"])
        paths = fetch_things_images(names, data_dir=data_dir, resume=resume, verbose=verbose)
    unique = list(dict.fromkeys(names))
    stimulus_ids = np.array([n.rsplit(".", 1)[0] for n in unique])
    all_trials = pd.concat(trials, ignore_index=True)
    splits = {split: np.unique(all_trials.loc[all_trials["trial_type"] == kind, "image"]
                               .str.rsplit(".", n=1).str[0].to_numpy())
              for split, kind in (("train", "exp"), ("test", "test"))}
    return make_bunch(
        images=[paths[n] for n in unique],
        stimulus_ids=stimulus_ids,
        responses=responses,
        image_ids=image_ids,
        coords=None,
        maskers=None,
        splits={k: v for k, v in splits.items() if len(v)},
        rois=None,
        noise_ceiling=ceilings if any(c is not None for c in ceilings) else None,
        subjects=chosen,
        trials=trials,
        data_dir=str(dataset.path),
        description=read_description(NAME),
        license=LICENSE,
        citation=CITATION,
    )

