"""benchmarks/gpu_check.py: its smoke mode on the CPU prints the whole table, and a section
that fails leaves the others' rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failing_section_leaves_the_table(gpu_check, monkeypatch, capsys):
    def broken(device, sizes):
        raise RuntimeError("CUDA error: out of memory")

    def fine(device, sizes):
        return [("fine", f"on {device}", "1.0 s", "x1.00 vs peer")]

    monkeypatch.setattr(gpu_check, "SECTIONS", {"broken": broken, "fine": fine})
    gpu_check.main(["--device", "cpu", "--quick"])
    table = capsys.readouterr().out.splitlines()
    (failed,) = [line for line in table if line.startswith("broken")]
    assert "FAILED" in failed
    assert "CUDA error: out of memory" in failed
    assert any(line.startswith("fine") and "on cpu" in line for line in table)


@pytest.mark.slow  # ~45 s on 2 cores: every section at tiny sizes
def test_quick_mode_on_the_cpu_fills_every_section(gpu_check, capsys):
    gpu_check.main(["--device", "cpu", "--quick"])
    table = capsys.readouterr().out
    assert "FAILED" not in table, table
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("section"))
    rows = lines[header + 2 :]
    assert {row.split()[0] for row in rows} == set(gpu_check.SECTIONS), table
