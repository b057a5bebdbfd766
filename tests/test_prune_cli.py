"`workbench prune` and `workbench bench prune` end to end: output, reload, bad input (one line, exit 2, nothing written)."
import hashlib, json
import pytest
from conftest import POLICY, TEXT_LM, run_cli


def _digest(d): return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(d.glob("*")) if p.is_file())).hexdigest()


def test_prune_wanda_2_4_json(tmp_path):
    out = tmp_path / "tl24"
    before = _digest(TEXT_LM)
    rc, so, se = run_cli("prune", TEXT_LM, "--method", "wanda", "--sparsity", "0.5", "--pattern", "2:4", "--out", out,
                         "--calib-windows", "8", "--json")
    assert rc == 0, se
    res = json.loads(so)
    assert res["sparsity"] == 0.5 and res["two_four_bytes"] < res["dense_bytes"] and "saves no dense memory" in res["note"]
    assert all(abs(l["sparsity"] - 0.5) < 1e-9 for l in res["layers"])
    assert _digest(TEXT_LM) == before
    rc, so, se = run_cli("ppl", out, "--json")
    assert rc == 0, se and json.loads(so)["ppl"] > 0


def test_prune_structured_reloads(tmp_path):
    out = tmp_path / "pol-ch"
    rc, so, se = run_cli("prune", POLICY, "--method", "magnitude", "--sparsity", "0.5", "--pattern", "channels", "--out", out, "--json")
    assert rc == 0, se
    res = json.loads(so); assert res["params_after"] < res["params_before"]
    rc, so, se = run_cli("eval", out, "--n", "5", "--k", "1", "--json")
    assert rc == 0, se


@pytest.mark.parametrize("args,msg", [
    (["--method", "wanda", "--sparsity", "1.0"], "sparsity must be in [0, 1)"),
    (["--method", "wanda", "--sparsity", "-0.2"], "sparsity must be in [0, 1)"),
    (["--method", "obs", "--sparsity", "0.5"], "unknown pruning method"),
    (["--method", "magnitude", "--pattern", "3:256"], "multiple of 256"),
    (["--method", "magnitude", "--sparsity", "0.9", "--pattern", "heads"], "remove all 4 heads"),
    (["--method", "magnitude", "--pattern", "2:4", "--sparsity", "0.3"], "fixes the sparsity"),
])
def test_bad_input_one_line_exit_2(tmp_path, args, msg):
    out = tmp_path / "out"
    before = _digest(TEXT_LM)
    rc, so, se = run_cli("prune", TEXT_LM, *args, "--out", out, "--json")
    lines = se.strip().splitlines()
    assert rc == 2 and (so == "" or json.loads(so) == {"error": lines[0][len("error: "):]}), (rc, so, se)   # --json: the error as JSON too
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], se
    assert not out.exists() and _digest(TEXT_LM) == before


@pytest.mark.slow
@pytest.mark.bench
def test_bench_prune_quick_json():
    rc, so, se = run_cli("bench", "prune", "--quick", "--json", timeout=1200)
    assert rc == 0, se[-2000:]
    res = json.loads(so)
    assert res["quick"] and res["rows"] and res["lottery_rows"] and isinstance(res["targets"], dict)
    assert all(isinstance(v, bool) for v in res["targets"].values())
    # its wall time is reported in res["seconds"], not asserted: timings under a loaded test run mean little
