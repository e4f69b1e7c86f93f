"""The demo behind ``afo-encoding demo`` (a smoke run: two epochs)."""

import json
from pathlib import Path

import numpy as np
import pytest

from afo_encoding.demo import run_demo


@pytest.mark.slow
def test_demo_prints_the_table_and_writes_the_scores(tmp_path, capsys):
    summary = run_demo("fmri", out_dir=tmp_path, verbose=False, device="cpu", max_epochs=2)
    out = capsys.readouterr().out
    assert "noise ceiling" in out
    assert "linear probe r" in out
    for area in ("early", "mid", "late", "all"):
        assert f"\n{area} " in out
    assert [row["area"] for row in summary["areas"]] == ["early", "mid", "late", "all"]
    assert summary["epochs"] == 2
    assert all(0 < row["noise_ceiling"] <= 1 for row in summary["areas"])
    # the baseline on the same backbone predicts held-out images of every area
    assert all(row["r_linear_probe"] > 0.1 for row in summary["areas"])
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["areas"] == summary["areas"]
    lines = (tmp_path / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("column,area,r,r_linear_probe,noise_ceiling")
    assert len(lines) == 1 + summary["areas"][-1]["voxels"]
    import nibabel as nib

    img = nib.load(tmp_path / "test_r.nii.gz")
    assert np.isfinite(img.get_fdata()).any()
    # the figures of plot_encoder_report, for the model the demo fitted
    assert {"retina_map", "layer_selector", "scores", "retrieval"} <= set(summary["figures"])
    for path in map(Path, summary["figures"].values()):
        assert path.parent == tmp_path / "figures"
        assert path.stat().st_size > 1000


def test_demo_refuses_an_unknown_modality(tmp_path):
    with pytest.raises(ValueError, match="modality"):
        run_demo("ecog", out_dir=tmp_path)
