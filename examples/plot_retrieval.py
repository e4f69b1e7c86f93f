"""
Decoding by retrieval: which image was seen?
============================================

A fitted encoding model can be read backwards (the paper's section 4.5): predict the
response pattern every candidate image would evoke, correlate each measured pattern with
every predicted one over voxels, and rank the candidates. The image that was actually
shown should come first. Conditioning on one region, by correlating over its voxels only,
asks what that region alone tells about the image: early visual cortex keeps where the
edges are, a late area keeps what the object is (the paper's Figures 7-9).

This example fits a :class:`~afo_encoding.TopyEncoder` on a simulated visual cortex whose
truth is known (:func:`~afo_encoding.simulation.make_retinotopic_dataset`), then ranks
100 held-out images with :func:`~afo_encoding.decoding.rank_candidates`.
"""

# %%
# A simulated fMRI experiment and a fitted encoder
# ------------------------------------------------
# 600 images of 64 pixels seen by 300 occipital voxels (early, mid and late areas). The
# encoder is fitted on the first 500 images with the built-in Gabor-pyramid backbone and
# settings sized for a laptop CPU (a few minutes); a GPU fits the paper's settings.
import matplotlib.pyplot as plt
import numpy as np
from nilearn.image import index_img

from afo_encoding import TopyEncoder
from afo_encoding.decoding import (
    identification_accuracy,
    identification_protocol,
    rank_candidates,
    top_candidates,
)
from afo_encoding.metrics import pearson_r
from afo_encoding.plotting import (
    plot_identification,
    plot_retina_map,
    plot_retrieval_grid,
    plot_score_distributions,
)
from afo_encoding.simulation import make_retinotopic_dataset

data = make_retinotopic_dataset(n_images=600, n_voxels=300, random_state=0)
train, test = np.arange(500), np.arange(500, 600)
encoder = TopyEncoder(d_model=16, batch_size=16, max_epochs=300, n_iter_no_change=40,
                      mask=data.mask, random_state=0)
encoder.fit(data.images[train], index_img(data.responses, train))

# %%
# What the model learned, and how well it predicts
# ------------------------------------------------
# Each dot is a voxel at the place of the image it reads (RetinaMapper), coloured by the
# backbone scale it reads most (LayerSelector). The violins are the test Pearson r of the
# voxels of each area, under the noise ceiling planted by the simulator.
plot_retina_map(encoder, image=data.images[test[0]])

measured = encoder.space_.transform(index_img(data.responses, test))
predicted = encoder.predict(data.images[test])
r = pearson_r(measured, predicted)
plot_score_distributions(r, data.rois, noise_ceiling=data.noise_ceiling,
                         title="held-out images")

# %%
# Rank the 100 held-out images for every measured response
# ---------------------------------------------------------
# The responses go in as the 4D Niimg they come in; the encoder's ``space_`` reads them.
# The candidates are predicted once; all 100 x 100 correlations are one matrix product.
# ``scores[i, j]`` is the Pearson r between measured pattern ``i`` and the prediction for
# image ``j``, so the true image of query ``i`` is column ``i``.
scores = rank_candidates(encoder, data.images[test], index_img(data.responses, test))
truth = np.arange(len(test))
accuracy = identification_accuracy(scores, truth, k=(1, 5))
print(f"top-1 {accuracy.top1:.0%} (chance {accuracy.chance_top1:.0%}), "
      f"top-5 {accuracy.top5:.0%} (chance {accuracy.chance_top5:.0%})")

# %%
# Accuracies depend on the number of candidates (chance is k / N), so compare them at a
# fixed N: draw 20 candidates at random, many times, and report the mean and the spread.
protocol = identification_protocol(scores, truth, n_candidates=20, n_repeats=200,
                                   random_state=0)
print(f"20-way top-1: {protocol.top1:.0%} +/- {protocol.top1_std:.0%} "
      f"(chance {protocol.chance_top1:.0%})")

# %%
# Conditioning on one area
# ------------------------
# The same predictions, correlated over the voxels of one area at a time (one prediction
# pass for all areas). Identification per area, next to each area's encoding score, is the
# paper's Figure 8.
per_area = rank_candidates(encoder, data.images[test], index_img(data.responses, test),
                           rois=data.rois, roi=["early", "mid", "late"])
results = {area: identification_accuracy(s, truth) for area, s in per_area.items()}
plot_identification(results, {area: r[data.rois == area] for area in per_area})

# %%
# The true image (left) next to the four best candidates, per area (Figure 7). A green
# frame marks the true image when it is retrieved.
plot_retrieval_grid(data.images[test], per_area, truth, queries=[0, 1, 2], k=4)

# %%
# What each area retrieves
# ------------------------
# Leave the shown image out and look at what the best other candidates share with it. Two
# images have the same low-level layout when their maps of local edge energy (gradient
# magnitude of the luminance on an 8 x 8 grid) correlate: that is what early voxels, with
# small receptive fields reading local energy where they look, respond to. Late voxels
# pool over most of the image and read the object category.
#
# The same analysis on the simulator's noiseless responses (the predictions of a perfect
# encoder, computed with :func:`~afo_encoding.decoding.score_candidates`) shows where a
# fully fitted model would go: the late area is the hardest to fit (large receptive
# fields, lower signal-to-noise ratio), so a CPU-sized fit captures its category code
# only partly.
from afo_encoding.decoding import score_candidates


def edge_energy_maps(images, grid=8):
    lum = images.astype(float).mean(axis=-1)
    gy, gx = np.gradient(lum, axis=(1, 2))
    energy = np.hypot(gx, gy)
    n, h, w = energy.shape
    maps = energy.reshape(n, grid, h // grid, grid, w // grid).mean(axis=(2, 4))
    maps = maps.reshape(n, -1) - maps.reshape(n, -1).mean(axis=1, keepdims=True)
    return maps / np.linalg.norm(maps, axis=1, keepdims=True)


maps = edge_energy_maps(data.images[test])
layout = maps @ maps.T
category = data.object_category[test]
planted = {area: score_candidates(measured, data.signal[test], voxels=data.rois == area)
           for area in per_area}
fig, axes = plt.subplots(2, 2, figsize=(8, 5.5), sharey="col", layout="constrained")
for row, (name, area_scores) in enumerate((("fitted TopyEncoder", per_area),
                                           ("perfect encoder", planted))):
    for area, s in area_scores.items():
        others = s.astype(float)
        np.fill_diagonal(others, -np.inf)
        best = top_candidates(others, k=5)
        axes[row, 0].bar(area, np.take_along_axis(layout, best, axis=1).mean())
        axes[row, 1].bar(area, (category[best] == category[:, None]).mean())
    axes[row, 0].axhline(layout[~np.eye(len(test), dtype=bool)].mean(), color="k", ls=":",
                         label="random pairs")
    axes[row, 1].axhline(np.mean(category[:, None] == category[None]), color="k", ls=":",
                         label="chance")
    axes[row, 0].set_ylabel(name)
    axes[row, 0].legend(fontsize="small")
    axes[row, 1].legend(fontsize="small")
axes[0, 0].set_title("layout similarity of the top 5")
axes[0, 1].set_title("same object category in the top 5")
plt.show()
