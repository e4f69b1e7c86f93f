"""Torch modules of the encoding model (afo_encoding.nn)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from afo_encoding.nn import (
    ConvAdapter,
    LayerNorm2d,
    LayerSelector,
    PositionalEncoding,
    RetinaMapper,
    SubjectReadout,
    TopyNet,
    VoxelHead,
    bilinear_corners,
    fused_readout,
)

B, D = 3, 8


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _features(batch=B, channels=(6, 5), sizes=((6, 6), (3, 4)), gdims=(6, 4), seed=0):
    gen = torch.Generator().manual_seed(seed)
    local_maps = [torch.randn(batch, c, *s, generator=gen) for c, s in zip(channels, sizes)]
    global_vectors = [torch.randn(batch, g, generator=gen) for g in gdims]
    return local_maps, global_vectors


def _model(n_voxels=(40,), seed=0, **kwargs):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    coords = [rng.normal(scale=20, size=(n, 3)) for n in n_voxels]
    kwargs.setdefault("hidden", 16)
    kwargs.setdefault("n_frequencies", 4)
    return TopyNet([6, 5], [6, 4], coords, d_model=D, **kwargs)


def _perturb(model, scale=1.0, seed=1):
    """Move the zero-initialised last layers so that positions and mixes differ per voxel."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mlp.4.weight") or name.endswith("mlp.4.bias"):
                p.copy_(scale * torch.randn(p.shape, generator=gen))


def _reference_readout(maps, u, w, eta, glob):
    """grid_sample, mix, dot: the materialising formulation."""
    batch, n = maps[0].shape[0], u.shape[0]
    grid = u[None, :, None, :].expand(batch, n, 1, 2).to(maps[0].dtype)
    y = 0
    for layer, m in enumerate(maps):
        s = F.grid_sample(m, grid, mode="bilinear", padding_mode="border",
                          align_corners=False)[..., 0]
        if glob is not None:
            s = s + glob[:, layer, :, None]
        y = y + eta[:, layer] * (s * w.t()[None]).sum(1)
    return y


# ---------------------------------------------------------------- positional encoding


def test_positional_encoding_independent_of_subset(rng):
    coords = rng.normal(scale=30, size=(200, 3))
    pe = PositionalEncoding(coords, n_frequencies=6)
    full = pe(torch.as_tensor(coords))
    subset = [5, 17, 150]
    alone = pe(torch.as_tensor(coords[subset]))
    torch.testing.assert_close(alone, full[subset])
    assert full.shape == (200, 2 * 3 * 6)
    # normalisation is fixed by the construction set: the whole set spans [0, 1]
    t = (torch.as_tensor(coords, dtype=torch.float32) - pe.low) / pe.span
    assert float(t.min()) == pytest.approx(0.0)
    assert float(t.max()) == pytest.approx(1.0)


def test_positional_encoding_constant_axis_and_space_time(rng):
    coords = np.column_stack([rng.normal(size=(30, 3)), np.full(30, 7.0)])  # d = 4
    pe = PositionalEncoding(coords, n_frequencies=3)
    code = pe(torch.as_tensor(coords))
    assert code.shape == (30, 2 * 4 * 3)
    assert torch.isfinite(code).all()
    sin_t = code[:, : 4 * 3].view(30, 4, 3)[:, 3]
    torch.testing.assert_close(sin_t, torch.zeros_like(sin_t))


