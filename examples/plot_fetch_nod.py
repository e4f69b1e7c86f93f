"""
Natural Object Dataset: fetch one subject and map prediction accuracy on the surface
====================================================================================

The Natural Object Dataset (NOD; Gong et al. 2023) recorded 3T fMRI of 30 people who saw
ImageNet images (1,000 to 4,000 each) on the fsLR cortical surface.
:func:`datasets_fetchers.fetch_nod` clones the OpenNeuro data set and gets the authors'
beta maps of the requested subject, the visual areas of the HCP-MMP atlas and the
stimuli, which NOD ships.

We fit a :class:`~afo_encoding.TopyEncoder` on subject 10's 1,000 ImageNet trials and
show, on the subject's inflated surface, how well it predicts held-out trials.

This example downloads about 0.4 GB: the documentation runs it only where OpenNeuro can
be reached.
"""

# %%
# Fetch subject 10
# ----------------
import matplotlib.pyplot as plt
import numpy as np
from nilearn.plotting import plot_surf_stat_map

from afo_encoding import TopyEncoder
from afo_encoding.metrics import pearson_r
from datasets_fetchers import fetch_nod, load_encoder_inputs

nod = fetch_nod(subjects=[10])
print(nod.license)
print(f"{nod.responses[0].shape[0]} trials x {nod.responses[0].shape[1]} vertices")
print(nod.rois[0]["mmp"].value_counts().head())

# %%
# Fit on nine runs, test on the tenth
# -----------------------------------
X, y, params = load_encoder_inputs(nod, subject=10)
test = (nod.trials[0]["run"] == 10).to_numpy()
encoder = TopyEncoder(d_model=32, max_epochs=30, random_state=0)
encoder.fit([x for x, t in zip(X, test) if not t], y[~test], **params)
r = pearson_r(y[test], encoder.predict([x for x, t in zip(X, test) if t]))
print(f"median r: {np.median(r):.3f}")

# %%
# Accuracy on the inflated surface
# --------------------------------
# The masker puts the values back on the subject's fsLR mesh.
surface = nod.maskers[0].inverse_transform(r[None, :].astype(np.float32))
plot_surf_stat_map(surface, hemi="left", view="posterior", threshold=0.05,
                   title="NOD subject 10: r on held-out run (left)")
plt.show()
