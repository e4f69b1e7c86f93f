"""Macaque V4 spike counts to natural and synthetic images (Cowley et al. 2023)."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from afo_encoding._logging import use_log_level

from ._datalad import Source, open_dataset
from ._inputs import make_bunch
from ._utils import read_description

NAME = "cowley2023_v4"
COMMIT = "f4552ad9d34a466ebc66658f72a08a8e5038f1cf"
SOURCE = Source(
    name=NAME,
    base_url=f"https://raw.githubusercontent.com/cowleygroup/V4_compact_models/{COMMIT}",
)
LICENSE = "GPL-3.0 (the authors' repository, github.com/cowleygroup/V4_compact_models)"
CITATION = (
    "Cowley, B. R., Stan, P. L., Pillow, J. W., & Smith, M. A. (2023). Compact deep neural "
    "network models of visual cortex. bioRxiv 2023.11.22.568315. "
    "https://doi.org/10.1101/2023.11.22.568315"
)
_DATA = "data_V4_responses"
# The upstream readme's table (session, monkey, split, neurons, most repeats of an image,
# image types). Its image counts are left out: several differ from the files, whose own
# shapes are used instead.
SESSIONS = pd.DataFrame.from_records(
    [
        ("190923", "WE", "test", 33, 14, "normal (1,200)"),
        ("190924", "WE", "train", 25, 13, "normal (600), active learning (300)"),
        ("190925", "WE", "train", 36, 14, "normal (600), active learning (300)"),
        ("190926", "WE", "train", 27, 15, "normal (600), active learning (300)"),
        ("190927", "WE", "train", 31, 11, "normal (600), active learning (300)"),
        ("190928", "WE", "train", 24, 13, "normal (600), active learning (300)"),
        ("190929", "WE", "train", 33, 15, "normal (600), active learning (300)"),
        ("201016", "PE", "train", 82, 6, "normal (300), gaudy (300)"),
        ("201017", "PE", "train", 88, 7, "normal (300), active learning (300), gaudy (300)"),
        ("201018", "PE", "train", 80, 5, "normal (600)"),
        ("201019", "PE", "train", 82, 4, "normal (800), active learning (400), gaudy (400)"),
        ("201020", "PE", "train", 87, 4, "normal (800), active learning (400), gaudy (400)"),
        ("201021", "PE", "train", 88, 7, "normal (800), active learning (400), gaudy (400)"),
        ("201022", "PE", "train", 79, 5,
         "normal (1,000), active learning (500), gaudy (500)"),
        ("201023", "PE", "train", 86, 7,
         "normal (1,000), active learning (500), gaudy (500)"),
        ("201024", "PE", "train", 85, 7,
         "normal (1,000), active learning (500), gaudy (500)"),
        ("201025", "PE", "test", 89, 12, "normal (1,200)"),
        ("210224", "PE", "validation", 67, 9, "normal (800)"),
        ("210225", "PE", "test", 55, 6, "normal (1,200)"),
        ("210226", "PE", "train", 78, 6, "normal (600), maximizing (1,000)"),
        ("210301", "PE", "train", 61, 4, "maximizing (650), validation exps. (1,350)"),
        ("210302", "PE", "train", 70, 5, "maximizing (650), validation exps. (1,350)"),
        ("210303", "PE", "train", 67, 3, "maximizing (2,049)"),
        ("210304", "PE", "train", 65, 5, "maximizing (1,968)"),
        ("210305", "PE", "train", 70, 22, "validation exps. (400)"),
        ("210308", "PE", "train", 70, 4, "normal (500), validation exps. (1,500)"),
        ("210309", "PE", "train", 56, 4,
         "normal (600), validation exps. (1,200), artificial (200)"),
        ("210310", "PE", "train", 64, 3, "normal (1,000), gaudy (1,000)"),
        ("210312", "PE", "train", 81, 4, "maximizing (2,000)"),
        ("210315", "PE", "train", 65, 2, "maximizing (2,000)"),
        ("210316", "PE", "train", 62, 3, "normal (1,000), gaudy (1,000)"),
        ("210322", "PE", "train", 59, 4, "normal (600), Bashivan et al., 2019 (600)"),
        ("210323", "PE", "train", 59, 4, "normal (600), gaudy (600)"),
        ("210324", "PE", "train", 54, 4, "normal (600), gaudy (600)"),
        ("210325", "PE", "test", 50, 8, "Bashivan et al., 2019 (640)"),
        ("210326", "PE", "train", 60, 4, "normal (600), gaudy (600)"),
        ("210620", "RA", "train", 42, 9, "normal (1,600)"),
        ("210621", "RA", "train", 51, 16, "normal (1,200)"),
        ("211008", "RA", "train", 21, 24, "normal (1,200)"),
        ("211012", "RA", "train", 51, 15, "normal (1,000), gaudy (1,000)"),
        ("211013", "RA", "train", 52, 15, "normal (1,000), gaudy (1,000)"),
        ("211014", "RA", "train", 46, 11, "normal (1,000), gaudy (1,000)"),
        ("211015", "RA", "train", 49, 18, "normal (1,000), gaudy (1,000)"),
        ("211018", "RA", "train", 56, 10, "normal (1,500), gaudy (1,500)"),
        ("211022", "RA", "test", 42, 20, "normal (1,600)"),
        ("211025", "RA", "train", 54, 16,
         "normal (233), maximizing (150), gaudy (233), artificial (1,384)"),
        ("211026", "RA", "train", 56, 13,
         "normal (660), validation exps. (840), active learning (250), gaudy (250)"),
        ("211027", "RA", "train", 56, 18,
         "normal (240), validation exps. (1,260), active learning (250), gaudy (250)"),
        ("211028", "RA", "train", 55, 14,
         "normal (660), validation exps. (840), active learning (250), gaudy (250)"),
        ("211103", "RA", "train", 49, 13,
         "normal (750), maximizing (750), active learning (750), gaudy (750)"),
    ],
    columns=["session", "monkey", "split", "n_neurons", "max_repeats", "image_types"],
)
# Upstream has no image archive for these sessions (responses only): they cannot be fitted.
NO_IMAGES = ("201016", "201017", "201018", "201019", "201020")
_DERIVED = "derived"


def _check_sessions(sessions: Sequence[str] | str | None) -> list[str]:
    known = list(SESSIONS["session"])
    usable = [s for s in known if s not in NO_IMAGES]
    if sessions is None:
        return usable
    if isinstance(sessions, (str, int)):
        sessions = [sessions]
    chosen = [str(s) for s in sessions]
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ValueError(
            f"Unknown session(s) {unknown}: the sessions of Cowley et al. 2023 are "
            f"{usable} (recording dates, YYMMDD, as strings)."
        )
    imageless = [s for s in chosen if s in NO_IMAGES]
    if imageless:
        raise ValueError(
            f"Session(s) {imageless} have no images in the authors' repository (their "
            "responses cannot be paired with stimuli); choose among the others: "
            f"{usable}."
        )
    if not chosen:
        raise ValueError("sessions is empty: pass at least one session, or None for all.")
    return list(dict.fromkeys(chosen))


def _files(session: str, repeats: bool) -> list[str]:
    files = [
        f"{_DATA}/images/images_{session}.zip",
        f"{_DATA}/responses_repeat_averaged/responses_{session}.npy",
    ]
    if repeats:
        files.append(f"{_DATA}/responses_raw/responses_{session}.npy")
    return files


def _extract_images(archive: Path, target: Path, session: str) -> list[Path]:
    """The JPEGs of a session's archive, unpacked once (the archive stays the reference)."""
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if n.lower().endswith(".jpg"))
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in names:
            path = target / Path(name).name
            if not path.exists() or path.stat().st_size != zf.getinfo(name).file_size:
                partial = path.with_suffix(".part")
                partial.write_bytes(zf.read(name))
                partial.replace(path)
            paths.append(path)
    expected = [f"image{k:04d}.jpg" for k in range(1, len(paths) + 1)]
    if [p.name for p in paths] != expected:
        raise ValueError(
            f"The image archive of session {session} ({archive}) does not hold "
            "image0001.jpg ... in order, as the authors' readme describes; got "
            f"{[p.name for p in paths[:3]]}... The download may be damaged: remove the file "
            "and fetch again."
        )
    return paths


