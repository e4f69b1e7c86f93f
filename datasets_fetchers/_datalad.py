"""The layer every fetcher stands on: DataLad datasets, partial gets, mirrors, clear errors.

A fetched data set is a DataLad dataset in ``<data_dir>/<name>``. It is made in one of
two ways:

- **cloned** (``datalad clone``) from a DataLad dataset: OpenNeuro's copies on GitHub, or a
  mirror (another machine's data directory, an institutional copy);
- **created** empty (``datalad create``), its files registered one by one from the source's
  plain HTTP/S3 URLs with ``datalad addurls`` at the moment they are first asked for.

Either way, only the files asked for are downloaded, git-annex checks their content
(size and checksum; a half-downloaded file waits in ``.git/annex/tmp`` and never counts as
present), an interrupted download resumes where it stopped, and every later copy (a
``datalad get`` from this dataset used as a mirror) is verified against the checksum
recorded at the first download.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

from ._utils import get_data_dir

logger = logging.getLogger("afo_encoding")

MIRROR_ENV = "AFO_DATA_MIRROR"
_INSTALL_GIT_ANNEX = (
    "Install it with `pip install git-annex` (a self-contained wheel; it is a dependency "
    "of afo-encoding, so reinstalling afo-encoding in this environment also works), "
    "`conda install -c conda-forge git-annex`, or your system's package manager "
    "(e.g. `apt-get install git-annex`), then run the fetcher again."
)


class GitAnnexNotFoundError(RuntimeError):
    """``git-annex`` (which DataLad drives to download and check files) is not installed."""


class DownloadError(ConnectionError):
    """A file could not be downloaded; the message names the URL and the reason.

    Attributes
    ----------
    urls : list of str
        The URLs (or, for cloned datasets, the dataset's origin) that failed.
    """

    def __init__(self, message: str, urls: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.urls = list(urls)


class NotEnoughSpaceError(OSError):
    """The disk of the data directory is too full for the files asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.args[1])


class TermsNotAcceptedError(PermissionError):
    """A data set's terms of use must be read and accepted before it is downloaded."""


def check_git_annex() -> str:
    """Return the path of ``git-annex``, or raise a clear error when it is missing.

    Returns
    -------
    path : str
        Where ``git-annex`` was found on ``PATH``.

    Raises
    ------
    GitAnnexNotFoundError
        When ``git`` or ``git-annex`` is not on ``PATH``.
    """
    if shutil.which("git") is None:
        raise GitAnnexNotFoundError(
            "git is not on PATH, and DataLad needs it (with git-annex) to fetch data sets. "
            "Install git (https://git-scm.com/downloads) and git-annex. " + _INSTALL_GIT_ANNEX
        )
    found = shutil.which("git-annex")
    if found is None:
        raise GitAnnexNotFoundError(
            "git-annex is not on PATH (searched: "
            f"{os.environ.get('PATH', '')!r}), and DataLad needs it to download data sets "
            "and check their content. " + _INSTALL_GIT_ANNEX
        )
    return found


def check_terms(accepted: bool, dataset: str, terms_url: str, argument: str = "accept_terms",
                flag: str = "--accept-terms") -> None:
    """Stop with the terms' address unless the user said they accept them.

    Parameters
    ----------
    accepted : bool
        What the user passed.
    dataset : str
        The data set's name, for the message.
    terms_url : str
        Where the terms are published.
    argument, flag : str
        The fetcher's argument and the command-line flag that accept them.

    Raises
    ------
    TermsNotAcceptedError
        When ``accepted`` is not True.
    """
    if accepted is not True:
        raise TermsNotAcceptedError(
            f"{dataset} may only be used under its terms of use: read them at {terms_url} "
            f"and, if you agree, call the fetcher again with {argument}=True (command line: "
            f"afo-encoding fetch ... {flag}). Nothing was downloaded."
        )


# ----------------------------------------------------------------------------------------
# where a data set comes from


def _is_local(location: str) -> bool:
    return "://" not in location and not re.match(r"^[\w.-]+@[\w.-]+:", location)


def _local_path(location: str) -> Path:
    if location.startswith("file://"):
        return Path(urlparse(location).path)
    return Path(location).expanduser()


