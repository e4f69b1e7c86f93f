"""Members of zip archives, read locally, by HTTP byte ranges, or after downloading the
whole archive when the server ignores ranges; the THINGS password found in its terms."""

import zipfile

import pytest
from standins import RangeServer, allow_loopback, files_under, write_encrypted_zip

from datasets_fetchers._archives import extract_members, resolve_members
from datasets_fetchers._datalad import Source, open_dataset
from datasets_fetchers._things_images import _password_finder

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
MEMBERS = {"top/sub-01/a.txt": b"alpha" * 100, "top/sub-02/b.txt": b"beta" * 100}


@pytest.fixture
def served(tmp_path):
    with zipfile.ZipFile(tmp_path / "archive.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in MEMBERS.items():
            zf.writestr(name, data)
    return tmp_path


@pytest.mark.parametrize("ranges", [True, False])
def test_members_by_ranges_or_from_the_whole_archive(served, tmp_path, monkeypatch, ranges):
    allow_loopback(monkeypatch)
    dataset = open_dataset(Source(name="x"), data_dir=tmp_path / "data", verbose=0)
    with RangeServer(served, ranges=ranges) as server:
        (path,) = extract_members(dataset, "archive.zip", f"{server.url}/archive.zip",
                                  {"sub-01/a.txt": "out/a.txt"}, ranged=True, verbose=0)
    assert path.read_bytes() == MEMBERS["top/sub-01/a.txt"]
    present = files_under(dataset.path)
    assert "out/a.txt" in present
    # a server that ignores ranges gets the archive downloaded (git-annex) and kept
    assert ("archive.zip" in present) is not ranges
    assert all(r for _, r in server.requests) is ranges


def test_member_names_must_match_one_member():
    names = ["top/sub-01/a.txt", "other/sub-01/a.txt", "x/b.txt"]
    assert resolve_members(names, ["b.txt"], "z.zip") == {"b.txt": "x/b.txt"}
    with pytest.raises(ValueError, match="2 members"):
        resolve_members(names, ["sub-01/a.txt"], "z.zip")
    with pytest.raises(ValueError, match="no member named 'c.txt'"):
        resolve_members(names, ["c.txt"], "z.zip")


def test_the_password_is_the_word_of_the_terms_that_opens_the_archive(tmp_path):
    write_encrypted_zip(tmp_path / "e.zip", {"object_images/a/a_01b.jpg": b"x" * 50},
                        "s3cret")
    with zipfile.ZipFile(tmp_path / "e.zip") as zf:
        assert _password_finder("Terms: research only.\nPassword: 's3cret'.")(zf) == "s3cret"
        with pytest.raises(PermissionError, match="None of the words"):
            _password_finder("no password here")(zf)


@pytest.mark.parametrize("unzip", [True, False])
def test_encrypted_members_with_or_without_the_unzip_program(tmp_path, monkeypatch, unzip):
    from datasets_fetchers import _archives

    if unzip and _archives._unzip_program() is None:
        pytest.skip("Info-ZIP's unzip is not installed")
    if not unzip:
        monkeypatch.setattr(_archives, "_unzip_program", lambda: None)
    files = {f"object_images/c/c_{k:02d}b.jpg": bytes([k]) * 300 for k in range(5)}
    write_encrypted_zip(tmp_path / "src" / "e.zip", files, "pw")
    dataset = open_dataset(Source(name="e"), data_dir=tmp_path / "data", verbose=0)
    paths = extract_members(dataset, "e.zip", (tmp_path / "src" / "e.zip").as_uri(),
                            {"c/c_03b.jpg": "images/c_03b.jpg", "c/c_01b.jpg": "images/c_01b.jpg"},
                            password=_password_finder("password: pw"), save=False, verbose=0)
    assert [p.read_bytes() for p in paths] == [bytes([3]) * 300, bytes([1]) * 300]
