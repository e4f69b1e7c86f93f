"""Figures of what an encoding model learned and how well it predicts (the paper's figures).

Every function returns a :class:`matplotlib.figure.Figure` and saves it when given
``output_file`` (any format matplotlib writes, chosen by the extension). Functions take a
fitted encoder or the fitted arrays themselves (``retina_map_``, ``layer_weights_``,
scores), so they also serve models fitted elsewhere.

- :func:`plot_retina_map`: where in the image every voxel reads, coloured by the layer it
  reads most (Figure 4), optionally over a stimulus.
- :func:`plot_voxel_map`: any per-voxel values on the brain, in the space the responses
  came in: nilearn stat maps for volumes, nilearn surface plots for surfaces, MNE
  topomaps over time for EEG/MEG, a scatter of the coordinates for plain arrays.
- :func:`plot_layer_selector` and :func:`plot_retinotopy`: the LayerSelector (Figure 5)
  and the RetinaMapper (eccentricity, polar angle) on the brain, through
  :func:`plot_voxel_map`.
- :func:`plot_score_distributions`: violins of voxel scores per ROI or per model, with
  noise ceilings (Figure 1); :func:`plot_score_comparison`: two models voxel by voxel.
- :func:`plot_veroi_dendrogram`: the veROI hierarchy and its cut (Figure 6), and
  :func:`plot_veroi_map`: the veROIs on the brain in the dendrogram's colours.
- :func:`plot_retrieval_grid`: the image shown next to the best candidates retrieved from
  the brain response, per ROI (Figures 7 and 9).
- :func:`plot_identification`: identification accuracy per ROI next to the encoding score
  (Figure 8).
- :func:`plot_encoder_report`: all of the above for a fitted encoder and held-out data,
  written to a folder (what ``afo-encoding demo`` does).

matplotlib, nilearn's plotting and MNE are imported when a function runs, so importing
this package is cheap; nothing in afo_encoding imports it.
"""

from .dendrogram import plot_veroi_dendrogram, plot_veroi_map
from .model_maps import plot_layer_selector, plot_retinotopy
from .report import plot_encoder_report
from .retina_map import plot_retina_map
from .retrieval import plot_identification, plot_retrieval_grid
from .scores import plot_score_comparison, plot_score_distributions
from .voxel_map import plot_voxel_map

__all__ = [
    "plot_encoder_report",
    "plot_identification",
    "plot_layer_selector",
    "plot_retina_map",
    "plot_retinotopy",
    "plot_retrieval_grid",
    "plot_score_comparison",
    "plot_score_distributions",
    "plot_veroi_dendrogram",
    "plot_veroi_map",
    "plot_voxel_map",
]
