"""Every figure renders headless (Agg) for every response container, with the expected artists."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.image import AxesImage
from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage
from threadpoolctl import threadpool_limits

from afo_encoding import plotting
from afo_encoding.decoding import identification_accuracy, identification_protocol
from afo_encoding.parcellation import veroi
from afo_encoding.responses import as_responses
from afo_encoding.simulation import make_retinotopic_dataset


@pytest.fixture(autouse=True)
def _one_blas_thread_and_no_open_figures():
    # MNE's topomap interpolation calls BLAS on tiny matrices: with threads competing for
    # a shared CPU, every call waits for the others (seconds instead of milliseconds)
    with threadpool_limits(1):
        yield
    plt.close("all")


def icosphere_mesh():
    """Two small icospheres standing for hemispheres (no download)."""
    t = (1 + 5**0.5) / 2
    vertices = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t],
                         [0, 1, t], [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1],
                         [-t, 0, -1], [-t, 0, 1]], dtype=float)
    faces = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
                      [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
                      [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
                      [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    vertices = 50 * vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    return PolyMesh(left=InMemoryMesh(vertices - [80, 0, 0], faces),
                    right=InMemoryMesh(vertices + [80, 0, 0], faces))


@pytest.fixture(scope="module", params=["fmri", "surface", "eeg", "meg", "array"])
def space(request):
    """A ResponseSpace of every kind the encoders accept."""
    rng = np.random.default_rng(0)
    kind = request.param
    if kind in ("fmri", "eeg", "meg"):
        data = make_retinotopic_dataset(n_images=12, n_voxels=60, image_size=32,
                                        modality=kind, random_state=0)
        return as_responses(data.responses, mask=data.mask)[1]
    if kind == "surface":
        mesh = icosphere_mesh()
        values = {p: rng.normal(size=(12, 6)) for p in ("left", "right")}
        return as_responses(SurfaceImage(mesh=mesh, data=values))[1]
    return as_responses(rng.normal(size=(6, 40)), coords=rng.normal(size=(40, 3)))[1]


def n_panels(fig, modality_of_space, n_maps, n_times=2):
    """Check the panels of plot_voxel_map's figure for each container."""
    axes = fig.axes
    if modality_of_space == "volume":
        # one ortho slicer per map: three cuts, each the template and the map
        assert sum(len(ax.images) == 2 for ax in axes) == 3 * n_maps
    elif modality_of_space == "surface":
        assert sum(ax.name == "3d" for ax in axes) == 2 * n_maps  # two hemispheres
    elif modality_of_space == "epochs":
        topomaps = [ax for ax in axes if any(isinstance(a, AxesImage) for a in ax.images)]
        assert len(topomaps) == n_maps * n_times
    else:
        scatters = [c for ax in axes for c in ax.collections if isinstance(c, PathCollection)]
        assert len(scatters) == n_maps


def kind_of(space):
    return {"VolumeSpace": "volume", "SurfaceSpace": "surface",
            "EpochsSpace": "epochs"}.get(type(space).__name__, "array")


def test_voxel_map_for_every_container(space, tmp_path):
    values = np.random.default_rng(0).normal(size=(2, space.n_voxels))
    out = tmp_path / "map.png"
    fig = plotting.plot_voxel_map(values, space, titles=["a", "b"], times=[0.1, 0.2],
                                  output_file=out)
    n_panels(fig, kind_of(space), n_maps=2)
    assert out.stat().st_size > 0


@pytest.mark.parametrize(("kind", "n_maps"), [("weights", 3), ("depth", 1), ("argmax", 1)])
def test_layer_selector_for_every_container(space, kind, n_maps):
    weights = np.random.default_rng(1).dirichlet(np.ones(3), size=space.n_voxels)
    fig = plotting.plot_layer_selector(weights, space, kind=kind, times=[0.1, 0.2])
    n_panels(fig, kind_of(space), n_maps=n_maps)


