"""
A simulated visual cortex with known ground truth
=================================================

Every scientific claim of afo-encoding (the RetinaMapper finds retinotopy, the
LayerSelector finds the hierarchy, veROI finds the areas, retrieval works) is tested on a
brain whose truth was planted. This example shows that brain:
:func:`afo_encoding.simulation.make_retinotopic_dataset` draws procedural images, places
voxels in the occipital cortex of the MNI152 template, gives each one a population
receptive field (pRF) from a retinotopic map and a feature type from its visual area, and
adds trial noise with a known noise ceiling. The same cortex is also seen through EEG.
"""

# %%
# Simulate an fMRI experiment
# ---------------------------
# 1000 images of 64 pixels, 2000 voxels, 3 trials per image. Everything planted comes back
# in the Bunch: the pRF centres (in the convention of ``torch.nn.functional.grid_sample``:
# x to the right, y downward, both in [-1, 1]), their sizes, the area of each voxel and
# the noise ceiling implied by the noise.
import matplotlib.pyplot as plt
import numpy as np
from nilearn import plotting

from afo_encoding.metrics import ncsnr, noise_ceiling
from afo_encoding.simulation import make_retinotopic_dataset

data = make_retinotopic_dataset(n_images=1000, n_voxels=2000, random_state=0)
print(data.description)
print(data.Y.shape, data.repeats.shape, data.responses.shape)

# %%
# The images
# ----------
# One object of six categories per image, with a random position, size, orientation,
# colour and fill texture, on 1/f noise like natural scenes.
fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
for ax, image, category in zip(axes.flat, data.images, data.object_category):
    ax.imshow(image)
    ax.set_title(data.category_names[category], fontsize=9)
    ax.axis("off")
fig.tight_layout()

# %%
# Retinotopy on the brain
# -----------------------
# The left hemisphere sees the right visual field; eccentricity grows anteriorly within
# each area and polar angle follows height (dorsal voxels see the lower field). The
# ``mask`` turns any per-voxel array back into a volume.
from nilearn.maskers import NiftiMasker

masker = NiftiMasker(mask_img=data.mask).fit()
eccentricity = np.hypot(*data.prf_center.T)
area_index = np.array([data.area_names.index(area) + 1.0 for area in data.rois])
for values, title, cmap in (
    (eccentricity, "pRF eccentricity", "viridis"),
    (data.prf_center[:, 0], "pRF x (right > 0)", "RdBu_r"),
    (area_index, "area: 1 early, 2 mid, 3 late", "viridis"),
):
    plotting.plot_stat_map(
        masker.inverse_transform(values),
        display_mode="z",
        cut_coords=[-5, 5, 15],
        title=title,
        cmap=cmap,
        colorbar=True,
    )

# %%
# The visual field, area by area
# ------------------------------
# Each area holds a full map of the hemifield; pRFs grow with eccentricity and along the
# hierarchy (circles show one pRF standard deviation for a subset of voxels).
fig, axes = plt.subplots(1, 3, figsize=(12, 4), sharex=True, sharey=True)
rng = np.random.default_rng(0)
for ax, area in zip(axes, data.area_names):
    sel = np.flatnonzero(data.rois == area)
    ax.scatter(*data.prf_center[sel].T, s=4, c=data.coords[sel, 2], cmap="coolwarm")
    for v in rng.choice(sel, size=25, replace=False):
        ax.add_patch(plt.Circle(data.prf_center[v], data.prf_size[v], fill=False, alpha=0.3))
    ax.set(title=f"{area} ({data.feature_type[sel[0]]})", xlim=(-1, 1), ylim=(1, -1))
    ax.set_aspect("equal")
axes[0].set_ylabel("y (down), colour: voxel height z")

# %%
# Noise ceilings: planted and estimated
# -------------------------------------
# Trials are ``ncsnr * signal + noise``; the NSD noise ceiling of the 3-trial average
# follows from ncsnr. :func:`afo_encoding.metrics.ncsnr` estimates it back from the
# single trials.
estimated = noise_ceiling(ncsnr(data.repeats), n_trials=3)
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter(data.noise_ceiling_percent, estimated, s=3, alpha=0.5)
ax.plot([0, 100], [0, 100], "k--", lw=1)
ax.set(xlabel="planted noise ceiling (%)", ylabel="estimated from repeats (%)")

# %%
# The same cortex through EEG
# ---------------------------
# Each voxel is a dipole; the three areas have their own time courses (peaks at 100, 150
# and 200 ms). The responses come as :class:`mne.EpochsArray` with the standard 10-20
# montage, so MNE's own plots work.
eeg = make_retinotopic_dataset(n_images=200, n_voxels=2000, modality="eeg", random_state=0)
evoked = eeg.responses.average()
evoked.plot_joint(times=[0.1, 0.15, 0.2], title="Simulated EEG, mean over images")

fig, ax = plt.subplots(figsize=(5, 3))
for area, course in zip(eeg.area_names, eeg.time_courses):
    ax.plot(eeg.times * 1000, course, label=area)
ax.set(xlabel="time (ms)", ylabel="source activity", title="Area time courses")
ax.legend()
plt.show()
