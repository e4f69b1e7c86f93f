"""Parameter documentation shared by the plotting functions (see :mod:`afo_encoding._docs`)."""

from .._docs import fill_doc

DOCS = {
    "axes_options": """
        ax : matplotlib Axes | None
            Where to draw (default: a new figure).
        title : str | None
            Axes title.
        output_file : str | Path | None
            Save the figure there.""",
    "output_file": """
        output_file : str | Path | None
            Save the figure there.""",
    "subject": """
        subject : int
            Which subject of a multi-subject encoder.""",
    "space": """
        space : ResponseSpace | None
            Where the voxels live (default: the encoder's ``space_``).""",
    "layer_names": """
        layer_names : sequence of str | None
            Names of the layers (default: the encoder's backbone layer names).""",
    "voxel_map_kwargs": """
        **kwargs
            Passed to :func:`plot_voxel_map` (``times``, ``view``, ``title``...).""",
}

fill_plot_doc = fill_doc(DOCS)