def test_veroi_map_for_every_container(space):
    labels = np.arange(space.n_voxels) % 3
    fig = plotting.plot_veroi_map(labels, space, times=[0.1, 0.2])
    n_panels(fig, kind_of(space), n_maps=1)
    with pytest.raises(ValueError, match="non-negative integers"):
        plotting.plot_veroi_map(labels - 1, space)


def test_layer_selector_weights_use_the_range_of_the_weights():
    # softmax weights of 4 layers within 0.25-0.45: a 0-1 scale would show no contrast
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.25, 0.45, size=(60, 4))
    coords = rng.normal(size=(60, 2))
    _, space = as_responses(rng.normal(size=(5, 60)), coords=coords)
    fig = plotting.plot_layer_selector(weights, space)
    lows, highs = zip(*(c.get_clim() for ax in fig.axes for c in ax.collections
                        if isinstance(c, PathCollection)))
    assert len(set(lows)) == len(set(highs)) == 1  # one scale shared by the layers
    assert 0.25 <= lows[0] < 0.27
    assert 0.43 < highs[0] <= 0.45
    assert "colour scale 0.25 to 0.45" in fig._suptitle.get_text()


def test_topomaps_start_after_onset_with_titles_clear_of_the_times():
    data = make_retinotopic_dataset(n_images=12, n_voxels=60, image_size=32,
                                    modality="eeg", random_state=0)
    _, space = as_responses(data.responses)
    assert space.times[0] <= 0  # the simulated epochs start at or before onset
    fig = plotting.plot_voxel_map(np.ones((2, space.n_voxels)), space,
                                  titles=["eccentricity", "angle"])
    time_titles = [ax.get_title() for ax in fig.axes if ax.get_title().endswith(" ms")]
    assert len(time_titles) == 2 * 5
    assert all(float(t.split()[0]) > 0 for t in time_titles)  # no 0 ms by default
    # each map's title is its row's (subfigure) title, not the first topomap's
    assert [sub._suptitle.get_text() for sub in fig.subfigs] == ["eccentricity", "angle"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for sub in fig.subfigs:
        title = sub._suptitle.get_window_extent(renderer)
        for ax in sub.axes:
            if ax.get_title():
                assert not title.overlaps(ax.title.get_window_extent(renderer))


def test_retinotopy_for_every_container(space):
    points = np.random.default_rng(2).uniform(-1, 1, size=(space.n_voxels, 2))
    fig = plotting.plot_retinotopy(points, space, kind=("eccentricity", "angle", "x"),
                                   times=[0.1, 0.2])
    n_panels(fig, kind_of(space), n_maps=3)


class FittedStandIn:
    """The fitted attributes the plots read, as TopyEncoder has them."""

    backbone_ = SimpleNamespace(layer_names=["scale0", "scale1", "scale2"])

    def __init__(self, n_voxels=50, n_subjects=1, seed=0):
        rng = np.random.default_rng(seed)
        maps = [rng.uniform(-1, 1, (n_voxels, 2)) for _ in range(n_subjects)]
        weights = [rng.dirichlet(np.ones(3), size=n_voxels) for _ in range(n_subjects)]
        self.retina_map_ = maps if n_subjects > 1 else maps[0]
        self.layer_weights_ = weights if n_subjects > 1 else weights[0]
        self.space_ = as_responses(rng.normal(size=(5, n_voxels)),
                                   coords=rng.normal(size=(n_voxels, 3)))[1]


def scatter_points(ax):
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_retina_map_from_an_encoder_over_an_image(tmp_path):
    enc = FittedStandIn()
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fig = plotting.plot_retina_map(enc, image=image, output_file=tmp_path / "retina.pdf")
    (ax,) = fig.axes
    assert scatter_points(ax) == 50
    assert len(ax.images) == 1
    best = enc.layer_weights_.argmax(axis=1)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"scale{k} ({(best == k).sum()})" for k in np.unique(best)]
    assert ax.get_ylim() == (1.0, -1.0)  # image convention: y downward
    assert (tmp_path / "retina.pdf").stat().st_size > 0


