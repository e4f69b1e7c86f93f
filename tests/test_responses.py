"""as_responses and the response spaces: every input kind, every bad input, exact round trips.

Volumes are built from the MNI152 brain mask that ships with nilearn (resampled to 8 mm to
stay fast), sensors from MNE's bundled standard_1020 montage, surfaces from an icosphere
mesh built here (the shape of fsaverage's spherical mesh, at a lower resolution).
"""

import json
import pickle
import re
import tracemalloc
import warnings

import mne
import nibabel as nib
import numpy as np
import pytest
from nilearn.datasets import load_mni152_brain_mask
from nilearn.image import resample_img
from nilearn.maskers import NiftiMasker
from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

from afo_encoding.responses import (
    ArraySpace,
    EpochsSpace,
    ResponseSpace,
    SurfaceSpace,
    VolumeSpace,
    as_responses,
    check_n_samples,
    space_from_dict,
)

N_SAMPLES = 12


# ----------------------------------------------------------------------------------------
# fixtures: real images, meshes and epochs


@pytest.fixture(scope="module")
def mni_mask():
    """nilearn's MNI152 brain mask at 8 mm (~3,700 voxels)."""
    mask = load_mni152_brain_mask(resolution=2)
    return resample_img(mask, target_affine=np.diag([8.0, 8.0, 8.0]),
                        interpolation="nearest", force_resample=True, copy_header=True)


@pytest.fixture(scope="module")
def brain_4d(mni_mask):
    """4D float32 image: random values in the brain, 0 outside; and its boolean mask."""
    inside = mni_mask.get_fdata().astype(bool)
    data = np.zeros((*inside.shape, N_SAMPLES), dtype=np.float32)
    data[inside] = np.random.default_rng(0).normal(size=(inside.sum(), N_SAMPLES))
    return nib.Nifti1Image(data, mni_mask.affine), inside


