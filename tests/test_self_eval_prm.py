"""SelfEvalPRM on fetched real models. SmolLM2-135M cannot tell a right step from a wrong one (AUROC ≈ 0.5 on
arithmetic, GSM8K and factual steps, see nbs/22a_self_eval_prm.ipynb), so on it we check the mechanics: scores in
(0, 1), batching equals one-by-one, calls and tokens, remembered steps, refusals. What the score is worth is checked
on Qwen2.5-Coder-0.5B-Instruct (slow): it separates right from wrong steps on questions it can answer."""
import random
import pytest
from workbench import fetch
from workbench.core import WorkbenchError
from workbench.learned_prm import auroc, get_prm
from workbench.models import load
from workbench.self_eval_prm import SelfEvalPRM, eval_prompt, problem_text
from workbench.tasks import ArithmeticChain, Countdown, CountdownProblem, Task

SMOL, QWEN = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"


def fetched(name):
    fetch.fetch_model(name, quiet=True)   # a cache hit once fetched
    return load(name, "cpu")


@pytest.fixture(scope="module")
def smol(): return fetched(SMOL)


class Questions(Task):
    "Free-text questions: the problem is its own prompt."
    name = "questions"
    def prompt(self, p): return p


def chain_items():
    task = ArithmeticChain()
    p, q = task.problems("test", 2, 0)
    right = lambda x: [f"{a}{op}={b}" for a, op, b in zip(task.values(x), x.ops, task.values(x)[1:])]
    v = task.values(p)
    return task, [(p, right(p)[:3]), (q, right(q)[:1]), (p, []), (q, ["banana"]), (p, [f"{v[0]}{p.ops[0]}={v[1] + 1}"])]


def test_scores_in_unit_interval_and_batching_equals_one_by_one(smol):
    task, items = chain_items()
    alone = SelfEvalPRM(smol, cache_size=0)
    one = [alone(task, p, s) for p, s in items]
    assert [len(x) for x in one] == [len(s) for _, s in items]
    assert all(0 < x < 1 for xs in one for x in xs) and len({x for xs in one for x in xs}) > 3   # it reads the steps
    together = SelfEvalPRM(smol, batch_size=3, cache_size=0)   # 6 distinct prompts: two left-padded forwards
    for a, b in zip(together.batch(task, items), one):
        assert a == pytest.approx(b, abs=1e-5)
    assert alone.calls == together.calls == len(items)
    assert together.tokens == alone.tokens
    assert together.batch(task, []) == [] and together.calls == len(items)


def test_tokens_are_the_prompt_tokens_read(smol):
    task, items = chain_items()
    prm = SelfEvalPRM(smol, cache_size=0)
    prm.batch(task, items)
    prompts = {(problem_text(task, p), tuple(s[:i + 1])) for p, s in items for i in range(len(s))}
    assert prm.tokens == sum(len(smol.tokenizer(prm.prompt(q, list(s)), add_special_tokens=False)["input_ids"]) for q, s in prompts)


def test_remembered_steps_are_not_read_again(smol):
    task, items = chain_items()
    p, steps = items[0]
    prm = SelfEvalPRM(smol)
    first = prm(task, p, steps[:2]); t = prm.tokens
    assert prm(task, p, steps[:2]) == first and prm.tokens == t                   # a rescored path reads nothing
    longer = prm(task, p, steps)
    assert longer[:2] == first and prm.tokens - t == len(prm.encode(prm.prompt(problem_text(task, p), steps)))
    assert longer == pytest.approx(SelfEvalPRM(smol, cache_size=0)(task, p, steps), abs=1e-5)
    assert prm.calls == 3
    small = SelfEvalPRM(smol, cache_size=2)
    small(task, p, steps[:1])
    assert small(task, p, steps) == pytest.approx(longer, abs=1e-5) and len(small.memory) <= 2   # a full memory starts over


