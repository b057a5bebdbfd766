"The project's own plumbing: notebooks and library agree, the version is defined once."
import configparser, shutil, subprocess, sys
from pathlib import Path
import workbench
from conftest import ROOT


def test_export_leaves_no_diff(tmp_path):
    # Export a copy of the notebooks and compare with the committed library, file by file.
    for name in ("nbs", "workbench"): shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "settings.ini"): shutil.copy(ROOT / name, tmp_path / name)
    exe = Path(sys.executable).with_name("nbdev-export")
    subprocess.run([str(exe)], cwd=tmp_path, check=True, capture_output=True)
    ours = {p.relative_to(ROOT): p.read_text() for p in (ROOT / "workbench").rglob("*.py") if "__pycache__" not in p.parts}
    fresh = {p.relative_to(tmp_path): p.read_text() for p in (tmp_path / "workbench").rglob("*.py") if "__pycache__" not in p.parts}
    assert ours.keys() == fresh.keys()
    stale = [str(k) for k in ours if ours[k] != fresh[k]]
    assert not stale, f"workbench/ differs from `nbdev-export` for {stale}: edit nbs/ and export"


def test_version_defined_once():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    assert workbench.__version__ == cfg["DEFAULT"]["version"]


def test_torch_pinned_exactly():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    assert "torch==2.13.0" in cfg["DEFAULT"]["requirements"].split()
