"QAlign (nbs/27g_search_qalign): the chain samples the reward-tilted target, runs on the real policy, and the registry guards it."
import itertools, math
import numpy as np
import pytest
from conftest import DATA, POLICY
from workbench.core import WorkbenchError
from workbench.engine import Node, Stats
from workbench.rewards import PRM, OraclePRM
from workbench.search.core import SearchConfig
from workbench.search.qalign import acceptance, qalign
from workbench.tasks import Task

CHAIN_POLICY = DATA / "models" / "chain-policy"


class ToyEngine:
    "An engine stand-in whose steps are drawn i.i.d. from `probs` (per-child seeds when the Recorder gives them)."
    def __init__(self, probs, seed=0):
        self.probs, self.ids, self.live, self.stats = probs, itertools.count(), {}, Stats()
        self.rng = np.random.default_rng(seed)

    def _node(self, parent, text, problem):
        n = Node(next(self.ids), parent, [ord(c) for c in text], text, problem, 0 if parent is None else parent.depth + 1)
        if parent is not None: parent.children.append(n); parent.refs += 1
        self.live[n.id] = n
        return n

    def add_root(self, prompt, problem=0): return self._node(None, prompt, problem)

    def expand(self, requests, *args, seeds=None, generator=None, **kw):
        out = []
        for j, (n, k) in enumerate(requests):
            assert n.alive, f"expanded a freed node {n.id}"
            rngs = [np.random.default_rng(s) for s in seeds[j]] if seeds is not None else [self.rng] * k
            out.append([self._node(n, str(g.choice(list(self.probs), p=list(self.probs.values()))), n.problem) for g in rngs])
        self.stats.tokens_generated += sum(map(len, out)); self.stats.model_calls += sum(map(len, out))
        return out

    def release(self, node):
        assert not node.released
        node.released = True
        while node is not None:
            node.refs -= 1
            if node.refs > 0: return
            node.alive = False; del self.live[node.id]; node = node.parent


class ToyTask(Task):
    "Steps a, b, c; a solution ends at c or after three steps: 15 solutions of 1–3 steps."
    name = "toy"
    def prompt(self, p): return ""
    def key(self, p): return f"toy:{p}"
    def is_terminal(self, p, steps): return steps[-1] == "c" or len(steps) >= 3
    def answer(self, p, solution): return solution.strip().replace("\n", "")
    def is_correct(self, p, solution): return False


class ShareB(PRM):
    "A prefix scores its share of b steps."
    def score(self, task, p, steps): return [steps[:i].count("b") / i for i in range(1, len(steps) + 1)]


def toy_target(probs, beta):
    ys = [("c",)] + [(s, "c") for s in "ab"] + [t + (s,) for t in itertools.product("ab", repeat=2) for s in "abc"]
    p = {y: math.prod(probs[s] for s in y) for y in ys}
    w = {y: p[y] * math.exp(y.count("b") / len(y) / beta) for y in ys}
    return p, {y: v / sum(w.values()) for y, v in w.items()}


def chain_states(res, upto=None):
    "Counts of the solutions the chains visit in their first `upto` proposals, rebuilt from the events."
    text = {ev["node"]: ev["text"] for ev in res.events if ev["t"] == "add"}
    parent = {ev["node"]: ev["parent"] for ev in res.events if ev["t"] == "add"}
    def sol(n):
        out = []
        while parent[n] is not None: out.append(text[n]); n = parent[n]
        return tuple(out[::-1])
    counts = {}
    for ev in res.events:
        if ev["t"] == "mcmc" and (upto is None or ev["iteration"] < upto):
            y = sol(ev["state"]); counts[y] = counts.get(y, 0) + 1
    return counts


def tv(counts, q):
    n = sum(counts.values())
    return 0.5 * sum(abs(counts.get(y, 0) / n - q[y]) for y in q)


def test_acceptance_is_quest_criterion():
    assert acceptance(0.2, 0.9, 3, 3) == 1.0
    assert math.isclose(acceptance(0.9, 0.2, 3, 3, beta=0.5), math.exp(-1.4))
    assert math.isclose(acceptance(0.5, 0.5, 2, 4), 0.5) and acceptance(0.5, 0.5, 4, 2) == 1.0


