"""What the encoders share: declared parameters, backbone and features, scoring, saving.

:class:`BaseEncoder` is the base of :class:`~afo_encoding.encoders.TopyEncoder`,
:class:`~afo_encoding.encoders.LinearProbeEncoder` and
:class:`~afo_encoding.encoders.AllForOneEncoder`. Every one of them

- declares what its parameters may be (``_parameter_constraints``, see
  :mod:`afo_encoding.encoders._validation`) and checks them first in ``fit``, before any
  feature is computed;
- reads images through a frozen backbone (:func:`make_backbone`,
  :func:`backbone_features`) or takes precomputed 2D features (:func:`flat_inputs`);
- scores with the mean voxel Pearson r and gives per-voxel values back in the container
  ``y`` came in (:meth:`BaseEncoder.score`, :meth:`BaseEncoder.inverse_transform`);
- saves itself through :mod:`afo_encoding.io` by two hooks, ``_save_state`` and
  ``_from_saved_state``, which :func:`saved_state` and :func:`from_saved_state` call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .._subjects import check_subject
from ._inputs import as_flat_features, numbers_not_in_an_array
from ._validation import validate_params


def make_backbone(backbone: Any, layers: Any = None, backbone_params: dict | None = None):
    """The frozen backbone an encoder's ``backbone``, ``layers`` and ``backbone_params``
    name (see :func:`afo_encoding.backbones.get_backbone`)."""
    from ..backbones import get_backbone

    kwargs = dict(backbone_params or {})
    if layers is not None:
        kwargs["layers"] = layers
    return get_backbone(backbone, **kwargs)


def flat_inputs(Xs: list) -> list | None:
    """Every subject's ``X`` as 2D features, or ``None`` when they are images.

    Raises
    ------
    ValueError
        Some subjects give features and others images.
    """
    flats = [as_flat_features(X) for X in Xs]
    if all(f is None for f in flats):
        return None
    if any(f is None for f in flats):
        raise ValueError(
            "Give either images or precomputed 2D features for every subject, not a mix of "
            "both."
        )
    return flats


def backbone_features(
    backbone: Any,
    Xs: list,
    *,
    memory: Any = None,
    device: Any = "auto",
    autocast: str | None = None,
    batch_size: int = 32,
    verbose: Any = 0,
) -> list:
    """The FeatureStore of every subject's images (FeatureStores pass through as they are).

    The backbone runs on ``device`` (see :func:`afo_encoding._devices.feature_device`) and
    goes back to the CPU afterwards.
    """
    from .._devices import feature_device
    from ..backbones import FeatureStore, extract_features

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
                batch_size=batch_size,
                device=feature_device(device),
                autocast=autocast,
                verbose=verbose,
            )
        )
        backbone.to("cpu")
    return stores


def saved_state(estimator: Any) -> tuple[dict, dict]:
    """Tensors and JSON metadata of a fitted encoder, for :func:`afo_encoding.io.save`."""
    if not isinstance(estimator, BaseEncoder):
        raise TypeError(f"{type(estimator).__name__} cannot be saved by afo_encoding.save.")
    return estimator._save_state()


def from_saved_state(cls: type, tensors: dict, meta: dict) -> BaseEncoder:
    """The fitted encoder of class ``cls`` that :func:`saved_state` described."""
    if not (isinstance(cls, type) and issubclass(cls, BaseEncoder)):
        raise TypeError(f"{cls!r} is not an afo-encoding encoder: it cannot be loaded.")
    return cls._from_saved_state(tensors, meta)


class BaseEncoder(RegressorMixin, BaseEstimator):
    """The base of the encoders (see the module notes).

    Subclasses set ``_parameter_constraints`` (parameter -> allowed values) and
    ``_fitted_attribute`` (what ``check_is_fitted`` looks for), call
    :meth:`_validate_params` first in ``fit``, and define ``_save_state`` and
    ``_from_saved_state`` to be saved.
    """

    _parameter_constraints: dict = {}
    _fitted_attribute = "coef_"

    # ------------------------------------------------------------------ parameters

    def _validate_params(self) -> None:
        """Check every parameter against ``_parameter_constraints`` (an
        :class:`~afo_encoding.encoders._validation.InvalidParameterError` names the first
        wrong one)."""
        validate_params(self, self._parameter_constraints)

    def _check_y(self, y: Any) -> None:
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )

    def _make_backbone(self):
        return make_backbone(self.backbone, self.layers, self.backbone_params)

    # ------------------------------------------------------------------ subjects

    def _n_subjects(self) -> int:
        return getattr(self, "n_subjects_", 1)

    def _subject(self, subject: Any) -> int:
        return check_subject(subject, self._n_subjects(), "this encoder")

    def _space(self, subject: int):
        space = self.space_
        return space[subject] if isinstance(space, list) else space

    def _predict_subject(self, X: Any, subject: int) -> np.ndarray:
        """``predict`` for one subject (single-subject encoders override it)."""
        return self.predict(X, subject=subject)

    # ------------------------------------------------------------------ scoring

    def score(self, X: Any, y: Any, subject: int = 0) -> float:
        """Mean voxel Pearson r between the predictions for ``X`` and ``y``.

        Parameters
        ----------
        X : images, 2D features or FeatureStore
            Test inputs.
        y : array-like or the container ``y`` came in at fit time
            Measured responses; containers are read with ``space_.transform``.
        subject : int, default=0
            Which subject (0 for a single-subject encoder).

        Returns
        -------
        score : float
            Mean over voxels of :func:`afo_encoding.metrics.pearson_r` (the field's metric;
            not scikit-learn's R^2).
        """
        from ..metrics import pearson_r

        check_is_fitted(self, self._fitted_attribute)
        s = self._subject(subject)
        pred = self._predict_subject(X, s)
        if numbers_not_in_an_array(y):
            y = np.asarray(y, dtype=np.float64)
        if isinstance(y, np.ndarray) and y.shape[1:] == pred.shape[1:]:
            Y = y  # already the kept voxels
        else:
            Y = self._space(s).transform(y)
            pred = pred.reshape(len(pred), -1)
        return float(np.mean(pearson_r(Y, pred)))

    def inverse_transform(self, Y: Any, subject: int = 0, **kwargs: Any) -> Any:
        """Give predictions (or any per-voxel values) back in the container ``y`` came in.

        Parameters
        ----------
        Y : array-like of shape (n_samples, n_voxels) or (n_voxels,)
            E.g. ``predict(X)``, or per-voxel scores to map them on the brain.
        subject : int, default=0
            Which subject's space (0 for a single-subject encoder).
        **kwargs
            Passed to the space's ``inverse_transform``; for Epochs, ``like=`` the
            measured epochs whose images were predicted keeps their events, event_id and
            metadata (see :meth:`~afo_encoding.responses.EpochsSpace.inverse_transform`).

        Returns
        -------
        container
            Array, Niimg, SurfaceImage or EpochsArray; dropped voxels are NaN.
        """
        check_is_fitted(self, self._fitted_attribute)
        return self._space(self._subject(subject)).inverse_transform(Y, **kwargs)

    def generate_report(self, X_test: Any = None, y_test: Any = None, **kwargs: Any) -> Any:
        """An HTML report of the fitted encoder (:func:`afo_encoding.report.generate_report`)."""
        from ..report import generate_report

        return generate_report(self, X_test, y_test, **kwargs)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Save the fitted encoder to one safetensors file (weights + JSON metadata).

        See :func:`afo_encoding.io.save`; :func:`afo_encoding.load` reads it back.
        """
        from ..io import save

        return save(self, path)

    def _save_state(self) -> tuple[dict, dict]:
        """Tensors and JSON metadata that :meth:`_from_saved_state` rebuilds this from."""
        raise NotImplementedError

    @classmethod
    def _from_saved_state(cls, tensors: dict, meta: dict) -> BaseEncoder:
        raise NotImplementedError

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
