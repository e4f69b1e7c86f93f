"""The fitting engine (afo_encoding.training) on a tiny stand-in model and in-memory features.

The stand-in follows TopyNet's forward contract (``forward(features, subject, voxel_index,
return_regularization)``) with a linear head per subject on the global features, so these
tests exercise the loop, the hooks and the bookkeeping in a fraction of a second each.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afo_encoding.backbones import FeatureStore
from afo_encoding.metrics import pearson_r
from afo_encoding.training import (
    EngineConfig,
    MixedSubjectSampler,
    PearsonAccumulator,
    SubjectData,
    TopKCheckpoints,
    TrainingConfig,
    fit_model,
    greedy_soup,
    predict_array,
    voxel_loss_sum,
)

torch.set_num_threads(1)


class StandIn(torch.nn.Module):
    """TopyNet's forward contract on a per-subject linear head over the global features."""

    def __init__(self, n_features: int, n_voxels: list[int], noise: float = 0.05):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(n_features, n) for n in n_voxels)
        self.noise = noise

    def forward(self, features, subject, voxel_index=None, return_regularization=False):
        x = torch.cat(features[1], dim=1)
        if self.training:  # like the RetinaMapper's noise: consumes the torch generator
            x = x + self.noise * torch.randn_like(x)
        head = self.heads[subject]
        w, b = head.weight, head.bias
        if voxel_index is not None:
            w, b = w[voxel_index], b[voxel_index]
        pred = x @ w.T + b
        if return_regularization:
            return pred, 1e-4 * (w**2).mean()
        return pred


def flat(X):
    """Flat features as one layer (a 1x1 map and a global vector)."""
    X = np.asarray(X, dtype=np.float32)
    return FeatureStore.from_arrays([X[:, :, None, None]], [X])


def make_subject(n_samples=120, n_features=8, n_voxels=20, noise=0.3, seed=0, **hooks):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)).astype(np.float32)
    W = rng.standard_normal((n_features, n_voxels)).astype(np.float32)
    Y = X @ W + noise * rng.standard_normal((n_samples, n_voxels)).astype(np.float32)
    n_val = n_samples // 5
    data = SubjectData(
        flat(X), Y, np.arange(n_val, n_samples), np.arange(n_val), **hooks
    )
    return data, X, Y


FAST = {"max_epochs": 8, "batch_size": 32, "learning_rate": 0.05, "n_iter_no_change": 20}
CPU = EngineConfig(accelerator="cpu")


def fit(data, n_voxels, config=None, **kwargs):
    subjects = data if isinstance(data, list) else [data]
    torch.manual_seed(0)
    model = StandIn(8, n_voxels)
    result = fit_model(model, subjects, config or TrainingConfig(**FAST), CPU, **kwargs)
    return model, result


# ---------------------------------------------------------------------------- losses


def test_loss_weight_masks_ground_truth_and_soft_targets_add_their_own_term():
    pred = torch.zeros(4, 3)
    target = torch.ones(4, 3)
    full = voxel_loss_sum(pred, target, beta=0.01)
    masked = voxel_loss_sum(pred, target, weight=torch.tensor([1.0, 0.0, 0.0]), beta=0.01)
    assert float(masked) == pytest.approx(float(full) / 3)
    # far from the target, smooth-L1 is |x| - beta / 2
    assert float(full) == pytest.approx(12 * (1 - 0.005))
    soft = voxel_loss_sum(
        pred,
        target,
        weight=torch.zeros(3),
        soft_target=2 * target,
        soft_weight=torch.tensor([0.0, 0.0, 1.0]),
    )
    assert float(soft) == pytest.approx(4 * (2 - 0.005))
    with pytest.raises(ValueError, match="soft_weight"):
        voxel_loss_sum(pred, target, soft_target=target)


# ---------------------------------------------------------------------- subject data


