"The `workbench` CLI end to end: JSON on stdout, one-line errors with exit code 2, nothing written on bad input."
import json
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from conftest import POLICY, TEXT_LM, assert_clean_error, run_cli


def test_help_lists_commands():
    rc, out, _ = run_cli("--help")
    assert rc == 0 and all(c in out for c in ("lab", "train", "eval", "ppl"))


@pytest.mark.parametrize("args,needles", [
    (["eval", "no/such/dir"], ["does not exist"]),
    (["eval", str(POLICY), "--task", "sudoku"], ["unknown task 'sudoku'", "countdown"]),
    (["eval", str(POLICY), "--n", "0"], ["--n must be ≥ 1"]),
    (["eval", str(POLICY), "--split", "dev"], ["unknown split 'dev'", "test"]),
    (["eval", str(POLICY), "--k", "8", "--samples", "4"], ["must be ≥ k"]),
    (["eval", str(POLICY), "--bogus"], ["No such option"]),
    (["ppl", str(TEXT_LM), "--split", "test"], ["unknown text split"]),
])
def test_bad_input_is_one_line_exit_2(args, needles):
    assert_clean_error(*run_cli(*args, "--json"), *needles)


def test_incomplete_and_corrupted_model_dirs(tmp_path):
    d = tmp_path / "m"; d.mkdir()
    assert_clean_error(*run_cli("eval", d, "--json"), "no config.json")
    for f in POLICY.iterdir(): (d / f.name).write_bytes(f.read_bytes())
    w = d / "model.safetensors"; w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    before = sorted(p.name for p in d.iterdir())
    assert_clean_error(*run_cli("eval", d, "--json"), "corrupted or truncated")
    assert sorted(p.name for p in d.iterdir()) == before  # nothing written


def test_bad_task_files(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"numbers": [3, 7, 25, 4], "target": 103}\n{"numbers": "3 7", "target": 10}\n')
    assert_clean_error(*run_cli("eval", POLICY, "--task-file", f, "--json"), "p.jsonl:2", "numbers must be")
    f.write_text("")
    assert_clean_error(*run_cli("eval", POLICY, "--task-file", f, "--json"), "has no problems")


def test_eval_prints_one_json_object(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"numbers": [25, 4, 3, 7], "target": 103}\n{"numbers": [10, 20, 1, 17], "target": 48}\n')
    rc, out, err = run_cli("eval", POLICY, "--task-file", f, "--k", "4", "--seed", "0", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert {"greedy_accuracy", "pass_at_k", "k", "n"} <= res.keys() and res["n"] == 2 and res["k"] == 4
    assert 0 <= res["greedy_accuracy"] <= 1 and res["pass_at_k"] >= res["greedy_accuracy"] - 0.5


def test_train_policy_is_resumable_and_loads(tmp_path):
    out = tmp_path / "p"
    args = ["train", "policy", "--out", out, "--steps", "4", "--batch-size", "4", "--hidden", "32", "--layers", "1",
            "--heads", "2", "--intermediate", "64", "--json"]
    rc, o, err = run_cli(*args)
    assert rc == 0, err
    assert json.loads(o)["steps"] == 4
    model = AutoModelForCausalLM.from_pretrained(out)  # a plain transformers directory
    assert model.config.model_type == "llama"


def test_shipped_checkpoints_load_with_transformers():
    for d in (POLICY, TEXT_LM):
        model = AutoModelForCausalLM.from_pretrained(d, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(d)
        assert 0.5e6 <= sum(p.numel() for p in model.parameters()) <= 5e6
        assert tok.bos_token_id == model.config.bos_token_id
        assert sum(f.stat().st_size for f in d.iterdir()) < 20e6


@pytest.mark.slow
def test_ppl_of_shipped_text_lm():
    rc, out, err = run_cli("ppl", TEXT_LM, "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["context"] == 256 and r["stride"] == 256 and r["windows"] > 100
    assert 1 < r["ppl"] < 60  # far below the vocabulary size: the model learned English


def test_lab_help_names_its_flags():
    rc, out, _ = run_cli("lab", "--help")
    assert rc == 0 and "--no-browser" in out and "--no-no-browser" not in out and "1<=x<=65535" in out