def icosphere(n_subdivisions=2, radius=100.0):
    """Vertices and faces of a subdivided icosahedron (fsaverage's sphere is one)."""
    phi = (1 + 5**0.5) / 2
    vertices = [[-1, phi, 0], [1, phi, 0], [-1, -phi, 0], [1, -phi, 0], [0, -1, phi],
                [0, 1, phi], [0, -1, -phi], [0, 1, -phi], [phi, 0, -1], [phi, 0, 1],
                [-phi, 0, -1], [-phi, 0, 1]]
    faces = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
             [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
             [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    vertices = [np.array(v, dtype=float) / np.linalg.norm(v) for v in vertices]

    def midpoint(a, b, midpoints):
        key = (min(a, b), max(a, b))
        if key not in midpoints:
            p = vertices[a] + vertices[b]
            vertices.append(p / np.linalg.norm(p))
            midpoints[key] = len(vertices) - 1
        return midpoints[key]

    for _ in range(n_subdivisions):
        midpoints, new_faces = {}, []
        for a, b, c in faces:
            ab, bc, ca = (midpoint(*edge, midpoints) for edge in ((a, b), (b, c), (c, a)))
            new_faces += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = new_faces
    return radius * np.array(vertices), np.array(faces, dtype=np.int64)


@pytest.fixture(scope="module")
def sphere_mesh():
    """Both hemispheres as spheres centred on 0, like fsaverage's sphere meshes."""
    coordinates, faces = icosphere()
    return PolyMesh(left=InMemoryMesh(coordinates, faces),
                    right=InMemoryMesh(coordinates.copy(), faces.copy()))


def surface_image(mesh, n_samples=N_SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    data = {part: rng.normal(size=(m.n_vertices, n_samples)).astype(np.float32)
            for part, m in mesh.parts.items()}
    return SurfaceImage(mesh=mesh, data=data)


@pytest.fixture(scope="module")
def montage():
    with warnings.catch_warnings():
        # MNE 1.13 renames it colin27_1020; the issue asks for standard_1020
        warnings.simplefilter("ignore", FutureWarning)
        return mne.channels.make_standard_montage("standard_1020")


def make_epochs(montage, n_epochs=N_SAMPLES, n_eeg=16, n_times=20, seed=0, extra=True):
    """EpochsArray of EEG channels on the montage, plus a stimulus and a bad channel."""
    names = montage.ch_names[:n_eeg]
    types = ["eeg"] * n_eeg
    if extra:
        names, types = [*names, "STI 014", "BAD1"], [*types, "stim", "eeg"]
    info = mne.create_info(names, 200.0, types)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BAD1 is not on the montage
        info.set_montage(montage, on_missing="ignore")
    if extra:
        info["bads"] = ["BAD1"]
    data = np.random.default_rng(seed).normal(size=(n_epochs, len(names), n_times)) * 1e-6
    events = np.column_stack([np.arange(n_epochs) * 100 + 7, np.zeros(n_epochs, int),
                              np.arange(n_epochs) % 2 + 1])
    return mne.EpochsArray(data, info, events=events, tmin=-0.05,
                           event_id={"face": 1, "house": 2}, verbose=False)


# ----------------------------------------------------------------------------------------
# arrays


def test_array_roundtrip_dtype_and_given_coords():
    y = np.random.default_rng(0).normal(size=(N_SAMPLES, 30))
    coords = np.random.default_rng(1).normal(size=(30, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # coords given: no warning
        Y, space = as_responses(y, coords=coords)
    assert isinstance(space, ArraySpace)
    assert Y.dtype == np.float32
    assert Y.shape == (N_SAMPLES, 30)
    assert Y.flags.c_contiguous
    assert space.modality == "other"
    assert space.n_voxels == 30
    np.testing.assert_array_equal(space.coords, coords)
    assert space.coords.dtype == np.float64
    back = space.inverse_transform(Y)
    assert isinstance(back, np.ndarray)
    assert back.shape == y.shape
    np.testing.assert_array_equal(back, y.astype(np.float32))
    np.testing.assert_array_equal(space.transform(y), Y)


def test_float32_array_is_not_copied():
    y = np.random.default_rng(0).normal(size=(N_SAMPLES, 50)).astype(np.float32)
    Y, _ = as_responses(y, coords=np.arange(50.0))
    assert np.shares_memory(Y, y)


def test_array_without_coords_gets_a_grid_with_a_warning():
    y = np.random.default_rng(0).normal(size=(N_SAMPLES, 4, 5))
    with pytest.warns(UserWarning, match="evenly spaced grid"):
        Y, space = as_responses(y)
    assert Y.shape == (N_SAMPLES, 20)
    # (n, C, T): d = 2, the channel and time indices, columns in C order
    assert space.coords.shape == (20, 2)
    np.testing.assert_array_equal(space.coords[:6], [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4],
                                                      [1, 0]])
    np.testing.assert_array_equal(space.inverse_transform(Y), y.astype(np.float32))
    with pytest.warns(UserWarning, match="grid"):
        _, flat = as_responses(y.reshape(N_SAMPLES, 20))
    np.testing.assert_array_equal(flat.coords[:, 0], np.arange(20))


def test_one_dimensional_responses_are_one_voxel_and_come_back_1d():
    y = np.random.default_rng(0).normal(size=N_SAMPLES)
    Y, space = as_responses(y, coords=[[0.0, 0.0]], modality="eeg")
    assert Y.shape == (N_SAMPLES, 1)
    assert space.modality == "eeg"
    back = space.inverse_transform(Y)
    assert back.shape == (N_SAMPLES,)
    np.testing.assert_array_equal(back, y.astype(np.float32))
    # with a single voxel, 1D predictions are one value per sample
    np.testing.assert_array_equal(space.inverse_transform(Y[:, 0]), back)


def test_array_mask_selects_columns():
    y = np.random.default_rng(0).normal(size=(N_SAMPLES, 6))
    y[:, 1] = np.nan  # outside the mask: ignored, no error, no warning
    mask = np.array([True, False, True, True, False, True])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Y, space = as_responses(y, mask=mask, coords=np.arange(6.0))
    np.testing.assert_array_equal(Y, y[:, mask].astype(np.float32))
    np.testing.assert_array_equal(space.coords[:, 0], [0, 2, 3, 5])
    back = space.inverse_transform(Y)
    assert np.isnan(back[:, ~mask]).all()
    with pytest.raises(ValueError, match="boolean array of shape"):
        as_responses(y, mask=np.ones(5, bool), coords=np.arange(6.0))


def test_all_nan_and_constant_voxels_are_dropped_and_restored_as_nan():
    y = np.random.default_rng(0).normal(size=(N_SAMPLES, 10))
    y[:, 2] = np.nan
    y[:, 7] = 3.0
    with pytest.warns(UserWarning, match=r"Dropped 2 of 10 .*1 all-NaN, 1 constant"):
        Y, space = as_responses(y, coords=np.arange(10.0))
    assert Y.shape == (N_SAMPLES, 8)
    assert space.n_voxels == 8
    assert space.n_raw_voxels == 10
    np.testing.assert_array_equal(space.keep, np.isin(np.arange(10), [2, 7], invert=True))
    np.testing.assert_array_equal(space.coords[:, 0], [0, 1, 3, 4, 5, 6, 8, 9])
    back = space.inverse_transform(Y)
    assert np.isnan(back[:, [2, 7]]).all()
    kept = space.keep
    np.testing.assert_array_equal(back[:, kept], y[:, kept].astype(np.float32))
    # new data: same selection, whatever the dropped columns hold
    y_new = np.random.default_rng(1).normal(size=(3, 10))
    np.testing.assert_array_equal(space.transform(y_new), y_new[:, kept].astype(np.float32))


def test_memory_at_400k_voxels_one_float32_array():
    n_samples, n_voxels = 32, 400_000
    y = np.random.default_rng(0).random((n_samples, n_voxels))
    y[:, :1000] = 0.0  # constant voxels to drop: compacted in place, no second copy
    float32_size = n_samples * n_voxels * 4
    coords = np.zeros((n_voxels, 1))
    tracemalloc.start()
    try:
        with pytest.warns(UserWarning, match="Dropped 1000"):
            Y, space = as_responses(y, coords=coords)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert Y.shape == (n_samples, n_voxels - 1000)
    assert Y.dtype == np.float32
    assert peak < 1.3 * float32_size, f"peak {peak / 1e6:.1f} MB"
    np.testing.assert_array_equal(Y, y[:, 1000:].astype(np.float32))


def test_nan_or_inf_inside_a_voxel_is_an_error_naming_it():
    y = np.random.default_rng(0).normal(size=(N_SAMPLES, 10))
    y[4, 6] = np.nan
    with pytest.raises(ValueError, match=r"nan at sample 4, column 6.*impute"):
        as_responses(y, coords=np.arange(10.0))
    y[4, 6] = np.inf
    with pytest.raises(ValueError, match=r"NaN or inf: inf at sample 4, column 6"):
        as_responses(y, coords=np.arange(10.0))
    y[:, 6] = np.inf  # infinite everywhere is not "missing": still an error
    with pytest.raises(ValueError, match="inf at sample 0, column 6"):
        as_responses(y, coords=np.arange(10.0))


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([["a", "b"], ["c", "d"]]), "must be numeric.*dtype <U1"),
        (np.array([[1, None], [2, 3]], dtype=object), "must be numeric.*dtype object"),
        (np.ones((3, 2), dtype=complex), "must be numeric.*complex128"),
    ],
)
def test_non_numeric_responses_are_rejected(y, match):
    with pytest.raises(TypeError, match=match):
        as_responses(y, coords=np.arange(2.0))


def test_bad_array_shapes_and_coords():
    with pytest.raises(ValueError, match="got a scalar 3.0"):
        as_responses(np.float64(3.0))
    with pytest.raises(ValueError, match="no voxels"):
        as_responses(np.ones((4, 0)))
    with pytest.raises(ValueError, match=r"no samples"):
        as_responses(np.ones((0, 3)), coords=np.arange(3.0))
    with pytest.raises(ValueError, match=r"one row per column \(5\).*\(4, 2\)"):
        as_responses(np.ones((3, 5)), coords=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="coords must be finite; row 1"):
        as_responses(np.random.default_rng(0).normal(size=(3, 2)), coords=[0.0, np.nan])
    with pytest.raises(ValueError, match="modality must be one of"):
        as_responses(np.ones((3, 2)), coords=np.arange(2.0), modality="fnirs")
    with pytest.raises(TypeError, match="got a dict"):
        as_responses({"y": np.ones(3)})


def test_one_sample_or_constant_data_has_no_usable_voxel():
    with pytest.raises(ValueError, match=r"one sample: every voxel is constant"):
        as_responses(np.ones((1, 4)), coords=np.arange(4.0))
    with (
        pytest.raises(ValueError, match="No usable voxel: all 4"),
        pytest.warns(UserWarning, match="grid"),
    ):
        as_responses(np.ones((5, 4)))


def test_array_transform_and_inverse_validate_shapes():
    y = np.random.default_rng(0).normal(size=(N_SAMPLES, 5))
    Y, space = as_responses(y, coords=np.arange(5.0))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 5\).*got \(3, 6\)"):
        space.transform(np.ones((3, 6)))
    bad = y.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="nan at sample 2, column 3"):
        space.transform(bad)
    with pytest.raises(ValueError, match=r"n_voxels=5.*\(4, 4\)"):
        space.inverse_transform(np.ones((4, 4)))
    with pytest.raises(TypeError, match="numeric"):
        space.inverse_transform(np.array([["x"] * 5]))
    # one row given as 1D comes back 1D, as NiftiMasker gives it
    np.testing.assert_array_equal(space.inverse_transform(Y[0]), Y[0])