def split_half_noise_ceiling(repeats: np.ndarray, n_splits: int = 20,
                             random_state: int = 0) -> np.ndarray:
    """Noise ceiling (percent of variance) of each neuron from NaN-padded single trials.

    Each image's available repeats are split at random into two halves of equal size; the
    half-averages are correlated over images and the correlation is stepped up to the
    number of repeats with the Spearman-Brown formula, averaged over ``n_splits`` splits.
    Images with fewer than two repeats are left out.

    Parameters
    ----------
    repeats : ndarray, shape (n_images, n_repeats, n_neurons)
        Spike counts, NaN where an image had fewer repeats.
    n_splits : int
        Random splits averaged.
    random_state : int
        Seed of the splits.

    Returns
    -------
    noise_ceiling : ndarray of float64, shape (n_neurons,)
        ``100 * reliability`` (the variance units of NSD's noise ceiling), can be negative
        for neurons without a stimulus-driven response.
    """
    from afo_encoding.metrics import pearson_r

    repeats = np.asarray(repeats, dtype=np.float64)
    counts = (~np.isnan(repeats[:, :, 0])).sum(1)
    usable = counts >= 2
    data, counts = repeats[usable], counts[usable]
    half = counts // 2
    rng = np.random.default_rng(random_state)
    positions = np.arange(data.shape[1])[None, :]
    total = np.zeros(data.shape[2])
    for _ in range(n_splits):
        keys = rng.random(data.shape[:2])
        keys[np.isnan(data[:, :, 0])] = np.inf
        order = np.argsort(keys, axis=1)
        shuffled = np.take_along_axis(data, order[:, :, None], axis=1)
        in_a = positions < half[:, None]
        in_b = (positions >= half[:, None]) & (positions < 2 * half[:, None])
        mean_a = np.nansum(np.where(in_a[:, :, None], shuffled, 0.0), 1) / half[:, None]
        mean_b = np.nansum(np.where(in_b[:, :, None], shuffled, 0.0), 1) / half[:, None]
        r = pearson_r(mean_a, mean_b)
        factor = counts.mean() / half.mean()
        with np.errstate(invalid="ignore", divide="ignore"):
            total += factor * r / (1.0 + (factor - 1.0) * r)
    return 100.0 * total / n_splits


