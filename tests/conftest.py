import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
POLICY = DATA / "models" / "countdown-policy"
TEXT_LM = DATA / "models" / "text-lm"
WORKBENCH = str(Path(sys.executable).with_name("workbench"))


def run_cli(*args, cwd=None, timeout=600, stdin=None):
    "Run the `workbench` CLI (with `stdin` as its input, if given); return (returncode, stdout, stderr)."
    p = subprocess.run([WORKBENCH, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, input=stdin)
    return p.returncode, p.stdout, p.stderr


def assert_clean_error(rc, out, err, *needles):
    "Refused as promised: exit 2, one `error:` line naming `needles`, no traceback; stdout empty or {'error': that message}."
    import json
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert len(lines[0]) < 2000, f"an error line of {len(lines[0])} characters"   # a list of what is allowed, never a 30 KB echo
    for n in needles: assert n in lines[0], (n, lines[0])
    if out.strip(): assert json.loads(out) == {"error": lines[0][len("error: "):]}, out


def need_chromium():
    "Skip a browser test without Debian's Chromium, or fail when the run must be complete (`make test` sets WORKBENCH_REQUIRE_BROWSER=1)."
    from workbench.browser import CHROMIUM
    if Path(CHROMIUM).exists(): return
    msg = f"needs Debian's Chromium at {CHROMIUM}: apt-get install chromium chromium-driver (make test installs it)"
    if os.environ.get("WORKBENCH_REQUIRE_BROWSER") == "1": pytest.fail(msg)
    pytest.skip(msg)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "bench: runs a whole `workbench bench … --quick` end to end (make test-bench)")


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for it in items:
        if "cuda" in it.keywords: it.add_marker(skip)
