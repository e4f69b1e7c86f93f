"""veROI: k-means + size-aware Ward on head weights."""

import numpy as np
import pytest
from scipy.cluster.hierarchy import is_valid_linkage, ward
from sklearn.metrics import adjusted_rand_score

from afo_encoding.parcellation import veroi, ward_linkage


def _planted(n_per=(300, 200, 100), dim=16, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1, (len(n_per), dim))
    w = np.concatenate([rng.normal(m, spread, (n, dim)) for m, n in zip(means, n_per)])
    truth = np.repeat(np.arange(len(n_per)), n_per)
    return w, truth


def test_ward_linkage_equals_scipy_on_single_points():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 5))
    ours, ref = ward_linkage(x), ward(x)
    np.testing.assert_allclose(ours[:, 2], ref[:, 2], rtol=1e-10)
    np.testing.assert_array_equal(ours[:, 3], ref[:, 3])
    assert is_valid_linkage(ours)


def test_ward_weights_points_by_their_counts():
    # a heavy point pulls the merge: Ward's cost grows with the sizes being merged
    x = np.array([[0.0], [1.0], [2.2]])
    light = ward_linkage(x, counts=np.array([1, 1, 1]))
    heavy = ward_linkage(x, counts=np.array([1, 100, 100]))
    assert set(light[0, :2]) == {0, 1}  # the two closest points merge first
    assert set(heavy[0, :2]) == {0, 1}  # 1 point joining 100 is cheaper than 100 joining 100
    # the cost of merging two weighted points is n_a n_b / (n_a + n_b) * d^2
    two = ward_linkage(np.array([[0.0], [3.0]]), counts=np.array([2, 6]))
    assert two[0, 2] == pytest.approx(np.sqrt(2 * 2 * 6 / 8 * 9))


def test_recovers_planted_clusters():
    w, truth = _planted()
    labels, linkage = veroi(w, n_rois=3, n_prefilter=60, random_state=0)
    assert adjusted_rand_score(truth, labels) > 0.99
    assert linkage.shape == (59, 4)
    assert is_valid_linkage(linkage)
    assert sorted(np.unique(labels)) == [0, 1, 2]


def test_cut_by_distance_matches_cut_by_count():
    w, truth = _planted(spread=0.05)
    _, linkage = veroi(w, n_rois=3, n_prefilter=50, random_state=0)
    # any threshold between the 3rd-from-top and 2nd-from-top merges yields 3 clusters
    threshold = 0.5 * (linkage[-3, 2] + linkage[-2, 2])
    labels, _ = veroi(w, distance_threshold=threshold, n_prefilter=50, random_state=0)
    assert len(np.unique(labels)) == 3
    assert adjusted_rand_score(truth, labels) > 0.99


def test_subjects_share_labels_and_come_back_split():
    w, truth = _planted()
    order = np.random.default_rng(2).permutation(len(w))
    w, truth = w[order], truth[order]
    labels, _ = veroi([w[:250], w[250:]], n_rois=3, n_prefilter=40, random_state=0)
    assert [len(x) for x in labels] == [250, 350]
    assert adjusted_rand_score(truth, np.concatenate(labels)) > 0.99


class _Fitted:
    def __init__(self, coef):
        self.coef_ = coef


def test_several_fits_are_concatenated_not_averaged():
    # two fits whose weight bases are permuted: averaging would blur, concatenating does not
    w, truth = _planted()
    perm = np.random.default_rng(3).permutation(w.shape[1])
    fits = [_Fitted(w), _Fitted(w[:, perm] * -1.0)]
    labels, _ = veroi(fits, n_rois=3, n_prefilter=40, random_state=0)
    assert adjusted_rand_score(truth, labels) > 0.99
    single, _ = veroi(_Fitted(w), n_rois=3, n_prefilter=40, random_state=0)
    assert isinstance(single, np.ndarray)


def test_normalize_groups_by_direction_not_strength():
    rng = np.random.default_rng(4)
    direction = rng.normal(size=(2, 8))
    gains = rng.uniform(0.2, 5.0, 400)  # head strength varies with voxel SNR
    truth = np.repeat([0, 1], 200)
    w = direction[truth] * gains[:, None] + rng.normal(0, 0.01, (400, 8))
    labels, _ = veroi(w, n_rois=2, n_prefilter=400, normalize=True, random_state=0)
    assert adjusted_rand_score(truth, labels) == 1.0


def test_large_voxel_counts_stay_linear_in_memory():
    # 200k voxels: a voxel x voxel matrix would need 320 GB; mini-batch k-means does not
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 4, 200_000)
    w = rng.normal(0, 0.1, (200_000, 8)) + 3 * np.eye(8)[truth]
    labels, linkage = veroi(w, n_rois=4, n_prefilter=100, random_state=0)
    assert adjusted_rand_score(truth, labels) > 0.99
    assert linkage.shape[0] <= 99


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of n_rois and distance_threshold"),
        ({"n_rois": 3, "distance_threshold": 1.0}, "exactly one"),
        ({"n_rois": 0}, "n_rois must be an integer between 1"),
        ({"n_rois": 500, "n_prefilter": 50}, "Raise n_prefilter"),
        ({"distance_threshold": -1.0}, "distance_threshold must be > 0"),
        ({"n_rois": 2, "n_prefilter": 1}, "n_prefilter must be an integer >= 2"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    w, _ = _planted()
    with pytest.raises(ValueError, match=match):
        veroi(w, **kwargs)


def test_bad_weights_are_named():
    w = np.ones((10, 3))
    w[[1, 4], 0] = np.nan
    with pytest.raises(ValueError, match="2 voxels have NaN"):
        veroi(w, n_rois=2)
    with pytest.raises(ValueError, match="shape"):
        veroi(np.ones(10), n_rois=2)
    with pytest.raises(TypeError, match="weight array, a fitted encoder"):
        veroi("weights.npy", n_rois=2)
    with pytest.raises(ValueError, match="same voxels"):
        veroi([_Fitted(np.ones((10, 3))), _Fitted(np.ones((12, 3)))], n_rois=2)
    with pytest.raises(ValueError, match="nothing to parcellate"):
        veroi(np.ones((10, 3)), n_rois=2, n_prefilter=10)
