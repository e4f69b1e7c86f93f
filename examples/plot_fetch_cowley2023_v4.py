"""
Macaque V4 neurons: fetch Cowley et al. (2023) and fit two encoders
===================================================================

Cowley, Stan, Pillow & Smith (2023) recorded V4 neurons of three macaques with Utah arrays
while the monkeys saw hundreds of natural and synthetic images, several times each.
:func:`datasets_fetchers.fetch_cowley2023_v4` downloads one recording session (here
210305: 400 images, 70 neurons, 22 repeats, about 3 MB) from the authors' repository with
DataLad; :func:`datasets_fetchers.load_encoder_inputs` pairs every response row with its
image. We fit the paper's :class:`~afo_encoding.TopyEncoder` and the field's baseline,
:class:`~afo_encoding.LinearProbeEncoder`, on 80 % of the images and compare their
correlation on the other 20 % with each neuron's split-half noise ceiling.

This example downloads data: the documentation runs it only where the network is
reachable (it takes a few minutes on a laptop CPU).
"""

# %%
# Fetch one session
# -----------------
# The data land in ``~/afo_data/cowley2023_v4`` (or ``$AFO_DATA``); a second run reads
# them from disk.
import matplotlib.pyplot as plt
import numpy as np

from afo_encoding import LinearProbeEncoder, TopyEncoder
from afo_encoding.metrics import pearson_r
from afo_encoding.plotting import plot_retina_map, plot_score_distributions
from datasets_fetchers import fetch_cowley2023_v4, load_encoder_inputs

data = fetch_cowley2023_v4(sessions="210305")
print(data.sessions[["session", "monkey", "split", "n_neurons", "n_images", "max_repeats"]])
print(data.citation)

X, y, params = load_encoder_inputs(data, subject="210305")
print(f"{len(X)} images, responses {y.shape} (images x neurons)")

# %%
# Hold out a fifth of the images
# ------------------------------
# The neurons' positions on the array are not published, so the encoders place them on an
# evenly spaced grid (TopyEncoder warns about it): the RetinaMapper then learns each
# neuron's receptive field from the responses alone.
rng = np.random.default_rng(0)
order = rng.permutation(len(X))
n_test = max(2, len(X) // 5)
test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
X_train, X_test = [X[i] for i in train], [X[i] for i in test]

topy = TopyEncoder(d_model=32, max_epochs=60, n_iter_no_change=15, random_state=0)
topy.fit(X_train, y[train], **params)
probe = LinearProbeEncoder(n_components=min(200, len(train) - 1), cv=3)
probe.fit(X_train, y[train], **params)

# %%
# Held-out correlation per neuron, under the noise ceiling
# ---------------------------------------------------------
# ``noise_ceiling`` is in percent of variance (split-half reliability of the repeats,
# stepped up to all repeats); its square root is the ceiling on Pearson r.
scores = {
    "TopyEncoder": pearson_r(y[test], topy.predict(X_test)),
    "LinearProbeEncoder": pearson_r(y[test], probe.predict(X_test)),
}
ceiling = np.sqrt(np.clip(data.noise_ceiling[0], 0, None) / 100)
for name, r in scores.items():
    print(f"{name}: median r {np.nanmedian(r):.2f} (median ceiling {np.median(ceiling):.2f})")
plot_score_distributions(scores, noise_ceiling=float(np.median(ceiling)),
                         title="V4 neurons, held-out images")

# %%
# Where each neuron looks
# -----------------------
# The RetinaMapper's point for every neuron, over one of the images: V4 receptive fields
# of one array cluster in one part of the visual field.
plot_retina_map(topy, image=plt.imread(X_test[0]))
plt.show()
