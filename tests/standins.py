"""Small local stand-ins of the fetchers' sources: same layout, file names and formats as
the real ones, a few kilobytes of made-up values, so that every line of a fetcher runs
without the network.

Each ``make_<source>(root)`` writes the upstream files under ``root`` and returns what the
tests compare the fetched data against.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

NSD_GRID = (5, 6, 4)  # the real func1pt8mm grid is (81, 104, 83)
NSD_IMAGES = 40  # the real stimulus file has 73,000
NSD_SHARED = np.arange(10)  # 0-based 73k ids of the "shared" images (real: 1,000)
NSD_ATLASES = {
    "prf-visualrois": ["V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"],
    "streams": ["early", "midventral", "midlateral", "midparietal", "ventral", "lateral",
                "parietal"],
    "floc-faces": ["OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"],
    "floc-bodies": ["EBA", "FBA-1", "FBA-2", "mTL-bodies"],
    "floc-places": ["OPA", "PPA", "RSC"],
    "floc-words": ["OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"],
}
COWLEY_SESSIONS = {"210305": (4, 20, 5), "210224": (3, 5, 4)}  # neurons, images, repeats


def make_cowley2023_v4(root: Path) -> dict:
    """The layout of github.com/cowleygroup/V4_compact_models/data_V4_responses."""
    rng = np.random.default_rng(0)
    data = root / "data_V4_responses"
    for sub in ("images", "responses_raw", "responses_repeat_averaged"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    (data / "readme.txt").write_text("Readme for the V4 data in Cowley et al., bioRxiv, 2023.\n")
    truth = {}
    for session, (n_neurons, n_images, n_repeats) in COWLEY_SESSIONS.items():
        with zipfile.ZipFile(data / "images" / f"images_{session}.zip", "w") as zf:
            for k in range(n_images):
                pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG")
                zf.writestr(f"image{k + 1:04d}.jpg", buffer.getvalue())
        signal = rng.poisson(5.0, size=(n_neurons, n_images, 1)).astype(np.float64)
        raw = signal + rng.normal(size=(n_neurons, n_images, n_repeats))
        counts = rng.integers(2, n_repeats + 1, size=n_images)
        raw[:, np.arange(n_repeats)[None, :] >= counts[:, None]] = np.nan
        np.save(data / "responses_raw" / f"responses_{session}.npy", raw)
        averaged = np.nanmean(raw, axis=2)
        np.save(data / "responses_repeat_averaged" / f"responses_{session}.npy", averaged)
        truth[session] = {"raw": raw, "averaged": averaged}
    return truth


def files_under(root: Path) -> set[str]:
    """Relative paths of the files with content under ``root`` (git's folder left out)."""
    return {
        str(p.relative_to(root)) for p in root.rglob("*")
        if ".git" not in p.relative_to(root).parts and p.is_file()
    }


class RangeServer:
    """A local HTTP server of a folder, with byte ranges (unless ``ranges=False``) and an
    optional rate limit; query strings are ignored (``/a?b=1`` serves the file ``a``).

    It records every request as ``(path, Range header)``, so tests can check that an
    interrupted download was resumed rather than started over.
    """

    def __init__(self, root: Path, bytes_per_second: float = 0.0, ranges: bool = True) -> None:
        self.root = Path(root)
        self.rate = bytes_per_second
        self.ranges = ranges
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                server.requests.append((self.path, self.headers.get("Range")))

            def _send(self, body: bool) -> None:
                path = server.root / urlparse(self.path).path.lstrip("/")
                if path.is_dir():  # an API listing, stored as index.json
                    path = path / "index.json"
                if not path.is_file():
                    self.send_error(404)
                    return
                size = path.stat().st_size
                start = 0
                header = self.headers.get("Range")
                end = size - 1
                if header and header.startswith("bytes=") and server.ranges:
                    first, _, last = header[6:].partition("-")
                    start = int(first) if first else 0
                    end = min(int(last), size - 1) if last else size - 1
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end + 1 - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    left = end + 1 - start
                    while left > 0 and (chunk := f.read(min(16384, left))):
                        left -= len(chunk)
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        if server.rate:
                            time.sleep(len(chunk) / server.rate)

            def do_GET(self):
                self._send(True)

            def do_HEAD(self):
                self._send(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def allow_loopback(monkeypatch) -> None:
    """Let git-annex download from 127.0.0.1 (it refuses private addresses by default)."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "annex.security.allowed-ip-addresses")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "127.0.0.1")


def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_without(name: str) -> dict:
    return {k: v for k, v in os.environ.items() if k != name}


def _nsd_trial_images(masterordering, subjectim, subject, session):
    trials = masterordering[(session - 1) * 750 : session * 750]
    return subjectim[subject - 1, trials - 1] - 1


def make_nsd(root: Path, subjects=(1, 2), sessions=(1, 2)) -> dict:
    """The layout of s3://natural-scenes-dataset for a few subjects and sessions: the
    experimental design, single-trial betas (func1pt8mm NIfTI int16 x 300, fsaverage MGH
    float), ncsnr, ROI volumes and fsaverage labels with their colour tables, fsaverage
    surfaces (FreeSurfer geometry) and the HDF5 stimulus brick. Betas hold a planted
    image-specific pattern plus noise."""
    import h5py
    import nibabel as nib
    from nibabel.freesurfer import write_geometry
    from scipy.io import savemat
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(0)
    n_vox = int(np.prod(NSD_GRID))
    # the design: 30,000 trials in 10,000 slots per subject, slots -> 73k ids (1-based)
    masterordering = rng.integers(1, 10001, size=30000)
    subjectim = np.stack([rng.permutation(np.arange(10000) % NSD_IMAGES) + 1
                          for _ in range(8)])
    design = root / "nsddata/experiments/nsd"
    design.mkdir(parents=True)
    savemat(design / "nsd_expdesign.mat", {
        "masterordering": masterordering[None, :].astype(np.float64),
        "subjectim": subjectim.astype(np.float64),
        "sharedix": (NSD_SHARED + 1)[None, :].astype(np.float64),
    })
    stimuli = root / "nsddata_stimuli/stimuli/nsd"
    stimuli.mkdir(parents=True)
    brick = rng.integers(0, 256, size=(NSD_IMAGES, 8, 8, 3), dtype=np.uint8)
    with h5py.File(stimuli / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=brick)

    # fsaverage stand-in: a small closed mesh per hemisphere
    points = rng.normal(size=(14, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    faces = ConvexHull(points).simplices.astype(np.int32)
    n_vert = len(points)
    fs = root / "nsddata/freesurfer/fsaverage"
    (fs / "surf").mkdir(parents=True)
    (fs / "label").mkdir(parents=True)
    for hemi, shift in (("lh", -0.0), ("rh", 0.0)):
        for mesh in ("sphere", "white", "pial", "inflated"):
            write_geometry(str(fs / "surf" / f"{hemi}.{mesh}"), 100 * points + shift, faces)
    vertex_labels = {}
    for atlas in ["nsdgeneral", *NSD_ATLASES]:
        n_labels = 1 if atlas == "nsdgeneral" else len(NSD_ATLASES[atlas])
        for hemi in ("lh", "rh"):
            values = rng.integers(0, n_labels + 1, size=n_vert).astype(np.int32)
            if atlas == "nsdgeneral":
                values[:3] = 0
                values[3:] = 1
            nib.save(nib.MGHImage(values.reshape(-1, 1, 1), np.eye(4)),
                     fs / "label" / f"{hemi}.{atlas}.mgz")
            vertex_labels[(atlas, hemi)] = values

    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = [-10.0, -20.0, 5.0]
    patterns = rng.normal(size=(NSD_IMAGES, n_vox)).astype(np.float32)
    surface_patterns = rng.normal(size=(NSD_IMAGES, 2 * n_vert)).astype(np.float32)
    truth = {"brick": brick, "affine": affine, "patterns": patterns,
             "surface_patterns": surface_patterns, "points": points,
             "vertex_labels": vertex_labels, "masterordering": masterordering,
             "subjectim": subjectim, "volumes": {}, "surfaces": {}}
    for subject in subjects:
        subj = f"subj{subject:02d}"
        ppdata = root / f"nsddata/ppdata/{subj}/func1pt8mm"
        (ppdata / "roi").mkdir(parents=True)
        brain = np.ones(NSD_GRID, dtype=np.int16)
        brain[0] = 0
        nib.save(nib.Nifti1Image(brain, affine), ppdata / "brainmask.nii.gz")
        general = np.where(brain > 0, 0, -1).astype(np.int16)
        general[2:, 1:5, 1:3] = 1
        nib.save(nib.Nifti1Image(general, affine), ppdata / "roi" / "nsdgeneral.nii.gz")
        labels = root / f"nsddata/freesurfer/{subj}/label"
        labels.mkdir(parents=True)
        truth["volumes"][subject] = {"nsdgeneral": general, "brainmask": brain}
        for atlas, names in NSD_ATLASES.items():
            values = rng.integers(0, len(names) + 1, size=NSD_GRID).astype(np.int16)
            values[brain == 0] = -1
            nib.save(nib.Nifti1Image(values, affine), ppdata / "roi" / f"{atlas}.nii.gz")
            (labels / f"{atlas}.mgz.ctab").write_text(
                "".join(f"{k} {name}\n" for k, name in enumerate(["Unknown", *names])))
            truth["volumes"][subject][atlas] = values
        betas = root / f"nsddata_betas/ppdata/{subj}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
        fs_betas = root / f"nsddata_betas/ppdata/{subj}/fsaverage/betas_fithrf_GLMdenoise_RR"
        betas.mkdir(parents=True)
        fs_betas.mkdir(parents=True)
        ncsnr = rng.uniform(0.1, 1.5, size=NSD_GRID).astype(np.float32)
        nib.save(nib.Nifti1Image(ncsnr, affine), betas / "ncsnr.nii.gz")
        fs_ncsnr = rng.uniform(0.1, 1.5, size=2 * n_vert).astype(np.float32)
        for k, hemi in enumerate(("lh", "rh")):
            part = fs_ncsnr[k * n_vert : (k + 1) * n_vert]
            nib.save(nib.MGHImage(part.reshape(-1, 1, 1), np.eye(4)),
                     fs_betas / f"{hemi}.ncsnr.mgh")
        truth["volumes"][subject]["ncsnr"] = ncsnr
        truth["surfaces"][subject] = {"ncsnr": fs_ncsnr}
        for session in sessions:
            ids = _nsd_trial_images(masterordering, subjectim, subject, session)
            signal = patterns[ids] + 0.5 * rng.normal(size=(750, n_vox))
            volume = np.round(300 * signal).astype(np.int16).T.reshape(*NSD_GRID, 750)
            nib.save(nib.Nifti1Image(volume, affine),
                     betas / f"betas_session{session:02d}.nii.gz")
            surface = (surface_patterns[ids] + 0.5 * rng.normal(size=(750, 2 * n_vert)))
            surface = surface.astype(np.float32)
            for k, hemi in enumerate(("lh", "rh")):
                part = surface[:, k * n_vert : (k + 1) * n_vert].T
                nib.save(nib.MGHImage(part.reshape(n_vert, 1, 1, 750), np.eye(4)),
                         fs_betas / f"{hemi}.betas_session{session:02d}.mgh")
            truth["volumes"][subject][f"session{session}"] = volume
            truth["surfaces"][subject][f"session{session}"] = surface
    return truth


# ----------------------------------------------------------------------------------------
# helpers of the part-2 stand-ins (THINGS, BOLD5000, NOD)


def tiny_jpeg(rng: np.random.Generator, size: int = 8) -> bytes:
    """A small random JPEG image."""
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)).save(
        buffer, format="JPEG")
    return buffer.getvalue()


def _crc_step(crc: int, byte: int) -> int:
    return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _zipcrypto(data: bytes, password: bytes) -> bytes:
    """PKWARE's traditional encryption (ZipCrypto), as ``zip -P`` writes it."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(byte: int) -> None:
        keys[0] = _crc_step(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _crc_step(keys[2], keys[1] >> 24)

    for byte in password:
        update(byte)
    out = bytearray()
    for byte in data:
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out)


def write_encrypted_zip(path: Path, files: dict[str, bytes], password: str) -> None:
    """A zip archive of stored, ZipCrypto-encrypted members (Python can read, not write,
    those; THINGS distributes its images this way)."""
    rng = np.random.default_rng(1)
    body, central = bytearray(), bytearray()
    for name, data in files.items():
        crc = zlib.crc32(data)
        header = bytes(rng.integers(0, 256, 11, dtype=np.uint8)) + bytes([crc >> 24])
        payload = _zipcrypto(header + data, password.encode())
        encoded = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 1, 0, 0, 0x21, crc,
                            len(payload), len(data), len(encoded), 0) + encoded + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 1, 0, 0, 0x21,
                               crc, len(payload), len(data), len(encoded), 0, 0, 0, 0, 0,
                               offset) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(files), len(files), len(central),
                      len(body), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(body + central + end))


def save_datalad_dataset(root: Path, message: str = "stand-in") -> None:
    """Make ``root`` (already filled) a DataLad dataset, text in git, the rest annexed."""
    import logging

    import datalad.api as dl

    dl_logger = logging.getLogger("datalad")
    level = dl_logger.level
    dl_logger.setLevel(logging.WARNING)
    try:
        dl.create(str(root), force=True, cfg_proc="text2git", result_renderer="disabled")
        dl.save(dataset=str(root), message=message, result_renderer="disabled")
    finally:
        dl_logger.setLevel(level)


def write_api_listing(api_root: Path, route: str, payload) -> None:
    """Write a JSON answer of a repository API (Figshare, OSF) for :class:`RangeServer`."""
    path = api_root / route.strip("/")
    path.mkdir(parents=True, exist_ok=True)
    (path / "index.json").write_text(json.dumps(payload))
