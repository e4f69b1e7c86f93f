"""StimulusSet / as_stimuli: every image container, every bad input, ids, to_tensor."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from afo_encoding.stimuli import IMAGENET_MEAN, IMAGENET_STD, InputSpec, StimulusSet, as_stimuli


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, size=(6, 20, 30, 3), dtype=np.uint8)


@pytest.fixture
def png_paths(rgb, tmp_path):
    paths = []
    for k, image in enumerate(rgb):
        path = tmp_path / f"image_{k}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


class LazyDataset:
    """Minimal h5py-like dataset: shape, dtype and item access, counting reads."""

    def __init__(self, array):
        self._array, self.shape, self.dtype = array, array.shape, array.dtype
        self.reads = 0

    def __len__(self):
        return len(self._array)

    def __getitem__(self, item):
        self.reads += 1
        return self._array[item]


# ----------------------------------------------------------------------------------------
# containers


def test_uint8_rgb_array_is_wrapped_without_copy(rgb):
    stimuli = StimulusSet(rgb)
    assert len(stimuli) == 6
    first = stimuli[0]
    assert first.dtype == np.uint8
    assert first.shape == (20, 30, 3)
    np.testing.assert_array_equal(first, rgb[0])
    assert np.shares_memory(first, rgb)
    np.testing.assert_array_equal(stimuli[-1], rgb[-1])
    assert "uint8 RGB array (6, 20, 30, 3)" in repr(stimuli)


@pytest.mark.parametrize("shape", [(4, 10, 12), (4, 10, 12, 1)])
def test_grey_arrays_become_rgb(shape):
    grey = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    stimuli = StimulusSet(grey)
    image = stimuli[1]
    assert image.shape == (10, 12, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], grey[1].reshape(10, 12))
    # a grey image and the same image stored as RGB are the same picture: the same id
    assert stimuli.ids == StimulusSet(np.repeat(grey.reshape(4, 10, 12, 1), 3, -1)).ids
    assert stimuli.to_tensor([1], InputSpec(size=(10, 12))).shape == (1, 3, 10, 12)


def test_float_array_channels_first(rgb):
    floats = np.moveaxis(rgb, -1, 1) / 255.0
    stimuli = StimulusSet(floats)
    np.testing.assert_array_equal(stimuli[2], rgb[2])  # rounds back to the same uint8
    spec = InputSpec(size=(20, 30), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    # no resizing needed: the float values are used as they are
    np.testing.assert_allclose(stimuli.to_tensor([2], spec)[0].numpy(),
                               floats[2].astype(np.float32), rtol=0, atol=0)


def test_pil_images_paths_and_arrays_lists(rgb, png_paths):
    pil = StimulusSet([Image.fromarray(image) for image in rgb])
    from_paths = StimulusSet(png_paths)
    from_str = StimulusSet([str(p) for p in png_paths])
    mixed = StimulusSet([png_paths[0], Image.fromarray(rgb[1]), rgb[2]])
    for stimuli in (pil, from_paths, from_str):
        assert len(stimuli) == 6
        np.testing.assert_array_equal(stimuli[3], rgb[3])
    np.testing.assert_array_equal(mixed[2], rgb[2])
    # PNG is lossless: the same pixels give the same ids in every container
    assert pil.ids == from_paths.ids == from_str.ids == StimulusSet(rgb).ids
    assert mixed.ids == StimulusSet(rgb[:3]).ids
    assert "list of 6 paths" in repr(from_paths)


def test_paths_are_read_lazily(rgb, png_paths):
    stimuli = StimulusSet(png_paths)
    # rewriting a file after the set is made changes what is read: nothing was cached
    Image.fromarray(255 - rgb[0]).save(png_paths[0])
    np.testing.assert_array_equal(stimuli[0], 255 - rgb[0])


def test_lazy_array_like_is_read_on_access(rgb):
    dataset = LazyDataset(rgb)
    stimuli = StimulusSet(dataset)
    assert dataset.reads == 0
    np.testing.assert_array_equal(stimuli[4], rgb[4])
    assert dataset.reads == 1
    assert stimuli.to_tensor([0, 5], InputSpec(size=(8, 8))).shape == (2, 3, 8, 8)
    assert "lazy uint8 RGB array" in repr(stimuli)


def test_memmap_is_not_loaded(rgb, tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, rgb)
    mapped = np.load(path, mmap_mode="r")
    stimuli = StimulusSet(mapped)
    assert stimuli.ids == StimulusSet(rgb).ids


def test_torch_tensor_input(rgb):
    tensor = torch.from_numpy(np.moveaxis(rgb, -1, 1) / 255.0)
    np.testing.assert_array_equal(StimulusSet(tensor)[0], rgb[0])


def test_as_stimuli_passes_a_stimulus_set_through(rgb):
    stimuli = StimulusSet(rgb)
    assert as_stimuli(stimuli) is stimuli
    assert isinstance(as_stimuli(rgb), StimulusSet)
    copy = StimulusSet(stimuli)
    assert copy.ids == stimuli.ids


def test_stimulus_set_pickles(png_paths, rgb):
    for stimuli in (StimulusSet(png_paths), StimulusSet(rgb).subset([1, 2])):
        restored = pickle.loads(pickle.dumps(stimuli))
        assert restored.ids == stimuli.ids
        np.testing.assert_array_equal(restored[0], stimuli[0])


# ----------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (np.zeros((2, 3, 8, 8), np.uint8), ValueError,
         r"channels last.*np.moveaxis\(images, 1, -1\)"),
        (np.zeros((2, 8, 8, 3), np.float32), ValueError,
         r"channels first.*np.moveaxis\(images, -1, 1\)"),
        (np.zeros((2, 8, 8, 4), np.uint8), ValueError, r"\(n, H, W, 3\).*\(2, 8, 8, 4\)"),
        (np.zeros((8, 8), np.uint8), ValueError, r"got shape \(8, 8\)"),
        (np.zeros((2, 1, 8, 8, 3), np.float64), ValueError, r"\(n, 3, H, W\).*\(2, 1, 8, 8, 3\)"),
        (np.zeros((2, 8, 8, 3), np.int64), TypeError, r"uint8 \(0-255\) or float .*int64"),
        (np.zeros((0, 8, 8, 3), np.uint8), ValueError, r"must not be empty.*\(0, 8, 8, 3\)"),
        ([], ValueError, "list of images is empty"),
        ("image.png", TypeError, "single path, 'image.png'.*list of image paths"),
        ([1, 2], TypeError, "item 0 is a int"),
        (3.5, TypeError, "got a float"),
    ],
)
def test_bad_images_are_named(images, error, match):
    with pytest.raises(error, match=match):
        as_stimuli(images)


def test_float_values_outside_unit_range_name_image_and_values(rgb):
    floats = np.moveaxis(rgb, -1, 1).astype(np.float32)  # 0-255 floats, a common mistake
    with pytest.raises(ValueError, match=r"\[0, 1\]; image 0 has values from 0 to 255.*x / 255"):
        as_stimuli(floats)
    floats = floats / 255.0
    floats[3, 1, 2, 2] = -0.25
    with pytest.raises(ValueError, match="image 3 has values from -0.25 to"):
        as_stimuli(floats)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_float_images(rgb, bad):
    floats = np.moveaxis(rgb, -1, 1) / 255.0
    floats[4, 0, 5, 5] = bad
    with pytest.raises(ValueError, match=rf"image 4 contains 1 non-finite values \(e.g. {bad}\)"):
        as_stimuli(floats)
    # the same check for a single float image in a list, and lazily for lazy arrays
    with pytest.raises(ValueError, match="image 1 contains 1 non-finite"):
        as_stimuli([floats[0], floats[4]])
    lazy = StimulusSet(LazyDataset(floats))
    np.testing.assert_array_equal(lazy[0], rgb[0])
    with pytest.raises(ValueError, match="image 4 contains 1 non-finite"):
        lazy.to_tensor([4])


def test_missing_and_unreadable_files_are_named(png_paths, tmp_path):
    missing = tmp_path / "no_such_image.png"
    with pytest.raises(FileNotFoundError, match=r"'.*no_such_image.png' and 1 more"):
        as_stimuli([*png_paths, missing, tmp_path / "other.png"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    stimuli = as_stimuli([broken])
    with pytest.raises(ValueError, match="Cannot read image file '.*broken.png'"):
        stimuli[0]
    png_paths[1].unlink()
    stimuli = as_stimuli(png_paths[:1])
    with pytest.raises(FileNotFoundError, match="image_0.png"):
        png_paths[0].unlink() or stimuli[0]


def test_bad_indices(rgb):
    stimuli = StimulusSet(rgb)
    with pytest.raises(IndexError, match="Image index 6 is out of range.*6 images"):
        stimuli[6]
    with pytest.raises(TypeError, match="use stimuli.subset"):
        stimuli[[0, 1]]
    with pytest.raises(IndexError, match="boolean selection of images must have length 6"):
        stimuli.subset(np.ones(3, bool))
    with pytest.raises(IndexError, match="must be integers"):
        stimuli.subset([0.5])


# ----------------------------------------------------------------------------------------
# ids and subsets


def test_ids_are_content_hashes(rgb):
    images = rgb.copy()
    images[5] = images[2]  # a duplicate picture
    ids = StimulusSet(images).ids
    assert len(ids) == 6
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[5] == ids[2]
    assert len(set(ids)) == 5
    # the shape is part of the id: the same bytes in another shape are another image
    flat = np.zeros((1, 4, 6, 3), np.uint8)
    assert StimulusSet(flat).ids != StimulusSet(flat.reshape(1, 6, 4, 3)).ids
    # float images are hashed as float32: a float64 and a float32 copy share their id
    floats = np.moveaxis(rgb, -1, 1) / 255.0
    assert StimulusSet(floats).ids == StimulusSet(floats.astype(np.float32)).ids


def test_ids_are_stable_across_versions_and_processes():
    # the feature cache is keyed by these ids: this value must never change silently
    assert StimulusSet(np.zeros((1, 2, 2, 3), np.uint8)).ids == [
        "cd04747172211d73042de6f49d23cd99"
    ]


def test_subset_keeps_ids_and_shares_the_source(rgb):
    stimuli = StimulusSet(rgb)
    subset = stimuli.subset([4, 1, 1])
    assert len(subset) == 3
    assert subset.ids == [stimuli.ids[4], stimuli.ids[1], stimuli.ids[1]]
    np.testing.assert_array_equal(subset[0], rgb[4])
    nested = subset.subset(slice(1, None))
    np.testing.assert_array_equal(nested[1], rgb[1])
    mask = np.array([True, False, True, False, False, True])
    assert stimuli.subset(mask).ids == [stimuli.ids[i] for i in (0, 2, 5)]
    assert stimuli.subset([-1]).ids == [stimuli.ids[5]]
    assert "subset of 6" in repr(subset)


# ----------------------------------------------------------------------------------------
# to_tensor


def test_to_tensor_resizes_and_normalises(rgb):
    spec = InputSpec(size=(16, 24))
    batch = StimulusSet(rgb).to_tensor([0, 3], spec)
    assert batch.dtype == torch.float32
    assert batch.shape == (2, 3, 16, 24)
    constant = np.full((1, 40, 40, 3), (51, 102, 204), dtype=np.uint8)
    tensor = StimulusSet(constant).to_tensor(None, spec)
    expected = (np.array([51, 102, 204]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor[0].mean(axis=(1, 2)).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(tensor[0].std(axis=(1, 2)).numpy(), 0, atol=1e-5)
    assert StimulusSet(rgb).to_tensor(None, InputSpec()).shape == (6, 3, 224, 224)
    assert StimulusSet(rgb).to_tensor([], spec).shape == (0, 3, 16, 24)


def test_to_tensor_downsamples_with_antialiasing():
    # a 1-pixel checkerboard shrunk 8x is mid-grey, not an aliased pattern of 0s and 1s
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    spec = InputSpec(size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    tensor = StimulusSet(board[None]).to_tensor([0], spec)
    np.testing.assert_allclose(tensor.numpy(), 0.5, atol=0.02)


def test_to_tensor_images_of_different_sizes(rgb):
    images = [Image.fromarray(rgb[0]), Image.fromarray(rgb[1]).resize((50, 40))]
    batch = StimulusSet(images).to_tensor([1, 0], InputSpec(size=(32, 32)), device="cpu")
    assert batch.shape == (2, 3, 32, 32)
    assert batch.device.type == "cpu"
    single = StimulusSet(images).to_tensor([0], InputSpec(size=(32, 32)))
    torch.testing.assert_close(batch[1:], single)


def test_importing_stimuli_does_not_import_torch_or_pil():
    code = ("import sys, afo_encoding.stimuli; "
            "assert 'torch' not in sys.modules and 'PIL' not in sys.modules, 'heavy import'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
