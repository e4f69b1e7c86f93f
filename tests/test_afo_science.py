"""All-for-One science on the simulator, checked against the planted truth.

- Dark knowledge done right: the teacher predictions that the stage-2 helpers learn are made
  out of fold, so they do not carry the training images' measurement noise; in-sample
  teachers (the paper's variant) do. The simulator knows the noiseless ``signal``, so the
  noise of every training response is known exactly.
- veROI recovers the planted areas from a fitted model's head weights (adjusted Rand index
  far above the one of random labels).
- The recipe's bottom line (Table 3): its final all-ROI model predicts the planted
  noiseless responses of unseen images at least as well as one naive all-ROI model
  (NaiveMix). Stage 2 beating stage 1 is not tested: it does not hold at the sizes we can
  run, neither with the simulator's own feature model (even a perfect teacher gains the
  simulated ROIs only a few hundredths of r, ``benchmarks/bench_afo.py --transfer``) nor
  through a pretrained network that is not it (``bench_afo.py --table3 --backbone
  efficientnet-lite0``: stage 2 − stage 1 = −.001, −.001, −.007 test r over 3 seeds; the
  user guide has the table).

The simulated areas read Gabor energy at wavelengths 2, 4 and 8 px of 32-px images, the
first three levels of the pyramid backbone built with ``wavelength=2`` (see
``test_topy_encoder_science.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from afo_encoding.encoders.afo import AllForOneEncoder
from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.metrics import pearson_r
from afo_encoding.parcellation import veroi
from afo_encoding.simulation import make_retinotopic_dataset

pytestmark = pytest.mark.slow

ENCODER = {
    "head_solver": "sgd",  # the paper's recipe, whose networks the stages distil
    "backbone_params": {"image_size": 32, "wavelength": 2.0},
    "d_model": 16,
    "batch_size": 64,
    "sigma": 0.1,
    "top_k": 2,
    "n_voxels_per_step": None,
    "device": "cpu",
    "random_state": 0,
}


def _simulate(n_images, n_voxels, snr):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_retinotopic_dataset(
            n_images=n_images, image_size=32, n_voxels=n_voxels, snr=snr, random_state=0
        )


class _TeacherSeen(Exception):
    """Raised to stop the recipe once the first stage-2 fit got its teacher."""


def _first_teacher(monkeypatch, data, dark_knowledge):
    """The soft targets the first stage-2 fit receives (the recipe stops there), and the
    training samples they are for."""
    original = TopyEncoder.fit

    def fit(self, X, y, **kw):
        if "soft_targets" in kw:
            raise _TeacherSeen(kw["soft_targets"], y)
        return original(self, X, y, **kw)

    monkeypatch.setattr(TopyEncoder, "fit", fit)
    afo = AllForOneEncoder(
        TopyEncoder(**ENCODER, max_epochs=15, n_iter_no_change=15),
        rois=np.zeros(data.Y.shape[1]),  # one ROI: stage 1 is one all-voxel model per fold
        dark_knowledge=dark_knowledge,
        n_folds=2,
        random_state=0,
    )
    with pytest.raises(_TeacherSeen) as seen:
        afo.fit(data.images, data.Y, coords=data.coords)
    monkeypatch.setattr(TopyEncoder, "fit", original)
    teacher, y = seen.value.args
    row_of = {row.tobytes(): i for i, row in enumerate(np.asarray(data.Y))}
    return teacher, np.array([row_of[row.tobytes()] for row in np.asarray(y)])


def _mean_voxel_correlation(a, b):
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return float(np.mean(np.mean(a * b, axis=0)))


def test_out_of_fold_teachers_do_not_copy_the_training_noise(monkeypatch):
    data = _simulate(n_images=400, n_voxels=60, snr=1.0)
    signal = data.signal.astype(np.float64)
    Y = data.Y.astype(np.float64)
    # the measurement noise of every training response: Y minus its projection on the
    # planted noiseless signal, voxel by voxel
    s = signal - signal.mean(0)
    beta = (s * (Y - Y.mean(0))).sum(0) / (s * s).sum(0)
    noise = Y - Y.mean(0) - beta * s
    copied = {}
    for mode in ("in_sample", "out_of_fold"):
        teacher, rows = _first_teacher(monkeypatch, data, mode)
        copied[mode] = _mean_voxel_correlation(teacher, noise[rows])
    # a prediction independent of the noise correlates with it at 0 +- 1/sqrt(n_images)
    # per voxel, 1/sqrt(n_images * n_voxels) on the voxel mean (noise independent over
    # voxels): about 0.008 here
    standard_error = 1 / np.sqrt(len(rows) * Y.shape[1])
    assert abs(copied["out_of_fold"]) < 4 * standard_error, copied
    # a model predicting its own training images has fitted part of their noise (5 standard
    # errors: p < 1e-6 if it had not)
    assert copied["in_sample"] > 5 * standard_error, copied


def test_veroi_recovers_the_planted_areas():
    data = _simulate(n_images=1000, n_voxels=300, snr=3.0)
    encoder = TopyEncoder(**ENCODER, max_epochs=60, n_iter_no_change=15)
    encoder.fit(data.images, data.Y, coords=data.coords)
    labels, linkage = veroi(encoder, n_rois=3, random_state=0)
    assert linkage.shape[1] == 4
    # 10 % of the voxels are nearly dead (ncsnr below 0.1 * snr): their heads learn noise
    alive = data.ncsnr > 0.2 * 3.0
    ari = adjusted_rand_score(data.rois[alive], labels[alive])
    rng = np.random.default_rng(0)
    null = [
        adjusted_rand_score(data.rois[alive], rng.permutation(labels[alive])) for _ in range(200)
    ]
    # random labels of the same sizes: ARI 0 +- 0.003; veROI must stand far out of that
    assert ari > np.mean(null) + 20 * np.std(null), (ari, np.mean(null), np.std(null))


def test_the_final_model_is_at_least_as_good_as_naive_mix():
    """Stage 3 learns the ground truth plus the stage-2 dark knowledge; NaiveMix the ground
    truth alone. With ``freeze_readout`` the run's first model *is* NaiveMix, on the same
    images and readout, so the two differ only by the recipe."""
    data = _simulate(n_images=600, n_voxels=300, snr=3.0)
    train, test = slice(0, 400), slice(400, None)
    afo = AllForOneEncoder(
        TopyEncoder(**ENCODER, max_epochs=30, n_iter_no_change=10),
        rois=data.rois,
        freeze_readout=True,
        n_folds=2,
        keep_stage_estimators=True,
        n_jobs=2,
        random_state=0,
    ).fit(data.images[train], data.Y[train], coords=data.coords)
    naive = afo.stage_estimators_["naive"][0][0]
    # scored against the planted noiseless responses: no measurement noise in the comparison
    truth = data.signal[test]
    final_r = pearson_r(truth, afo.predict(data.images[test])).mean()
    naive_r = pearson_r(truth, naive.predict(data.images[test])).mean()
    # here +0.018 (r against the truth; 0.407 against 0.389); 4 seeds of this set-up (models
    # and data) gave +0.013 to +0.028 on the noisy test responses. The claim is "at least
    # as good", so the bar is 0
    assert final_r > naive_r, (final_r, naive_r)