def test_chain_converges_to_tilted_target():
    "Pooled over 40 chains, the states' distribution approaches π ∝ p·exp(r/β) as the chains lengthen; it is not p."
    probs, beta = {"a": 0.5, "b": 0.3, "c": 0.2}, 0.5
    p, pi = toy_target(probs, beta)
    eng = ToyEngine(probs)
    res = qalign(eng, ShareB(), ToyTask(), list(range(40)), SearchConfig(width=400, seed=1), beta=beta)
    assert not eng.live
    d = {T: tv(chain_states(res, T), pi) for T in (4, 25, 400)}
    assert d[400] < d[25] < d[4] and d[400] < 0.05, d     # without the |y|/|y'| factor the limit is ~0.09 away
    assert tv(p, pi) > 0.2 and tv(chain_states(res), p) > 0.15
    assert 0 < res.counters["acceptance_rate"] < 1 and res.counters["proposals"] == 400


@pytest.fixture(scope="module")
def countdown():
    from workbench.engine import Engine
    from workbench.models import load
    from workbench.tasks import Countdown
    task = Countdown()
    return Engine(load(POLICY, device="cpu"), capacity_tokens=1 << 15), task, task.problems("test", 6, seed=3)


def test_real_policy_chain_accepts_and_rejects(countdown):
    engine, task, probs = countdown
    res = qalign(engine, OraclePRM(), task, probs, SearchConfig(width=8, seed=0), beta=0.5, burn_in=2)
    rate = res.counters["acceptance_rate"]
    assert 0 < rate < 1, rate
    mc = [ev for ev in res.events if ev["t"] == "mcmc"]
    assert len(mc) == 8 * len(probs) and math.isclose(sum(ev["accepted"] for ev in mc) / len(mc), rate)
    assert res.counters["finished"] == len(probs) * (8 + 1 - 2)        # the vote's pool: chain states after burn-in
    assert res.config["answer"] == "vote" and not engine.live
    # the same seed gives the same chain (index and acceptance draws come from rec.rng, the policy from the Recorder)
    again = qalign(engine, OraclePRM(), task, probs, SearchConfig(width=8, seed=0), beta=0.5, burn_in=2)
    assert [ev["accepted"] for ev in again.events if ev["t"] == "mcmc"] == [ev["accepted"] for ev in mc]


def test_registry_guards_qalign(countdown):
    from workbench.search.registry import get_search, run_search
    engine, task, probs = countdown
    spec = get_search("qalign")
    assert spec.votes and spec.knob_names == ["beta", "burn_in"]
    with pytest.raises(WorkbenchError, match="votes over answers"):      # Countdown states its answer in the prompt
        run_search("qalign", engine, OraclePRM(), task, probs, SearchConfig(width=2))
    with pytest.raises(WorkbenchError, match="beta must be > 0"):
        spec.knobs_in_effect(SearchConfig(width=2), beta=0.0)
    with pytest.raises(WorkbenchError, match="burn_in"):
        spec.knobs_in_effect(SearchConfig(width=2), burn_in=3)
    from workbench.tasks import ArithmeticChain                          # a hidden answer: the registry runs it
    chain = ArithmeticChain()
    res = run_search("qalign", engine, OraclePRM(), chain, chain.problems("test", 2, seed=0), SearchConfig(width=3), burn_in=1)
    assert res.knobs == {"beta": 1.0, "burn_in": 1} and res.counters["finished"] == 2 * 3 and not engine.live


@pytest.mark.skipif(not (CHAIN_POLICY / "config.json").exists(), reason="the chain policy is not trained yet (data/models/chain-policy)")
def test_chain_policy_through_registry():
    from workbench.experiment import search_setup
    from workbench.tasks import ArithmeticChain
    probs = ArithmeticChain().problems("hard", 4, seed=0)      # the policy slips there, and a graded reward tells chains apart
    s = search_setup(CHAIN_POLICY, "calibrated", "chain", probs, width=8, device="cpu", auroc=0.8)
    res = s.run("qalign", SearchConfig(width=8, seed=0), beta=0.5)
    assert 0 < res.counters["acceptance_rate"] < 1 and res.knobs == {"beta": 0.5, "burn_in": 0}
    assert len(res.answers) == 4 and not s.engine.live