def test_retina_map_from_arrays_subjects_and_voxels():
    enc = FittedStandIn(n_subjects=2)
    fig = plotting.plot_retina_map(enc, subject=1, voxels=np.arange(10))
    assert scatter_points(fig.axes[0]) == 10
    fig = plotting.plot_retina_map(enc.retina_map_[0])  # no layer weights: one colour
    assert scatter_points(fig.axes[0]) == 50
    assert fig.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="subject must be in"):
        plotting.plot_retina_map(enc, subject=2)
    with pytest.raises(ValueError, match=r"must be \(n_voxels, 2\)"):
        plotting.plot_retina_map(np.zeros((5, 3)))


def test_maps_on_the_brain_from_an_encoder():
    enc = FittedStandIn()
    fig = plotting.plot_layer_selector(enc, kind="weights")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()][:3] == [
        "LayerSelector: scale0", "LayerSelector: scale1", "LayerSelector: scale2"]
    fig = plotting.plot_retinotopy(enc, kind="angle")
    assert len([c for ax in fig.axes for c in ax.collections
                if isinstance(c, PathCollection)]) == 1
    with pytest.raises(ValueError, match="kind must be"):
        plotting.plot_layer_selector(enc, kind="mean")
    with pytest.raises(ValueError, match="Give the ResponseSpace"):
        plotting.plot_layer_selector(enc.layer_weights_)


def n_violins(ax):
    return sum(isinstance(c, PolyCollection) for c in ax.collections)


def n_ceilings(ax):
    return sum(len(c.get_segments()) for c in ax.collections if c.get_gid() == "noise-ceiling")


def test_score_violins_per_roi_with_per_voxel_ceilings(tmp_path):
    rng = np.random.default_rng(0)
    rois = np.repeat(["early", "mid", "late"], [50, 30, 20])
    fig = plotting.plot_score_distributions(
        rng.normal(0.4, 0.1, 100), rois, noise_ceiling=rng.uniform(0.6, 0.9, 100),
        output_file=tmp_path / "violins.svg")
    (ax,) = fig.axes
    assert n_violins(ax) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["early", "mid", "late"]
    assert n_ceilings(ax) == 3


def test_score_comparison_counts_the_voxels_each_model_wins(tmp_path):
    x = np.array([0.2, 0.4, 0.5, 0.6, np.nan, 0.3])
    y = np.array([0.3, 0.5, 0.4, 0.7, 0.5, 0.3])
    rois = np.array(["early", "early", "late", "late", "late", "late"])
    fig = plotting.plot_score_comparison(x, y, labels=("probe r", "Topy r"), groups=rois,
                                         noise_ceiling=0.8, output_file=tmp_path / "c.png")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("probe r", "Topy r")
    points = [c.get_offsets() for c in ax.collections]
    assert [len(p) for p in points] == [2, 3]  # the NaN voxel is left out
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "early: 2 above, 0 below, median +0.100"
    assert legend[1] == "late: 1 above, 1 below, median +0.000"
    assert "1 voxels without a score" in ax.get_legend().get_title().get_text()
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="same voxels: got 6 and 5"):
        plotting.plot_score_comparison(x, y[:5])
    with pytest.raises(ValueError, match="one label per voxel"):
        plotting.plot_score_comparison(x, y, groups=rois[:2])


def test_score_violins_mark_means_in_the_order_given():
    # tables print mean r: the violins mark means, the ceiling is the mean ceiling
    rng = np.random.default_rng(0)
    rois = np.repeat(["late", "mid", "early"], [20, 30, 50])
    scores = rng.gamma(2.0, 0.1, 100)  # skewed: mean and median differ
    ceiling = rng.uniform(0.5, 0.9, 100)
    fig = plotting.plot_score_distributions(scores, rois, noise_ceiling=ceiling,
                                            order=["early", "mid", "late"])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["early", "mid", "late"]
    (means,) = [c for c in ax.collections if c.get_gid() == "mean"]
    marked = [seg[0, 1] for seg in means.get_segments()]
    np.testing.assert_allclose(marked, [scores[rois == g].mean()
                                        for g in ("early", "mid", "late")])
    ceilings = [c for c in ax.collections if c.get_gid() == "noise-ceiling"]
    np.testing.assert_allclose([c.get_segments()[0][0, 1] for c in ceilings],
                               [ceiling[rois == g].mean() for g in ("early", "mid", "late")])
    assert "mean" in ax.get_ylabel()
    with pytest.raises(ValueError, match="order names groups without scores"):
        plotting.plot_score_distributions(scores, rois, order=["V1"])


