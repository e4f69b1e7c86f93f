"""AllForOneEncoder: the recipe's wiring, dark knowledge, resuming, saving (small, fast fits).

The scientific claims that hold on the simulator (veROI finds the planted areas, out-of-fold
teachers do not copy the training noise) are in ``test_afo_science.py``; here every fit is
a few epochs on precomputed 2D features.
"""

from __future__ import annotations

import tempfile
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

import afo_encoding.encoders.afo as afo_module
from afo_encoding.encoders import afo_stages
from afo_encoding.encoders.afo import AllForOneEncoder, random_rois_like
from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.io import load

N_SAMPLES, N_FEATURES, N_VOXELS = 72, 6, 12
LABELS = np.repeat(["v1", "v2", "v3"], [5, 4, 3])
TWO_ROIS = np.repeat([0, 1], [7, 5])


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
    torch.set_num_threads(previous)


def _data(seed=0, n=N_SAMPLES):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    W = rng.normal(size=(N_FEATURES, N_VOXELS))
    Y = (X @ W + rng.normal(size=(n, N_VOXELS))).astype(np.float32)
    coords = rng.normal(size=(N_VOXELS, 3))
    return X, Y, coords


def _estimator(**kw):
    params = {
        "head_solver": "sgd",  # the recipe distils SGD-trained networks
        "d_model": 4,
        "max_epochs": 1,
        "n_iter_no_change": 1,
        "top_k": 1,
        "soup": False,
        "batch_size": 32,
        "device": "cpu",
    }
    return TopyEncoder(**{**params, **kw})


@pytest.fixture
def fit_calls(monkeypatch):
    """Record the keywords of every TopyEncoder fit (the stage fits run in this process)."""
    calls = []
    original = TopyEncoder.fit

    def recording(self, X, y, **kw):
        calls.append({"n_samples": len(y) if not isinstance(y, list) else len(y[0]), **kw})
        return original(self, X, y, **kw)

    monkeypatch.setattr(TopyEncoder, "fit", recording)
    return calls


def test_stage_fits_get_the_recipe_hooks(fit_calls):
    X, Y, coords = _data()
    AllForOneEncoder(_estimator(), rois=LABELS, dark_knowledge="in_sample", random_state=0).fit(
        X, Y, coords=coords
    )
    assert len(fit_calls) == 7  # 3 ROI models in stages 1 and 2, then stage 3
    stage1, stage2, stage3 = fit_calls[:3], fit_calls[3:6], fit_calls[6]
    for k, roi in enumerate(["v1", "v2", "v3"]):
        in_roi = np.asarray(roi == LABELS)
        # stage 1: ground truth of the ROI only, monitored on the ROI, no teacher
        np.testing.assert_array_equal(stage1[k]["loss_weight"], in_roi.astype(np.float32))
        np.testing.assert_array_equal(stage1[k]["monitor"], in_roi)
        assert "soft_targets" not in stage1[k]
        # stage 2: ground truth on the ROI, every other voxel learns its own ROI model's
        # stage-1 prediction, checkpoints chosen on the ROI
        np.testing.assert_array_equal(stage2[k]["loss_weight"], in_roi.astype(np.float32))
        np.testing.assert_allclose(stage2[k]["soft_weight"], 0.25 * (~in_roi))
        np.testing.assert_array_equal(stage2[k]["monitor"], in_roi)
        assert stage2[k]["soft_targets"].shape == (N_SAMPLES, N_VOXELS)
    # stage 3: ground truth and dark knowledge everywhere, all voxels monitored
    assert "loss_weight" not in stage3
    assert "monitor" not in stage3
    np.testing.assert_allclose(stage3["soft_weight"], np.full(N_VOXELS, 0.25))
    # the stage-2 teacher of a voxel is the stage-1 model of its ROI, on its voxels only
    assert not np.allclose(stage3["soft_targets"], stage2[0]["soft_targets"])


