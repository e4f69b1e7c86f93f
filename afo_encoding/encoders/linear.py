"""LinearProbeEncoder: the field's baseline, frozen features + PCA + per-voxel ridge."""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .._devices import ACCELERATORS, ArrayBackend, feature_device, get_backend
from .._logging import logger, progress, use_log_level
from ._base import BaseEncoder, backbone_features
from ._docs import fill_encoder_doc
from ._inputs import as_flat_features, is_multi_subject, numbers_not_in_an_array
from ._validation import (
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
from .ridge import DEFAULT_ALPHAS, SCORINGS, ridge_cv

_POOL_BATCH = 256  # images pooled at a time


def pool_features(
    store: Any,
    pool_size: int | None = 4,
    use_global: bool = True,
    verbose: bool | int | str | None = None,
) -> np.ndarray:
    """Flat feature rows of a FeatureStore: pooled local maps and global vectors.

    Parameters
    ----------
    store : FeatureStore
        From :func:`afo_encoding.backbones.extract_features`.
    pool_size : int or None
        Every local map ``(C, h, w)`` is average-pooled (adaptively, as
        :func:`torch.nn.functional.adaptive_avg_pool2d`) to at most ``pool_size x
        pool_size`` cells and flattened, keeping a coarse retinotopy: ``C * pool_size**2``
        features per layer. ``None`` keeps the maps whole.
    use_global : bool
        Append each layer's global vector.
    verbose : bool, int, str or None
        Progress bar over batches of images.

    Returns
    -------
    features : ndarray of float32, shape (n_images, n_features)
        Layers in order, each its pooled map then (with ``use_global``) its global vector.
    """
    from ..nn.probe import pooled_features

    blocks = []
    starts = range(0, len(store), _POOL_BATCH)
    for start in progress(starts, verbose, desc="pooling", total=len(starts), unit="batch"):
        locals_, globals_ = store.batch(np.arange(start, min(start + _POOL_BATCH, len(store))))
        blocks.append(pooled_features(locals_, globals_, pool_size, use_global).numpy())
    return np.concatenate(blocks, axis=0)


def principal_axes(
    xb: ArrayBackend, F: Any, n_components: int, random_state: Any = None
) -> np.ndarray:
    """The first principal axes of centred rows ``F`` (backend array, n x p).

    Exact (an eigendecomposition of the smaller Gram matrix, in float64) when the data are
    small or most components are kept, as scikit-learn's ``PCA(svd_solver="auto")``
    decides; else randomized (Halko et al. 2011: a range finder with power iterations and
    QR re-orthonormalisation). Signs are fixed so that each axis's largest loading is
    positive.

    Returns
    -------
    components : ndarray of float32, shape (n_components, p)
    """
    n, p = F.shape
    f64 = xb.float64
    if max(n, p) <= 500 or n_components >= 0.8 * min(n, p):
        F64 = xb.astype(F, f64)
        if p <= n:
            v = xb.eigh(F64.T @ F64)[1][:, -n_components:]
        else:
            s, u = xb.eigh(F64 @ F64.T)
            s, u = s[-n_components:], u[:, -n_components:]
            v = (F64.T @ u) / s.clip(min=1e-300) ** 0.5
    else:
        rng = check_random_state(random_state)
        width = n_components + 10
        n_iter = 7 if n_components < 0.1 * min(n, p) else 4
        q = F @ xb.asarray(rng.standard_normal((p, width)), F.dtype)
        for _ in range(n_iter):
            q = F @ (F.T @ xb.qr(q))
        q = xb.qr(q)
        b = xb.astype(q.T @ F, f64)
        s, u = xb.eigh(b @ b.T)
        s, u = s[-n_components:], u[:, -n_components:]
        v = (b.T @ u) / s.clip(min=1e-300) ** 0.5
    norm = (v * v).sum(0) ** 0.5
    v = v / (norm + (norm == 0))  # an axis of no variance at all stays zero
    components = xb.to_numpy(v).T[::-1]  # largest variance first
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(1)])
    return np.ascontiguousarray(components * signs[:, None], dtype=np.float32)


