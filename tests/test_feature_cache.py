"""Feature extraction and the feature cache: computed once, identical, fast to read."""

import pickle

import joblib
import numpy as np
import pytest
import torch

from afo_encoding.backbones import (
    FeatureStore,
    clear_feature_cache,
    extract_features,
    get_backbone,
    set_feature_cache_size,
)
from afo_encoding.backbones import cache as cache_module
from afo_encoding.stimuli import StimulusSet


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_feature_cache()
    yield
    clear_feature_cache()


def _images(n, seed=0, size=32):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _counting_pyramid():
    """A pyramid backbone that records the batch size of every forward call."""
    backbone = get_backbone("pyramid", image_size=32, n_scales=3)
    calls = []
    forward = backbone.forward

    def counted(x):
        calls.append(len(x))
        return forward(x)

    backbone.forward = counted
    return backbone, calls


def _all_features(store):
    locals_, globals_ = store.batch(None)
    return [t.numpy() for t in locals_ + globals_]


def _assert_same(a, b):
    for x, y in zip(_all_features(a), _all_features(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_features_match_the_backbone():
    backbone = get_backbone("pyramid", image_size=32, n_scales=3)
    stimuli = StimulusSet(_images(5))
    store = extract_features(backbone, stimuli, batch_size=2)
    assert len(store) == 5
    assert store.local_channels == backbone.local_channels
    assert store.local_shapes == backbone.local_shapes
    assert store.global_dims == backbone.global_dims
    assert store.ids == stimuli.ids
    with torch.no_grad():
        expected_l, expected_g = backbone(stimuli.to_tensor([3, 1], backbone.input_spec))
    locals_, globals_ = store.batch([3, 1])
    for got, want in zip(locals_ + globals_, expected_l + expected_g, strict=True):
        assert got.dtype == torch.float32
        assert got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_second_call_is_served_by_the_memory_cache():
    backbone, calls = _counting_pyramid()
    images = _images(6)
    first = extract_features(backbone, images, batch_size=4)
    assert sum(calls) == 6
    second = extract_features(backbone, images)
    assert sum(calls) == 6, "the backbone ran again on cached images"
    _assert_same(first, second)


def test_only_new_images_are_computed_and_repeats_once():
    backbone, calls = _counting_pyramid()
    a, b = _images(4, seed=1), _images(3, seed=2)
    extract_features(backbone, a)
    # a repeated image and three new ones, each new one computed once
    store = extract_features(backbone, np.concatenate([a[:2], b, b[:1]]))
    assert sum(calls) == 4 + 3
    assert len(store) == 6
    _assert_same(store.subset([5]), store.subset([2]))


def test_disk_cache_serves_a_fresh_process(tmp_path):
    backbone, calls = _counting_pyramid()
    images = _images(5)
    first = extract_features(backbone, images, memory=tmp_path, batch_size=2)
    assert first.on_disk
    assert sum(calls) == 5
    clear_feature_cache()  # what a new process starts with
    fresh, fresh_calls = _counting_pyramid()
    second = extract_features(fresh, images[::-1], memory=joblib.Memory(tmp_path, verbose=0))
    assert fresh_calls == []
    _assert_same(first.subset([4, 3, 2, 1, 0]), second)
    folders = list((tmp_path / "afo_features").iterdir())
    assert len(folders) == 1
    assert (folders[0] / "key.json").exists()


def test_features_computed_in_ram_are_saved_to_disk_without_recomputing(tmp_path):
    backbone, calls = _counting_pyramid()
    images = _images(4)
    in_ram = extract_features(backbone, images[:3])
    on_disk = extract_features(backbone, images, memory=tmp_path)
    assert sum(calls) == 4
    assert on_disk.on_disk
    clear_feature_cache()
    again = extract_features(backbone, images, memory=tmp_path)
    assert sum(calls) == 4
    _assert_same(again.subset([0, 1, 2]), in_ram)
    _assert_same(again, on_disk)


def test_joblib_memory_without_location_keeps_features_in_ram(tmp_path):
    backbone, _ = _counting_pyramid()
    store = extract_features(backbone, _images(2), memory=joblib.Memory(None, verbose=0))
    assert not store.on_disk


def test_interrupted_extraction_keeps_committed_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_COMMIT_SECONDS", 0.0)
    backbone, calls = _counting_pyramid()
    images = _images(6)
    stimuli = StimulusSet(images)
    to_tensor = StimulusSet.to_tensor

    def failing(self, indices, spec):
        if 4 in list(indices):
            raise KeyboardInterrupt
        return to_tensor(self, indices, spec)

    monkeypatch.setattr(StimulusSet, "to_tensor", failing)
    with pytest.raises(KeyboardInterrupt):
        extract_features(backbone, stimuli, memory=tmp_path, batch_size=2)
    monkeypatch.setattr(StimulusSet, "to_tensor", to_tensor)
    clear_feature_cache()
    done = sum(calls)
    assert done == 4
    store = extract_features(backbone, stimuli, memory=tmp_path, batch_size=2)
    assert sum(calls) - done == 2
    reference = extract_features(get_backbone("pyramid", image_size=32, n_scales=3), images)
    _assert_same(store, reference)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", torch.bfloat16])
def test_half_precision_storage(tmp_path, dtype):
    backbone, _ = _counting_pyramid()
    images = _images(4)
    full = extract_features(backbone, images)
    half = extract_features(backbone, images, memory=tmp_path, dtype=dtype)
    assert half.dtype in (torch.float16, torch.bfloat16)
    assert half.dtype != full.dtype
    for a, b in zip(_all_features(full), _all_features(half), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-2, atol=1e-2 * np.abs(a).max())
    locals_, _ = half.batch([0], dtype=torch.bfloat16)
    assert locals_[0].dtype == torch.bfloat16
    (npy,) = (tmp_path / "afo_features").glob("*/*.npy")
    assert np.load(npy).itemsize == 2


def test_autocast_bf16_is_cached_separately():
    backbone, calls = _counting_pyramid()
    images = _images(3)
    full = extract_features(backbone, images)
    mixed = extract_features(backbone, images, autocast="bf16")
    assert sum(calls) == 6
    for a, b in zip(_all_features(full), _all_features(mixed), strict=True):
        np.testing.assert_allclose(b, a, atol=0.05 * np.abs(a).max())


def test_batch_indexing_and_subset():
    backbone, _ = _counting_pyramid()
    store = extract_features(backbone, _images(5))
    by_list = store.batch([4, 0])
    by_tensor = store.batch(torch.tensor([4, 0]))
    by_negative = store.batch(np.array([-1, 0]))
    for x, y, z in zip(by_list[0], by_tensor[0], by_negative[0], strict=True):
        torch.testing.assert_close(x, y)
        torch.testing.assert_close(x, z)
    mask = np.array([True, False, False, False, True])
    torch.testing.assert_close(store.batch(mask)[1][0], store.batch([0, 4])[1][0])
    sub = store.subset([4, 0])
    assert sub.ids == [store.ids[4], store.ids[0]]
    torch.testing.assert_close(sub.batch([0])[0][2], store.batch([4])[0][2])
    rows = store.rows([1, 2])
    assert rows.shape == (2, store.n_features)
    assert rows.dtype == np.float32
    first_global = store.slices[len(store.layer_names)]
    np.testing.assert_allclose(rows[:, first_global], store.batch([1, 2])[1][0].numpy())
    with pytest.raises(IndexError, match="out of range"):
        store.batch([5])


def test_from_arrays_round_trip():
    rng = np.random.default_rng(0)
    locals_ = [rng.normal(size=(3, 2, 4, 4)), rng.normal(size=(3, 5, 2, 2))]
    globals_ = [rng.normal(size=(3, 4)), rng.normal(size=(3, 10))]
    store = FeatureStore.from_arrays(locals_, globals_, ids=["a", "b", "c"])
    assert store.local_channels == [2, 5]
    assert store.local_shapes == [(4, 4), (2, 2)]
    assert store.global_dims == [4, 10]
    assert store.ids == ["a", "b", "c"]
    got_l, got_g = store.batch([2, 0], dtype=torch.float64)
    np.testing.assert_allclose(got_l[1].numpy(), locals_[1][[2, 0]], rtol=1e-6)
    np.testing.assert_allclose(got_g[0].numpy(), globals_[0][[2, 0]], rtol=1e-6)
    with pytest.raises(ValueError, match="one global array per local"):
        FeatureStore.from_arrays(locals_, globals_[:1])


def test_disk_store_pickles_as_its_path(tmp_path):
    backbone, _ = _counting_pyramid()
    store = extract_features(backbone, _images(8, size=64), memory=tmp_path)
    clear_feature_cache()
    in_ram = extract_features(backbone, _images(8, size=64))
    pickled = pickle.dumps(store)
    assert len(pickled) < len(pickle.dumps(in_ram)) / 4
    _assert_same(pickle.loads(pickled), store)


def test_memory_budget_drops_unreferenced_features():
    backbone, calls = _counting_pyramid()
    images = _images(3)
    previous = set_feature_cache_size(0)
    try:
        store = extract_features(backbone, images)
        extract_features(backbone, images)
        assert sum(calls) == 3, "features of a live store must be found"
        del store
        extract_features(backbone, images)
        assert sum(calls) == 6
    finally:
        set_feature_cache_size(previous)


def test_bad_arguments():
    backbone, _ = _counting_pyramid()
    with pytest.raises(ValueError, match="dtype"):
        extract_features(backbone, _images(1), dtype="int8")
    with pytest.raises(ValueError, match="autocast"):
        extract_features(backbone, _images(1), autocast="fp8")
    with pytest.raises(TypeError, match="get_backbone"):
        extract_features(torch.nn.Identity(), _images(1))
    with pytest.raises(TypeError, match="memory"):
        extract_features(backbone, _images(1), memory=3)


def _extract_in_worker(location, seed):
    backbone = get_backbone("pyramid", image_size=32, n_scales=3)
    store = extract_features(backbone, _images(6, seed=seed), memory=location)
    return [a.copy() for a in _all_features(store)]


@pytest.mark.slow
def test_concurrent_writers_share_one_disk_cache(tmp_path):
    results = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(_extract_in_worker)(str(tmp_path), 0) for _ in range(2)
    )
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
    backbone, calls = _counting_pyramid()
    store = extract_features(backbone, _images(6, seed=0), memory=tmp_path)
    assert calls == []
    for a, b in zip(_all_features(store), results[0], strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ damaged cache files


def _cached(tmp_path, n=6):
    backbone, _ = _counting_pyramid()
    images = _images(n)
    first = extract_features(backbone, images, memory=tmp_path, batch_size=2)
    expected = [x.copy() for x in _all_features(first)]
    del first
    clear_feature_cache()  # a later process
    (folder,) = (tmp_path / "afo_features").iterdir()
    (npy,) = folder.glob("*.npy")
    return images, expected, folder, npy


def _recomputed(tmp_path, images, expected, match):
    backbone, calls = _counting_pyramid()
    with pytest.warns(UserWarning, match=match):
        store = extract_features(backbone, images, memory=tmp_path)
    assert sum(calls) == len(images)  # computed again, never read from the damaged file
    for x, y in zip(_all_features(store), expected, strict=True):
        np.testing.assert_array_equal(x, y)
    clear_feature_cache()
    again, calls = _counting_pyramid()
    extract_features(again, images, memory=tmp_path)  # the new file serves the next call
    assert calls == []


def test_a_cut_cache_file_is_named_and_recomputed(tmp_path):
    images, expected, folder, npy = _cached(tmp_path)
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])
    _recomputed(tmp_path, images, expected, rf"{npy.name} is damaged: it cannot be read")


def test_zeros_written_into_a_cache_file_are_caught_by_the_checksums(tmp_path):
    images, expected, folder, npy = _cached(tmp_path)
    rows = np.load(npy, mmap_mode="r+")
    rows[2:4] = 0
    rows.flush()
    del rows
    _recomputed(tmp_path, images, expected, rf"{npy.name} is damaged: .* match their checksum")


def test_a_cut_key_file_is_named_and_written_again(tmp_path):
    images, expected, folder, npy = _cached(tmp_path)
    key = folder / "key.json"
    text = key.read_text()
    key.write_text(text[: len(text) // 2])
    backbone, calls = _counting_pyramid()
    with pytest.warns(UserWarning, match=r"key\.json is damaged: it is not valid JSON"):
        store = extract_features(backbone, images, memory=tmp_path)
    assert calls == []  # the rows themselves are intact and verified
    for x, y in zip(_all_features(store), expected, strict=True):
        np.testing.assert_array_equal(x, y)
    assert key.read_text() == text