def fetch_cowley2023_v4(
    sessions: Sequence[str] | str | None = None,
    *,
    repeats: bool = True,
    data_dir=None,
    url: str | None = None,
    resume: bool = True,
    verbose: int = 1,
) -> Bunch:
    """Macaque V4 responses to natural and synthetic images (Cowley et al. 2023).

    Spike counts (100 ms bins) of V4 neurons recorded with Utah arrays in three macaques,
    in 50 sessions of 400 to 3,000 images (112 x 112 RGB) each, from the authors'
    repository ``cowleygroup/V4_compact_models`` (pinned at commit ``f4552ad``). Each file
    is registered with DataLad from its address in that commit and downloaded only when a
    session asks for it (cloning the repository would also download its hundreds of
    trained models). Neurons differ from session to session: each session is a "subject".

    Parameters
    ----------
    sessions : str, list of str, or None
        Recording sessions (``"YYMMDD"``, e.g. ``"210305"``); ``None`` for the 45 that have
        images (about 0.5 GB with the single trials). ``SESSIONS`` lists them with their
        monkey and the authors' train/validation/test role.
    repeats : bool
        Also fetch the single trials (``responses_raw``; NaN-padded where an image had
        fewer repeats), and derive each neuron's split-half noise ceiling.
    data_dir : str or path-like, optional
        Where data sets live: this argument, else ``$AFO_DATA``, else ``~/afo_data``.
    url : str, optional
        Read from here instead of GitHub: a folder or URL prefix with the repository's
        layout (e.g. a clone of it), or a DataLad dataset made by this fetcher (another
        machine's data directory). Default: ``$AFO_DATA_MIRROR/cowley2023_v4`` if that
        variable is set.
    resume : bool
        Resume interrupted downloads (``False`` starts them over).
    verbose : int
        0 silent, 1 progress, 2 DataLad's own messages.

    Returns
    -------
    data : sklearn.utils.Bunch
        The fields common to every fetcher (see :mod:`datasets_fetchers`), here:

        - ``images``: paths of the JPEG images, unpacked from each session's archive;
          ``stimulus_ids``: ``"<session>/imageNNNN"`` for each.
        - ``responses``: per session, float32 ``(n_images, n_neurons)``, the
          repeat-averaged spike counts; ``image_ids``: the stimulus id of each row.
        - ``repeats``: per session, float32 ``(n_images, max_repeats, n_neurons)`` single
          trials with NaN padding (``None`` without ``repeats``).
        - ``noise_ceiling``: per session, split-half noise ceiling of each neuron in
          percent of variance (``None`` without ``repeats``).
        - ``coords``: ``None`` (the neurons' receptive-field positions are not published;
          encoders place them on an evenly spaced grid).
        - ``splits``: ``{"train", "validation", "test"}``: the stimulus ids of the sessions
          the authors used for each; ``sessions``: the session table (monkey, split,
          neurons, images).
        - ``subjects``: the session ids; ``rois``, ``maskers``: ``None``.
        - ``description``, ``license`` (GPL-3.0), ``citation``.

    Raises
    ------
    ValueError
        Unknown sessions, or sessions without images.
    DownloadError, NotEnoughSpaceError, GitAnnexNotFoundError
        See :mod:`datasets_fetchers`.

    Examples
    --------
    >>> from datasets_fetchers import fetch_cowley2023_v4, load_encoder_inputs
    >>> data = fetch_cowley2023_v4(sessions="210305")  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(data, subject="210305")  # doctest: +SKIP
    >>> len(X), y.shape  # doctest: +SKIP
    (400, (400, 70))
    """
    chosen = _check_sessions(sessions)
    with use_log_level(verbose):
        dataset = open_dataset(SOURCE, data_dir=data_dir, url=url, verbose=verbose)
        relpaths = [f"{_DATA}/readme.txt"]
        for session in chosen:
            relpaths += _files(session, repeats)
        dataset.fetch(relpaths, resume=resume, verbose=verbose)
        dataset.exclude_from_git(_DERIVED)

        images, stimulus_ids, responses, image_ids = [], [], [], []
        trials, ceilings, rows = [], [], []
        for session in chosen:
            archive, averaged, *raw = (dataset.path / p for p in _files(session, repeats))
            paths = _extract_images(archive, dataset.path / _DERIVED / "images" / session,
                                    session)
            Y = np.load(averaged).T.astype(np.float32)
            if Y.shape[0] != len(paths):
                raise ValueError(
                    f"Session {session} has {len(paths)} images but responses to "
                    f"{Y.shape[0]} ({averaged}); the files do not belong together. Remove "
                    "them and fetch again."
                )
            ids = [f"{session}/{p.stem}" for p in paths]
            images += paths
            stimulus_ids += ids
            responses.append(Y)
            image_ids.append(np.array(ids))
            if raw:
                single = np.load(raw[0]).transpose(1, 2, 0).astype(np.float32)
                trials.append(single)
                ceilings.append(split_half_noise_ceiling(single))
            row = SESSIONS.set_index("session").loc[session].to_dict()
            rows.append({"session": session, **row, "n_images": len(paths),
                         "n_neurons": Y.shape[1]})
    table = pd.DataFrame(rows)
    splits = {
        split: np.concatenate(
            [image_ids[k] for k, r in enumerate(rows) if r["split"] == split]
            or [np.array([], dtype=str)]
        )
        for split in ("train", "validation", "test")
    }
    return make_bunch(
        images=[str(p) for p in images],
        stimulus_ids=np.array(stimulus_ids),
        responses=responses,
        image_ids=image_ids,
        coords=None,
        maskers=None,
        splits=splits,
        rois=None,
        noise_ceiling=ceilings if repeats else None,
        subjects=chosen,
        repeats=trials if repeats else None,
        sessions=table,
        data_dir=str(dataset.path),
        description=read_description(NAME),
        license=LICENSE,
        citation=CITATION,
    )