def test_check_n_samples():
    check_n_samples(4, np.ones((4, 2)))
    check_n_samples(4, 4)
    with pytest.raises(ValueError, match=r"Found 5 images but 4 samples \(rows\) of responses"):
        check_n_samples(5, np.ones((4, 2)))


# ----------------------------------------------------------------------------------------
# volumes


def test_4d_niimg_roundtrip_coords_in_world_mm(brain_4d, mni_mask):
    img, inside = brain_4d
    Y, space = as_responses(img, mask=mni_mask)
    assert isinstance(space, VolumeSpace)
    assert space.modality == "fmri"
    assert Y.shape == (N_SAMPLES, inside.sum())
    assert Y.dtype == np.float32
    np.testing.assert_array_equal(Y, img.get_fdata()[inside].T.astype(np.float32))
    ijk = np.argwhere(inside)
    expected = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    np.testing.assert_allclose(space.coords, expected)
    # an MNI coordinate of the 8 mm grid: voxel (i, j, k) sits at 8 * (i, j, k) + offset
    assert np.allclose(space.coords[0], 8 * ijk[0] + img.affine[:3, 3])
    back = space.inverse_transform(Y)
    assert isinstance(back, nib.Nifti1Image)
    assert back.shape == img.shape
    np.testing.assert_array_equal(back.affine, img.affine)
    np.testing.assert_array_equal(back.get_fdata(), img.get_fdata())
    assert isinstance(space.masker, NiftiMasker)


