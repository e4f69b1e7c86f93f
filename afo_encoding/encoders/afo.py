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

import contextlib
import json
import numbers
import shutil
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .._devices import backbone_autocast
from .._logging import use_log_level
from .._workers import new_temporary_folder
from ._base import BaseEncoder, backbone_features, flat_inputs, make_backbone
from ._docs import fill_encoder_doc
from ._inputs import is_multi_subject, numbers_not_in_an_array, row_ids
from ._validation import (
    FOLDER,
    MEMORY,
    Anything,
    ArrayLike,
    Boolean,
    Interval,
    RandomState,
    StrOptions,
    Verbosity,
)
from .afo_stages import FitSpec, StageRunner, indexed, recipe_folder
from .frozen_readout import readout_source
from .topy import TopyEncoder

__all__ = ["AllForOneEncoder", "random_rois_like"]

#: TopyEncoder parameters that the meta-estimator sets itself for every stage fit
_OWNED_PARAMS = ("random_state", "verbose", "checkpoint_dir", "memory")


def _final_attribute(name: str) -> property:
    """An attribute of the final model, read through ``final_estimator_``."""
    return property(
        lambda self: getattr(self.final_estimator_, name),
        doc=f"``final_estimator_.{name}`` (see :class:`TopyEncoder`).",
    )


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