def test_positional_encoding_errors(rng):
    with pytest.raises(ValueError, match="NaN"):
        PositionalEncoding(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2D"):
        PositionalEncoding(np.zeros(5))
    pe = PositionalEncoding(rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        pe(torch.zeros(4, 2))


# ---------------------------------------------------------------- sampling


def test_bilinear_sampling_matches_hand_computation():
    # 2 x 3 map, channel 0 holds 10 * row + col
    value = torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]])
    maps = [torch.stack([value, -value])[None]]  # (1, 2, 2, 3)
    # pixel centres: x_col = (2 col + 1) / 3 - 1, y_row = (2 row + 1) / 2 - 1
    # a point a quarter of the way from pixel (0, 1) to (1, 2) in both axes:
    col, row = 1.25, 0.25
    u = torch.tensor([[(2 * col + 1) / 3 - 1, (2 * row + 1) / 2 - 1]])
    expected = (
        0.75 * 0.75 * value[0, 1] + 0.25 * 0.75 * value[0, 2]
        + 0.75 * 0.25 * value[1, 1] + 0.25 * 0.25 * value[1, 2]
    )  # = 3.75 = 10 * 0.25 + 1.25
    w = torch.tensor([[2.0, 0.0]])  # reads channel 0, twice
    y = fused_readout(maps, u, w, torch.ones(1, 1))
    assert float(y) == pytest.approx(2 * float(expected))
    assert float(expected) == pytest.approx(3.75)
    # the image's corners read the corner pixels (border padding, align_corners=False)
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    y = fused_readout(maps, corners, w.expand(4, 2), torch.ones(4, 1))
    torch.testing.assert_close(y[0], 2 * torch.tensor([0.0, 2.0, 10.0, 12.0]))


def test_bilinear_corners_centre_and_weights():
    cell, weights = bilinear_corners(torch.zeros(1, 2), 16, 16)
    # the centre of a 16 x 16 map is the shared corner of pixels (7, 7) ... (8, 8)
    assert int(cell) == 7 * 16 + 7
    torch.testing.assert_close(weights, torch.full((1, 4), 0.25))


@pytest.mark.parametrize("method", ["cells", "sampling", "gather"])
@pytest.mark.parametrize("use_global", [True, False])
def test_fused_readout_equals_grid_sample_reference(use_global, method):
    gen = torch.Generator().manual_seed(0)
    n = 60
    # two layers of one size are processed together; a 1-pixel-wide layer is its own group
    sizes = [(4, 6), (4, 6), (3, 1), (1, 1)]
    maps = [torch.randn(B, D, *s, generator=gen, dtype=torch.float64) for s in sizes]
    u = (2.4 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 1.2).clamp(-1, 1)
    w = torch.randn(n, D, generator=gen, dtype=torch.float64)
    eta = torch.softmax(torch.randn(n, 4, generator=gen, dtype=torch.float64), 1)
    glob = torch.randn(B, 4, D, generator=gen, dtype=torch.float64) if use_global else None
    y = fused_readout(maps, u, w, eta, glob, method=method)
    torch.testing.assert_close(y, _reference_readout(maps, u, w, eta, glob))


@pytest.mark.parametrize("method", ["cells", "sampling", "gather"])
def test_fused_readout_gradients(method):
    gen = torch.Generator().manual_seed(1)
    n = 12
    # two layers of one size processed together, one a single row (padded internally)
    maps = [torch.randn(2, 3, *s, generator=gen, dtype=torch.float64, requires_grad=True)
            for s in [(3, 4), (3, 4), (1, 3)]]
    u = (2.2 * torch.rand(n, 2, generator=gen, dtype=torch.float64) - 1.1).clamp(-0.99, 0.99)
    u.requires_grad_(True)
    w = torch.randn(n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    eta = torch.rand(n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    glob = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(m0, m1, m2, u, w, eta, glob):
        return fused_readout([m0, m1, m2], u, w, eta, glob, method=method)

    assert torch.autograd.gradcheck(f, (*maps, u, w, eta, glob))


def test_fused_readout_picks_gather_for_a_few_voxels_on_large_maps(monkeypatch):
    from afo_encoding.nn import readout

    used = []
    monkeypatch.setattr(readout, "_readout_by_gather", lambda *a: used.append("gather"))
    maps = [torch.randn(2, 3, 16, 16)]
    fused_readout(maps, torch.zeros(32, 2), torch.randn(32, 3), torch.ones(32, 1))
    assert used == ["gather"]  # 32 voxels read 128 of 256 pixels
    fused_readout(maps, torch.zeros(33, 2), torch.randn(33, 3), torch.ones(33, 1))
    assert used == ["gather"]  # 33 read more than half: the cells


@pytest.mark.parametrize("method", ["cells", "sampling"])
def test_fused_readout_many_voxels_in_one_cell_are_chunked(monkeypatch, method):
    from afo_encoding.nn import readout

    monkeypatch.setattr(readout, "_CHUNK_ELEMENTS", 64)  # a few voxels per step
    monkeypatch.setattr(readout, "_SAMPLING_CHUNK_ELEMENTS", 7 * B * D)
    gen = torch.Generator().manual_seed(2)
    maps = [torch.randn(B, D, 5, 5, generator=gen, requires_grad=True)]
    u = torch.zeros(50, 2)  # all at the centre: one cell
    w = torch.randn(50, D, generator=gen, requires_grad=True)
    eta = torch.ones(50, 1)
    y = fused_readout(maps, u, w, eta, method=method)
    ref = _reference_readout([m.detach() for m in maps], u, w.detach(), eta, None)
    torch.testing.assert_close(y, ref)
    y.sum().backward()
    ref_w = w.detach().clone().requires_grad_(True)
    ref_m = maps[0].detach().clone().requires_grad_(True)
    _reference_readout([ref_m], u, ref_w, eta, None).sum().backward()
    torch.testing.assert_close(w.grad, ref_w.grad)
    torch.testing.assert_close(maps[0].grad, ref_m.grad)


# ---------------------------------------------------------------- modules


def test_layer_norm_2d_normalises_channels_per_pixel():
    x = torch.randn(2, 7, 4, 5) * 3 + 2
    y = LayerNorm2d(7)(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 4, 5), atol=1e-3, rtol=0)


def test_conv_adapter_keeps_size_and_reduces_channels():
    adapter = ConvAdapter(12, 5)
    assert [b.conv.kernel_size for b in adapter.blocks] == [(5, 5)] * 3
    assert [b.conv.padding for b in adapter.blocks] == [(2, 2)] * 3
    assert adapter(torch.randn(2, 12, 7, 3)).shape == (2, 5, 7, 3)
    slim = ConvAdapter(12, 5, width=4)
    assert slim.blocks[0].conv.out_channels == 4
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in adapter.parameters())


