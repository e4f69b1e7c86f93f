"""TopyEncoder's two recipes: how ``fit`` turns the data it read into a trained TopyNet.

- :func:`fit_sgd`: the paper's recipe, the whole network trained by SGD on the training
  engine (:func:`afo_encoding.training.fit_model`);
- :func:`fit_ridge`: a short SGD fit places the readout, then closed-form ridge heads
  (:mod:`afo_encoding.encoders.ridge_recipe`).

:data:`RECIPE_DEFAULTS` resolves the ``"auto"`` training settings of each.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .._devices import engine_placement, resolve_device
from .frozen_readout import freeze_readout
from .transfer import load_trunk

#: a voxel mapped this close to the image border sits where tanh has no gradient left
_SATURATED = 0.99


def warn_if_retina_saturated(retina_map: np.ndarray, subject: int, learning_rate: float):
    """Warn when most voxels of a subject are mapped onto the border of the image.

    The RetinaMapper's output is ``tanh`` of an MLP: when large early steps push the MLP's
    output far out, ``tanh`` saturates, its gradient vanishes and the whole map stays stuck
    on the border, a failed fit that trains on and scores low without any error. On the
    simulator this happened for about half of the seeds at ``learning_rate=1e-2`` (every
    early-area voxel at the border, retina map uncorrelated with the pRF centres), never at
    the paper's 3e-3; a healthy map had at most about 20% of voxels at the border
    (peripheral ones).
    """
    if retina_map.size == 0:
        return
    fraction = float(np.mean(np.abs(retina_map).max(axis=1) >= _SATURATED))
    if fraction > 0.5:
        warnings.warn(
            f"The RetinaMapper of subject {subject} put {fraction:.0%} of the voxels on the "
            f"border of the image (|u| >= {_SATURATED}): its tanh saturated during training "
            "and the map is stuck there, so the voxels read the wrong place of the image. "
            f"Refit with a smaller learning_rate (got {learning_rate}; the paper's is 3e-3) "
            "or another random_state, and check retina_map_.",
            ConvergenceWarning,
            stacklevel=3,
        )


#: the global branch of the ridge recipe reads what LinearProbeEncoder does by default
_PROBE_COMPONENTS = 1000
_PROBE_POOL = 4

#: training settings whose default depends on the head solver: the ridge recipe's short
#: SGD fit only places the readout; "sgd" is the paper's recipe (section 4.6)
RECIPE_DEFAULTS = {
    "ridge": {
        "sigma": 0.1,
        "max_epochs": 40,
        "batch_size": 64,
        "learning_rate": 3e-2,
        "retina_lr_scale": 0.1,
        "n_iter_no_change": 10,
    },
    "sgd": {
        "sigma": 0.01,
        "max_epochs": 200,
        "batch_size": 128,
        "learning_rate": 3e-3,
        "retina_lr_scale": 1.0,
        "n_iter_no_change": 20,
    },
}


@dataclass
class FitData:
    """What ``fit`` read: per subject, features, image ids, responses and fit keywords."""

    multi: bool
    stores: list
    ids: list
    Ys: list
    spaces: list
    one_d: list
    kept: list


@dataclass
class Seeds:
    """Seeds of the model's initial weights, the validation splits and the loop."""

    model: int
    splits: list
    fit: int | None


def empty_history() -> dict:
    """The history of a fit with no SGD epoch (a frozen readout under the ridge recipe)."""
    return {
        "epoch": [], "train_loss": [], "val_score": [], "val_score_subjects": [],
        "seconds": [], "best_epoch": 0, "best_score": float("nan"), "soup_epochs": [],
        "stopped_early": False,
    }  # fmt: skip


def resolved(enc: Any, name: str) -> Any:
    """The encoder's training setting ``name``, ``"auto"`` resolved by
    :data:`RECIPE_DEFAULTS` for its ``head_solver``."""
    value = getattr(enc, name)
    if isinstance(value, str) and value == "auto":
        return RECIPE_DEFAULTS[enc.head_solver][name]
    return value


