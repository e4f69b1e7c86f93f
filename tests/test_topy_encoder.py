"""TopyEncoder as a scikit-learn estimator: fit/predict/score, subjects, containers, hooks.

Most tests fit on tiny data (a few dozen images of 32 px, 2 pyramid scales, D = 8, a few
epochs) or on 2D feature arrays; the scientific claims are tested on the simulator in
``test_topy_encoder_science.py``.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from afo_encoding.backbones import FeatureStore, clear_feature_cache
from afo_encoding.backbones.pyramid import PyramidBackbone
from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.metrics import pearson_r, pearson_scorer

TINY = {"d_model": 8, "max_epochs": 3, "n_iter_no_change": 3, "top_k": 2, "device": "cpu"}
IMAGES = {"backbone_params": {"image_size": 32, "n_scales": 2}}


def linear_problem(n=120, n_features=6, n_voxels=5, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    y = X @ rng.standard_normal((n_features, n_voxels)) + noise * rng.standard_normal(
        (n, n_voxels)
    )
    coords = rng.standard_normal((n_voxels, 3))
    return X, y, coords


def image_problem(n=48, n_voxels=6, seed=0):
    """Voxels that respond to the mean luminance of one image quadrant each."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    gray = images.mean(-1)
    quads = np.stack(
        [gray[:, :16, :16], gray[:, :16, 16:], gray[:, 16:, :16], gray[:, 16:, 16:]], 1
    ).mean((2, 3))
    y = quads[:, np.arange(n_voxels) % 4] + rng.standard_normal((n, n_voxels))
    coords = rng.standard_normal((n_voxels, 3))
    return images, y.astype(np.float32), coords


# ------------------------------------------------------------- scikit-learn's checks

EXPECTED_FAILURES = {
    "check_regressor_multioutput": (
        "predictions are float32, the precision the network computes in: float64 would "
        "double the memory of a prediction over 400,000 voxels for no gain"
    ),
    "check_methods_sample_order_invariance": (
        "float32 convolutions give results that differ in the last bits (~1e-8) with the "
        "composition of a batch, above the check's atol of 1e-9"
    ),
    "check_methods_subset_invariance": (
        "same as check_methods_sample_order_invariance: batch-dependent float32 rounding"
    ),
}


