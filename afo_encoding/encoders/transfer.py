"""Warm start: a fitted encoder's shared trunk reused by the fit of a new subject.

``TopyEncoder.fit(X, y, transfer_from=fitted)`` starts from what ``fitted`` learnt that
does not belong to its voxels: the adapters of every backbone layer and, for
``head_solver="sgd"``, the MLP global branch (the ridge recipe's global branch is the new
subject's own linear probe). The new subject's RetinaMapper, LayerSelector and heads are
learnt from scratch. :func:`transfer_source` takes these weights from a fitted encoder and
checks that they fit the new fit's backbone; :func:`load_trunk` copies them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["TransferSource", "load_trunk", "transfer_source"]


@dataclass(frozen=True)
class TransferSource:
    """The shared trunk of a fitted encoder: its backbone's name, the kind of adapters
    (``"conv"`` or ``"linear"``), the states of the adapters and of the MLP global branch
    (``None`` when absent: the ridge recipe's global branch is never transferred), the
    network options that shape them, and a digest of those weights (part of the
    checkpoints' run key)."""

    backbone_name: str
    adapter: str
    adapters: list
    global_branch: dict | None
    options: dict
    digest: str


def transfer_source(source: Any) -> TransferSource:
    """The shared trunk of a fitted TopyEncoder or AllForOneEncoder (fitted on images)."""
    from ..backbones.encoder import encoder_digest, encoder_parts

    if isinstance(source, TransferSource):
        return source
    model, backbone = encoder_parts(source)

    def state(module) -> dict | None:
        if module is None:
            return None
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    parts = torch.nn.ModuleDict({"adapters": model.adapters})
    if model.global_branch is not None:
        parts["global_branch"] = model.global_branch
    config = model.config
    return TransferSource(
        backbone_name=backbone.name,
        adapter=config["adapter"],
        adapters=[state(a) for a in model.adapters],
        global_branch=state(model.global_branch),
        options={k: config[k] for k in ("local_channels", "d_model", "adapter_width")},
        digest=encoder_digest(parts),
    )


def check_transfer(source: TransferSource, backbone_name: str | None, head_solver: str) -> None:
    """Refuse a trunk fitted on another backbone or with the other recipe."""
    if backbone_name is None:
        raise ValueError(
            "transfer_from needs images: this fit is on precomputed features, which the "
            "transferred adapters cannot be checked against. Fit on images."
        )
    if backbone_name != source.backbone_name:
        raise ValueError(
            "transfer_from was fitted on another backbone: its adapters read "
            f"{source.backbone_name!r}, this fit {backbone_name!r}. Use the same backbone, "
            "layers and backbone_params."
        )
    wanted = "linear" if head_solver == "ridge" else "conv"
    if source.adapter != wanted:
        theirs = "ridge" if source.adapter == "linear" else "sgd"
        raise ValueError(
            f"transfer_from was fitted with head_solver={theirs!r}, this fit uses "
            f"{head_solver!r}: their adapters differ. Use head_solver={theirs!r}."
        )


def load_trunk(model, source: TransferSource, freeze: bool) -> None:
    """Copy the adapters and the MLP global branch of ``source`` into ``model`` (an
    ``"sgd"`` network); with ``freeze`` they neither train nor decay."""
    for name in ("d_model", "adapter_width", "local_channels"):
        if model.config[name] != source.options[name]:
            raise ValueError(
                f"transfer_from was fitted with {name}={source.options[name]!r}, this fit "
                f"has {name}={model.config[name]!r}: its adapters do not fit. Use the same "
                "value."
            )
    for adapter, state in zip(model.adapters, source.adapters):
        adapter.load_state_dict(state)
        adapter.requires_grad_(not freeze)
    if model.global_branch is not None:
        if source.global_branch is None:
            raise ValueError(
                "transfer_from was fitted with use_global=False, this fit with "
                "use_global=True: it has no global branch to give. Use the same value."
            )
        model.global_branch.load_state_dict(source.global_branch)
        model.global_branch.requires_grad_(not freeze)
