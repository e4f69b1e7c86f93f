"""Responses: one float32 array ``(n_samples, n_voxels)`` and the space it lives in.

:func:`as_responses` turns what a neuroscientist has -- an array, a 4D Niimg or a list of
3D Niimgs, a nilearn :class:`~nilearn.surface.SurfaceImage`, an :class:`mne.Epochs` --
into ``Y``, float32 ``(n_samples, n_voxels)``, and a :class:`ResponseSpace` that knows
where each column lives (``coords``), what was measured (``modality``), how to read new
data of the same kind (``transform``) and how to give predictions back in the container
the data came in (``inverse_transform``).

A "voxel" is a column of ``Y``: a voxel of a volume, a vertex of a surface, a (sensor,
time point) pair of an Epochs object, a column of an array.

Columns that are all-NaN or constant over the samples carry nothing to fit: they are
dropped with a warning (``space.keep`` says which were kept) and come back as NaN from
``inverse_transform``. Any other NaN or infinite value is an error.

:class:`ResponseSamples` wraps a container so that scikit-learn's model selection
(``cross_val_score``, ``GridSearchCV``) can split it by sample.

Spaces are picklable, and :meth:`ResponseSpace.to_dict` / :func:`space_from_dict` turn
them into plain JSON values and numpy arrays (for the ``save`` format) and back.
"""

from ._arrays import check_n_samples
from .array import ArraySpace
from .base import MODALITIES, ResponseSpace
from .convert import as_responses, space_from_dict
from .epochs import EpochsSpace
from .samples import ResponseSamples
from .surface import SurfaceSpace
from .volume import VolumeSpace

__all__ = [
    "MODALITIES",
    "ArraySpace",
    "EpochsSpace",
    "ResponseSamples",
    "ResponseSpace",
    "SurfaceSpace",
    "VolumeSpace",
    "as_responses",
    "check_n_samples",
    "space_from_dict",
]
