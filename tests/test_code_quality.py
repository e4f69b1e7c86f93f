"""The code base stays ruff clean under the configuration in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ruff from the test extra sits next to this interpreter even when the venv is not activated
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is part of the test extra: pip install '.[test]'")
def test_ruff_is_clean():
    result = subprocess.run(
        [RUFF, "check", "--no-cache", "afo_encoding", "datasets_fetchers", "tests",
         "benchmarks", "examples", "doc/conf.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
