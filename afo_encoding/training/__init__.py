"""The fitting engine: a Lightning Fabric loop with the paper's recipe and the All-for-One hooks.

- :func:`fit_model` trains a TopyNet-like model on :class:`SubjectData` (one per subject);
- :class:`TrainingConfig` is the recipe, :class:`EngineConfig` the hardware;
- :func:`predict_array` and :func:`validation_scores` run chunked over samples and voxels;
- :func:`greedy_soup` averages the top checkpoints that improve validation.
"""

from .checkpoints import TopKCheckpoints
from .data import MixedSubjectSampler, SubjectData
from .engine import EngineConfig, FitResult, TrainingConfig, fit_model
from .evaluation import PearsonAccumulator, iter_predictions, predict_array, validation_scores
from .losses import voxel_loss_sum
from .soup import greedy_soup

__all__ = [
    "EngineConfig",
    "FitResult",
    "MixedSubjectSampler",
    "PearsonAccumulator",
    "SubjectData",
    "TopKCheckpoints",
    "TrainingConfig",
    "fit_model",
    "greedy_soup",
    "iter_predictions",
    "predict_array",
    "validation_scores",
    "voxel_loss_sum",
]
