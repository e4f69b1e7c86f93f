"""Decoding by retrieval: scoring, identification accuracy, the protocol, encoders."""

import tracemalloc

import numpy as np
import pytest
import torch

from afo_encoding.decoding import (
    identification_accuracy,
    identification_protocol,
    rank_candidates,
    score_candidates,
    top_candidates,
)


def slow_scores(responses, predictions):
    """Reference: one numpy.corrcoef per (query, candidate) pair, in float64."""
    out = np.empty((len(responses), len(predictions)))
    for i, q in enumerate(np.asarray(responses, dtype=np.float64)):
        for j, c in enumerate(np.asarray(predictions, dtype=np.float64)):
            out[i, j] = np.corrcoef(q, c)[0, 1]
    return out


def patterns(n_queries=13, n_candidates=17, n_voxels=40, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    candidates = rng.normal(size=(n_candidates, n_voxels)).astype(np.float32)
    queries = candidates[np.arange(n_queries) % n_candidates] + rng.normal(
        size=(n_queries, n_voxels)).astype(np.float32)
    return queries + np.float32(offset), candidates


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk_size", [1, 5, 512])
def test_scores_equal_a_slow_reference(dtype, chunk_size):
    # an offset as raw BOLD has: standardisation must not lose precision to it
    queries, candidates = patterns(offset=1000.0)
    scores = score_candidates(queries, candidates, chunk_size=chunk_size, dtype=dtype)
    assert scores.shape == (13, 17)
    assert scores.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(scores, slow_scores(queries, candidates), atol=tol)


@pytest.mark.parametrize("as_mask", [True, False])
def test_voxel_selection_equals_scoring_the_subset(as_mask):
    queries, candidates = patterns(n_voxels=60)
    mask = np.random.default_rng(1).random(60) < 0.4
    voxels = mask if as_mask else np.flatnonzero(mask)
    scores = score_candidates(queries, candidates, voxels=voxels, chunk_size=4,
                              dtype=np.float64)
    np.testing.assert_allclose(scores, slow_scores(queries[:, mask], candidates[:, mask]),
                               atol=1e-12)


def test_single_patterns_and_integer_input():
    queries, candidates = patterns()
    one = score_candidates(queries[0], candidates, dtype=np.float64)
    assert one.shape == (1, 17)
    np.testing.assert_allclose(one[0], slow_scores(queries[:1], candidates)[0], atol=1e-12)
    ints = np.random.default_rng(0).integers(0, 50, size=(4, 30))
    np.testing.assert_allclose(score_candidates(ints, ints, dtype=np.float64),
                               np.corrcoef(ints), atol=1e-12)


def test_memory_is_bounded_by_the_chunk_size():
    # 300 x 400 x 5000: a queries x candidates x voxels float32 array would be 2.4 GB
    queries, candidates = patterns(300, 400, 5000)
    chunk_size = 16
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    scores = score_candidates(queries, candidates, chunk_size=chunk_size)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    two_blocks = 2 * chunk_size * 5000 * 4
    assert peak - scores.nbytes < 2 * two_blocks + 2**20
    assert peak < queries.nbytes / 2  # never a standardised copy of an input


def test_constant_patterns_score_zero_with_a_warning():
    queries, candidates = patterns()
    candidates[3] = 7.0
    with pytest.warns(RuntimeWarning, match="1 predicted patterns are constant"):
        scores = score_candidates(queries, candidates)
    assert np.all(scores[:, 3] == 0.0)
    assert np.all(np.isfinite(scores))


def test_bad_input_gets_clear_errors():
    queries, candidates = patterns()
    with pytest.raises(ValueError, match="responses have 40 voxels but predictions have 39"):
        score_candidates(queries, candidates[:, :39])
    bad = queries.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="responses row 4 holds NaN"):
        score_candidates(bad, candidates, chunk_size=3)
    with pytest.raises(ValueError, match="at least 2 voxels"):
        score_candidates(queries, candidates, voxels=[3])
    with pytest.raises(ValueError, match="chunk_size"):
        score_candidates(queries, candidates, chunk_size=0)
    with pytest.raises(ValueError, match="dtype must be one of float32, float64, bfloat16"):
        score_candidates(queries, candidates, dtype=np.int32)
    with pytest.raises(ValueError, match="device must be None"):
        score_candidates(queries, candidates, device="gpu0")
    with pytest.raises(ValueError, match="boolean voxel mask must have one entry per voxel"):
        score_candidates(queries, candidates, voxels=np.ones(5, dtype=bool))


