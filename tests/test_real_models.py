"""Every registered search runs through the engine on the fetched real models: SmolLM2 (Llama), and, marked slow,
Qwen2.5-Coder-0.5B (Qwen2, 7 query heads per KV head) and Gemma-3-270m (which either runs or is refused by the
engine with a WorkbenchError). Smoke tests: two problems, width 2, 4-token steps.

The task is free text ("write 2 short lines about the sea"), not countdown: a real model's first line never parses
as a countdown step, so a countdown search ends at depth 1; here every path runs 2 steps deep, so children share
their parents' KV blocks and the engine's prefix sharing, copying and release run on each architecture."""
import traceback
from dataclasses import dataclass
import pytest
from workbench import fetch
from workbench.core import WorkbenchError
from workbench.experiment import search_setup
from workbench.learned_prm import get_prm
from workbench.models import load
from workbench.search.core import SearchConfig
from workbench.search.registry import SEARCHES
from workbench.tasks import Task

SMOL, QWEN, GEMMA = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma3-270m"
CFG = SearchConfig(width=2, max_step_tokens=4, seed=0)
TREE_FREE = {"diverse-beam"}   # token-level beams over the model's own cache: no tree nodes, no pool blocks
KNOBS = {"diverse-beam": {"max_new_tokens": 8}}


@dataclass(frozen=True)
class Lines:
    topic: str
    n: int


class FreeLines(Task):
    "Write `n` short lines about a topic, one step per line; every prefix is fine, a solution is `n` lines."
    name = "lines"
    def prompt(self, p): return f"Write {p.n} short lines about the {p.topic}, one per line.\n"
    def key(self, p): return f"lines:{p.topic}:{p.n}"
    def max_steps(self, p): return p.n
    def is_terminal(self, p, steps): return len(steps) >= p.n
    def step_valid(self, p, steps): return True
    reachable = step_valid
    def answer(self, p, solution): return len(self.steps(solution))
    def is_correct(self, p, solution): return self.answer(p, solution) == p.n


PROBLEMS = [Lines("sea", 2), Lines("sky", 2)]


def fetched(name):
    "A fetched model on the CPU (a cache hit once `workbench models fetch NAME` ran)."
    fetch.fetch_model(name, quiet=True)
    return load(name, "cpu")


@pytest.fixture(scope="module")
def smol(): return fetched(SMOL)

@pytest.fixture(scope="module")
def qwen(): return fetched(QWEN)

@pytest.fixture(scope="module")
def gemma(): return fetched(GEMMA)


def smoke(lm, name, prm="oracle"):
    "Run search `name` on its own engine and check what every search must return; the result and the setup."
    s = search_setup(lm, prm, FreeLines(), PROBLEMS, width=CFG.width, max_step_tokens=CFG.max_step_tokens, chunk=2)
    spec, calls0 = SEARCHES[name], s.prm.calls
    knobs = {**spec.defaults(CFG), **KNOBS.get(name, {})}
    r = s.run(name, CFG, **knobs)
    assert r.algorithm and set(r.knobs) == set(spec.knob_names) and r.config["seed"] == CFG.seed
    assert len(r.answers) == len(r.correct) == len(r.solutions) == len(PROBLEMS)
    c = r.counters
    assert c["tokens_generated"] > 0 and c["forward_passes"] > 0 and c["finished"] >= 1 and c["wall_s"] > 0
    assert c["prm_calls"] == s.prm.calls - calls0 and (c["prm_calls"] > 0 or not spec.reads_prm)
    assert c["pool_peak_bytes"] > 0
    assert all(isinstance(x, str) for x in r.solutions) and any(x.strip() for x in r.solutions)
    for p, sol, a, ok in zip(PROBLEMS, r.solutions, r.answers, r.correct):
        if sol: assert a == s.task.answer(p, sol) and ok == s.task.is_correct(p, sol)   # the answer is read off the decoded text
    if name not in TREE_FREE:
        kids = [e for e in r.events if e["t"] == "add" and e["parent"] is not None]
        assert kids and all(isinstance(e["text"], str) and e["tokens"] >= 1 for e in kids)
        assert c["tokens_generated"] == sum(e["tokens"] for e in kids)   # every sampled token belongs to one child
        assert len(r.roots) == len(PROBLEMS) and max(e["depth"] for e in kids) <= max(p.n for p in PROBLEMS)
    assert s.engine.pool.used_blocks == 0 and not s.engine.live       # everything released: no block leaks
    return r, s


def params(): return list(SEARCHES)   # ETS included: a real model's empty steps (zero embeddings) once broke its clustering


@pytest.mark.parametrize("name", params())
def test_every_search_on_smollm2(smol, name):
    r, _ = smoke(smol, name)
    if name == "beam": assert max(e["depth"] for e in r.events if e["t"] == "add") == 2   # past the first step


def test_self_eval_prm_guides_a_search_with_the_policy_itself(smol):
    prm = get_prm("self-eval", lm=smol)
    r, s = smoke(smol, "beam", prm)
    assert prm.lm.model is smol.model is s.engine.model                 # one model: the policy judges, nothing loaded twice
    scores = [e["score"] for e in r.events if e["t"] == "score"]
    assert scores and all(0 < x < 1 for x in scores) and len(set(scores)) > 1
    assert r.counters["prm_calls"] == prm.calls > 0 and prm.tokens > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", params())
def test_every_search_on_qwen2(qwen, name):
    assert qwen.model.config.num_key_value_heads < qwen.model.config.num_attention_heads   # grouped KV heads
    smoke(qwen, name)


@pytest.mark.slow
def test_self_eval_prm_on_qwen2(qwen):
    prm = get_prm("self-eval", lm=qwen)
    r, _ = smoke(qwen, "beam", prm)
    assert r.counters["prm_calls"] == prm.calls > 0 and all(0 < e["score"] < 1 for e in r.events if e["t"] == "score")


def engine_refusal(e:WorkbenchError) -> bool:
    "A one-line WorkbenchError raised in workbench/engine.py."
    frames = [f.filename.replace("\\", "/") for f in traceback.extract_tb(e.__traceback__)]
    return any(f.endswith("workbench/engine.py") for f in frames) and str(e).strip() and "\n" not in str(e).strip()


@pytest.mark.slow
@pytest.mark.parametrize("name", params())
def test_every_search_on_gemma3_runs_or_is_refused_by_the_engine(gemma, name):
    try: smoke(gemma, name)
    except WorkbenchError as e:
        assert engine_refusal(e), f"a WorkbenchError, but not the engine's one-line refusal: {e!r}"


@pytest.mark.slow
def test_self_eval_prm_on_gemma3_base_model(gemma):
    prm = get_prm("self-eval", lm=gemma)
    assert not prm.chat                                                   # a base model: the plain-text prompt
    try: r, _ = smoke(gemma, "beam", prm)
    except WorkbenchError as e:
        assert engine_refusal(e), f"a WorkbenchError, but not the engine's one-line refusal: {e!r}"
        return
    assert r.counters["prm_calls"] == prm.calls > 0
