"""The entry points: any container to ``(Y, space)``, and a saved space back to a space."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .array import ArraySpace, fit_array
from .base import FORMAT_VERSION, MODALITIES, ResponseSpace
from .epochs import EpochsSpace, fit_epochs, is_mne
from .samples import unwrap_samples
from .surface import SurfaceSpace, fit_surface, is_surface_image
from .volume import VolumeSpace, fit_volume, is_niimg


def as_responses(
    y: Any,
    mask: Any = None,
    coords: Any = None,
    *,
    modality: str | None = None,
) -> tuple[np.ndarray, ResponseSpace]:
    """Turn responses into a float32 ``(n_samples, n_voxels)`` array and their space.

    Parameters
    ----------
    y : array-like, Niimg, SurfaceImage, mne.Epochs or ResponseSamples
        - array ``(n_samples, n_voxels)`` (or ``(n_samples, *shape)``, flattened in C
          order; 1D is one voxel);
        - 4D Niimg (image or path) or list of 3D Niimgs, one volume per sample;
        - :class:`nilearn.surface.SurfaceImage` (data ``(n_vertices, n_samples)`` per
          hemisphere) or a list of them;
        - :class:`mne.Epochs` / :class:`mne.EpochsArray`, one sample per epoch;
        - :class:`~afo_encoding.responses.ResponseSamples`: one of these, cut to some
          samples (what scikit-learn's model selection gives a fold).
    mask : optional
        Which voxels to model. Niimg: a 3D mask image (path or image) or a
        :class:`~nilearn.maskers.NiftiMasker` (fitted or not); ``None`` computes a mask
        with ``NiftiMasker()`` (nilearn's ``"background"`` strategy; that reads the whole
        image, so pass a mask for data larger than memory). SurfaceImage: a
        SurfaceImage of booleans on the same mesh. Array: a boolean array over the
        columns. Not used for Epochs (pick channels and crop times with MNE first).
    coords : array-like, shape (n_raw_voxels, d), optional
        Positions of the raw voxels (before dropping), overriding the ones derived from
        the container; needed for arrays, else an evenly spaced grid is used.
    modality : {"fmri", "meg", "eeg", "other"}, optional
        Overrides the modality inferred from the container (arrays: "other").

    Returns
    -------
    Y : ndarray of float32, shape (n_samples, n_voxels)
        Kept voxels only (all-NaN and constant ones are dropped with a warning). Not a
        copy when ``y`` already is a C-contiguous float32 array with nothing to drop.
    space : ResponseSpace
        :class:`ArraySpace`, :class:`VolumeSpace`, :class:`SurfaceSpace` or
        :class:`EpochsSpace`.

    Raises
    ------
    TypeError
        Non-numeric data or an unsupported container.
    ValueError
        NaN/inf in voxels that are not all-NaN, a 3D image where a 4D one is needed,
        Epochs with no epochs, shapes that do not fit together.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).normal(size=(20, 5))
    >>> Y, space = as_responses(y, coords=np.arange(5.0))
    >>> Y.dtype, Y.shape, space.coords.shape
    (dtype('float32'), (20, 5), (5, 1))
    """
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}.")
    y = unwrap_samples(y)
    kind = _input_kind(y)
    if kind == "volume":
        return fit_volume(y, mask, coords, modality)
    if kind == "surface":
        return fit_surface(y, mask, coords, modality)
    if kind == "epochs":
        return fit_epochs(y, mask, coords, modality)
    return fit_array(y, mask, coords, modality)


def _input_kind(y: Any) -> str:
    """"volume", "surface", "epochs" or "array" (or raise for what cannot be responses)."""
    first = y[0] if isinstance(y, (list, tuple)) and len(y) else y
    if isinstance(first, (str, os.PathLike)) and str(first).endswith((".fif", ".fif.gz")):
        raise TypeError(
            f"{str(first)!r} looks like an MNE file: read it first, e.g. "
            "mne.read_epochs(path), and pass the Epochs."
        )
    if is_niimg(first) or isinstance(first, (str, os.PathLike)):
        return "volume"
    if is_surface_image(first):
        return "surface"
    if is_mne(y):
        import mne

        if isinstance(y, mne.BaseEpochs):
            return "epochs"
        raise TypeError(
            f"Responses from MNE must be Epochs (one sample per image); got a "
            f"{type(y).__name__}. Epoch the recording around the image onsets first "
            "(mne.Epochs(raw, events, ...)); for an Evoked, stack the evoked responses of "
            "each image into an mne.EpochsArray."
        )
    if isinstance(y, dict):
        raise TypeError(
            "Responses must be an array, a Niimg, a SurfaceImage or mne.Epochs; got a dict."
        )
    return "array"


_SPACES: dict[str, type[ResponseSpace]] = {
    space.kind: space for space in (ArraySpace, VolumeSpace, SurfaceSpace, EpochsSpace)
}


def space_from_dict(state: dict[str, Any]) -> ResponseSpace:
    """Rebuild a space from :meth:`ResponseSpace.to_dict` output.

    Parameters
    ----------
    state : dict
        As returned by ``to_dict``; arrays may come back as any array-like.

    Returns
    -------
    space : ResponseSpace
        Equivalent to the saved one (same coords, kept voxels and container geometry).
    """
    kind = state.get("kind")
    if kind not in _SPACES:
        raise ValueError(f"Unknown response space kind {kind!r}; known: {sorted(_SPACES)}.")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"This space was saved by a newer afo-encoding (format "
            f"{state['format_version']}); upgrade afo-encoding to load it."
        )
    prefix = f"{kind}."
    geometry = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return _SPACES[kind]._from_geometry(
        geometry,
        keep=np.asarray(state["keep"]).astype(bool),
        coords=np.asarray(state["coords"], dtype=np.float64),
        modality=str(state["modality"]),
    )
