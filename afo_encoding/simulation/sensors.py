"""EEG and MEG: every voxel a current dipole with its area's time course, seen by the
sensors of MNE's bundled montages through a forward model, plus brain and sensor noise."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from .anatomy import gray_matter
from .fmri import noise_ceilings
from .images import CATEGORIES
from .retinotopy import AREAS

_SFREQ = 100.0
_N_TIMES = 50  # 0 to 490 ms
_TIME_COURSE = {"early": (0.04, 0.020), "mid": (0.075, 0.025), "late": (0.11, 0.030)}
_GAMMA_ORDER = 3  # gamma time course (onset t0, scale tau): peak at t0 + 3 tau
_EVOKED_GAIN = 2.0  # source activity = EVOKED_GAIN + voxel signal (signal sd 1)
_SIGNAL_SCALE = {"eeg": 5e-6, "meg": 2e-13}  # peak |mean evoked| in V and T
_N_NOISE_DIPOLES = 40
_NOISE_SMOOTH = 1.0  # temporal smoothing of the noise, in samples (Gaussian sd)
_SPHERE_ORIGIN = np.array([0.0, 0.0, 0.04])  # head frame, metres
_MEG_RADIUS = 0.12
_EEG_ALIASES = ("T3", "T4", "T5", "T6")  # same positions as T7, T8, P7, P8 in standard_1020


@functools.lru_cache(maxsize=1)
def _mni_to_head() -> np.ndarray:
    """4x4 transform from MNI mm to MNE's head frame (metres), via bundled fsaverage."""
    import mne

    path = Path(mne.__file__).parent / "data" / "fsaverage" / "fsaverage-trans.fif"
    head_to_mri = mne.read_trans(path, verbose=False)["trans"]
    mm_to_m = np.diag([1e-3, 1e-3, 1e-3, 1.0])
    return np.linalg.inv(head_to_mri) @ mm_to_m


def _to_head(xyz_mm: np.ndarray) -> np.ndarray:
    t = _mni_to_head()
    return xyz_mm @ t[:3, :3].T + t[:3, 3]


def _sensor_info(modality: str):
    """``mne.Info`` with sensor positions, positions (n_ch, 3) and normals (head frame)."""
    import mne

    if modality == "eeg":
        # MNE 1.13 renamed the standard_1020 montage colin27_1020 (same positions)
        builtin = mne.channels.get_builtin_montages()
        name = "colin27_1020" if "colin27_1020" in builtin else "standard_1020"
        montage = mne.channels.make_standard_montage(name)
        names = [c for c in montage.ch_names if c not in _EEG_ALIASES]
        info = mne.create_info(names, _SFREQ, "eeg")
        info.set_montage(montage, verbose=False)
        pos = np.array([ch["loc"][:3] for ch in info["chs"]])
        return info, pos, None
    layout = mne.channels.read_layout("Vectorview-mag")
    centre = layout.pos[:, :2] + layout.pos[:, 2:4] / 2
    centre -= (centre.max(0) + centre.min(0)) / 2
    radius = np.linalg.norm(centre, axis=1)
    polar = np.deg2rad(100.0) * radius / radius.max()  # azimuthal equidistant, inverted
    azimuth = np.arctan2(centre[:, 1], centre[:, 0])
    normal = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], 1
    )
    pos = _SPHERE_ORIGIN + _MEG_RADIUS * normal
    info = mne.create_info(list(layout.names), _SFREQ, "mag")
    for ch, p, ez in zip(info["chs"], pos, normal):
        ex = np.cross([0.0, 0.0, 1.0], ez)
        ex = ex / np.linalg.norm(ex) if np.linalg.norm(ex) > 1e-9 else np.array([1.0, 0, 0])
        ch["loc"][:] = np.concatenate([p, ex, np.cross(ez, ex), ez])
    info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    return info, pos, normal


