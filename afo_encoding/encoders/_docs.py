"""Parameter documentation shared by the encoders (see :mod:`afo_encoding._docs`)."""

from .._docs import fill_doc

DOCS = {
    "backbone": """
        backbone : str or torch.nn.Module, default="pyramid"
            Anything :func:`afo_encoding.backbones.get_backbone` takes: ``"pyramid"`` (Gabor
            pyramid, offline, fast on a CPU), ``"efficientnet-lite0"`` (pretrained on
            ImageNet, offline, with the ``[models]`` extra), ``"dinov2-base"`` (the paper's),
            a Hugging Face id, a module.
        layers : list or None, default=None
            Backbone layers to read (``None``: the backbone's default; the pyramid reads all
            its scales, set their number with ``backbone_params={"n_scales": k}``).
        backbone_params : dict or None, default=None
            More keyword arguments for ``get_backbone`` (e.g. ``{"image_size": 64}``).""",
    "memory": """
        memory : str, Path, joblib.Memory or None, default=None
            Disk cache of the backbone features (nilearn's convention). Features are cached
            in RAM for the process in any case.""",
}

fill_encoder_doc = fill_doc(DOCS)
