"""Volumes (4D Niimg, lists of 3D Niimgs): one voxel per in-mask voxel, world mm coords."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._arrays import check_coords, check_numeric, short_repr
from .base import ResponseSpace


def is_niimg(obj: Any) -> bool:
    return type(obj).__module__.startswith("nibabel") and hasattr(obj, "affine")


def _same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and np.allclose(affine_a, affine_b)


def _load_4d(y: Any, allow_3d: bool = False) -> Any:
    """Niimg-like (image, path, list of 3D images/paths) -> a 4D nibabel image (lazy data).

    A single 3D image is an error, unless ``allow_3d`` (then it is one sample).
    """
    import nibabel as nib
    from nilearn.image import load_img

    try:
        img = load_img(y)
    except Exception as err:  # nilearn raises several types; name the input either way
        raise ValueError(
            f"Cannot read the responses as Niimg ({short_repr(y)}): {err}"
        ) from err
    if img.ndim == 3 and allow_3d:
        return nib.Nifti1Image(np.asarray(img.dataobj)[..., None], img.affine)
    if img.ndim == 3:
        raise ValueError(
            f"The responses are one 3D image of shape {img.shape}, i.e. a single sample. "
            "Encoding needs one volume per image: pass a 4D image (x, y, z, n_samples) or a "
            "list of 3D images, one per sample."
        )
    if img.ndim != 4:
        raise ValueError(
            f"Volume responses must be a 4D image (x, y, z, n_samples); got {img.ndim}D with "
            f"shape {img.shape}."
        )
    return img


def _volume_mask(mask: Any, img: Any) -> Any:
    """A boolean 3D mask image on the grid of ``img``, from ``mask`` (see as_responses)."""
    import nibabel as nib
    from nilearn.image import resample_to_img
    from nilearn.maskers import NiftiMasker
    from nilearn.masking import load_mask_img

    if mask is None:
        mask_img = NiftiMasker().fit(img).mask_img_
    elif isinstance(mask, NiftiMasker):
        if hasattr(mask, "mask_img_"):
            mask_img = mask.mask_img_
        else:
            from sklearn.base import clone

            mask_img = clone(mask).fit(img).mask_img_
    else:
        try:
            data, affine = load_mask_img(mask)
        except Exception as err:
            raise ValueError(
                f"mask must be a 3D binary mask image (path or Niimg) or a NiftiMasker; "
                f"{short_repr(mask)} cannot be used: {err}"
            ) from err
        mask_img = nib.Nifti1Image(data.astype(np.uint8), affine)
    if not _same_grid(mask_img.shape, mask_img.affine, img.shape, img.affine):
        warnings.warn(
            f"The mask (shape {mask_img.shape[:3]}) is not on the grid of the responses "
            f"(shape {img.shape[:3]}); it is resampled to the responses' grid (nearest "
            "neighbour). The responses themselves are not resampled.",
            UserWarning,
            stacklevel=4,
        )
        mask_img = resample_to_img(
            mask_img, img, interpolation="nearest", force_resample=True, copy_header=True
        )
    data = np.asarray(mask_img.dataobj).astype(bool)
    if not data.any():
        raise ValueError("The mask selects no voxel of the responses' grid.")
    return nib.Nifti1Image(data.astype(np.uint8), img.affine)


def _extract_volume(img: Any, mask: np.ndarray) -> np.ndarray:
    """In-mask values of a 4D image as float32 ``(n_samples, n_in_mask)``, a block of
    volumes at a time (proxies are read lazily; one full-size allocation)."""
    n = int(img.shape[3])
    Y = np.empty((n, int(mask.sum())), dtype=np.float32)
    step = max(1, (1 << 25) // max(1, mask.size))
    for start in range(0, n, step):
        block = np.asarray(img.dataobj[..., start : start + step])
        check_numeric(block, "Image data")
        Y[start : start + step] = block[mask].T
    return Y


class VolumeSpace(ResponseSpace):
    """Space of volumes (4D Niimg or lists of 3D Niimgs): one voxel per in-mask voxel.

    Voxels are in the order of ``mask[mask]`` (C order over i, j, k), as in nilearn's
    maskers. ``coords`` are world coordinates in mm, ``affine @ (i, j, k, 1)``.
    ``transform`` reads 4D images, lists of 3D images, or one 3D image as one sample.
    ``inverse_transform`` gives a 4D float32 Nifti1Image on the same grid: 0 outside the
    mask (as nilearn's ``unmask``), NaN at dropped voxels.

    Attributes
    ----------
    mask_img : nibabel.Nifti1Image
        The 3D mask, on the grid (shape, affine) of the responses.
    masker : nilearn.maskers.NiftiMasker
        A masker fitted with that mask, for nilearn's own tools (plotting, reports).
    """

    kind = "volume"

    def __init__(self, mask_img: Any, **base: Any) -> None:
        from nilearn.maskers import NiftiMasker

        self.mask_img = mask_img
        self._mask = np.asarray(mask_img.dataobj).astype(bool)
        self.masker = NiftiMasker(mask_img=mask_img).fit()
        super().__init__(**base)

    @property
    def affine(self) -> np.ndarray:
        """Affine of the voxel grid (voxel indices -> world mm)."""
        return np.asarray(self.mask_img.affine)

    @staticmethod
    def _world_coords(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
        from nibabel.affines import apply_affine

        return apply_affine(affine, np.argwhere(mask)).astype(np.float64)

    def _voxel_name(self, raw_index: int) -> str:
        ijk = np.argwhere(self._mask)[raw_index]
        xyz = self.affine[:3, :3] @ ijk + self.affine[:3, 3]
        return (
            f"voxel (i, j, k) = {tuple(int(v) for v in ijk)} at "
            f"({', '.join(f'{v:.1f}' for v in xyz)}) mm"
        )

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        # in transform, a 3D image is one sample (a test volume, an atlas, a weight map)
        img = _load_4d(y, allow_3d=True)
        if not _same_grid(img.shape, img.affine, self._mask.shape, self.affine):
            raise ValueError(
                f"These images are not on the grid of the space: shape {img.shape[:3]} with "
                f"affine\n{np.asarray(img.affine)}\nwhile the space has shape "
                f"{self._mask.shape} with affine\n{self.affine}\nResample them first, e.g. "
                "nilearn.image.resample_to_img(imgs, space.mask_img)."
            )
        return _extract_volume(img, self._mask), True

    def _from_raw(self, Y: np.ndarray) -> Any:
        from nilearn.masking import unmask

        return unmask(Y, self.mask_img)

    def _one_sample(self, container: Any) -> Any:
        from nilearn.image import index_img

        return index_img(container, 0)

    def _geometry(self) -> dict[str, Any]:
        return {"mask": self._mask.astype(np.uint8), "affine": self.affine.astype(np.float64)}

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> VolumeSpace:
        import nibabel as nib

        mask = np.asarray(geometry["mask"]).astype(np.uint8)
        return cls(nib.Nifti1Image(mask, np.asarray(geometry["affine"], dtype=np.float64)),
                   **base)


def fit_volume(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, VolumeSpace]:
    """:func:`~afo_encoding.responses.as_responses` for Niimgs: ``(Y, space)``."""
    img = _load_4d(y)
    mask_img = _volume_mask(mask, img)
    mask_data = np.asarray(mask_img.dataobj).astype(bool)
    n_raw = int(mask_data.sum())
    if coords is None:
        raw_coords = VolumeSpace._world_coords(mask_data, np.asarray(img.affine))
    else:
        raw_coords = check_coords(coords, n_raw, "in-mask voxel")
    space = VolumeSpace(
        mask_img, keep=np.ones(n_raw, dtype=bool), coords=raw_coords, modality=modality or "fmri"
    )
    Y = _extract_volume(img, mask_data)
    return space._fit(Y, True, raw_coords), space

