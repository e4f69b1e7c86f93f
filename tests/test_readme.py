"""The README's example runs as written (a user's first contact with the API)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README should hold exactly one Python example"
    monkeypatch.chdir(tmp_path)  # it saves a model to the working directory
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    printed = capsys.readouterr().out.split("\n")
    # a short fit already predicts held-out images of the planted brain above chance (the
    # mean r of 300 noise voxels over 50 images has a spread of about 0.01)
    assert float(printed[0]) > 0.05
    # the linear probe's cross-validated mean r, well above chance in every fold
    cv_scores = [float(v) for v in printed[1].strip("[]").split()]
    assert len(cv_scores) == 5
    assert min(cv_scores) > 0.2
    # the saved model came back from disk
    assert (tmp_path / "my_encoder.safetensors").exists()  # the extension added
    assert namespace["encoder"].retina_map_.shape == (300, 2)
