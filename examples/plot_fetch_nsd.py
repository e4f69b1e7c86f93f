"""
Natural Scenes Dataset: fetch one session and fit two encoders
==============================================================

The Natural Scenes Dataset (NSD; Allen et al. 2022) is the data set the paper trains on:
7T fMRI of eight subjects who each saw about 10,000 COCO images three times.
:func:`datasets_fetchers.fetch_nsd` downloads, from NSD's public bucket and through
DataLad, only what is asked for: here the single-trial betas of subject 1's first session
(750 trials, about 1 GB), the early visual ROIs, the noise-ceiling SNR and the 750 images
(read out of the 37 GB stimulus file by byte ranges). NSD's terms of use must be accepted
first (``accept_terms=True``, after reading them).

We keep the voxels of V1 to hV4 (``prf-visualrois``), fit the paper's
:class:`~afo_encoding.TopyEncoder` and the linear-probe baseline on the trials of the
images that are not among NSD's shared 1,000 (the usual test set), and score both on the
trials of the shared images, per ROI, under the noise ceiling.

This example downloads about 1.5 GB: the documentation runs it only where the network is
reachable (about ten minutes on a laptop CPU).
"""

# %%
# Fetch subject 1, session 1
# --------------------------
import matplotlib.pyplot as plt
import numpy as np

from afo_encoding import LinearProbeEncoder, TopyEncoder
from afo_encoding.metrics import pearson_r
from afo_encoding.plotting import plot_retina_map, plot_score_distributions
from datasets_fetchers import fetch_nsd, load_encoder_inputs

nsd = fetch_nsd(subjects=[1], sessions=[1], rois="prf-visualrois", mask="rois",
                accept_terms=True)
print(nsd.license)
print(f"{nsd.responses[0].shape[0]} trials x {nsd.responses[0].shape[1]} voxels")
print(nsd.rois[0]["prf-visualrois"].value_counts())

# %%
# Fit on the subject's own images, test on the shared ones
# --------------------------------------------------------
# ``load_encoder_inputs`` gives the image of every trial, the betas (z-scored per voxel in
# the session), and the voxels' positions in mm, which the RetinaMapper reads.
X_train, y_train, params = load_encoder_inputs(nsd, subject=1, split="train")
X_test, y_test, _ = load_encoder_inputs(nsd, subject=1, split="test")
print(f"{len(X_train)} training trials, {len(X_test)} test trials")

topy = TopyEncoder(d_model=32, max_epochs=40, n_iter_no_change=10, random_state=0)
topy.fit(X_train, y_train, **params)
probe = LinearProbeEncoder(n_components=min(300, len(X_train) - 1), cv=3)
probe.fit(X_train, y_train, **params)

# %%
# Scores per ROI
# --------------
# Single trials are noisy: the ceiling on Pearson r for one trial is
# ``sqrt(NC / 100)`` with NSD's noise ceiling ``NC`` for one trial. V1v and V1d (ventral
# and dorsal) are pooled into V1, and so on.
area = nsd.rois[0]["prf-visualrois"].str.replace(r"[vd]$", "", regex=True).to_numpy()
r_topy = pearson_r(y_test, topy.predict(X_test))
r_probe = pearson_r(y_test, probe.predict(X_test))
scores = {
    name: {"TopyEncoder": r_topy[area == name], "LinearProbe": r_probe[area == name]}
    for name in ("V1", "V2", "V3", "hV4")
}
ceiling = np.sqrt(nsd.noise_ceiling[0] / 100)
plot_score_distributions(scores, noise_ceiling={a: ceiling[area == a] for a in scores},
                         title="NSD subject 1, shared images, single trials")

# %%
# Where each voxel looks
# ----------------------
# Each dot is a voxel at the point of the image its RetinaMapper reads.
plot_retina_map(topy, image=plt.imread(X_test[0]))
plt.show()