def test_veroi_map_in_the_colours_of_the_dendrogram():
    from matplotlib.colors import to_hex

    from afo_encoding.plotting.dendrogram import veroi_colors

    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.normal(m, 0.2, (60, 6)) for m in (-1, 0, 1, 2)])
    labels, linkage = veroi(weights, n_rois=4, n_prefilter=30, random_state=0)
    fig = plotting.plot_veroi_dendrogram(linkage, n_rois=4)
    texts = {t.get_text(): to_hex(t.get_color()) for t in fig.axes[0].texts}
    assert texts == {str(k): veroi_colors(4)[k] for k in range(4)}
    # branches below the cut in their veROI's colour
    branch_colors = {to_hex(c.get_color()[0]) for c in fig.axes[0].collections}
    assert set(veroi_colors(4)) <= branch_colors
    _, space = as_responses(rng.normal(size=(5, 240)), coords=rng.normal(size=(240, 2)))
    fig = plotting.plot_veroi_map(labels, space)
    (points,) = [c for ax in fig.axes for c in ax.collections
                 if isinstance(c, PathCollection)]
    colors = [to_hex(c) for c in points.to_rgba(points.get_array())]
    assert colors == [veroi_colors(4)[k] for k in labels]


def test_score_violins_per_model_and_nested():
    rng = np.random.default_rng(0)
    fig = plotting.plot_score_distributions({"TopyNeck": rng.normal(0.5, 0.1, 80),
                                             "linear probe": rng.normal(0.4, 0.1, 80)})
    assert n_violins(fig.axes[0]) == 2
    assert fig.axes[0].get_legend() is None  # no ceiling, no models to tell apart
    nested = {roi: {"TopyNeck": rng.normal(0.5, 0.1, 40), "linear": rng.normal(0.4, 0.1, 40)}
              for roi in ("early", "late")}
    fig = plotting.plot_score_distributions(nested, noise_ceiling={"early": 0.8, "late": 0.6})
    ax = fig.axes[0]
    assert n_violins(ax) == 4
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["TopyNeck", "linear", "noise ceiling"]
    assert n_ceilings(ax) == 2


def test_veroi_dendrogram_with_the_cut():
    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.normal(m, 0.2, (60, 6)) for m in (-1, 0, 1, 2)])
    labels, linkage = veroi(weights, n_rois=4, n_prefilter=30, random_state=0)
    fig = plotting.plot_veroi_dendrogram(linkage, n_rois=4)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "2", "3"]
    (cut,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    height = cut.get_ydata()[0]
    # exactly 3 merges (4 clusters -> 1) lie above the cut, as veroi cut it
    assert np.sum(linkage[:, 2] > height) == 3
    fig = plotting.plot_veroi_dendrogram(linkage, distance_threshold=height)
    assert len(fig.axes[0].texts) == 4
    fig = plotting.plot_veroi_dendrogram(linkage)  # no cut
    assert len(fig.axes[0].texts) == 0
    with pytest.raises(ValueError, match="at most one"):
        plotting.plot_veroi_dendrogram(linkage, n_rois=3, distance_threshold=1.0)


def test_retrieval_grid_per_roi():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    scores = np.eye(20) + 0.3 * rng.normal(size=(20, 20))
    fig = plotting.plot_retrieval_grid(images, {"early": scores, "late": scores.T},
                                       np.arange(20), queries=[0, 3, 7], k=3)
    assert len(fig.axes) == 3 * 2 * 4
    assert all(len(ax.images) == 1 for ax in fig.axes)
    # the first panel of a row is the image shown; the retrieved ones follow, best first
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), images[0])
    best = int(np.argmax(scores[0]))
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), images[best])
    assert fig.axes[4].get_ylabel() == "query 0\nlate"
    gray = rng.random((20, 16, 16))
    fig = plotting.plot_retrieval_grid(gray, scores, np.arange(20), k=2)
    assert len(fig.axes) == 4 * 3


