"""Saving and loading fitted encoders (safetensors + JSON, no pickle)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.io import load, save

TINY = {"d_model": 8, "max_epochs": 2, "n_iter_no_change": 2, "top_k": 2, "device": "cpu"}


def test_save_load_round_trip_on_images(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    y = rng.standard_normal((30, 4))
    y[:, 2] = 1.0  # a constant voxel is dropped and must come back as NaN
    enc = TopyEncoder(
        **TINY,
        backbone_params={"image_size": 32, "n_scales": 2},
        random_state=0,
        checkpoint_dir=tmp_path / "ckpt",
    )
    with pytest.warns(UserWarning, match="Dropped 1"):
        enc.fit(images, y, coords=rng.standard_normal((4, 3)))
    path = enc.save(tmp_path / "model.safetensors")

    with safe_open(str(path), framework="pt") as f:  # plain tensors and a JSON header
        meta = json.loads(f.metadata()["afo_encoding"])
    assert meta["class"] == "afo_encoding.encoders.topy.TopyEncoder"
    assert meta["params"]["checkpoint_dir"] == str(tmp_path / "ckpt")

    back = load(path)
    assert isinstance(back, TopyEncoder)
    assert back.get_params() == {**enc.get_params(), "checkpoint_dir": str(tmp_path / "ckpt")}
    np.testing.assert_array_equal(back.predict(images), enc.predict(images))
    for name in ("coef_", "intercept_", "retina_map_", "layer_weights_", "validation_scores_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(enc, name))
    assert back.history_ == enc.history_
    assert back.n_iter_ == enc.n_iter_
    out = back.inverse_transform(back.predict(images[:3]))
    assert out.shape == (3, 4)
    assert np.isnan(out[:, 2]).all()


def test_multi_subject_features_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    X0, X1 = rng.standard_normal((40, 5)), rng.standard_normal((30, 5))
    y0, y1 = rng.standard_normal((40, 3)), rng.standard_normal((30, 2))
    enc = TopyEncoder(**TINY, random_state=0).fit(
        [X0, X1], [y0, y1], coords=[rng.standard_normal((3, 2)), rng.standard_normal((2, 3))]
    )
    back = load(save(enc, tmp_path / "m.safetensors"))
    assert back.n_subjects_ == 2
    assert back.n_features_in_ == 5
    assert back.backbone_ is None
    np.testing.assert_array_equal(back.predict(X1, subject=1), enc.predict(X1, subject=1))
    assert [s.coords.shape for s in back.space_] == [(3, 2), (2, 3)]


def test_a_gpu_fitted_model_loads_on_the_cpu(tmp_path):
    # what a GPU fit writes: safetensors are read with device="cpu" whatever they came from
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    enc = TopyEncoder(**TINY, random_state=0).fit(X, y, coords=rng.standard_normal((2, 3)))
    back = load(enc.save(tmp_path / "m.safetensors"))
    assert all(p.device.type == "cpu" for p in back.model_.parameters())


def test_unsaveable_and_unreadable_inputs_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    enc = TopyEncoder(**TINY, random_state=0)
    with pytest.raises(Exception, match="not fitted"):
        enc.save(tmp_path / "x.safetensors")
    enc.fit(X, y, coords=rng.standard_normal((2, 3)))
    enc.backbone = torch.nn.Identity()
    with pytest.raises(TypeError, match="Pickle the estimator instead"):
        enc.save(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="No saved model"):
        load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an afo-encoding model"):
        load(tmp_path / "other.safetensors")