def _is_dataset(location: str) -> bool:
    """Whether ``location`` is a DataLad dataset to clone (else a base of plain files)."""
    if location.startswith("file://") or _is_local(location):
        return (_local_path(location) / ".datalad").is_dir()
    parsed = urlparse(location)
    return (
        location.rstrip("/").endswith(".git")
        or parsed.scheme in ("ssh", "git")
        or parsed.scheme.startswith("ria+")
        or not parsed.scheme
    )


def _join_url(base: str, relpath: str) -> str:
    if base.startswith("file://") or _is_local(base):
        return (_local_path(base) / relpath).resolve().as_uri()
    return base.rstrip("/") + "/" + quote(relpath)


def _redact(url: str) -> str:
    """An URL without credentials, for messages."""
    parsed = urlparse(url)
    if parsed.password or parsed.username:
        return parsed._replace(netloc=parsed.hostname or "").geturl()
    return url


@dataclass(frozen=True)
class Source:
    """Where a data set lives upstream.

    Parameters
    ----------
    name : str
        Folder name of the dataset under the data directory, and under a mirror.
    base_url : str or None
        Prefix of the files' URLs for sources of plain files (HTTP, S3): a file at
        ``relpath`` in the dataset is downloaded from ``base_url/relpath``.
    clone_url : str or None
        A DataLad dataset (or git repository) to clone, for sources that are datasets.
    fallback_url : str or None
        For cloned datasets: a prefix of plain HTTPS addresses with the dataset's layout,
        from which a file is registered and downloaded when ``datalad get`` fails (the
        S3 special remote of OpenNeuro's copies on GitHub sometimes does).
    """

    name: str
    base_url: str | None = None
    clone_url: str | None = None
    fallback_url: str | None = None


# ----------------------------------------------------------------------------------------
# quiet or chatty DataLad


@contextlib.contextmanager
def _datalad_verbosity(verbose: int) -> Iterator[None]:
    """Progress bars and DataLad's messages when ``verbose``, silence otherwise."""
    import datalad.ui

    dl_logger = logging.getLogger("datalad")
    previous_level = dl_logger.level
    previous_ui = datalad.ui.ui.backend
    if verbose < 2:
        # failures come back as results, and the fetchers explain them
        dl_logger.setLevel(logging.CRITICAL)
    if not verbose:
        datalad.ui.ui.set_backend("no-progress")
    try:
        yield
    finally:
        dl_logger.setLevel(previous_level)
        if datalad.ui.ui.backend != previous_ui:
            datalad.ui.ui.set_backend(previous_ui)


@contextlib.contextmanager
def _file_progress(total: int, name: str, verbose: int):
    """A progress bar over files (DataLad adds byte-level bars in interactive sessions)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"{name} files", unit="file", disable=not verbose)
    try:
        yield bar
    finally:
        bar.close()


def _message(result: dict) -> str:
    """The reason of a failed DataLad result, without DataLad's wrapping."""
    message = result.get("message") or result.get("error_message") or ""
    if isinstance(message, tuple):
        try:
            message = message[0] % message[1:]
        except (TypeError, ValueError):
            message = " ".join(str(m) for m in message)
    message = str(message)
    # git-annex's own words, when DataLad wrapped them in an AnnexBatchCommandError
    annex = re.search(r"'error-messages': \[(.*?)\]", message)
    if annex:
        message = "; ".join(m.strip(" '\"") for m in re.split(r"', '", annex.group(1)))
    extra = [str(m) for m in result.get("error_messages") or [] if str(m) not in message]
    text = " ".join([message, *extra]).strip()
    return text or str(result.get("status", "failed"))