@fill_encoder_doc
class AllForOneEncoder(BaseEncoder):
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
        and stage 3); the paper does not give one. With the smooth-L1 loss (nearly L1) a
        noiseless teacher pulls on a voxel as hard as its noisy ground truth: lower it when
        the teachers are much better than the data's noise lets the ground truth be, so the
        helpers do not dominate the shared layers (the user guide has the measurements).
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
        (``memory``, or a temporary folder when none is given). With several GPUs,
        fits run side by side take one each, round robin over the stage estimator's
        ``devices`` (all GPUs by default); a Dask or Ray cluster places its workers itself.
    %(memory)s
    checkpoint_dir : str, Path or None, default=None
        Every finished stage fit is saved there (``afo_encoding.save`` + its teacher
        predictions), and every fit checkpoints its epochs; refitting the same data with
        the same parameters after an interruption loads what was finished and resumes the
        rest (a crash in stage 2 does not redo stage 1).
    random_state : int, RandomState or None, default=None
        Seeds the folds, the random ROIs, veROI's k-means and every stage fit (all stage
        fits share one seed, so stages are compared on the same validation images).
    verbose : bool, int, str or None, default=None
        Stage messages and a progress bar over the fits of a stage (INFO or lower);
        ``None`` follows :func:`afo_encoding.set_log_level`, as in MNE.

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
    for that ROI's voxels than the ROI's own model does; ``benchmarks/bench_afo.py
    --transfer`` measures that gap per ROI; ``--table3`` runs the paper's Table 3 over
    seeds, with the simulator's own feature model or through a pretrained network that is
    not it (``--backbone efficientnet-lite0``). Neither regime reproduced the paper's
    stage-2 gain at a CPU's sizes (500-800 training images, 25-60 epochs): stage 2 within
    .01 of stage 1, the final model within .005 of NaiveMix; the user guide has the tables
    and what does reproduce. Check on your data before paying for a dozen fits.

    Examples
    --------
    >>> from afo_encoding import TopyEncoder
    >>> afo = AllForOneEncoder(TopyEncoder(max_epochs=5), rois=labels)  # doctest: +SKIP
    >>> afo.fit(images, y).stage_scores_  # doctest: +SKIP
    """

    _parameter_constraints = {
        "estimator": [TopyEncoder, None],
        "rois": [Anything()],
        "n_rois": [Interval(Integral, 1, None, closed="left"), ArrayLike()],
        "recipe": [StrOptions({"afo", "naive"})],
        "helpers": [StrOptions({"dark_knowledge", "ground_truth"})],
        "dark_knowledge": [StrOptions({"out_of_fold", "in_sample"})],
        "n_folds": [Interval(Integral, 2, None, closed="left")],
        "soft_weight": [Interval(Real, 0, None, closed="neither")],
        "n_stage2_rounds": [Interval(Integral, 1, None, closed="left")],
        "freeze_readout": [Boolean()],
        "keep_stage_estimators": [Boolean()],
        "n_jobs": [Interval(Integral, None, None, closed="neither"), None],
        "memory": MEMORY,
        "checkpoint_dir": FOLDER,
        "random_state": [RandomState()],
        "verbose": [Verbosity()],
    }
    _fitted_attribute = "final_estimator_"

    # the final model's fitted attributes, as the meta-estimator's own
    model_ = _final_attribute("model_")
    backbone_ = _final_attribute("backbone_")
    space_ = _final_attribute("space_")
    coef_ = _final_attribute("coef_")
    intercept_ = _final_attribute("intercept_")
    retina_map_ = _final_attribute("retina_map_")
    layer_weights_ = _final_attribute("layer_weights_")
    validation_scores_ = _final_attribute("validation_scores_")
    history_ = _final_attribute("history_")
    n_iter_ = _final_attribute("n_iter_")
    n_subjects_ = _final_attribute("n_subjects_")

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
        verbose: Any = None,
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

    def _stage_estimator(self) -> TopyEncoder:
        """The model of every stage fit, its parameters checked (before any feature)."""
        base = TopyEncoder(head_solver="sgd") if self.estimator is None else clone(self.estimator)
        base._validate_params()
        return base

    def _flat_inputs(self, Xs: list) -> tuple[list, list] | None:
        """2D features of every subject, checked as scikit-learn does (sparse, complex,
        NaN...; sets ``n_features_in_``), and their row ids; ``None`` for images."""
        flats = flat_inputs(Xs)
        if flats is None:
            if hasattr(self, "n_features_in_"):
                del self.n_features_in_
            return None
        arrays = [validate_data(self, f, reset=True, dtype=np.float32) for f in flats]
        return arrays, [row_ids(a) for a in arrays]

    def _image_inputs(self, base: TopyEncoder, Xs: list, memory: Any) -> tuple[list, list]:
        """FeatureStores of every subject's images (the backbone runs here only, once for
        the whole recipe) and their ids."""
        stores = backbone_features(
            make_backbone(base.backbone, base.layers, base.backbone_params),
            Xs,
            memory=memory,
            device=base.device,
            autocast=backbone_autocast(base.precision),
            verbose=self.verbose,
        )
        return stores, [st.ids for st in stores]

    def _responses(self, base: TopyEncoder, y: list, coords: Any, multi: bool):
        """Every subject's responses and response space (the stage fits share them)."""
        from ..responses import as_responses

        n_sub = len(y)
        y = [
            np.asarray(y_s, dtype=np.float64) if numbers_not_in_an_array(y_s) else y_s for y_s in y
        ]
        coords_in = list(coords) if multi and coords is not None else [coords] * n_sub
        mask = base.mask
        masks = mask if multi and isinstance(mask, (list, tuple)) else [mask] * n_sub
        pairs = [as_responses(y[s], mask=masks[s], coords=coords_in[s]) for s in range(n_sub)]
        return (
            [Y for Y, _ in pairs],
            [space for _, space in pairs],
            [getattr(y_s, "ndim", None) == 1 for y_s in y],
        )

    @contextlib.contextmanager
    def _feature_memory(self):
        """The disk cache the stage fits read features from: ``memory``, or a temporary
        folder (deleted afterwards) when parallel workers need one."""
        from joblib import effective_n_jobs

        if self.memory is not None or effective_n_jobs(self.n_jobs) == 1:
            yield self.memory
            return
        # workers read the features from disk (a disk-backed store pickles as its path)
        folder = new_temporary_folder("afo_features_")
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _runner(self, base, inputs, Ys, spaces, multi, seed, ids) -> StageRunner:
        """The runner of the stage fits, with its run folder when checkpointing."""
        params = {k: v for k, v in base.get_params(deep=False).items() if k not in _OWNED_PARAMS}
        params["mask"] = None  # the voxels were selected here
        params["verbose"] = 0
        # the stage fits read the feature stores computed here; the temporary folder of a
        # parallel run is deleted after the fit, so no model may keep its path
        params["memory"] = self.memory
        coords = [sp.coords for sp in spaces]
        out_dir, seed = recipe_folder(
            self.checkpoint_dir, self.get_params(deep=False), params, ids, Ys, coords,
            self.rois, seed,
        )  # fmt: skip
        return StageRunner(
            params, inputs, Ys, coords, multi, seed, ids, n_jobs=self.n_jobs,
            verbose=self.verbose, out_dir=out_dir,
        )  # fmt: skip

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
        from ..responses import check_n_samples

        self._validate_params()
        base = self._stage_estimator()
        self._check_y(y)
        with use_log_level(self.verbose):
            multi = is_multi_subject(X, y)
            Xs, ys = (list(X), list(y)) if multi else ([X], [y])
            flat = self._flat_inputs(Xs)
            Ys, spaces, one_d = self._responses(base, ys, coords, multi)
            rng = check_random_state(self.random_state)
            seed = None if self.random_state is None else int(rng.randint(np.iinfo(np.int32).max))
            with self._feature_memory() as memory:
                inputs, ids = flat or self._image_inputs(base, Xs, memory)
                for Y, sample_ids in zip(Ys, ids):
                    check_n_samples(len(sample_ids), Y)
                runner = self._runner(base, inputs, Ys, spaces, multi, seed, ids)
                self._run_recipe(runner, spaces, multi, rng)
        final = self.final_estimator_
        # the final model was fitted on the responses as 2D arrays over the kept voxels:
        # it answers in the container and shape the user's y came in
        final.space_ = spaces if multi else spaces[0]
        final._one_d = one_d
        return self

    def _run_recipe(self, runner: StageRunner, spaces: list, multi: bool, rng) -> None:
        """The stages: the first all-ROI model if needed, then stage 1, 2 and 3."""
        import pandas as pd

        self.stage_estimators_, self.stage_seconds_ = {}, {}
        scores: dict[str, list] = {}
        naive = None
        if self.recipe == "naive" or _is(self.rois, "veroi") or self.freeze_readout:
            (naive,) = self._run_stage(runner, "naive", [self._all_roi_spec("naive", runner)])
            scores["naive"] = naive.scores
            self.stage_estimators_["naive"] = [[naive.encoder]]
        if self.recipe == "naive":
            self.final_estimator_ = naive.encoder
            self.rois_, self.roi_labels_ = np.array([], dtype=object), None
            self._set_scores(scores, None, pd)
            return
        codes = self._resolve_rois(naive, runner.seed, spaces, multi, rng)
        if self.freeze_readout:
            # the per-subject weights and coordinates only: what every stage fit copies
            runner.frozen_readout = readout_source(naive.encoder)
        folds = self._folds(runner.ids, rng)
        n_rois = len(self.rois_)
        teacher = None
        stages = [("stage1", False, False)] + [
            ("stage2" if r == 0 else f"stage2+{r}", self.helpers == "dark_knowledge",
             self.helpers == "ground_truth")
            for r in range(self.n_stage2_rounds)
        ]  # fmt: skip
        for stage, from_teacher, ground_truth_helpers in stages:
            specs = self._roi_specs(stage, codes, folds, from_teacher, ground_truth_helpers)
            outputs = self._run_stage(runner, stage, specs, teacher)
            teacher, scores[stage] = self._assemble(outputs, codes, folds, n_rois, runner.Ys)
            self._keep(stage, outputs, n_rois)
        spec = self._all_roi_spec("stage3", runner)
        spec.soft_weight = [np.full(len(c), self.soft_weight, np.float32) for c in codes]
        spec.use_soft_targets = True
        (final,) = self._run_stage(runner, "stage3", [spec], teacher)
        scores["stage3"] = final.scores
        self.stage_estimators_["stage3"] = [[final.encoder]]
        self.final_estimator_ = final.encoder
        self._set_scores(scores, codes, pd)

    def _run_stage(self, runner: StageRunner, stage: str, specs: list, teacher=None) -> list:
        outputs, self.stage_seconds_[stage] = runner.stage(stage, specs, teacher)
        return outputs

    @staticmethod
    def _all_roi_spec(stage: str, runner: StageRunner) -> FitSpec:
        """One all-ROI model on every sample (the naive model, stage 3)."""
        n_sub = len(runner.Ys)
        rows = [np.arange(len(Y)) for Y in runner.Ys]
        return FitSpec(stage, rows, [None] * n_sub)

    def _resolve_rois(self, naive, seed, spaces: list, multi: bool, rng) -> list:
        """Sets ``rois_`` and ``roi_labels_`` (veROIs of the naive model, or the given /
        random labels); returns the ROI index of every voxel, per subject."""
        resolved = self._roi_labels(spaces, multi, rng)
        if resolved is None:
            from ..parcellation import veroi

            labels, self.veroi_linkage_ = veroi(
                naive.encoder, n_rois=self.n_rois, random_state=seed
            )
            codes = labels if multi else [labels]
            names = np.arange(int(max(c.max() for c in codes)) + 1)
        else:
            codes, names = resolved
        empty = [k for k in range(len(names)) if not any(np.any(c == k) for c in codes)]
        if empty:
            empty = np.asarray(names)[empty].tolist()
            raise ValueError(
                f"ROI(s) {empty} have no voxel in any subject, so no model can be fitted or "
                "scored for them: give labels that name only ROIs with voxels."
            )
        self.rois_ = names
        self.roi_labels_ = codes if multi else codes[0]
        return codes

    def _roi_specs(
        self, stage: str, codes: list, folds: list, from_teacher: bool, ground_truth_helpers: bool
    ) -> list[FitSpec]:
        """The fits of an ROI stage, ROI-major: per ROI, one per fold."""
        specs = []
        for k in range(len(self.rois_)):
            in_roi = [(c == k).astype(np.float32) for c in codes]
            for f, (train, predict) in enumerate(folds):
                # a subject without the ROI needs no teacher rows from its models
                predict = [p if m.any() else None for p, m in zip(predict, in_roi)]
                if ground_truth_helpers:
                    loss_weight, soft_weight = [np.ones_like(m) for m in in_roi], None
                else:
                    loss_weight = in_roi
                    soft_weight = (
                        [self.soft_weight * (1.0 - m) for m in in_roi] if from_teacher else None
                    )
                specs.append(
                    FitSpec(
                        f"{stage}_roi{k}_fold{f}",
                        train,
                        predict,
                        loss_weight=loss_weight,
                        soft_weight=soft_weight,
                        monitor=[m.astype(bool) for m in in_roi],
                        use_soft_targets=from_teacher,
                        keep_model=self.keep_stage_estimators,
                    )  # fmt: skip
                )
        return specs

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
        for out, spec_k, spec_f in indexed(outputs, n_rois, n_folds):
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

    # -------------------------------------------------------------------- persistence

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
        if afo["n_features_in"] is not None:
            est.n_features_in_ = afo["n_features_in"]
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        return tags



def _is(value: Any, name: str) -> bool:
    return isinstance(value, str) and value == name
