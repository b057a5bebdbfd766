"""One compute ledger for every search (issue 19): the per-node ledger sums to the search's, which equals the engine's
and the PRM's counters; common random numbers: the same seed samples the same steps at the same node in every search."""
import json
import pytest
from conftest import POLICY, run_cli, assert_clean_error
from workbench.engine import Engine
from workbench.learned_prm import get_prm
from workbench.models import load
from workbench.search.core import SearchConfig
from workbench.search.registry import SEARCHES, run_search, search_many
from workbench.tasks import ArithmeticChain, Countdown


@pytest.fixture(scope="module")
def setup():
    lm = load(POLICY, device="cpu")
    task = Countdown()
    return lm, task, task.problems("hard", 2, seed=0), get_prm("learned", task=task, device="cpu")


def tree(roots):
    stack, out = list(roots), []
    while stack:
        n = stack.pop(); out.append(n); stack += n.children
    return out


TREE_SEARCHES = [a for a in SEARCHES if a != "diverse-beam"]    # diverse beam decodes outside the tree engine


@pytest.mark.parametrize("algo", TREE_SEARCHES)
def test_node_ledgers_sum_to_the_search_ledger_and_the_engine(setup, algo):
    lm, task, probs, prm = setup
    engine = Engine(lm, capacity_tokens=1 << 15)
    spec = SEARCHES[algo]
    cfg = SearchConfig(width=4, answer="best" if not spec.votes else None)
    if spec.votes: task, probs = ArithmeticChain(), ArithmeticChain().problems("test", 2, seed=0)
    if spec.votes: prm = get_prm("oracle", task=task)
    s0 = engine.stats.prefill_tokens + engine.stats.decode_tokens
    r = run_search(algo, engine, prm, task, probs, cfg)
    led, nodes = r.counters["ledger"], tree(r.roots)
    fed = led["prefill_tokens"] + led["decode_tokens"]
    assert fed == engine.stats.prefill_tokens + engine.stats.decode_tokens - s0 > 0
    assert sum(n.fed for n in nodes) == fed                                   # every token the model read, node by node
    assert sum(n.prm_tokens for n in nodes) == led["prm_tokens"] == r.counters["prm_tokens"]
    kids = [n for n in nodes if n.parent is not None]
    assert led["model_calls"] == len(kids) and r.counters["tokens_generated"] == sum(len(n.tokens) for n in kids)
    assert led["flops"] > 2 * fed and led["seconds"] > 0
    if spec.reads_prm and prm.name == "learned": assert led["prm_tokens"] > 0
    assert r.counters["kv_tokens_ets_metric"] > 0                             # counted the same way in every search


def test_common_random_numbers_across_searches(setup):
    lm, task, probs, _ = setup
    first = {}
    for algo, knobs in (("beam", {"expand": 4}), ("best-of-n", {}), ("rebase", {}), ("particle-filter", {})):
        r = run_search(algo, Engine(lm, capacity_tokens=1 << 15), get_prm("oracle", task=task), task, probs,
                       SearchConfig(width=4, seed=7), **knobs)
        first[algo] = [[c.text for c in root.children[:4]] for root in r.roots]   # the root's children: the same 4 draws
    assert len({json.dumps(v) for v in first.values()}) == 1, first
    other = run_search("beam", Engine(lm, capacity_tokens=1 << 15), get_prm("oracle", task=task), task, probs, SearchConfig(width=4, seed=8))
    assert [[c.text for c in root.children[:4]] for root in other.roots] != first["beam"]   # another seed, other draws


def test_seeds_give_intervals_and_paired_matrices(setup):
    lm, task, probs, _ = setup
    r = search_many("beam", Engine(lm, capacity_tokens=1 << 15), get_prm("oracle", task=task), task, probs, SearchConfig(width=4), seeds=[0, 1, 2])
    assert r["seeds"] == [0, 1, 2] and len(r["correct"]) == 2 and len(r["correct"][0]) == 3
    lo, hi = r["accuracy_ci"]
    assert lo <= r["accuracy"] <= hi and set(r["ledger"]) == {"prefill_tokens", "decode_tokens", "prm_tokens", "model_calls", "flops", "seconds"}


@pytest.mark.parametrize("args,needles", [
    (["search", "majority"], ["majority votes over answers", "states the answer in the prompt", "chain"]),
    (["search", "weighted-majority"], ["weighted-majority votes over answers"]),
    (["search", "beam", "--answer", "weighted"], ["beam votes over answers", "--answer best"]),
    (["search", "beam", "--seeds", "0,0"], ["--seeds must be distinct integers"]),
    (["search", "beam", "--seeds", "a,b"], ["--seeds must be distinct integers"]),
    (["search", "beam", "--prm", "calibrated", "--auroc", "0.4"], ["auroc"]),
])
def test_votes_where_the_prompt_states_the_answer_are_refused(args, needles):
    assert_clean_error(*run_cli(*args, "--n", "2", "--json"), *needles)


def test_search_json_has_interval_seeds_and_ledger():
    rc, out, err = run_cli("search", "weighted-majority", "--task", "chain", "--policy", POLICY, "--n", "3", "--width", "4",
                           "--seeds", "0,1,2", "--prm", "calibrated", "--auroc", "0.8", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["seeds"] == [0, 1, 2] and len(r["accuracy_ci"]) == 2 and r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
    assert set(r["ledger"]) == {"prefill_tokens", "decode_tokens", "prm_tokens", "model_calls", "flops", "seconds"}
    assert "kv_tokens_ets_metric" in r and r["config"]["answer"] == "weighted"


def test_samples_that_agree_so_far_draw_on_independently(setup):
    # two best-of-N samples with the same first step are two nodes with the same path: their next draws must differ
    lm, task, _, _ = setup
    probs = task.problems("hard", 4, seed=0)
    r = run_search("best-of-n", Engine(lm, capacity_tokens=1 << 15), get_prm("oracle", task=task), task, probs, SearchConfig(width=16))
    same_start = identical = 0
    for root in r.roots:
        sols = [n for n in tree([root]) if n.terminal]
        for i, a in enumerate(sols):
            for b in sols[i + 1:]:
                if a.steps[:1] == b.steps[:1] and len(a.steps) > 1:
                    same_start += 1; identical += a.steps == b.steps
    assert same_start > 10 and identical < 0.5 * same_start, (same_start, identical)