def test_recipe_with_out_of_fold_teachers_predicts_like_a_topy_encoder(fit_calls):
    X, Y, coords = _data()
    X[1::2] = X[::2]  # every image shown twice: repeats must stay in one fold
    afo = AllForOneEncoder(_estimator(), rois=LABELS, n_folds=2, random_state=0)
    folds = afo._folds([afo_module.row_ids(X)], np.random.RandomState(0))
    assert len(folds) == 2
    predicted = np.concatenate([f[1][0] for f in folds])
    np.testing.assert_array_equal(np.sort(predicted), np.arange(N_SAMPLES))
    for train, predict in folds:
        assert not set(train[0]) & set(predict[0])
        assert not {X[i].tobytes() for i in train[0]} & {X[i].tobytes() for i in predict[0]}
    afo.fit(X, Y, coords=coords)
    # stages 1 and 2: 3 ROIs x 2 folds, each fit on half of the images; stage 3: one on all
    assert len(fit_calls) == 13
    assert [c["n_samples"] for c in fit_calls[:12]] == [N_SAMPLES // 2] * 12
    assert fit_calls[-1]["n_samples"] == N_SAMPLES
    assert list(afo.stage_scores_.index) == ["stage1", "stage2", "stage3"]
    assert list(afo.stage_scores_.columns) == ["v1", "v2", "v3", "all"]
    assert isinstance(afo.stage_scores_, pd.DataFrame)
    assert np.all(np.isfinite(afo.stage_scores_.to_numpy()))
    assert afo.rois_.tolist() == ["v1", "v2", "v3"]
    np.testing.assert_array_equal(afo.rois_[afo.roi_labels_], LABELS)
    assert afo.stage_voxel_scores_["stage1"].shape == (N_VOXELS,)
    # the result predicts like the final TopyEncoder
    pred = afo.predict(X)
    assert pred.shape == (N_SAMPLES, N_VOXELS)
    np.testing.assert_array_equal(pred, afo.final_estimator_.predict(X))
    assert afo.score(X, Y) == pytest.approx(afo.final_estimator_.score(X, Y))
    assert afo.coef_.shape == (N_VOXELS, 4)
    assert afo.retina_map_.shape == (N_VOXELS, 2)
    assert afo.layer_weights_.shape[0] == N_VOXELS
    assert afo.inverse_transform(pred).shape == (N_SAMPLES, N_VOXELS)


def test_missing_or_misshaped_teacher_is_an_error():
    X, Y, coords = _data()
    spec = afo_stages.FitSpec(
        "s", [np.arange(N_SAMPLES)], [None], use_soft_targets=True,
        soft_weight=[np.ones(N_VOXELS, np.float32)],
    )  # fmt: skip
    params = {
        k: v
        for k, v in _estimator().get_params().items()
        if k not in ("random_state", "checkpoint_dir")
    }
    with pytest.raises(ValueError, match="teacher predictions are missing"):
        afo_stages.run_fit(spec, params, [X], [Y], [coords], None, False, 0, None)
    with pytest.raises(ValueError, match="soft_targets must have one value per voxel"):
        afo_stages.run_fit(spec, params, [X], [Y], [coords], [Y[:, :3]], False, 0, None)


def test_ablations_naive_nodk_and_extra_round(fit_calls, monkeypatch):
    X, Y, coords = _data()
    naive = AllForOneEncoder(_estimator(), recipe="naive", random_state=0).fit(X, Y, coords=coords)
    assert len(fit_calls) == 1
    assert list(naive.stage_scores_.index) == ["naive"]
    assert naive.predict(X).shape == (N_SAMPLES, N_VOXELS)
    common = {"rois": TWO_ROIS, "dark_knowledge": "in_sample", "random_state": 0}
    fit_calls.clear()
    s21 = AllForOneEncoder(_estimator(), n_stage2_rounds=2, **common).fit(X, Y, coords=coords)
    assert len(fit_calls) == 2 + 2 + 2 + 1
    assert list(s21.stage_scores_.index) == ["stage1", "stage2", "stage2+1", "stage3"]
    # the second round distils the first round's models, not stage 1's
    assert not np.allclose(fit_calls[2]["soft_targets"], fit_calls[4]["soft_targets"])
    # NoDK: the helpers learn their ground truth (stopped before stage 3, which is as usual)
    recording = TopyEncoder.fit

    def stop_at_stage3(self, X, y, **kw):
        if "loss_weight" not in kw:
            raise RuntimeError("stage 3 reached")
        return recording(self, X, y, **kw)

    fit_calls.clear()
    monkeypatch.setattr(TopyEncoder, "fit", stop_at_stage3)
    with pytest.raises(RuntimeError, match="stage 3 reached"):
        AllForOneEncoder(_estimator(), helpers="ground_truth", **common).fit(X, Y, coords=coords)
    assert len(fit_calls) == 4
    for call in fit_calls[2:]:
        np.testing.assert_array_equal(call["loss_weight"], np.ones(N_VOXELS, np.float32))
        assert "soft_targets" not in call


def test_random_rois():
    labels = np.repeat([3, 7], [8, 4])
    shuffled = random_rois_like(labels, random_state=0)
    assert np.bincount(shuffled).tolist() == np.bincount(labels).tolist()
    assert not np.array_equal(shuffled, labels)
    two = random_rois_like([labels, labels[:6]], random_state=0)
    assert [len(t) for t in two] == [12, 6]
    X, Y, coords = _data()
    afo = AllForOneEncoder(
        _estimator(), rois="random", n_rois=[2, 1], dark_knowledge="in_sample", random_state=0
    ).fit(X, Y, coords=coords)
    assert np.bincount(afo.roi_labels_).tolist() == [8, 4]


def test_veroi_rois_come_from_a_first_all_roi_model(fit_calls):
    X, Y, coords = _data()
    afo = AllForOneEncoder(
        _estimator(), rois="veroi", n_rois=2, dark_knowledge="in_sample", random_state=0
    ).fit(X, Y, coords=coords)
    assert len(fit_calls) == 1 + 2 + 2 + 1
    assert list(afo.stage_scores_.index) == ["naive", "stage1", "stage2", "stage3"]
    assert sorted(np.unique(afo.roi_labels_).tolist()) == [0, 1]
    assert afo.veroi_linkage_.shape[1] == 4


def test_several_subjects():
    X, Y, coords = _data()
    X2, Y2, coords2 = _data(seed=1, n=60)
    labels2 = np.repeat(["v3", "v2", "v1"], [4, 4, 4])
    afo = AllForOneEncoder(
        _estimator(),
        rois=[LABELS, labels2],
        dark_knowledge="in_sample",
        random_state=0,
        keep_stage_estimators=True,
    ).fit([X, X2], [Y, Y2], coords=[coords, coords2])
    assert afo.rois_.tolist() == ["v1", "v2", "v3"]
    np.testing.assert_array_equal(afo.rois_[afo.roi_labels_[1]], labels2)
    assert afo.predict(X2, subject=1).shape == (60, N_VOXELS)
    assert len(afo.stage_voxel_scores_["stage2"]) == 2
    assert len(afo.stage_estimators_["stage1"]) == 3
    assert len(afo.stage_estimators_["stage1"][0]) == 1


def test_an_roi_present_in_one_subject_only(fit_calls):
    X, Y, coords = _data()
    X2, Y2, coords2 = _data(seed=1, n=60)
    labels2 = np.repeat(["v2", "v1"], [6, 6])  # subject 1 has no v3
    afo = AllForOneEncoder(_estimator(), rois=[LABELS, labels2], n_folds=2, random_state=0)
    afo.fit([X, X2], [Y, Y2], coords=[coords, coords2])
    assert afo.rois_.tolist() == ["v1", "v2", "v3"]
    assert len(fit_calls) == 3 * 2 + 3 * 2 + 1  # ROI-major, 2 folds each
    v3_stage1, v3_stage2 = fit_calls[4:6], fit_calls[10:12]
    for call in v3_stage1 + v3_stage2:
        # subject 1 gives v3's models no ground truth and no monitored voxel ...
        np.testing.assert_array_equal(call["loss_weight"][1], np.zeros(N_VOXELS))
        assert not np.any(call["monitor"][1])
        np.testing.assert_array_equal(call["monitor"][0], LABELS == "v3")
    for call in v3_stage2:  # ... and in stage 2 only helpers
        np.testing.assert_allclose(call["soft_weight"][1], np.full(N_VOXELS, 0.25))
    # every voxel of both subjects has a teacher: its own ROI's models
    teacher = fit_calls[-1]["soft_targets"]
    assert [t.shape for t in teacher] == [(N_SAMPLES, N_VOXELS), (60, N_VOXELS)]
    assert all(np.all(np.isfinite(t)) for t in teacher)
    # the v3 column averages subject 0's v3 voxels; v1 those of both subjects
    for stage in ("stage1", "stage2", "stage3"):
        per_subject = afo.stage_voxel_scores_[stage]
        row = afo.stage_scores_.loc[stage]
        assert row["v3"] == pytest.approx(per_subject[0][LABELS == "v3"].mean())
        v1 = np.r_[per_subject[0][LABELS == "v1"], per_subject[1][labels2 == "v1"]]
        assert row["v1"] == pytest.approx(v1.mean())
    assert np.all(np.isfinite(afo.stage_scores_.to_numpy()))


def test_an_roi_without_a_voxel_in_any_subject_is_an_error(monkeypatch):
    import afo_encoding.parcellation as parcellation

    X, Y, coords = _data()
    # veROI labels are numbered 0..n_rois-1: a number no voxel got would be an empty ROI
    gap = np.repeat([0, 2], [6, 6])
    monkeypatch.setattr(parcellation, "veroi", lambda *a, **k: (gap, np.zeros((1, 4))))
    with pytest.raises(ValueError, match=r"ROI\(s\) \[1\] have no voxel in any subject"):
        AllForOneEncoder(
            _estimator(), rois="veroi", n_rois=3, dark_knowledge="in_sample", random_state=0
        ).fit(X, Y, coords=coords)


def _image_data(n=40, n_voxels=6):
    """Images of 16 px (2 pyramid layers: a RetinaMapper and a LayerSelector that learn)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    gray = images.mean(-1)
    Y = gray[:, :8, :8].mean((1, 2))[:, None] + rng.normal(size=(n, n_voxels))
    return images, Y.astype(np.float32), rng.normal(size=(n_voxels, 3))


def _image_estimator():
    return _estimator(backbone_params={"image_size": 16, "n_scales": 2})


#: two given ROIs over the 6 voxels of _image_data, in-sample teachers, frozen readout
FROZEN_TWO_ROIS = {
    "rois": np.repeat([0, 1], 3),
    "dark_knowledge": "in_sample",
    "freeze_readout": True,
    "random_state": 0,
}


def test_freeze_readout_fits_the_first_model_once_and_freezes_it_in_every_stage(
    fit_calls, tmp_path
):
    images, Y, coords = _image_data()
    afo = AllForOneEncoder(
        _image_estimator(),
        rois="veroi",
        n_rois=2,
        freeze_readout=True,
        dark_knowledge="in_sample",
        keep_stage_estimators=True,
        random_state=0,
    ).fit(images, Y, coords=coords)
    # the naive model that veROIs come from is the frozen readout: one fit, not two
    assert len(fit_calls) == 1 + 2 + 2 + 1
    assert fit_calls[0]["frozen_readout"] is None
    assert all(call["frozen_readout"] is fit_calls[1]["frozen_readout"] for call in fit_calls[1:])
    naive = afo.stage_estimators_["naive"][0][0]
    assert np.abs(naive.retina_map_).max() > 0  # it learnt a readout
    stage_models = [
        enc for stage in ("stage1", "stage2", "stage3") for roi in afo.stage_estimators_[stage]
        for enc in roi
    ]  # fmt: skip
    assert len(stage_models) == 5
    for enc in stage_models:
        np.testing.assert_array_equal(enc.retina_map_, naive.retina_map_)
        np.testing.assert_array_equal(enc.layer_weights_, naive.layer_weights_)
    assert list(afo.stage_scores_.index) == ["naive", "stage1", "stage2", "stage3"]
    assert load(afo.save(tmp_path / "afo.safetensors")).get_params()["freeze_readout"] is True
    # the fitted recipe is itself a frozen readout for a TopyEncoder
    fit_calls.clear()
    enc = _image_estimator().fit(images, Y, coords=coords, frozen_readout=afo)
    np.testing.assert_array_equal(enc.retina_map_, afo.retina_map_)
    # with given ROIs, the first all-ROI model is fitted for the readout only
    AllForOneEncoder(_image_estimator(), **FROZEN_TWO_ROIS).fit(images, Y, coords=coords)
    assert len(fit_calls) == 1 + 1 + 2 + 2 + 1
    assert fit_calls[1]["frozen_readout"] is None
    assert all(call["frozen_readout"] is not None for call in fit_calls[2:])


def test_freeze_readout_in_parallel_fits_and_its_own_checkpoint_folder(
    fit_calls, tmp_path, monkeypatch
):
    from joblib import parallel_config

    images, Y, coords = _image_data()
    params = {**FROZEN_TWO_ROIS, "checkpoint_dir": tmp_path / "checkpoints"}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with parallel_config(backend="threading", n_jobs=2), pytest.warns(UserWarning, match="thread"):
        first = AllForOneEncoder(_image_estimator(), **params).fit(images, Y, coords=coords)
    assert len(fit_calls) == 1 + 2 + 2 + 1
    naive = load(next(tmp_path.glob("checkpoints/afo-*/naive.safetensors")))
    np.testing.assert_array_equal(first.retina_map_, naive.retina_map_)
    # the saved models do not point at the run's temporary feature folder, now deleted
    assert naive.memory is None
    # a second run finds every fit on disk, the first model included
    fit_calls.clear()
    again = AllForOneEncoder(_image_estimator(), **params).fit(images, Y, coords=coords)
    assert fit_calls == []
    np.testing.assert_array_equal(again.predict(images), first.predict(images))
    assert not list(tmp_path.glob("afo_features_*"))
    # the same recipe without the frozen readout is another run
    AllForOneEncoder(_image_estimator(), **{**params, "freeze_readout": False}).fit(
        images, Y, coords=coords
    )
    assert len(fit_calls) == 2 + 2 + 1
    assert len(list(tmp_path.glob("checkpoints/afo-*"))) == 2


@pytest.mark.slow  # ~20 s on 2 cores: out of the quick set
def test_freeze_readout_reaches_process_workers(tmp_path, monkeypatch):
    """loky workers are other processes: the frozen readout travels to them pickled, and
    each stage fit there gives what it gives in the parent, bit for bit. The temporary
    feature folder they read is gone after the fit, and predicting does not bring it back."""
    images, Y, coords = _image_data()
    params = {**FROZEN_TWO_ROIS, "keep_stage_estimators": True}
    serial = AllForOneEncoder(_image_estimator(), **params).fit(images, Y, coords=coords)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parallel = AllForOneEncoder(_image_estimator(), n_jobs=2, **params).fit(
        images, Y, coords=coords
    )
    parallel.predict(images)
    assert not list(tmp_path.glob("afo_features_*"))
    assert parallel.final_estimator_.memory is None
    naive = parallel.stage_estimators_["naive"][0][0]
    for stage in ("stage1", "stage2", "stage3"):
        for roi in parallel.stage_estimators_[stage]:
            for enc in roi:
                np.testing.assert_array_equal(enc.retina_map_, naive.retina_map_)
                np.testing.assert_array_equal(enc.layer_weights_, naive.layer_weights_)
    np.testing.assert_array_equal(parallel.retina_map_, serial.retina_map_)
    np.testing.assert_array_equal(parallel.predict(images), serial.predict(images))
    pd.testing.assert_frame_equal(parallel.stage_scores_, serial.stage_scores_)


def test_save_load_round_trip(tmp_path):
    X, Y, coords = _data()
    afo = AllForOneEncoder(
        _estimator(), rois=TWO_ROIS, dark_knowledge="in_sample", random_state=0
    ).fit(X, Y, coords=coords)
    path = afo.save(tmp_path / "afo.safetensors")
    loaded = load(path)
    assert isinstance(loaded, AllForOneEncoder)
    np.testing.assert_allclose(loaded.predict(X), afo.predict(X), rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(loaded.stage_scores_, afo.stage_scores_)
    np.testing.assert_array_equal(loaded.roi_labels_, afo.roi_labels_)
    np.testing.assert_array_equal(loaded.rois_, afo.rois_)
    assert loaded.get_params()["estimator"].d_model == 4
    np.testing.assert_allclose(
        loaded.stage_voxel_scores_["stage1"], afo.stage_voxel_scores_["stage1"]
    )


def test_interrupted_recipe_resumes_without_redoing_finished_fits(tmp_path, monkeypatch):
    X, Y, coords = _data()
    calls = []
    original = TopyEncoder.fit

    def crash_in_stage2(self, X, y, **kw):
        if "soft_targets" in kw:
            raise KeyboardInterrupt("simulated crash in stage 2")
        calls.append(1)
        return original(self, X, y, **kw)

    params = {
        "rois": TWO_ROIS,
        "dark_knowledge": "in_sample",
        "random_state": 0,
        "checkpoint_dir": tmp_path,
    }
    monkeypatch.setattr(TopyEncoder, "fit", crash_in_stage2)
    with pytest.raises(KeyboardInterrupt):
        AllForOneEncoder(_estimator(), **params).fit(X, Y, coords=coords)
    assert len(calls) == 2  # stage 1 finished

    def counting(self, X, y, **kw):
        calls.append(1)
        return original(self, X, y, **kw)

    calls.clear()
    monkeypatch.setattr(TopyEncoder, "fit", counting)
    resumed = AllForOneEncoder(_estimator(), **params).fit(X, Y, coords=coords)
    assert len(calls) == 2 + 1  # only stage 2 and stage 3 were fitted
    # the stage-1 models found on disk gave the same teachers as the first run's
    assert np.all(np.isfinite(resumed.stage_scores_.to_numpy()))
    assert resumed.predict(X).shape == (N_SAMPLES, N_VOXELS)


def test_bad_parameters_get_clear_errors():
    X, Y, coords = _data()
    bad = [
        ({"recipe": "mix"}, "recipe must be one of"),
        ({"helpers": "noise"}, "helpers must be one of"),
        ({"dark_knowledge": "oof"}, "dark_knowledge must be one of"),
        ({"n_folds": 1}, "n_folds must be an integer >= 2"),
        ({"n_stage2_rounds": 0}, "n_stage2_rounds"),
        ({"soft_weight": 0.0}, "soft_weight must be a positive"),
        ({"freeze_readout": "yes"}, "freeze_readout must be True or False"),
        ({"rois": "atlas"}, "rois must be 'veroi', 'random'"),
        ({"rois": LABELS[:5]}, "one label per voxel"),
        ({"rois": np.r_[np.nan, np.zeros(11)]}, "contain NaN"),
    ]
    for params, message in bad:
        with pytest.raises(ValueError, match=message):
            AllForOneEncoder(_estimator(), **params).fit(X, Y, coords=coords)
    with pytest.raises(TypeError, match="estimator must be a TopyEncoder"):
        AllForOneEncoder(estimator="ridge").fit(X, Y, coords=coords)


def test_parallel_stage_fits_read_features_computed_once(monkeypatch):
    from joblib import parallel_config

    from afo_encoding.backbones import clear_feature_cache
    from afo_encoding.backbones.pyramid import PyramidBackbone

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    Y = rng.normal(size=(40, 6)).astype(np.float32)
    coords = rng.normal(size=(6, 3))
    computed = []
    forward = PyramidBackbone.forward

    def counting(self, x):
        computed.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(PyramidBackbone, "forward", counting)
    clear_feature_cache()
    estimator = _estimator(backbone_params={"image_size": 16, "n_scales": 2})
    params = {"rois": np.repeat([0, 1], 3), "dark_knowledge": "in_sample", "random_state": 0}
    # threads share torch's random generator: the fits are not reproducible, and said so
    with parallel_config(backend="threading", n_jobs=2), pytest.warns(UserWarning, match="thread"):
        parallel = AllForOneEncoder(estimator, **params).fit(images, Y, coords=coords)
    assert sum(computed) == 40  # once per image for the whole recipe
    assert np.all(np.isfinite(parallel.stage_scores_.to_numpy()))
    assert parallel.predict(images[:5]).shape == (5, 6)


def test_atlas_image_rois_and_niimg_responses():
    import nibabel as nib

    from afo_encoding.simulation import make_retinotopic_dataset

    data = make_retinotopic_dataset(n_images=40, n_voxels=60, image_size=32, random_state=0)
    mask = np.asarray(data.mask.get_fdata()) > 0
    # an atlas image: its left and right halves (in voxel columns of the volume)
    atlas = np.zeros(mask.shape, dtype=np.int16)
    i = np.nonzero(mask)[0]
    atlas[mask] = np.where(i < np.median(i), 1, 2)
    atlas_img = nib.Nifti1Image(atlas, data.mask.affine)
    estimator = _estimator(backbone_params={"image_size": 32, "n_scales": 2}, mask=data.mask)
    afo = AllForOneEncoder(estimator, rois=atlas_img, dark_knowledge="in_sample", random_state=0)
    afo.fit(data.images, data.responses)
    assert afo.rois_.tolist() == [1, 2]
    assert afo.space_.modality == "fmri"
    assert np.bincount(afo.roi_labels_).tolist() == [np.sum(atlas == 1), np.sum(atlas == 2)]
    img = afo.inverse_transform(afo.predict(data.images))
    assert img.shape == (*data.mask.shape, 40)


# ------------------------------------------------------------- scikit-learn's checks

AFO_EXPECTED_FAILURES = {
    "check_regressor_multioutput": (
        "predictions are float32, those of the final TopyEncoder (see test_topy_encoder.py)"
    ),
    "check_methods_sample_order_invariance": (
        "float32 convolutions of the final TopyEncoder give results that differ in the last "
        "bits (~1e-8) with the composition of a batch, above the check's atol of 1e-9"
    ),
    "check_methods_subset_invariance": (
        "same as check_methods_sample_order_invariance: batch-dependent float32 rounding"
    ),
}


@parametrize_with_checks(
    [
        AllForOneEncoder(
            _estimator(), rois="random", n_rois=1, dark_knowledge="in_sample", n_jobs=1,
            random_state=0,
        )
    ],
    expected_failed_checks=lambda est: AFO_EXPECTED_FAILURES,
)  # fmt: skip
def test_scikit_learn_estimator_checks(estimator, check):
    # the whole recipe (stage 1, 2 and 3 with one random ROI) on 2D float features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # grid coords for plain arrays
        check(estimator)