@pytest.mark.parametrize("offset", [0.0, 1000.0])
@pytest.mark.parametrize("chunk_size", [5, 512])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_path_equals_the_slow_reference(dtype, chunk_size, offset):
    # the offset takes the branch that centres rows before the fused standardisation
    queries, candidates = patterns(offset=offset)
    scores = score_candidates(queries, candidates, chunk_size=chunk_size, dtype=dtype,
                              device="cpu")
    assert scores.dtype == np.dtype(dtype)
    tol = 2e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(scores, slow_scores(queries, candidates), atol=tol)
    mask = np.random.default_rng(1).random(40) < 0.5
    subset = score_candidates(queries, candidates, voxels=mask, chunk_size=chunk_size,
                              dtype=dtype, device="cpu")
    np.testing.assert_allclose(subset, slow_scores(queries[:, mask], candidates[:, mask]),
                               atol=tol)


@pytest.mark.parametrize(("dtype", "relative"), [("bfloat16", 2**-8), ("float16", 2**-10)])
def test_half_precision_scores_are_within_their_documented_rounding(dtype, relative):
    rng = np.random.default_rng(3)
    candidates = rng.standard_normal((60, 2000)).astype(np.float32)
    queries = candidates[:30] + 1.5 * rng.standard_normal((30, 2000)).astype(np.float32)
    reference = slow_scores(queries, candidates)
    scores = score_candidates(queries, candidates, dtype=dtype, chunk_size=16)
    assert scores.dtype == np.float32
    # the documented bound: the score rounded to the dtype, plus input rounding over voxels
    error = np.abs(scores - reference)
    assert np.all(error <= relative * np.abs(reference) + 3 * relative / np.sqrt(2000))
    assert error.max() > 1e-6  # it did run in half precision
    np.testing.assert_array_equal(scores.argmax(axis=1), reference.argmax(axis=1))


def test_torch_path_handles_constant_and_bad_rows():
    queries, candidates = patterns()
    candidates[3] = 7.0
    with pytest.warns(RuntimeWarning, match="1 predicted patterns are constant"):
        scores = score_candidates(queries, candidates, device="cpu", chunk_size=4)
    assert np.all(scores[:, 3] == 0.0)
    assert np.all(np.isfinite(scores))
    bad = queries.copy()
    bad[4, 2] = np.inf
    with pytest.raises(ValueError, match="responses row 4 holds NaN or infinite"):
        score_candidates(bad, candidates, device="cpu", chunk_size=3)
    raw = queries + np.float32(1e4)  # centred first: must not be done in place
    before = raw.copy()
    score_candidates(raw, candidates[4:], device="cpu")
    np.testing.assert_array_equal(raw, before)  # inputs are never written to


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_scores_equal_the_cpu_ones(dtype):
    queries, candidates = patterns(50, 70, 500)
    gpu = score_candidates(queries, candidates, dtype=dtype, device="cuda", chunk_size=16)
    cpu = score_candidates(queries, candidates, dtype="float64")
    tol = 1e-5 if dtype == "float32" else 2**-8
    np.testing.assert_allclose(gpu, cpu, atol=tol)


def test_top_candidates_are_sorted_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    assert top_candidates(scores, k=3).tolist() == [[1, 3, 2], [0, 1, 2]]
    assert top_candidates(scores, k=4).tolist() == [[1, 3, 2, 0], [0, 1, 2, 3]]
    with pytest.raises(ValueError, match="k must be an integer in"):
        top_candidates(scores, k=5)


def test_identification_accuracy_and_chance():
    scores = np.array([[0.9, 0.1, 0.2, 0.0],
                       [0.3, 0.1, 0.2, 0.0],
                       [0.0, 0.5, 0.8, 0.1]])
    acc = identification_accuracy(scores, [0, 2, 3], k=(1, 2, 3))
    assert acc.top1 == pytest.approx(1 / 3)
    assert acc.top2 == pytest.approx(2 / 3)
    assert acc.top3 == pytest.approx(1.0)
    assert acc.chance_top1 == pytest.approx(1 / 4)
    assert acc.chance_top3 == pytest.approx(3 / 4)
    assert acc.ranks.tolist() == [1.0, 2.0, 3.0]
    assert acc.n_candidates == 4


def test_ties_count_as_chance_not_as_hits():
    # a model that predicts the same pattern for every image identifies nothing
    acc = identification_accuracy(np.zeros((50, 10)), np.arange(50) % 10, k=(1, 5))
    assert acc.top1 == pytest.approx(acc.chance_top1) == pytest.approx(0.1)
    assert acc.top5 == pytest.approx(0.5)


