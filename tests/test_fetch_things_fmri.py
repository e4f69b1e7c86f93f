"""fetch_things_fmri on local stand-ins of OpenNeuro ds004192 (a DataLad dataset) and of
the Figshare+ files (the table-format zip read by HTTP ranges from a local server), and
the mixed-modality fit: one TopyEncoder on a THINGS-fMRI and a THINGS-MEG subject."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standins import RangeServer, allow_loopback, files_under, unused_port
from standins_things import (
    FIGSHARE_BETAS,
    FIGSHARE_MASKS,
    FMRI_TEST,
    FMRI_TRAIN,
    figshare_listing,
    make_things_fmri,
    write_pandas_frame,
)

from datasets_fetchers import (
    TermsNotAcceptedError,
    fetch_things_fmri,
    fetch_things_meg,
    load_encoder_inputs,
)
from datasets_fetchers import _repositories as repositories
from datasets_fetchers import things_fmri as fmri_module
from datasets_fetchers import things_meg as meg_module
from datasets_fetchers._datalad import Source
from datasets_fetchers._formats import PandasFrameBlocks

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    openneuro = tmp_path_factory.mktemp("ds004192") / "ds004192"
    figshare = tmp_path_factory.mktemp("figshare")
    truth = make_things_fmri(openneuro, figshare)
    with RangeServer(figshare) as server:
        figshare_listing(figshare, fmri_module.BETAS_ARTICLE,
                         {"betas_csv.zip": f"{server.url}/{FIGSHARE_BETAS}"})
        yield openneuro, server, truth


def _point_to_standins(mp, server, things_osf) -> None:
    from datasets_fetchers import _archives, _things_images

    allow_loopback(mp)
    mp.setattr(_archives, "ARCHIVE_BUFFER", 1 << 20)  # the stand-in zip is small
    mp.setattr(fmri_module, "SOURCE", Source(
        name="things_fmri", clone_url=f"http://127.0.0.1:{unused_port()}/closed"))
    mp.setattr(repositories, "FIGSHARE_API", f"{server.url}/v2")
    mp.setattr(fmri_module, "BRAINMASKS_URL", f"{server.url}/{FIGSHARE_MASKS}")
    mp.setattr(_things_images, "ARCHIVE_URL", (things_osf[0] / "images_THINGS.zip").as_uri())
    mp.setattr(_things_images, "TERMS_URL", (things_osf[0] / "password_images.txt").as_uri())
    mp.delenv("AFO_DATA_MIRROR", raising=False)


@pytest.fixture
def _here(monkeypatch, sources, tmp_path, things_osf):
    _point_to_standins(monkeypatch, sources[1], things_osf)
    monkeypatch.setenv("AFO_DATA", str(tmp_path / "default_data_dir"))


@pytest.fixture(scope="module")
def fmri(sources, tmp_path_factory, things_osf):
    openneuro, server, _ = sources
    data_dir = tmp_path_factory.mktemp("fmri_data")
    n_requests = len(server.requests)
    with pytest.MonkeyPatch.context() as mp:
        _point_to_standins(mp, server, things_osf)
        data = fetch_things_fmri(subjects=[1], accept_terms=True, data_dir=data_dir,
                                 url=str(openneuro), verbose=0)
    return data_dir, data, server.requests[n_requests:]


def _visual(voxels):
    columns = [c for c in voxels.columns if c in fmri_module.ROI_GROUPS["prf"]
               + fmri_module.ROI_GROUPS["category"] + ("IT",)]
    return voxels[columns].to_numpy(bool).any(1)


def _zscore_by_session(values, sessions):
    out = np.empty_like(values)
    for s in np.unique(sessions):
        block = values[:, sessions == s]
        out[:, sessions == s] = (block - block.mean(1, keepdims=True)) / block.std(1,
                                                                               keepdims=True)
    return out


@pytest.mark.usefixtures("_here")
def test_terms_must_be_accepted_before_anything_is_downloaded(sources, tmp_path):
    with pytest.raises(TermsNotAcceptedError, match="osf.io/jum2f"):
        fetch_things_fmri(subjects=[1], data_dir=tmp_path, url=str(sources[0]))
    assert not any(tmp_path.iterdir())


def test_betas_voxels_and_trials_match_the_tables(fmri, sources):
    _, data, _ = fmri
    truth = sources[2][1]
    keep = _visual(truth["voxels"])
    expected = _zscore_by_session(truth["values"][keep], truth["stimuli"]["session"].to_numpy())
    np.testing.assert_allclose(data.responses[0], expected.T, atol=1e-4)
    assert list(data.image_ids[0]) == [s[:-4] for s in truth["stimuli"]["stimulus"]]
    ijk = truth["voxels"].loc[keep, ["voxel_x", "voxel_y", "voxel_z"]].to_numpy()
    affine = sources[2]["affine"]
    np.testing.assert_allclose(data.coords[0], ijk @ affine[:3, :3].T + affine[:3, 3])
    img = data.maskers[0].inverse_transform(data.responses[0][:1])
    assert img.shape[:3] == truth["brain"].shape
    np.testing.assert_allclose(np.asarray(img.dataobj)[tuple(ijk.T)][:, 0],
                               data.responses[0][0], atol=1e-6)
    # labels per voxel, and the authors' single-trial noise ceiling
    voxels = truth["voxels"].loc[keep].reset_index(drop=True)
    expected_v1 = np.where(voxels["V1"] == 1)[0]
    assert all("V1" in data.rois[0]["prf"][k].split("+") for k in expected_v1)
    np.testing.assert_allclose(data.noise_ceiling[0], voxels["nc_singletrial"], rtol=1e-6)
    assert set(data.splits["test"]) == {n[:-4] for n in FMRI_TEST}
    assert set(data.splits["train"]) == {n[:-4] for n in FMRI_TRAIN}
    assert "Hebart" in data.citation
    assert "THINGS-fMRI" in data.description


def test_only_the_subjects_tables_are_read_from_the_zip_by_ranges(fmri, sources):
    data_dir, data, requests = fmri
    present = files_under(data_dir / "things_fmri")
    assert {f"derivatives/betas_csv/sub-01_{k}" for k in
            ("ResponseData.h5", "StimulusMetadata.csv", "VoxelMetadata.csv")} <= present
    assert "derivatives/brainmasks/sub-01_space-T1w_brainmask.nii.gz" in present
    assert not any("sub-02" in p for p in present if p.startswith("derivatives"))
    assert "derivatives/betas_csv.zip" not in present  # never downloaded whole
    ranges = [r for path, r in requests if path.endswith(FIGSHARE_BETAS)]
    assert ranges
    assert all(r and r.startswith("bytes=") for r in ranges)
    read = sum(int(r.split("-")[1]) - int(r.split("=")[1].split("-")[0]) + 1
               for r in ranges if r.split("-")[1])
    zip_size = (Path(sources[1].root) / FIGSHARE_BETAS).stat().st_size
    # the other subjects' 4 MB of tables were skipped (reads are buffered by 1 MB)
    assert read < zip_size - (3 << 20)


@pytest.mark.usefixtures("_here")
def test_average_repeats_of_the_sessions_fetched(sources, tmp_path):
    openneuro, _, truth = sources
    data = fetch_things_fmri(subjects=2, sessions=[1, 2], rois=["V1", "lFFA"],
                             average_repeats=True, accept_terms=True, data_dir=tmp_path,
                             url=str(openneuro), verbose=0)
    table = data.trials[0]
    assert table.set_index("stimulus").loc[FMRI_TEST[0], "n_repeats"] == 2
    assert len(table) == len(set(table["stimulus"]))
    voxels = truth[2]["voxels"]
    assert data.responses[0].shape[1] == int(((voxels["V1"] + voxels["lFFA"]) > 0).sum())
    nc1 = voxels.loc[(voxels["V1"] + voxels["lFFA"]) > 0, "nc_singletrial"].to_numpy()
    assert np.all(data.noise_ceiling[0] >= nc1 - 1e-9)


@pytest.mark.usefixtures("_here")
def test_a_filled_data_dir_serves_another_machine(fmri, sources, tmp_path, monkeypatch):
    mirror, first, _ = fmri
    monkeypatch.setenv("AFO_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(repositories, "FIGSHARE_API", f"http://127.0.0.1:{unused_port()}")
    data = fetch_things_fmri(subjects=[1], accept_terms=True, data_dir=tmp_path, verbose=0)
    np.testing.assert_array_equal(data.responses[0], first.responses[0])


@pytest.mark.usefixtures("_here")
def test_unknown_rois_and_subjects_are_named(sources):
    with pytest.raises(ValueError, match="subjects 1 to 3"):
        fetch_things_fmri(subjects=[4], accept_terms=True)
    with pytest.raises(ValueError, match="sessions 1 to 12"):
        fetch_things_fmri(sessions=[13], accept_terms=True)
    assert fmri_module._roi_columns(["prf", "glasser-V1"], ["glasser-V1", "V1"])[:2] == \
        ["V1", "V2"]
    with pytest.raises(ValueError, match="Unknown ROI 'V9'"):
        fmri_module._roi_columns("V9", ["V1"])


def test_noise_ceilings_carry_to_averages_as_the_authors_computed_them():
    """nc_singletrial and nc_testset (12 repeats) of two voxels of sub-01's VoxelMetadata,
    as printed in ViCCo-Group/THINGS-data's fmri_usage.ipynb."""
    from datasets_fetchers._utils import scale_noise_ceiling

    np.testing.assert_allclose(scale_noise_ceiling([1.102513, 2.134454], 12),
                               [11.799193, 20.743164], rtol=5e-3)


