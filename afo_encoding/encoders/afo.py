"""AllForOneEncoder: the paper's All-for-One recipe (section 3.2) as one meta-estimator.

The recipe trains several :class:`~afo_encoding.encoders.topy.TopyEncoder` models in
stages and ends with one all-ROI model:

- **stage 1**: one model per ROI, over all subjects. Every stage model has a head for
  every voxel (so the positional encoding is normalised over the whole coordinate set, as
  in the final model); the ground-truth loss covers the ROI's voxels only
  (``loss_weight``), and early stopping, checkpoint choice and the soup look at them only
  (``monitor``).
- **stage 2**: per ROI, an all-ROI model whose ground-truth loss covers the ROI while every
  other voxel learns the stage-1 prediction of its own ROI's model ("dark knowledge",
  ``soft_targets``) as a helper; monitored on the ROI; the helpers are discarded.
- **stage 3**: one all-ROI model on the ground truth plus the stage-2 dark knowledge of
  every voxel.

Dark knowledge is computed out of fold by default: the training images are split into
``n_folds`` folds (repeats of an image stay together), each stage model is fitted
``n_folds`` times, and each fit predicts the images it did not see. The teacher of an image
is then never a model that memorised that image's noise (the original code distilled
in-sample predictions, which copy the training noise back into the students).
``dark_knowledge="in_sample"`` is the paper's variant (one fit per ROI, predicting its own
training images).

With ``freeze_readout=True`` a first all-ROI model (the naive one, which veROIs are cut
from anyway) is fitted before stage 1, and its RetinaMapper and LayerSelector are copied
into every stage model and frozen (``TopyEncoder.fit(frozen_readout=...)``): the stage fits
train the adapters, the global branch and the heads only.

An ROI need not exist in every subject (an atlas area outside one subject's mask, veROIs
clustered over all subjects' voxels): a subject without ROI ``k`` gives ROI ``k``'s models
no ground-truth loss and no monitored voxel (in stage 2 it holds helpers only), and its
voxels take their teacher from their own ROIs' models.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .._logging import logger, progress, use_log_level
from .._workers import exit_with_parent, new_temporary_folder, parallel_options
from ._base import as_flat_features, feature_device, is_multi_subject, row_ids
from .topy import TopyEncoder, _readout_source

__all__ = ["AllForOneEncoder", "random_rois_like"]

#: attributes of the final TopyEncoder that the AllForOneEncoder exposes as its own
_FINAL_ATTRIBUTES = (
    "model_",
    "backbone_",
    "space_",
    "coef_",
    "intercept_",
    "retina_map_",
    "layer_weights_",
    "validation_scores_",
    "history_",
    "n_iter_",
    "n_subjects_",
)
#: TopyEncoder parameters that the meta-estimator sets itself for every stage fit
_OWNED_PARAMS = ("random_state", "verbose", "checkpoint_dir", "memory")


def random_rois_like(labels: Any, random_state: Any = None) -> Any:
    """Random ROIs with exactly the sizes of given ones (the paper's randROI).

    Parameters
    ----------
    labels : array-like of shape (n_voxels,) or list of them
        ROI label of every voxel (one array per subject).
    random_state : int, RandomState or None
        Seed of the shuffle.

    Returns
    -------
    random_labels : ndarray or list of ndarray
        The same labels, shuffled over the voxels of each subject: as many ROIs, each with
        as many voxels, but every ROI now mixes voxels of every kind.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.repeat(["early", "mid", "late"], [5, 3, 2])
    >>> shuffled = random_rois_like(labels, random_state=0)
    >>> sorted(shuffled.tolist()) == sorted(labels.tolist())
    True
    """
    rng = check_random_state(random_state)
    if isinstance(labels, (list, tuple)) and labels and np.ndim(labels[0]) == 1:
        return [rng.permutation(np.asarray(lab)) for lab in labels]
    return rng.permutation(np.asarray(labels))


@dataclass
class _FitSpec:
    """One TopyEncoder fit of the recipe: what it trains on and which rows it predicts."""

    name: str
    stage: str
    roi: int | None
    fold: int | None
    train_index: list  # per subject: sample indices the fit trains (and validates) on
    predict_index: list  # per subject: sample indices whose predictions are the teacher
    loss_weight: list | None = None
    soft_weight: list | None = None
    monitor: list | None = None
    use_soft_targets: bool = False
    keep_model: bool = True


@dataclass
class _FitOutput:
    """What a stage fit gives back."""

    encoder: TopyEncoder | None
    teacher: list  # per subject: predictions (n_predict, n_voxels) or None
    scores: list  # per subject: validation r of every voxel
    seconds: float = 0.0
    resumed: bool = False
    extra: dict = field(default_factory=dict)


def _digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _subset(X: Any, index: np.ndarray) -> Any:
    """Rows of one subject's inputs: a FeatureStore or a 2D feature array."""
    if hasattr(X, "subset"):
        return X.subset(index)
    return X[index]


def _run_fit(
    spec: _FitSpec,
    params: dict,
    Xs: list,
    Ys: list,
    coords: list,
    soft_targets: list | None,
    multi: bool,
    seed: int | None,
    out_dir: str | None,
    frozen_readout: Any = None,
) -> _FitOutput:
    """Fit one stage model (in a joblib worker or in the parent) and predict its teacher rows.

    With ``out_dir``, a finished fit is saved there (``<name>.safetensors`` and
    ``<name>.npz``) and found again instead of refitted (with this run's ``memory``).
    ``frozen_readout`` goes to ``TopyEncoder.fit``.
    """
    import torch

    from ..io import load, save
    from ..training.checkpoints import load_arrays

    exit_with_parent()  # in a joblib worker: do not outlive the fit that started it

    model_path = teacher_path = None
    if out_dir is not None:
        model_path = Path(out_dir) / f"{spec.name}.safetensors"
        teacher_path = Path(out_dir) / f"{spec.name}.npz"
        if teacher_path.exists() and (model_path.exists() or not spec.keep_model):
            stored = load_arrays(teacher_path, "Delete it; the next fit refits this stage.")
            n = len(Xs)
            teacher = [stored.get(f"teacher{s}") for s in range(n)]
            scores = [stored[f"scores{s}"] for s in range(n)]
            encoder = load(model_path) if spec.keep_model else None
            if encoder is not None:
                encoder.set_params(memory=params["memory"])
            return _FitOutput(encoder, teacher, scores, float(stored["seconds"]), resumed=True)

    start = time.perf_counter()
    fit_dir = None if out_dir is None else str(Path(out_dir) / "fits")
    encoder = TopyEncoder(**params, random_state=seed, checkpoint_dir=fit_dir)
    n = len(Xs)
    X_fit = [_subset(Xs[s], spec.train_index[s]) for s in range(n)]
    y_fit = [Ys[s][spec.train_index[s]] for s in range(n)]
    kw: dict[str, Any] = {"coords": coords}
    if spec.loss_weight is not None:
        kw["loss_weight"] = spec.loss_weight
    if spec.monitor is not None:
        kw["monitor"] = spec.monitor
    if spec.use_soft_targets:
        if soft_targets is None:
            raise ValueError(f"{spec.name}: the teacher predictions are missing.")
        kw["soft_targets"] = [soft_targets[s][spec.train_index[s]] for s in range(n)]
        kw["soft_weight"] = spec.soft_weight

    def one(value):
        return value if multi else value[0]

    with torch.random.fork_rng(devices=[]):
        encoder.fit(
            one(X_fit),
            one(y_fit),
            **{k: one(v) for k, v in kw.items()},
            frozen_readout=frozen_readout,
        )
    teacher = []
    for s in range(n):
        rows = spec.predict_index[s]
        teacher.append(None if rows is None else encoder.predict(_subset(Xs[s], rows), subject=s))
    scores = encoder.validation_scores_ if multi else [encoder.validation_scores_]
    seconds = time.perf_counter() - start
    if out_dir is not None:
        if spec.keep_model:
            save(encoder, model_path)
        arrays = {f"scores{s}": np.asarray(scores[s]) for s in range(n)}
        arrays.update({f"teacher{s}": t for s, t in enumerate(teacher) if t is not None})
        tmp = teacher_path.with_name(teacher_path.name + ".tmp.npz")
        np.savez(tmp, seconds=seconds, **arrays)
        tmp.replace(teacher_path)
    return _FitOutput(encoder if spec.keep_model else None, teacher, list(scores), seconds)


class AllForOneEncoder(RegressorMixin, BaseEstimator):
    """The All-for-One recipe: ROI models, dark-knowledge distillation, one all-ROI model.

    Fits the three stages of the paper (section 3.2, Figure 3) with
    :class:`~afo_encoding.encoders.topy.TopyEncoder` models and ends with one all-ROI model
    that predicts like a TopyEncoder. See the module notes for the stages.

    Parameters
    ----------
    estimator : TopyEncoder or None, default=None
        The model of every stage (cloned; ``None``: ``TopyEncoder(head_solver="sgd")``,
        the paper's recipe, whose SGD-trained adapters and heads are what the stages
        distil into one another). Its parameters
        (backbone, recipe, device...) are used by every fit; ``random_state``, ``verbose``,
        ``memory`` and ``checkpoint_dir`` are this estimator's.
    rois : str, array-like, Niimg or list, default="veroi"
        The ROIs:

        - a label per voxel (array over the raw or the kept voxels; a list of them, one per
          subject), any hashable labels (every distinct value is one ROI; an ROI may be
          missing in some subjects, see the module notes);
        - an atlas in the container of ``y`` (e.g. a 3D label image for a Niimg ``y``),
          read with the response space's ``transform``;
        - ``"random"``: random ROIs (``n_rois`` of them, of equal or given sizes); for
          random ROIs of exactly the sizes of given ones (the paper's randROI) pass
          ``random_rois_like(labels)``;
        - ``"veroi"``: veROIs (:func:`afo_encoding.parcellation.veroi`) of a first
          all-ROI model's head weights, cut into ``n_rois``.
    n_rois : int or sequence of float, default=4
        Number of ROIs for ``"veroi"`` and ``"random"``; for ``"random"``, a sequence gives
        the relative size of every ROI. Ignored for given labels.
    recipe : {"afo", "naive"}, default="afo"
        ``"naive"``: one all-ROI model on the ground truth (the NaiveMix row of Table 3).
    helpers : {"dark_knowledge", "ground_truth"}, default="dark_knowledge"
        What the stage-2 helpers learn: the stage-1 predictions, or the ground truth (the
        NoDK ablation: every voxel on its ground truth, monitored on the ROI).
    dark_knowledge : {"out_of_fold", "in_sample"}, default="out_of_fold"
        How teacher predictions of the training images are made: by models that did not
        see them (``n_folds`` fits per stage model), or the paper's in-sample predictions.
    n_folds : int, default=3
        Folds of the out-of-fold teachers (at least 2).
    soft_weight : float, default=0.25
        Weight of the dark-knowledge loss relative to the ground-truth loss (stage 2 helpers
        and stage 3). The paper does not give one. With the smooth-L1 loss (nearly L1) a
        noiseless teacher pulls on a voxel as hard as its noisy ground truth, so an equal
        weight lets the helpers dominate the shared layers and pins stage 3 to its teacher:
        on the simulator (``benchmarks/bench_afo.py``) a weight of 1 gave a stage 2 below
        stage 1 and a final model below NaiveMix, 0.25 a final model above NaiveMix.
    n_stage2_rounds : int, default=1
        Rounds of stage 2; 2 is the S2+1 ablation (a second round distilled from the first).
    freeze_readout : bool, default=False
        Fit one all-ROI model first (the ``"naive"`` row of ``stage_scores_``; with
        ``rois="veroi"`` the one veROIs come from, not a second fit) and freeze its
        RetinaMapper and LayerSelector in every stage-1, stage-2 and stage-3 model
        (``TopyEncoder.fit(frozen_readout=...)``): the paper pre-fits them once and reports
        twice faster convergence. No effect with ``recipe="naive"``.
    keep_stage_estimators : bool, default=False
        Keep every stage model in ``stage_estimators_`` (memory: one TopyNet per fit).
    n_jobs : int or None, default=None
        Stage fits run in parallel through :class:`joblib.Parallel` (``None``: joblib's
        default, so ``joblib.parallel_config`` chooses, e.g. a dask or ray backend). The
        backbone runs once, here; workers read the features from the disk cache
        (``memory``, or a temporary folder when none is given).
    memory : str, Path, joblib.Memory or None, default=None
        Disk cache of the backbone features.
    checkpoint_dir : str, Path or None, default=None
        Every finished stage fit is saved there (``afo_encoding.save`` + its teacher
        predictions), and every fit checkpoints its epochs; refitting the same data with
        the same parameters after an interruption loads what was finished and resumes the
        rest (a crash in stage 2 does not redo stage 1).
    random_state : int, RandomState or None, default=None
        Seeds the folds, the random ROIs, veROI's k-means and every stage fit (all stage
        fits share one seed, so stages are compared on the same validation images).
    verbose : bool, int or str, default=0
        Stage messages and a progress bar over the fits of a stage.

    Attributes
    ----------
    final_estimator_ : TopyEncoder
        The stage-3 model (the naive model for ``recipe="naive"``).
    rois_ : ndarray
        The ROI names, in the order of the columns of ``stage_scores_``; ROI ``k`` is
        ``rois_[k]``.
    roi_labels_ : ndarray of int or list
        ROI index of every kept voxel (one array per subject when several).
    stage_scores_ : pandas.DataFrame
        Validation Pearson r, one row per stage (``"naive"``, ``"stage1"``, ``"stage2"``,
        ``"stage2+1"``..., ``"stage3"``), one column per ROI (the mean over its voxels in
        the subjects that have it) and ``"all"`` (mean over all voxels). A voxel's score
        in an ROI stage is the one of its own ROI's model, averaged over the folds; with
        out-of-fold teachers the ROI models trained on ``(n_folds - 1) / n_folds`` of the
        images (each on its own validation split), so compare stage 1 with stage 2 here,
        and the final model with others on test images.
    stage_voxel_scores_ : dict
        Stage name -> per-voxel validation r (a list per subject when several).
    stage_estimators_ : dict
        Stage name -> list over ROIs of lists over folds of TopyEncoders, when
        ``keep_stage_estimators`` (the stage-3 / naive model always: one-element lists).
    stage_seconds_ : dict
        Stage name -> wall time of its fits in this call.
    veroi_linkage_ : ndarray
        Ward linkage of the veROI centroids, when ``rois="veroi"``.
    model_, backbone_, space_, coef_, intercept_, retina_map_, layer_weights_,
    validation_scores_, history_, n_iter_, n_subjects_
        Those of ``final_estimator_`` (see :class:`TopyEncoder`); ``space_`` is the space
        of the ``y`` given to ``fit``.

    Notes
    -----
    Cost: with out-of-fold teachers, stage 1 and each stage-2 round take ``n_rois *
    n_folds`` fits on ``(n_folds - 1) / n_folds`` of the images, stage 3 one fit; the
    backbone runs once per image for the whole recipe. Every stage model has all voxels'
    heads (masked by ``loss_weight``), so the positional encoding is the same in every
    stage; the cost is the readout of the masked voxels (``n_voxels_per_step`` of the
    estimator bounds it). ``freeze_readout`` adds one all-ROI fit on all the images (none
    with ``rois="veroi"``, which fits it anyway); ``benchmarks/bench_afo.py
    --freeze-readout`` measures what it saves in the stage fits.

    Stage 2 can only pass on to an ROI what a model trained on every voxel learns better
    for that ROI's voxels than the ROI's own model does. ``benchmarks/bench_afo.py
    --transfer`` measures that gap per ROI, for the planted ROIs and random ones, with
    ground-truth helpers and with a perfect teacher (helpers that learn the noiseless
    planted responses, the most dark knowledge can give). On the simulated brains at CPU
    sizes both gaps stay within a few hundredths of r, for planted and random ROIs alike:
    the Gabor pyramid already gives the adapters the features the simulated voxels read, so
    the shared layers that helpers train are not what limits an ROI model. The paper's
    clear stage-2 gain (larger for planted ROIs) is therefore not seen there; the final
    model still matches or beats one naive all-ROI model.

    Examples
    --------
    >>> from afo_encoding import TopyEncoder
    >>> afo = AllForOneEncoder(TopyEncoder(max_epochs=5), rois=labels)  # doctest: +SKIP
    >>> afo.fit(images, y).stage_scores_  # doctest: +SKIP
    """

    def __init__(
        self,
        estimator: TopyEncoder | None = None,
        rois: Any = "veroi",
        n_rois: Any = 4,
        recipe: str = "afo",
        helpers: str = "dark_knowledge",
        dark_knowledge: str = "out_of_fold",
        n_folds: int = 3,
        soft_weight: float = 0.25,
        n_stage2_rounds: int = 1,
        freeze_readout: bool = False,
        keep_stage_estimators: bool = False,
        n_jobs: int | None = None,
        memory: Any = None,
        checkpoint_dir: str | Path | None = None,
        random_state: Any = None,
        verbose: Any = 0,
    ):
        self.estimator = estimator
        self.rois = rois
        self.n_rois = n_rois
        self.recipe = recipe
        self.helpers = helpers
        self.dark_knowledge = dark_knowledge
        self.n_folds = n_folds
        self.soft_weight = soft_weight
        self.n_stage2_rounds = n_stage2_rounds
        self.freeze_readout = freeze_readout
        self.keep_stage_estimators = keep_stage_estimators
        self.n_jobs = n_jobs
        self.memory = memory
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------ checks

    def _check_params(self) -> TopyEncoder:
        choices = {
            "recipe": ("afo", "naive"),
            "helpers": ("dark_knowledge", "ground_truth"),
            "dark_knowledge": ("out_of_fold", "in_sample"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        for name, low in (("n_folds", 2), ("n_stage2_rounds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not isinstance(self.soft_weight, numbers.Real) or not self.soft_weight > 0:
            raise ValueError(f"soft_weight must be a positive number, got {self.soft_weight!r}.")
        if not isinstance(self.freeze_readout, (bool, np.bool_)):
            raise ValueError(f"freeze_readout must be True or False, got {self.freeze_readout!r}.")
        if self.estimator is None:
            return TopyEncoder(head_solver="sgd")
        if not isinstance(self.estimator, TopyEncoder):
            raise TypeError(
                f"estimator must be a TopyEncoder (or None), got {type(self.estimator).__name__}."
            )
        return clone(self.estimator)

    # ------------------------------------------------------------------------ inputs

    def _features(self, base: TopyEncoder, Xs: list, memory: Any) -> tuple[list, list, bool]:
        """Inputs of the stage fits, computed once: FeatureStores of the images (the
        backbone runs here only) or the 2D feature arrays; and the sample ids."""
        from ..backbones import FeatureStore, extract_features
        from .topy import _AUTOCAST

        flats = [as_flat_features(X) for X in Xs]
        if all(f is not None for f in flats):
            arrays = [np.asarray(f, dtype=np.float32) for f in flats]
            return arrays, [row_ids(a) for a in arrays], True
        if any(f is not None for f in flats):
            raise ValueError(
                "Give either images or precomputed 2D features for every subject, not a mix."
            )
        backbone = base._make_backbone()
        stores = []
        for X in Xs:
            if isinstance(X, FeatureStore):
                stores.append(X)
                continue
            stores.append(
                extract_features(
                    backbone,
                    X,
                    memory=memory,
                    device=feature_device(base.device),
                    autocast=_AUTOCAST.get(base.precision),
                    verbose=self.verbose,
                )
            )
        backbone.to("cpu")
        return stores, [s.ids for s in stores], False

    def _roi_labels(self, spaces: list, multi: bool, rng) -> tuple[list, np.ndarray] | None:
        """ROI index per kept voxel of every subject, and the ROI names (None: veROI)."""
        rois = self.rois
        if _is(rois, "veroi"):
            return None
        if _is(rois, "random"):
            sizes = self.n_rois
            if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
                if sizes < 1:
                    raise ValueError(f"n_rois must be >= 1, got {sizes!r}.")
                fractions = np.full(int(sizes), 1.0 / int(sizes))
            else:
                fractions = np.asarray(sizes, dtype=float)
                if fractions.ndim != 1 or len(fractions) < 1 or np.any(fractions <= 0):
                    raise ValueError(
                        f"For random ROIs, n_rois must be a count or a sequence of positive "
                        f"relative sizes, got {sizes!r}."
                    )
                fractions = fractions / fractions.sum()
            codes = []
            for space in spaces:
                n = space.n_voxels
                if n < len(fractions):
                    raise ValueError(f"Cannot make {len(fractions)} random ROIs of {n} voxels.")
                counts = np.maximum(1, np.round(fractions * n).astype(int))
                counts[np.argmax(counts)] += n - counts.sum()
                codes.append(rng.permutation(np.repeat(np.arange(len(counts)), counts)))
            return codes, np.arange(len(fractions))
        if isinstance(rois, str):
            raise ValueError(
                f"rois must be 'veroi', 'random', labels per voxel or an atlas, got {rois!r}."
            )
        per_subject = list(rois) if multi and isinstance(rois, (list, tuple)) else [rois]
        if len(per_subject) != len(spaces):
            raise ValueError(
                f"With {len(spaces)} subjects, rois must be a list of {len(spaces)} label "
                f"arrays, got {len(per_subject)}."
            )
        labels = []
        for s, (lab, space) in enumerate(zip(per_subject, spaces)):
            if not isinstance(lab, (np.ndarray, list, tuple)):
                lab = space.transform(lab)  # an atlas in the container of y
            arr = np.asarray(lab)
            if arr.ndim == 2 and arr.shape[0] == 1:
                arr = arr[0]
            arr = arr.reshape(-1) if arr.ndim > 1 and arr.size == space.n_raw_voxels else arr
            if arr.ndim == 1 and arr.shape[0] == space.n_raw_voxels != space.n_voxels:
                arr = arr[space.keep]
            if arr.ndim != 1 or arr.shape[0] != space.n_voxels:
                raise ValueError(
                    f"rois of subject {s} must have one label per voxel ({space.n_voxels} "
                    f"kept, or {space.n_raw_voxels} before dropping), got shape {arr.shape}."
                )
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise ValueError(f"rois of subject {s} contain NaN: label every voxel.")
            labels.append(arr)
        names = np.unique(np.concatenate(labels))
        codes = [np.searchsorted(names, lab) for lab in labels]
        return codes, names

    # ---------------------------------------------------------------------------- fit

    def fit(self, X: Any, y: Any, *, coords: Any = None) -> AllForOneEncoder:
        """Run the recipe.

        Parameters
        ----------
        X : images, 2D features, or a list of them (one per subject)
            As for :meth:`TopyEncoder.fit`.
        y : array-like, Niimg, SurfaceImage, Epochs, or a list of them
            The responses (one per subject when several).
        coords : array-like of shape (n_voxels, d), or a list, optional
            Voxel coordinates (as for :meth:`TopyEncoder.fit`).

        Returns
        -------
        self : AllForOneEncoder
            Fitted.
        """
        with use_log_level(self.verbose):
            return self._fit(X, y, coords)

    def _fit(self, X: Any, y: Any, coords: Any) -> AllForOneEncoder:
        from joblib import effective_n_jobs

        from ..responses import as_responses, check_n_samples

        base = self._check_params()
        if y is None:
            raise ValueError("AllForOneEncoder requires y to be passed, but the target y is None.")
        multi = is_multi_subject(X, y)
        Xs, ys = (list(X), list(y)) if multi else ([X], [y])
        n_sub = len(Xs)
        coords_in = list(coords) if multi and coords is not None else [coords] * n_sub
        masks = (
            base.mask if multi and isinstance(base.mask, (list, tuple)) else [base.mask] * n_sub
        )
        Ys, spaces = [], []
        for s in range(n_sub):
            Y, space = as_responses(ys[s], mask=masks[s], coords=coords_in[s])
            Ys.append(Y)
            spaces.append(space)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max)) if self.random_state is not None else None

        tmp_memory = None
        memory = self.memory
        if memory is None and effective_n_jobs(self.n_jobs) != 1:
            # workers read the features from disk (a disk-backed store pickles as its path)
            tmp_memory = memory = new_temporary_folder("afo_features_")
        try:
            inputs, ids, flat = self._features(base, Xs, memory)
            for s in range(n_sub):
                check_n_samples(len(ids[s]), Ys[s])
            params = {
                k: v for k, v in base.get_params(deep=False).items() if k not in _OWNED_PARAMS
            }
            params["mask"] = None  # the voxels were selected above
            params["verbose"] = 0
            # the stage fits read the feature stores computed above; the temporary folder
            # of a parallel run is deleted after the fit, so no model may keep its path
            params["memory"] = self.memory
            run = _Run(self, params, inputs, Ys, [sp.coords for sp in spaces], multi, seed, ids)
            self._run_recipe(run, spaces, multi, rng)
        finally:
            if tmp_memory is not None:
                shutil.rmtree(tmp_memory, ignore_errors=True)
        final = self.final_estimator_
        final.space_ = spaces if multi else spaces[0]
        for name in _FINAL_ATTRIBUTES:
            setattr(self, name, getattr(final, name))
        if flat:
            self.n_features_in_ = final.n_features_in_
        return self

    def _run_recipe(self, run: _Run, spaces: list, multi: bool, rng) -> None:
        import pandas as pd

        n_sub = len(spaces)
        all_rows = [np.arange(len(Y)) for Y in run.Ys]
        scores: dict[str, list] = {}
        self.stage_estimators_ = {}
        self.stage_seconds_ = {}
        naive = None
        if self.recipe == "naive" or _is(self.rois, "veroi") or self.freeze_readout:
            spec = _FitSpec("naive", "naive", None, None, all_rows, [None] * n_sub)
            (naive,) = run.stage("naive", [spec])
            scores["naive"] = naive.scores
            self.stage_estimators_["naive"] = [[naive.encoder]]
        if self.recipe == "naive":
            self.final_estimator_ = naive.encoder
            self.rois_, self.roi_labels_ = np.array([], dtype=object), None
            self._set_scores(scores, None, pd)
            return

        resolved = self._roi_labels(spaces, multi, rng)
        if resolved is None:
            from ..parcellation import veroi

            labels, self.veroi_linkage_ = veroi(
                naive.encoder, n_rois=self.n_rois, random_state=run.seed
            )
            codes = labels if multi else [labels]
            names = np.arange(int(max(c.max() for c in codes)) + 1)
        else:
            codes, names = resolved
        n_rois = len(names)
        empty = [k for k in range(n_rois) if not any(np.any(c == k) for c in codes)]
        if empty:
            empty = np.asarray(names)[empty].tolist()
            raise ValueError(
                f"ROI(s) {empty} have no voxel in any subject, so no model can be fitted or "
                "scored for them: give labels that name only ROIs with voxels."
            )
        if self.freeze_readout:
            # the per-subject weights and coordinates only: what every stage fit copies
            run.frozen_readout = _readout_source(naive.encoder)
        self.rois_ = names
        self.roi_labels_ = codes if multi else codes[0]
        folds = self._folds(run.ids, rng)

        def roi_specs(stage: str, helpers_from_teacher: bool, ground_truth_helpers: bool):
            specs = []
            for k in range(n_rois):
                in_roi = [(c == k).astype(np.float32) for c in codes]
                for f, (train, predict) in enumerate(folds):
                    # a subject without the ROI needs no teacher rows from its models
                    predict = [p if m.any() else None for p, m in zip(predict, in_roi)]
                    if ground_truth_helpers:
                        loss_weight, soft_weight = [np.ones_like(m) for m in in_roi], None
                    else:
                        loss_weight = in_roi
                        soft_weight = (
                            [self.soft_weight * (1.0 - m) for m in in_roi]
                            if helpers_from_teacher
                            else None
                        )
                    specs.append(
                        _FitSpec(
                            f"{stage}_roi{k}_fold{f}",
                            stage,
                            k,
                            f,
                            train,
                            predict,
                            loss_weight=loss_weight,
                            soft_weight=soft_weight,
                            monitor=[m.astype(bool) for m in in_roi],
                            use_soft_targets=helpers_from_teacher,
                            keep_model=self.keep_stage_estimators,
                        )
                    )
            return specs

        outputs = run.stage("stage1", roi_specs("stage1", False, False))
        teacher, scores["stage1"] = self._assemble(outputs, codes, folds, n_rois, run.Ys)
        self._keep("stage1", outputs, n_rois)
        for r in range(self.n_stage2_rounds):
            stage = "stage2" if r == 0 else f"stage2+{r}"
            outputs = run.stage(
                stage,
                roi_specs(stage, self.helpers == "dark_knowledge", self.helpers == "ground_truth"),
                teacher,
            )
            teacher, scores[stage] = self._assemble(outputs, codes, folds, n_rois, run.Ys)
            self._keep(stage, outputs, n_rois)
        spec = _FitSpec(
            "stage3",
            "stage3",
            None,
            None,
            all_rows,
            [None] * n_sub,
            soft_weight=[np.full(len(c), self.soft_weight, np.float32) for c in codes],
            use_soft_targets=True,
        )
        (final,) = run.stage("stage3", [spec], teacher)
        scores["stage3"] = final.scores
        self.stage_estimators_["stage3"] = [[final.encoder]]
        self.final_estimator_ = final.encoder
        self._set_scores(scores, codes, pd)

    def _folds(self, ids: list, rng) -> list[tuple[list, list]]:
        """Per fold: training and predicted sample indices of every subject (repeats of an
        image stay in one fold); one in-sample "fold" for ``dark_knowledge="in_sample"``."""
        if self.dark_knowledge == "in_sample":
            rows = [np.arange(len(i)) for i in ids]
            return [(rows, rows)]
        folds = [([], []) for _ in range(self.n_folds)]
        for subject_ids in ids:
            uniques, inverse = np.unique(np.asarray(subject_ids), return_inverse=True)
            if len(uniques) < 3 * self.n_folds:
                raise ValueError(
                    f"Out-of-fold dark knowledge with n_folds={self.n_folds} needs at least "
                    f"{3 * self.n_folds} distinct images, got {len(uniques)}."
                )
            fold_of_image = rng.permutation(len(uniques)) % self.n_folds
            fold_of_sample = fold_of_image[inverse]
            for f in range(self.n_folds):
                folds[f][0].append(np.flatnonzero(fold_of_sample != f))
                folds[f][1].append(np.flatnonzero(fold_of_sample == f))
        return folds

    @staticmethod
    def _assemble(outputs, codes, folds, n_rois, Ys) -> tuple[list, list]:
        """The teacher matrix (every voxel predicted by its own ROI's models, each sample by
        the fold model that did not train on it) and the per-voxel scores of a stage."""
        n_sub = len(codes)
        teacher = [np.full(Y.shape, np.nan, dtype=np.float32) for Y in Ys]
        scores = [np.zeros(len(c)) for c in codes]
        n_folds = len(folds)
        for out, spec_k, spec_f in _indexed(outputs, n_rois, n_folds):
            for s in range(n_sub):
                cols = codes[s] == spec_k
                if not cols.any():  # the subject lacks this ROI: nothing to take
                    continue
                rows = folds[spec_f][1][s]
                teacher[s][np.ix_(rows, np.flatnonzero(cols))] = out.teacher[s][:, cols]
                fit_scores = np.asarray(out.scores[s])
                # validation scores cover the monitored voxels (the ROI's), in voxel order
                if len(fit_scores) == len(cols):
                    fit_scores = fit_scores[cols]
                scores[s][cols] += fit_scores / n_folds
        for s, t in enumerate(teacher):
            if not np.all(np.isfinite(t)):
                raise RuntimeError(
                    f"The teacher predictions of subject {s} are incomplete or not finite: "
                    "a stage model diverged or a fold predicted nothing."
                )
        return teacher, scores

    def _keep(self, stage: str, outputs: list, n_rois: int) -> None:
        if self.keep_stage_estimators:
            n_folds = len(outputs) // n_rois
            self.stage_estimators_[stage] = [
                [outputs[k * n_folds + f].encoder for f in range(n_folds)] for k in range(n_rois)
            ]

    def _set_scores(self, scores: dict, codes: list | None, pd) -> None:
        multi = isinstance(self.roi_labels_, list) or (
            codes is None and isinstance(self.final_estimator_.validation_scores_, list)
        )
        table = {}
        for stage, per_subject in scores.items():
            flat = np.concatenate([np.asarray(v) for v in per_subject])
            row = {}
            if codes is not None:
                all_codes = np.concatenate(codes)
                for k, name in enumerate(self.rois_):
                    row[name] = float(np.mean(flat[all_codes == k]))
            row["all"] = float(np.mean(flat))
            table[stage] = row
        self.stage_scores_ = pd.DataFrame.from_dict(table, orient="index")
        self.stage_scores_.index.name = "stage"
        self.stage_voxel_scores_ = {
            stage: [np.asarray(v) for v in per] if multi else np.asarray(per[0])
            for stage, per in scores.items()
        }

    # ------------------------------------------------------------------------ predict

    def predict(self, X: Any, subject: int = 0) -> np.ndarray:
        """Predict with the final all-ROI model (see :meth:`TopyEncoder.predict`)."""
        check_is_fitted(self, "final_estimator_")
        return self.final_estimator_.predict(X, subject=subject)

    def score(self, X: Any, y: Any, subject: int = 0) -> float:
        """Mean voxel Pearson r of the final model (see :meth:`TopyEncoder.score`)."""
        check_is_fitted(self, "final_estimator_")
        return self.final_estimator_.score(X, y, subject=subject)

    def inverse_transform(self, Y: Any, subject: int = 0) -> Any:
        """Per-voxel values back in the container ``y`` came in (see
        :meth:`TopyEncoder.inverse_transform`)."""
        check_is_fitted(self, "final_estimator_")
        return self.final_estimator_.inverse_transform(Y, subject=subject)

    # -------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> Path:
        """Save the fitted encoder (the final model, the ROIs and the stage scores) to one
        safetensors file; see :func:`afo_encoding.io.save`."""
        from ..io import save

        return save(self, path)

    def _save_state(self) -> tuple[dict, dict]:
        from ..io import params_to_json

        check_is_fitted(self, "final_estimator_")
        tensors, final_meta = self.final_estimator_._save_state()
        labels = self.roi_labels_
        per = labels if isinstance(labels, list) else ([] if labels is None else [labels])
        for s, lab in enumerate(per):
            tensors[f"afo.roi_labels.{s}"] = np.asarray(lab, dtype=np.int64)
        voxel_scores = {}
        for stage, values in self.stage_voxel_scores_.items():
            vals = values if isinstance(values, list) else [values]
            for s, v in enumerate(vals):
                tensors[f"afo.voxel_scores.{stage}.{s}"] = np.asarray(v, dtype=np.float64)
            voxel_scores[stage] = len(vals)
        params = params_to_json(self, drop=("estimator", "rois"))
        rois = self.rois if isinstance(self.rois, str) else None
        params["rois"] = rois
        meta = {
            "params": params,
            "estimator_params": params_to_json(self.final_estimator_, drop=("mask",)),
            "final": final_meta,
            "afo": {
                "rois": [v.item() if hasattr(v, "item") else v for v in self.rois_],
                "n_label_subjects": len(per),
                "listed_labels": isinstance(labels, list),
                "stage_scores": json.loads(self.stage_scores_.to_json(orient="split")),
                "voxel_scores": voxel_scores,
                "listed_scores": any(
                    isinstance(v, list) for v in self.stage_voxel_scores_.values()
                ),
                "stage_seconds": self.stage_seconds_,
                "n_features_in": getattr(self, "n_features_in_", None),
            },
        }
        return tensors, meta

    @classmethod
    def _from_saved_state(cls, tensors: dict, meta: dict) -> AllForOneEncoder:
        import pandas as pd

        final = TopyEncoder._from_saved_state(tensors, meta["final"])
        estimator_params = {
            k: v for k, v in meta["estimator_params"].items() if k not in _OWNED_PARAMS
        }
        estimator_params.setdefault("head_solver", "sgd")  # files from before the ridge recipe
        est = cls(**{**meta["params"], "estimator": TopyEncoder(**estimator_params)})
        afo = meta["afo"]
        est.final_estimator_ = final
        est.rois_ = np.asarray(afo["rois"])
        labels = [tensors[f"afo.roi_labels.{s}"].numpy() for s in range(afo["n_label_subjects"])]
        est.roi_labels_ = labels if afo["listed_labels"] else (labels[0] if labels else None)
        split = afo["stage_scores"]
        est.stage_scores_ = pd.DataFrame(
            split["data"], index=split["index"], columns=split["columns"]
        )
        est.stage_scores_.index.name = "stage"
        est.stage_voxel_scores_ = {}
        for stage, n in afo["voxel_scores"].items():
            vals = [tensors[f"afo.voxel_scores.{stage}.{s}"].numpy() for s in range(n)]
            est.stage_voxel_scores_[stage] = vals if afo["listed_scores"] else vals[0]
        est.stage_estimators_ = {}
        est.stage_seconds_ = afo["stage_seconds"]
        for name in _FINAL_ATTRIBUTES:
            setattr(est, name, getattr(final, name))
        if afo["n_features_in"] is not None:
            est.n_features_in_ = afo["n_features_in"]
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.regressor_tags.poor_score = True
        return tags


def _is(value: Any, name: str) -> bool:
    return isinstance(value, str) and value == name


def _label_arrays(rois: Any) -> list:
    """Label arrays given as ``rois`` (for the run's key); an atlas image enters by name."""
    if isinstance(rois, np.ndarray):
        return [rois]
    if isinstance(rois, (list, tuple)):
        if rois and np.ndim(rois[0]) >= 1:
            return [np.asarray(r) for r in rois]
        return [np.asarray(rois)]
    return [] if isinstance(rois, str) else [repr(rois)]


def _indexed(outputs: list, n_rois: int, n_folds: int):
    """``(output, roi, fold)`` of the fits of an ROI stage (specs are ROI-major)."""
    for i, out in enumerate(outputs):
        yield out, i // n_folds, i % n_folds


class _Run:
    """Runs the fits of a stage (in parallel through joblib, resuming from checkpoints)."""

    def __init__(self, afo, params, inputs, Ys, coords, multi, seed, ids):
        self.afo = afo
        self.params = params
        self.inputs = inputs
        self.Ys = Ys
        self.coords = coords
        self.multi = multi
        self.ids = ids
        self.frozen_readout = None  # set once the first all-ROI model is fitted
        self.out_dir = None
        if afo.checkpoint_dir is not None:
            key = _digest(
                {k: v for k, v in afo.get_params(deep=False).items() if k not in _RUN_NEUTRAL},
                {k: v for k, v in params.items() if k != "memory"},
                [list(i) for i in ids],
                *Ys,
                *coords,
                *_label_arrays(afo.rois),
            )
            self.out_dir = Path(afo.checkpoint_dir) / f"afo-{key}"
            self.out_dir.mkdir(parents=True, exist_ok=True)
            manifest = self.out_dir / "run.json"
            if manifest.exists():
                seed = json.loads(manifest.read_text())["seed"]
            else:
                manifest.write_text(json.dumps({"seed": seed}))
        self.seed = seed

    def stage(self, stage: str, specs: list[_FitSpec], teacher: list | None = None) -> list:
        """Fit the models of one stage; returns their outputs in the order of ``specs``."""
        from joblib import Parallel, delayed
        from joblib.parallel import ThreadingBackend, get_active_backend

        afo = self.afo
        backend, n_jobs = get_active_backend()
        if isinstance(backend, ThreadingBackend) and (afo.n_jobs or n_jobs) != 1:
            warnings.warn(
                "Stage fits in threads share torch's random number generator, so they are not "
                "reproducible; use a process-based joblib backend (loky, the default, dask or "
                "ray) for repeatable fits.",
                UserWarning,
                stacklevel=4,
            )
        logger.info("All-for-One %s: %d fit(s).", stage, len(specs))
        start = time.perf_counter()
        jobs = (
            delayed(_run_fit)(
                spec,
                self.params,
                self.inputs,
                self.Ys,
                self.coords,
                teacher,
                self.multi,
                self.seed,
                None if self.out_dir is None else str(self.out_dir),
                self.frozen_readout,
            )
            for spec in specs
        )
        results = Parallel(n_jobs=afo.n_jobs, return_as="generator", **parallel_options(backend))(
            jobs
        )
        outputs = list(progress(results, afo.verbose, desc=stage, total=len(specs), unit="fit"))
        seconds = time.perf_counter() - start
        afo.stage_seconds_[stage] = seconds
        resumed = sum(o.resumed for o in outputs)
        logger.info(
            "All-for-One %s done in %.1f s%s.",
            stage,
            seconds,
            f" ({resumed} fit(s) loaded from the checkpoint folder)" if resumed else "",
        )
        return outputs


#: parameters that do not change what the recipe computes (left out of the run's key)
_RUN_NEUTRAL = (
    "n_jobs",
    "verbose",
    "checkpoint_dir",
    "memory",
    "keep_stage_estimators",
    "estimator",
)
