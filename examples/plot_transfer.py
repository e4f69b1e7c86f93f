"""
Transfer: a fitted encoder as a backbone, and a new subject from few images
===========================================================================

Figure 1 of the paper presents the trained model as "a drop-in replacement for commonly
used vision backbone models". Here a :class:`~afo_encoding.TopyEncoder` fitted on one
simulated brain serves a second brain, with other voxels and other images, in two ways:

- as a **backbone**: :func:`~afo_encoding.backbones.get_backbone` of the fitted encoder
  gives its backbone's maps through its adapters, and, with ``responses=True``, the first
  brain's predicted responses, which a :class:`~afo_encoding.LinearProbeEncoder` reads
  like the maps of any backbone;
- as a **warm start**: ``fit(..., transfer_from=source)`` starts the second brain's model
  from the source's adapters and global branch and learns only its own RetinaMapper,
  LayerSelector and heads.

Both are compared with the same models built from the raw Gabor pyramid, as a function of
the number of training images of the second brain. It takes a few minutes on a CPU.
"""

# %%
# Two simulated brains
# --------------------
# The source brain sees 600 images; the new one 200 training images (of which the first
# 50, 100 or 200 are used) and 200 test images. Their voxels, maps and images differ.
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from afo_encoding import LinearProbeEncoder, TopyEncoder
from afo_encoding.backbones import get_backbone
from afo_encoding.io import load, save
from afo_encoding.metrics import pearson_r
from afo_encoding.simulation import make_retinotopic_dataset

warnings.simplefilter("ignore")  # voxels without position warnings of the tiny fits
first = make_retinotopic_dataset(n_images=600, image_size=32, n_voxels=300, snr=3.0,
                                 random_state=0)
second = make_retinotopic_dataset(n_images=400, image_size=32, n_voxels=300, snr=3.0,
                                  random_state=1)
test = slice(200, 400)
params = {"backbone_params": {"image_size": 32}, "device": "cpu", "random_state": 0}
source = TopyEncoder(**params).fit(first.images, first.Y, coords=first.coords)

# %%
# The source, saved and loaded
# ----------------------------
# A saved encoder keeps its adapters and backbone settings: after
# :func:`~afo_encoding.io.load`, on a CPU and without its training data, it serves as a
# backbone or a warm start as the original does. The backbone's ``name`` (part of every
# feature-cache key) comes from a digest of its weights, so the reloaded encoder finds the
# features the original cached, and two different encoders never share them.
folder = Path(tempfile.mkdtemp())
save(source, folder / "source.afo")
source = load(folder / "source.afo")
as_backbone = get_backbone(source, responses=True)
print(as_backbone.layer_names)
print(as_backbone.name)

# %%
# Held-out r as a function of the number of training images
# ---------------------------------------------------------
sizes = [50, 100, 200]
models = {
    "linear probe, raw pyramid": lambda: LinearProbeEncoder(
        backbone="pyramid", backbone_params={"image_size": 32}),
    "linear probe, encoder as backbone": lambda: LinearProbeEncoder(backbone=as_backbone),
    "TopyEncoder from scratch": lambda: TopyEncoder(**params),
    "TopyEncoder, transfer_from=source": lambda: TopyEncoder(**params),
}
scores = {name: [] for name in models}
for n in sizes:
    X, Y = second.images[:n], second.Y[:n]
    for name, make in models.items():
        encoder = make()
        if isinstance(encoder, TopyEncoder):
            extra = {"transfer_from": source} if "transfer" in name else {}
            encoder.fit(X, Y, coords=second.coords, **extra)
        else:
            encoder.fit(X, Y)
        r = pearson_r(second.Y[test], encoder.predict(second.images[test]))
        scores[name].append(float(np.mean(r)))
        print(f"n={n:3d} {name}: r={scores[name][-1]:.3f}")

fig, ax = plt.subplots(figsize=(6, 4))
for name, values in scores.items():
    ax.plot(sizes, values, marker="o", label=name)
ax.set_xscale("log")
ax.set_xticks(sizes, [str(n) for n in sizes])
ax.set_xlabel("training images of the new brain")
ax.set_ylabel("mean held-out r")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# What to read here: the source's predicted responses are a compact, brain-shaped
# description of an image, so a linear probe on them learns a new brain from few images.
# The ridge recipe's warm start reuses projections (principal axes) that a ridge
# regression barely depends on, and fits its own linear probe, so it matches the fit from
# scratch; the sgd recipe's
# trained convolutional adapters are what the paper transfers (see the user guide's
# "Transfer" section for the measured figures).
