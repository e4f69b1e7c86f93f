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
    assert meta["params"]["checkpoint_dir"] is None  # a path of this machine: not stored

    back = load(path)
    assert isinstance(back, TopyEncoder)
    assert back.get_params() == {**enc.get_params(), "checkpoint_dir": None}
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


# ---------------------------------------------------------------- damaged or crafted files


def _fitted(tmp_path, **params):
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    enc = TopyEncoder(**{**TINY, "random_state": 0, **params})
    enc.fit(X, y, coords=rng.standard_normal((2, 3)))
    return enc, X, enc.save(tmp_path / "m.safetensors")


def _rewrite(path, edit_meta=None, edit_tensors=None, raw_meta=None):
    """Write ``path`` again with its metadata or tensors changed (a crafted file)."""
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["afo_encoding"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    if edit_meta is not None:
        edit_meta(meta)
    if edit_tensors is not None:
        edit_tensors(tensors)
    text = json.dumps(meta) if raw_meta is None else raw_meta(json.dumps(meta))
    save_file(tensors, str(path), metadata={"afo_encoding": text})


def test_weights_changed_after_saving_are_caught(tmp_path):
    enc, X, path = _fitted(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        assert "tensors_blake2b" in json.loads(f.metadata()["afo_encoding"])

    def zero_a_weight(tensors):
        name = next(k for k in sorted(tensors) if k.startswith("model."))
        tensors[name] = torch.zeros_like(tensors[name])

    _rewrite(path, edit_tensors=zero_a_weight)
    with pytest.raises(ValueError, match=r"m\.safetensors is damaged: its tensors do not match"):
        load(path)


def test_files_without_a_checksum_still_load(tmp_path):
    enc, X, path = _fitted(tmp_path)
    _rewrite(path, edit_meta=lambda meta: meta.pop("tensors_blake2b"))
    np.testing.assert_array_equal(load(path).predict(X), enc.predict(X))


def test_a_directory_a_cut_file_and_cut_metadata_get_clear_errors(tmp_path):
    enc, X, path = _fitted(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a directory; give the model file"):
        load(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"Cannot read .*cut\.safetensors: it is damaged"):
        load(cut)
    _rewrite(path, raw_meta=lambda text: text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"m\.safetensors is damaged: its metadata is not"):
        load(path)


def test_load_imports_only_loadable_classes(tmp_path, monkeypatch):
    import importlib
    import sys

    enc, X, path = _fitted(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python", "--not-an-option"])
    monkeypatch.delitem(sys.modules, "afo_encoding.__main__", raising=False)
    importlib.import_module("afo_encoding.__main__")  # importing runs no command line
    monkeypatch.delitem(sys.modules, "afo_encoding.__main__", raising=False)
    _rewrite(path, edit_meta=lambda meta: meta.update({"class": "afo_encoding.__main__.main"}))
    with pytest.raises(ValueError, match="which afo_encoding.load does not load"):
        load(path)
    assert "afo_encoding.__main__" not in sys.modules


def test_a_model_file_never_makes_load_contact_the_network(tmp_path, monkeypatch):
    import socket

    enc, X, path = _fitted(tmp_path)

    def craft(meta):
        meta["params"]["backbone"] = "someone/not-a-model-here"
        meta["fitted"]["has_backbone"] = True

    _rewrite(path, edit_meta=craft)
    contacts = []

    def refuse(self, address, *args):
        contacts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(OSError, match="never downloads"):
        load(path)
    assert contacts == []


def test_saved_models_keep_no_machine_paths(tmp_path):
    cache = tmp_path / "cache"
    enc, X, path = _fitted(tmp_path, memory=str(cache), checkpoint_dir=str(tmp_path / "ck"))
    text = path.read_bytes()
    assert str(tmp_path).encode() not in text
    back = load(path)
    assert back.memory is None
    assert back.checkpoint_dir is None
    np.testing.assert_array_equal(back.predict(X), enc.predict(X))
    # files saved before the change hold the paths of the machine that saved them
    _rewrite(path, edit_meta=lambda m: m["params"].update(memory="/elsewhere/cache"))
    assert load(path).memory is None
    assert load(path, memory=str(cache)).memory == str(cache)
    assert not (tmp_path / "elsewhere").exists()


def test_a_gpu_fitted_model_predicts_on_a_cpu(tmp_path, monkeypatch):
    enc, X, path = _fitted(tmp_path)
    _rewrite(path, edit_meta=lambda meta: meta["params"].update(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    back = load(path)
    assert back.device == "cpu"
    np.testing.assert_allclose(back.predict(X), enc.predict(X), rtol=1e-6)
    assert load(path, device="cpu").device == "cpu"
    _rewrite(path, edit_meta=lambda meta: meta["params"].update(device="cuda:1"))
    np.testing.assert_allclose(load(path).predict(X), enc.predict(X), rtol=1e-6)


def test_a_name_without_extension_gets_one_and_the_process_umask(tmp_path):
    import os

    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    enc = TopyEncoder(**TINY, random_state=0).fit(X, y, coords=rng.standard_normal((2, 2)))
    old = os.umask(0o022)
    try:
        written = enc.save(tmp_path / "my_encoder")
    finally:
        os.umask(old)
    assert written == tmp_path / "my_encoder.safetensors"
    assert not (tmp_path / "my_encoder").exists()
    assert oct(written.stat().st_mode & 0o777) == oct(0o644)  # as open() creates files
    back = load(tmp_path / "my_encoder")  # the extension may be left out
    np.testing.assert_array_equal(back.predict(X), enc.predict(X))
    assert save(enc, tmp_path / "model.v2").name == "model.v2"  # an extension is kept
