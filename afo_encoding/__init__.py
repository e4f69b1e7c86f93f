"""afo-encoding: brain encoding models from frozen vision backbones.

Fit a model that predicts, from the images a subject saw, the response of every fMRI
voxel, MEG/EEG sensor x time point or recorded neuron. The heavy modules (torch,
transformers) load on first use, so ``import afo_encoding`` stays fast.
"""

from importlib import import_module

from ._logging import set_log_level

__version__ = "0.1.0.dev0"

# public name -> module that defines it; imported lazily on first attribute access
_LAZY = {
    "TopyEncoder": "afo_encoding.encoders.topy",
    "LinearProbeEncoder": "afo_encoding.encoders.linear",
    "AllForOneEncoder": "afo_encoding.encoders.afo",
    "load": "afo_encoding.io",
    "as_responses": "afo_encoding.responses",
    "ResponseSamples": "afo_encoding.responses",
    "as_stimuli": "afo_encoding.stimuli",
    "StimulusSet": "afo_encoding.stimuli",
    "InputSpec": "afo_encoding.stimuli",
    "make_retinotopic_dataset": "afo_encoding.simulation",
    "pearson_scorer": "afo_encoding.metrics",
    "rank_candidates": "afo_encoding.decoding",
    "identification_accuracy": "afo_encoding.decoding",
    "veroi": "afo_encoding.parcellation",
    "get_backbone": "afo_encoding.backbones",
    "extract_features": "afo_encoding.backbones",
    "FeatureStore": "afo_encoding.backbones",
}

__all__ = ["__version__", "set_log_level", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'afo_encoding' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
