"""
THINGS-EEG2: fetch one subject and predict EEG from images
==========================================================

THINGS-EEG2 (Gifford et al. 2022) recorded the EEG of ten people who saw 16,540 THINGS
images four times each and 200 test images 80 times each.
:func:`datasets_fetchers.fetch_things_eeg2` downloads one subject's preprocessed EEG (about
1 GB, from the authors' OSF project) and the image set, and returns the responses as an
:class:`mne.EpochsArray` with the 17 occipital and parietal channels at their positions on
the recording cap.

We average each image's repetitions, fit a :class:`~afo_encoding.TopyEncoder` on a subset
of the training images, and score it on the 200 test images, channel by time point, under
the noise ceiling of the test repeats.

The documentation runs this example only where OSF can be reached.
"""

# %%
# Fetch subject 1
# ---------------
import matplotlib.pyplot as plt
import numpy as np

from afo_encoding import TopyEncoder
from afo_encoding.metrics import pearson_r
from datasets_fetchers import fetch_things_eeg2, load_encoder_inputs

eeg = fetch_things_eeg2(subjects=[1], average_repeats=True)
print(eeg.license)
print(eeg.responses[0])

# %%
# Fit on training images, test on the 200 test images
# ---------------------------------------------------
# Each (channel, time) pair is one output of the encoder.
X_train, y_train, _ = load_encoder_inputs(eeg, subject=1, split="train")
X_test, y_test, _ = load_encoder_inputs(eeg, subject=1, split="test")
rng = np.random.default_rng(0)
subset = np.sort(rng.choice(len(X_train), size=2000, replace=False))
encoder = TopyEncoder(d_model=32, max_epochs=30, random_state=0)
encoder.fit([X_train[k] for k in subset], y_train[subset])

# %%
# Accuracy over time
# ------------------
n_channels, n_times = len(y_test.ch_names), len(y_test.times)
r = pearson_r(y_test.get_data().reshape(len(y_test), -1), encoder.predict(X_test))
ceiling = np.sqrt(eeg.noise_ceiling[0] / 100)
plt.plot(y_test.times, r.reshape(n_channels, n_times).mean(0), label="TopyEncoder")
plt.plot(y_test.times, ceiling.reshape(n_channels, n_times).mean(0), "k--",
         label="noise ceiling")
plt.xlabel("time from image onset (s)")
plt.ylabel("Pearson r, mean over channels")
plt.legend()
plt.show()