def network(enc, data: FitData, seed: int, **options: Any):
    """A new TopyNet for these subjects, with the encoder's options (and ``options``)."""
    from ..nn import TopyNet

    params = {
        "d_model": enc.d_model,
        "adapter_width": enc.adapter_width,
        "sigma": resolved(enc, "sigma"),
        "entropy_weight": enc.entropy_weight,
        "use_global": enc.use_global,
        "freeze_retina": enc.freeze_retina,
        "uniform_layers": enc.uniform_layers,
    }
    params = {
        "local_channels": data.stores[0].local_channels,
        "global_dims": data.stores[0].global_dims,
        **params,
        **options,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TopyNet(coords=[space.coords for space in data.spaces], **params)


def train(
    enc, model, data, subjects, seeds, readout, callbacks, transfer=None,
    freeze_adapters=True, **overrides,
):  # fmt: skip
    """Run the training loop on ``model`` with the encoder's settings (``overrides``
    replace some) and its engine; returns the model (on the CPU) and the FitResult (see
    :func:`afo_encoding.training.fit_model`). ``transfer`` and ``freeze_adapters`` (a warm
    start) enter the checkpoints' run key."""
    from ..training import EngineConfig, TrainingConfig, fit_model

    config = TrainingConfig(
        max_epochs=resolved(enc, "max_epochs"),
        batch_size=resolved(enc, "batch_size"),
        learning_rate=resolved(enc, "learning_rate"),
        weight_decay=enc.weight_decay,
        n_voxels_per_step=enc.n_voxels_per_step,
        n_iter_no_change=resolved(enc, "n_iter_no_change"),
        top_k=enc.top_k,
        soup=enc.soup,
        lr_scales=(("retina_mapper", resolved(enc, "retina_lr_scale")),),
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    accelerator, devices = engine_placement(enc.device)
    engine = EngineConfig(
        accelerator=accelerator,
        devices=enc.devices if devices is None else devices,
        precision=enc.precision,
        strategy=enc.strategy,
        num_nodes=enc.num_nodes,
    )
    key = {
        "model": {k: v for k, v in model.config.items() if k != "coords"},
        "coords": [
            hashlib.blake2b(space.coords.tobytes(), digest_size=8).hexdigest()
            for space in data.spaces
        ],
    }
    if readout is not None:  # (unfrozen fits keep the run folders they had)
        key["frozen_readout"] = readout.digest
    if transfer is not None:
        key["transfer_from"] = [transfer.digest, freeze_adapters]
    if enc.head_solver != "sgd":
        key["head_solver"] = enc.head_solver
    result = fit_model(
        model,
        subjects,
        config,
        engine,
        checkpoint_dir=enc.checkpoint_dir,
        run_key=json.dumps(key, sort_keys=True),
        random_state=seeds.fit,
        verbose=enc.verbose,
        callbacks=callbacks,
    )
    model = model.cpu().eval()
    # the fitted model_ is an ordinary TopyNet (as load() rebuilds it), frozen or not
    model.requires_grad_(True)
    return model, result


def fit_sgd(
    enc, data, subjects, standardizers, seeds, readout, callbacks, transfer=None,
    freeze_adapters=True,
):  # fmt: skip
    """The paper's recipe: the whole network, heads included, trained by SGD; with
    ``transfer`` (a :class:`~afo_encoding.encoders.transfer.TransferSource`), the adapters
    and the global branch start from its weights (and stay there with
    ``freeze_adapters``).

    Returns the trained TopyNet (heads in the units of ``y``), the history, every
    subject's validation r per monitored voxel and ``None`` (the layer weights are the
    LayerSelector's).
    """
    model = network(enc, data, seeds.model)
    if readout is not None:
        freeze_readout(model, readout)
    if transfer is not None:
        load_trunk(model, transfer, freeze_adapters)
    model, result = train(
        enc, model, data, subjects, seeds, readout, callbacks, transfer, freeze_adapters
    )
    # the network learnt z-scored voxels: fold each voxel's scale and mean into its head
    # (y = m.w / D + b is linear in w and b), so that it predicts in the units of y
    with torch.no_grad():
        for head, (mean, scale) in zip(model.heads, standardizers):
            scale_t = torch.from_numpy(scale).to(head.weight.dtype)
            head.weight.mul_(scale_t[:, None])
            head.bias.mul_(scale_t).add_(torch.from_numpy(mean).to(head.bias.dtype))
    return model, result.history, result.per_voxel_scores, None


def fit_ridge(enc, data, subjects, seeds, readout, callbacks, transfer=None):
    """The ridge recipe (:mod:`afo_encoding.encoders.ridge_recipe`): SGD places the
    readout, closed-form ridge heads read it and the global branch. With ``transfer`` (a
    :class:`~afo_encoding.encoders.transfer.TransferSource`), the readout maps' projections
    are its own instead of being fitted to these images; the global branch is always this
    subject's own linear probe: a probe on the source's principal axes is a ridge in a
    smaller span than the one of these images, and measured 0.97-0.99x the own probe's r
    on a held-out V4 session at 50-200 training images (3 seeds).

    Returns, as :func:`fit_sgd`, the TopyNet, the history, the validation r (out of fold)
    and each subject's layer shares of the local readout.
    """
    from . import ridge_recipe as recipe

    if transfer is not None:
        adapters = recipe.transferred_adapters(transfer.adapters)
    else:
        adapters = recipe.fit_linear_adapters(
            data.stores, [d.train_index for d in subjects], enc.readout_channels, seeds.model
        )
    channels = [a.out_channels for a in adapters]
    placement = network(
        enc,
        data,
        seeds.model,
        adapter="identity",
        layer_mixing="concat",
        use_global=False,
        local_channels=channels,
        global_dims=[0] * len(channels),
    )
    if readout is not None:
        freeze_readout(placement, readout)
    history = empty_history()
    if readout is None and not enc.freeze_retina:
        # the adapters are fixed: apply them once, the SGD fit reads the maps many times
        on_maps = [
            replace(d, features=recipe.adapted_store(d.features, adapters)) for d in subjects
        ]
        placement, result = train(
            enc, placement, data, on_maps, seeds, readout, callbacks, transfer, top_k=1,
            soup=False,
        )  # fmt: skip
        history = result.history
    options = {"adapter": "linear", "adapter_channels": channels, "layer_mixing": "concat"}
    probe, scores = None, [None] * len(data.stores)
    if enc.use_global:
        probe, scores = recipe.fit_probe_branch(
            data.stores,
            [np.arange(len(st)) for st in data.stores],
            _PROBE_COMPONENTS,
            _PROBE_POOL,
            seeds.model,
            verbose=enc.verbose,
        )
    if probe is not None:
        options["probe"] = {
            "n_features": probe.mean.shape[0],
            "n_components": probe.n_components,
            "pool_size": probe.pool_size,
        }
    final = network(enc, data, seeds.model, **options)
    recipe.copy_readout(placement, final)
    for target, adapter in zip(final.adapters, adapters):
        target.load_state_dict(adapter.state_dict())
    if probe is not None:
        final.probe.load_state_dict(probe.state_dict())
    device = resolve_device(enc.device)
    heads = []
    for s, (store, Y, kept) in enumerate(zip(data.stores, data.Ys, data.kept)):
        targets = recipe.blended_targets(
            Y, kept["loss_weight"], kept["soft_targets"], kept["soft_weight"]
        )
        folds = recipe.image_folds(data.ids[s], enc.cv)
        heads.append(
            recipe.solve_heads(
                final,
                store,
                s,
                Y,
                targets,
                scores[s],
                folds,
                alphas=enc.alphas,
                device=device,
                batch_size=resolved(enc, "batch_size"),
            )
        )
    recipe.set_heads(final, heads)
    history.update(recipe.summary(heads))
    validation = [h.cv_r[d.monitor_index] for h, d in zip(heads, subjects)]
    return final.eval(), history, validation, [h.layer_share for h in heads]
