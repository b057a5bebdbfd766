"""Bad and hostile input, as a table that keeps growing: every case exits 2 with one `error:` line on stderr, no
traceback, nothing on stdout but one JSON object `{"error": …}` (with --json), and no file written."""
import json, os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
import pytest
from conftest import POLICY, TEXT_LM, assert_clean_error, run_cli


@dataclass
class Case:
    name: str
    args: Callable[[Path], list]     # tmp folder -> command line (the folder holds the case's files)
    needles: tuple = ()              # what the error line must say


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def corrupted_checkpoint(d: Path) -> Path:
    out = d / "run"
    write(out / "checkpoint" / "state.json", '{"step": 3}')
    write(out / "checkpoint" / "model.safetensors", b"\x00" * 64)
    write(out / "checkpoint" / "optimizer.safetensors", b"\x00" * 64)
    return out


CASES = [
    # files that are not what they claim
    Case("task file not UTF-8", lambda d: ["eval", POLICY, "--task-file", write(d / "p.jsonl", b'{"numbers": [1, 2], "target": 3}\n\xff\xfe\n')],
         ("not UTF-8",)),
    Case("task file is a directory", lambda d: ["eval", POLICY, "--task-file", d], ("is a directory",)),
    Case("corpus not UTF-8", lambda d: ["ppl", TEXT_LM, "--corpus", write(d / "c" / "heldout.txt", b"\xff\xfe abc").parent], ("not UTF-8",)),
    Case("10,000-number task line is not echoed whole",
         lambda d: ["eval", POLICY, "--task-file", write(d / "p.jsonl", json.dumps({"numbers": list(range(1, 10_001)), "target": 5}) + "\n")],
         ("numbers must be", "...")),
    Case("corrupted training checkpoint", lambda d: ["train", "policy", "--out", corrupted_checkpoint(d), "--steps", "2"],
         ("cannot be resumed",)),
    # sizes and conventions checked before any work
    Case("ppl context longer than the model's positions", lambda d: ["ppl", TEXT_LM, "--context", "2048"], ("2048", "256 positions")),
    Case("ppl stride 0", lambda d: ["ppl", TEXT_LM, "--context", "16", "--stride", "0"], ("stride must be in 1..context",)),
    Case("ppl context 0 blames the context", lambda d: ["ppl", TEXT_LM, "--context", "0"], ("context must be ≥ 2",)),
    Case("eval prompt longer than the model's positions",
         lambda d: ["eval", POLICY, "--task", "chain", "--task-file", write(d / "c.jsonl", json.dumps({"start": 1, "ops": ["+1"] * 10_000}) + "\n"),
                    "--n", "1", "--k", "1"], ("longer than the model's 256 positions",)),
    Case("search width 10^9 (a pool that cannot fit)", lambda d: ["search", "best-of-n", "--width", "1000000000", "--n", "2"], ("GiB is free",)),
    Case("search capacity 10^12 tokens", lambda d: ["search", "best-of-n", "--capacity-tokens", "1000000000000", "--n", "2"], ("GiB is free",)),
    Case("search temperature -1 (before loading)", lambda d: ["search", "beam", "--temperature", "-1", "--n", "2"], ("temperature must be ≥ 0",)),
    Case("search chunk 0 (before loading)", lambda d: ["search", "beam", "--chunk", "0", "--n", "2"], ("chunk", "must be ≥ 1")),
    Case("beam expand 0", lambda d: ["search", "beam", "--expand", "0", "--n", "2"], ("expand must be ≥ 1",)),
    Case("bench search --n 0 is not turned into 16", lambda d: ["bench", "search", "--quick", "--n", "0"], ("--n must be ≥ 1",)),
    Case("lab on port 70000", lambda d: ["lab", "--port", "70000", "--no-browser"], ("65535",)),
    # output folders that cannot be written are refused before the work
    Case("train into an unwritable folder", lambda d: ["train", "policy", "--out", "/proc/workbench-out", "--steps", "2"], ("cannot be written",)),
    Case("train into a path under a file", lambda d: ["train", "text", "--out", write(d / "f", "") / "out", "--steps", "2"], ("is a file",)),
    Case("report into an unwritable folder", lambda d: ["report", "search_scaling", "--quick", "--out", "/proc/workbench-out"], ("cannot be written",)),
]


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_size for p in d.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_cleanly(case, tmp_path):
    args = [str(a) for a in case.args(tmp_path)]
    before = snapshot(tmp_path)
    json_flag = [] if args[0] == "lab" else ["--json"]       # lab prints no result, so it takes no --json
    rc, out, err = run_cli(*args, *json_flag, cwd=tmp_path)
    assert_clean_error(rc, out, err, *case.needles)
    assert bool(out.strip()) == bool(json_flag), "--json: the error is also one JSON object on stdout"
    assert snapshot(tmp_path) == before, "the refused command wrote files"
    assert not os.path.exists("/proc/workbench-out")
