"""fetch_nod on a local stand-in of OpenNeuro ds004496 (a DataLad dataset with ciftify's
CIFTI beta maps, labels, events, fsLR meshes, floc ROIs and ImageNet stimuli), of the
authors' HCP-MMP support files and of COCO's image server."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standins import files_under
from standins_nod import (
    COCO_IMAGES,
    COCO_RUNS_STANDIN,
    IMAGENET_PER_RUN,
    MEDIAL_WALL,
    N_VERTICES,
    VISUAL_AREAS,
    make_coco_server,
    make_nod,
    make_nod_code,
)

from datasets_fetchers import fetch_nod, load_encoder_inputs
from datasets_fetchers import nod as nod_module
from datasets_fetchers._datalad import Source

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("nod_sources")
    truth = make_nod(root / "ds004496")
    atlas = make_nod_code(root / "code")
    coco = make_coco_server(root / "coco")
    return root, truth, atlas, coco


def _point_to(mp, root):
    mp.setattr(nod_module, "SOURCE", Source(name="nod", clone_url=str(root / "nowhere")))
    mp.setattr(nod_module, "MMP_URLS", {p: (root / "code" / p.rsplit("/", 1)[1]).as_uri()
                                        for p in nod_module.MMP_URLS})
    mp.setattr(nod_module, "COCO_IMAGES", ((root / "coco" / "train2017").as_uri(),
                                           (root / "coco" / "val2017").as_uri()))
    mp.delenv("AFO_DATA_MIRROR", raising=False)


@pytest.fixture(scope="module")
def nod(sources, tmp_path_factory):
    root = sources[0]
    data_dir = tmp_path_factory.mktemp("nod_data")
    with pytest.MonkeyPatch.context() as mp:
        _point_to(mp, root)
        data = fetch_nod(subjects=[1], sessions=[1], data_dir=data_dir,
                         url=str(root / "ds004496"), verbose=0)
    return data_dir, data


def _visual_columns(atlas):
    names = ["V1", "MST", "V6", "V2", "V3", "V4", "V8", "4", "3b", "FEF"]
    area = np.array([names[(int(v) - 1) % len(names)] for v in atlas])
    return np.flatnonzero(np.isin(area, VISUAL_AREAS)), area


def _zscore(a):
    return (a - a.mean(0)) / a.std(0)


def test_betas_images_and_vertices_match_the_dataset(nod, sources):
    data_dir, data = nod
    _, truth, atlas, coco = sources
    columns, area = _visual_columns(atlas)
    table = data.trials[0]
    runs = [("imagenet01", r) for r in range(1, 11)] + [("coco", r) for r in
                                                          range(1, COCO_RUNS_STANDIN + 1)]
    expected_images, expected = [], []
    for session, run in runs:
        images, betas = truth["runs"][(1, session, run)]
        expected_images += images
        expected.append(_zscore(betas)[:, columns])
    assert list(table["image"]) == expected_images
    np.testing.assert_allclose(data.responses[0], np.concatenate(expected), atol=1e-5)
    assert len(table) == 10 * IMAGENET_PER_RUN + COCO_RUNS_STANDIN * len(COCO_IMAGES)
    # vertices: the kept cortex vertices of the inflated mesh, left then right
    n_cortex = N_VERTICES - MEDIAL_WALL
    vertex = np.where(columns < n_cortex, columns + MEDIAL_WALL, columns - n_cortex + MEDIAL_WALL)
    points = truth["points"]
    np.testing.assert_allclose(data.coords[0][columns < n_cortex],
                               points[vertex[columns < n_cortex]], atol=1e-4)
    right = data.coords[0][columns >= n_cortex]
    assert right[:, 0].min() > data.coords[0][columns < n_cortex][:, 0].max()  # kept apart
    back = data.maskers[0].inverse_transform(data.responses[0][:1])
    assert back.shape == (2 * N_VERTICES, 1)
    # labels: HCP-MMP area with the hemisphere of the grayordinate's place
    expected_labels = [("L_" if c < n_cortex else "R_") + area[c] for c in columns]
    assert list(data.rois[0]["mmp"]) == expected_labels
    assert set(data.rois[0]["floc"]) <= {"", "EBA", "FFA", "PPA", "VWFA"}
    # stimuli: ImageNet from the dataset, COCO from COCO's train and val folders
    k = list(data.stimulus_ids).index(COCO_IMAGES[5][:-4])
    assert Path(data.images[k]).read_bytes() == coco[COCO_IMAGES[5]]
    first = expected_images[0]
    k = list(data.stimulus_ids).index(first.rsplit(".", 1)[0])
    assert Path(data.images[k]).read_bytes() == truth["jpeg"][first]
    assert set(data.splits["test"]) == {n[:-4] for n in COCO_IMAGES}
    present = files_under(data_dir / "nod")
    assert not any("imagenet02" in p for p in present if p.endswith("_beta.dscalar.nii"))
    assert "Gong" in data.citation
    assert "Natural Object Dataset" in data.description


def test_noise_ceiling_from_the_coco_repeats(nod):
    _, data = nod
    nc = data.noise_ceiling[0]
    assert nc.shape == (data.responses[0].shape[1],)
    assert 65 < np.median(nc) < 90  # signal 1, noise 0.25 per trial -> 80 %


def test_averaged_coco_and_a_subject_without_coco(sources, tmp_path, monkeypatch):
    root = sources[0]
    _point_to(monkeypatch, root)
    data = fetch_nod(subjects=[1, 10], sessions=1, average_repeats=True, mask="cortex",
                     mesh="midthickness", data_dir=tmp_path, url=str(root / "ds004496"),
                     verbose=0)
    table = data.trials[0]
    coco = table[table["task"] == "coco"]
    assert len(coco) == len(COCO_IMAGES)
    assert set(coco["n_repeats"]) == {COCO_RUNS_STANDIN}
    assert data.responses[0].shape[1] == 2 * (N_VERTICES - MEDIAL_WALL)
    single = 1 / np.mean(1 / table["n_repeats"])  # ImageNet rows are single trials
    assert single < 2
    # subject 10 saw ImageNet only: no COCO rows, no noise ceiling, no floc ROIs
    assert set(data.trials[1]["task"]) == {"imagenet"}
    assert data.noise_ceiling[1] is None
    assert "floc" not in data.rois[1]
    with pytest.raises(ValueError, match=r"Subjects \[10\] saw no COCO images"):
        fetch_nod(subjects=[10], tasks="coco", data_dir=tmp_path)


def test_encoder_fits_on_the_surface(nod):
    from afo_encoding import LinearProbeEncoder

    _, data = nod
    X, y, params = load_encoder_inputs(data, subject=1, split="train")
    assert params["coords"].shape == (y.shape[1], 3)
    probe = LinearProbeEncoder(n_components=4).fit(X, y, **params)
    assert probe.predict(X[:2]).shape == (2, y.shape[1])


def test_images_of_the_maps_come_from_names_labels_or_events():
    imagenet = pd.DataFrame({"stim_file": ["imagenet/n1/n1_1.JPEG", "imagenet/n2/n2_7.JPEG"]})
    # map names carry the file names (the authors' save2cifti(map_names=...))
    assert nod_module.run_images(["n1_1.JPEG", "n2_7.JPEG"], "", imagenet, 2) == \
        ["n1_1.JPEG", "n2_7.JPEG"]
    # the label file: file names written with writelines, without separators
    assert nod_module.run_images(["#1", "#2"], "n1_1.JPEGn2_7.JPEG", imagenet, 2) == \
        ["n1_1.JPEG", "n2_7.JPEG"]
    assert nod_module.run_images(["#1", "#2"], "", imagenet, 2) == ["n1_1.JPEG", "n2_7.JPEG"]
    coco = pd.DataFrame({"trial_type": [2.0, 1.0, 1000.0],
                         "condition": ["coco/b.jpg", "coco/a.jpg", "n/a"]})
    assert nod_module.run_images(["1.0", "2.0"], "1.02.0", coco, 2) == ["a.jpg", "b.jpg"]
    with pytest.raises(ValueError, match="Cannot tell which image"):
        nod_module.run_images(["x"], "", coco, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subjects": [31]}, "subjects 1 to 30"),
        ({"subjects": [12], "sessions": [2]}, "Subject 12 has ImageNet sessions 1 to 1"),
        ({"tasks": "floc"}, "tasks must be among"),
        ({"mask": "brain"}, "mask must be 'visual' or 'cortex'"),
        ({"mesh": "sphere"}, "mesh must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fetch_nod(**kwargs)
