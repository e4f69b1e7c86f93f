"""Ordinary inputs are never silently misread (issue 18, items 1-5).

The data are those of the issue: ``make_retinotopic_dataset(n_images=60, image_size=32,
n_voxels=200)``, whose image height (32) can equal a voxel count.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from afo_encoding.encoders.linear import LinearProbeEncoder
from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.simulation import make_retinotopic_dataset
from afo_encoding.stimuli import InputSpec, as_stimuli

TINY = {"d_model": 8, "max_epochs": 1, "device": "cpu",
        "backbone_params": {"image_size": 32, "n_scales": 2}}  # fmt: skip


@pytest.fixture(scope="module")
def data():
    ds = make_retinotopic_dataset(n_images=60, image_size=32, n_voxels=200, random_state=0)
    return ds.images, ds.Y.astype(np.float32)


@pytest.fixture(scope="module")
def fitted(data):
    images, Y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TopyEncoder(**TINY).fit(images, Y[:, :32])


def test_list_of_images_and_list_of_rows_is_one_subject(data):
    images, Y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = TopyEncoder(**TINY).fit(list(images[:10]), list(Y[:10, :32]))
    assert enc.n_subjects_ == 1
    assert enc.predict(images[:3]).shape == (3, 32)


def test_one_image_is_a_batch_of_one(data, fitted):
    images, Y = data
    one = fitted.predict(images[0])
    assert one.shape == (1, 32)
    np.testing.assert_allclose(one, fitted.predict(images[:1]), rtol=1e-5, atol=1e-6)
    probe = LinearProbeEncoder(backbone_params={"image_size": 32, "n_scales": 2}).fit(
        images, Y[:, :32]
    )
    assert probe.predict(images[0]).shape == (1, 32)
    floats = np.moveaxis(images[:1], -1, 1).astype(np.float32) / 255
    assert len(as_stimuli(floats[0])) == 1


def test_sixteen_bit_png_files_are_read_at_full_depth(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k in range(60):
        # 16-bit greys that differ below the 8-bit step, as in a microscope or a scanner
        pixels = (rng.integers(0, 256, (8, 8)) * 256 + k).astype(np.uint16)
        Image.fromarray(pixels).save(tmp_path / f"{k}.png")
        paths.append(tmp_path / f"{k}.png")
    stimuli = as_stimuli(paths)
    assert len(set(stimuli.ids)) == 60
    raw = InputSpec(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
    image = stimuli.to_tensor([0], raw)[0].numpy()
    with Image.open(paths[0]) as pil:
        expected = np.asarray(pil).astype(np.float32) / 65535
    np.testing.assert_allclose(image, np.broadcast_to(expected, (3, 8, 8)), rtol=1e-6)
    assert 0.05 < float(image.max()) <= 1  # scaled, neither 0/255-saturated nor raw


def test_float_images_divided_by_255_twice_warn(data):
    images, _ = data
    floats = np.moveaxis(images[:4], -1, 1).astype(np.float32) / 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_stimuli(floats)  # a proper [0, 1] image set: no warning
    with pytest.warns(UserWarning, match=r"divided by 255 twice.*"):
        as_stimuli(floats / 255)
    with pytest.warns(UserWarning, match="divided by 255 twice"):
        as_stimuli(list(floats / 255))


def test_subjects_of_different_lengths_get_an_error_about_subjects(data):
    images, Y = data
    coords = np.random.default_rng(0).standard_normal((200, 3))
    with pytest.raises(ValueError, match=r"Subject 1 has 50 samples in X but 40 in y"):
        TopyEncoder(**TINY).fit(
            [images, images[:50]], [Y, Y[:40]], coords=[coords, coords]
        )
