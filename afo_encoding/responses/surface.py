"""Surfaces (nilearn SurfaceImage): one voxel per mesh vertex, hemispheres kept apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._arrays import check_coords, check_numeric
from .base import ResponseSpace


def is_surface_image(obj: Any) -> bool:
    return type(obj).__module__.startswith("nilearn") and type(obj).__name__ == "SurfaceImage"


def _mesh_arrays(mesh: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PolyMesh -> {part: (coordinates (n, 3), faces (m, 3))}, parts in mesh order."""
    return {
        part: (np.asarray(m.coordinates), np.asarray(m.faces)) for part, m in mesh.parts.items()
    }


def _same_mesh(a: Any, b: Any) -> bool:
    if a is b:
        return True
    arrays_a, arrays_b = _mesh_arrays(a), _mesh_arrays(b)
    if list(arrays_a) != list(arrays_b):
        return False
    return all(
        ca.shape == cb.shape and fa.shape == fb.shape and np.allclose(ca, cb)
        and np.array_equal(fa, fb)
        for (ca, fa), (cb, fb) in zip(arrays_a.values(), arrays_b.values())
    )


def hemisphere_coords(mesh: Any) -> tuple[np.ndarray, list[float]]:
    """Vertex positions of all parts, later parts shifted along +x to stay apart.

    Each part after the first is moved by the smallest non-negative x shift that puts its
    leftmost vertex at least ``gap`` to the right of the rightmost vertex of the parts
    before it; ``gap`` is 10% of the widest part's x extent. Pial or white meshes (left
    hemisphere at x < 0) move by a few mm at most; inflated or spherical meshes, whose
    hemispheres overlap, are separated. Returns the coordinates and the shift of each part.
    """
    parts = [np.asarray(c, dtype=np.float64) for c, _ in _mesh_arrays(mesh).values()]
    gap = 0.1 * max(float(np.ptp(c[:, 0])) for c in parts)
    out, shifts = [parts[0]], [0.0]
    right_edge = float(parts[0][:, 0].max())
    for c in parts[1:]:
        shift = max(0.0, right_edge + gap - float(c[:, 0].min()))
        c = c.copy()
        c[:, 0] += shift
        out.append(c)
        shifts.append(shift)
        right_edge = max(right_edge, float(c[:, 0].max()))
    return np.concatenate(out), shifts


class SurfaceSpace(ResponseSpace):
    """Space of nilearn surface images: one voxel per mesh vertex, left then right.

    ``coords`` are the vertex positions of the mesh, with the right hemisphere shifted
    along +x when needed so that the two hemispheres never overlap (see
    :attr:`hemisphere_shifts`): on an inflated or spherical mesh a left and a right vertex
    can sit at the same place, and the model must still tell them apart.

    Attributes
    ----------
    mesh : nilearn.surface.PolyMesh
        The mesh; ``inverse_transform`` builds SurfaceImages on it.
    hemisphere_shifts : dict
        x shift applied to each part's coordinates in ``coords`` (mesh units).
    """

    kind = "surface"

    def __init__(self, mesh: Any, **base: Any) -> None:
        self.mesh = mesh
        self.parts = list(mesh.parts)
        self.n_vertices = [int(mesh.parts[p].n_vertices) for p in self.parts]
        _, shifts = hemisphere_coords(mesh)
        self.hemisphere_shifts = dict(zip(self.parts, shifts))
        super().__init__(**base)

    def _voxel_name(self, raw_index: int) -> str:
        for part, n in zip(self.parts, self.n_vertices):
            if raw_index < n:
                return f"vertex {raw_index} of the {part} hemisphere"
            raw_index -= n
        return f"vertex {raw_index}"

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        images = _surface_images(y, self.mesh, lambda image: (
            f"the space (parts {list(image.mesh.parts)} with {image.mesh.n_vertices} "
            f"vertices; the space has {self.parts} with {sum(self.n_vertices)}, or the "
            "vertex positions differ). Project the data on the same mesh first."
        ))
        return _extract_surface(images, self.parts), True

    def _from_raw(self, Y: np.ndarray) -> Any:
        from nilearn.surface import SurfaceImage

        data, start = {}, 0
        for part, n in zip(self.parts, self.n_vertices):
            data[part] = np.ascontiguousarray(Y[:, start : start + n].T)
            start += n
        return SurfaceImage(mesh=self.mesh, data=data)

    def _one_sample(self, container: Any) -> Any:
        from nilearn.surface import SurfaceImage

        return SurfaceImage(mesh=self.mesh, data={
            part: np.ascontiguousarray(np.asarray(data)[:, 0])
            for part, data in container.data.parts.items()})

    def _geometry(self) -> dict[str, Any]:
        geometry: dict[str, Any] = {"parts": list(self.parts)}
        for part, (coordinates, faces) in _mesh_arrays(self.mesh).items():
            geometry[f"{part}.coordinates"] = np.asarray(coordinates)
            geometry[f"{part}.faces"] = np.asarray(faces, dtype=np.int64)
        return geometry

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> SurfaceSpace:
        from nilearn.surface import InMemoryMesh, PolyMesh

        meshes = {
            part: InMemoryMesh(
                np.asarray(geometry[f"{part}.coordinates"]), np.asarray(geometry[f"{part}.faces"])
            )
            for part in geometry["parts"]
        }
        return cls(PolyMesh(**meshes), **base)


