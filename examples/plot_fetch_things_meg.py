"""
THINGS-MEG and THINGS-fMRI: one encoder for MEG and fMRI
========================================================

THINGS-data (Hebart et al. 2023) recorded fMRI and MEG responses to the same kind of
images, photographs of the 1,854 object concepts of the THINGS database.
:func:`datasets_fetchers.fetch_things_meg` returns a participant's preprocessed epochs as an
:class:`mne.Epochs` (271 sensors, 200 Hz) and :func:`datasets_fetchers.fetch_things_fmri` a
subject's single-trial betas in visual cortex with their positions. Both need the THINGS
terms of use to be accepted (``accept_terms=True``, after reading
https://osf.io/jum2f/files/52wrx): the images come from the THINGS archive.

As in the paper's mixed-modality training, one :class:`~afo_encoding.TopyEncoder` reads
fMRI voxels and MEG (sensor, time) columns out of the same backbone.

This example downloads about 35 GB (the 12 GB THINGS image archive, 8 GB of MEG epochs,
one THINGS-fMRI subject's tables): the documentation never runs it.
"""

# %%
# Fetch a MEG participant and an fMRI subject
# -------------------------------------------
# The MEG test images (200 images, 12 repeats) are averaged; the fMRI betas are kept
# trial by trial.
import numpy as np

from afo_encoding import TopyEncoder
from afo_encoding.metrics import pearson_r
from datasets_fetchers import fetch_things_fmri, fetch_things_meg, load_encoder_inputs

meg = fetch_things_meg(subjects=[1], trial_types="test", average_repeats=True,
                       accept_terms=True)
fmri = fetch_things_fmri(subjects=[1], sessions=[1, 2, 3, 4], accept_terms=True)
print(meg.responses[0])
print(f"fMRI: {fmri.responses[0].shape[0]} trials x {fmri.responses[0].shape[1]} voxels")

# %%
# One encoder, two modalities
# ---------------------------
# MEG epochs carry their sensor positions; fMRI arrays come with their voxels'
# positions (``coords``). Half of the MEG test images are held out.
X_f, y_f, p_f = load_encoder_inputs(fmri, subject=1, split="train")
X_m, y_m, _ = load_encoder_inputs(meg, subject=1)
y_m = y_m.load_data()
held_out = np.arange(len(X_m)) % 2 == 1
encoder = TopyEncoder(d_model=32, max_epochs=20, random_state=0)
encoder.fit([X_f, [x for x, h in zip(X_m, held_out) if not h]],
            [y_f, y_m[~held_out]], coords=[p_f["coords"], None])

# %%
# MEG prediction on held-out images
# ---------------------------------
X_test = [x for x, h in zip(X_m, held_out) if h]
r = pearson_r(y_m[held_out].get_data().reshape(int(held_out.sum()), -1),
              encoder.predict(X_test, subject=1))
print(f"median r over sensor x time: {np.median(r):.3f}")
