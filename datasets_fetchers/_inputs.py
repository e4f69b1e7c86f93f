"""From a fetched data set to what an encoder's ``fit`` takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.utils import Bunch

# Fields every fetcher fills (``None`` where the source has nothing of the kind); the
# package docstring and the "Data sets" page describe them.
BUNCH_FIELDS = (
    "images", "stimulus_ids", "responses", "image_ids", "coords", "maskers", "splits",
    "rois", "noise_ceiling", "subjects", "description", "license", "citation",
)


def make_bunch(**fields: Any) -> Bunch:
    """A fetcher's :class:`~sklearn.utils.Bunch`, with every common field present."""
    missing = [name for name in BUNCH_FIELDS if name not in fields]
    if missing:
        raise TypeError(f"A fetcher's Bunch lacks the fields {missing}.")
    return Bunch(**fields)


def _subject_index(bunch: Bunch, subject: Any) -> int:
    subjects = list(bunch.subjects)
    if subject in subjects:
        return subjects.index(subject)
    as_text = [str(s) for s in subjects]
    if str(subject) in as_text:
        return as_text.index(str(subject))
    raise ValueError(
        f"subject={subject!r} is not in this data set's subjects {subjects}. Pass one of "
        "them, or fetch that subject first."
    )


def _take_rows(y: Any, rows: np.ndarray) -> Any:
    """Rows of a response container (array, 4D Niimg, SurfaceImage, Epochs)."""
    if isinstance(y, np.ndarray):
        return y[rows]
    kind = type(y).__module__.split(".")[0]
    if kind == "mne":
        return y[rows]
    if kind == "nibabel":
        from nilearn.image import index_img

        return index_img(y, rows)
    if type(y).__name__ == "SurfaceImage":
        from nilearn.surface import SurfaceImage

        return SurfaceImage(
            mesh=y.mesh,
            data={part: np.asarray(data)[:, rows] for part, data in y.data.parts.items()},
        )
    return np.asarray(y)[rows]


def _images_of(bunch: Bunch, ids: np.ndarray) -> Any:
    position = {sid: k for k, sid in enumerate(bunch.stimulus_ids)}
    try:
        index = np.array([position[i] for i in ids], dtype=np.int64)
    except KeyError as err:
        raise ValueError(
            f"Image {err.args[0]!r} of the responses is not among the fetched images "
            "(bunch.stimulus_ids): the Bunch is inconsistent; fetch again."
        ) from None
    images = bunch.images
    if isinstance(images, np.ndarray):
        return images[index]
    return [images[k] for k in index]


def load_encoder_inputs(
    bunch: Bunch, subject: Any = None, split: str | None = None
) -> tuple[Any, Any, dict]:
    """The images, responses and fit arguments of a fetched data set, ready for ``fit``.

    Parameters
    ----------
    bunch : sklearn.utils.Bunch
        What a ``fetch_*`` function returned.
    subject : subject id, list of them, or None
        One of ``bunch.subjects`` (an int or its string); a list of them, or ``None`` for
        all fetched subjects, gives per-subject lists, the multi-subject form of
        :meth:`afo_encoding.TopyEncoder.fit`.
    split : str or None
        ``None`` keeps every response row; a key of ``bunch.splits`` (``"train"``,
        ``"test"``, ...) keeps the rows whose image belongs to that split.

    Returns
    -------
    X : list of paths or ndarray (or a list of them, one per subject)
        The image of each response row, in row order.
    y : ndarray, Niimg, SurfaceImage or mne.Epochs (or a list of them)
        The responses, in the container the fetcher gave.
    fit_params : dict
        Keyword arguments of ``fit`` that the responses need: ``coords`` (voxel positions)
        when ``y`` is an array whose voxels have positions; empty otherwise.

    Examples
    --------
    >>> from afo_encoding import TopyEncoder  # doctest: +SKIP
    >>> from datasets_fetchers import fetch_cowley2023_v4, load_encoder_inputs  # doctest: +SKIP
    >>> data = fetch_cowley2023_v4(sessions=["210305"])  # doctest: +SKIP
    >>> X, y, params = load_encoder_inputs(data, subject="210305")  # doctest: +SKIP
    >>> encoder = TopyEncoder().fit(X, y, **params)  # doctest: +SKIP
    """
    if split is not None and (bunch.splits is None or split not in bunch.splits):
        available = sorted(bunch.splits) if bunch.splits else []
        raise ValueError(
            f"split={split!r} is not a split of this data set; it has {available or 'none'}. "
            "Pass one of them, or split=None for every row."
        )
    if subject is None or (isinstance(subject, Sequence) and not isinstance(subject, str)):
        subjects = list(bunch.subjects) if subject is None else list(subject)
        parts = [load_encoder_inputs(bunch, s, split) for s in subjects]
        coords = [p[2].get("coords") for p in parts]
        params = {"coords": coords} if any(c is not None for c in coords) else {}
        return [p[0] for p in parts], [p[1] for p in parts], params
    k = _subject_index(bunch, subject)
    ids = np.asarray(bunch.image_ids[k])
    y = bunch.responses[k]
    if split is not None:
        rows = np.flatnonzero(np.isin(ids, np.asarray(bunch.splits[split])))
        if not rows.size:
            raise ValueError(
                f"Subject {bunch.subjects[k]!r} has no response to an image of the "
                f"{split!r} split (its {len(ids)} rows are all in other splits)."
            )
        ids, y = ids[rows], _take_rows(y, rows)
    coords = bunch.coords[k] if bunch.coords is not None else None
    params = {"coords": coords} if coords is not None else {}
    return _images_of(bunch, ids), y, params
