"""Files inside zip archives: read where they lie (locally, or remotely by byte ranges).

Several sources publish their files only inside large zip archives: THINGS-fMRI's
single-trial responses (one 43 GB zip for three subjects), the THINGS images (one
password-protected zip), THINGS-EEG2's subjects and images. :func:`extract_members` makes
the members asked for present as files of the fetched dataset:

- from the archive itself when it is in the dataset (or in a local mirror folder);
- else, for ``ranged`` archives, by reading only the members' bytes from the archive's
  URL with HTTP range requests (zip's central directory says where each member lies);
- else by downloading the whole archive into the dataset first (git-annex: resumable,
  checksummed), which is also what happens when a server ignores range requests.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from afo_encoding._logging import progress

from ._datalad import DownloadError, FetchedDataset, _is_local, _local_path

_CHUNK = 1 << 22
# Bytes per range request when reading an archive's members (they are read in one pass)
ARCHIVE_BUFFER = 1 << 23


class RangesNotSupportedError(OSError):
    """The server answers range requests with the whole file."""


class RangeFile(io.RawIOBase):
    """A remote file read by HTTP byte ranges (h5py and zipfile seek in it).

    The size comes from a one-byte range request (``Content-Range``), which also works on
    the pre-signed storage URLs that Figshare and OSF redirect to (they refuse ``HEAD``).
    Later requests go straight to the address the first one was redirected to, and back
    to ``url`` when that address expires; a failed request is retried twice.

    Parameters
    ----------
    url : str
        An HTTP(S) address whose server honours ``Range`` headers.

    Raises
    ------
    RangesNotSupportedError
        When the server sends the whole file instead of the range asked for.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.position = 0
        request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
        with urllib.request.urlopen(request, timeout=60) as response:
            content_range = response.headers.get("Content-Range", "")
            if response.status != 206 or "/" not in content_range:
                raise RangesNotSupportedError(f"{url} does not serve byte ranges.")
            self.size = int(content_range.rsplit("/", 1)[1])
            self.resolved = response.geturl()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = base + offset
        return self.position

    def readinto(self, buffer) -> int:
        import time

        count = min(len(buffer), self.size - self.position)
        if count <= 0:
            return 0
        headers = {"Range": f"bytes={self.position}-{self.position + count - 1}"}
        for attempt in range(3):
            target = self.resolved if attempt == 0 else self.url
            try:
                request = urllib.request.Request(target, headers=headers)
                with urllib.request.urlopen(request, timeout=120) as response:
                    data = response.read(count)
                    self.resolved = response.geturl()
                break
            except (urllib.error.URLError, OSError) as err:
                if attempt == 2:
                    raise DownloadError(
                        f"Reading bytes {headers['Range'][6:]} of {self.url} failed: {err}. "
                        "Run again (files already extracted are kept), or read from a "
                        "mirror (url= or AFO_DATA_MIRROR).", urls=[self.url]) from err
                time.sleep(2.0 * (attempt + 1))
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def open_remote(url: str, buffer_size: int = 1 << 20) -> io.BufferedReader:
    """A buffered, seekable reader of a remote file (see :class:`RangeFile`).

    Raises
    ------
    DownloadError
        When the address cannot be reached.
    RangesNotSupportedError
        When the server ignores range requests.
    """
    try:
        raw = RangeFile(url)
    except RangesNotSupportedError:
        raise
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(
            f"Could not read {url}: {err}. Check the network connection, or read from a "
            "mirror (url= or AFO_DATA_MIRROR).", urls=[url]) from err
    return io.BufferedReader(raw, buffer_size=buffer_size)


def resolve_members(names: Sequence[str], wanted: Sequence[str],
                    archive: str) -> dict[str, str]:
    """The member of an archive that is each ``wanted`` name or ends with ``/name``.

    Archives differ in their top folder (``betas_csv/``, ``object_images/``, ...); the file
    name and the folders below it are what the fetchers rely on.
    """
    index: dict[str, list[str]] = {}
    depths = {len(w.strip("/").split("/")) for w in wanted}
    for name in names:
        parts = name.split("/")
        for depth in depths:
            if len(parts) >= depth:
                index.setdefault("/".join(parts[-depth:]), []).append(name)
    out = {}
    for w in wanted:
        hits = index.get(w.strip("/"), [])
        if len(hits) != 1:
            what = "no member" if not hits else f"{len(hits)} members ({hits[:3]})"
            raise ValueError(
                f"{archive} has {what} named {w!r}; it holds e.g. {list(names)[:3]}. The "
                "archive is not the expected one (or was damaged): remove it from the data "
                "directory and fetch again."
            )
        out[w] = hits[0]
    return out


