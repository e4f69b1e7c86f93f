"""TopyEncoder: the paper's encoding model as a scikit-learn estimator."""

from __future__ import annotations

import copy
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .._devices import (
    ACCELERATORS,
    backbone_autocast,
    engine_placement,
    parameter_dtype,
)
from .._logging import logger
from ._base import BaseEncoder, backbone_features, flat_inputs
from ._docs import fill_encoder_doc
from ._inputs import (
    ids_digest,
    is_multi_subject,
    monitor_to_kept,
    numbers_not_in_an_array,
    per_subject,
    row_ids,
    to_kept_voxels,
    validation_split,
    voxel_mean_scale,
)
from ._validation import (
    FOLDER,
    MEMORY,
    Anything,
    ArrayLike,
    Boolean,
    CVObject,
    DeviceName,
    Interval,
    RandomState,
    StrOptions,
    Verbosity,
)
from .frozen_readout import readout_source
from .topy_recipes import (
    RECIPE_DEFAULTS,
    FitData,
    Seeds,
    fit_ridge,
    fit_sgd,
    resolved,
    warn_if_retina_saturated,
)
from .transfer import check_transfer, transfer_source

__all__ = ["RECIPE_DEFAULTS", "TopyEncoder"]

_POSITIVE_INT = Interval(Integral, 1, None, closed="left")
_AUTO = StrOptions({"auto"})
#: Fabric's precisions (lightning.fabric.connector._PRECISION_INPUT)
_PRECISIONS = StrOptions(
    {"32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
     "64-true", "64", "transformer-engine", "transformer-engine-float16"}
)  # fmt: skip


