"""Backbones: interface, frozenness, the Gabor pyramid, Hugging Face models, hooks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from afo_encoding.backbones import (
    Backbone,
    HookBackbone,
    HuggingFaceBackbone,
    PyramidBackbone,
    available_backbones,
    extract_features,
    get_backbone,
    register_backbone,
)
from afo_encoding.backbones.base import evenly_spaced_layers, split_output, weights_fingerprint
from afo_encoding.stimuli import InputSpec

transformers = pytest.importorskip("transformers")


def _check_interface(backbone, batch=2):
    h, w = backbone.input_spec.size
    locals_, globals_ = backbone(torch.randn(batch, 3, h, w))
    assert len(locals_) == len(globals_) == len(backbone.layer_names)
    for t, c, hw in zip(locals_, backbone.local_channels, backbone.local_shapes, strict=True):
        assert tuple(t.shape) == (batch, c, *hw)
    for t, g in zip(globals_, backbone.global_dims, strict=True):
        assert tuple(t.shape) == (batch, g)
    return locals_, globals_


def _check_frozen(backbone):
    """No parameter trains, eval mode sticks, yet gradients reach the input."""
    assert not backbone.training
    backbone.train()
    assert not backbone.training
    assert not any(m.training for m in backbone.modules())
    assert all(not p.requires_grad for p in backbone.parameters())
    h, w = backbone.input_spec.size
    x = torch.randn(2, 3, h, w, requires_grad=True)
    locals_, globals_ = backbone(x)
    sum(t.square().mean() for t in locals_ + globals_).backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


# --- Gabor pyramid -------------------------------------------------------------------


def _grating(size, period, theta=0.0, contrast=1.0):
    yy, xx = np.mgrid[:size, :size].astype(float)
    phase = 2 * np.pi / period * (xx * np.cos(theta) + yy * np.sin(theta))
    return 0.5 + 0.5 * contrast * np.cos(phase)


def _normalise(image, backbone):
    spec = backbone.input_spec
    x = torch.tensor(image, dtype=torch.float32).expand(1, 3, *image.shape)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(spec.std).view(1, 3, 1, 1)


def _energy(backbone, image):
    """Mean energy of every orientation, per scale: (n_scales, n_orientations)."""
    k = backbone.n_orientations
    locals_, _ = backbone(_normalise(image, backbone))
    return torch.stack([t[0, 2 * k : 3 * k].mean(dim=(1, 2)) for t in locals_])


def test_pyramid_interface_and_shapes():
    backbone = get_backbone("pyramid", image_size=64, n_orientations=6)
    assert isinstance(backbone, PyramidBackbone)
    assert backbone.layer_names == ["scale0", "scale1", "scale2", "scale3"]
    assert backbone.local_channels == [21] * 4
    assert backbone.local_shapes == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert backbone.global_dims == [42] * 4
    assert backbone.input_spec.size == (64, 64)
    _check_interface(backbone)
    _check_frozen(backbone)


def test_pyramid_default_size_and_non_square():
    assert get_backbone("pyramid").input_spec.size == (64, 64)
    backbone = get_backbone("pyramid", image_size=(64, 96), n_scales=3)
    assert backbone.local_shapes == [(32, 48), (16, 24), (8, 12)]
    _check_interface(backbone)


def test_pyramid_scales_are_ordered_fine_to_coarse():
    backbone = get_backbone("pyramid", image_size=128)
    fine = _energy(backbone, _grating(128, period=4)).amax(dim=1)
    coarse = _energy(backbone, _grating(128, period=32)).amax(dim=1)
    # each grating drives most the scale tuned to its period: 4 px at scale 0, 32 at 3
    assert fine.argmax() == 0
    assert coarse.argmax() == 3
    # and the preferred scale of a grating moves coarser with its period
    peaks = [
        _energy(backbone, _grating(128, period=p)).amax(dim=1).argmax() for p in (4, 8, 16, 32)
    ]
    assert [int(p) for p in peaks] == [0, 1, 2, 3]


def test_pyramid_energy_is_orientation_selective_and_phase_invariant():
    backbone = get_backbone("pyramid", image_size=64, n_orientations=4)
    for k in range(4):
        theta = k * math.pi / 4
        energy = _energy(backbone, _grating(64, period=4, theta=theta))[0]
        assert int(energy.argmax()) == k
    shifted = np.roll(_grating(64, period=8), 3, axis=1)
    a = _energy(backbone, _grating(64, period=8))[1]
    b = _energy(backbone, shifted)[1]
    torch.testing.assert_close(a, b, rtol=0.05, atol=1e-3)


def test_pyramid_uniform_image_has_no_oriented_response():
    backbone = get_backbone("pyramid", image_size=64)
    locals_, _ = backbone(_normalise(np.full((64, 64), 0.8), backbone))
    k = backbone.n_orientations
    for t in locals_:
        assert t[:, : 2 * k].abs().max() < 1e-4


def test_pyramid_name_identifies_its_features():
    a = get_backbone("pyramid", image_size=64).name
    assert a == get_backbone("pyramid", image_size=64).name
    assert a != get_backbone("pyramid", image_size=96).name
    assert a != get_backbone("pyramid", image_size=64, n_orientations=6).name
    with pytest.raises(ValueError, match="too small"):
        get_backbone("pyramid", image_size=16)


# --- Hugging Face --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    """A tiny DINOv2 saved like a downloaded checkpoint."""
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=28,
        patch_size=7,
    )
    torch.manual_seed(0)
    model = transformers.Dinov2Model(config)
    path = tmp_path_factory.mktemp("tiny-dinov2")
    model.save_pretrained(path)
    return path, model.eval()


def test_dinov2_from_a_saved_folder(tiny_dinov2):
    path, model = tiny_dinov2
    backbone = get_backbone(str(path), local_files_only=True)
    assert isinstance(backbone, HuggingFaceBackbone)
    assert backbone.layers == [1, 2, 4, 5]
    assert backbone.layer_names[0] == "block1"
    assert backbone.input_spec.size == (28, 28)
    assert backbone.local_shapes == [(4, 4)] * 4
    assert backbone.local_channels == [32] * 4
    assert backbone.global_dims == [32] * 4
    assert str(path.resolve()) in backbone.name
    assert "layers=1,2,4,5" in backbone.name
    x = torch.randn(2, 3, 28, 28)
    locals_, globals_ = _check_interface(backbone)
    locals_, globals_ = backbone(x)
    with torch.no_grad():
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states
    tokens = hidden[4 + 1]  # block 4
    torch.testing.assert_close(globals_[2], tokens[:, 0])
    # patch (row 1, column 2) of the 4 x 4 grid is token 1 + 1 * 4 + 2
    torch.testing.assert_close(locals_[2][:, :, 1, 2], tokens[:, 1 + 4 + 2])
    _check_frozen(backbone)


def test_dinov2_layers_size_and_globals(tiny_dinov2):
    path, _ = tiny_dinov2
    backbone = get_backbone(path, layers=[1, -1], image_size=42, global_pool="cls+avg")
    assert backbone.layers == [1, 5]
    assert backbone.local_shapes == [(6, 6), (6, 6)]
    assert backbone.global_dims == [64, 64]
    _check_interface(backbone)
    other = get_backbone(path, layers=[1, 5], image_size=42, global_pool="cls+avg")
    assert other.name == backbone.name
    assert get_backbone(path, layers=[1, 4], image_size=42).name != backbone.name
    with pytest.raises(ValueError, match="block indices"):
        get_backbone(path, layers=[6])
    with pytest.raises(ValueError, match="multiple of the patch size"):
        get_backbone(path, image_size=30)


def test_model_instance_and_weights_in_the_name(tiny_dinov2):
    _, model = tiny_dinov2
    backbone = get_backbone(model, layers=[0, 5])
    assert isinstance(backbone, HuggingFaceBackbone)
    assert backbone.input_spec.size == (28, 28)
    _check_interface(backbone)
    changed = transformers.Dinov2Model(model.config)
    assert get_backbone(changed, layers=[0, 5]).name != backbone.name


def test_missing_model_offline_says_what_to_do(tmp_path):
    with pytest.raises(OSError, match="pretrained=False"):
        get_backbone(str(tmp_path / "nowhere"), local_files_only=True)


def test_dinov2_random_weights_real_architecture():
    backbone = get_backbone("dinov2-small", pretrained=False, image_size=28)
    assert backbone.layers == [2, 5, 8, 11]
    assert backbone.local_channels == [384] * 4
    assert backbone.local_shapes == [(2, 2)] * 4
    config = backbone.model.config
    assert (config.num_hidden_layers, config.patch_size, config.image_size) == (12, 14, 518)
    again = get_backbone("dinov2-small", pretrained=False, image_size=28)
    assert again.name == backbone.name, "random weights must be reproducible"
    _check_interface(backbone, batch=1)
    assert "dinov2-small" in available_backbones()


def test_dinov2_bf16_autocast_through_the_cache(tiny_dinov2):
    path, _ = tiny_dinov2
    backbone = get_backbone(path)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)
    full = extract_features(backbone, images)
    mixed = extract_features(backbone, images, autocast="bf16", dtype="bfloat16")
    for a, b in zip(full.batch(None)[0], mixed.batch(None)[0], strict=True):
        assert torch.isfinite(b).all()
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99


def test_weights_fingerprint_ignores_thread_count():
    torch.manual_seed(0)
    module = nn.Linear(1000, 1000)
    previous = torch.get_num_threads()
    prints = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        prints.append(weights_fingerprint(module))
    torch.set_num_threads(previous)
    assert prints[0] == prints[1]
    with torch.no_grad():
        module.weight[3, 7] += 1e-3
    assert weights_fingerprint(module) != prints[0]


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(12) == [2, 5, 8, 11]
    assert evenly_spaced_layers(24) == [5, 11, 17, 23]
    assert evenly_spaced_layers(40) == [9, 19, 29, 39]
    assert evenly_spaced_layers(3) == [0, 1, 2]


# --- forward hooks -------------------------------------------------------------------


class _TinyViT(nn.Module):
    """Patch embedding + CLS token + two blocks, tokens (B, 1 + 16, C)."""

    def __init__(self, n_prefix=1):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 8, stride=8)
        self.prefix = nn.Parameter(torch.randn(1, n_prefix, 8))
        self.blocks = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.blocks(tokens)[:, 0])


def test_hooks_on_a_cnn():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.Flatten()
    )
    backbone = get_backbone(net, layers=["1", "2"], input_spec=InputSpec(size=(32, 32)))
    assert isinstance(backbone, HookBackbone)
    assert backbone.local_channels == [4, 6]
    assert backbone.local_shapes == [(15, 15), (7, 7)]
    assert backbone.global_dims == [8, 12]
    locals_, globals_ = _check_interface(backbone)
    torch.testing.assert_close(globals_[1][:, :6], locals_[1].mean(dim=(2, 3)))
    _check_frozen(backbone)
    # the hooks stay silent when the user runs the network alone
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 6 * 7 * 7)


def test_hooks_on_tokens_and_early_stop():
    vit = _TinyViT()
    backbone = get_backbone(vit, layers=["blocks.0"], input_spec=InputSpec(size=(32, 32)))
    assert backbone.local_shapes == [(4, 4)]
    assert backbone.global_dims == [8]
    calls = []
    vit.head.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    locals_, globals_ = backbone(x)
    assert calls == [], "the forward pass must stop after the last layer needed"
    tokens = vit.blocks[0](
        torch.cat([vit.prefix.expand(2, -1, -1), vit.patch(x).flatten(2).transpose(1, 2)], 1)
    )
    torch.testing.assert_close(globals_[0], tokens[:, 0])
    torch.testing.assert_close(locals_[0][:, :, 2, 3], tokens[:, 1 + 2 * 4 + 3])


def test_hooks_errors_name_the_problem():
    spec = InputSpec(size=(32, 32))
    with pytest.raises(ValueError, match=r"blocks\.0.*\(1, 19, 8\).*n_prefix_tokens"):
        get_backbone(_TinyViT(n_prefix=3), layers=["blocks.0"], input_spec=spec)
    backbone = get_backbone(
        _TinyViT(n_prefix=3), layers=["blocks.0"], input_spec=spec, n_prefix_tokens=3
    )
    assert backbone.local_shapes == [(4, 4)]
    with pytest.raises(ValueError, match=r"no submodule named 'block\.0'.*blocks\.0"):
        get_backbone(_TinyViT(), layers=["block.0"], input_spec=spec)
    with pytest.raises(ValueError, match="pass name="):
        get_backbone(nn.Sequential(nn.ReLU()), layers=["0"], input_spec=spec)
    named = get_backbone(nn.Sequential(nn.ReLU()), layers=["0"], input_spec=spec, name="relu")
    assert named.name == "relu"
    with pytest.raises(ValueError, match="global_pool"):
        split_output(torch.zeros(1, 2, 3, 3), "x", "max")


def test_hook_features_go_through_the_cache():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU())
    backbone = get_backbone(net, layers=["1"], input_spec=InputSpec(size=(32, 32)))
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    store = extract_features(backbone, images)
    assert store.local_shapes == [(15, 15)]
    assert len(store) == 3


# --- registry ------------------------------------------------------------------------


def test_registry():
    pyramid = get_backbone("PYRAMID", image_size=32, n_scales=2)
    assert get_backbone(pyramid) is pyramid
    with pytest.raises(TypeError, match="no options"):
        get_backbone(pyramid, image_size=64)
    register_backbone("tiny-pyramid", lambda **kw: PyramidBackbone(32, n_scales=2, **kw))
    assert isinstance(get_backbone("tiny-pyramid"), Backbone)
    assert "tiny-pyramid" in available_backbones()
    with pytest.raises(TypeError, match="name_or_module"):
        get_backbone(3)


# ------------------------------------------------------------------- EfficientNet-Lite0

#: photos of the 92 images of Kriegeskorte et al. (2008) and their ImageNet class
_K92_CLASSES = {
    24: 363, 25: 354, 29: 9, 31: 340, 32: 386, 35: 32, 40: 235, 41: 246, 42: 372,
    46: 291, 62: 954, 67: 953, 69: 945, 75: 481, 82: 587, 84: 763, 87: 879, 88: 487, 91: 919,
}  # fmt: skip
_MILITARY_UNIFORM = 652


def _logits(backbone, images):
    from afo_encoding.stimuli import as_stimuli

    x = as_stimuli(images).to_tensor(spec=backbone.input_spec)
    with torch.no_grad():
        return backbone.net(x)


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch")
    return get_backbone("efficientnet-lite0")


def test_efficientnet_lite0_layers_shapes_and_name(lite0):
    assert lite0.layer_names == ["blocks.2", "blocks.4", "blocks.10", "blocks.15"]
    assert lite0.local_channels == [24, 40, 112, 320]
    assert lite0.local_shapes == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert lite0.global_dims == [48, 80, 224, 640]  # average and max of every channel
    assert lite0.name.startswith("efficientnet-lite0:imagenet@")
    small = get_backbone("efficientnet-lite0", layers=["stem", 0, "head"], image_size=112)
    assert small.local_channels == [32, 16, 1280]
    assert small.local_shapes == [(56, 56), (56, 56), (4, 4)]
    assert small.name != lite0.name
    with pytest.raises(ValueError, match="no layer 'blocks.99'"):
        get_backbone("efficientnet-lite0", layers=["blocks.99"])


def test_efficientnet_lite0_is_really_pretrained(lite0):
    import matplotlib.cbook

    # the photograph of Grace Hopper that ships with matplotlib: a military uniform
    photo = str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    assert int(_logits(lite0, [photo]).argmax()) == _MILITARY_UNIFORM
    random = get_backbone("efficientnet-lite0", pretrained=False)
    assert random.name != lite0.name
    assert int(_logits(random, [photo]).argmax()) != _MILITARY_UNIFORM


@pytest.mark.slow  # ~20 s on 2 cores: out of the quick set
def test_efficientnet_lite0_knows_objects_and_faces(lite0, realdata):
    from scipy.io import loadmat

    folder = realdata / "kriegeskorte2008_92images"
    mat = loadmat(folder / "Kriegeskorte_Neuron2008_supplementalData.mat")
    stimuli = mat["stimuli_92objs"][0]
    images = [np.asarray(stimuli[i]["image"], dtype=np.uint8) for i in range(92)]
    chosen = sorted(_K92_CLASSES)
    predicted = _logits(lite0, [images[i] for i in chosen]).argmax(1).tolist()
    correct = sum(p == _K92_CLASSES[i] for i, p in zip(chosen, predicted))
    assert correct >= 16, f"{correct} of {len(chosen)} photos classified right"
    # faces (images 12-23) are closer to each other than to buildings (77, 80, 81, 89)
    # in the deepest layer's average-pooled vector
    from afo_encoding.stimuli import as_stimuli

    with torch.no_grad():
        _, globals_ = lite0(as_stimuli(images).to_tensor(spec=lite0.input_spec))
    deep = torch.nn.functional.normalize(globals_[-1][:, :320], dim=1)
    faces, buildings = deep[12:24], deep[[77, 80, 81, 89]]
    face_face = (faces @ faces.T)[~torch.eye(12, dtype=bool)].mean()
    face_building = (faces @ buildings.T).mean()
    assert face_face > face_building + 0.1, (float(face_face), float(face_building))