def _raise_for_failures(failures: list[tuple[str, str]], where: Path) -> None:
    """Turn (url, git-annex message) pairs into the error a user can act on."""
    if not failures:
        return
    text = " ".join(message for _, message in failures).lower()
    if "not enough free space" in text or "no space left" in text:
        total, used, free = shutil.disk_usage(where)
        raise NotEnoughSpaceError(
            f"Not enough free disk space in {where} ({free / 1e9:.2f} GB free) for "
            f"{len(failures)} file(s), e.g. {failures[0][0]} (git-annex: {failures[0][1]}). "
            "Free some space, or fetch into another disk with data_dir= (or the AFO_DATA "
            "environment variable), or ask for fewer subjects/sessions. Files already "
            "downloaded are kept."
        )
    lines = "\n".join(f"  {_redact(url)}: {message}" for url, message in failures[:10])
    more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
    raise DownloadError(
        f"Could not download {len(failures)} file(s):\n{lines}{more}\n"
        "Check the network connection (or a proxy: the https_proxy environment variable), "
        "or read from a copy that you can reach: pass url= to the fetcher or set the "
        f"{MIRROR_ENV} environment variable to a mirror (for example the data directory of a "
        "machine that has fetched the files; see the 'Data sets' page of the documentation). "
        "Run again to resume: partial downloads are kept.",
        urls=[url for url, _ in failures],
    )


# ----------------------------------------------------------------------------------------
# the dataset


