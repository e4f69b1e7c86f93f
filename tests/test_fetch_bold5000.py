"""fetch_bold5000 on local stand-ins of OpenNeuro ds001499 (a DataLad dataset), of the
release-2.0 files on Figshare (served over HTTP, found through a stand-in of the API) and
of the stimuli zip."""

from pathlib import Path

import numpy as np
import pytest
from standins import RangeServer, allow_loopback, files_under
from standins_bold5000 import BOLD_GRID, SPM_NAMES, make_bold5000
from standins_things import figshare_listing

from datasets_fetchers import _repositories as repositories
from datasets_fetchers import bold5000 as bold_module
from datasets_fetchers import fetch_bold5000, load_encoder_inputs
from datasets_fetchers._datalad import Source

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("bold5000_sources")
    truth = make_bold5000(root / "ds001499", root / "figshare", root / "dropbox")
    with RangeServer(root / "figshare") as server:
        figshare_listing(root / "figshare", bold_module.RELEASE2_ARTICLE,
                         {p.name: f"{server.url}/files/{p.name}"
                          for p in (root / "figshare" / "files").iterdir()})
        yield root, server, truth


def _point_to(mp, sources):
    root, server, _ = sources
    allow_loopback(mp)
    mp.setattr(bold_module, "SOURCE", Source(name="bold5000", clone_url=str(root / "no")))
    mp.setattr(repositories, "FIGSHARE_API", f"{server.url}/v2")
    mp.setattr(bold_module, "STIMULI_URL", (root / "dropbox" / "BOLD5000_Stimuli.zip").as_uri())
    mp.delenv("AFO_DATA_MIRROR", raising=False)


@pytest.fixture(scope="module")
def bold(sources, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("bold_data")
    with pytest.MonkeyPatch.context() as mp:
        _point_to(mp, sources)
        data = fetch_bold5000(subjects=[2], sessions=[1, 2], data_dir=data_dir,
                              url=str(sources[0] / "ds001499"), verbose=0)
    return data_dir, data


def _zscore(a):
    return (a - a.mean(0)) / a.std(0)


def test_betas_rois_and_trials_match_the_release(bold, sources):
    data_dir, data = bold
    truth = sources[2][2]
    rois = truth["rois"]
    keep = np.zeros(BOLD_GRID, bool)
    for name in SPM_NAMES[2]:
        keep |= rois[name] > 0
    expected = np.concatenate([_zscore(truth["betas"][s][keep].T) for s in (1, 2)])
    np.testing.assert_allclose(data.responses[0], expected, atol=1e-4)
    assert list(data.trials[0]["image"]) == truth["names"][: len(expected)]
    ijk = np.argwhere(keep)
    np.testing.assert_allclose(data.coords[0], ijk * 2.0)
    # CSI2's irregular file names (LO, RRSC) come back as LOC and RSC
    labels = data.rois[0]["roi"]
    assert any("RHRSC" in lab for lab in labels)
    assert any("LHLOC" in lab for lab in labels)
    assert not any("RRSC" in lab or lab.endswith("LO") for lab in labels)
    first = truth["names"][0]
    k = list(data.stimulus_ids).index(first.rsplit(".", 1)[0])
    assert Path(data.images[k]).read_bytes() == sources[2]["jpeg"][first]
    present = files_under(data_dir / "bold5000")
    assert "derivatives/release2/CSI2_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-02.nii.gz" in present
    assert not any("ses-03" in p or "CSI1" in p for p in present)
    assert data.noise_ceiling[0].shape == (int(keep.sum()),)
    assert 50 < np.median(data.noise_ceiling[0]) < 90
    assert set(data.splits["test"]) | set(data.splits["train"]) == set(data.stimulus_ids)
    assert "Chang" in data.citation


def test_brain_mask_and_averaged_images(sources, tmp_path, monkeypatch):
    _point_to(monkeypatch, sources)
    data = fetch_bold5000(subjects=1, sessions=1, mask="brain", average_repeats=True,
                          data_dir=tmp_path, url=str(sources[0] / "ds001499"), verbose=0)
    truth = sources[2][1]
    names = truth["names"][: truth["betas"][1].shape[-1]]
    assert len(data.trials[0]) == len(set(names))
    assert data.responses[0].shape[1] == int(truth["brain"].sum())
    first = data.trials[0]["image"][0]
    assert data.trials[0]["n_repeats"][0] == names.count(first)


def test_encoder_fits(bold):
    from afo_encoding import LinearProbeEncoder

    _, data = bold
    X, y, params = load_encoder_inputs(data, subject=2)
    probe = LinearProbeEncoder(n_components=4).fit(X[:100], y[:100], **params)
    assert probe.predict(X[:2]).shape == (2, y.shape[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subjects": [5]}, "subjects 1 to 4"),
        ({"subjects": [4], "sessions": [10]}, "CSI4 has sessions 1 to 9"),
        ({"mask": "visual"}, "mask must be 'rois' or 'brain'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fetch_bold5000(**kwargs)
