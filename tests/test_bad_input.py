"""Bad and hostile input, as a table that keeps growing: every case exits 2 with one `error:` line on stderr, no
traceback, nothing on stdout but one JSON object `{"error": …}` (with --json), and no file written."""
import json, os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
import pytest
from conftest import DATA, POLICY, TEXT_LM, assert_clean_error, run_cli

PRM = DATA / "models" / "countdown-prm"


@dataclass
class Case:
    name: str
    args: Callable[[Path], list]     # tmp folder -> command line (the folder holds the case's files)
    needles: tuple = ()              # what the error line must say


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def model_copy(d: Path, src: Path = POLICY, name: str = "m", config=None, weights=None) -> Path:
    "A copy of a shipped model folder, its config.json updated with `config`, its weights mapped by `weights`."
    import shutil
    from safetensors.torch import load_file, save_file
    out = d / name
    shutil.copytree(src, out)
    if config:
        cfg = json.loads((out / "config.json").read_text()); cfg.update(config)
        (out / "config.json").write_text(json.dumps(cfg))
    if weights:
        w = weights(load_file(out / "model.safetensors"))
        save_file(w, out / "model.safetensors", metadata={"format": "pt"})
    return out


def evil(d: Path, src: Path = POLICY) -> Path:
    "A model folder that asks transformers to run its own code; the code would leave a mark."
    out = model_copy(d, src, "evil", {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil",
                                                                        "AutoModelForTokenClassification": "evil.Evil"}})
    write(out / "evil.py", f"open({str(d / 'PWNED')!r}, 'w').write('ran')\n")
    return out


def packed(d: Path) -> Path:
    "A packed quantized folder whose weights file is cut short."
    rc, out, err = run_cli("quantize", TEXT_LM, "--out", d / "q", "--method", "rtn", "--bits", "4", "--group-size", "32")
    assert rc == 0, err
    f = d / "q" / "model.safetensors"; f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return d / "q"


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
    # model folders that are not what they claim, or ask to run code
    Case("model folder with its own code (eval)", lambda d: ["eval", evil(d), "--n", "2", "--k", "1"], ("asks to run its own code",)),
    Case("learned PRM folder with its own code", lambda d: ["search", "beam", "--n", "2", "--prm", "learned", "--prm-path", evil(d, PRM)],
         ("asks to run its own code",)),
    Case("a reward model given as the policy", lambda d: ["search", "rebase", "--n", "2", "--policy", PRM], ("not a causal language model",)),
    Case("config.json that does not match the weights", lambda d: ["eval", model_copy(d, config={"hidden_size": 192, "num_hidden_layers": 6}),
                                                                   "--n", "2", "--k", "1"], ("do not match config.json", "shapes differ")),
    Case("a config with more layers than the weights", lambda d: ["eval", model_copy(d, config={"num_hidden_layers": 6}), "--n", "2", "--k", "1"],
         ("do not match config.json",)),
    Case("NaN weights", lambda d: ["eval", model_copy(d, weights=lambda w: {k: v.clone().fill_(float("nan")) if "mlp" in k else v
                                                                          for k, v in w.items()}), "--n", "2", "--k", "1"], ("NaN",)),
    Case("corrupted packed quantized folder", lambda d: ["ppl", packed(d)], ("corrupted",)),
    # sizes and conventions checked before any work
    Case("ppl context longer than the model's positions", lambda d: ["ppl", TEXT_LM, "--context", "2048"], ("2048", "256 positions")),
    Case("ppl stride 0", lambda d: ["ppl", TEXT_LM, "--context", "16", "--stride", "0"], ("stride must be in 1..context",)),
    Case("ppl-text context 0 is refused, not replaced by the default", lambda d: ["ppl-text", "text-lm", "--text", "docstrings", "--context", "0"],
         ("context must be ≥ 2",)),
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
    Case("quantize with an unwritable --dequantized leaves no --out", lambda d: ["quantize", TEXT_LM, "--out", d / "ok", "--method", "rtn",
                                                                               "--dequantized", "/proc/workbench-out"], ("cannot be written",)),
    Case("quantize into an unwritable folder", lambda d: ["quantize", TEXT_LM, "--out", "/proc/workbench-out", "--method", "gptq"], ("cannot be written",)),
    Case("prune into an unwritable folder", lambda d: ["prune", TEXT_LM, "--sparsity", "0.5", "--out", "/proc/workbench-out"], ("cannot be written",)),
    Case("report into an unwritable folder", lambda d: ["report", "search_scaling", "--quick", "--out", "/proc/workbench-out"], ("cannot be written",)),
]


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_size for p in d.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_cleanly(case, tmp_path):
    args = [str(a) for a in case.args(tmp_path)]
    before = snapshot(tmp_path)           # after the case's own files are made
    json_flag = [] if args[0] == "lab" else ["--json"]       # lab prints no result, so it takes no --json
    rc, out, err = run_cli(*args, *json_flag, cwd=tmp_path, stdin="y\n" * 20)     # a hostile user answers yes to any prompt
    assert_clean_error(rc, out, err, *case.needles)
    assert bool(out.strip()) == bool(json_flag), "--json: the error is also one JSON object on stdout"
    assert snapshot(tmp_path) == before, "the refused command wrote files"
    assert not os.path.exists("/proc/workbench-out") and not (tmp_path / "PWNED").exists()