@contextlib.contextmanager
def open_archive(dataset: FetchedDataset, relpath: str, url: str | None, *, ranged: bool,
                 resume: bool = True, verbose: int = 1) -> Iterator[zipfile.ZipFile]:
    """Open the zip archive ``relpath`` of ``dataset`` for reading members.

    Parameters
    ----------
    dataset : FetchedDataset
        The dataset the archive belongs to.
    relpath : str
        The archive's path in the dataset.
    url : str or None
        Its upstream address (``None``: only ``base_url/relpath`` of a mirror).
    ranged : bool
        Read members by HTTP ranges instead of downloading the whole archive.
    resume, verbose
        See :meth:`FetchedDataset.fetch`.
    """
    urls = {relpath: url} if url else None
    if not dataset.has(relpath) and not dataset.registered(relpath):
        location = dataset.url_of(relpath, urls)
        if location.startswith("file://") or _is_local(location):
            with zipfile.ZipFile(_local_path(location)) as zf:
                yield zf
            return
        if ranged:
            try:
                fileobj = open_remote(location, buffer_size=ARCHIVE_BUFFER)
            except RangesNotSupportedError:
                pass
            else:
                with fileobj, zipfile.ZipFile(fileobj) as zf:
                    yield zf
                return
    dataset.fetch([relpath], urls=urls, resume=resume, verbose=verbose)
    with zipfile.ZipFile(dataset.path / relpath) as zf:
        yield zf


def extract_members(dataset: FetchedDataset, archive: str, url: str | None,
                    members: Mapping[str, str], *, ranged: bool = False,
                    password: str | Callable[[zipfile.ZipFile], str] | None = None,
                    save: bool = True, resume: bool = True,
                    verbose: int = 1) -> list[Path]:
    """Make members of an archive present as files of the dataset.

    Parameters
    ----------
    dataset : FetchedDataset
        Where the files go.
    archive : str
        The archive's path in the dataset (its upstream name).
    url : str or None
        The archive's upstream address.
    members : mapping of str to str
        Member name (or its trailing part, see :func:`resolve_members`) to the path of
        the extracted file in the dataset.
    ranged : bool
        Read remote archives by byte ranges (see :func:`open_archive`).
    password : str or callable, optional
        The password of encrypted (ZipCrypto) members, or a function of the open
        :class:`zipfile.ZipFile` that finds it (called only when something is extracted).
    save : bool
        Record the extracted files in the dataset (git-annex checksums them, and a mirror
        made from this dataset carries them). ``False`` leaves them as untracked files
        next to an archive that stays the reference.
    resume, verbose
        See :meth:`FetchedDataset.fetch`.

    Returns
    -------
    paths : list of pathlib.Path
        The extracted files, in the order of ``members``.
    """
    targets = dict(members)
    # files saved by an earlier extraction come from the dataset's origin (a mirror made
    # from a data directory), and a mirror of plain files has them in the dataset's layout
    direct = [t for t in targets.values() if save and not dataset.has(t)
              and (dataset.registered(t) or dataset.override)]
    if direct:
        dataset.fetch(direct, resume=resume, verbose=verbose)
    todo = {m: t for m, t in targets.items() if not (dataset.path / t).is_file()}
    if todo:
        with open_archive(dataset, archive, url, ranged=ranged, resume=resume,
                          verbose=verbose) as zf:
            names = zf.namelist()
            found = resolve_members(names, list(todo), archive)
            resolved = {found[m]: t for m, t in todo.items()}
            if callable(password):
                password = password(zf)
            pwd = password.encode() if password else None
            # zip's central directory order is the order of the bytes: read them in one pass
            infos = sorted((zf.getinfo(n) for n in resolved), key=lambda i: i.header_offset)
            local = Path(zf.filename) if zf.filename else None
            if pwd and _unzip_program() and local is not None and local.is_file():
                _unzip_binary(local, infos, resolved, dataset.path, password)
            else:
                for info in progress(infos, verbose, desc=f"{Path(archive).name} members",
                                     unit="file"):
                    _extract_one(zf, info, dataset.path / resolved[info.filename], pwd)
        if save:
            dataset.save(list(todo.values()),
                         f"afo-encoding: {len(todo)} file(s) extracted from {archive}")
    return [dataset.path / t for t in targets.values()]


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path,
                 pwd: bytes | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with zf.open(info, pwd=pwd) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    except RuntimeError as err:  # zipfile's "Bad password for file"
        partial.unlink(missing_ok=True)
        raise PermissionError(
            f"Could not decrypt {info.filename} of {zf.filename or 'the archive'}: {err}."
        ) from err
    partial.replace(target)


def _unzip_program() -> str | None:
    """Info-ZIP's ``unzip``, if installed."""
    return shutil.which("unzip")


def _unzip_binary(archive: Path, infos: list[zipfile.ZipInfo], resolved: Mapping[str, str],
                  root: Path, password: str) -> None:
    """Decrypt with Info-ZIP's ``unzip``: Python's ZipCrypto runs at about 2 MB/s."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=root / ".git") as tmp:
        names = [i.filename for i in infos]
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            result = subprocess.run(["unzip", "-qq", "-o", "-P", password, str(archive),
                                     *batch, "-d", tmp], capture_output=True, text=True,
                                    check=False)
            if result.returncode not in (0, 1):
                raise PermissionError(
                    f"unzip could not extract {len(batch)} member(s) of {archive} "
                    f"(exit {result.returncode}): {result.stderr.strip()[:300]}"
                )
        for name in names:
            target = root / resolved[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(tmp) / name), str(target))
