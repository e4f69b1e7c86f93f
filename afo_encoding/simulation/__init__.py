"""Synthetic brains with known ground truth, for tests, examples and the ``demo`` command.

:func:`make_retinotopic_dataset` draws procedural images, places voxels in the occipital
gray matter of the MNI152 template that ships with nilearn, gives each voxel a population
receptive field (pRF) from a smooth retinotopic map and a feature type from its visual
area, and returns the responses as an fMRI volume, or as EEG / MEG epochs through a
documented forward model, together with everything that was planted.
"""

from .dataset import make_retinotopic_dataset
from .features import FEATURE_TYPES
from .images import CATEGORIES
from .retinotopy import AREAS

__all__ = ["AREAS", "CATEGORIES", "FEATURE_TYPES", "make_retinotopic_dataset"]