def test_identification_accuracy_errors():
    with pytest.raises(ValueError, match="one integer per query"):
        identification_accuracy(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
        identification_accuracy(np.zeros((2, 4)), [0, 4])
    with pytest.raises(ValueError, match="NaN"):
        identification_accuracy(np.full((2, 4), np.nan), [0, 1])


def test_protocol_perfect_chance_and_reproducible():
    rng = np.random.default_rng(0)
    n = 120
    perfect = np.eye(n) + 0.01 * rng.random((n, n))
    res = identification_protocol(perfect, np.arange(n), n_candidates=10, n_repeats=20,
                                  random_state=0)
    assert res.top1 == 1.0
    assert res.top1_std == 0.0
    assert res.chance_top1 == pytest.approx(0.1)
    assert res.chance_top5 == pytest.approx(0.5)
    assert res.draws.shape == (20, 2)

    noise = rng.normal(size=(n, n))
    res = identification_protocol(noise, np.arange(n), n_candidates=10, n_repeats=300,
                                  random_state=1)
    assert abs(res.top1 - 0.1) < 0.03
    assert abs(res.top5 - 0.5) < 0.05
    assert res.top1_std > 0
    again = identification_protocol(noise, np.arange(n), n_candidates=10, n_repeats=300,
                                    random_state=1)
    np.testing.assert_array_equal(res.draws, again.draws)
    with pytest.raises(ValueError, match="n_candidates must be an integer in"):
        identification_protocol(noise, np.arange(n), n_candidates=n + 1)


# -- through an encoder -------------------------------------------------------------------


class DictSpace:
    """Stand-in ResponseSpace: the container is a dict {"data": array}."""

    modality = "other"

    def __init__(self, n_voxels):
        self.keep = np.ones(n_voxels, dtype=bool)
        self.coords = np.zeros((n_voxels, 3))

    def transform(self, y):
        return np.asarray(y["data"], dtype=np.float32)


class LinearStandIn:
    """Stand-in fitted encoder: predictions are images (flat features) times a matrix."""

    def __init__(self, n_features=12, n_voxels=40, seed=0):
        self.weights = np.random.default_rng(seed).normal(size=(n_features, n_voxels))
        self.space_ = DictSpace(n_voxels)
        self.n_predict_calls = 0

    def predict(self, X, subject=0):
        self.n_predict_calls += 1
        return (np.asarray(X) @ self.weights).astype(np.float32)


def encoder_data(n_images=30, seed=0):
    enc = LinearStandIn(seed=seed)
    rng = np.random.default_rng(seed + 1)
    images = rng.normal(size=(n_images, 12))
    responses = enc.predict(images) + 0.5 * rng.normal(size=(n_images, 40))
    enc.n_predict_calls = 0
    return enc, images, responses


def test_rank_candidates_from_an_encoder_and_a_container():
    enc, images, responses = encoder_data()
    scores = rank_candidates(enc, images, responses, dtype=np.float64)
    assert enc.n_predict_calls == 1
    np.testing.assert_allclose(scores, slow_scores(responses, enc.predict(images)),
                               atol=1e-6)
    assert identification_accuracy(scores, np.arange(30)).top1 > 0.9
    from_container = rank_candidates(enc, images, {"data": responses}, dtype=np.float64)
    np.testing.assert_allclose(from_container, scores, atol=1e-6)


def test_rank_candidates_on_rois_predicts_once():
    enc, images, responses = encoder_data()
    labels = np.array(["early"] * 15 + ["late"] * 25)
    per_roi = rank_candidates(enc, images, responses, rois=labels, roi=["early", "late"],
                              dtype=np.float64)
    assert enc.n_predict_calls == 1
    assert set(per_roi) == {"early", "late"}
    predictions = enc.predict(images)
    np.testing.assert_allclose(
        per_roi["early"], slow_scores(responses[:, :15], predictions[:, :15]), atol=1e-6)
    single = rank_candidates(enc, images, responses, rois=labels, roi="late",
                             dtype=np.float64)
    np.testing.assert_allclose(single, per_roi["late"])
    by_mask = rank_candidates(enc, images, responses, rois=labels == "late",
                              dtype=np.float64)
    by_index = rank_candidates(enc, images, responses, rois=np.arange(15, 40),
                               dtype=np.float64)
    np.testing.assert_allclose(by_mask, single)
    np.testing.assert_allclose(by_index, single)


def test_rank_candidates_errors_name_the_problem():
    enc, images, responses = encoder_data()
    with pytest.raises(ValueError, match="No voxel has the label 'v4'"):
        rank_candidates(enc, images, responses, rois=np.array(["v1"] * 40), roi="v4")
    with pytest.raises(ValueError, match="without rois"):
        rank_candidates(enc, images, responses, roi="v1")
    with pytest.raises(ValueError, match="one label per voxel"):
        rank_candidates(enc, images, responses, rois=np.zeros(7), roi=0)

    class NoSubject:
        def predict(self, X):
            return np.asarray(X)

    with pytest.raises(ValueError, match="takes no subject argument"):
        rank_candidates(NoSubject(), images, images, subject=1)


# -- science on the simulator: ground truth, a fitted linear probe, a fitted TopyEncoder -----

N_TEST = 100


@pytest.fixture(scope="module")
def fmri():
    from afo_encoding.simulation import make_retinotopic_dataset

    return make_retinotopic_dataset(n_images=400, n_voxels=300, image_size=64, random_state=0)


def split(data, index):
    """The responses of some images, in the container the simulator gives."""
    if data.modality == "fmri":
        from nilearn.image import index_img

        return index_img(data.responses, index)
    return data.responses[index]


@pytest.fixture(scope="module")
def probe(fmri):
    from afo_encoding.encoders.linear import LinearProbeEncoder

    train = np.arange(len(fmri.images) - N_TEST)
    return LinearProbeEncoder(backbone_params={"image_size": 64}, n_components=200,
                              pool_size=8, mask=fmri.mask).fit(fmri.images[train],
                                                               split(fmri, train))


def test_scores_through_a_fitted_encoder_equal_the_reference(fmri, probe):
    test = np.arange(len(fmri.images) - N_TEST, len(fmri.images))
    scores = rank_candidates(probe, fmri.images[test], split(fmri, test), dtype=np.float64)
    reference = slow_scores(fmri.Y[test][:20], probe.predict(fmri.images[test]))
    np.testing.assert_allclose(scores[:20], reference, atol=1e-6)


def test_identification_far_above_chance_on_simulated_fmri(fmri, probe):
    test = np.arange(len(fmri.images) - N_TEST, len(fmri.images))
    # measured responses as the 4D Niimg they come in, read through the encoder's space
    scores = rank_candidates(probe, fmri.images[test], split(fmri, test))
    acc = identification_accuracy(scores, np.arange(N_TEST))
    assert acc.chance_top1 == pytest.approx(0.01)
    assert acc.top1 > 20 * acc.chance_top1
    assert acc.top5 > 8 * acc.chance_top5
    protocol = identification_protocol(scores, np.arange(N_TEST), n_candidates=20,
                                       n_repeats=50, random_state=0)
    assert protocol.top1 - 3 * protocol.top1_std > protocol.chance_top1


@pytest.mark.slow
def test_identification_above_chance_from_eeg_epochs():
    from afo_encoding.encoders.linear import LinearProbeEncoder
    from afo_encoding.simulation import make_retinotopic_dataset

    eeg = make_retinotopic_dataset(n_images=400, n_voxels=300, image_size=64, modality="eeg",
                                   random_state=0)
    train, test = np.arange(300), np.arange(300, 400)
    enc = LinearProbeEncoder(backbone_params={"image_size": 64}, n_components=200,
                             pool_size=8).fit(eeg.images[train], split(eeg, train))
    scores = rank_candidates(enc, eeg.images[test], split(eeg, test))  # mne.EpochsArray in
    assert identification_accuracy(scores, np.arange(N_TEST)).top1 > 10 * 0.01


def energy_layout_similarity(images, grid=8):
    """Low-level layout similarity of every pair of images.

    Each image becomes the map of its local edge energy (gradient magnitude of the
    luminance, averaged over the cells of a ``grid x grid`` partition of the image), and two
    images are as similar as the Pearson r of their maps. This is what early visual
    voxels see: small receptive fields reading local oriented energy at a retinotopic
    position (the simulator's early area), so two images with energy at the same places
    evoke similar early patterns whatever the objects they show. Late voxels pool over
    large, nearly position-invariant fields and read the object category, so their
    patterns do not depend on this layout.
    """
    lum = images.astype(np.float64).mean(axis=-1)
    gy, gx = np.gradient(lum, axis=(1, 2))
    energy = np.hypot(gx, gy)
    n, h, w = energy.shape
    maps = energy.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4)).reshape(n, -1)
    maps -= maps.mean(axis=1, keepdims=True)
    maps /= np.linalg.norm(maps, axis=1, keepdims=True)
    return maps @ maps.T


