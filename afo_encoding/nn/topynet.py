"""TopyNet: the paper's encoding model over several subjects, on frozen backbone features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._subjects import check_subject
from .adapters import ConvAdapter, LinearAdapter
from .heads import VoxelHead
from .probe import ProbeBranch
from .readout import GlobalBranch, SubjectReadout

Features = tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]


class TopyNet(nn.Module):
    """Conv adapters + TopyNeck (RetinaMapper, LayerSelector, global branch) + voxel heads.

    Shared by all subjects: one :class:`~afo_encoding.nn.adapters.ConvAdapter` per backbone
    layer and the :class:`~afo_encoding.nn.readout.GlobalBranch`. Per subject (in
    ``subjects[s]``, a :class:`~afo_encoding.nn.readout.SubjectReadout`): the coordinates and
    their positional encoding, the RetinaMapper, the LayerSelector and the
    :class:`~afo_encoding.nn.heads.VoxelHead`.

    The backbone's features are inputs, detached: nothing here trains the backbone.

    Parameters
    ----------
    local_channels : list of int
        Channels ``C_l`` of the backbone's local maps, one per layer.
    global_dims : list of int
        Sizes ``G_l`` of the backbone's global vectors, one per layer (0 for none).
    coords : list of array-like of shape (n_voxels_s, d)
        All voxel coordinates of every subject (the positional encoding is normalised over
        them, once, here). ``d`` may differ between subjects.
    d_model : int, default=256
        Width ``D`` of the adapted maps and voxel vectors.
    sigma : float, default=0.01
        RetinaMapper training noise (fixed), one draw per voxel per forward call.
    n_frequencies : int, default=32
        Positional-encoding frequencies per coordinate axis.
    max_frequency : float, default=100.0
        Highest positional-encoding frequency, in radians over an axis' range.
    hidden : int, default=128
        Width of the RetinaMapper and LayerSelector MLPs.
    entropy_weight : float, default=3e-5
        ``lambda`` of the LayerSelector regulariser ``lambda * sum_l eta_l log eta_l``
        (averaged over the voxels of a forward call); 0 is the NoRegLS ablation.
    use_global : bool, default=True
        Add the global branch's vectors to the sampled ones (False: the no-global ablation).
    freeze_retina : bool, default=False
        FrozenRM ablation: every voxel reads the centre of the image.
    uniform_layers : bool, default=False
        FrozenLS ablation: every voxel mixes the layers with weights ``1 / L``.
    adapter_width : int or None, default=None
        Channels inside the adapters; None keeps each layer's ``C_l`` (the paper).
    adapter : {"conv", "linear", "identity"}, default="conv"
        ``"conv"``: the paper's trainable :class:`~afo_encoding.nn.adapters.ConvAdapter`
        to ``d_model`` channels; ``"linear"``: a fixed
        :class:`~afo_encoding.nn.adapters.LinearAdapter` to ``adapter_channels[l]``
        channels (its buffers are set by whoever fits the model); ``"identity"``: the
        maps are read as they come (``layer_mixing="concat"``).
    adapter_channels : list of int or None, default=None
        Output channels of the linear adapters, one per layer (``adapter="linear"``).
    layer_mixing : {"selector", "concat"}, default="selector"
        How a voxel reads the layers (see
        :class:`~afo_encoding.nn.readout.SubjectReadout`): the paper's LayerSelector mix in
        ``d_model`` dimensions, or every layer side by side, each with its own head
        weights (no LayerSelector, no MLP global branch).
    probe : dict or None, default=None
        ``{"n_features": F, "n_components": k, "pool_size": p}``: a
        :class:`~afo_encoding.nn.probe.ProbeBranch` whose ``k`` scores every head of a
        ``"concat"`` readout also weighs (the global branch of the ridge recipe).

    Attributes
    ----------
    config : dict
        The constructor arguments; ``TopyNet(**model.config)`` rebuilds the model (then
        ``load_state_dict``). All values are JSON-serialisable except ``coords``, a list of
        float64 arrays: store them next to the weights. The coordinates are not in
        ``state_dict()``; the positional encodings' low/high are.
    adapters : ModuleList of ConvAdapter
        Shared, one per layer.
    global_branch : GlobalBranch or None
        Shared.
    subjects : ModuleList of SubjectReadout
        Per subject: ``encoding``, ``retina_mapper``, ``layer_selector``, ``head``.

    Notes
    -----
    Parameter names, for optimiser groups: ``adapters.*`` and ``global_branch.*`` are shared;
    ``subjects.<s>.retina_mapper.*``, ``subjects.<s>.layer_selector.*`` and
    ``subjects.<s>.head.*`` belong to subject ``s`` and get a gradient only from batches of
    that subject.

    Examples
    --------
    >>> import numpy as np
    >>> coords = [np.random.default_rng(0).normal(size=(50, 3))]
    >>> model = TopyNet([8, 8], [8, 8], coords, d_model=16)
    >>> locals_ = [torch.randn(4, 8, 6, 6), torch.randn(4, 8, 3, 3)]
    >>> globals_ = [torch.randn(4, 8), torch.randn(4, 8)]
    >>> model((locals_, globals_), subject=0).shape
    torch.Size([4, 50])
    """

    def __init__(
        self,
        local_channels: Sequence[int],
        global_dims: Sequence[int],
        coords: Sequence[np.ndarray],
        d_model: int = 256,
        sigma: float = 0.01,
        n_frequencies: int = 32,
        max_frequency: float = 100.0,
        hidden: int = 128,
        entropy_weight: float = 3e-5,
        use_global: bool = True,
        freeze_retina: bool = False,
        uniform_layers: bool = False,
        adapter_width: int | None = None,
        adapter: str = "conv",
        adapter_channels: Sequence[int] | None = None,
        layer_mixing: str = "selector",
        probe: dict | None = None,
    ) -> None:
        super().__init__()
        if adapter not in ("conv", "linear", "identity"):
            raise ValueError(
                f"adapter must be 'conv', 'linear' or 'identity', got {adapter!r}."
            )
        if layer_mixing not in ("selector", "concat"):
            raise ValueError(
                f"layer_mixing must be 'selector' or 'concat', got {layer_mixing!r}."
            )
        if probe is not None and layer_mixing != "concat":
            raise ValueError("A probe branch is read by layer_mixing='concat' only.")
        if adapter != "conv" and layer_mixing != "concat":
            raise ValueError(
                f"adapter={adapter!r} keeps every layer's own width: use it with "
                "layer_mixing='concat'."
            )
        local_channels = [int(c) for c in local_channels]
        global_dims = [int(g) for g in global_dims]
        coords = _check_layers_and_coords(local_channels, global_dims, coords)
        self.config = {
            "local_channels": local_channels,
            "global_dims": global_dims,
            "coords": coords,
            "d_model": int(d_model),
            "sigma": float(sigma),
            "n_frequencies": int(n_frequencies),
            "max_frequency": float(max_frequency),
            "hidden": int(hidden),
            "entropy_weight": float(entropy_weight),
            "use_global": bool(use_global),
            "freeze_retina": bool(freeze_retina),
            "uniform_layers": bool(uniform_layers),
            "adapter_width": None if adapter_width is None else int(adapter_width),
            "adapter": adapter,
            "adapter_channels": None
            if adapter_channels is None
            else [int(c) for c in adapter_channels],
            "layer_mixing": layer_mixing,
            "probe": None if probe is None else dict(probe),
        }
        self.local_channels = local_channels
        self.global_dims = global_dims
        self.d_model = int(d_model)
        self.adapters, out_channels = _adapters(
            adapter, local_channels, adapter_channels, d_model, adapter_width
        )
        concat = layer_mixing == "concat"
        self.global_branch = (
            GlobalBranch(local_channels, global_dims, d_model)
            if use_global and not concat
            else None
        )
        self.probe = None if probe is None else ProbeBranch(**probe)
        self.subjects = nn.ModuleList(
            SubjectReadout(
                c,
                n_layers=len(local_channels),
                d_model=d_model,
                n_frequencies=n_frequencies,
                max_frequency=max_frequency,
                hidden=hidden,
                sigma=sigma,
                entropy_weight=entropy_weight,
                freeze_retina=freeze_retina,
                uniform_layers=uniform_layers,
                layer_mixing=layer_mixing,
                layer_channels=out_channels if concat else None,
                n_probe=0 if self.probe is None else self.probe.n_components,
            )
            for c in coords
        )

    @property
    def n_layers(self) -> int:
        """Number of backbone layers ``L``."""
        return len(self.local_channels)

    @property
    def n_subjects(self) -> int:
        """Number of subjects."""
        return len(self.subjects)

    @property
    def n_voxels(self) -> list[int]:
        """Number of voxels of each subject."""
        return [s.n_voxels for s in self.subjects]

    @property
    def heads(self) -> list[VoxelHead]:
        """The voxel heads, one per subject (``.weight`` (n_voxels, D), ``.bias``)."""
        return [s.head for s in self.subjects]

    def _subject(self, subject: int) -> SubjectReadout:
        return self.subjects[check_subject(subject, self.n_subjects, "the model")]

    def _check_features(self, features: Features) -> None:
        try:
            local_maps, global_vectors = features
        except (TypeError, ValueError):
            raise TypeError(
                "features must be a pair (local_maps, global_vectors) of lists, as returned "
                "by FeatureStore.batch or a Backbone's forward."
            ) from None
        if len(local_maps) != self.n_layers or len(global_vectors) != self.n_layers:
            raise ValueError(
                f"Expected {self.n_layers} local maps and global vectors (one per layer), "
                f"got {len(local_maps)} and {len(global_vectors)}."
            )
        for layer, (m, g) in enumerate(zip(local_maps, global_vectors)):
            c, gd = self.local_channels[layer], self.global_dims[layer]
            if m.ndim != 4 or m.shape[1] != c:
                raise ValueError(
                    f"Local map of layer {layer} must be (B, {c}, h, w), got {tuple(m.shape)}."
                )
            if self.global_branch is not None and (g.ndim != 2 or g.shape[1] != gd):
                raise ValueError(
                    f"Global vector of layer {layer} must be (B, {gd}), got {tuple(g.shape)}."
                )

    def encode_images(
        self, features: Features
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Run the shared parts once for a batch of images.

        Parameters
        ----------
        features : (list of Tensor (B, C_l, h_l, w_l), list of Tensor (B, G_l))
            Backbone features (detached here).

        Returns
        -------
        maps : list of Tensor (B, D_l, h_l, w_l)
            Adapted maps.
        global_features : Tensor (B, L, D), Tensor (B, k) or None
            The MLP global branch's vectors, the probe branch's scores, or None.
        """
        self._check_features(features)
        local_maps = [m.detach() for m in features[0]]
        maps = [adapter(m) for adapter, m in zip(self.adapters, local_maps)]
        glob = None
        if self.global_branch is not None:
            glob = self.global_branch(local_maps, [g.detach() for g in features[1]])
        elif self.probe is not None:
            glob = self.probe(local_maps, [g.detach() for g in features[1]])
        return maps, glob

    def readout(
        self,
        encoded: tuple[list[torch.Tensor], torch.Tensor | None],
        subject: int,
        voxel_index: torch.Tensor | None = None,
        return_regularization: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict voxels of one subject from :meth:`encode_images`' output.

        Lets several subjects or voxel chunks share one pass of the adapters over a batch.
        Arguments and returns as in :meth:`forward`.
        """
        maps, glob = encoded
        return self._subject(subject)(maps, glob, voxel_index, return_regularization)

    def forward(
        self,
        features: Features,
        subject: int,
        voxel_index: torch.Tensor | None = None,
        return_regularization: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict the responses of a subject's voxels to a batch of images.

        Parameters
        ----------
        features : (list of Tensor (B, C_l, h_l, w_l), list of Tensor (B, G_l))
            Backbone features of the batch, as returned by ``FeatureStore.batch``.
        subject : int
            Which subject's voxels.
        voxel_index : LongTensor of shape (n,) or None
            Indices (or a boolean mask) of the voxels to predict; None for all. The result
            is the full prediction restricted to these voxels (in eval mode; in training the
            position noise is drawn for the voxels asked).
        return_regularization : bool, default=False
            Also return the LayerSelector regulariser over these voxels, a scalar already
            multiplied by ``entropy_weight``: add it to the loss.

        Returns
        -------
        y : Tensor of shape (B, n), float32
        regularization : Tensor of shape (), float32
            Only with ``return_regularization``.
        """
        return self.readout(self.encode_images(features), subject, voxel_index,
                            return_regularization)

    def retina_map(self, subject: int) -> torch.Tensor:
        """RetinaMapper point ``(x, y)`` of every voxel of a subject, no noise.

        Returns
        -------
        u : Tensor of shape (n_voxels, 2)
            In ``[-1, 1]``, x right, y down, -1/1 the image edges (``grid_sample``,
            ``align_corners=False``). Detached.
        """
        return self._subject(subject).retina_map()

    def layer_weights(self, subject: int) -> torch.Tensor:
        """LayerSelector weights of every voxel of a subject: Tensor (n_voxels, L), detached."""
        return self._subject(subject).layer_weights()


def _check_layers_and_coords(local_channels, global_dims, coords) -> list[np.ndarray]:
    """Check one global size per layer and one coordinate array per subject; returns
    the coordinates as float64 arrays."""
    if not local_channels:
        raise ValueError("local_channels is empty: the backbone must give at least one layer.")
    if len(global_dims) != len(local_channels):
        raise ValueError(
            f"global_dims has {len(global_dims)} entries but local_channels has "
            f"{len(local_channels)}: give one per backbone layer."
        )
    if isinstance(coords, np.ndarray) and coords.ndim == 2:
        raise TypeError(
            "coords must be a list with one (n_voxels, d) array per subject; for one "
            "subject pass [coords]."
        )
    coords = [np.array(c, dtype=np.float64) for c in coords]
    if not coords:
        raise ValueError("coords is empty: give one coordinate array per subject.")
    return coords


def _adapters(adapter, local_channels, adapter_channels, d_model, adapter_width) -> tuple:
    """The adapter of every layer and the channels each gives the readout."""
    if adapter == "linear":
        channels = adapter_channels if adapter_channels is not None else local_channels
        if len(channels) != len(local_channels):
            raise ValueError(
                f"adapter_channels has {len(channels)} entries for {len(local_channels)} "
                "layers: give one per layer."
            )
        adapters = nn.ModuleList(
            LinearAdapter(c, k) for c, k in zip(local_channels, channels)
        )
        out_channels = [int(k) for k in channels]
    elif adapter == "identity":
        adapters = nn.ModuleList(nn.Identity() for _ in local_channels)
        out_channels = list(local_channels)
    else:
        adapters = nn.ModuleList(
            ConvAdapter(c, d_model, width=adapter_width) for c in local_channels
        )
        out_channels = [int(d_model)] * len(local_channels)
    return adapters, out_channels