def test_missing_or_misshaped_teacher_is_an_error_never_zeros():
    with pytest.raises(ValueError, match="soft_targets is missing"):
        make_subject(soft_weight=1.0)
    with pytest.raises(ValueError, match="soft_weight is missing"):
        make_subject(soft_targets=np.zeros((120, 20)))
    with pytest.raises(ValueError, match="shape of the targets"):
        make_subject(soft_targets=np.zeros((120, 19)), soft_weight=1.0)
    nan_teacher = np.zeros((120, 20))
    nan_teacher[50, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_subject(soft_targets=nan_teacher, soft_weight=1.0)


def test_subject_data_checks_shapes_and_monitor():
    data, _, _ = make_subject(monitor=np.arange(20) < 5)
    np.testing.assert_array_equal(data.monitor_index, np.arange(5))
    with pytest.raises(ValueError, match="loss_weight"):
        make_subject(loss_weight=np.ones(3))
    with pytest.raises(ValueError, match="monitor"):
        make_subject(monitor=np.array([25]))
    with pytest.raises(ValueError, match="120 samples but the targets 100"):
        SubjectData(
            flat(np.zeros((120, 2))),
            np.zeros((100, 3)),
            np.arange(50),
            np.arange(50, 60),
        )
    with pytest.raises(ValueError, match="at least 2 samples"):
        SubjectData(
            flat(np.zeros((10, 2))),
            np.ones((10, 3)),
            np.arange(9),
            np.arange(9, 10),
        )


# --------------------------------------------------------------------------- sampler


def test_batches_mix_subjects_in_proportion_and_cover_every_sample():
    sampler = MixedSubjectSampler(
        [300, 100], [50, 20000], batch_size=128, n_voxels_per_step=8000, seed=0
    )
    assert sampler.per_subject == [96, 32]
    seen = [set(), set()]
    for _ in range(4):  # 4 steps of 96 cover the 300 samples of subject 0
        step = sampler.next_step()
        (rows0, vox0), (rows1, vox1) = step
        assert len(rows0) == 96
        assert len(rows1) == 32
        assert vox0 is None  # fewer voxels than the cap: all
        assert len(vox1) == 8000
        assert len(np.unique(vox1)) == 8000
        seen[0] |= set(rows0.tolist())
        seen[1] |= set(rows1.tolist())
    assert seen == [set(range(300)), set(range(100))]
    assert sampler.steps_per_epoch(0.1, 4) == 4
    assert sampler.steps_per_epoch(1.0, 1) == 4


def test_sampler_state_round_trip_and_ranks_partition_the_batch():
    a = MixedSubjectSampler([50], [10], 8, None, seed=3)
    a.next_step()
    state = a.state_dict()
    expected = [a.next_step()[0][0] for _ in range(5)]
    b = MixedSubjectSampler([50], [10], 8, None, seed=99)
    b.load_state_dict(state)
    np.testing.assert_array_equal(expected, [b.next_step()[0][0] for _ in range(5)])

    ranks = [
        MixedSubjectSampler([50], [10], 8, None, seed=1, world_size=2, rank=r) for r in range(2)
    ]
    r0, r1 = (s.next_step()[0][0] for s in ranks)
    assert len(r0) == len(r1) == 8
    assert not set(r0) & set(r1)


# ------------------------------------------------------------------ validation maths


def test_streaming_pearson_matches_the_metric():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((50, 7))
    p = t + rng.standard_normal((50, 7))
    p[:, 3] = 1.0  # constant prediction -> 0, as metrics.pearson_r
    acc, other = PearsonAccumulator(7), PearsonAccumulator(7)
    acc.update(slice(0, 4), torch.tensor(t[:30, :4]), torch.tensor(p[:30, :4]))
    acc.update(slice(4, 7), torch.tensor(t[:30, 4:]), torch.tensor(p[:30, 4:]))
    other.update(slice(0, 7), torch.tensor(t[30:]), torch.tensor(p[30:]))
    acc.merge_(other)
    np.testing.assert_allclose(acc.pearson_r(), pearson_r(t, p), atol=1e-10)


def test_predict_array_is_chunked_and_exact():
    data, X, _ = make_subject()
    model = StandIn(8, [20])
    whole = predict_array(model, data.features, 0, np.arange(120), 20)
    chunked = predict_array(
        model, data.features, 0, np.arange(120), 20, batch_size=7, voxel_chunk=3
    )
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        expected = model.heads[0](torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- top-k and soup


def test_top_k_keeps_the_best_files_only(tmp_path):
    model = StandIn(2, [3])
    topk = TopKCheckpoints(2, tmp_path)
    for epoch, score in enumerate([0.1, 0.5, 0.3, 0.2, 0.6], start=1):
        with torch.no_grad():
            model.heads[0].bias.fill_(epoch)
        topk.offer(score, epoch, model)
    assert [e["epoch"] for e in topk.entries] == [5, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top-epoch0002.pt", "top-epoch0005.pt"]
    assert float(topk.load(2)["heads.0.bias"][0]) == 2


def test_greedy_soup_uses_each_ingredient_once_and_only_if_it_helps():
    # weights are scalars; validation prefers values close to 1
    values = {0: 0.0, 1: 2.0, 2: 1.4, 3: -5.0}
    candidates = [(1 - abs(v - 1), lambda v=v: {"w": torch.tensor(v)}) for v in values.values()]

    def evaluate(state):
        return 1 - abs(float(state["w"]) - 1)

    state, score, used = greedy_soup(candidates, evaluate)
    # order by score: 2 (1.4, 0.6), then 0 and 1 (0.0 each) and 3 (-5.0).
    # 1.4 + 0.0 -> 0.7 (0.7 > 0.6, kept); then + 2.0 -> 1.133 (0.867, kept); -5 rejected
    assert used == [2, 0, 1]
    assert float(state["w"]) == pytest.approx((1.4 + 0.0 + 2.0) / 3)
    assert score == pytest.approx(1 - abs((1.4 + 0.0 + 2.0) / 3 - 1))
    # a single candidate that nothing improves stays alone, never counted twice
    state, score, used = greedy_soup(candidates[2:3], evaluate)
    assert used == [0]
    assert float(state["w"]) == pytest.approx(1.4)
    # a tensor equal in every ingredient (a frozen parameter) comes out bit for bit (the
    # average of three equal float32 tensors differs from them in ~15% of the entries)
    frozen = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    with_frozen = [(c[0], lambda c=c: {**c[1](), "f": frozen.clone()}) for c in candidates]
    state, _, used = greedy_soup(with_frozen, evaluate)
    assert used == [2, 0, 1]
    assert torch.equal(state["f"], frozen)


# ----------------------------------------------------------------------- fit_model


def test_fit_learns_and_records_history():
    data, _, _ = make_subject()
    model, result = fit(data, [20], random_state=0)
    h = result.history
    assert h["epoch"] == list(range(1, 9))
    assert len(h["train_loss"]) == len(h["val_score"]) == 8
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert h["val_score"][-1] > 0.9
    assert h["final_score"] >= h["best_score"]
    assert h["best_epoch"] in h["soup_epochs"]
    assert len(set(h["soup_epochs"])) == len(h["soup_epochs"])
    # the final weights are in the model
    pred = predict_array(model, data.features, 0, data.val_index, 20)
    r = pearson_r(data.targets[data.val_index], pred).mean()
    assert r == pytest.approx(h["final_score"], abs=1e-5)


def test_fit_is_reproducible_with_a_seed():
    data, _, _ = make_subject()
    _, a = fit(data, [20], random_state=1)
    _, b = fit(data, [20], random_state=1)
    assert a.history["val_score"] == b.history["val_score"]
    for key in a.state_dict:
        torch.testing.assert_close(a.state_dict[key], b.state_dict[key])


def test_early_stopping_stops_when_validation_stalls():
    data, _, _ = make_subject(noise=100.0)  # nothing to learn: validation r wanders
    config = TrainingConfig(**{**FAST, "max_epochs": 50, "n_iter_no_change": 2})
    _, result = fit(data, [20], config, random_state=0)
    h = result.history
    assert h["stopped_early"]
    assert len(h["epoch"]) < 50
    best = int(np.argmax(h["val_score"]))
    assert len(h["epoch"]) - 1 - best == 2


def test_several_subjects_train_together():
    d0, _, _ = make_subject(seed=0, n_voxels=20)
    d1, _, _ = make_subject(seed=1, n_voxels=5, n_samples=60)
    model, result = fit([d0, d1], [20, 5], random_state=0)
    assert len(result.history["val_score_subjects"][-1]) == 2
    assert min(result.history["val_score_subjects"][-1]) > 0.8
    assert len(result.per_voxel_scores) == 2
    assert result.per_voxel_scores[1].shape == (5,)


def test_monitor_restricts_validation_to_chosen_voxels():
    data, _, Y = make_subject()
    # voxels 10.. carry pure noise: monitoring them alone gives a score near 0
    rng = np.random.default_rng(5)
    data.targets[:, 10:] = rng.standard_normal((120, 10))
    noisy = SubjectData(
        data.features, data.targets, data.train_index, data.val_index, monitor=np.arange(10, 20)
    )
    clean = SubjectData(
        data.features, data.targets, data.train_index, data.val_index, monitor=np.arange(10)
    )
    _, r_noisy = fit(noisy, [20], random_state=0)
    _, r_clean = fit(clean, [20], random_state=0)
    assert r_clean.history["best_score"] > 0.9
    assert r_noisy.history["best_score"] < 0.5
    assert r_noisy.per_voxel_scores[0].shape == (10,)


def test_a_subject_may_monitor_no_voxel_but_not_every_subject():
    d0, _, _ = make_subject(seed=0, n_voxels=20, monitor=np.arange(20) < 5)
    d1, _, _ = make_subject(seed=1, n_voxels=5, n_samples=60, monitor=np.zeros(5, bool))
    _, result = fit([d0, d1], [20, 5], random_state=0)
    # the validation score is the mean over subject 0's five monitored voxels
    assert result.per_voxel_scores[1].shape == (0,)
    assert result.history["final_score"] == pytest.approx(result.per_voxel_scores[0].mean())
    last = result.history["val_score_subjects"][-1]
    assert last[0] == pytest.approx(result.history["val_score"][-1])
    assert np.isnan(last[1])
    empty0, _, _ = make_subject(seed=0, n_voxels=20, monitor=np.array([], dtype=int))
    with pytest.raises(ValueError, match="no voxel in any of the 2 subject"):
        fit([empty0, d1], [20, 5], random_state=0)


def test_loss_weight_zero_voxels_do_not_learn_and_soft_targets_teach():
    data, X, Y = make_subject()
    weight = np.ones(20)
    weight[:10] = 0
    masked = SubjectData(
        data.features,
        Y,
        data.train_index,
        data.val_index,
        loss_weight=weight,
        monitor=np.arange(10, 20),
    )
    _, result = fit(masked, [20], random_state=0)
    model = StandIn(8, [20])
    model.load_state_dict(result.state_dict)
    pred = predict_array(model, data.features, 0, data.val_index, 20)
    r = pearson_r(Y[data.val_index], pred)
    assert r[10:].mean() > 0.9
    assert r[:10].mean() < 0.5  # never saw their ground truth

    # the same voxels learn from a teacher alone (dark knowledge)
    teacher = Y.copy()
    taught = SubjectData(
        data.features,
        np.zeros_like(Y) + np.arange(120)[:, None] % 3,
        data.train_index,
        data.val_index,
        loss_weight=0.0,
        soft_targets=teacher,
        soft_weight=1.0,
    )
    _, result = fit(taught, [20], random_state=0)
    model.load_state_dict(result.state_dict)
    pred = predict_array(model, data.features, 0, data.val_index, 20)
    assert pearson_r(Y[data.val_index], pred).mean() > 0.9


def test_voxel_subsampling_still_trains_every_voxel():
    data, _, _ = make_subject(n_voxels=40)
    config = TrainingConfig(**{**FAST, "n_voxels_per_step": 7, "max_epochs": 15})
    _, result = fit(data, [40], config, random_state=0)
    assert result.per_voxel_scores[0].min() > 0.5


def test_bf16_mixed_precision_runs_on_cpu():
    data, _, _ = make_subject()
    model = StandIn(8, [20])
    result = fit_model(
        model,
        [data],
        TrainingConfig(**FAST),
        EngineConfig(accelerator="cpu", precision="bf16-mixed"),
        random_state=0,
    )
    assert result.history["final_score"] > 0.8


class Interrupt:
    def __init__(self, at):
        self.at = at

    def __call__(self, info):
        if info["epoch"] == self.at:
            raise KeyboardInterrupt


def test_interrupted_fit_resumes_where_it_stopped_with_identical_result(tmp_path):
    data, _, _ = make_subject()
    config = TrainingConfig(**{**FAST, "top_k": 3})
    _, straight = fit(data, [20], config, random_state=0)

    with pytest.raises(KeyboardInterrupt):
        fit(data, [20], config, random_state=0, checkpoint_dir=tmp_path, callbacks=[Interrupt(3)])
    (run,) = tmp_path.iterdir()
    assert (run / "last.pt").exists()
    assert (run / "run.json").exists()

    epochs = []
    _, resumed = fit(
        data,
        [20],
        config,
        random_state=0,
        checkpoint_dir=tmp_path,
        callbacks=[lambda info: epochs.append(info["epoch"])],
    )
    assert epochs == [4, 5, 6, 7, 8]  # continues after epoch 3, does not restart
    assert resumed.history["val_score"] == straight.history["val_score"]
    assert resumed.history["soup_epochs"] == straight.history["soup_epochs"]
    for key in straight.state_dict:
        torch.testing.assert_close(resumed.state_dict[key], straight.state_dict[key])
    assert len(list(run.glob("top-epoch*.pt"))) == 3

    # a finished run only rebuilds its soup
    epochs.clear()
    _, again = fit(
        data,
        [20],
        config,
        random_state=0,
        checkpoint_dir=tmp_path,
        callbacks=[lambda info: epochs.append(info["epoch"])],
    )
    assert epochs == []
    assert again.history["final_score"] == pytest.approx(straight.history["final_score"])
    # another seed or other data get a run folder of their own
    fit(data, [20], config, random_state=1, checkpoint_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_bad_recipe_values_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ValueError, match="epoch_fraction"):
        TrainingConfig(epoch_fraction=1.5)
    with pytest.raises(ValueError, match="top_k"):
        TopKCheckpoints(0)
