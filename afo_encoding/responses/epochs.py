"""Sensors x time (mne.Epochs): one voxel per (channel, time point), coords (x, y, z, t)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ._arrays import check_coords, check_numeric
from .base import ResponseSpace


def is_mne(obj: Any) -> bool:
    return type(obj).__module__.startswith("mne")


def _data_picks(info: Any) -> np.ndarray:
    import mne

    return mne.pick_types(
        info, meg=True, eeg=True, seeg=True, ecog=True, dbs=True, fnirs=True, csd=True,
        ref_meg=False, exclude="bads",
    )


def _sensor_positions(info: Any) -> tuple[np.ndarray, list[str]]:
    """Channel positions in head coordinates (m) and the names of channels without one."""
    from mne.io.constants import FIFF
    from mne.transforms import apply_trans

    positions, missing = np.zeros((len(info["chs"]), 3)), []
    dev_head_t = info.get("dev_head_t")
    for k, ch in enumerate(info["chs"]):
        pos = np.asarray(ch["loc"][:3], dtype=np.float64)
        if not np.isfinite(pos).all() or not pos.any():
            missing.append(ch["ch_name"])
            continue
        if ch["coord_frame"] == FIFF.FIFFV_COORD_DEVICE and dev_head_t is not None:
            pos = apply_trans(dev_head_t, pos)
        positions[k] = pos
    return positions, missing


def _epochs_modality(info: Any) -> str:
    types = set(info.get_channel_types())
    if types & {"mag", "grad"}:
        return "meg"
    if "eeg" in types:
        return "eeg"
    return "other"


class EpochsSpace(ResponseSpace):
    """Space of :class:`mne.Epochs`: one voxel per (channel, time point).

    The data channels (MEG, EEG, sEEG, ECoG, DBS, fNIRS, CSD; bad channels excluded) are
    used; column ``c * n_times + t`` holds channel ``c`` at time ``t``. ``coords`` are
    ``(x, y, z, t)``: the channel position in head coordinates (m; MEG sensors moved from
    device to head coordinates with ``dev_head_t``) and the time in s, so ``d = 4``.
    Channels without positions fall back, all together, to an evenly spaced grid
    ``(channel index, 0, 0, t)`` with a warning. MEG magnetometers and gradiometers at the
    same location share a position.

    Values stay in MNE's SI units (V, T): scale or standardise them before fitting.

    Attributes
    ----------
    info : mne.Info
        Measurement info of the modelled channels.
    times : ndarray
        Time points (s).
    events, event_id
        Events of the epochs the space was made from (reused by ``inverse_transform``
        when the number of samples matches).
    metadata : pandas.DataFrame | None
        Their metadata (reused the same way).
    """

    kind = "epochs"

    def __init__(
        self, info: Any, times: np.ndarray, events: np.ndarray, event_id: dict,
        metadata: Any = None, **base: Any
    ) -> None:
        self.info = info
        self.metadata = metadata
        self.times = np.asarray(times, dtype=np.float64)
        self.events = np.asarray(events, dtype=np.int64).reshape(-1, 3)
        self.event_id = {str(k): int(v) for k, v in event_id.items()}
        super().__init__(**base)

    @property
    def ch_names(self) -> list[str]:
        """Names of the modelled channels, in column order."""
        return list(self.info["ch_names"])

    def _voxel_name(self, raw_index: int) -> str:
        c, t = divmod(raw_index, len(self.times))
        return f"channel {self.ch_names[c]!r} at t = {self.times[t]:.4f} s"

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        import mne

        if not isinstance(y, mne.BaseEpochs):
            raise TypeError(f"Expected mne.Epochs; got a {type(y).__name__}.")
        missing = [c for c in self.ch_names if c not in y.ch_names]
        if missing:
            raise ValueError(
                f"These Epochs lack {len(missing)} channels of the space, e.g. {missing[:5]}. "
                "Use Epochs with the same channels (interpolate bad ones with "
                "epochs.interpolate_bads())."
            )
        sfreq = float(self.info["sfreq"])
        if not np.isclose(y.info["sfreq"], sfreq) or len(y.times) != len(self.times) or not (
            np.allclose(y.times, self.times, atol=0.5 / sfreq)
        ):
            raise ValueError(
                f"These Epochs have {len(y.times)} times from {y.times[0]:.4f} to "
                f"{y.times[-1]:.4f} s at {y.info['sfreq']:g} Hz; the space has "
                f"{len(self.times)} from {self.times[0]:.4f} to {self.times[-1]:.4f} s at "
                f"{sfreq:g} Hz. Crop and resample them the same way."
            )
        return _epochs_data(y, self.ch_names), True

    def inverse_transform(
        self, Y: Any, events: np.ndarray | None = None, event_id: dict | None = None,
        metadata: Any = None, like: Any = None,
    ) -> Any:
        """Give ``(n_samples, n_voxels)`` values back as an :class:`mne.EpochsArray`.

        Parameters
        ----------
        Y : array-like, shape (n_samples, n_voxels)
            One value per kept (channel, time) column; left-out columns come back NaN.
        events : ndarray of int, shape (n_samples, 3), optional
            Events of the new epochs. By default, those of ``like``, else those of the
            Epochs the space was made from when ``n_samples`` matches, else MNE's default
            events.
        event_id : dict, optional
            Event names and codes going with ``events``.
        metadata : pandas.DataFrame, optional
            One row per epoch (default: that of ``like``, or of the fitted Epochs when
            ``n_samples`` matches).
        like : mne.Epochs, optional
            The epochs ``Y`` stands for, e.g. the measured test epochs whose images were
            predicted: their events, event_id and metadata are kept, so that
            ``pred["category == 'face'"]`` and MNE's condition-wise plots work.

        Returns
        -------
        epochs : mne.EpochsArray
            Same info (channels, positions, sampling rate), times and ``tmin``; data in
            float64, equal to ``Y`` (float32) exactly.
        """
        if like is not None:
            n = np.atleast_2d(np.asarray(Y)).shape[0]
            if len(like.events) != n:
                raise ValueError(
                    f"like= has {len(like.events)} epochs for {n} rows of values; give the "
                    "Epochs whose images were predicted, in the same order."
                )
            events = like.events if events is None else events
            event_id = like.event_id if event_id is None else event_id
            metadata = like.metadata if metadata is None else metadata
        return super().inverse_transform(Y, events=events, event_id=event_id,
                                         metadata=metadata)

    def _from_raw(
        self, Y: np.ndarray, events: np.ndarray | None = None, event_id: dict | None = None,
        metadata: Any = None,
    ) -> Any:
        import mne

        data = Y.reshape(Y.shape[0], len(self.ch_names), len(self.times)).astype(np.float64)
        if events is None and Y.shape[0] == len(self.events):
            events, event_id = self.events, self.event_id or None
            if metadata is None:
                metadata = self.metadata
        if metadata is not None:
            metadata = metadata.reset_index(drop=True)
        return mne.EpochsArray(
            data, self.info.copy(), events=events, tmin=float(self.times[0]),
            event_id=event_id, baseline=None, metadata=metadata, verbose=False,
        )

    def _geometry(self) -> dict[str, Any]:
        import tempfile

        import mne

        with tempfile.TemporaryDirectory() as tmp:
            fname = os.path.join(tmp, "space-info.fif")
            mne.io.write_info(fname, self.info)
            with open(fname, "rb") as fid:
                fif = np.frombuffer(fid.read(), dtype=np.uint8).copy()
        return {
            "info_fif": fif,
            "times": self.times,
            "events": self.events,
            "event_id": dict(self.event_id),
        }

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> EpochsSpace:
        import tempfile

        import mne

        with tempfile.TemporaryDirectory() as tmp:
            fname = os.path.join(tmp, "space-info.fif")
            with open(fname, "wb") as fid:
                fid.write(np.asarray(geometry["info_fif"], dtype=np.uint8).tobytes())
            info = mne.io.read_info(fname, verbose=False)
        return cls(info, np.asarray(geometry["times"]), np.asarray(geometry["events"]),
                   dict(geometry["event_id"]), **base)


def _epochs_data(epochs: Any, ch_names: list[str]) -> np.ndarray:
    """float32 ``(n_epochs, n_channels * n_times)`` of the named channels."""
    picks = [epochs.ch_names.index(c) for c in ch_names]
    empty = ValueError(
        "The Epochs object has no epochs (all were dropped?); see epochs.drop_log."
    )
    if (epochs.preload and len(epochs) == 0) or len(epochs.events) == 0:
        raise empty
    if epochs.preload:
        data = epochs.get_data(picks=picks, copy=False)
    else:
        data = epochs.get_data(picks=picks)
    if data.shape[0] == 0:
        raise empty
    check_numeric(data, "Epochs data")
    return np.ascontiguousarray(data.reshape(data.shape[0], -1), dtype=np.float32)


def fit_epochs(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, EpochsSpace]:
    """:func:`~afo_encoding.responses.as_responses` for mne.Epochs: ``(Y, space)``."""
    import mne

    if mask is not None:
        raise ValueError(
            "mask is not used for Epochs: select channels and times with MNE first, e.g. "
            "epochs.copy().pick(['O1', 'O2']).crop(0.05, 0.5)."
        )
    picks = _data_picks(y.info)
    if not len(picks):
        raise ValueError(
            f"The Epochs have no good data channel (types {sorted(set(y.get_channel_types()))}"
            f", bads {y.info['bads']}); encoding models need MEG/EEG/iEEG/fNIRS channels."
        )
    info = mne.pick_info(y.info, picks)
    times = np.asarray(y.times, dtype=np.float64)
    n_channels, n_times = len(picks), len(times)
    if coords is None:
        positions, missing = _sensor_positions(info)
        if missing:
            warnings.warn(
                f"{len(missing)} of {n_channels} channels have no position (e.g. "
                f"{missing[:5]}): using an evenly spaced grid (channel index, 0, 0) for all "
                "channels. Set a montage first (epochs.set_montage) to use real positions.",
                UserWarning,
                stacklevel=3,
            )
            positions = np.zeros((n_channels, 3))
            positions[:, 0] = np.arange(n_channels)
        raw_coords = np.column_stack(
            [np.repeat(positions, n_times, axis=0), np.tile(times, n_channels)]
        )
    else:
        raw_coords = check_coords(coords, n_channels * n_times, "channel x time point")
    Y = _epochs_data(y, info["ch_names"])
    space = EpochsSpace(
        info,
        times,
        # events only when they surely match the rows read (MNE may drop bad epochs on read)
        y.events if len(y.events) == Y.shape[0] else np.zeros((0, 3)),
        y.event_id,
        y.metadata if len(y.events) == Y.shape[0] else None,
        keep=np.ones(n_channels * n_times, dtype=bool),
        coords=raw_coords,
        modality=modality or _epochs_modality(info),
    )
    return space._fit(Y, True, raw_coords), space