@pytest.mark.filterwarnings("ignore:\\s*your performance may suffer")
def test_pandas_written_tables_read_the_same(tmp_path):
    pytest.importorskip("tables")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(7, 5)).astype(np.float32))
    frame.insert(0, "voxel_id", np.arange(7))
    frame.to_hdf(tmp_path / "real.h5", key="ResponseData")
    write_pandas_frame(tmp_path / "standin.h5", "ResponseData", np.arange(7),
                       frame.drop(columns="voxel_id").to_numpy())
    for name in ("real.h5", "standin.h5"):
        with PandasFrameBlocks(tmp_path / name) as blocks:
            values = np.empty((3, 5), np.float32)
            for pos, rows in blocks.iter_rows(blocks.float_block(), np.array([5, 0, 2])):
                values[pos] = rows
            np.testing.assert_array_equal(values, frame.iloc[[5, 0, 2], 1:].to_numpy())
            assert list(blocks.find_column("voxel_id")) == list(range(7))


@pytest.mark.usefixtures("_here")
def test_one_encoder_on_an_fmri_and_a_meg_subject(fmri, ds004212, tmp_path, monkeypatch):
    """The paper's mixed-modality training: fMRI voxels and MEG (sensor, time) columns
    read out of the same backbone by one TopyEncoder."""
    from afo_encoding import TopyEncoder

    _, fmri_data, _ = fmri
    monkeypatch.setattr(meg_module, "SOURCE", Source(name="things_meg", clone_url="/nowhere"))
    meg_data = fetch_things_meg(subjects=[1], trial_types="test", accept_terms=True,
                                data_dir=tmp_path, url=str(ds004212[0]), verbose=0)
    X_f, y_f, p_f = load_encoder_inputs(fmri_data, subject=1)
    X_m, y_m, _ = load_encoder_inputs(meg_data, subject=1)
    y_m = y_m.load_data()
    encoder = TopyEncoder(d_model=8, max_epochs=2, batch_size=16, random_state=0,
                          backbone_params={"image_size": 16, "n_scales": 2})
    encoder.fit([X_f[:24], X_m[:24]], [y_f[:24], y_m[:24]], coords=[p_f["coords"], None])
    predictions = encoder.predict(X_m[:2], subject=1)
    assert np.asarray(predictions).shape[0] == 2