def test_list_of_3d_images_and_paths(brain_4d, mni_mask, tmp_path):
    img, _ = brain_4d
    Y, _ = as_responses(img, mask=mni_mask)
    volumes = [nib.Nifti1Image(img.get_fdata()[..., t].astype(np.float32), img.affine)
               for t in range(N_SAMPLES)]
    Y_list, space = as_responses(volumes, mask=mni_mask)
    np.testing.assert_array_equal(Y_list, Y)
    path = tmp_path / "betas.nii.gz"
    img.to_filename(path)
    mask_path = tmp_path / "mask.nii.gz"
    mni_mask.to_filename(mask_path)
    Y_path, _ = as_responses(str(path), mask=mask_path)
    np.testing.assert_array_equal(Y_path, Y)
    np.testing.assert_array_equal(space.transform(path), Y)


def test_mask_is_computed_when_none_is_given(brain_4d):
    img, inside = brain_4d
    Y, space = as_responses(img)
    # nilearn's background strategy finds the brain: the zero background is left out
    assert space.n_voxels == inside.sum()
    np.testing.assert_array_equal(space.mask_img.get_fdata().astype(bool), inside)
    # an unfitted NiftiMasker is fitted on the responses (without changing the user's)
    masker = NiftiMasker()
    Y_masker, _ = as_responses(img, mask=masker)
    np.testing.assert_array_equal(Y_masker, Y)
    assert not hasattr(masker, "mask_img_")


def test_mask_on_another_grid_is_resampled_with_a_warning(brain_4d):
    img, inside = brain_4d
    fine_mask = load_mni152_brain_mask(resolution=2)
    with pytest.warns(UserWarning, match="resampled to the responses' grid"):
        Y, space = as_responses(img, mask=fine_mask)
    np.testing.assert_array_equal(space.affine, img.affine)
    assert 0.5 * inside.sum() < space.n_voxels <= inside.sum()


