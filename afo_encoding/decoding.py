"""Decoding by retrieval: which candidate image best explains a measured brain response?

A fitted encoder predicts the response pattern every candidate image would evoke. A
measured pattern (one row of responses: the voxels, vertices, sensor x time points or
neurons of one trial or one averaged image) is then compared with every predicted pattern
by Pearson's r over voxels, and the candidates are ranked by that r (the paper's section
4.5). Restricting the voxels to one ROI ("conditioning on an ROI") asks what that region
alone tells about the image.

Everything scales to large candidate sets: the candidates are predicted once, and all
queries x candidates correlations are one matrix product of row-standardised patterns,
computed block by block, so the working memory is set by ``chunk_size`` and never holds a
queries x candidates x voxels array.

- :func:`rank_candidates`: from a fitted encoder, candidate images and measured responses
  (array, Niimg, ``SurfaceImage``, ``mne.Epochs``) to the scores matrix.
- :func:`score_candidates`: the same on precomputed predictions.
- :func:`top_candidates`: the best ``k`` candidates of every query.
- :func:`identification_accuracy`: top-k accuracy and its chance level.
- :func:`identification_protocol`: the standard protocol with ``N`` candidates drawn at
  random, repeated, reported as mean and spread.
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import warnings
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._devices import resolve_device
from ._logging import logger, progress, use_log_level

__all__ = [
    "IdentificationResult",
    "identification_accuracy",
    "identification_protocol",
    "rank_candidates",
    "score_candidates",
    "top_candidates",
]

DEFAULT_CHUNK_SIZE = 512


def _as_pattern_array(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}.")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(
            f"{name} must be 2D (n_patterns, n_voxels) or a single 1D pattern, got shape "
            f"{a.shape}."
        )
    return a


def _check_chunk_size(chunk_size: Any) -> int:
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    return int(chunk_size)


#: dtypes of the product: numpy or torch; the half-precision ones need torch
_DTYPES = ("float32", "float64", "bfloat16", "float16")


def _check_dtype(dtype: Any) -> str:
    """The dtype's name, one of :data:`_DTYPES` (numpy, torch or string spellings)."""
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        with contextlib.suppress(TypeError):
            name = np.dtype(dtype).name
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}.")
    return name


def _resolve_device(device: Any, dtype: str) -> Any:
    """``None`` (the numpy path) or the torch device the scores are computed on."""
    if device is None:
        return "cpu" if dtype in ("bfloat16", "float16") else None
    import torch

    if device == "auto":
        return resolve_device("auto")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be None (numpy), 'auto' or a torch device such as 'cpu' or "
            f"'cuda:0', got {device!r}."
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was asked but torch sees no CUDA GPU; use device='cpu' "
            "or 'auto'."
        )
    return device


def _check_finite_rows(finite: np.ndarray, start: int, name: str) -> None:
    """Raise for the first row of a block (starting at row ``start``) whose mean is not
    finite, i.e. that holds NaN or infinite values."""
    if not finite.all():
        bad = start + int(np.flatnonzero(~finite)[0])
        raise ValueError(
            f"{name} row {bad} holds NaN or infinite values. Drop those voxels (e.g. with a "
            "ROI mask) or those patterns before scoring."
        )


