"""
BOLD5000: fetch two sessions and fit an encoder on scene-selective cortex
=========================================================================

BOLD5000 (Chang et al. 2019) recorded 3T fMRI of four people who saw about 5,000 images
of COCO, ImageNet and SUN. :func:`datasets_fetchers.fetch_bold5000` clones the OpenNeuro
data set (with the ROI masks of the first release) and adds the GLMsingle betas of release
2.0 from Figshare, for the requested sessions only, and the stimuli.

We fit a :class:`~afo_encoding.LinearProbeEncoder` on the betas of two sessions of CSI1
and compare the prediction accuracy of the early visual cortex and the scene-selective
areas on held-out images.

This example downloads about 1.5 GB (two sessions and the stimuli): the documentation runs
it only where the sources can be reached.
"""

# %%
# Fetch CSI1, sessions 1 and 2
# ----------------------------
import matplotlib.pyplot as plt
import numpy as np

from afo_encoding import LinearProbeEncoder
from afo_encoding.metrics import pearson_r
from datasets_fetchers import fetch_bold5000, load_encoder_inputs

bold = fetch_bold5000(subjects=[1], sessions=[1, 2])
print(bold.license)
print(f"{bold.responses[0].shape[0]} trials x {bold.responses[0].shape[1]} voxels")

# %%
# Fit on four fifths of the images, test on the rest
# --------------------------------------------------
X, y, params = load_encoder_inputs(bold, subject=1)
test = np.arange(len(X)) % 5 == 0
probe = LinearProbeEncoder(n_components=200, cv=3)
probe.fit([x for x, t in zip(X, test) if not t], y[~test], **params)
r = pearson_r(y[test], probe.predict([x for x, t in zip(X, test) if t]))

# %%
# Accuracy per ROI
# ----------------
roi = bold.rois[0]["roi"].str.split("+").str[0].str[2:].to_numpy()
names = ["EarlyVis", "LOC", "OPA", "PPA", "RSC"]
plt.boxplot([r[roi == n] for n in names], tick_labels=names)
plt.ylabel("Pearson r on held-out trials")
plt.title("BOLD5000 CSI1, sessions 1-2")
plt.show()