def test_dropped_voxels_come_back_nan_and_outside_mask_zero(brain_4d, mni_mask):
    img, inside = brain_4d
    data = img.get_fdata().astype(np.float32)
    ijk_nan, ijk_const = (tuple(int(i) for i in np.argwhere(inside)[k]) for k in (10, 20))
    data[ijk_nan] = np.nan
    data[ijk_const] = 1.5
    with pytest.warns(UserWarning, match=r"Dropped 2 of .*voxel \(i, j, k\)"):
        Y, space = as_responses(nib.Nifti1Image(data, img.affine), mask=mni_mask)
    assert space.n_voxels == inside.sum() - 2
    back = space.inverse_transform(Y).get_fdata()
    assert np.isnan(back[ijk_nan]).all()
    assert np.isnan(back[ijk_const]).all()
    assert (back[~inside] == 0).all()
    data[ijk_nan] = 0.0
    data[ijk_nan + (3,)] = np.nan
    where = r"nan at sample 3, voxel \(i, j, k\) = " + re.escape(str(ijk_nan))
    with pytest.raises(ValueError, match=where):
        as_responses(nib.Nifti1Image(data, img.affine), mask=mni_mask)


def test_3d_image_where_4d_is_needed(brain_4d, mni_mask):
    img, _ = brain_4d
    single = nib.Nifti1Image(img.get_fdata()[..., 0], img.affine)
    with pytest.raises(ValueError, match=r"one 3D image of shape \(\d+, \d+, \d+\).*4D"):
        as_responses(single, mask=mni_mask)
    Y, space = as_responses(img, mask=mni_mask)
    # reading new data, a 3D image is one sample (a test volume, an atlas)
    np.testing.assert_array_equal(space.transform(single), Y[:1])


def test_volume_transform_rejects_another_grid(brain_4d, mni_mask):
    img, _ = brain_4d
    _, space = as_responses(img, mask=mni_mask)
    affine = img.affine.copy()
    affine[0, 3] += 8
    with pytest.raises(ValueError, match="not on the grid of the space"):
        space.transform(nib.Nifti1Image(img.get_fdata(), affine))
    with pytest.raises(ValueError, match=r"not on the grid.*shape \(4, 4, 4\)"):
        space.transform(nib.Nifti1Image(np.ones((4, 4, 4, 2)), img.affine))
    with pytest.raises(ValueError, match=r"\(n_samples, \d+\) in the space's raw voxel"):
        space.transform(np.ones((2, 7)))


def test_bad_mask_and_bad_image_inputs(brain_4d, tmp_path):
    img, _ = brain_4d
    with pytest.raises(ValueError, match="mask must be a 3D binary mask"):
        as_responses(img, mask=img)
    empty = nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine)
    with pytest.raises(ValueError, match="mask"):
        as_responses(img, mask=empty)
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(ValueError, match="nope.nii.gz"):
        as_responses(str(missing))
    with pytest.raises(TypeError, match="mne.read_epochs"):
        as_responses("sub-01-epo.fif")


# ----------------------------------------------------------------------------------------
# surfaces


def test_surface_roundtrip_hemispheres_kept_apart(sphere_mesh):
    img = surface_image(sphere_mesh)
    Y, space = as_responses(img)
    assert isinstance(space, SurfaceSpace)
    assert space.modality == "fmri"
    n_left = sphere_mesh.parts["left"].n_vertices
    assert Y.shape == (N_SAMPLES, sphere_mesh.n_vertices)
    np.testing.assert_array_equal(Y[:, :n_left], img.data.parts["left"].T)
    np.testing.assert_array_equal(Y[:, n_left:], img.data.parts["right"].T)
    # left vertices keep their positions; the right sphere is moved to the right of it
    np.testing.assert_array_equal(space.coords[:n_left], sphere_mesh.parts["left"].coordinates)
    shift = space.hemisphere_shifts["right"]
    assert shift > 0
    assert space.coords[n_left:, 0].min() > space.coords[:n_left, 0].max()
    np.testing.assert_allclose(space.coords[n_left:] - [shift, 0, 0],
                               sphere_mesh.parts["right"].coordinates)
    back = space.inverse_transform(Y)
    assert isinstance(back, SurfaceImage)
    assert back.mesh is sphere_mesh
    for part in ("left", "right"):
        np.testing.assert_array_equal(back.data.parts[part], img.data.parts[part])


def test_separate_hemispheres_are_not_moved():
    coordinates, faces = icosphere(1, radius=50.0)
    mesh = PolyMesh(left=InMemoryMesh(coordinates - [100, 0, 0], faces),
                    right=InMemoryMesh(coordinates + [100, 0, 0], faces))
    _, space = as_responses(surface_image(mesh))
    assert space.hemisphere_shifts == {"left": 0.0, "right": 0.0}


