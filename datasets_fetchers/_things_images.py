"""The THINGS object images (Hebart et al. 2019), shared by THINGS-fMRI and THINGS-MEG.

The 26,107 images of the THINGS database are published on OSF (project ``jum2f``) in one
password-protected zip archive, ``images_THINGS.zip`` (about 12 GB; members
``object_images/<concept>/<concept>_<NN><letter>.jpg``). The password is written in
``password_images.txt`` next to it, with the terms of use: only people who accept those
terms may use the images. The fetchers ask for ``accept_terms=True``, then download the
terms file and the archive into the dataset ``things_images`` (git-annex: resumable,
checksummed; shared by every THINGS fetcher and every subject) and unpack only the
images asked for.

Addresses, from the loader of the THINGS studies in Meta's ``neuralfetch``
(``utils.download_things_images``: the archive's OSF file id, and "the password can be
found in password_images.txt at https://osf.io/jum2f/files/52wrx").
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence

from ._archives import extract_members
from ._datalad import Source, check_terms, open_dataset

NAME = "things_images"
SOURCE = Source(name=NAME)
ARCHIVE = "images_THINGS.zip"
ARCHIVE_URL = ("https://files.osf.io/v1/resources/jum2f/providers/osfstorage/"
               "670d6f7dbce84f4a7bb9371b")
TERMS = "password_images.txt"
TERMS_URL = "https://osf.io/download/52wrx/"
TERMS_PAGE = "https://osf.io/jum2f/files/52wrx"
IMAGES = "object_images"
LICENSE = (
    "THINGS images: for academic research only, under the THINGS terms of use "
    f"({TERMS_PAGE}; accept them with accept_terms=True)"
)
CITATION = (
    "Hebart, M. N., Dickter, A. H., Kidder, A., Kwok, W. Y., Corriveau, A., Van Wicklin, "
    "C., & Baker, C. I. (2019). THINGS: A database of 1,854 object concepts and more than "
    "26,000 naturalistic object images. PLoS ONE, 14(10), e0223792. "
    "https://doi.org/10.1371/journal.pone.0223792"
)


def check_things_terms(accept_terms: bool, dataset: str) -> None:
    """Stop, naming where the THINGS terms are, unless the user accepted them."""
    check_terms(accept_terms, f"{dataset} (its stimuli, the THINGS images)", TERMS_PAGE)


def concept_of(image: str) -> str:
    """The THINGS concept of an image file name: ``coat_rack_13s.jpg`` -> ``coat_rack``."""
    stem = image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.rsplit("_", 1)[0]


def _password_finder(terms: str):
    """The password is one of the words of the terms file: the one that opens the zip."""
    words = list(dict.fromkeys(
        w.strip(".,;:!?\"'()[]<>") for w in re.split(r"\s+", terms) if w.strip()))

    def find(zf: zipfile.ZipFile) -> str:
        encrypted = [i for i in zf.infolist() if i.flag_bits & 0x1 and not i.is_dir()]
        if not encrypted:
            return ""
        probe = min(encrypted, key=lambda i: i.compress_size)
        for word in words:
            try:
                zf.read(probe, pwd=word.encode())
            except (RuntimeError, zipfile.BadZipFile, ValueError):
                continue
            return word
        raise PermissionError(
            f"None of the words of {TERMS} opens {ARCHIVE}; the terms file or the archive "
            f"changed. Read {TERMS_PAGE} and report the problem."
        )

    return find


def fetch_things_images(images: Sequence[str], *, data_dir=None, resume: bool = True,
                        verbose: int = 1) -> dict[str, str]:
    """Paths of THINGS images, unpacked from the archive on first use.

    Call :func:`check_things_terms` first.

    Parameters
    ----------
    images : sequence of str
        Image file names (``dog_12s.jpg``) or ``concept/file`` paths.
    data_dir, resume, verbose
        As for the fetchers.

    Returns
    -------
    paths : dict of str to str
        Image file name to its path.
    """
    dataset = open_dataset(SOURCE, data_dir=data_dir, verbose=verbose)
    dataset.exclude_from_git(IMAGES)
    names = list(dict.fromkeys(i.rsplit("/", 1)[-1] for i in images))
    members = {f"{concept_of(n)}/{n}": f"{IMAGES}/{concept_of(n)}/{n}" for n in names}
    todo = {m: t for m, t in members.items() if not (dataset.path / t).is_file()}
    if todo:
        terms = dataset.fetch([TERMS], urls={TERMS: TERMS_URL}, resume=resume,
                              verbose=verbose)[0].read_text(encoding="utf-8", errors="replace")
        extract_members(dataset, ARCHIVE, ARCHIVE_URL, todo, password=_password_finder(terms),
                        save=False, resume=resume, verbose=verbose)
    return {n: str(dataset.path / members[f"{concept_of(n)}/{n}"]) for n in names}
