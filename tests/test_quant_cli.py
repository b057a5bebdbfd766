"`workbench quantize` and `workbench bench quant` end to end."
import hashlib, json
import pytest
from conftest import POLICY, TEXT_LM, run_cli


def digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_quantize_awq_writes_a_loadable_packed_model(tmp_path):
    out, plain = tmp_path / "q", tmp_path / "plain"
    rc, so, se = run_cli("quantize", TEXT_LM, "--method", "awq", "--bits", "4", "--group-size", "128", "--calib", "4",
                         "--out", out, "--dequantized", plain, "--json")
    assert rc == 0, se
    res = json.loads(so)                                    # exactly one JSON object
    assert res["layers"] == 28 and res["stored_bytes_per_param"] <= 0.54 and res["config"]["method"] == "awq"
    assert {"model.safetensors", "quant_config.json", "config.json"} <= {p.name for p in out.iterdir()}
    from workbench.models import load
    assert load(out, device="cpu").model is not None
    rc, so, se = run_cli("ppl", plain, "--json")            # the dequantized export is a plain HF directory
    assert rc == 0, se and json.loads(so)["ppl"] < 60


@pytest.mark.parametrize("args,msg", [
    (["--method", "magic"], "unknown quantization method"),
    (["--bits", "9"], "unsupported bits 9"),
    (["--group-size", "96"], "does not divide"),
    (["--method", "gptq", "--calib", "1", "--calib-len", "64"], "calibration data too short"),
    (["--method", "awq", "--calib", "0"], "needs calibration data"),
    (["--format", "fp8_e4m3", "--bits", "4"], "has 8 bits"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, args, msg):
    before = digest(TEXT_LM)
    rc, so, se = run_cli("quantize", TEXT_LM, "--out", tmp_path / "q", *args)
    assert rc == 2 and len(se.strip().splitlines()) == 1 and se.startswith("error: ") and msg in se, se
    assert so == "" or json.loads(so) == {"error": se.strip()[len("error: "):]}, so     # --json: the error as JSON too
    assert not (tmp_path / "q").exists() and digest(TEXT_LM) == before


def test_policy_needs_a_dividing_group(tmp_path):
    rc, _, se = run_cli("quantize", POLICY, "--out", tmp_path / "q")
    assert rc == 2 and "input width 160" in se
    rc, so, se = run_cli("quantize", POLICY, "--group-size", "32", "--out", tmp_path / "q", "--json")
    assert rc == 0, se and json.loads(so)["layers"] == 28


def test_out_must_be_new(tmp_path):
    (tmp_path / "q").mkdir(); (tmp_path / "q" / "x").write_text("keep")
    rc, _, se = run_cli("quantize", TEXT_LM, "--out", tmp_path / "q")
    assert rc == 2 and "not empty" in se and (tmp_path / "q" / "x").read_text() == "keep"


@pytest.mark.slow
@pytest.mark.bench
def test_bench_quant_quick_json():
    rc, so, se = run_cli("bench", "quant", "--quick", "--json")
    assert rc == 0, se
    res = json.loads(so)
    by = {r["method"]: r for r in res["rows"]}
    for m in ("float", "rtn W4 g128", "awq W4 g128", "gptq W4 g128", "rtn W8 per-channel", "quanto int4 g128", "hqq W4 g128"):
        assert m in by
    for m in ("rtn W4 g128", "awq W4 g128", "gptq W4 g128"):
        r = by[m]
        assert r["ppl_ci"][0] <= r["ppl"] <= r["ppl_ci"][1] and r["kl_ci"][0] <= r["kl"] <= r["kl_ci"][1] and 0 < r["top1"] < 1
        assert r["stored_bytes_per_param"] <= 0.54
    assert by["rtn W8 per-channel"]["kl"] < by["rtn W4 g128"]["kl"]              # KL orders the bit widths
    assert res["baseline_ppl"] == by["float"]["ppl"] and res["targets"]["int8 KL interval below 0.01 nats"]["met"]
    # the wall time is reported by the benchmark, not asserted: timings under a loaded test run mean little
