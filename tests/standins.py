"""Small local stand-ins of the fetchers' sources: same layout, file names and formats as
the real ones, a few kilobytes of made-up values, so that every line of a fetcher runs
without the network.

Each ``make_<source>(root)`` writes the upstream files under ``root`` and returns what the
tests compare the fetched data against.
"""

from __future__ import annotations

import http.server
import io
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

COWLEY_SESSIONS = {"210305": (4, 6, 5), "210224": (3, 5, 4)}  # neurons, images, repeats


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
    """A local HTTP server of a folder, with byte ranges and an optional rate limit.

    It records every request as ``(path, Range header)``, so tests can check that an
    interrupted download was resumed rather than started over.
    """

    def __init__(self, root: Path, bytes_per_second: float = 0.0) -> None:
        self.root = Path(root)
        self.rate = bytes_per_second
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                server.requests.append((self.path, self.headers.get("Range")))

            def _send(self, body: bool) -> None:
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                size = path.stat().st_size
                start = 0
                header = self.headers.get("Range")
                if header and header.startswith("bytes="):
                    first = header[6:].split("-")[0]
                    start = int(first) if first else 0
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    while chunk := f.read(16384):
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
