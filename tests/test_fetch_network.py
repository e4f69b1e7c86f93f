"""One small real file from each source, for anyone with internet: ``pytest -m network``.

Deselected by default (the rest of the suite never touches the network). They check that
the fetchers' addresses and layouts are still those of the real sources.
"""

import numpy as np
import pytest

from datasets_fetchers import cowley2023_v4, nsd
from datasets_fetchers._datalad import open_dataset

pytestmark = [pytest.mark.network, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(autouse=True)
def _no_mirror(monkeypatch):
    monkeypatch.delenv("AFO_DATA_MIRROR", raising=False)


def test_cowley2023_v4_readme_and_smallest_session(tmp_path):
    data = cowley2023_v4.fetch_cowley2023_v4("210305", repeats=False, data_dir=tmp_path,
                                             verbose=0)
    assert data.responses[0].shape == (400, 70)
    assert len(data.images) == 400
    readme = (tmp_path / "cowley2023_v4" / "data_V4_responses" / "readme.txt").read_text()
    assert "responses_raw" in readme


def test_nsd_roi_table_and_one_image_by_byte_ranges(tmp_path):
    dataset = open_dataset(nsd.SOURCE, data_dir=tmp_path, verbose=0)
    ctab, design = dataset.fetch([nsd._ctab_file(1, "prf-visualrois"), nsd.EXPDESIGN],
                                 verbose=0)
    assert nsd._read_ctab(ctab)[1] == "V1v"
    ids = nsd._trial_images(design, subject=1, session=1)
    assert ids.shape == (750,)
    assert ids.max() < 73000
    with nsd._open_stimuli(dataset) as stimuli:
        brick = stimuli["imgBrick"]
        assert brick.shape == (73000, 425, 425, 3)
        assert np.asarray(brick[int(ids[0])]).std() > 0


def test_things_meg_trial_table_from_openneuro(tmp_path):
    from datasets_fetchers import things_meg

    dataset = open_dataset(things_meg.SOURCE, data_dir=tmp_path, verbose=0)
    assert all(dataset.registered(p) for p in things_meg._epochs_files(1))
    import pandas as pd

    (csv,) = dataset.fetch([things_meg._attributes_file(1)], verbose=0)
    table = pd.read_csv(csv)
    assert {"trial_type", "session_nr", "run_nr", "image_path"} <= set(table.columns)
    assert set(table["trial_type"]) == {"exp", "test", "catch"}


def test_things_fmri_zip_members_by_ranges():
    import zipfile

    from datasets_fetchers import things_fmri
    from datasets_fetchers._archives import open_remote
    from datasets_fetchers._repositories import figshare_files

    url = figshare_files(things_fmri.BETAS_ARTICLE)[things_fmri.BETAS_ARCHIVE_NAME]
    with open_remote(url) as f, zipfile.ZipFile(f) as zf:
        names = zf.namelist()
    assert any(n.endswith("sub-01_ResponseData.h5") for n in names)
    assert any(n.endswith("sub-03_VoxelMetadata.csv") for n in names)
    with open_remote(things_fmri.BRAINMASKS_URL) as f, zipfile.ZipFile(f) as zf:
        assert any(n.endswith("sub-01_space-T1w_brainmask.nii.gz") for n in zf.namelist())


def test_things_images_terms_and_archive(tmp_path):
    import zipfile

    from datasets_fetchers import _things_images
    from datasets_fetchers._archives import open_remote

    dataset = open_dataset(_things_images.SOURCE, data_dir=tmp_path, verbose=0)
    (terms,) = dataset.fetch([_things_images.TERMS], urls={
        _things_images.TERMS: _things_images.TERMS_URL}, verbose=0)
    with open_remote(_things_images.ARCHIVE_URL) as f, zipfile.ZipFile(f) as zf:
        assert any(n.startswith("object_images/aardvark/") for n in zf.namelist())
        password = _things_images._password_finder(terms.read_text())(zf)
    assert password


def test_things_eeg2_metadata_and_subjects_on_osf(tmp_path):
    from datasets_fetchers import things_eeg2
    from datasets_fetchers._formats import load_pickled_npy
    from datasets_fetchers._repositories import osf_files

    assert {f"sub-{s:02d}.zip" for s in range(1, 11)} <= set(osf_files("anp5v"))
    dataset = open_dataset(things_eeg2.SOURCE, data_dir=tmp_path, verbose=0)
    (path,) = dataset.fetch(["image_set/image_metadata.npy"], urls=things_eeg2.URLS,
                            verbose=0)
    with open(path, "rb") as f:
        metadata = load_pickled_npy(f)
    assert len(metadata["train_img_files"]) == 16540
    assert len(metadata["test_img_files"]) == 200


def test_bold5000_release2_names_on_figshare(tmp_path):
    from datasets_fetchers import bold5000
    from datasets_fetchers._repositories import figshare_files

    files = figshare_files(bold5000.RELEASE2_ARTICLE)
    assert {bold5000._betas_name(1, 1), "CSI1_brainmask.nii.gz", "CSI1_imgnames.txt"} <= set(files)
    dataset = open_dataset(bold5000.SOURCE, data_dir=tmp_path, verbose=0)
    bold5000._fetch_release2(dataset, ["CSI1_imgnames.txt"], True, 0)
    names = (dataset.path / bold5000.RELEASE2 / "CSI1_imgnames.txt").read_text().split()
    assert len(names) == sum(bold5000.RUNS[1]) * bold5000.TRIALS_PER_RUN
    assert all(dataset.registered(bold5000._roi_file(1, h, r)) for h in ("LH", "RH")
               for r in bold5000.ROIS)


def test_nod_labels_of_one_run(tmp_path):
    import pandas as pd

    from datasets_fetchers import nod

    dataset = open_dataset(nod.SOURCE, data_dir=tmp_path, verbose=0)
    files = nod._run_files(10, "imagenet01", 1)
    label, events = dataset.fetch([files["label"], files["events"]], verbose=0)
    images = nod.run_images([], label.read_text(), pd.read_csv(events, sep="\t"), 100)
    assert len(images) == 100
    assert images[0].endswith(".JPEG")
    assert dataset.registered(f"stimuli/imagenet/{images[0].split('_')[0]}/{images[0]}")
    mmp = dataset.fetch(list(nod.MMP_FILES.values()), urls=nod.MMP_URLS, verbose=0)
    assert all(p.stat().st_size > 0 for p in mmp)
