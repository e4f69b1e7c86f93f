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