def _lead_field(modality, sensors, normals, positions, moments) -> np.ndarray:
    """(n_sensors, n_dipoles) field of unit dipoles (metres, A m) at the sensors."""
    if modality == "eeg":
        # infinite homogeneous medium (0.33 S/m); distances regularised by 1 cm, a crude
        # stand-in for the blurring of the skull
        d = sensors[:, None, :] - positions[None]
        dist2 = (d**2).sum(-1) + 0.01**2
        lf = (d * moments[None]).sum(-1) / (4 * np.pi * 0.33 * dist2**1.5)
        return lf - lf.mean(axis=0, keepdims=True)  # average reference
    # Sarvas (1987): field outside a spherically symmetric conductor
    r = sensors - _SPHERE_ORIGIN
    r0 = positions - _SPHERE_ORIGIN
    a = r[:, None, :] - r0[None]
    an = np.linalg.norm(a, axis=-1)
    rn = np.linalg.norm(r, axis=-1)[:, None]
    a_dot_r = (a * r[:, None, :]).sum(-1)
    f = an * (rn * an + rn**2 - (r0[None] * r[:, None, :]).sum(-1))
    grad_f = (an**2 / rn + a_dot_r / an + 2 * an + 2 * rn)[..., None] * r[:, None, :] - (
        an + 2 * rn + a_dot_r / an
    )[..., None] * r0[None]
    q_x_r0 = np.cross(moments, r0)[None]
    b = (f[..., None] * q_x_r0 - (q_x_r0 * r[:, None, :]).sum(-1)[..., None] * grad_f) / (
        f[..., None] ** 2
    )
    return 1e-7 * (b * normals[:, None, :]).sum(-1)  # mu0 / (4 pi) = 1e-7


def _time_courses(times: np.ndarray) -> np.ndarray:
    """(3, n_times) gamma time courses of the areas, peak 1."""
    out = np.zeros((len(AREAS), len(times)))
    for i, area in enumerate(AREAS):
        onset, tau = _TIME_COURSE[area]
        u = np.clip((times - onset) / tau, 0.0, None)
        out[i] = (u / _GAMMA_ORDER) ** _GAMMA_ORDER * np.exp(_GAMMA_ORDER - u)
    return out


def _smooth_in_time(noise: np.ndarray, axis: int) -> np.ndarray:
    """Circular Gaussian smoothing with a unit-energy kernel: white noise keeps its variance."""
    from scipy.ndimage import convolve1d

    k = np.arange(-3, 4)
    kernel = np.exp(-(k**2) / (2 * _NOISE_SMOOTH**2))
    kernel /= np.sqrt((kernel**2).sum())
    return convolve1d(noise, kernel.astype(noise.dtype), axis=axis, mode="wrap")


