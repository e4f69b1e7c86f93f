"""
THINGS-fMRI: fetch one subject and score an encoder per ROI
===========================================================

THINGS-fMRI (Hebart et al. 2023) recorded 3T fMRI of three people who saw 8,740 THINGS
images once and 100 test images in each of 12 sessions.
:func:`datasets_fetchers.fetch_things_fmri` clones the OpenNeuro data set and reads the
authors' single-trial responses out of their 43 GB zip on Figshare+, for the requested
subject only, keeping the voxels of visual cortex with their ROI labels and noise ceilings.
The THINGS terms of use must be accepted (``accept_terms=True``, after reading
https://osf.io/jum2f/files/52wrx).

We fit a :class:`~afo_encoding.LinearProbeEncoder` on the training trials of four
sessions and score it per early visual area on the test images, averaged over their
repeats.

This example downloads about 26 GB (one subject's tables and the 12 GB THINGS image
archive): the documentation never runs it.
"""

# %%
# Fetch subject 1, sessions 1-4
# -----------------------------
import numpy as np

from afo_encoding import LinearProbeEncoder
from afo_encoding.metrics import pearson_r
from afo_encoding.plotting import plot_score_distributions
from datasets_fetchers import fetch_things_fmri, load_encoder_inputs

fmri = fetch_things_fmri(subjects=[1], sessions=[1, 2, 3, 4], rois="prf",
                         average_repeats=True, accept_terms=True)
print(fmri.license)
print(fmri.rois[0]["prf"].value_counts())

# %%
# Fit and score per area
# ----------------------
X_train, y_train, params = load_encoder_inputs(fmri, subject=1, split="train")
X_test, y_test, _ = load_encoder_inputs(fmri, subject=1, split="test")
probe = LinearProbeEncoder(n_components=300, cv=3).fit(X_train, y_train, **params)
r = pearson_r(y_test, probe.predict(X_test))
area = fmri.rois[0]["prf"].str.split("+").str[0].to_numpy()
ceiling = np.sqrt(fmri.noise_ceiling[0] / 100)
areas = ("V1", "V2", "V3", "hV4")
plot_score_distributions({a: {"LinearProbe": r[area == a]} for a in areas},
                         noise_ceiling={a: ceiling[area == a] for a in areas},
                         title="THINGS-fMRI subject 1, test images")