def test_list_of_single_sample_surface_images(sphere_mesh):
    img = surface_image(sphere_mesh)
    singles = [SurfaceImage(mesh=sphere_mesh,
                            data={p: img.data.parts[p][:, t] for p in ("left", "right")})
               for t in range(N_SAMPLES)]
    Y, space = as_responses(singles)
    np.testing.assert_array_equal(Y, as_responses(img)[0])
    np.testing.assert_array_equal(space.transform(singles[:2]), Y[:2])


def test_surface_mask_and_dropped_vertices(sphere_mesh):
    img = surface_image(sphere_mesh)
    n_left = sphere_mesh.parts["left"].n_vertices
    mask_data = {p: np.arange(m.n_vertices) % 2 == 0 for p, m in sphere_mesh.parts.items()}
    mask = SurfaceImage(mesh=sphere_mesh, data=mask_data)
    Y, space = as_responses(img, mask=mask)
    selected = np.concatenate([mask_data["left"], mask_data["right"]])
    assert space.n_voxels == selected.sum()
    back = space.inverse_transform(Y)
    assert np.isnan(back.data.parts["left"][~mask_data["left"]]).all()
    data = {p: v.copy() for p, v in img.data.parts.items()}
    data["right"][4] = 0.0
    with pytest.warns(UserWarning, match="vertex 4 of the right hemisphere"):
        _, space = as_responses(SurfaceImage(mesh=sphere_mesh, data=data))
    assert not space.keep[n_left + 4]


def test_surface_transform_rejects_another_mesh(sphere_mesh):
    _, space = as_responses(surface_image(sphere_mesh))
    coordinates, faces = icosphere(1)
    other = PolyMesh(left=InMemoryMesh(coordinates, faces),
                     right=InMemoryMesh(coordinates, faces))
    with pytest.raises(ValueError, match="not on the mesh of the space"):
        space.transform(surface_image(other))
    moved = PolyMesh(left=InMemoryMesh(sphere_mesh.parts["left"].coordinates + 1,
                                       sphere_mesh.parts["left"].faces),
                     right=sphere_mesh.parts["right"])
    with pytest.raises(ValueError, match="vertex positions differ"):
        space.transform(surface_image(moved))


# ----------------------------------------------------------------------------------------
# epochs


def test_epochs_roundtrip_same_info_times_events(montage):
    epochs = make_epochs(montage)
    Y, space = as_responses(epochs)
    assert isinstance(space, EpochsSpace)
    assert space.modality == "eeg"
    # the stimulus channel and the bad channel are not modelled
    assert space.ch_names == montage.ch_names[:16]
    assert Y.shape == (N_SAMPLES, 16 * 20)
    data = epochs.get_data(picks=space.ch_names)
    np.testing.assert_array_equal(Y, data.reshape(N_SAMPLES, -1).astype(np.float32))
    back = space.inverse_transform(Y)
    assert isinstance(back, mne.EpochsArray)
    assert back.ch_names == space.ch_names
    assert back.info["sfreq"] == epochs.info["sfreq"]
    np.testing.assert_array_equal(back.times, epochs.times)
    assert back.tmin == epochs.tmin
    np.testing.assert_array_equal(back.events, epochs.events)
    assert back.event_id == epochs.event_id
    for ch_back, ch in zip(back.info["chs"], mne.pick_info(epochs.info,
                                                            list(range(16)))["chs"]):
        np.testing.assert_array_equal(ch_back["loc"], ch["loc"])
    np.testing.assert_array_equal(back.get_data(), data.astype(np.float32).astype(np.float64))
    # predictions for other trials: MNE's default events, or the ones given
    assert len(space.inverse_transform(Y[:3]).events) == 3
    given = space.inverse_transform(Y[:2], events=epochs.events[:2], event_id=epochs.event_id)
    np.testing.assert_array_equal(given.events, epochs.events[:2])


