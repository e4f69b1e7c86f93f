"""Cross-validation and grid search on neuroimaging containers (issue 18, item 15).

scikit-learn splits ``y`` along its first axis; a 4D Niimg, a SurfaceImage and mne.Epochs
do not have samples there. Wrapped in ``ResponseSamples`` they do, and every fold fits on
the container cut to its samples.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.metrics import pearson_r, pearson_scorer
from afo_encoding.responses import ResponseSamples
from afo_encoding.simulation import make_retinotopic_dataset

TINY = {"d_model": 8, "max_epochs": 1, "device": "cpu", "random_state": 0,
        "backbone_params": {"image_size": 32, "n_scales": 2}}  # fmt: skip


def _surface(Y):
    from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

    rng = np.random.default_rng(0)
    n = Y.shape[1] // 2
    parts = {}
    for k, part in enumerate(("left", "right")):
        coords = rng.normal(size=(n, 3)) + [80 * (2 * k - 1), 0, 0]
        faces = np.array([[i, (i + 1) % n, (i + 2) % n] for i in range(n)])
        parts[part] = InMemoryMesh(coords, faces)
    data = {"left": Y[:, :n].T.copy(), "right": Y[:, n : 2 * n].T.copy()}
    return SurfaceImage(mesh=PolyMesh(**parts), data=data)


@pytest.fixture(scope="module", params=["niimg", "surface", "epochs"])
def container(request):
    modality = "eeg" if request.param == "epochs" else "fmri"
    ds = make_retinotopic_dataset(
        n_images=60, image_size=32, n_voxels=200, modality=modality, random_state=0
    )
    y = _surface(ds.Y.astype(np.float32)) if request.param == "surface" else ds.responses
    if request.param == "epochs":  # 20 sensors x 10 time points: 200 columns, like the rest
        y = y.copy().pick(y.ch_names[:20]).crop(0.1, 0.19)
    return ds.images, y


def test_cross_val_score_and_grid_search_on_containers(container):
    images, y = container
    samples = ResponseSamples(y)
    assert len(samples) == 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scores = cross_val_score(
            TopyEncoder(**TINY), images, samples, cv=KFold(3), scoring=pearson_scorer
        )
        # a fold is the container cut to its samples: the same score as fitting on it
        train, test = next(KFold(3).split(images))
        fold = TopyEncoder(**TINY).fit(images[train], samples[train].select())
        Y_test = fold.space_.transform(samples[test])
        expected = np.mean(pearson_r(Y_test, fold.predict(images[test])))
        grid = GridSearchCV(
            TopyEncoder(**TINY), {"d_model": [4, 8]}, cv=KFold(2), scoring=pearson_scorer
        ).fit(images, samples)
    assert scores.shape == (3,)
    assert np.all(np.isfinite(scores))
    assert scores[0] == pytest.approx(expected, abs=1e-6)
    assert grid.best_params_["d_model"] in (4, 8)
    best = grid.best_estimator_  # refitted on all samples, in the container's space
    back = best.inverse_transform(best.predict(images[:2]))
    assert type(back).__module__.split(".")[0] == type(y).__module__.split(".")[0]
