"""Addresses of files on Figshare and OSF, looked up by name in the repositories' APIs.

Figshare articles and OSF projects give each file an opaque id; a fetcher that knows the
article (project) and the file names asks the public API once for the download address
of each name, instead of hard-coding ids that change with every new version.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from ._datalad import DownloadError

# Module attributes, so that tests (and users behind a proxy of these APIs) can point
# them elsewhere.
FIGSHARE_API = "https://api.figshare.com/v2"
OSF_API = "https://api.osf.io/v2"
_PAGE = 1000


def _get_json(url: str, what: str) -> dict | list:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(
            f"Could not list the files of {what} ({url}): {err}. Check the network "
            "connection, or read from a mirror (url= or AFO_DATA_MIRROR) that has the "
            "files already.", urls=[url]) from err


def figshare_files(article_id: int) -> dict[str, str]:
    """Name to download address of every file of a Figshare (or Figshare+) article.

    Parameters
    ----------
    article_id : int
        The article's id (the number in its ``figshare.com/articles/.../<id>`` address).

    Returns
    -------
    urls : dict of str to str
        ``{file name: download_url}`` (``https://ndownloader.figshare.com/files/<id>``).
    """
    urls: dict[str, str] = {}
    page = 1
    while True:
        listing = _get_json(f"{FIGSHARE_API}/articles/{article_id}/files"
                            f"?page={page}&page_size={_PAGE}",
                            f"the Figshare article {article_id}")
        urls.update({f["name"]: f["download_url"] for f in listing})
        if len(listing) < _PAGE:
            return urls
        page += 1


def osf_files(node: str) -> dict[str, str]:
    """Name to download address of every file at the top of an OSF project's storage.

    Parameters
    ----------
    node : str
        The project's id (the five characters of ``osf.io/<node>``).

    Returns
    -------
    urls : dict of str to str
        ``{file name: links.download}``.
    """
    urls: dict[str, str] = {}
    url: str | None = f"{OSF_API}/nodes/{node}/files/osfstorage/?page[size]=100"
    while url:
        listing = _get_json(url, f"the OSF project {node}")
        for item in listing["data"]:
            if item["attributes"].get("kind") == "file":
                urls[item["attributes"]["name"]] = item["links"]["download"]
        url = (listing.get("links") or {}).get("next")
    return urls


def resolve(names: list[str], listing: dict[str, str], where: str) -> dict[str, str]:
    """The addresses of ``names``, with an error naming what is missing."""
    missing = [n for n in names if n not in listing]
    if missing:
        raise DownloadError(
            f"{where} has no file named {missing[:5]} (it has e.g. {sorted(listing)[:5]}). "
            "The source was reorganised: please report it, and read from a mirror "
            "(url= or AFO_DATA_MIRROR) meanwhile.", urls=[where])
    return {n: listing[n] for n in names}
