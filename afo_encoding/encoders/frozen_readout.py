"""Frozen readout: a fitted model's RetinaMapper and LayerSelector, copied into a new fit.

``TopyEncoder.fit(frozen_readout=...)`` copies them into the network it fits and freezes
them (All-for-One's ``freeze_readout`` pre-fits them once for every stage fit).
:func:`readout_source` takes what is needed from a fitted model (a few MB, where the whole
network may weigh hundreds, so that All-for-One hands only this to its workers);
:func:`freeze_readout` checks that both read the same voxels and copies it in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

__all__ = ["READOUT_OPTIONS", "ReadoutSource", "freeze_readout", "readout_source"]

#: TopyNet options that shape the RetinaMapper and the LayerSelector (besides the layers)
READOUT_OPTIONS = ("n_frequencies", "max_frequency", "hidden", "freeze_retina", "uniform_layers")


@dataclass(frozen=True)
class ReadoutSource:
    """What a frozen readout takes from a fitted model: per subject, its coordinates and
    the weights of its RetinaMapper and LayerSelector MLPs (``None`` for a FrozenRM /
    FrozenLS one); the options that shape them; a digest of the weights."""

    n_layers: int
    options: dict
    coords: list
    retina_mapper: list
    layer_selector: list
    digest: str


def readout_source(source: Any) -> ReadoutSource:
    """The frozen readout of a fitted TopyEncoder, AllForOneEncoder or TopyNet.

    All-for-One extracts it once and hands this to its workers: a few MB, where the whole
    network (heads of n_voxels x D) may weigh hundreds.
    """
    from ..nn import TopyNet

    if isinstance(source, ReadoutSource):
        return source
    model = source if isinstance(source, TopyNet) else getattr(source, "model_", None)
    if not isinstance(model, TopyNet):
        if isinstance(source, BaseEstimator) and hasattr(source, "fit"):
            raise NotFittedError(
                f"frozen_readout: this {type(source).__name__} is not fitted. Fit it on the "
                "same subjects and voxels first, then pass it (or pass its model_)."
            )
        raise TypeError(
            "frozen_readout must be a fitted TopyEncoder or AllForOneEncoder, or a TopyNet, "
            f"got {type(source).__name__}."
        )
    h = hashlib.blake2b(digest_size=8)
    states = {"retina_mapper": [], "layer_selector": []}
    for s, sub in enumerate(model.subjects):
        for part, values in states.items():
            mlp = getattr(sub, part).mlp
            state = None
            if mlp is not None:
                state = {k: v.detach().to("cpu", copy=True) for k, v in mlp.state_dict().items()}
                for k, v in state.items():
                    h.update(f"{s}.{part}.{k}{tuple(v.shape)}{v.dtype}".encode())
                    h.update(v.contiguous().view(torch.uint8).numpy().tobytes())
            values.append(state)
    return ReadoutSource(
        n_layers=model.n_layers,
        options={k: model.config[k] for k in READOUT_OPTIONS},
        coords=[np.asarray(c, dtype=np.float64) for c in model.config["coords"]],
        digest=h.hexdigest(),
        **states,
    )


def freeze_readout(model, source: ReadoutSource) -> None:
    """Copy ``source``'s RetinaMapper and LayerSelector weights into ``model`` and freeze
    them (``requires_grad=False``), after checking that both read the same voxels."""
    if source.n_layers != model.n_layers:
        raise ValueError(
            f"frozen_readout reads {source.n_layers} backbone layer(s), this fit "
            f"{model.n_layers}: its LayerSelector does not fit. Use the backbone and layers "
            "the frozen readout was fitted with."
        )
    if len(source.coords) != model.n_subjects:
        raise ValueError(
            f"frozen_readout was fitted on {len(source.coords)} subject(s), this fit has "
            f"{model.n_subjects}: pass a model fitted on the same subjects, in the same order."
        )
    for s, (theirs, ours) in enumerate(zip(source.coords, model.config["coords"])):
        if theirs.shape != ours.shape:
            raise ValueError(
                f"Subject {s}: frozen_readout has {theirs.shape[0]} voxel(s) with "
                f"{theirs.shape[1]}-D coordinates, this fit {ours.shape[0]} with "
                f"{ours.shape[1]}-D ones. Fit it on the same voxels (same mask, same dropped "
                "voxels, same coordinates)."
            )
        if not np.array_equal(theirs, ours):
            worst = float(np.max(np.abs(theirs - ours)))
            raise ValueError(
                f"Subject {s}: the voxel coordinates differ from frozen_readout's (largest "
                f"difference {worst:.3g}), so its positional encoding would differ. Fit it on "
                "the same voxels with the same coordinates."
            )
    for name, value in source.options.items():
        if model.config[name] != value:
            raise ValueError(
                f"frozen_readout was built with {name}={value!r}, this fit with "
                f"{name}={model.config[name]!r}: its RetinaMapper and LayerSelector do not "
                "fit. Use the same value."
            )
    for sub, *states in zip(model.subjects, source.retina_mapper, source.layer_selector):
        for part, state in zip(("retina_mapper", "layer_selector"), states):
            mlp = getattr(sub, part).mlp
            if mlp is not None:
                mlp.load_state_dict(state)
                mlp.requires_grad_(False)