def test_voxel_head_is_a_mean():
    head = VoxelHead(4, 3)
    x = torch.randn(2, 4, 3)
    expected = (x * head.weight).sum(-1) / 3 + head.bias
    torch.testing.assert_close(head(x), expected)
    torch.testing.assert_close(head(x[:, [1, 3]], torch.tensor([1, 3])), expected[:, [1, 3]])


def test_retina_mapper_noise_and_clamp():
    mapper = RetinaMapper(6, hidden=8, sigma=0.5)
    assert "sigma" in dict(mapper.named_buffers())
    assert "sigma" not in dict(mapper.named_parameters())
    code = torch.randn(1000, 6)
    mapper.train()
    u = mapper(code).detach()
    assert u.abs().max() <= 1.0
    assert 0.3 < float(u.std()) < 0.7  # noise around the centre
    mapper.eval()
    torch.testing.assert_close(mapper(code), torch.zeros(1000, 2))


def test_layer_selector_regularizer_value():
    selector = LayerSelector(6, n_layers=3, hidden=8, entropy_weight=0.5)
    eta = torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    expected = 0.5 * (np.log(0.5) + np.log(1 / 3)) / 2
    assert float(selector.regularization(eta)) == pytest.approx(expected)
    eta = selector(torch.randn(5, 6))
    torch.testing.assert_close(eta, torch.full((5, 3), 1 / 3))  # uniform at initialisation


def test_layer_selector_regularizer_gradient_is_finite_when_a_weight_underflows():
    # a voxel sure of its layer: the softmax gives exactly 0 to the others in float32; the
    # regulariser's gradient must stay finite there (it was NaN and killed the whole fit)
    selector = LayerSelector(6, n_layers=3, hidden=8, entropy_weight=0.5)
    logits = torch.tensor([[200.0, 0.0, 0.0], [1.0, 2.0, 3.0]], requires_grad=True)
    eta = torch.softmax(logits, dim=-1)
    assert float(eta[0, 1]) == 0.0
    selector.regularization(eta).backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- TopyNet