@fill_encoder_doc
class LinearProbeEncoder(BaseEncoder):
    """Frozen backbone features, PCA, and ridge with its own alpha for every voxel.

    The encoding baseline of the field (Brain-Score; Conwell et al. 2022): the images go
    through a frozen backbone (features cached, see ``memory``); each layer's feature
    maps are average-pooled to a coarse grid and flattened, the layers concatenated, every
    feature standardised and reduced by PCA (fitted on the training images only); then
    every voxel gets a ridge regression whose alpha is chosen by K-fold cross-validation
    (:func:`afo_encoding.encoders.ridge.ridge_cv`: one eigendecomposition per fold, all
    alphas and voxels vectorised, numpy or torch on a CPU or GPU).

    Parameters
    ----------
    %(backbone)s
    mask : optional
        Which voxels to model, passed to :func:`afo_encoding.as_responses`.
    pool_size : int or None, default=4
        Each layer's local maps are average-pooled to ``pool_size x pool_size`` cells (a
        coarse retinotopy; ``None`` keeps them whole), see :func:`pool_features`.
    use_global : bool, default=True
        Append each layer's global vector to its pooled map.
    standardize : bool, default=True
        Scale every feature to unit variance before the PCA, so that layers and channels
        count by their information, not their units.
    n_components : int or None, default=1000
        Principal components kept (Brain-Score's 1000); at most the number of training
        images minus one and the number of features. ``None``: no PCA.
    alphas : array-like or None, default=None
        Ridge strengths to try. ``None``: ``np.logspace(-2, 10, 25)``: with standardised
        features the eigenvalues of the design's Gram matrix lie between about 1 and
        ``n_images * n_features`` (1e10 for 10,000 images and a million features), so the
        grid runs from no shrinkage to full shrinkage; the search costs almost nothing
        per alpha. A warning says when many voxels pick an edge of the grid.
    cv : int, cross-validation splitter or iterable, default=5
        Folds used to choose the alphas (scikit-learn semantics: an int is an unshuffled
        :class:`~sklearn.model_selection.KFold`; pass ``KFold(5, shuffle=True)`` when the
        images are ordered, e.g. by category).
    scoring : {"r2", "pearson", "neg_mse"}, default="r2"
        Score the alphas are chosen on (mean over folds). R^2 penalises predictions of the
        wrong scale, which Pearson r, nearly flat over large alphas, does not.
    fit_intercept : bool, default=True
        Fit an intercept per voxel.
    device : str, default="auto"
        Where the backbone and the solver run: ``"auto"`` (a GPU when there is one),
        ``"cpu"``, ``"cuda"``, ``"cuda:<k>"``.
    backend : {"auto", "numpy", "torch"}, default="auto"
        Array library of the PCA and the ridge solver (``"auto"``: torch on a GPU, numpy
        on the CPU).
    %(memory)s
    batch_size : int, default=32
        Images per backbone forward pass.
    n_targets_batch : int or None, default=None
        Voxels solved together (``None``: about 512 MiB of working memory).
    random_state : int, RandomState or None, default=None
        Seeds the randomized PCA (used when few components of many features are kept).
    verbose : bool, int, str or None, default=None
        Progress bars and log messages when 1 or more (INFO or lower); ``None`` follows
        :func:`afo_encoding.set_log_level`, as in MNE.

    Attributes
    ----------
    coef_ : ndarray of shape (n_voxels, ``n_components_``)
        Ridge weights on the principal components: ``predict = pcs @ coef_.T +
        intercept_`` with ``pcs = ((features - feature_mean_) / feature_scale_) @
        components_.T``.
    intercept_ : ndarray of shape (n_voxels,)
    alpha_ : ndarray of shape (n_voxels,)
        The alpha chosen for every voxel.
    cv_scores_ : ndarray of shape (n_voxels,)
        Cross-validated score (``scoring``) of every voxel at its alpha.
    alpha_scores_ : ndarray of shape (n_alphas, n_voxels)
        Cross-validated score of every alpha, as float32.
    alphas_ : ndarray of shape (n_alphas,)
        The grid searched.
    components_ : ndarray of shape (``n_components_``, n_flat_features) or None
        Principal axes (``None`` when no reduction was needed or asked for).
    n_components_ : int
        Number of features the ridge sees.
    feature_mean_, feature_scale_ : ndarray of shape (n_flat_features,)
        Standardisation of the flat features (scale 1 when ``standardize=False``).
    space_ : ResponseSpace
        Where the voxels live; ``inverse_transform`` maps back to it.
    backbone_ : Backbone or None
        The frozen backbone (``None`` when fitted on precomputed features).
    n_features_in_ : int
        Number of features, only when fitted on precomputed features.

    Notes
    -----
    ``X`` is images (anything :func:`afo_encoding.stimuli.as_stimuli` takes), a
    :class:`~afo_encoding.backbones.FeatureStore`, or precomputed features: a 2D numeric
    array ``(n_samples, n_features)`` is used as the flat features directly (no backbone,
    no pooling), which also serves features computed elsewhere and is how
    scikit-learn's estimator checks see this estimator. ``y`` is anything
    :func:`afo_encoding.as_responses` takes (array, Niimg, SurfaceImage, Epochs).

    The PCA is fitted on all the images given to ``fit``, including the folds that score
    the alphas (it never sees the responses); held-out images of ``predict`` and
    ``score`` are only projected.

    Examples
    --------
    >>> import numpy as np
    >>> from afo_encoding.encoders.linear import LinearProbeEncoder
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    >>> y = rng.normal(size=(40, 5))
    >>> enc = LinearProbeEncoder(backbone_params={"image_size": 32}, device="cpu")
    >>> enc.fit(images, y).predict(images).shape
    (40, 5)
    """

    _parameter_constraints = {
        "backbone": [str, os.PathLike, torch.nn.Module],
        "layers": [None, list, tuple, np.ndarray],
        "backbone_params": [None, dict],
        "mask": [Anything()],
        "pool_size": [Interval(Integral, 1, None, closed="left"), None],
        "use_global": [Boolean()],
        "standardize": [Boolean()],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "alphas": [None, ArrayLike(), Interval(Real, 0, None, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left"), CVObject()],
        "scoring": [StrOptions(SCORINGS)],
        "fit_intercept": [Boolean()],
        "device": [DeviceName(ACCELERATORS), None],
        "backend": [StrOptions({"auto", "numpy", "torch"})],
        "memory": MEMORY,
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_targets_batch": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": [RandomState()],
        "verbose": [Verbosity()],
    }

    def __init__(
        self,
        backbone: Any = "pyramid",
        layers: list | None = None,
        backbone_params: dict | None = None,
        mask: Any = None,
        pool_size: int | None = 4,
        use_global: bool = True,
        standardize: bool = True,
        n_components: int | None = 1000,
        alphas: Any = None,
        cv: Any = 5,
        scoring: str = "r2",
        fit_intercept: bool = True,
        device: str = "auto",
        backend: str = "auto",
        memory: Any = None,
        batch_size: int = 32,
        n_targets_batch: int | None = None,
        random_state: Any = None,
        verbose: Any = None,
    ):
        self.backbone = backbone
        self.layers = layers
        self.backbone_params = backbone_params
        self.mask = mask
        self.pool_size = pool_size
        self.use_global = use_global
        self.standardize = standardize
        self.n_components = n_components
        self.alphas = alphas
        self.cv = cv
        self.scoring = scoring
        self.fit_intercept = fit_intercept
        self.device = device
        self.backend = backend
        self.memory = memory
        self.batch_size = batch_size
        self.n_targets_batch = n_targets_batch
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------- inputs

    def _store_features(self, store) -> np.ndarray:
        return pool_features(store, self.pool_size, self.use_global, verbose=self.verbose)

    def _image_features(self, backbone, X) -> np.ndarray:
        (store,) = backbone_features(
            backbone,
            [X],
            memory=self.memory,
            device=self.device,
            batch_size=self.batch_size,
            verbose=self.verbose,
        )
        return self._store_features(store)

    def _fit_features(self, X) -> np.ndarray:
        flat = as_flat_features(X)
        if flat is not None:
            self.backbone_ = None
            return validate_data(self, flat, reset=True, dtype=[np.float32, np.float64])
        if hasattr(self, "n_features_in_"):
            del self.n_features_in_
        self.backbone_ = self._make_backbone()
        return self._image_features(self.backbone_, X)

    def _predict_features(self, X) -> np.ndarray:
        from ..backbones import FeatureStore

        if isinstance(X, FeatureStore):
            return self._store_features(X)
        if self.backbone_ is None:
            return validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return self._image_features(self.backbone_, X)

    def _backend(self) -> ArrayBackend:
        device = "cpu" if self.device in ("cpu", None) else feature_device(self.device)
        return get_backend(self.backend, device)

    # ---------------------------------------------------------------------------- fit

    def fit(self, X: Any, y: Any, *, coords: Any = None) -> LinearProbeEncoder:
        """Fit the PCA and the per-voxel ridge on images ``X`` and responses ``y``.

        Parameters
        ----------
        X : images, FeatureStore, or 2D features (n_samples, n_features)
            See the class notes.
        y : array-like, Niimg, SurfaceImage or Epochs
            Responses, one row (volume, epoch) per image of ``X``.
        coords : array-like of shape (n_voxels, d), optional
            Voxel positions for array responses; the linear probe does not use them,
            they are kept in ``space_`` (for plots, or to compare with TopyEncoder).

        Returns
        -------
        self : LinearProbeEncoder
            Fitted.
        """
        self._validate_params()
        self._check_y(y)
        if is_multi_subject(X, y):
            raise ValueError(
                "LinearProbeEncoder models one subject: fit one encoder per subject (the "
                "features of shared images are computed once, see `memory`)."
            )
        with use_log_level(self.verbose):
            return self._fit(X, y, coords)

    def _fit(self, X: Any, y: Any, coords: Any) -> LinearProbeEncoder:
        from ..responses import as_responses, check_n_samples

        features = self._fit_features(X)
        n_samples = features.shape[0]
        if n_samples < 4:
            raise ValueError(
                "Fitting needs at least 4 samples (2 per cross-validation fold), got "
                f"n_samples={n_samples}."
            )
        if numbers_not_in_an_array(y):
            y = np.asarray(y, dtype=np.float64)
        self._one_d = getattr(y, "ndim", None) == 1
        with warnings.catch_warnings():
            if coords is None:  # the probe does not need voxel positions
                warnings.filterwarnings("ignore", "No coords given", UserWarning)
            Y, self.space_ = as_responses(y, mask=self.mask, coords=coords)
        check_n_samples(n_samples, Y)

        xb = self._backend()
        F = xb.asarray(features, xb.float32)
        mean = xb.mean64(F)
        if self.standardize:
            scale = (xb.sum64((F - xb.astype(mean, xb.float32)) ** 2) / n_samples) ** 0.5
            scale = scale + (scale == 0)  # constant features stay as they are
        else:
            scale = xb.zeros(mean.shape, xb.float64) + 1
        self.feature_mean_ = xb.to_numpy(mean)
        self.feature_scale_ = xb.to_numpy(scale)
        F = (F - xb.astype(mean, xb.float32)) / xb.astype(scale, xb.float32)
        n_flat = F.shape[1]
        # centred data have rank n_samples - 1 at most
        k = n_flat if self.n_components is None else min(self.n_components, n_samples - 1, n_flat)
        self.components_ = None
        if k < n_flat:
            self.components_ = principal_axes(xb, F, k, self.random_state)
            F = F @ xb.asarray(self.components_.T, xb.float32)
        self.n_components_ = k
        logger.info(
            "LinearProbeEncoder: %d images, %d flat features -> %d components, %d voxels",
            n_samples,
            n_flat,
            k,
            Y.shape[1],
        )
        alphas = DEFAULT_ALPHAS if self.alphas is None else self.alphas
        result = ridge_cv(
            F,
            Y,
            alphas,
            self.cv,
            fit_intercept=self.fit_intercept,
            scoring=self.scoring,
            backend=xb.name,
            device=str(xb.device) if xb.name == "torch" else None,
            n_targets_batch=self.n_targets_batch,
            verbose=self.verbose,
        )
        self.coef_ = np.ascontiguousarray(result.coef.T)
        self.intercept_ = result.intercept
        self.alpha_ = result.alpha
        self.alphas_ = result.alphas
        self.cv_scores_ = result.cv_scores
        self.alpha_scores_ = result.alpha_scores.astype(np.float32)
        return self

    # ------------------------------------------------------------------------ predict

    def transform_features(self, X: Any) -> np.ndarray:
        """The inputs of the ridge: standardised, PCA-projected features of ``X``.

        Parameters
        ----------
        X : images, FeatureStore or 2D features
            As in :meth:`fit`.

        Returns
        -------
        pcs : ndarray of float32, shape (n_samples, ``n_components_``)
        """
        check_is_fitted(self, "coef_")
        F = np.asarray(self._predict_features(X), dtype=np.float32)
        F = (F - self.feature_mean_.astype(np.float32)) / self.feature_scale_.astype(np.float32)
        return F if self.components_ is None else F @ self.components_.T

    def predict(self, X: Any) -> np.ndarray:
        """Predict the responses to images ``X``.

        Parameters
        ----------
        X : images, FeatureStore or 2D features
            As in :meth:`fit`.

        Returns
        -------
        Y : ndarray of float32, shape (n_samples, n_voxels)
            One column per kept voxel (``inverse_transform`` gives the container back);
            1D when the encoder was fitted on a 1D ``y``.
        """
        pcs = self.transform_features(X)
        Y = pcs @ self.coef_.T + self.intercept_
        return Y[:, 0] if self._one_d else Y

    def _predict_subject(self, X: Any, subject: int) -> np.ndarray:
        return self.predict(X)  # one subject

    # ------------------------------------------------------------------ persistence

    _ARRAYS = (
        "coef_", "intercept_", "alpha_", "alphas_", "cv_scores_", "alpha_scores_",
        "feature_mean_", "feature_scale_",
    )  # fmt: skip

    def _save_state(self) -> tuple[dict, dict]:
        """Tensors and JSON metadata for :func:`afo_encoding.io.save`."""
        from ..io import encoder_params_to_json, space_to_state

        check_is_fitted(self, "coef_")
        tensors = {name: getattr(self, name) for name in self._ARRAYS}
        if self.components_ is not None:
            tensors["components_"] = self.components_
        space_tensors, space = space_to_state(self.space_, "space.")
        tensors.update(space_tensors)
        meta = {
            "params": encoder_params_to_json(self),
            "space": space,
            "fitted": {
                "n_components": self.n_components_,
                "one_d": self._one_d,
                "n_features_in": getattr(self, "n_features_in_", None),
                "has_backbone": self.backbone_ is not None,
            },
        }
        return tensors, meta

    @classmethod
    def _from_saved_state(cls, tensors: dict, meta: dict) -> LinearProbeEncoder:
        """Rebuild a fitted encoder from what :meth:`_save_state` wrote."""
        from ..io import space_from_state

        est = cls(**meta["params"])
        for name in cls._ARRAYS:
            setattr(est, name, tensors[name].numpy())
        est.components_ = tensors["components_"].numpy() if "components_" in tensors else None
        est.space_ = space_from_state(tensors, meta["space"], "space.")
        fitted = meta["fitted"]
        est.n_components_ = fitted["n_components"]
        est._one_d = fitted["one_d"]
        if fitted["n_features_in"] is not None:
            est.n_features_in_ = fitted["n_features_in"]
        est.backbone_ = est._make_backbone() if fitted["has_backbone"] else None
        return est