def test_retrieval_grid_is_sized_for_a_screen():
    # 4 queries x 4 ROIs of 32 px images: ~1 inch tiles drawn pixel for pixel
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    scores = {roi: rng.normal(size=(20, 20)) for roi in ("early", "mid", "late", "all")}
    fig = plotting.plot_retrieval_grid(images, scores, np.arange(20), k=4)
    width, height = fig.get_size_inches() * 150  # pixels at the saved dpi
    assert height < 16 * 1.3 * 150
    assert width < 900
    assert fig.axes[0].images[0].get_interpolation() == "nearest"


def test_identification_bars_with_chance_and_encoding_scores():
    rng = np.random.default_rng(0)
    scores = np.eye(40) + 0.5 * rng.normal(size=(40, 40))
    results = {"early": identification_accuracy(scores, np.arange(40)),
               "late": identification_protocol(scores, np.arange(40), n_candidates=10,
                                               n_repeats=20, random_state=0)}
    fig = plotting.plot_identification(results, {"early": rng.normal(0.5, 0.1, 30),
                                                 "late": rng.normal(0.3, 0.1, 30)})
    ax, score_ax = fig.axes
    assert len(ax.patches) == 2 * 2  # top-1, top-5 per ROI
    assert ax.patches[0].get_height() == pytest.approx(results["early"].top1)
    # accuracy and correlation are two quantities: two y axes, each named
    assert ax.get_ylabel() == "identification accuracy"
    assert score_ax.get_ylabel() == "encoding score (mean Pearson r)"
    assert len(score_ax.patches) == 2
    # no zero-height error bars where a result has no spread...
    assert all(c.errorbar is None for c in ax.containers)
    # ...and error bars over the draws where all have one
    protocol = {roi: results["late"] for roi in ("early", "late")}
    fig = plotting.plot_identification(protocol)
    from matplotlib.container import BarContainer

    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert all(c.errorbar is not None for c in bars)
    assert "SD over draws" in bars[0].get_label()
    with pytest.raises(ValueError, match="has no"):
        plotting.plot_identification(results, k=(1, 10))


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["fmri", "eeg"])
def test_report_of_a_fitted_topy_encoder(modality, tmp_path):
    import torch

    from afo_encoding import TopyEncoder

    data = make_retinotopic_dataset(n_images=40, n_voxels=60, image_size=32,
                                    modality=modality, random_state=0)
    if modality == "fmri":
        from nilearn.image import index_img

        train, test = index_img(data.responses, range(30)), index_img(data.responses,
                                                                      range(30, 40))
    else:
        train, test = data.responses[:30], data.responses[30:]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = TopyEncoder(backbone_params={"image_size": 32, "n_scales": 2}, d_model=8,
                          max_epochs=2, top_k=1, device="cpu", mask=data.mask,
                          random_state=0).fit(data.images[:30], train)
    finally:
        torch.set_num_threads(previous)
    fig = plotting.plot_retina_map(enc, image=data.images[0])
    assert scatter_points(fig.axes[0]) == enc.space_.n_voxels
    assert all(t.get_text().startswith("scale") for t in fig.axes[0].get_legend().get_texts())
    paths = plotting.plot_encoder_report(enc, data.images[30:], test, tmp_path,
                                         rois=data.rois, noise_ceiling=data.noise_ceiling,
                                         n_rois=3, n_queries=2, k=3)
    assert set(paths) == {"retina_map", "retinotopy", "layer_selector", "scores",
                          "identification", "retrieval", "veroi_dendrogram", "veroi_map"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    assert plt.get_fignums() == [1]  # the report closes its figures