def retrieved_other_images(scores, k=5):
    """The k best candidates of every query once its own image is left out.

    Leaving the shown image out measures what the retrieved images have in common with it,
    not how often it is found (identification accuracy).
    """
    scores = np.array(scores, dtype=np.float64)
    np.fill_diagonal(scores, -np.inf)
    return top_candidates(scores, k=k)


def test_early_area_retrieves_the_low_level_layout_late_area_the_category(fmri, probe):
    test = np.arange(len(fmri.images) - N_TEST, len(fmri.images))
    similarity = energy_layout_similarity(fmri.images[test])
    baseline = similarity[~np.eye(N_TEST, dtype=bool)].mean()
    category = np.asarray(fmri.object_category)[test]
    rois = np.asarray(fmri.rois)
    # the planted noiseless responses are the predictions of a perfect encoder
    planted = {roi: score_candidates(fmri.Y[test], fmri.signal[test], voxels=rois == roi)
               for roi in ("early", "late")}
    fitted = rank_candidates(probe, fmri.images[test], split(fmri, test), rois=rois,
                             roi=["early", "late"])
    for scores in (planted, fitted):
        layout = {roi: np.take_along_axis(similarity, retrieved_other_images(s), axis=1)
                  for roi, s in scores.items()}
        assert layout["early"].mean() > layout["late"].mean() + 0.1
        assert layout["early"].mean() > baseline + 0.1
        # most queries, not a few outliers
        assert np.mean(layout["early"].mean(axis=1) > layout["late"].mean(axis=1)) > 0.75
    same_category = {roi: (category[retrieved_other_images(s)] == category[:, None]).mean()
                     for roi, s in planted.items()}
    assert same_category["late"] > 0.9
    assert same_category["early"] < 0.4