class FetchedDataset:
    """A DataLad dataset under the data directory, filled on demand.

    Use :func:`open_dataset` to make one; :meth:`fetch` makes files present.

    Attributes
    ----------
    path : pathlib.Path
        The dataset's folder.
    base_url : str or None
        Where files that are not yet registered (or that must be re-read from a mirror of
        plain files) are downloaded from.
    override : bool
        Whether ``base_url`` was given by the user (``url=`` or ``AFO_DATA_MIRROR``) rather
        than the source's own address: then files without content are always read from it,
        and checked against the checksum already recorded, if any.
    origin : str or None
        What the dataset was cloned from, if it was.
    fallback_url : str or None
        See :class:`Source`; ``None`` when reading from a mirror.
    """

    def __init__(self, path: Path, base_url: str | None, override: bool,
                 origin: str | None, fallback_url: str | None = None) -> None:
        import datalad.api as dl

        self.path = path
        self.base_url = base_url
        self.override = override
        self.origin = origin
        self.fallback_url = fallback_url
        self.dataset = dl.Dataset(str(path))

    def __repr__(self) -> str:
        return f"FetchedDataset({str(self.path)!r}, base_url={self.base_url!r})"

    def has(self, relpath: str) -> bool:
        """Whether the file's content is here (a half-downloaded file is not)."""
        return (self.path / relpath).exists()

    def registered(self, relpath: str) -> bool:
        """Whether the dataset knows the file (its content may be absent)."""
        return os.path.lexists(self.path / relpath)

    def url_of(self, relpath: str, urls: Mapping[str, str] | None = None) -> str:
        """The URL a file is downloaded from when it is registered by this fetch.

        ``urls`` gives the upstream address of files that have their own (Figshare, OSF,
        ...); a mirror given by the user (``url=``, ``AFO_DATA_MIRROR``) wins over them.
        """
        if urls and relpath in urls and not self.override:
            return urls[relpath]
        if self.base_url is None:
            raise DownloadError(
                f"{relpath} is not part of the dataset in {self.path} (cloned from "
                f"{self.origin}), and this source has no address to download single files "
                "from. Check the name, or update the dataset: datalad update --how merge "
                f"-d {self.path}.",
                urls=[str(self.origin)],
            )
        return _join_url(self.base_url, relpath)

    def fetch(self, relpaths: Iterable[str], *, urls: Mapping[str, str] | None = None,
              resume: bool = True, verbose: int = 1) -> list[Path]:
        """Make the files present and return their absolute paths (in the same order).

        Parameters
        ----------
        relpaths : iterable of str
            Paths relative to the dataset, in the source's layout.
        urls : mapping of str to str, optional
            Upstream addresses of files not at ``base_url/relpath`` (see :meth:`url_of`).
        resume : bool
            Continue partial downloads of an interrupted earlier fetch; ``False`` starts
            them over.
        verbose : int
            0: silent; 1: a summary and progress bars; 2: DataLad's own messages too.

        Returns
        -------
        paths : list of pathlib.Path
        """
        import datalad.api as dl

        relpaths = list(dict.fromkeys(str(p) for p in relpaths))
        missing = [p for p in relpaths if not self.has(p)]
        if missing:
            if not resume:
                self._drop_partial_downloads()
            to_get = [p for p in missing if self.registered(p) and not self.override]
            to_add = [p for p in missing if p not in set(to_get)]
            if verbose:
                logger.info("%s: fetching %d file(s) into %s", self.path.name, len(missing),
                            self.path)
            failures: list[tuple[str, str]] = []
            with _datalad_verbosity(verbose), _file_progress(len(missing), self.path.name,
                                                             verbose) as bar:
                if to_add:
                    self._allow_local_urls(self.base_url, *(urls or {}).values())
                    records = [{"url": self.url_of(p, urls), "path": p} for p in to_add]
                    url_of = {r["path"]: r["url"] for r in records}
                    for r in dl.addurls(
                        dataset=self.dataset, urlfile=records, urlformat="{url}",
                        filenameformat="{path}", on_failure="ignore",
                        result_renderer="disabled", return_type="generator",
                        message=f"afo-encoding: register {len(records)} file(s) of "
                        f"{self.path.name}",
                    ):
                        if r.get("action") not in ("addurl", "addurls"):
                            continue
                        bar.update(1)
                        if r.get("status") in ("error", "impossible"):
                            path = self._relpath(r.get("path"))
                            failures.append((url_of.get(path, path), _message(r)))
                if to_get:
                    failed = self._get(to_get, bar)
                    if failed and self.fallback_url:
                        failed = self._get_from_fallback(failed, bar)
                    failures += [(f"{self.origin or self.path} ({p})", message)
                                 for p, message in failed.items()]
            _raise_for_failures(failures, self.path)
            absent = [p for p in missing if not self.has(p)]
            if absent:
                _raise_for_failures([(self.url_of(p, urls) if self.base_url or urls else p,
                                      "no content after the download") for p in absent],
                                    self.path)
        return [self.path / p for p in relpaths]

    def _get(self, relpaths: list[str], bar) -> dict[str, str]:
        """``datalad get``; the files that failed, with git-annex's reason."""
        failed = {}
        for r in self.dataset.get(relpaths, on_failure="ignore", result_renderer="disabled",
                                  return_type="generator"):
            if r.get("type") != "file":
                continue
            if r.get("status") in ("error", "impossible"):
                failed[self._relpath(r.get("path"))] = _message(r)
            else:
                bar.update(1)
        return failed

    def _get_from_fallback(self, failed: dict[str, str], bar) -> dict[str, str]:
        """Record each file's plain HTTPS address for its key and get it again."""
        import subprocess

        for relpath in failed:
            key = subprocess.run(["git", "annex", "lookupkey", relpath], cwd=self.path,
                                 capture_output=True, text=True, check=False).stdout.strip()
            if key:
                subprocess.run(["git", "annex", "registerurl", key,
                                _join_url(self.fallback_url, relpath)],
                               cwd=self.path, capture_output=True, check=False)
        self._allow_local_urls(self.fallback_url)
        again = self._get(list(failed), bar)
        return {p: f"{failed[p]}; then from {_join_url(self.fallback_url, p)}: {again[p]}"
                for p in again}

    def save(self, relpaths: Sequence[str], message: str) -> None:
        """Record files written into the dataset (git-annex keeps their checksums)."""
        with _datalad_verbosity(0):
            self.dataset.save(path=[str(self.path / p) for p in relpaths], message=message,
                              result_renderer="disabled")

    def exclude_from_git(self, relpath: str) -> None:
        """Keep a folder of files derived locally (unpacked archives) out of git's view."""
        exclude = self.path / ".git" / "info" / "exclude"
        line = f"/{relpath.strip('/')}/"
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if line not in lines:
            exclude.parent.mkdir(parents=True, exist_ok=True)
            exclude.write_text("\n".join([*lines, line]) + "\n")

    def _relpath(self, path: str | None) -> str:
        if not path:
            return "?"
        with contextlib.suppress(ValueError):
            return str(Path(path).relative_to(self.path))
        return str(path)

    def _allow_local_urls(self, *locations: str | None) -> None:
        """A local mirror of plain files is read through file:// URLs, which git-annex
        refuses unless the repository allows them (the user chose the folder)."""
        if any(loc and (loc.startswith("file://") or _is_local(loc)) for loc in locations):
            self.dataset.config.set("annex.security.allowed-url-schemes", "http https ftp file",
                                    scope="local", reload=True)

    def _drop_partial_downloads(self) -> None:
        tmp = self.path / ".git" / "annex" / "tmp"
        if tmp.is_dir():
            for item in tmp.iterdir():
                if item.is_file():
                    item.unlink()