@parametrize_with_checks(
    [TopyEncoder(**{**TINY, "max_epochs": 2, "d_model": 4}, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_scikit_learn_estimator_checks(estimator, check):
    # X in these checks is a 2D float array: TopyEncoder reads it as precomputed flat
    # features (one layer, a 1x1 map plus a global vector), see encoders/_base.py
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # grid coords for plain arrays
        check(estimator)


# ------------------------------------------------------------------ fit / predict


@pytest.mark.parametrize("head_solver", ["ridge", "sgd"])
def test_fit_predict_score_on_features(head_solver):
    X, y, coords = linear_problem()
    params = {**TINY, "max_epochs": 15, "d_model": 16, "head_solver": head_solver}
    enc = TopyEncoder(**params, random_state=0)
    assert enc.fit(X[:100], y[:100], coords=coords) is enc
    pred = enc.predict(X[100:])
    assert pred.shape == (20, 5)
    assert pred.dtype == np.float32
    score = enc.score(X[100:], y[100:])
    assert score == pytest.approx(np.mean(pearson_r(y[100:], pred)), abs=1e-6)
    assert score > 0.5
    assert enc.n_features_in_ == 6
    # sgd: the paper's D-vector; ridge: the 6 features sampled at the voxel's point, then
    # the global branch's principal components (of the 1x1 map and the global vector that
    # 2D features make: 6 + 6)
    assert enc.coef_.shape == ((5, 16) if head_solver == "sgd" else (5, 6 + 12))
    assert enc.intercept_.shape == (5,)
    assert enc.retina_map_.shape == (5, 2)
    assert np.all(np.abs(enc.retina_map_) <= 1)
    assert enc.layer_weights_.shape == (5, 1)
    assert enc.validation_scores_.shape == (5,)
    assert enc.n_iter_ == len(enc.history_["val_score"]) <= 15
    assert enc.history_["final_score"] == pytest.approx(enc.validation_scores_.mean(), abs=1e-5)


def test_coef_and_intercept_are_the_heads():
    X, y, coords = linear_problem()
    enc = TopyEncoder(**TINY, random_state=0).fit(X, y, coords=coords)
    head = enc.model_.heads[0]
    width = head.weight.shape[1]  # heads average their features
    np.testing.assert_allclose(enc.coef_ * width, head.weight.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc.intercept_, head.bias.detach().numpy())


def test_fit_and_predict_on_images_use_the_feature_cache(monkeypatch):
    images, y, coords = image_problem()
    clear_feature_cache()
    seen = []
    forward = PyramidBackbone.forward

    def counting(self, x):
        seen.append(len(x))
        return forward(self, x)

    monkeypatch.setattr(PyramidBackbone, "forward", counting)
    enc = TopyEncoder(**TINY, **IMAGES, adapter_width=4, random_state=0)
    enc.fit(images, y, coords=coords)
    assert enc.model_.config["adapter_width"] == 4
    assert sum(seen) == len(images)  # every image once for the whole fit
    pred = enc.predict(images[:10])
    assert sum(seen) == len(images)  # and not again to predict them
    assert pred.shape == (10, 6)
    assert enc.layer_weights_.shape == (6, 2)
    np.testing.assert_allclose(enc.layer_weights_.sum(1), 1, rtol=1e-5)
    assert enc.backbone_ is not None


def test_predict_is_chunked_over_voxels_with_the_same_result(monkeypatch):
    from afo_encoding.training import predict_array

    X, y, coords = linear_problem(n_voxels=7)
    enc = TopyEncoder(**TINY, random_state=0).fit(X, y, coords=coords)
    whole = enc.predict(X)
    calls = []
    readout = type(enc.model_).readout

    def spy(self, encoded, subject, voxel_index=None, **kw):
        calls.append(None if voxel_index is None else len(voxel_index))
        return readout(self, encoded, subject, voxel_index, **kw)

    monkeypatch.setattr(type(enc.model_), "readout", spy)
    store = FeatureStore.from_arrays([X[:, :, None, None]], [X])
    chunked = predict_array(
        enc.model_, store, 0, np.arange(len(X)), 7, batch_size=50, voxel_chunk=3
    )
    assert calls == [3, 3, 1] * 3
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_responses_in_any_units_train_alike():
    # EEG in volts, MEG in tesla: the network sees z-scored voxels and predicts in y's units
    X, y, coords = linear_problem()
    a = TopyEncoder(**TINY, random_state=0).fit(X, y, coords=coords)
    for scale, offset in ((1e-6, 0.0), (10.0, 50.0)):
        b = TopyEncoder(**TINY, random_state=0).fit(X, scale * y + offset, coords=coords)
        np.testing.assert_allclose(
            b.predict(X), scale * a.predict(X) + offset, rtol=1e-3, atol=1e-3 * scale
        )
        np.testing.assert_allclose(b.history_["val_score"], a.history_["val_score"], atol=1e-3)


def test_one_dimensional_y_gives_one_dimensional_predictions():
    X, y, coords = linear_problem(n_voxels=1)
    enc = TopyEncoder(**TINY, random_state=0).fit(X, y[:, 0], coords=coords)
    assert enc.predict(X).shape == (120,)
    assert np.isfinite(enc.score(X, y[:, 0]))


def test_same_seed_same_model_and_clone_is_unfitted():
    X, y, coords = linear_problem()
    a = TopyEncoder(**TINY, random_state=3).fit(X, y, coords=coords)
    b = TopyEncoder(**TINY, random_state=3).fit(X, y, coords=coords)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    c = clone(a)
    assert not hasattr(c, "model_")
    assert c.get_params() == a.get_params()


def test_several_subjects():
    X0, y0, c0 = linear_problem(seed=0, n_voxels=5)
    X1, y1, c1 = linear_problem(seed=1, n_voxels=3, n=80)
    enc = TopyEncoder(**{**TINY, "max_epochs": 10}, random_state=0)
    enc.fit([X0, X1], [y0, y1], coords=[c0, c1])
    assert enc.n_subjects_ == 2
    assert enc.predict(X1, subject=1).shape == (80, 3)
    assert enc.predict(X0).shape == (120, 5)  # subject 0 by default
    assert [c.shape[0] for c in enc.coef_] == [5, 3]
    assert enc.coef_[0].shape[1] == enc.coef_[1].shape[1]  # one readout shared by both
    assert [m.shape for m in enc.retina_map_] == [(5, 2), (3, 2)]
    assert len(enc.space_) == 2
    assert len(enc.history_["val_score_subjects"][-1]) == 2
    assert enc.score(X1, y1, subject=1) > 0.3
    with pytest.raises(ValueError, match="subject must be in"):
        enc.predict(X0, subject=2)
    with pytest.raises(ValueError, match="list of 2 entries"):
        enc.fit([X0, X1], [y0, y1], coords=c0)


def test_niimg_responses_round_trip_through_the_container():
    from afo_encoding.simulation import make_retinotopic_dataset

    data = make_retinotopic_dataset(n_images=40, n_voxels=60, image_size=32, random_state=0)
    enc = TopyEncoder(**TINY, **IMAGES, random_state=0)
    enc.fit(data.images, data.responses)
    assert enc.space_.modality == "fmri"
    assert enc.space_.n_voxels == 60
    pred = enc.predict(data.images)
    img = enc.inverse_transform(pred)
    assert img.shape[-1] == 40
    assert img.shape[:3] == data.mask.shape
    # score reads the container through the fitted space
    assert enc.score(data.images, data.responses) == pytest.approx(
        np.mean(pearson_r(data.Y, pred)), abs=1e-5
    )


def test_epochs_responses_fit_and_score():
    from afo_encoding.simulation import make_retinotopic_dataset

    data = make_retinotopic_dataset(
        n_images=40, n_voxels=60, image_size=32, modality="eeg", random_state=0
    )
    enc = TopyEncoder(**TINY, **IMAGES, random_state=0).fit(data.images, data.responses)
    assert enc.space_.coords.shape[1] == 4
    out = enc.inverse_transform(enc.predict(data.images[:5]))
    assert type(out).__name__ == "EpochsArray"
    assert len(out) == 5


def test_afo_hooks_pass_through_fit():
    X, y, coords = linear_problem(n_voxels=6)
    rng = np.random.default_rng(1)
    y[:, 3:] = rng.standard_normal((120, 3))  # voxels 3-5: noise as ground truth
    teacher = np.zeros_like(y)
    teacher[:, 3:] = X[:, :3]  # ... but a teacher knows them
    weight = np.array([1, 1, 1, 0, 0, 0], float)
    enc = TopyEncoder(**{**TINY, "max_epochs": 12}, random_state=0)
    enc.fit(
        X,
        y,
        coords=coords,
        loss_weight=weight,
        soft_targets=teacher,
        soft_weight=1 - weight,
        monitor=np.arange(3),
    )
    pred = enc.predict(X)
    assert np.mean(pearson_r(X[:, :3], pred[:, 3:])) > 0.5  # learnt from the teacher
    assert enc.validation_scores_.shape == (3,)  # only the monitored voxels
    with pytest.raises(ValueError, match="soft_targets is missing"):
        enc.fit(X, y, coords=coords, soft_weight=1.0)
    with pytest.raises(ValueError, match="one value per voxel"):
        enc.fit(X, y, coords=coords, soft_targets=teacher[:, :4], soft_weight=1.0)
    with pytest.raises(ValueError, match="shape of the targets"):
        enc.fit(X, y, coords=coords, soft_targets=teacher[:100], soft_weight=1.0)


# ----------------------------------------------------------- frozen readout


@pytest.fixture(scope="module")
def readout_source():
    """An encoder fitted on images (2 layers, so a LayerSelector), and its data."""
    images, y, coords = image_problem()
    source = TopyEncoder(**TINY, **IMAGES, head_solver="sgd", random_state=0)
    source.fit(images, y, coords=coords)
    return source, images, y, coords


def _readout_parameters(model):
    return {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if ".retina_mapper." in name or ".layer_selector." in name
    }


def test_frozen_readout_is_copied_and_only_the_rest_trains(readout_source):
    source, images, y, coords = readout_source
    frozen = _readout_parameters(source.model_)
    assert frozen
    assert np.abs(source.retina_map_).max() > 0  # a readout that moved
    seen = []

    def record(info):
        model = info["model"]
        assert all(
            torch.equal(p, frozen[n]) and not p.requires_grad
            for n, p in model.named_parameters()
            if n in frozen
        )
        seen.append(next(model.adapters[0].blocks.parameters()).detach().clone())

    # a strong weight decay on what the optimiser holds, and a soup of several
    # checkpoints (an average would move the frozen weights by rounding); the seed is one
    # whose greedy soup mixes several checkpoints, a precondition asserted below
    params = {**TINY, "top_k": 3, "weight_decay": 0.5, "head_solver": "sgd"}
    enc = TopyEncoder(**params, **IMAGES, random_state=1)
    enc.fit(images, y, coords=coords, frozen_readout=source, callbacks=[record])
    assert len(enc.history_["soup_epochs"]) > 1
    after = _readout_parameters(enc.model_)
    assert all(torch.equal(after[n], frozen[n]) for n in frozen)
    np.testing.assert_array_equal(enc.retina_map_, source.retina_map_)
    np.testing.assert_array_equal(enc.layer_weights_, source.layer_weights_)
    assert not torch.equal(seen[0], seen[-1])  # the adapters train
    assert all(p.requires_grad for p in enc.model_.parameters())  # an ordinary TopyNet
    # a TopyNet works as a source too, and the frozen fit is another run on disk
    enc2 = TopyEncoder(**{**TINY, "max_epochs": 1}, **IMAGES, head_solver="sgd", random_state=1)
    enc2.fit(images, y, coords=coords, frozen_readout=source.model_)
    np.testing.assert_array_equal(enc2.retina_map_, source.retina_map_)


def test_frozen_readout_under_the_ridge_recipe_places_the_voxels_and_skips_sgd(
    readout_source,
):
    source, images, y, coords = readout_source
    seen = []
    enc = TopyEncoder(**TINY, **IMAGES, random_state=1)
    enc.fit(images, y, coords=coords, frozen_readout=source, callbacks=[seen.append])
    np.testing.assert_array_equal(enc.retina_map_, source.retina_map_)
    assert seen == []  # nothing left for SGD: heads in closed form
    assert enc.n_iter_ == 0
    assert enc.score(images, y) > 0.3


def test_frozen_readout_checkpoints_never_mix_with_unfrozen_ones(readout_source, tmp_path):
    source, images, y, coords = readout_source
    params = {**TINY, "max_epochs": 1, "checkpoint_dir": tmp_path, "head_solver": "sgd"}
    TopyEncoder(**params, **IMAGES, random_state=1).fit(images, y, coords=coords)
    TopyEncoder(**params, **IMAGES, random_state=1).fit(
        images, y, coords=coords, frozen_readout=source
    )
    assert len(list(tmp_path.glob("run-*"))) == 2


def test_mismatched_frozen_readout_gets_clear_errors(readout_source):
    source, images, y, coords = readout_source
    enc = TopyEncoder(**{**TINY, "max_epochs": 1}, **IMAGES, random_state=1)
    with pytest.raises(ValueError, match="not fitted"):
        enc.fit(images, y, coords=coords, frozen_readout=TopyEncoder())
    with pytest.raises(TypeError, match="frozen_readout must be a fitted TopyEncoder"):
        enc.fit(images, y, coords=coords, frozen_readout="pyramid")
    with pytest.raises(ValueError, match="fitted on 1 subject.*this fit has 2"):
        enc.fit([images, images], [y, y], coords=[coords, coords], frozen_readout=source)
    with pytest.raises(ValueError, match="Subject 0: frozen_readout has 6 voxel.*this fit 5"):
        enc.fit(images, y[:, :5], coords=coords[:5], frozen_readout=source)
    with pytest.raises(ValueError, match="coordinates differ.*largest difference 0.5"):
        enc.fit(images, y, coords=coords + [0.5, 0, 0], frozen_readout=source)
    with pytest.raises(ValueError, match="reads 2 backbone layer.*this fit 3"):
        TopyEncoder(**TINY, backbone_params={"image_size": 32, "n_scales": 3}, random_state=1).fit(
            images, y, coords=coords, frozen_readout=source
        )
    with pytest.raises(ValueError, match="uniform_layers=False, this fit with uniform_lay"):
        TopyEncoder(**TINY, **IMAGES, uniform_layers=True, random_state=1).fit(
            images, y, coords=coords, frozen_readout=source
        )


# ---------------------------------------------------------------- bad input


def test_bad_input_gets_clear_errors():
    X, y, coords = linear_problem()
    enc = TopyEncoder(**TINY, random_state=0)
    with pytest.raises(ValueError, match="120 images but 100 samples"):
        enc.fit(X, y[:100], coords=coords)
    with pytest.raises(ValueError, match="n_samples=2"):
        enc.fit(X[:2], y[:2], coords=coords)
    with pytest.raises(ValueError, match="validation_fraction"):
        TopyEncoder(validation_fraction=1.0).fit(X, y, coords=coords)
    with pytest.raises(ValueError, match="requires y"):
        enc.fit(X, None)
    enc.fit(X, y, coords=coords)
    with pytest.raises(ValueError, match="6 features"):
        enc.predict(X[:, :4])
    with pytest.raises(TypeError, match="subject must be an int"):
        enc.predict(X, subject="0")


# ------------------------------------------------------ scikit-learn machinery


def test_pipeline_cross_val_score_and_grid_search():
    X, y, coords = linear_problem(n=90)
    base = TopyEncoder(**{**TINY, "max_epochs": 4}, random_state=0)
    pipe = make_pipeline(StandardScaler(), base)
    pipe.fit(X, y, topyencoder__coords=coords)
    assert pipe.predict(X).shape == (90, 5)

    scores = cross_val_score(
        base, X, y, cv=KFold(3), scoring=pearson_scorer, params={"coords": coords}
    )
    assert scores.shape == (3,)
    assert np.all(scores > 0)

    grid = GridSearchCV(
        base,
        {"d_model": [4, 8], "learning_rate": [1e-3, 1e-2]},
        cv=KFold(2),
        scoring=pearson_scorer,
    )
    grid.fit(X, y, coords=coords)
    assert set(grid.best_params_) == {"d_model", "learning_rate"}
    assert len(grid.cv_results_["mean_test_score"]) == 4


def test_pickle_round_trip():
    images, y, coords = image_problem()
    enc = TopyEncoder(**TINY, **IMAGES, random_state=0).fit(images, y, coords=coords)
    back = pickle.loads(pickle.dumps(enc))
    np.testing.assert_array_equal(back.predict(images[:8]), enc.predict(images[:8]))


def test_resume_after_interruption_gives_the_uninterrupted_model(tmp_path):
    X, y, coords = linear_problem()
    params = {**TINY, "max_epochs": 6}
    straight = TopyEncoder(**params, random_state=0).fit(X, y, coords=coords)

    def interrupt(info):
        if info["epoch"] == 2:
            raise KeyboardInterrupt

    enc = TopyEncoder(**params, random_state=0, checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        enc.fit(X, y, coords=coords, callbacks=[interrupt])
    epochs = []
    enc.fit(X, y, coords=coords, callbacks=[lambda info: epochs.append(info["epoch"])])
    assert epochs == [3, 4, 5, 6]
    assert enc.history_["val_score"] == straight.history_["val_score"]
    np.testing.assert_array_equal(enc.predict(X), straight.predict(X))


# ------------------------------------------------------- a RetinaMapper stuck on the border


def test_a_retina_map_stuck_on_the_border_warns():
    from sklearn.exceptions import ConvergenceWarning

    images, y, coords = image_problem()
    params = {**TINY, "max_epochs": 2, "head_solver": "sgd"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a healthy fit stays quiet
        source = TopyEncoder(**params, **IMAGES, random_state=0).fit(images, y, coords=coords)
    # what too large a step does: the MLP's output runs far out and tanh saturates (the
    # frozen readout carries the stuck map into a new fit unchanged)
    with torch.no_grad():
        source.model_.subjects[0].retina_mapper.mlp[-1].bias.fill_(30.0)
    with pytest.warns(ConvergenceWarning, match=r"put 100% of the voxels on the border"):
        enc = TopyEncoder(**params, **IMAGES, random_state=0).fit(
            images, y, coords=coords, frozen_readout=source
        )
    assert np.all(np.abs(enc.retina_map_) >= 0.99)


def test_the_retina_mapper_trains_at_its_own_rate():
    from afo_encoding.training import TrainingConfig
    from afo_encoding.training.engine import _parameter_groups

    images, y, coords = image_problem()
    enc = TopyEncoder(**TINY, **IMAGES, retina_lr_scale=0.25, random_state=0).fit(
        images, y, coords=coords
    )
    config = TrainingConfig(learning_rate=0.01, lr_scales=(("retina_mapper", 0.25),))
    groups = _parameter_groups(enc.model_, config)
    assert [g["lr"] for g in groups] == [0.01, 0.0025]
    slow = {id(p) for p in groups[1]["params"]}
    names = [n for n, p in enc.model_.named_parameters() if id(p) in slow]
    assert names
    assert all(".retina_mapper." in n for n in names)
    assert sum(len(g["params"]) for g in groups) == len(list(enc.model_.parameters()))
    for bad in (0, -1.0, "fast", True):
        with pytest.raises(ValueError, match="retina_lr_scale must be a positive number"):
            TopyEncoder(**TINY, **IMAGES, retina_lr_scale=bad).fit(images, y, coords=coords)
    with pytest.raises(ValueError, match="lr_scales must be pairs"):
        TrainingConfig(lr_scales=(("retina_mapper", 0.0),))


# ------------------------------------------------------------------ the ridge recipe


def test_image_folds_hold_out_whole_images():
    from sklearn.model_selection import KFold

    from afo_encoding.encoders.ridge_recipe import image_folds

    ids = ["a", "b", "a", "c", "d", "b", "e", "f", "g", "h"]
    folds = image_folds(ids, 5)
    assert len(folds) == 4  # 8 distinct images: at most 4 folds of 2
    held = np.sort(np.concatenate([test for _, test in folds]))
    np.testing.assert_array_equal(held, np.arange(10))
    for train, test in folds:
        assert not {ids[i] for i in train} & {ids[i] for i in test}  # repeats stay together
    # in order of appearance, as an unshuffled K-fold: the linear probe's folds
    np.testing.assert_array_equal(image_folds(list("abcdefgh"), 4)[0][1], [0, 1])
    shuffled = image_folds(list("abcdefgh"), KFold(4, shuffle=True, random_state=0))
    assert len(shuffled) == 4
    with pytest.raises(ValueError, match="at least 4 distinct images"):
        image_folds(["a", "b", "c", "a"], 5)


def test_blended_targets_are_the_weighted_mean_of_truth_and_teacher():
    from afo_encoding.encoders.ridge_recipe import blended_targets

    Y = np.array([[1.0, 2.0, 3.0]])
    teacher = np.array([[5.0, 6.0, 7.0]])
    out = blended_targets(Y, np.array([1.0, 0.0, 0.0]), teacher, np.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(out, [[3.0, 6.0, 3.0]])  # mix, teacher only, neither
    assert blended_targets(Y) is Y


def test_stacking_weight_turns_off_what_predicts_nothing_and_undoes_overshrinkage():
    from afo_encoding.encoders.ridge_recipe import stacking_weight

    rng = np.random.default_rng(0)
    residual = rng.standard_normal((500, 1))
    noise = rng.standard_normal((500, 1))
    local = np.hstack([residual, 0.5 * residual, noise, -residual, np.zeros((500, 1))])
    weight = stacking_weight(np.repeat(residual, 5, axis=1), local)
    np.testing.assert_allclose(weight[:2], [1.0, 2.0])  # right, and shrunk by half
    assert weight[2] < 0.15  # unrelated: close to off
    assert weight[3] == 0  # anti-correlated: off, not negative
    assert weight[4] == 0  # constant: off


def test_ridge_recipe_validation_scores_are_cross_validated_and_honest():
    X, y, coords = linear_problem(n=120, noise=2.0)
    enc = TopyEncoder(**TINY, random_state=0).fit(X[:100], y[:100], coords=coords)
    held_out = pearson_r(y[100:], enc.predict(X[100:]))
    # out-of-fold r over the 100 training images, not the (higher) fit on them
    assert np.all(np.abs(enc.validation_scores_ - held_out) < 0.25)
    assert enc.history_["final_score"] == pytest.approx(enc.validation_scores_.mean())
    train_r = pearson_r(y[:100], enc.predict(X[:100]))
    assert enc.validation_scores_.mean() < train_r.mean()


def test_ridge_recipe_saves_and_loads_with_its_layer_shares(tmp_path):
    from afo_encoding.io import load

    images, y, coords = image_problem()
    enc = TopyEncoder(**TINY, **IMAGES, random_state=0).fit(images, y, coords=coords)
    assert enc.layer_weights_.shape == (y.shape[1], 2)
    np.testing.assert_allclose(enc.layer_weights_.sum(1), 1, rtol=1e-5)
    back = load(enc.save(tmp_path / "enc"))
    np.testing.assert_array_equal(back.layer_weights_, enc.layer_weights_)
    np.testing.assert_array_equal(back.predict(images), enc.predict(images))
    assert back.get_params()["head_solver"] == "ridge"


def test_auto_settings_follow_the_head_solver():
    from afo_encoding.encoders.topy import RECIPE_DEFAULTS

    enc = TopyEncoder()
    assert enc._recipe("learning_rate") == RECIPE_DEFAULTS["ridge"]["learning_rate"]
    enc.set_params(head_solver="sgd")
    assert RECIPE_DEFAULTS["sgd"] == {  # the paper's recipe (section 4.6)
        "sigma": 0.01, "max_epochs": 200, "batch_size": 128, "learning_rate": 3e-3,
        "retina_lr_scale": 1.0, "n_iter_no_change": 20,
    }  # fmt: skip
    assert enc._recipe("sigma") == 0.01
    assert enc._recipe("batch_size") == 128
    # the ridge recipe's SGD steps only place the readout: half the paper's batch
    assert TopyEncoder()._recipe("batch_size") == 64
    assert TopyEncoder(batch_size=32)._recipe("batch_size") == 32
    assert TopyEncoder(head_solver="sgd", sigma=0.2)._recipe("sigma") == 0.2
    X, y, coords = linear_problem()
    with pytest.raises(ValueError, match=r"head_solver must be one of \{'ridge', 'sgd'\}"):
        TopyEncoder(head_solver="lbfgs").fit(X, y, coords=coords)