@pytest.mark.slow
def test_topy_encoder_identifies_far_above_chance_on_simulated_fmri():
    from afo_encoding import TopyEncoder
    from afo_encoding.demo import DEMO_ENCODER
    from afo_encoding.simulation import make_retinotopic_dataset

    # the demo's CPU-sized recipe (32-px images, RetinaMapper noise 0.1, step 1e-2) on 600
    # training images: about 30 s on one core, top-1 among 100 about 0.5 (chance 0.01)
    data = make_retinotopic_dataset(n_images=700, n_voxels=200, image_size=32, random_state=0)
    train, test = np.arange(600), np.arange(600, 700)
    enc = TopyEncoder(**{**DEMO_ENCODER, "max_epochs": 60}, device="cpu", mask=data.mask,
                      random_state=0)
    enc.fit(data.images[train], split(data, train))
    scores = rank_candidates(enc, data.images[test], split(data, test))
    assert scores.shape == (N_TEST, N_TEST)
    acc = identification_accuracy(scores, np.arange(N_TEST))
    assert acc.chance_top1 == pytest.approx(0.01)
    # the bars of the converged linear probe above
    assert acc.top1 > 20 * acc.chance_top1
    assert acc.top5 > 8 * acc.chance_top5
    protocol = identification_protocol(scores, np.arange(N_TEST), n_candidates=20,
                                       n_repeats=100, random_state=0)
    assert protocol.top1 - 3 * protocol.top1_std > protocol.chance_top1


def test_identification_results_print_in_one_line():
    # printing a result shows accuracies against chance, not 200 ranks or a 200x2 array
    rng = np.random.default_rng(0)
    scores = np.eye(200) + 0.8 * rng.normal(size=(200, 200))
    acc = identification_accuracy(scores, np.arange(200))
    text = repr(acc)
    assert "\n" not in text
    assert len(text) < 200
    assert text.startswith("<IdentificationResult | 200 queries among 200 candidates")
    assert f"top-1 {acc.top1:.3f} (chance 0.005)" in text
    assert "median rank" in text
    assert acc["ranks"].shape == (200,)  # still a Bunch of the numbers
    protocol = identification_protocol(scores, np.arange(200), n_candidates=50,
                                       n_repeats=200, random_state=0)
    text = repr(protocol)
    assert "\n" not in text
    assert len(text) < 200
    assert "50 candidates drawn 200 times" in text
    assert f"top-5 {protocol.top5:.3f} \u00b1 {protocol.top5_std:.3f}" in text
    assert protocol.draws.shape == (200, 2)