@fill_encoder_doc
class TopyEncoder(BaseEncoder):
    """Encoding model of the paper: frozen backbone + TopyNeck + one linear head per voxel.

    From the images a subject saw, predicts the response of every voxel (fMRI), sensor x
    time point (MEG/EEG) or neuron. The backbone is frozen and its features are computed
    once per image (cached, see ``memory``). A RetinaMapper learns where in the image each
    voxel looks (a smooth map of its coordinates), and each voxel's head reads the
    backbone's layers there.

    Two recipes (``head_solver``):

    - ``"ridge"`` (default), sized for a laptop: a short SGD fit places the RetinaMapper;
      then every voxel's head is solved in closed form, a ridge regression with its own
      alpha chosen by cross-validation, on the features of every layer sampled at its
      point, next to a global branch that is a linear probe of the whole image (every
      layer pooled to a 4 x 4 grid, 1,000 principal components, as
      :class:`~afo_encoding.encoders.LinearProbeEncoder`). The local readout is fitted to
      what the global branch leaves unexplained, then weighed by a non-negative stacking
      weight fitted to its out-of-fold predictions: where it predicts nothing the global
      branch missed, its weight is 0 and the voxel is the linear probe, so the model
      predicts at least as well as the linear probe and better wherever responses are
      retinotopic. See
      :mod:`afo_encoding.encoders.ridge_recipe` and the user guide for the measurements.
    - ``"sgd"``: the paper's recipe (section 4.6): trainable conv adapters, the
      LayerSelector, the global-pool branch and the heads all trained by SGD on a
      :mod:`Lightning Fabric <lightning.fabric>` loop, with early stopping, the top
      checkpoints and a greedy soup. With the ``"auto"`` settings below it is the paper's
      recipe exactly; it needs many thousands of steps (a GPU) to beat a linear probe.

    Parameters
    ----------
    %(backbone)s
    mask : Niimg, NiftiMasker, SurfaceImage, boolean array, list or None, default=None
        Which voxels to model, passed to :func:`afo_encoding.as_responses` (for a Niimg
        ``y``, ``None`` computes a mask as nilearn's ``NiftiMasker`` does); a list gives
        one per subject.
    head_solver : {"ridge", "sgd"}, default="ridge"
        The recipe (see above).
    readout_channels : int, default=64
        ``"ridge"``: channels of every layer the voxels read, its leading principal
        components (all of them when a layer has fewer); the cost of the heads grows with
        the square of their sum.
    alphas : array-like or None, default=None
        ``"ridge"``: the ridge strengths tried for the local readout (``None``: 21
        half-decade steps from 1e-2 to 1e8, for standardised features; the largest turns
        the readout off). The global branch tries those of the linear probe.
    cv : int or cross-validation splitter, default=5
        ``"ridge"``: folds over the distinct images (repeats stay together) that choose
        every alpha; an int is an unshuffled K-fold, as in the linear probe: pass
        ``KFold(5, shuffle=True, random_state=0)`` when the images are ordered.
    d_model : int, default=256
        ``"sgd"``: width ``D`` of the voxel feature vectors.
    adapter_width : int or None, default=None
        Channels inside the conv adapters; ``None`` keeps each backbone layer's width (the
        paper). With a wide backbone (DINOv2: 384-1536) the adapters cost more than the
        backbone itself; 64 or 128 makes training several times cheaper on a CPU.
    sigma : float or "auto", default="auto"
        RetinaMapper training noise (``"auto"``: 0.1 for ``"ridge"``, whose few hundred
        steps need the voxels to explore the image; the paper's 0.01 for ``"sgd"``).
    entropy_weight : float, default=3e-5
        Weight of the LayerSelector entropy regulariser (0: NoRegLS).
    use_global : bool, default=True
        The global branch: the linear probe's view for ``"ridge"``, the paper's
        global-pool MLP for ``"sgd"`` (False: the "w/o GlobalPool" ablation).
    freeze_retina : bool, default=False
        Every voxel reads the image centre (FrozenRM ablation).
    uniform_layers : bool, default=False
        Uniform layer weights (FrozenLS ablation).
    max_epochs : int or "auto", default="auto"
        Upper bound on epochs (an epoch is 10% of the training samples; ``"auto"``: 40 for
        ``"ridge"``, 200 for ``"sgd"``).
    batch_size : int or "auto", default="auto"
        Images per step (and per process under DDP), mixed across subjects (``"auto"``:
        64 for ``"ridge"``, whose steps only place the readout: half the images per step
        took the smallest V4 session's fit from 8.0 to 4.8 s, at equal or higher held-out
        r on every V4 session and within .004 on the demo; the paper's 128 for
        ``"sgd"``).
    learning_rate : float or "auto", default="auto"
        AdaBelief learning rate (``"auto"``: 3e-2 for ``"ridge"``, whose SGD heads are
        thrown away; the paper's 3e-3 for ``"sgd"``).
    weight_decay : float, default=1e-4
        AdaBelief decoupled weight decay.
    retina_lr_scale : float or "auto", default="auto"
        The RetinaMapper trains at ``learning_rate * retina_lr_scale`` (``"auto"``: 0.1
        for ``"ridge"``, the paper's 1 for ``"sgd"``). Its output, a point of the image, is
        ``tanh`` of a sum over 128 hidden units, and AdaBelief moves every weight by about
        the learning rate per step, so a large rate can throw the point across the image
        in a few steps; once ``tanh`` saturates the map is stuck on the border for good (a
        ``ConvergenceWarning`` says so). Lower it with larger learning rates (the user
        guide has the measurements).
    validation_fraction : float, default=0.1
        Fraction of the distinct images held out for early stopping, checkpoint choice and
        the soup (repeats of an image stay together).
    n_iter_no_change : int or "auto", default="auto"
        Early-stopping patience in epochs (``"auto"``: 10 for ``"ridge"``, 20 for
        ``"sgd"``).
    n_voxels_per_step : int or None, default=8000
        Voxels drawn per subject and step (``None``: all).
    top_k : int, default=10
        ``"sgd"``: checkpoints kept for the soup (``"ridge"`` keeps the best placement).
    soup : bool, default=True
        ``"sgd"``: greedy model soup of the top checkpoints (else the best checkpoint).
    device : str, default="auto"
        ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"``, ``"cuda:<k>"``, ``"mps"``.
    precision : str, default="32-true"
        Fabric precision: ``"bf16-mixed"`` (CPU or GPU), ``"16-mixed"`` (GPU), ...
    devices : int, str or list, default=1
        Devices per node for training (DDP when more than one).
    strategy : str, default="auto"
        Fabric strategy: ``"ddp"`` in a script launched by torchrun / SLURM, ``"ddp_spawn"``
        from Python (notebooks, tests).
    num_nodes : int, default=1
        Machines for training.
    %(memory)s
    checkpoint_dir : str, Path or None, default=None
        Where the top checkpoints and the resume state go; refitting the same data with the
        same parameters after an interruption resumes after the last finished epoch.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, the validation split, the batches and the training
        noise. With ``None`` the validation split is still fixed per data set (drawn from
        the images' ids), so an interrupted unseeded fit can resume.
    verbose : bool, int, str or None, default=None
        Progress bars (epochs, feature extraction) when 1 or more (INFO or lower); ``None`` follows
        :func:`afo_encoding.set_log_level`, as in MNE.

    Attributes
    ----------
    model_ : afo_encoding.nn.TopyNet
        The trained network (on the CPU).
    backbone_ : Backbone or None
        The frozen backbone; ``None`` when fitted on precomputed features.
    space_ : ResponseSpace or list
        Where the voxels live (see :func:`afo_encoding.as_responses`); one per subject when
        fitted on several.
    coef_ : ndarray of shape (n_voxels, n_head_features) or list
        Head weights: ``y_v = m_v @ coef_[v] + intercept_[v]`` where ``m_v`` is what voxel
        ``v``'s head reads: for ``"sgd"`` its D-vector (``d_model`` features); for
        ``"ridge"`` the readout maps of every layer sampled at its point (the channels of
        each ``model_.adapters[l]``, layers in order), then the global branch's principal
        components.
    intercept_ : ndarray of shape (n_voxels,) or list
        Head biases.
    retina_map_ : ndarray of shape (n_voxels, 2) or list
        Where each voxel reads the image, ``(x, y)`` in ``[-1, 1]`` (x right, y down;
        ``grid_sample`` convention).
    layer_weights_ : ndarray of shape (n_voxels, n_layers) or list
        At which depth each voxel reads (rows sum to 1): the LayerSelector's weights for
        ``"sgd"``; for ``"ridge"``, each layer's share of the variance of the voxel's
        local readout over the training images (uniform where the readout is off).
    validation_scores_ : ndarray of shape (n_voxels,) or list
        Pearson r of every monitored voxel on held-out images: for ``"sgd"`` on the
        validation images, for the final weights; for ``"ridge"`` of the cross-validated
        (out-of-fold) predictions of the whole readout over all the images of ``fit``.
    history_ : dict
        Per epoch: ``epoch``, ``train_loss``, ``val_score``, ``val_score_subjects``,
        ``seconds``; then ``best_epoch``, ``best_score``, ``soup_epochs``,
        ``final_score``, ``stopped_early`` (see :class:`afo_encoding.training.FitResult`).
        The training loss is in z-scored units of every voxel.
    n_iter_ : int
        Epochs run.
    n_subjects_ : int
        Number of subjects.
    n_features_in_ : int
        Number of features, only when fitted on precomputed features.

    Notes
    -----
    ``X`` is images (anything :func:`afo_encoding.stimuli.as_stimuli` takes) or
    precomputed features: a 2D numeric array ``(n_samples, n_features)`` is read as flat
    features (one layer: a 1x1 map and a global vector), which is how scikit-learn's
    estimator checks see this estimator. ``y`` is anything
    :func:`afo_encoding.as_responses` takes (array, Niimg, SurfaceImage, Epochs).

    The network trains on every voxel z-scored over the training images (as the paper's
    data were), so responses in volts, tesla or percent signal change train alike; each
    voxel's mean and scale are then folded into its head (the ridge heads are solved in
    the units of ``y``), so predictions, ``coef_`` and ``intercept_`` are in the units of
    ``y``.

    Neurons, sensors or any responses without positions (an array ``y`` without
    ``coords``) get an evenly spaced grid as coordinates, with a warning: the RetinaMapper
    then learns a map of arbitrary positions and no smoothness between neighbours holds.
    Give the receptive-field centres or the electrode positions when known; for neurons
    recorded on one array whose receptive fields overlap (as in V4 data), the global
    branch carries most of the prediction and the ridge recipe turns the local readout off
    where it does not help.

    Examples
    --------
    >>> import numpy as np
    >>> from afo_encoding import TopyEncoder
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    >>> y = rng.normal(size=(40, 5))
    >>> enc = TopyEncoder(backbone_params={"image_size": 32, "n_scales": 2}, max_epochs=2,
    ...                   device="cpu", random_state=0)
    >>> enc.fit(images, y, coords=rng.normal(size=(5, 3))).predict(images).shape
    (40, 5)
    """

    _parameter_constraints = {
        "backbone": [str, os.PathLike, torch.nn.Module],
        "layers": [None, list, tuple, np.ndarray],
        "backbone_params": [None, dict],
        "mask": [Anything()],
        "head_solver": [StrOptions(RECIPE_DEFAULTS)],
        "readout_channels": [_POSITIVE_INT],
        "alphas": [None, ArrayLike(), Interval(Real, 0, None, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left"), CVObject()],
        "d_model": [_POSITIVE_INT],
        "adapter_width": [_POSITIVE_INT, None],
        "sigma": [Interval(Real, 0, None, closed="left"), _AUTO],
        "entropy_weight": [Interval(Real, 0, None, closed="left")],
        "use_global": [Boolean()],
        "freeze_retina": [Boolean()],
        "uniform_layers": [Boolean()],
        "max_epochs": [_POSITIVE_INT, _AUTO],
        "batch_size": [_POSITIVE_INT, _AUTO],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), _AUTO],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "retina_lr_scale": [Interval(Real, 0, None, closed="neither"), _AUTO],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [_POSITIVE_INT, _AUTO],
        "n_voxels_per_step": [_POSITIVE_INT, None],
        "top_k": [_POSITIVE_INT],
        "soup": [Boolean()],
        "device": [DeviceName(ACCELERATORS)],
        "precision": [_PRECISIONS],
        "devices": [Interval(Integral, -1, None, closed="left"), str, list, tuple],
        "strategy": [Anything()],
        "num_nodes": [_POSITIVE_INT],
        "memory": MEMORY,
        "checkpoint_dir": FOLDER,
        "random_state": [RandomState()],
        "verbose": [Verbosity()],
    }
    _fitted_attribute = "model_"

    def __init__(
        self,
        backbone: Any = "pyramid",
        layers: list | None = None,
        backbone_params: dict | None = None,
        mask: Any = None,
        head_solver: str = "ridge",
        readout_channels: int = 64,
        alphas: Any = None,
        cv: int = 5,
        d_model: int = 256,
        adapter_width: int | None = None,
        sigma: Any = "auto",
        entropy_weight: float = 3e-5,
        use_global: bool = True,
        freeze_retina: bool = False,
        uniform_layers: bool = False,
        max_epochs: Any = "auto",
        batch_size: Any = "auto",
        learning_rate: Any = "auto",
        weight_decay: float = 1e-4,
        retina_lr_scale: Any = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: Any = "auto",
        n_voxels_per_step: int | None = 8000,
        top_k: int = 10,
        soup: bool = True,
        device: str = "auto",
        precision: str = "32-true",
        devices: Any = 1,
        strategy: str = "auto",
        num_nodes: int = 1,
        memory: Any = None,
        checkpoint_dir: str | Path | None = None,
        random_state: Any = None,
        verbose: Any = None,
    ):
        self.backbone = backbone
        self.layers = layers
        self.backbone_params = backbone_params
        self.mask = mask
        self.head_solver = head_solver
        self.readout_channels = readout_channels
        self.alphas = alphas
        self.cv = cv
        self.d_model = d_model
        self.adapter_width = adapter_width
        self.sigma = sigma
        self.entropy_weight = entropy_weight
        self.use_global = use_global
        self.freeze_retina = freeze_retina
        self.uniform_layers = uniform_layers
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.retina_lr_scale = retina_lr_scale
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.n_voxels_per_step = n_voxels_per_step
        self.top_k = top_k
        self.soup = soup
        self.device = device
        self.precision = precision
        self.devices = devices
        self.strategy = strategy
        self.num_nodes = num_nodes
        self.memory = memory
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------- inputs

    def _fit_features(self, Xs: list) -> tuple[list, list[str]]:
        """Feature stores of every subject and their ids; sets ``backbone_`` and
        ``n_features_in_``."""
        from ..backbones import FeatureStore

        flats = flat_inputs(Xs)
        if flats is not None:
            arrays = [validate_data(self, f, reset=True, dtype=np.float32) for f in flats]
            if len({a.shape[1] for a in arrays}) > 1:
                raise ValueError(
                    f"All subjects' features must have the same number of columns, got "
                    f"{[a.shape[1] for a in arrays]}."
                )
            self.backbone_ = None
            stores = [
                FeatureStore.from_arrays(
                    [a[:, :, None, None]], [a], ids=row_ids(a), name="features"
                )
                for a in arrays
            ]
            return stores, [s.ids for s in stores]
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_
        backbone = self._make_backbone()
        stores = self._image_features(backbone, Xs)
        self.backbone_ = backbone
        return stores, [s.ids for s in stores]

    def _image_features(self, backbone, Xs: list) -> list:
        return backbone_features(
            backbone,
            Xs,
            memory=self.memory,
            device=self.device,
            autocast=backbone_autocast(self.precision),
            verbose=self.verbose,
        )

    def _predict_features(self, X):
        from ..backbones import FeatureStore

        if isinstance(X, FeatureStore):
            return X
        if self.backbone_ is None:
            a = validate_data(self, X, reset=False, dtype=np.float32)
            return FeatureStore.from_arrays([a[:, :, None, None]], [a], name="features")
        return self._image_features(self.backbone_, [X])[0]

    def _recipe(self, name: str) -> Any:
        """A training setting, ``"auto"`` resolved by :data:`RECIPE_DEFAULTS`."""
        return resolved(self, name)

    # ---------------------------------------------------------------------------- fit

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        coords: Any = None,
        loss_weight: Any = None,
        soft_targets: Any = None,
        soft_weight: Any = None,
        monitor: Any = None,
        frozen_readout: Any = None,
        transfer_from: Any = None,
        freeze_adapters: bool = True,
        callbacks: Any = (),
    ) -> TopyEncoder:
        """Fit the model on images ``X`` and responses ``y``.

        Parameters
        ----------
        X : images, 2D features, FeatureStore, or a list of them (one per subject)
            See the class notes.
        y : array-like, Niimg, SurfaceImage, Epochs, or a list of them (one per subject)
            Responses, one row (volume, epoch) per image of ``X``.
        coords : array-like of shape (n_voxels, d), or a list, optional
            Voxel positions for array responses (containers bring their own).
        loss_weight : float or array of shape (n_voxels,), or a list, optional
            Weight of each voxel's ground-truth loss (0 masks it; All-for-One hook).
        soft_targets : array of shape (n_samples, n_voxels), or a list, optional
            Teacher predictions ("dark knowledge") for the same samples.
        soft_weight : float or array of shape (n_voxels,), or a list, optional
            Weight of each voxel's soft-target loss; required with ``soft_targets``.
        monitor : array of int or bool, or a list, optional
            Voxels whose validation score drives early stopping, checkpoint choice and the
            soup (default: all). A subject may monitor none when another one monitors
            some (its ``validation_scores_`` entry is then empty).
        frozen_readout : TopyEncoder, AllForOneEncoder or TopyNet, optional
            A model fitted on the same subjects and voxels (same coordinates) with the same
            backbone layers: its RetinaMapper and LayerSelector are copied into this model
            and frozen (they neither train nor decay; ``retina_map_`` and
            ``layer_weights_`` come out equal to its own), so only the adapters, the global
            branch and the heads train. All-for-One's ``freeze_readout`` passes its first
            all-ROI model to every stage fit this way (the paper reports twice faster
            convergence). ``d_model`` may differ: the readout does not depend on it.
        transfer_from : TopyEncoder or AllForOneEncoder, optional
            Warm start for a new subject: a model fitted (on other subjects, with the same
            backbone, layers, ``head_solver``, ``d_model`` and ``adapter_width``) whose
            shared trunk this fit starts from: for ``"sgd"`` its trained conv adapters and
            global-pool MLP; for ``"ridge"`` the projections of its readout maps (fitted
            on its own, usually many more, images), while the global branch stays this
            subject's own linear probe (the source's principal axes measured slightly
            worse: a ridge only sees the span of its features). This subject's
            RetinaMapper, LayerSelector and heads are learnt from scratch. See the user
            guide's "Transfer" section for when it beats a fit from scratch. A fit
            parameter rather than a constructor one so that ``clone`` (cross-validation,
            grid search) keeps the fitted source as it is.
        freeze_adapters : bool, default=True
            With ``transfer_from``: keep the transferred adapters (and ``"sgd"``'s global
            branch) as they are (False: ``"sgd"`` fine-tunes them with the rest). The
            ridge recipe's are fixed projections and always stay frozen.
        callbacks : sequence of callable
            Called after every epoch (see :func:`afo_encoding.training.fit_model`).

        Per-voxel arguments may cover the kept voxels or all voxels before dropping.

        Returns
        -------
        self : TopyEncoder
            Fitted.
        """
        self._validate_params()
        self._check_y(y)
        readout = None if frozen_readout is None else readout_source(frozen_readout)
        transfer = self._transfer(transfer_from, freeze_adapters)
        hooks = {
            "coords": coords,
            "loss_weight": loss_weight,
            "soft_targets": soft_targets,
            "soft_weight": soft_weight,
            "monitor": monitor,
        }
        data = self._read_inputs(X, y, hooks)
        seeds = self._seeds(data.ids)
        subjects, standardizers = self._subject_data(data, seeds)
        if transfer is not None:
            check_transfer(transfer, getattr(self.backbone_, "name", None), self.head_solver)
        if self.head_solver == "ridge":
            fitted = fit_ridge(self, data, subjects, seeds, readout, callbacks, transfer)
        else:
            fitted = fit_sgd(
                self, data, subjects, standardizers, seeds, readout, callbacks, transfer,
                freeze_adapters,
            )  # fmt: skip
        self._set_fitted(data, *fitted)
        if not self.freeze_retina:
            maps = self.retina_map_ if data.multi else [self.retina_map_]
            for s, retina_map in enumerate(maps):
                warn_if_retina_saturated(retina_map, s, self._recipe("learning_rate"))
        logger.info(
            "TopyEncoder fitted: %d epochs, validation r %.4f.",
            self.n_iter_,
            self.history_["final_score"],
        )
        return self

    # ------------------------------------------------------------------ fit steps

    def _transfer(self, transfer_from: Any, freeze_adapters: Any):
        """The trunk of a warm start (``None`` without one), after checking the options."""
        if not isinstance(freeze_adapters, (bool, np.bool_)):
            raise TypeError(
                f"freeze_adapters must be True or False, got {freeze_adapters!r}."
            )
        if transfer_from is None:
            return None
        if self.head_solver == "ridge" and not freeze_adapters:
            raise ValueError(
                "freeze_adapters=False fine-tunes the transferred adapters, but those of "
                "head_solver='ridge' are fixed projections that do not train. Use "
                "head_solver='sgd' (on a model fitted with it) or freeze_adapters=True."
            )
        return transfer_source(transfer_from)

    def _read_inputs(self, X: Any, y: Any, hooks: dict) -> FitData:
        """Features, responses and per-voxel fit keywords of every subject."""
        from ..responses import as_responses, check_n_samples

        multi = is_multi_subject(X, y)
        Xs, ys = (list(X), list(y)) if multi else ([X], [y])
        n_subjects = len(Xs)
        given = {
            name: per_subject(value, n_subjects, multi, name) for name, value in hooks.items()
        }
        masks = (
            per_subject(self.mask, n_subjects, True, "mask")
            if multi and isinstance(self.mask, (list, tuple))
            else [self.mask] * n_subjects
        )
        stores, ids = self._fit_features(Xs)
        for store in stores:
            if len(store) < 3:
                raise ValueError(
                    f"Fitting needs at least 3 samples (training + 2 for validation), got "
                    f"n_samples={len(store)}."
                )
        Ys, spaces, one_d = [], [], []
        for s, y_s in enumerate(ys):
            if numbers_not_in_an_array(y_s):
                y_s = np.asarray(y_s, dtype=np.float64)
            one_d.append(getattr(y_s, "ndim", None) == 1)
            Y, space = as_responses(y_s, mask=masks[s], coords=given["coords"][s])
            check_n_samples(len(stores[s]), Y)
            Ys.append(Y)
            spaces.append(space)
        kept = [
            {
                "loss_weight": to_kept_voxels(given["loss_weight"][s], sp, "loss_weight"),
                "soft_targets": to_kept_voxels(given["soft_targets"][s], sp, "soft_targets"),
                "soft_weight": to_kept_voxels(given["soft_weight"][s], sp, "soft_weight"),
                "monitor": monitor_to_kept(given["monitor"][s], sp),
            }
            for s, sp in enumerate(spaces)
        ]
        return FitData(multi, stores, ids, Ys, spaces, one_d, kept)

    def _seeds(self, ids: list) -> Seeds:
        """Seeds of the model, the validation splits and the training loop."""
        rng = check_random_state(self.random_state)
        seeded = self.random_state is not None
        model = int(rng.randint(np.iinfo(np.int32).max))
        splits = [
            int(rng.randint(np.iinfo(np.int32).max)) if seeded else int(ids_digest(i)[:8], 16)
            for i in ids
        ]
        fit = int(rng.randint(np.iinfo(np.int32).max)) if seeded else None
        return Seeds(model, splits, fit)

    def _subject_data(self, data: FitData, seeds: Seeds) -> tuple[list, list]:
        """The training material of every subject, and its voxels' mean and scale."""
        from ..training import SubjectData

        subjects, standardizers = [], []
        for s, (store, Y, kept) in enumerate(zip(data.stores, data.Ys, data.kept)):
            train, val = validation_split(data.ids[s], self.validation_fraction, seeds.splits[s])
            mean, scale = voxel_mean_scale(Y, train)
            standardizers.append((mean, scale))
            subjects.append(
                SubjectData(store, Y, train, val, target_mean=mean, target_scale=scale, **kept)
            )
        return subjects, standardizers

    def _set_fitted(self, data: FitData, model, history: dict, scores: list, shares) -> None:
        """The fitted attributes of a trained ``model`` and its ``history``."""
        self.model_ = model
        self.n_subjects_ = len(data.stores)
        self._listed = data.multi
        self._one_d = data.one_d
        self.history_ = history
        self.n_iter_ = len(history["epoch"])
        self._set_fitted_arrays(data.spaces, scores, shares)

    def _set_fitted_arrays(self, spaces, validation_scores, layer_shares=None) -> None:
        """Fitted attributes read from ``model_`` (per subject); ``layer_shares`` replace
        the LayerSelector's weights for a readout without one (the ridge recipe)."""
        model = self.model_
        n = self.n_subjects_
        if layer_shares is None:
            layer_shares = [model.layer_weights(s).numpy() for s in range(n)]
        per = {
            "space_": spaces,
            "coef_": [h.weight.detach().numpy() / h.weight.shape[1] for h in model.heads],
            "intercept_": [h.bias.detach().numpy().copy() for h in model.heads],
            "retina_map_": [model.retina_map(s).numpy() for s in range(n)],
            "layer_weights_": [np.asarray(w, dtype=np.float32) for w in layer_shares],
            "validation_scores_": [np.asarray(v) for v in validation_scores],
        }
        for name, values in per.items():
            setattr(self, name, values if self._listed else values[0])

    # ------------------------------------------------------------------------ predict

    def predict(self, X: Any, subject: int = 0) -> np.ndarray:
        """Predict the responses to images ``X``.

        Parameters
        ----------
        X : images, 2D features or FeatureStore
            As in :meth:`fit` (one subject's images).
        subject : int, default=0
            Which subject's voxels.

        Returns
        -------
        Y : ndarray of float32, shape (n_samples, n_voxels)
            One column per kept voxel (``inverse_transform`` gives the container back);
            1D when the encoder was fitted on a 1D ``y``. Computed in chunks of samples and
            voxels, so the working memory beyond ``Y`` stays flat with the voxel count.
        """
        from ..training import EngineConfig, predict_array

        check_is_fitted(self, "model_")
        s = self._subject(subject)
        store = self._predict_features(X)
        accelerator, devices = engine_placement(self.device)
        fabric = EngineConfig(
            accelerator=accelerator, devices=devices or 1, precision=self.precision
        ).fabric()
        dtype = parameter_dtype(self.precision)
        model = self.model_
        if fabric.device.type != "cpu" or dtype != torch.float32:
            model = copy.deepcopy(model).to(device=fabric.device, dtype=dtype)
        Y = predict_array(
            model,
            store,
            s,
            np.arange(len(store)),
            self.model_.n_voxels[s],
            batch_size=resolved(self, "batch_size"),
            device=fabric.device,
            autocast=fabric.autocast,
            dtype=dtype,
        )
        return Y[:, 0] if self._one_d[s] else Y

    # ------------------------------------------------------------------ persistence

    def _save_state(self) -> tuple[dict, dict]:
        """Tensors and JSON metadata for :func:`afo_encoding.io.save`."""
        from ..io import encoder_params_to_json, space_to_state

        check_is_fitted(self, "model_")
        tensors = {f"model.{k}": v for k, v in self.model_.state_dict().items()}
        config = dict(self.model_.config)
        for s, c in enumerate(config.pop("coords")):
            tensors[f"coords.{s}"] = c
        spaces = self.space_ if self._listed else [self.space_]
        scores = self.validation_scores_ if self._listed else [self.validation_scores_]
        layer_weights = self.layer_weights_ if self._listed else [self.layer_weights_]
        for s, weights in enumerate(layer_weights):
            tensors[f"layer_weights.{s}"] = weights
        space_meta = []
        for s, (space, score) in enumerate(zip(spaces, scores)):
            tensors[f"validation_scores.{s}"] = score
            space_tensors, values = space_to_state(space, f"space.{s}.")
            tensors.update(space_tensors)
            space_meta.append(values)
        meta = {
            "params": encoder_params_to_json(self),
            "model_config": config,
            "spaces": space_meta,
            "history": self.history_,
            "fitted": {
                "n_subjects": self.n_subjects_,
                "n_iter": self.n_iter_,
                "listed": self._listed,
                "one_d": self._one_d,
                "n_features_in": getattr(self, "n_features_in_", None),
                "has_backbone": self.backbone_ is not None,
            },
        }
        return tensors, meta

    @classmethod
    def _from_saved_state(cls, tensors: dict, meta: dict) -> TopyEncoder:
        """Rebuild a fitted encoder from what :meth:`_save_state` wrote."""
        from ..io import space_from_state
        from ..nn import TopyNet

        # files from before the ridge recipe hold the paper's SGD-trained model
        est = cls(**{"head_solver": "sgd", **meta["params"]})
        fitted = meta["fitted"]
        n = fitted["n_subjects"]
        coords = [tensors[f"coords.{s}"].numpy() for s in range(n)]
        with torch.random.fork_rng(devices=[]):
            model = TopyNet(coords=coords, **meta["model_config"])
        model.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        spaces = [space_from_state(tensors, meta["spaces"][s], f"space.{s}.") for s in range(n)]
        est.model_ = model.eval()
        est.backbone_ = est._make_backbone() if fitted["has_backbone"] else None
        if fitted["n_features_in"] is not None:
            est.n_features_in_ = fitted["n_features_in"]
        est.n_subjects_ = n
        est.n_iter_ = fitted["n_iter"]
        est.history_ = meta["history"]
        est._listed = fitted["listed"]
        est._one_d = fitted["one_d"]
        shares = None
        if all(f"layer_weights.{s}" in tensors for s in range(n)):  # (older files lack them)
            shares = [tensors[f"layer_weights.{s}"].numpy() for s in range(n)]
        est._set_fitted_arrays(
            spaces, [tensors[f"validation_scores.{s}"].numpy() for s in range(n)], shares
        )
        return est

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # the estimator checks' data sets are tiny and their fits a few epochs long
        tags.regressor_tags.poor_score = True
        return tags