def _random_units(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sensors(modality, signal, sources, objects, n_repeats, snr, rng, feature_types) -> Bunch:
    """EEG/MEG recording of the cortical ``sources`` (one dipole per voxel), with its truth."""
    n_images = signal.shape[0]
    info, sensor_pos, normals = _sensor_info(modality)
    n_ch = len(sensor_pos)
    times = np.arange(_N_TIMES) / _SFREQ
    tc = _time_courses(times)
    data, lf, per_area_var = _evoked(modality, signal, sources, sensor_pos, normals, tc, rng)
    signal_sd = data.std(0, ddof=1).reshape(-1)
    noise, noise_sd = _noise(modality, sensor_pos, normals, signal_sd, snr,
                             (n_images, n_repeats), rng)
    repeats = (data[:, None] + noise.transpose(0, 1, 3, 2)).astype(np.float32)
    repeats = repeats.reshape(n_images, n_repeats, n_ch * _N_TIMES)
    Y = repeats.mean(axis=1)

    ncsnr = signal_sd / np.repeat(noise_sd, _N_TIMES)
    nc_r, nc_pct = noise_ceilings(ncsnr, n_repeats)
    rois, summary = _column_truth(lf, sources, tc, per_area_var)
    coords = np.column_stack([np.repeat(sensor_pos, _N_TIMES, axis=0), np.tile(times, n_ch)])
    sources.signal = signal
    return Bunch(
        responses=_epochs(Y, info, objects),
        mask=None,
        Y=Y,
        coords=coords,
        repeats=repeats,
        signal=(data.reshape(n_images, -1)).astype(np.float32),
        ncsnr=ncsnr,
        noise_ceiling=nc_r,
        noise_ceiling_percent=nc_pct,
        prf_center=summary[:, :2],
        prf_size=summary[:, 2],
        rois=rois,
        feature_type=np.array([feature_types[a] for a in rois]),
        sources=sources,
        times=times,
        ch_names=list(info.ch_names),
        time_courses=tc,
    )


def _evoked(modality, signal, sources, sensor_pos, normals, tc, rng):
    """Noiseless data (n_images, n_ch, n_times), the lead field of the cortical dipoles
    (oriented between radial and random) and each area's signal variance per column,
    scaled so that the largest mean evoked value is the modality's signal scale."""
    n_images, n_ch = signal.shape[0], len(sensor_pos)
    pos = _to_head(sources.coords)
    radial = pos - _SPHERE_ORIGIN
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    moments = radial + 0.8 * _random_units(rng, len(pos))
    moments /= np.linalg.norm(moments, axis=1, keepdims=True)
    lf = _lead_field(modality, sensor_pos, normals, pos, moments)
    activity = _EVOKED_GAIN + signal.astype(np.float64)
    data = np.zeros((n_images, n_ch, _N_TIMES))
    per_area_var = np.zeros((len(AREAS), n_ch, _N_TIMES))
    for i, area in enumerate(AREAS):
        idx = np.flatnonzero(sources.rois == area)
        if idx.size:
            x = activity[:, idx] @ lf[:, idx].T  # (n_images, n_ch)
            data += x[:, :, None] * tc[i][None, None, :]
            per_area_var[i] = x.var(0, ddof=1)[:, None] * tc[i][None, :] ** 2
    scale = _SIGNAL_SCALE[modality] / np.abs(data.mean(0)).max()
    data *= scale
    lf *= scale
    return data, lf, per_area_var


def _noise(modality, sensor_pos, normals, signal_sd, snr, shape, rng):
    """Noise (n_images, n_repeats, n_times, n_ch) and its sd per channel: random
    gray-matter dipoles over the whole brain plus white sensor noise of the same mean
    variance, smoothed in time, scaled to the asked ``snr``."""
    n_ch = len(sensor_pos)
    gm, gm_affine = gray_matter()
    candidates = np.argwhere(gm > 0.5)
    picked = candidates[rng.choice(len(candidates), size=_N_NOISE_DIPOLES, replace=False)]
    noise_pos = _to_head(picked @ gm_affine[:3, :3].T + gm_affine[:3, 3])
    lf_noise = _lead_field(
        modality, sensor_pos, normals, noise_pos, _random_units(rng, _N_NOISE_DIPOLES)
    )
    brain_var = (lf_noise**2).sum(1)
    white_var = brain_var.mean()  # the two noise sources have the same mean variance
    # white noise is average-referenced with the EEG data
    white_var_ch = white_var * (1 - 1 / n_ch) if modality == "eeg" else white_var
    noise_var = brain_var + white_var_ch
    k = np.sqrt((signal_sd**2).mean()) / (snr * np.sqrt(noise_var.mean()))
    shape = (*shape, _N_TIMES)
    z_brain = _smooth_in_time(rng.standard_normal((*shape, _N_NOISE_DIPOLES)), axis=2)
    z_white = _smooth_in_time(rng.standard_normal((*shape, n_ch)), axis=2)
    if modality == "eeg":
        z_white -= z_white.mean(axis=-1, keepdims=True)
    noise = k * (z_brain @ lf_noise.T + np.sqrt(white_var) * z_white)
    return noise, k * np.sqrt(noise_var)


def _column_truth(lf, sources, tc, per_area_var):
    """Per (channel, time) column: the area contributing most signal variance, and the
    variance-weighted mean pRF (centre x, y and size) of the sources that reach it."""
    n_ch = lf.shape[0]
    rois = np.array(AREAS)[per_area_var.argmax(0).reshape(-1)]
    weight_num = np.zeros((n_ch, _N_TIMES, 3))
    weight_den = np.full((n_ch, _N_TIMES), 1e-300)
    for i, area in enumerate(AREAS):
        idx = np.flatnonzero(sources.rois == area)
        if idx.size:
            w = lf[:, idx] ** 2  # signal sd of every source is 1
            props = np.column_stack([sources.prf_center[idx], sources.prf_size[idx]])
            t2 = tc[i] ** 2 + 1e-12  # before the onsets, fall back on lead-field weights
            weight_num += (w @ props)[:, None, :] * t2[None, :, None]
            weight_den += w.sum(1)[:, None] * t2[None, :]
    return rois, (weight_num / weight_den[..., None]).reshape(-1, 3)


def _epochs(Y, info, objects):
    """``mne.EpochsArray`` of the mean responses, with the objects shown as metadata."""
    import mne
    import pandas as pd

    metadata = pd.DataFrame(
        {
            "category": np.array(CATEGORIES)[objects["category"]],
            "x": objects["position"][:, 0],
            "y": objects["position"][:, 1],
            "size": objects["size"],
        }
    )
    n_images, n_ch = Y.shape[0], len(info.ch_names)
    return mne.EpochsArray(
        Y.reshape(n_images, n_ch, _N_TIMES).astype(np.float64),
        info,
        tmin=0.0,
        metadata=metadata,
        verbose=False,
    )
