"""Every encoder checks its parameters first in ``fit``, with errors that name them.

A wrong value fails before the backbone runs (a typo must not cost a feature pass), and
the message names the parameter, what it may be, the value given and the estimator.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import afo_encoding.backbones as backbones
from afo_encoding import AllForOneEncoder, LinearProbeEncoder, TopyEncoder
from afo_encoding.backbones import get_backbone
from afo_encoding.encoders._validation import InvalidParameterError

ENCODERS = [TopyEncoder, LinearProbeEncoder, AllForOneEncoder]


def _images(n=12, size=32, n_voxels=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return images, rng.normal(size=(n, n_voxels)), rng.normal(size=(n_voxels, 3))


@pytest.fixture
def no_features(monkeypatch):
    """Make any feature extraction fail loudly: what must come first has to."""

    def refuse(*args, **kwargs):
        raise RuntimeError("features were computed")

    monkeypatch.setattr(backbones, "extract_features", refuse)


@pytest.mark.parametrize(
    ("params", "shown"),
    [
        ({"learning_rate": "x"}, "'x'"),
        ({"learning_rate": float("nan")}, "nan"),
        ({"learning_rate": 0.0}, "0.0"),
        ({"sigma": None}, "None"),
        ({"sigma": -0.1}, "-0.1"),
        ({"validation_fraction": None}, "None"),
        ({"validation_fraction": 1.0}, "1.0"),
        ({"adapter_width": 0}, "0"),
        ({"batch_size": 0}, "0"),
        ({"batch_size": True}, "True"),
        ({"max_epochs": "aut"}, "'aut'"),
        ({"max_epochs": 2.5}, "2.5"),
        ({"top_k": -1}, "-1"),
        ({"device": "cuda1"}, "'cuda1'"),
        ({"precision": "bf16-mix"}, "'bf16-mix'"),
        ({"head_solver": "lbfgs"}, "'lbfgs'"),
        ({"use_global": "yes"}, "'yes'"),
    ],
)
def test_topy_encoder_names_the_wrong_parameter_before_any_feature(params, shown, no_features):
    images, y, coords = _images()
    (name,) = params
    with pytest.raises(InvalidParameterError) as info:
        TopyEncoder(**params).fit(images, y, coords=coords)
    message = str(info.value)
    assert message.startswith(f"{name} must be ")
    assert f"got {shown}" in message
    assert f"'{name}' parameter of TopyEncoder" in message
    # a ValueError and a TypeError: both kinds of callers catch it
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypeError)


def test_messages_say_the_allowed_values():
    images, y, coords = _images()
    cases = {
        "learning_rate": ("x", "a positive number or 'auto'"),
        "validation_fraction": (None, "a number in (0, 1)"),
        "adapter_width": (0, "a positive integer or None"),
        "device": ("gpu0", "one of {'auto', 'cpu', 'cuda', 'gpu', 'mps'} or 'cuda:<index>'"),
        "max_epochs": (0, "a positive integer or 'auto'"),
    }
    for name, (value, allowed) in cases.items():
        with pytest.raises(InvalidParameterError) as info:
            TopyEncoder(**{name: value}).fit(images, y, coords=coords)
        assert str(info.value).startswith(f"{name} must be {allowed}, got {value!r}")


def test_valid_values_reach_the_features(no_features):
    """The control of the tests above: with right parameters the backbone does run."""
    images, y, coords = _images()
    for params in ({}, {"learning_rate": 1e-3, "sigma": 0.0, "device": "cuda:0"}):
        with pytest.raises(RuntimeError, match="features were computed"):
            TopyEncoder(**params).fit(images, y, coords=coords)
    with pytest.raises(RuntimeError, match="features were computed"):
        LinearProbeEncoder(device="cpu").fit(images, y)
    with pytest.raises(RuntimeError, match="features were computed"):
        AllForOneEncoder(TopyEncoder(device="cpu"), n_jobs=1).fit(images, y, coords=coords)


@pytest.mark.parametrize(
    "params",
    [{"batch_size": 0}, {"n_components": 0}, {"device": "gpu:0"}, {"backend": "jax"},
     {"cv": 1}, {"standardize": None}],
)  # fmt: skip
def test_linear_probe_checks_its_parameters_before_any_feature(params, no_features):
    images, y, _ = _images()
    (name,) = params
    with pytest.raises(InvalidParameterError, match=f"^{name} must be .*LinearProbeEncoder"):
        LinearProbeEncoder(**params).fit(images, y)


@pytest.mark.parametrize(
    "params",
    [{"n_folds": 1}, {"recipe": "mixed"}, {"soft_weight": float("nan")}, {"n_rois": 0},
     {"estimator": TopyEncoder(batch_size=0)}, {"estimator": TopyEncoder(top_k="10")},
     {"estimator": TopyEncoder(max_epochs=-5)}, {"estimator": TopyEncoder(device="tpu")}],
)  # fmt: skip
def test_all_for_one_checks_its_and_its_estimators_parameters_first(params, no_features):
    images, y, coords = _images()
    with pytest.raises(InvalidParameterError, match="must be"):
        AllForOneEncoder(**params).fit(images, y, coords=coords)


def test_every_parameter_of_every_encoder_has_a_constraint():
    for cls in ENCODERS:
        est = cls()
        assert set(est.get_params(deep=False)) == set(cls._parameter_constraints), cls
        est._validate_params()  # the defaults are valid


def test_pyramid_layers_are_chosen_by_their_number():
    images, y, coords = _images()
    with pytest.raises(ValueError, match=r"layers=\[0, 1\].*backbone_params=\{'n_scales'"):
        TopyEncoder(layers=[0, 1], device="cpu").fit(images, y, coords=coords)
    with pytest.raises(ValueError, match="layers"):
        LinearProbeEncoder(layers=[0, 1], device="cpu").fit(images, y)
    with pytest.raises(TypeError, match=r"no option\(s\) \['n_scale'\].*'n_scales'"):
        get_backbone("pyramid", n_scale=2)


def test_subject_out_of_range_is_one_error_everywhere():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no coords: a grid
        topy = TopyEncoder(max_epochs=1, device="cpu", random_state=0).fit(X, y)
        probe = LinearProbeEncoder().fit(X, y)
    for call in (
        lambda: topy.predict(X, subject=1),
        lambda: topy.inverse_transform(y, subject=1),
        lambda: probe.score(X, y, subject=1),
        lambda: topy.model_.retina_map(1),
    ):
        with pytest.raises(IndexError, match=r"subject must be in \[0, 1\)") as info:
            call()
        assert isinstance(info.value, ValueError)
