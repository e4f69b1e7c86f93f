"""
All for One: ROI models that teach each other
=============================================

The paper's training recipe (section 3.2, Table 3) divides the brain into regions (ROIs),
fits one model per ROI (stage 1), lets every ROI model learn the other ROIs' predictions
as helpers, their "dark knowledge" (stage 2), and ends with one all-ROI model trained on
the ground truth plus that knowledge (stage 3). :class:`~afo_encoding.AllForOneEncoder`
runs the three stages in one ``fit`` and predicts like a
:class:`~afo_encoding.TopyEncoder`.

This example runs the recipe on a simulated visual cortex whose early, mid and late areas
read different image features (:func:`~afo_encoding.simulation.make_retinotopic_dataset`),
compares it with one naive all-ROI model (the paper's NaiveMix) and with random ROIs of
the same sizes (randROI), and derives ROIs from the fitted model itself (veROI). It takes
a few minutes on a laptop CPU.
"""

# %%
# A simulated brain and the model of every stage
# ----------------------------------------------
# 600 images of 32 pixels, 300 voxels. Every stage fits a TopyEncoder with these settings;
# the Gabor-pyramid backbone runs once per image for the whole recipe.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from afo_encoding import AllForOneEncoder, TopyEncoder
from afo_encoding.encoders.afo import random_rois_like
from afo_encoding.metrics import pearson_r
from afo_encoding.parcellation import veroi
from afo_encoding.plotting import plot_veroi_dendrogram
from afo_encoding.simulation import make_retinotopic_dataset

data = make_retinotopic_dataset(n_images=600, image_size=32, n_voxels=300, snr=3.0,
                                random_state=0)
train, test = slice(0, 400), slice(400, None)
areas = np.asarray(data.rois)
estimator = TopyEncoder(backbone_params={"image_size": 32, "wavelength": 2.0}, d_model=16,
                        batch_size=64, sigma=0.1, max_epochs=30, n_iter_no_change=10,
                        top_k=2, random_state=0)

# %%
# The recipe on the planted areas
# -------------------------------
# ``freeze_readout=True`` fits one all-ROI model first and freezes its RetinaMapper and
# LayerSelector in every stage model (as the paper does); that first model is NaiveMix.
# Teachers predict the training images out of fold (``n_folds``), so helpers do not learn
# the training noise. ``stage_scores_`` holds the validation r of every stage per ROI,
# each voxel scored by its own ROI's model; ``n_jobs=2`` runs the stage fits in parallel.
afo = AllForOneEncoder(estimator, rois=areas, freeze_readout=True, n_folds=2,
                       keep_stage_estimators=True, n_jobs=2, random_state=0, verbose=True)
afo.fit(data.images[train], data.Y[train], coords=data.coords)
print(afo.stage_scores_.round(3))

# %%
# The final model against NaiveMix, on unseen images
# --------------------------------------------------
# Both are scored against the simulator's noiseless responses of the 200 test images. The
# final model should be at least as good as NaiveMix: it learns the same ground truth,
# plus the denoised predictions of the stage-2 models.
naive = afo.stage_estimators_["naive"][0][0]
truth = data.signal[test]
r_final = pearson_r(truth, afo.predict(data.images[test]))
r_naive = pearson_r(truth, naive.predict(data.images[test]))
names = ["early", "mid", "late", "all"]
means = {
    "NaiveMix": [r_naive[areas == a].mean() for a in names[:3]] + [r_naive.mean()],
    "All-for-One": [r_final[areas == a].mean() for a in names[:3]] + [r_final.mean()],
}
fig, ax = plt.subplots(figsize=(6, 3.5))
for i, (label, values) in enumerate(means.items()):
    ax.bar(np.arange(4) + 0.4 * i, values, width=0.4, label=label)
ax.set_xticks(np.arange(4) + 0.2, names)
ax.set_ylabel("test r against the noiseless truth")
ax.legend()
plt.show()

# %%
# randROI: random ROIs of the same sizes
# --------------------------------------
# The paper's ablation: with ROIs that mix every kind of voxel, stage 1 is worse (an ROI
# model must serve voxels that read different features) and stage 2 should gain less.
# On this simulator the first part holds; the second does not: a stage-2 model gains
# about as much, or as little, with planted ROIs as with random ones, because the
# backbone already gives every ROI the features its voxels read, leaving little for the
# other ROIs to teach (``benchmarks/bench_afo.py --transfer`` measures it: even a
# perfect teacher gains an ROI a few hundredths of r here). Measure it on your own data
# before paying for the recipe's dozen fits.
random_rois = AllForOneEncoder(estimator, rois=random_rois_like(areas, random_state=0),
                               freeze_readout=True, n_folds=2, n_jobs=2, random_state=0)
random_rois.fit(data.images[train], data.Y[train], coords=data.coords)
for label, run in (("planted areas", afo), ("random ROIs", random_rois)):
    s = run.stage_scores_["all"]
    print(f"{label}: stage 1 {s['stage1']:.3f}, stage 2 {s['stage2']:.3f}, "
          f"stage 3 {s['stage3']:.3f}")

# %%
# veROI: ROIs from what the voxel heads learned
# ---------------------------------------------
# k-means of the per-voxel head weights of the fitted model, then a Ward hierarchy of the
# centroids cut into 3 veROIs (``rois="veroi"`` does this inside the recipe). Voxels that
# read the same features have similar heads, so veROIs group the voxels of an area more
# often than chance: the adjusted Rand index is 0 for random labels (the tests check that
# veROI stands far above them) and 1 for a perfect match. Heads also differ within an area
# (each voxel's preferred orientation, its own texture weights), so the match is partial.
labels, linkage = veroi(afo, n_rois=3, random_state=0)
alive = data.ncsnr > 0.2 * 3.0  # 10 % of the simulated voxels are nearly dead
print(f"adjusted Rand index, veROIs vs planted areas: "
      f"{adjusted_rand_score(areas[alive], labels[alive]):.2f}")
print(pd.crosstab(pd.Series(areas[alive], name="planted area"),
                  pd.Series(labels[alive], name="veROI")))
plot_veroi_dendrogram(linkage, n_rois=3)
plt.show()