def _surface_images(y: Any, mesh: Any, reference: Callable[[Any], str]) -> list[Any]:
    """``y`` (one SurfaceImage or several) as a list, checked to be on ``mesh``.

    ``reference(image)`` ends the error message for an image on another mesh.
    """
    images = [y] if is_surface_image(y) else list(y)
    for k, image in enumerate(images):
        if not is_surface_image(image):
            raise TypeError(f"Expected SurfaceImages; item {k} is a {type(image).__name__}.")
        if not _same_mesh(image.mesh, mesh):
            raise ValueError(f"Surface image {k} is not on the mesh of {reference(image)}")
    return images


def _extract_surface(images: list[Any], parts: list[str]) -> np.ndarray:
    """SurfaceImages -> float32 ``(n_samples, n_vertices)``, parts concatenated."""
    counts = []
    for k, image in enumerate(images):
        if list(image.data.parts) != parts:
            raise ValueError(
                f"Surface image {k} has data for {list(image.data.parts)}, expected {parts}."
            )
        first = image.data.parts[parts[0]]
        counts.append(1 if first.ndim == 1 else int(first.shape[1]))
    n_vertices = [int(images[0].mesh.parts[p].n_vertices) for p in parts]
    Y = np.empty((sum(counts), sum(n_vertices)), dtype=np.float32)
    row = 0
    for image, count in zip(images, counts):
        col = 0
        for part, n in zip(parts, n_vertices):
            data = np.asarray(image.data.parts[part])
            check_numeric(data, "Surface data")
            Y[row : row + count, col : col + n] = data.reshape(n, count).T
            col += n
        row += count
    return Y


def _surface_candidates(mask: Any, mesh: Any) -> np.ndarray | None:
    from nilearn.maskers import SurfaceMasker

    if mask is None:
        return None
    if isinstance(mask, SurfaceMasker):
        fitted = getattr(mask, "mask_img_", None)
        mask = fitted if fitted is not None else mask.mask_img
        if mask is None:
            return None
    if not is_surface_image(mask):
        raise TypeError(
            "For surface responses, mask must be a SurfaceImage of booleans on the same mesh "
            f"or a SurfaceMasker; got a {type(mask).__name__}."
        )
    if not _same_mesh(mask.mesh, mesh):
        raise ValueError("The mask is not on the mesh of the responses.")
    values = np.concatenate(
        [np.asarray(mask.data.parts[p]).reshape(-1) for p in mesh.parts]
    )
    if values.size != mesh.n_vertices:
        raise ValueError(
            f"The mask must have one value per vertex ({mesh.n_vertices}); got {values.size}."
        )
    selected = np.flatnonzero(values.astype(bool))
    if not selected.size:
        raise ValueError("The surface mask selects no vertex.")
    return selected


def fit_surface(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, SurfaceSpace]:
    """:func:`~afo_encoding.responses.as_responses` for SurfaceImages: ``(Y, space)``."""
    images = [y] if is_surface_image(y) else list(y)
    if not images:
        raise ValueError("No surface images: the list is empty.")
    mesh = images[0].mesh
    images = _surface_images(images, mesh, lambda image: "surface image 0.")
    parts = list(mesh.parts)
    raw_coords = hemisphere_coords(mesh)[0] if coords is None else check_coords(
        coords, mesh.n_vertices, "vertex"
    )
    space = SurfaceSpace(
        mesh,
        keep=np.ones(mesh.n_vertices, dtype=bool),
        coords=raw_coords,
        modality=modality or "fmri",
    )
    candidates = _surface_candidates(mask, mesh)
    Y = _extract_surface(images, parts)
    return space._fit(Y, True, raw_coords, candidates), space