def test_topynet_shapes_and_centre_at_initialisation():
    model = _model(n_voxels=(40, 25))
    features = _features()
    y, reg = model(features, subject=1, return_regularization=True)
    assert y.shape == (B, 25)
    assert y.dtype == torch.float32
    assert reg.shape == ()
    torch.testing.assert_close(model.retina_map(0), torch.zeros(40, 2))
    torch.testing.assert_close(model.layer_weights(1), torch.full((25, 2), 0.5))
    assert [h.weight.shape for h in model.heads] == [(40, D), (25, D)]
    assert [h.bias.shape for h in model.heads] == [(40,), (25,)]
    assert model.n_voxels == [40, 25]
    assert model.n_layers == 2
    assert model.n_subjects == 2


def test_topynet_matches_explicit_composition():
    """The fused readout equals sampling, mixing and the VoxelHead done step by step."""
    model = _model().eval()
    _perturb(model)
    features = _features()
    sub = model.subjects[0]
    with torch.no_grad():
        maps, glob = model.encode_images(features)
        u, eta = sub.positions_and_layer_weights()
        grid = u[None, :, None, :].expand(B, -1, 1, 2)
        vectors = 0
        for layer, m in enumerate(maps):
            s = F.grid_sample(m, grid, padding_mode="border", align_corners=False)[..., 0]
            vectors = vectors + eta[:, layer, None] * (s.transpose(1, 2) + glob[:, layer, None])
        expected = sub.head(vectors)
        torch.testing.assert_close(model(features, 0), expected, atol=1e-5, rtol=1e-5)
    assert u.abs().max() > 0.1  # really off-centre
    assert (eta.max(1).values > 0.6).any()  # really mixed unevenly


def test_topynet_voxel_subset_equals_full_restricted():
    model = _model(n_voxels=(60,)).eval()
    _perturb(model)
    features = _features()
    with torch.no_grad():
        full = model(features, 0)
        index = torch.tensor([59, 3, 3, 17, 40])
        torch.testing.assert_close(model(features, 0, voxel_index=index), full[:, index])
        mask = torch.zeros(60, dtype=torch.bool)
        mask[[2, 30]] = True
        torch.testing.assert_close(model(features, 0, voxel_index=mask), full[:, [2, 30]])
        assert model(features, 0, voxel_index=np.array([1, 2])).shape == (B, 2)


def test_topynet_input_errors():
    model = _model(n_voxels=(10, 10))
    features = _features()
    with pytest.raises(IndexError, match="2 subject"):
        model(features, subject=2)
    with pytest.raises(ValueError, match="one per layer"):
        model((features[0][:1], features[1][:1]), 0)
    with pytest.raises(ValueError, match=r"\(B, 6, h, w\)"):
        model(([features[0][1], features[0][1]], features[1]), 0)
    with pytest.raises(IndexError, match="out of range"):
        model(features, 0, voxel_index=torch.tensor([10]))
    with pytest.raises(ValueError, match="integer"):
        model(features, 0, voxel_index=torch.tensor([0.5]))
    with pytest.raises(TypeError, match="one .* array per subject"):
        TopyNet([6], [6], np.zeros((5, 3)))


def test_topynet_regularizer_is_entropy_term_and_trains_selector():
    model = _model(entropy_weight=0.1)
    _perturb(model)
    features = _features()
    index = torch.arange(0, 40, 2)
    _, reg = model(features, 0, voxel_index=index, return_regularization=True)
    eta = model.subjects[0].layer_selector(
        model.subjects[0].encoding(model.subjects[0].coords[index]))
    expected = 0.1 * (eta * eta.log()).sum(1).mean()
    torch.testing.assert_close(reg, expected)
    reg.backward()
    assert model.subjects[0].layer_selector.mlp[-1].weight.grad.abs().sum() > 0


def test_topynet_training_noise_is_per_voxel_and_off_in_eval():
    model = _model(sigma=0.05)
    features = _features()
    model.train()
    a, b = model(features, 0), model(features, 0)
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(features, 0), model(features, 0))


def test_backbone_gets_no_gradient():
    """Features are constants for TopyNet, even from a module that could be trained."""
    backbone = nn.Conv2d(3, 6, 3, padding=1)  # requires_grad=True on purpose
    images = torch.randn(B, 3, 6, 6)
    local1 = backbone(images)
    local2 = F.avg_pool2d(local1, 2)[:, :5, :, :]
    local2 = F.interpolate(local2, size=(3, 4))
    features = ([local1, local2], [local1.mean((2, 3)), local2.mean((2, 3))[:, :4]])
    model = _model()
    model(features, 0).sum().backward()
    assert backbone.weight.grad is None
    assert backbone.bias.grad is None
    assert model.adapters[0].blocks[0].conv.weight.grad is not None