def open_dataset(source: Source, *, data_dir=None, url: str | None = None,
                 verbose: int = 1) -> FetchedDataset:
    """Find, clone or create the dataset of ``source`` under the data directory.

    Parameters
    ----------
    source : Source
        The data set's upstream.
    data_dir : str or path-like, optional
        See :func:`get_data_dir`.
    url : str, optional
        Read from here instead of upstream: a DataLad dataset (local folder, or a git URL)
        to clone, or a folder / HTTP(S) prefix with the source's own layout of files. When
        not given, ``$AFO_DATA_MIRROR/<source.name>`` is used if that variable is set.
    verbose : int
        0 silent, 1 progress, 2 DataLad's messages.

    Returns
    -------
    FetchedDataset
    """
    import datalad.api as dl

    check_git_annex()
    path = get_data_dir(data_dir) / source.name
    origin = url
    if origin is None and os.environ.get(MIRROR_ENV):
        mirror = os.environ[MIRROR_ENV]
        origin = _join_url(mirror, source.name) if not _is_local(mirror) else str(
            _local_path(mirror) / source.name)
        if _is_local(mirror) and not _local_path(origin).exists():
            raise FileNotFoundError(
                f"The mirror {MIRROR_ENV}={mirror!r} has no folder {source.name!r} "
                f"({origin} does not exist). Fill it first on a machine with internet "
                f"(fetch with data_dir={mirror!r}), or unset {MIRROR_ENV}."
            )
    origin = str(origin) if origin is not None else None
    if origin is not None and _is_local(origin) and not _local_path(origin).exists():
        raise FileNotFoundError(
            f"url={origin!r} does not exist. Pass an existing folder (a DataLad dataset, or "
            f"the files of {source.name} in their original layout) or an URL."
        )
    clone_from = origin if origin is not None and _is_dataset(origin) else None
    if clone_from is None and origin is None and source.clone_url is not None:
        clone_from = source.clone_url
    installed = (path / ".datalad").is_dir() or (path / ".git").exists()
    with _datalad_verbosity(verbose):
        if not installed:
            if path.exists() and any(path.iterdir()):
                raise FileExistsError(
                    f"{path} exists, is not empty and is not a DataLad dataset, so "
                    f"{source.name} cannot be fetched into it. Move it away, or fetch into "
                    "another data_dir."
                )
            if clone_from is not None:
                if verbose:
                    logger.info("%s: cloning %s into %s", source.name, _redact(clone_from),
                                path)
                results = dl.clone(source=clone_from, path=str(path), on_failure="ignore",
                                   result_renderer="disabled", return_type="list",
                                   result_xfm=None)
                bad = [r for r in results if r.get("status") in ("error", "impossible")]
                if bad:
                    if path.exists() and not any(path.iterdir()):
                        path.rmdir()
                    raise DownloadError(
                        f"Could not clone {source.name} from {_redact(clone_from)}: "
                        f"{_message(bad[0])}. Check the network connection or the address; "
                        f"a mirror can be given with url= or {MIRROR_ENV}.",
                        urls=[clone_from],
                    )
            else:
                if verbose:
                    logger.info("%s: creating the dataset %s", source.name, path)
                dl.create(str(path), result_renderer="disabled")
    if origin is not None and clone_from is None:
        return FetchedDataset(path, origin, override=True, origin=None)
    fallback = source.fallback_url if clone_from is None or clone_from == source.clone_url \
        else None
    return FetchedDataset(path, source.base_url, override=False,
                          origin=clone_from or _origin_url(path), fallback_url=fallback)


def _origin_url(path: Path) -> str | None:
    import subprocess

    result = subprocess.run(["git", "-C", str(path), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or None