def test_the_exact_prompt(smol):
    task = ArithmeticChain(); p = task.problems("test", 1, 0)[0]
    text = SelfEvalPRM(smol).prompt(problem_text(task, p), ["15-5=10", "10+2=12"])
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                    f"<|im_start|>user\n{task.prompt(p).strip()}\n\nSolution:\n15-5=10\n10+2=12\n\nIs the above step correct?\n"
                    "(A) Yes\n(B) No<|im_end|>\n<|im_start|>assistant\nThe answer is (")
    plain = SelfEvalPRM(smol, chat=False)
    assert plain.prompt("2 +3", ["2+3=5"]) == eval_prompt(None, "2 +3", ["2+3=5"], chat=False)
    assert not plain.chat
    assert 0 < plain(Countdown(), CountdownProblem((25, 4, 3, 7), 103), ["25*4=100"])[0] < 1


def test_the_problem_is_the_tasks_bare_question_when_it_has_one():
    class Asked(Questions):
        def prompt(self, p): return "Q: 1+1?\nA: 2\n\n" + self.query(p)   # few-shot exemplars the judge does not need
        def query(self, p): return f"Q: {p}\nA:"
    assert problem_text(Asked(), "2+2?") == "Q: 2+2?\nA:"
    assert problem_text(Questions(), " 2+2? \n") == "2+2?"


def test_get_prm_judges_with_the_policy_itself(smol):
    prm = get_prm("self-eval", lm=smol)
    assert isinstance(prm, SelfEvalPRM) and prm.lm is smol and prm.name == "self-eval"
    with pytest.raises(WorkbenchError, match="pass lm="): get_prm("self-eval")


def test_refusals(smol):
    with pytest.raises(WorkbenchError, match="cannot express the choice 'A'"): SelfEvalPRM(load("countdown-policy", "cpu"))
    with pytest.raises(WorkbenchError, match="judge where it is"): SelfEvalPRM(smol, device="meta")
    with pytest.raises(WorkbenchError, match="batch_size"): SelfEvalPRM(smol, batch_size=0)


CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("China", "Beijing"), ("Russia", "Moscow"), ("England", "London"), ("Egypt", "Cairo"), ("Greece", "Athens"),
            ("Canada", "Ottawa"), ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Ireland", "Dublin"),
            ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Kenya", "Nairobi"), ("Argentina", "Buenos Aires"), ("Thailand", "Bangkok")]
WORDS = ["apple", "river", "candle", "mountain", "pencil", "garden", "window", "rabbit", "guitar", "ocean"]


def judged_pairs():
    "(question, right step, wrong step): 20 capitals (the wrong one another country's), 10 words to copy."
    rng = random.Random(0)
    caps = [(f"What is the capital of {c}?", f"The capital of {c} is {cap}.",
             f"The capital of {c} is {CAPITALS[(i + 1 + rng.randrange(len(CAPITALS) - 1)) % len(CAPITALS)][1]}.")
            for i, (c, cap) in enumerate(CAPITALS)]
    return caps, [(f"Write the word '{w}'.", w, WORDS[(i + 3) % len(WORDS)]) for i, w in enumerate(WORDS)]


@pytest.mark.slow
def test_qwen_tells_right_steps_from_wrong_ones_on_questions_it_can_answer():
    # measured: capitals AUROC 0.88 (right above its wrong twin in 18/20), copying 1.00 (10/10); on arithmetic steps
    # (chain, GSM8K) the same judge is at chance (0.48-0.58), which is why this test does not use them
    prm = SelfEvalPRM(fetched(QWEN))
    for pairs, least in zip(judged_pairs(), (0.75, 0.9)):
        s = [x[-1] for x in prm.batch(Questions(), [(q, [st]) for q, r, w in pairs for st in (r, w)])]
        right, wrong = s[0::2], s[1::2]
        assert auroc(s, [1, 0] * len(pairs)) >= least
        assert sum(a > b for a, b in zip(right, wrong)) >= 0.75 * len(pairs)
        assert sum(right) / len(right) > sum(wrong) / len(wrong)