def test_epochs_round_trip_keeps_events_and_metadata_of_the_predicted_epochs(montage):
    import pandas as pd

    epochs = make_epochs(montage)
    epochs.metadata = pd.DataFrame({"category": np.where(epochs.events[:, 2] == 1, "face",
                                                         "house"),
                                    "image": np.arange(N_SAMPLES)})
    Y, space = as_responses(epochs[:8])
    # the fitted epochs themselves: their events and metadata come back by default
    back = space.inverse_transform(Y)
    assert back.metadata["image"].tolist() == list(range(8))
    # other (test) epochs whose images were predicted: like= keeps theirs
    test = epochs[8:]
    pred = space.inverse_transform(space.transform(test), like=test)
    np.testing.assert_array_equal(pred.events, test.events)
    assert pred.event_id == test.event_id
    assert pred.metadata["image"].tolist() == test.metadata["image"].tolist()
    faces = pred["category == 'face'"]
    assert len(faces) == int((test.metadata["category"] == "face").sum()) > 0
    assert pred["house"].metadata["category"].eq("house").all()
    with pytest.raises(ValueError, match="like= has 4 epochs for 3 rows"):
        space.inverse_transform(space.transform(test)[:3], like=test)


def test_one_sample_comes_back_without_a_sample_axis(montage, sphere_mesh):
    # as NiftiMasker.inverse_transform: 1D in, 3D Niimg (volume) or 1D (array) out
    from nilearn.maskers import NiftiMasker

    rng = np.random.default_rng(0)
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[1:3, 1:4, 2:5] = 1
    img = nib.Nifti1Image(rng.normal(size=(4, 5, 6, N_SAMPLES)).astype(np.float32),
                          np.eye(4))
    mask_img = nib.Nifti1Image(mask, np.eye(4))
    Y, space = as_responses(img, mask=mask_img)
    one = space.inverse_transform(Y[0])
    assert one.shape == NiftiMasker(mask_img).fit().inverse_transform(Y[0]).shape == (4, 5, 6)
    assert space.inverse_transform(Y[:1]).shape == (4, 5, 6, 1)
    Ya, array_space = as_responses(rng.normal(size=(N_SAMPLES, 3, 4)),
                                   coords=rng.normal(size=(12, 2)))
    assert array_space.inverse_transform(Ya[0]).shape == (3, 4)
    Ye, epochs_space = as_responses(make_epochs(montage))
    assert len(epochs_space.inverse_transform(Ye[0])) == 1  # an Epochs holds epochs
    Ys, surface_space = as_responses(surface_image(sphere_mesh))
    assert surface_space.inverse_transform(Ys[0]).data.parts["left"].ndim == 1


def test_epochs_coords_are_sensor_positions_and_time(montage):
    epochs = make_epochs(montage, n_times=5)
    _, space = as_responses(epochs)
    assert space.coords.shape == (16 * 5, 4)
    positions = np.array([ch["loc"][:3] for ch in epochs.info["chs"][:16]])
    np.testing.assert_allclose(space.coords[:, :3], np.repeat(positions, 5, axis=0))
    np.testing.assert_allclose(space.coords[:, 3], np.tile(epochs.times, 16))
    # distinct sensors, real head-sized positions (metres)
    assert len(np.unique(space.coords[:, :3], axis=0)) == 16
    assert 0.05 < np.abs(space.coords[:, :3]).max() < 0.2


def test_epochs_from_raw_are_read_lazily(montage):
    names = montage.ch_names[:8]
    info = mne.create_info(names, 100.0, "eeg")
    info.set_montage(montage)
    raw = mne.io.RawArray(np.random.default_rng(0).normal(size=(8, 2000)) * 1e-6, info,
                          verbose=False)
    events = np.column_stack([np.arange(1, 11) * 150, np.zeros(10, int), np.ones(10, int)])
    epochs = mne.Epochs(raw, events, tmin=-0.1, tmax=0.3, baseline=None, preload=False,
                        verbose=False)
    Y, space = as_responses(epochs)
    assert Y.shape == (10, 8 * len(epochs.times))
    np.testing.assert_array_equal(space.inverse_transform(Y).events, epochs.events)