def test_hook_backbone_gets_no_gradient():
    """With the package's Backbone around a small network, even one made trainable again."""
    from afo_encoding.backbones import get_backbone
    from afo_encoding.stimuli import InputSpec

    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(6, 5, 3, stride=2, padding=1))
    spec = InputSpec(size=(12, 12), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    backbone = get_backbone(net, layers=["0", "2"], input_spec=spec)
    coords = [np.random.default_rng(0).normal(size=(20, 3))]
    model = TopyNet(backbone.local_channels, backbone.global_dims, coords, d_model=D,
                    hidden=16, n_frequencies=4)
    net.requires_grad_(True)
    model(backbone(torch.randn(B, 3, 12, 12)), 0).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    assert model.heads[0].weight.grad is not None


def test_subjects_only_get_gradients_from_their_own_voxels():
    model = _model(n_voxels=(20, 30))
    _perturb(model)
    model(_features(), subject=1).sum().backward()
    sub0, sub1 = model.subjects
    assert all(p.grad is None for p in sub0.parameters())
    assert all(p.grad is not None for p in sub1.parameters())
    assert model.adapters[1].blocks[2].conv.weight.grad is not None


def test_bf16_autocast_on_cpu():
    model = _model()
    _perturb(model, scale=0.3)
    features = _features()
    with torch.no_grad():
        ref = model.eval()(features, 0)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, reg = model(features, 0, return_regularization=True)
    assert y.dtype == torch.float32  # float32 bias
    assert torch.isfinite(y).all()
    (y.square().mean() + reg).backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    assert model.heads[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(features, 0)
    assert float((low - ref).abs().max()) < 0.05 * float(ref.abs().max()) + 1e-2


def test_rebuild_from_config():
    model = _model(n_voxels=(15, 9), use_global=False, adapter_width=4)
    _perturb(model)
    config = model.config
    json.dumps({k: v for k, v in config.items() if k != "coords"})
    rebuilt = TopyNet(**config)
    rebuilt.load_state_dict(model.state_dict())
    assert not any("coords" in k for k in model.state_dict())
    features = _features()
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(features, 1), model(features, 1))
        torch.testing.assert_close(rebuilt.retina_map(0), model.retina_map(0))


# ---------------------------------------------------------------- ablations


def test_ablation_frozen_retina_reads_the_centre():
    model = _model(freeze_retina=True, sigma=0.1)
    assert model.subjects[0].retina_mapper.frozen
    assert not list(model.subjects[0].retina_mapper.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    features = _features()
    a = model.train()(features, 0)
    a.square().mean().backward()
    optimizer.step()
    torch.testing.assert_close(model.retina_map(0), torch.zeros(40, 2))
    # no noise either: two training passes agree
    torch.testing.assert_close(model(features, 0), model(features, 0))


def test_ablation_uniform_layers():
    model = _model(uniform_layers=True)
    selector = model.subjects[0].layer_selector
    assert selector.uniform
    assert not list(selector.parameters())
    torch.testing.assert_close(model.layer_weights(0), torch.full((40, 2), 0.5))
    _, reg = model(_features(), 0, return_regularization=True)
    assert float(reg) == 0.0


def test_ablation_no_entropy_regularizer():
    model = _model(entropy_weight=0.0)
    _perturb(model)
    _, reg = model(_features(), 0, return_regularization=True)
    assert float(reg) == 0.0
    assert not model.subjects[0].layer_selector.uniform  # the selector still learns


def test_ablation_no_global_branch():
    features = _features()
    other_globals = _features(seed=5)[1]
    model = _model(use_global=False).eval()
    assert model.global_branch is None
    with torch.no_grad():
        torch.testing.assert_close(model(features, 0), model((features[0], other_globals), 0))
    model = _model(use_global=True).eval()
    with torch.no_grad():
        assert not torch.allclose(model(features, 0), model((features[0], other_globals), 0))


# ---------------------------------------------------------------- recovery of planted maps


@pytest.mark.slow
def test_training_recovers_planted_positions_and_layers():
    """Positions and layer choices planted in a teacher are learnt back from its responses.

    Each layer's maps are random linear ramps, so the loss is smooth in the voxel positions;
    the heads are fixed to the teacher's (otherwise a weight and a position trade off).
    """
    torch.manual_seed(0)
    n_img, dim, size = 64, 2, 8
    side = np.linspace(-1, 1, 6)
    coords = np.array([(x, y, z) for x in side for y in side for z in (-1, 1)]) * 10
    planted = torch.tensor(0.7 * coords[:, :2] / 10 * np.array([1, -1]), dtype=torch.float32)
    layer = torch.as_tensor(coords[:, 2] > 0).long()  # z < 0 reads layer 0, z > 0 layer 1
    centres = (torch.arange(size) * 2 + 1) / size - 1
    x, y = centres[None, :], centres[:, None]

    def ramps():
        c = torch.randn(n_img, dim, 3, 1, 1)
        return c[:, :, 0] * x + c[:, :, 1] * y + c[:, :, 2]

    maps = [ramps(), ramps()]
    student = SubjectReadout(coords, n_layers=2, d_model=dim, hidden=32, n_frequencies=4)
    student.head.requires_grad_(False)
    with torch.no_grad():
        target = fused_readout(maps, planted, student.head.weight,
                               F.one_hot(layer, 2).float()) / dim + student.head.bias
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(150):
        batch = torch.randint(0, n_img, (32,))
        loss = (student([m[batch] for m in maps]) - target[batch]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    error = (student.retina_map() - planted).norm(dim=1)
    assert float(error.max()) < 0.1
    chosen = student.layer_weights()[torch.arange(len(coords)), layer]
    assert float(chosen.min()) > 0.9


def test_positions_are_computed_in_voxel_chunks(monkeypatch):
    from afo_encoding.nn import readout

    model = _model(n_voxels=(50,)).eval()
    _perturb(model)
    features = _features()
    with torch.no_grad():
        full = model(features, 0)
        retina, layers = model.retina_map(0), model.layer_weights(0)
        monkeypatch.setattr(readout, "_VOXEL_CHUNK", 8)
        torch.testing.assert_close(model(features, 0), full)
        torch.testing.assert_close(model.retina_map(0), retina)
        torch.testing.assert_close(model.layer_weights(0), layers)


@pytest.mark.parametrize("method", ["cells", "sampling"])
def test_fused_readout_of_no_voxels(method):
    maps = [torch.randn(2, 4, 3, 3, requires_grad=True)]
    y = fused_readout(maps, torch.zeros(0, 2), torch.zeros(0, 4), torch.ones(0, 1), method=method)
    assert y.shape == (2, 0)
    y.sum().backward()


def test_diverged_positions_are_reported():
    maps = [torch.randn(2, 4, 3, 3)]
    u = torch.tensor([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="diverged"):
        fused_readout(maps, u, torch.ones(1, 4), torch.ones(1, 1))


def test_float64_model():
    model = _model().double().eval()
    _perturb(model)
    features = [[m.double() for m in part] for part in _features()]
    with torch.no_grad():
        y = model(features, 0)
    assert y.dtype == torch.float64
    assert model.retina_map(0).dtype == torch.float64


def test_encode_once_read_out_many():
    model = _model(n_voxels=(30, 20)).eval()
    _perturb(model)
    features = _features()
    with torch.no_grad():
        encoded = model.encode_images(features)
        parts = [model.readout(encoded, 0, voxel_index=torch.arange(i, min(i + 7, 30)))
                 for i in range(0, 30, 7)]
        torch.testing.assert_close(torch.cat(parts, 1), model(features, 0))
        torch.testing.assert_close(model.readout(encoded, 1), model(features, 1))


# ------------------------------------------------- the ridge recipe's readout (concat mixing)


def test_linear_adapter_keeps_the_leading_principal_components():
    from afo_encoding.nn.adapters import LinearAdapter

    gen = torch.Generator().manual_seed(0)
    # 6 channels driven by 2 latent maps, with channel-specific offsets and scales
    latent = torch.randn(30, 2, 5, 5, generator=gen)
    mixing = torch.randn(6, 2, generator=gen)
    maps = torch.einsum("cl,blhw->bchw", mixing, latent) * torch.arange(1.0, 7.0)[:, None, None]
    maps = maps + torch.arange(6.0)[:, None, None]
    adapter = LinearAdapter.from_maps(maps, 2)
    out = adapter(maps)
    assert out.shape == (30, 2, 5, 5)
    # the two components are centred, decorrelated and carry all the variance
    flat = out.transpose(0, 1).reshape(2, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(2), atol=1e-4, rtol=0)
    assert abs(float(torch.corrcoef(flat)[0, 1])) < 1e-3
    z = (maps - maps.mean((0, 2, 3), keepdim=True)) / maps.std((0, 2, 3), keepdim=True)
    assert float(flat.var(1).sum()) == pytest.approx(float(z.var((0, 2, 3)).sum()), rel=1e-3)
    whole = LinearAdapter.from_maps(maps, 10)  # more than the layer has: all, standardised
    assert whole.out_channels == 6
    assert not list(whole.parameters())  # fixed: nothing trains


def test_probe_branch_projects_pooled_features():
    from afo_encoding.nn.probe import ProbeBranch, pooled_features

    gen = torch.Generator().manual_seed(0)
    locals_ = [torch.randn(3, 2, 8, 8, generator=gen), torch.randn(3, 4, 2, 2, generator=gen)]
    globals_ = [torch.randn(3, 5, generator=gen), torch.randn(3, 1, generator=gen)]
    rows = pooled_features(locals_, globals_, 4)
    assert rows.shape == (3, 2 * 16 + 5 + 4 * 4 + 1)
    probe = ProbeBranch(rows.shape[1], 2, 4)
    probe.mean.copy_(rows.mean(0))
    probe.scale.fill_(2.0)
    probe.components.copy_(torch.randn(2, rows.shape[1], generator=gen))
    expected = (rows - rows.mean(0)) / 2.0 @ probe.components.T
    torch.testing.assert_close(probe(locals_, globals_), expected)


def test_concat_readout_reads_every_layer_at_the_voxel_and_the_probe_scores():
    gen = torch.Generator().manual_seed(0)
    coords = [np.random.default_rng(0).normal(size=(20, 3))]
    n_features = 3 * 16 + 6 + 2 * 9 + 4  # maps pooled to at most 4 x 4, then the globals
    model = TopyNet([3, 2], [6, 4], coords, adapter="linear", adapter_channels=[2, 2],
                    layer_mixing="concat",
                    probe={"n_features": n_features, "n_components": 4, "pool_size": 4})
    for adapter in model.adapters:
        adapter.projection.normal_(generator=gen)
    model.probe.components.normal_(generator=gen)
    with torch.no_grad():
        model.subjects[0].retina_mapper.mlp[-1].bias.uniform_(-1, 1, generator=gen)
        model.heads[0].weight.normal_(generator=gen)
    model.eval()
    features = ([torch.randn(5, 3, 6, 6, generator=gen), torch.randn(5, 2, 3, 3, generator=gen)],
                [torch.randn(5, 6, generator=gen), torch.randn(5, 4, generator=gen)])
    maps, scores = model.encode_images(features)
    assert [m.shape[1] for m in maps] == [2, 2]
    sampled = model.subjects[0].sampled_features(maps)  # (B, n, 2 + 2)
    head = model.heads[0]
    whole = torch.cat([sampled, scores[:, None, :].expand(-1, 20, -1)], dim=2)
    expected = (whole * head.weight).sum(-1) / head.weight.shape[1] + head.bias
    torch.testing.assert_close(model(features, 0), expected)
    assert head.weight.shape == (20, 2 + 2 + 4)
    assert model.subjects[0].layer_selector.mlp is None  # the head weighs the layers
    with pytest.raises(ValueError, match="probe branch is read by layer_mixing='concat'"):
        TopyNet([3], [6], coords, probe={"n_features": 4, "n_components": 2})
    with pytest.raises(ValueError, match="use it with layer_mixing='concat'"):
        TopyNet([3], [6], coords, adapter="linear")
