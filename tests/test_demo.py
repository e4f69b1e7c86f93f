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
    assert "TopyEncoder r" in out
    assert "linear probe r" in out
    # the table in words, from the same numbers
    assert summary["in_words"] in out
    assert "the linear probe in early" in summary["in_words"]
    assert "Fit:" in summary["in_words"]
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


def test_the_table_in_words_names_wins_ties_and_losses():
    from afo_encoding.demo import _in_words

    rows = [
        {"area": "early", "r": 0.70, "r_linear_probe": 0.64},
        {"area": "mid", "r": 0.60, "r_linear_probe": 0.58},
        {"area": "late", "r": 0.377, "r_linear_probe": 0.378},
        {"area": "odd", "r": 0.30, "r_linear_probe": 0.35},
        {"area": "all", "r": 0.6, "r_linear_probe": 0.5},
    ]
    text = _in_words(rows, {"fit": 9.0, "fit_linear_probe": 0.9})
    assert text.startswith("TopyEncoder beats the linear probe in early +0.060, mid +0.020; "
                           "it ties with the linear probe in late -0.001; it loses to the "
                           "linear probe in odd -0.050")
    assert "(10x)" in text


def test_demo_refuses_an_unknown_modality(tmp_path):
    with pytest.raises(ValueError, match="modality"):
        run_demo("ecog", out_dir=tmp_path)