def test_channels_without_positions_fall_back_to_a_grid():
    info = mne.create_info(["MEG1", "MEG2", "MEG3"], 100.0, "mag")
    epochs = mne.EpochsArray(np.random.default_rng(0).normal(size=(6, 3, 4)) * 1e-13, info,
                             verbose=False)
    with pytest.warns(UserWarning, match=r"3 of 3 channels have no position.*set_montage"):
        Y, space = as_responses(epochs)
    assert space.modality == "meg"
    np.testing.assert_array_equal(space.coords[::4, :3], [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    # SI units are kept: MEG values in tesla survive float32 exactly enough to round trip
    np.testing.assert_array_equal(space.inverse_transform(Y).get_data(),
                                  epochs.get_data().astype(np.float32).astype(np.float64))


def test_epochs_with_no_data(montage):
    epochs = make_epochs(montage)
    epochs.drop(list(range(len(epochs))), verbose=False)
    with pytest.raises(ValueError, match="no epochs.*drop_log"):
        as_responses(epochs)
    stim_only = mne.EpochsArray(np.zeros((3, 1, 5)), mne.create_info(["STI"], 100.0, "stim"),
                                verbose=False)
    with pytest.raises(ValueError, match="no good data channel"):
        as_responses(stim_only)


def test_epochs_transform_checks_channels_and_times(montage):
    epochs = make_epochs(montage)
    Y, space = as_responses(epochs)
    test_epochs = make_epochs(montage, n_epochs=4, seed=1)
    Y_test = space.transform(test_epochs)
    np.testing.assert_array_equal(
        Y_test, test_epochs.get_data(picks=space.ch_names).reshape(4, -1).astype(np.float32))
    renamed = test_epochs.copy().rename_channels({montage.ch_names[0]: "X1"})
    with pytest.raises(ValueError, match=rf"lack 1 channels.*{montage.ch_names[0]}"):
        space.transform(renamed)
    with pytest.raises(ValueError, match="Crop and resample them the same way"):
        space.transform(test_epochs.copy().crop(0.0, None))
    with pytest.raises(TypeError, match="Expected mne.Epochs"):
        space.transform(surface_image(PolyMesh(left=InMemoryMesh(*icosphere(0)))))


def test_epochs_rejects_mask_and_other_mne_objects(montage):
    epochs = make_epochs(montage)
    with pytest.raises(ValueError, match="mask is not used for Epochs"):
        as_responses(epochs, mask=np.ones(3, bool))
    with pytest.raises(TypeError, match="must be Epochs.*Evoked"):
        as_responses(epochs.average())


# ----------------------------------------------------------------------------------------
# every space: pickle and plain-data serialisation


@pytest.fixture(params=["array", "volume", "surface", "epochs"])
def any_space(request, brain_4d, mni_mask, sphere_mesh, montage):
    if request.param == "array":
        y = np.random.default_rng(0).normal(size=(N_SAMPLES, 3, 4))
        y[:, 0, 0] = np.nan
        with pytest.warns(UserWarning, match="Dropped 1 of 12"):
            Y, space = as_responses(y, coords=np.arange(24.0).reshape(12, 2))
        return y, Y, space
    if request.param == "volume":
        y = brain_4d[0]
        return (y, *as_responses(y, mask=mni_mask))
    if request.param == "surface":
        y = surface_image(sphere_mesh)
        return (y, *as_responses(y))
    y = make_epochs(montage)
    return (y, *as_responses(y))


def _plain(value):
    return value if not isinstance(value, np.ndarray) else None


def test_spaces_pickle_and_serialise_to_json_and_arrays(any_space):
    y, Y, space = any_space
    for restored in (pickle.loads(pickle.dumps(space)), space_from_dict(space.to_dict())):
        assert type(restored) is type(space)
        assert isinstance(restored, ResponseSpace)
        assert restored.modality == space.modality
        np.testing.assert_array_equal(restored.coords, space.coords)
        np.testing.assert_array_equal(restored.keep, space.keep)
        np.testing.assert_array_equal(restored.transform(y), Y)
        out = restored.inverse_transform(Y)
        assert type(out) is type(space.inverse_transform(Y))
    state = space.to_dict()
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    assert all(a.dtype != object for a in arrays.values())
    json.dumps({k: v for k, v in state.items() if k not in arrays})
    # as a save format would store them: arrays as plain numpy, the rest through JSON
    reloaded = json.loads(json.dumps({k: _plain(v) for k, v in state.items() if k not in arrays}))
    reloaded.update({k: np.array(v) for k, v in arrays.items()})
    np.testing.assert_array_equal(space_from_dict(reloaded).transform(y), Y)


def test_space_from_dict_rejects_unknown_or_newer_states():
    _, space = as_responses(np.random.default_rng(0).normal(size=(4, 2)), coords=[0.0, 1.0])
    with pytest.raises(ValueError, match="Unknown response space kind 'tensor'"):
        space_from_dict({**space.to_dict(), "kind": "tensor"})
    with pytest.raises(ValueError, match="newer afo-encoding"):
        space_from_dict({**space.to_dict(), "format_version": 99})