class _RowStandardizer:
    """Standardise blocks of rows (centre, unit norm) so that a dot product is Pearson's r.

    A block's means and norms are accumulated in float64 the first time it is asked for
    and kept (two floats per row); asking again costs one subtraction and one
    multiplication into a reused workspace, cheap next to the matrix product, so blocks
    of one side can be standardised again for every block of the other side without
    holding a standardised copy of the input. The subtraction runs in the wider of the
    input and working dtypes, so large offsets (raw BOLD signal) cost no precision.
    Constant rows become zeros (their r is 0).
    """

    def __init__(self, a: np.ndarray, selection: np.ndarray | None, dtype: np.dtype,
                 chunk_size: int, name: str):
        self.a, self.selection, self.dtype, self.name = a, selection, dtype, name
        n_cols = a.shape[1] if selection is None else selection.size
        self.workspace = np.empty((min(chunk_size, a.shape[0]), n_cols), dtype=dtype)
        self.mean = np.empty(a.shape[0])
        self.scale = np.empty(a.shape[0])
        self.known = np.zeros(a.shape[0], dtype=bool)

    @property
    def n_constant(self) -> int:
        return int(np.sum(self.known & (self.scale == 0.0)))

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` centred and scaled to unit norm (a view of the workspace)."""
        rows = self.a[start:stop]
        if self.selection is not None:
            rows = np.take(rows, self.selection, axis=1)
        first = not self.known[start:stop].all()
        if first:
            mean = rows.mean(axis=1, dtype=np.float64)
            _check_finite_rows(np.isfinite(mean), start, self.name)
            self.mean[start:stop] = mean
        out = self.workspace[: stop - start]
        work = np.result_type(rows.dtype, self.dtype)
        np.subtract(rows, self.mean[start:stop].astype(work)[:, None], out=out,
                    casting="same_kind")
        if first:
            sum_sq = np.einsum("ij,ij->i", out, out, dtype=np.float64)
            # exact test: a rounded mean leaves a tiny non-zero residue on constant rows
            constant = rows.max(axis=1) == rows.min(axis=1)
            with np.errstate(divide="ignore"):
                self.scale[start:stop] = np.where(constant | (sum_sq == 0), 0.0,
                                                  1.0 / np.sqrt(sum_sq))
            self.known[start:stop] = True
        out *= self.scale[start:stop, None].astype(self.dtype)
        return out


class _TorchRowStandardizer:
    """The torch twin of :class:`_RowStandardizer`, for GPUs and half-precision products.

    A block is copied to the device in float32 (float64 for a float64 product) and
    standardised by :func:`torch.nn.functional.layer_norm` (centre and scale in one fused
    pass, statistics accumulated in float32) with a weight of ``1 / sqrt(n_voxels)``, so
    rows come out with unit norm, then cast to the product's dtype. Rows far from zero
    (mean beyond 10 times the row's range, e.g. raw BOLD signal) are centred first, since
    the fused statistics lose precision there. The row means find NaN or infinite values
    (an error); constant rows come out of the normalisation as NaN and are scored 0.
    """

    def __init__(self, a: np.ndarray, selection: np.ndarray | None, dtype: str, device,
                 name: str):
        import torch

        self.torch = torch
        self.a, self.selection, self.device, self.name = a, selection, device, name
        self.dtype = getattr(torch, dtype)
        self.work = torch.float64 if dtype == "float64" else torch.float32
        n_cols = a.shape[1] if selection is None else selection.size
        self.shape = (n_cols,)
        self.weight = torch.full(self.shape, n_cols ** -0.5, dtype=self.work, device=device)
        self.constant = np.zeros(a.shape[0], dtype=bool)

    @property
    def n_constant(self) -> int:
        return int(self.constant.sum())

    def block(self, start: int, stop: int):
        """Rows ``start:stop``, centred, unit norm, of the product's dtype, on the device."""
        torch = self.torch
        rows = self.a[start:stop]
        if self.selection is not None:
            rows = np.take(rows, self.selection, axis=1)
        t = torch.from_numpy(np.ascontiguousarray(rows)).to(self.device, self.work)
        mean = t.mean(dim=1, keepdim=True)
        finite = torch.isfinite(mean[:, 0])
        if not bool(finite.all()):
            _check_finite_rows(finite.cpu().numpy(), start, self.name)
        # the range of the first columns bounds the row's spread from below, so rows are
        # centred whenever they might be far from zero (and rarely when not)
        low, high = torch.aminmax(t[:, :256], dim=1)
        if bool((mean[:, 0].abs() > 10.0 * (high - low)).any()):
            t = t - mean  # a copy: t may share memory with the caller's array
        z = torch.nn.functional.layer_norm(t, self.shape, weight=self.weight, eps=0.0)
        # a constant row has a variance of exactly 0 (the running statistics never move),
        # so its standardised values are 0 * inf = NaN
        constant = ~torch.isfinite(z[:, 0])
        if bool(constant.any()):
            z[constant] = 0.0
            self.constant[start:stop] = constant.cpu().numpy()
        return z.to(self.dtype)


def score_candidates(
    responses: Any,
    predictions: Any,
    *,
    voxels: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dtype: Any = np.float32,
    device: Any = None,
    verbose: bool | int | str | None = None,
) -> np.ndarray:
    """Pearson r between every measured pattern and every predicted candidate pattern.

    ``scores[i, j]`` is the correlation, over voxels, between measured pattern ``i`` and
    the pattern predicted for candidate ``j``. All pairs come from one matrix product of
    row-standardised (centred, unit-norm) patterns, taken block by block. Besides the
    inputs and the returned scores, the working memory is two standardised blocks,
    ``2 * chunk_size * n_voxels`` values of ``dtype`` (one more block when ``voxels``
    selects a subset), whatever the numbers of queries and candidates: no queries x
    candidates x voxels array is ever built, and the inputs are never copied whole.

    Parameters
    ----------
    responses : array-like, shape (n_queries, n_voxels) or (n_voxels,)
        Measured response patterns, one per row (the same voxels, in the same order, as
        the predictions). Float32 arrays and memory maps are read one block at a time.
    predictions : array-like, shape (n_candidates, n_voxels) or (n_voxels,)
        The encoder's predicted pattern of every candidate image.
    voxels : array-like of int or bool, shape (n_selected,) or (n_voxels,) | None
        Restrict the correlation to these voxels (indices or a boolean mask), e.g. one
        ROI. The selection is applied block by block, without copying the inputs.
    chunk_size : int
        Number of patterns standardised and multiplied at a time (the memory knob).
    dtype : "float32" | "float64" | "bfloat16" | "float16"
        Precision of the standardised blocks and of the product (numpy, torch or string
        spelling). With float32 (default, about twice as fast as float64) the means and
        norms are still accumulated in float64 and the product runs on unit-norm rows, so
        scores agree with float64 to about 1e-6. ``"bfloat16"`` and ``"float16"`` run
        through torch (on ``device``, the CPU by default) and trade precision for speed:
        on CPUs with AMX and on GPUs a bfloat16 product is several times faster than
        float32 (``benchmarks/bench_retrieval.py``), but each score is rounded to
        bfloat16, about 3 significant digits (an absolute error up to
        ``0.004 * abs(r)``; float16: ``0.001 * abs(r)``). Enough to rank candidates whose r
        differ in the third digit, not to report r values.
    device : str | torch.device | None
        ``None`` (default): numpy on the CPU (torch for the half-precision dtypes).
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...: torch on that device, blocks copied there
        one at a time; ``"auto"``: a GPU when torch sees one.
    verbose : bool | int | str | None
        Show a progress bar over blocks of queries.

    Returns
    -------
    scores : ndarray, shape (n_queries, n_candidates)
        Pearson r in [-1, 1], float64 for ``dtype="float64"``, float32 otherwise (on the
        host, whatever the device). A pattern that is constant over the selected
        voxels has no defined correlation and scores **0.0** against everything (as in
        :func:`afo_encoding.metrics.pearson_r`; :func:`numpy.corrcoef` would give NaN);
        a warning says how many there were.

    Raises
    ------
    ValueError
        If the voxel counts differ, a pattern holds NaN or infinite values, or fewer than
        2 voxels are selected.

    See Also
    --------
    rank_candidates : the same from a fitted encoder and candidate images.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> predictions = rng.normal(size=(20, 100))
    >>> responses = predictions[[3, 7]] + 0.5 * rng.normal(size=(2, 100))
    >>> scores = score_candidates(responses, predictions)
    >>> scores.shape, scores.argmax(axis=1).tolist()
    ((2, 20), [3, 7])
    """
    queries, candidates, selection = _check_patterns(responses, predictions, voxels)
    chunk_size = _check_chunk_size(chunk_size)
    dtype = _check_dtype(dtype)
    rows_q, rows_c, product = _standardizers(
        queries, candidates, selection, dtype, _resolve_device(device, dtype), chunk_size
    )
    out_dtype = np.float64 if dtype == "float64" else np.float32
    scores = np.empty((queries.shape[0], candidates.shape[0]), dtype=out_dtype)
    _blockwise_products(rows_q, rows_c, product, scores, chunk_size, verbose)
    n_constant_queries, n_constant_candidates = rows_q.n_constant, rows_c.n_constant
    if n_constant_queries or n_constant_candidates:
        warnings.warn(
            f"{n_constant_queries} measured and {n_constant_candidates} predicted patterns "
            "are constant over the selected voxels; their correlations are set to 0.",
            RuntimeWarning,
            stacklevel=2,
        )
    return scores


def _check_patterns(responses: Any, predictions: Any, voxels: Any) -> tuple:
    """Queries and candidates as 2D arrays over the same voxels, and the voxel selection."""
    queries = _as_pattern_array(responses, "responses")
    candidates = _as_pattern_array(predictions, "predictions")
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"responses have {queries.shape[1]} voxels but predictions have "
            f"{candidates.shape[1]}. Both must be patterns over the same voxels (convert "
            "response containers with the encoder's space_.transform)."
        )
    selection = _voxel_index(voxels, queries.shape[1])
    n_selected = queries.shape[1] if selection is None else selection.size
    if n_selected < 2:
        raise ValueError(f"A correlation over voxels needs at least 2 voxels, got {n_selected}.")
    return queries, candidates, selection


def _standardizers(queries, candidates, selection, dtype, device, chunk_size) -> tuple:
    """Row standardisers of the queries and the candidates (numpy when ``device`` is
    ``None``, else torch) and the product of two standardised blocks into ``out``."""
    if device is None:
        rows_q = _RowStandardizer(queries, selection, np.dtype(dtype), chunk_size, "responses")
        rows_c = _RowStandardizer(candidates, selection, np.dtype(dtype), chunk_size,
                                  "predictions")  # fmt: skip

        def product(zq, zc, out):
            np.matmul(zq, zc.T, out=out)

        return rows_q, rows_c, product
    rows_q = _TorchRowStandardizer(queries, selection, dtype, device, "responses")
    rows_c = _TorchRowStandardizer(candidates, selection, dtype, device, "predictions")

    def product(zq, zc, out):
        out[...] = (zq @ zc.T).to("cpu", rows_q.work).numpy()

    return rows_q, rows_c, product


def _blockwise_products(rows_q, rows_c, product, scores, chunk_size, verbose) -> None:
    """Fill ``scores`` (queries x candidates) block by block, clipped to [-1, 1]."""
    n_queries, n_candidates = scores.shape
    # a single block of candidates is standardised once, several are standardised again
    # for every block of queries (cheap next to the product, and memory stays bounded)
    single = rows_c.block(0, n_candidates) if n_candidates <= chunk_size else None
    starts = range(0, n_queries, chunk_size)
    for q0 in progress(starts, verbose, desc="scoring", total=len(starts), unit="block"):
        q1 = min(q0 + chunk_size, n_queries)
        zq = rows_q.block(q0, q1)
        for c0 in range(0, n_candidates, chunk_size):
            c1 = min(c0 + chunk_size, n_candidates)
            zc = single if single is not None else rows_c.block(c0, c1)
            out = scores[q0:q1, c0:c1]
            product(zq, zc, out)
            np.clip(out, -1.0, 1.0, out=out)


def _voxel_index(voxels: Any, n_voxels: int) -> np.ndarray | None:
    """A selection of voxels (indices or boolean mask) as sorted unique indices."""
    if voxels is None:
        return None
    voxels = np.asarray(voxels)
    if voxels.dtype == bool:
        if voxels.shape != (n_voxels,):
            raise ValueError(
                f"A boolean voxel mask must have one entry per voxel ({n_voxels}), got "
                f"shape {voxels.shape}."
            )
        return np.flatnonzero(voxels)
    if voxels.ndim != 1 or not np.issubdtype(voxels.dtype, np.integer):
        raise ValueError(
            "voxels must be a boolean mask or a 1D array of voxel indices, got an array of "
            f"dtype {voxels.dtype} and shape {voxels.shape}. To select by ROI label, pass "
            "the labels as rois= and the label as roi=."
        )
    if voxels.size and (voxels.min() < -n_voxels or voxels.max() >= n_voxels):
        raise ValueError(
            f"voxel indices must lie in [0, {n_voxels}), got values from {voxels.min()} to "
            f"{voxels.max()}."
        )
    return np.unique(np.where(voxels < 0, voxels + n_voxels, voxels))


def _roi_selections(
    rois: Any, roi: Any, n_voxels: int, space: Any
) -> dict[Hashable, np.ndarray | None] | np.ndarray | None:
    """Voxel indices for ``rois``/``roi``: one array, or a dict for a list of labels."""
    if rois is None:
        if roi is not None:
            raise ValueError(f"roi={roi!r} was given without rois (the label of every voxel).")
        return None
    if not isinstance(rois, np.ndarray | list | tuple) and not hasattr(rois, "detach"):
        # an atlas in the response container's format (Niimg, SurfaceImage): into voxels
        if space is None or not hasattr(space, "transform"):
            raise TypeError(
                f"rois of type {type(rois).__name__} can only be read through the encoder's "
                "space_.transform; give an array of labels, a boolean mask or voxel indices."
            )
        rois = np.asarray(space.transform(rois)).reshape(-1)
    rois = np.asarray(rois)
    keep = getattr(space, "keep", None)
    if rois.ndim == 1 and keep is not None and rois.shape[0] == keep.size != n_voxels:
        rois = rois[keep]  # labels or mask over the raw voxels, before dropping
    if roi is None:
        return _voxel_index(rois, n_voxels)
    if rois.shape != (n_voxels,):
        raise ValueError(
            f"rois must hold one label per voxel ({n_voxels}), got shape {rois.shape}."
        )
    several = isinstance(roi, list | tuple)
    labels = list(roi) if several else [roi]
    selections = {}
    for label in labels:
        index = np.flatnonzero(rois == label)
        if index.size == 0:
            raise ValueError(
                f"No voxel has the label {label!r}; the labels are {np.unique(rois).tolist()}."
            )
        selections[label] = index
    return selections if several else selections[labels[0]]


def _space_of(encoder: Any, subject: int) -> Any:
    space = getattr(encoder, "space_", None)
    if isinstance(space, list | tuple):
        space = space[subject]
    return space


def predict_patterns(encoder: Any, images: Any, subject: int) -> np.ndarray:
    """The encoder's predictions for ``images`` (one subject's), float ``(n, n_voxels)``."""
    if not hasattr(encoder, "predict"):
        raise TypeError(f"encoder must be a fitted estimator with predict, got {encoder!r}.")
    try:
        accepts_subject = "subject" in inspect.signature(encoder.predict).parameters
    except (TypeError, ValueError):
        accepts_subject = False
    if accepts_subject:
        predictions = encoder.predict(images, subject=subject)
    elif subject != 0:
        raise ValueError(
            f"subject={subject} was asked but {type(encoder).__name__}.predict takes no "
            "subject argument (a single-subject encoder)."
        )
    else:
        predictions = encoder.predict(images)
    if not isinstance(predictions, np.ndarray) and not hasattr(predictions, "detach"):
        predictions = _space_of(encoder, subject).transform(predictions)
    return _as_pattern_array(predictions, "the encoder's predictions")


def measured_patterns(encoder: Any, responses: Any, subject: int, n_voxels: int) -> np.ndarray:
    """Measured ``responses`` as ``(n, n_voxels)``: an array with those columns as it is,
    anything else read by the encoder's ``space_``."""
    if isinstance(responses, np.ndarray) or hasattr(responses, "detach"):
        patterns = _as_pattern_array(responses, "responses")
        if patterns.shape[1] == n_voxels:
            return patterns
    space = _space_of(encoder, subject)
    if space is None or not hasattr(space, "transform"):
        raise ValueError(
            "responses must be an array (n_queries, n_voxels) with the encoder's "
            f"{n_voxels} voxels, or a container readable by the encoder's space_.transform; "
            f"got {type(responses).__name__} and the encoder has no space_."
        )
    return _as_pattern_array(space.transform(responses), "responses")


def rank_candidates(
    encoder: Any,
    candidate_images: Any,
    responses: Any,
    rois: Any = None,
    roi: Any = None,
    *,
    subject: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dtype: Any = np.float32,
    device: Any = None,
    verbose: bool | int | str | None = None,
) -> np.ndarray | dict[Hashable, np.ndarray]:
    """Score every candidate image against every measured response through an encoder.

    The encoder predicts the response pattern of each candidate image **once**; each
    measured pattern is then compared with every predicted pattern by Pearson's r over
    voxels (all pairs in one chunked matrix product, see :func:`score_candidates`).
    Sorting a row of the result, best first, ranks the candidates for that measurement
    (:func:`top_candidates`); :func:`identification_accuracy` says how often the image
    actually shown comes first.

    Parameters
    ----------
    encoder : fitted estimator
        Has ``predict(images)`` (or ``predict(images, subject=k)``) giving
        ``(n_images, n_voxels)``, and ``space_`` (a ResponseSpace) when ``responses`` is
        a container; e.g. :class:`afo_encoding.TopyEncoder`.
    candidate_images : images
        The candidate set, in any form ``encoder.predict`` accepts (uint8 array
        ``(n, H, W, 3)``, paths, :class:`afo_encoding.StimulusSet`).
    responses : array-like | Niimg | SurfaceImage | mne.Epochs
        Measured responses, one pattern per trial or image: an array
        ``(n_queries, n_voxels)`` over the encoder's voxels, or a container of the kind
        the encoder was fitted on (converted with ``encoder.space_.transform``, which
        applies the voxel selection of the fit).
    rois : array-like | Niimg | SurfaceImage | None
        Which voxels to compare on. ``None``: all. Without ``roi``: a boolean mask or an
        array of voxel indices. With ``roi``: the ROI label of every voxel (array, or an
        atlas in the response container's format, read with ``space_.transform``).
        Masks and labels may cover the kept voxels or all the raw voxels of the space
        (before constant ones were dropped).
    roi : label | list of labels | None
        The ROI to condition on. A list gives one scores matrix per label, all from the
        same predictions (the paper's Figures 7-9).
    subject : int
        Which subject of a multi-subject encoder the responses belong to.
    chunk_size : int
        Patterns per block of the product; bounds the memory (see
        :func:`score_candidates`).
    dtype : "float32" | "float64" | "bfloat16" | "float16"
        Precision of the product (see :func:`score_candidates`).
    device : str | torch.device | None
        Where the product runs: ``None`` numpy, else a torch device (see
        :func:`score_candidates`).
    verbose : bool | int | str | None
        Log the sizes and show a progress bar.

    Returns
    -------
    scores : ndarray, shape (n_queries, n_candidates), or dict
        ``scores[i, j]``: Pearson r between measured pattern ``i`` and the prediction for
        candidate ``j``. A dict ``{label: scores}`` when ``roi`` is a list.

    Examples
    --------
    >>> scores = rank_candidates(encoder, test_images, test_responses)  # doctest: +SKIP
    >>> identification_accuracy(scores, np.arange(len(test_images)))  # doctest: +SKIP
    >>> early = rank_candidates(encoder, test_images, test_responses,
    ...                         rois=labels, roi="early")  # doctest: +SKIP
    """
    predictions = predict_patterns(encoder, candidate_images, subject)
    n_voxels = predictions.shape[1]
    queries = measured_patterns(encoder, responses, subject, n_voxels)
    if queries.shape[1] != n_voxels:
        raise ValueError(
            f"responses have {queries.shape[1]} voxels but the encoder predicts {n_voxels} "
            f"(subject {subject}). Give responses of the subject the encoder was fitted on."
        )
    selections = _roi_selections(rois, roi, n_voxels, _space_of(encoder, subject))
    with use_log_level(verbose):
        logger.info(
            "Scoring %d measured patterns against %d candidates over %d voxels.",
            queries.shape[0], predictions.shape[0], n_voxels,
        )
    kwargs = {"chunk_size": chunk_size, "dtype": dtype, "device": device, "verbose": verbose}
    if isinstance(selections, dict):
        return {label: score_candidates(queries, predictions, voxels=index, **kwargs)
                for label, index in selections.items()}
    return score_candidates(queries, predictions, voxels=selections, **kwargs)


def top_candidates(scores: Any, k: int = 5) -> np.ndarray:
    """Indices of the ``k`` best-scoring candidates of every query, best first.

    Parameters
    ----------
    scores : array-like, shape (n_queries, n_candidates)
        As returned by :func:`rank_candidates`.
    k : int
        How many candidates to keep (at most ``n_candidates``).

    Returns
    -------
    top : ndarray of int, shape (n_queries, k)
        ``top[i, 0]`` is the best candidate for query ``i``.

    Examples
    --------
    >>> top_candidates([[0.1, 0.9, 0.5]], k=2).tolist()
    [[1, 2]]
    """
    scores = _as_pattern_array(scores, "scores")
    n_candidates = scores.shape[1]
    if not isinstance(k, numbers.Integral) or not 1 <= k <= n_candidates:
        raise ValueError(f"k must be an integer in [1, {n_candidates}], got {k!r}.")
    if k < n_candidates:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_candidates), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _check_ks(k: Any) -> list[int]:
    ks = [k] if isinstance(k, numbers.Integral) else list(k)
    if not ks or not all(isinstance(v, numbers.Integral) and v >= 1 for v in ks):
        raise ValueError(f"k must be a positive integer or a sequence of them, got {k!r}.")
    return [int(v) for v in ks]


class IdentificationResult(Bunch):
    """What :func:`identification_accuracy` and :func:`identification_protocol` return.

    A :class:`~sklearn.utils.Bunch` (``result.top1``, ``result["ranks"]``) whose repr is
    one line of accuracies against chance, not the arrays of ranks or draws it holds.
    """

    def __repr__(self) -> str:
        ks = sorted(int(key[3:]) for key in self
                    if key.startswith("top") and key[3:].isdigit())
        parts = []
        for v in ks:
            spread = f" \u00b1 {self[f'top{v}_std']:.3f}" if f"top{v}_std" in self else ""
            parts.append(f"top-{v} {self[f'top{v}']:.3f}{spread} "
                         f"(chance {self[f'chance_top{v}']:.3f})")
        if "draws" in self:
            setting = (f"{self['n_candidates']} candidates drawn {self['n_repeats']} times")
        else:
            ranks = np.asarray(self.get("ranks", []))
            setting = f"{ranks.size} queries among {self['n_candidates']} candidates"
            if ranks.size:
                parts.append(f"median rank {np.median(ranks):g}")
        return f"<IdentificationResult | {setting}: {', '.join(parts)}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's display
        printer.text(repr(self))


def identification_accuracy(
    scores: Any, true_index: Any, k: int | Iterable[int] = (1, 5)
) -> Bunch:
    """Top-k identification accuracy: how often the true image ranks among the best ``k``.

    Ties are broken at random in expectation: when the true candidate shares its score
    with ``t`` others and ``g`` candidates score higher, it counts as a top-k hit with
    probability ``clip((k - g) / (t + 1), 0, 1)``. A model whose predictions are all equal
    therefore scores exactly chance, never 100%.

    Parameters
    ----------
    scores : array-like, shape (n_queries, n_candidates)
        Higher is better (e.g. from :func:`rank_candidates`).
    true_index : array-like of int, shape (n_queries,)
        Column of the image actually shown for every query.
    k : int | sequence of int
        The cut-offs to report.

    Returns
    -------
    result : IdentificationResult
        A Bunch, printed as one line: ``top{k}`` (fraction of queries, in [0, 1]) and
        ``chance_top{k}`` (``min(k, N) / N`` for ``N`` candidates) for every ``k``;
        ``ranks``, the rank of the true image for every query (1 is best, ties
        averaged); ``n_candidates``.

    Examples
    --------
    >>> scores = [[0.9, 0.1, 0.2], [0.3, 0.1, 0.2], [0.0, 0.5, 0.8]]
    >>> acc = identification_accuracy(scores, [0, 2, 1], k=(1, 2))
    >>> float(acc.top1), float(acc.top2), float(acc.chance_top1)
    (0.3333333333333333, 1.0, 0.3333333333333333)
    """
    scores = _as_pattern_array(scores, "scores")
    n_queries, n_candidates = scores.shape
    true_index = np.asarray(true_index)
    if true_index.shape != (n_queries,) or not np.issubdtype(true_index.dtype, np.integer):
        raise ValueError(
            f"true_index must hold one integer per query ({n_queries}), got an array of "
            f"dtype {true_index.dtype} and shape {true_index.shape}."
        )
    if n_queries and (true_index.min() < 0 or true_index.max() >= n_candidates):
        raise ValueError(
            f"true_index values must lie in [0, {n_candidates}), got values from "
            f"{true_index.min()} to {true_index.max()}."
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values; ranks would be undefined.")
    ks = _check_ks(k)
    true_score = scores[np.arange(n_queries), true_index][:, None]
    greater = (scores > true_score).sum(axis=1)
    ties = (scores == true_score).sum(axis=1) - 1
    result = IdentificationResult(ranks=greater + ties / 2.0 + 1.0, n_candidates=n_candidates)
    for v in ks:
        hit = np.clip((v - greater) / (ties + 1.0), 0.0, 1.0)
        result[f"top{v}"] = float(hit.mean()) if n_queries else float("nan")
        result[f"chance_top{v}"] = min(v, n_candidates) / n_candidates
    return result


def identification_protocol(
    scores: Any,
    true_index: Any,
    n_candidates: int = 50,
    n_repeats: int = 100,
    k: int | Sequence[int] = (1, 5),
    random_state: Any = None,
) -> Bunch:
    """Identification accuracy among ``n_candidates`` images drawn at random, repeated.

    Accuracies measured on candidate sets of different sizes cannot be compared (chance
    is ``k / N``), so the standard protocol fixes ``N``: each repeat draws ``N``
    candidates without replacement from the pool, and every query whose true image is
    among them is identified among those ``N`` only (Kay et al., 2008). The draws reuse
    the scores of the whole pool, so nothing is predicted again.

    Parameters
    ----------
    scores : array-like, shape (n_queries, n_pool)
        Scores of every query against the whole candidate pool (from
        :func:`rank_candidates`).
    true_index : array-like of int, shape (n_queries,)
        Column of the image actually shown for every query.
    n_candidates : int
        ``N``, the size of every candidate set (at most the pool size).
    n_repeats : int
        Number of random draws.
    k : int | sequence of int
        The top-k cut-offs to report.
    random_state : int | RandomState | None
        Seed of the draws.

    Returns
    -------
    result : IdentificationResult
        A Bunch, printed as one line. For every ``k``: ``top{k}`` (mean accuracy over
        draws), ``top{k}_std`` (its standard deviation over draws) and
        ``chance_top{k}`` (``k / N``); ``draws``, the accuracies of every draw, shape
        ``(n_repeats, len(k))`` (NaN for a draw that held no query's true image);
        ``n_candidates`` and ``n_repeats``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scores = np.eye(200) + 0.8 * rng.normal(size=(200, 200))
    >>> res = identification_protocol(scores, np.arange(200), n_candidates=20,
    ...                               n_repeats=50, random_state=0)
    >>> res.top1 > 5 * res.chance_top1
    True
    """
    scores = _as_pattern_array(scores, "scores")
    n_queries, n_pool = scores.shape
    true_index = np.asarray(true_index)
    if true_index.shape != (n_queries,) or not np.issubdtype(true_index.dtype, np.integer):
        raise ValueError(
            f"true_index must hold one integer per query ({n_queries}), got an array of "
            f"dtype {true_index.dtype} and shape {true_index.shape}."
        )
    if not isinstance(n_candidates, numbers.Integral) or not 2 <= n_candidates <= n_pool:
        raise ValueError(
            f"n_candidates must be an integer in [2, {n_pool}] (the pool size), got "
            f"{n_candidates!r}."
        )
    if not isinstance(n_repeats, numbers.Integral) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}.")
    ks = _check_ks(k)
    rng = check_random_state(random_state)
    draws = np.full((int(n_repeats), len(ks)), np.nan)
    position = np.empty(n_pool, dtype=np.intp)
    for r in range(int(n_repeats)):
        subset = rng.choice(n_pool, size=int(n_candidates), replace=False)
        position.fill(-1)
        position[subset] = np.arange(subset.size)
        local_true = position[true_index]
        queries = np.flatnonzero(local_true >= 0)
        if queries.size == 0:
            continue
        acc = identification_accuracy(scores[np.ix_(queries, subset)], local_true[queries], ks)
        draws[r] = [acc[f"top{v}"] for v in ks]
    if np.isnan(draws[:, 0]).all():
        raise ValueError(
            "No draw held the true image of any query; check true_index against the pool."
        )
    result = IdentificationResult(draws=draws, n_candidates=int(n_candidates),
                                  n_repeats=int(n_repeats))
    for i, v in enumerate(ks):
        result[f"top{v}"] = float(np.nanmean(draws[:, i]))
        result[f"top{v}_std"] = float(np.nanstd(draws[:, i]))
        result[f"chance_top{v}"] = min(v, n_candidates) / n_candidates
    return result
