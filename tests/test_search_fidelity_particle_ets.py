"Fidelity of particle filtering (Puri et al.), ETS' state clusters and FETCH merging, on the shipped Countdown policy."
import numpy as np
import pytest
from conftest import POLICY
from workbench.engine import Engine
from workbench.models import load
from workbench.rewards import OraclePRM
from workbench.search.core import SearchConfig
from workbench.search.ets import ets, state_clusters
from workbench.search.fetch import fetch_select, merge_equivalent, state_key
from workbench.search.particle import particle_filter, particle_weights
from workbench.search.registry import run_search
from workbench.tasks import Countdown, CountdownProblem

TASK = Countdown()


@pytest.fixture(scope="module")
def engine(): return Engine(load(POLICY, device="cpu"), capacity_tokens=1 << 16)


def nodes(res) -> dict:
    "Every node of a result's trees, by id."
    out, stack = {}, list(res.roots)
    while stack: n = stack.pop(); out[n.id] = n; stack += n.children
    return out


def resamplings(res):
    "Per resampling step: [(node, copies drawn)] over the whole population it drew from."
    byid = nodes(res)
    return [[(byid[i], k) for i, k in e["counts"].items()] for e in res.events if e["t"] == "select"]


# --- particle filtering -------------------------------------------------------------------------------------------

def test_dead_particle_weight_vanishes_as_t_goes_to_zero():
    dead = [particle_weights([1.0, 0.0, 1.0], T)[1] for T in (1.0, 0.5, 0.1, 0.02)]
    assert abs(dead[0] - np.exp(-1) / (2 + np.exp(-1))) < 1e-12           # T = 1 (the paper's): e^-1 of a live one's weight
    assert all(a > b for a, b in zip(dead, dead[1:])) and dead[-1] < 1e-20


def dead_share(res):
    "Share of drawn particles with reward 0 among resamplings whose population had a reward-1 particle."
    drawn = dead = 0
    for step in resamplings(res):
        if max(n.score for n, _ in step) < 1: continue
        drawn += sum(k for _, k in step); dead += sum(k for n, k in step if n.score == 0)
    return dead / drawn


def test_particles_concentrate_on_high_reward_at_low_temperature(engine):
    probs, cfg = TASK.problems("hard", 4, seed=11), SearchConfig(width=8, answer="best")
    share = {T: dead_share(particle_filter(engine, OraclePRM(), TASK, probs, cfg, particle_temperature=T)) for T in (1.0, 0.3, 0.02)}
    print(share)
    assert share[1.0] > 0.05                       # the paper's T = 1: dead particles keep e^-1 of the weight and get drawn
    assert share[1.0] > share[0.3] > share[0.02] == 0   # at T = 0.02 (weight e^-50) never drawn while a live one exists
    assert not engine.live and engine.pool.used_blocks == 0


def test_finished_particles_stay_in_the_population(engine):
    N, probs = 8, TASK.problems("hard", 4, seed=12)
    res = particle_filter(engine, OraclePRM(), TASK, probs, SearchConfig(width=N, answer="best"), particle_temperature=0.3)
    steps = resamplings(res)
    assert all(sum(k for _, k in s) == N for s in steps)                     # N particles drawn from all N, every time
    carried = sum(k for s in steps for n, k in s if n.terminal and n.depth < max(m.depth for m, _ in s))
    assert carried > 0                                                       # finished ones drawn again, not extended
    assert res.counters["carried_finished"] >= carried > 0
    finishes = {}
    for e in res.events:
        if e["t"] == "finish": finishes[e["node"]] = finishes.get(e["node"], 0) + 1
    assert sum(finishes.values()) == res.counters["finished"] == N * len(probs)   # the final population, duplicates counted
    assert max(finishes.values()) >= 2                                       # a particle drawn twice counts twice
    byid = nodes(res)
    assert all(byid[i].terminal for i in finishes)
    for n in byid.values():                                                  # finished particles are never extended
        if n.terminal: assert not n.children


def test_particle_resampling_is_paired_across_searches_not_named(engine):
    probs, cfg = TASK.problems("hard", 2, seed=13), SearchConfig(width=8, answer="best")
    a, b = (particle_filter(engine, OraclePRM(), TASK, probs, cfg, particle_temperature=0.5) for _ in range(2))
    assert a.solutions == b.solutions and a.counters["tokens_generated"] == b.counters["tokens_generated"]


# --- ETS clusters by state ------------------------------------------------------------------------------------------

def test_state_clusters_are_exact_equivalence():
    p = CountdownProblem((12, 5, 17, 3, 8), 41)
    lab = state_clusters(TASK, p, [["12+5=17"], ["5+12=17"], ["17-5=12"], ["12*5=60"]])
    assert lab[0] == lab[1]                         # same numbers left: (3, 8, 17, 17)
    assert len({lab[0], lab[2], lab[3]}) == 3       # the policy embedder put these three together


def test_ets_default_clusters_are_states_on_real_searches(engine):
    probs = TASK.problems("hard", 3, seed=5)
    res = ets(engine, OraclePRM(), TASK, probs, SearchConfig(width=8, seed=1, answer="best"))
    byid, pairs = nodes(res), 0
    for ev in (e for e in res.events if "clusters" in e):
        cl, p = ev["clusters"], probs[ev["problem"]]
        for a in cl:
            for b in cl:
                if a < b:
                    pairs += 1
                    assert (cl[a] == cl[b]) == (TASK.state(p, byid[a].steps) == TASK.state(p, byid[b].steps))
    assert pairs > 50


# --- FETCH merging --------------------------------------------------------------------------------------------------

def expanded_states(res, probs):
    "Per selection step: the states of the candidates that got children."
    byid = nodes(res)
    return [[TASK.state(probs[e["problem"]], byid[i].steps) for i, k in e["counts"].items() if k > 0]
            for e in res.events if e["t"] == "select"]


def compare(engine, probs, width):
    "(baseline, FETCH) results per rule at equal width, oracle PRM."
    cfg = SearchConfig(width=width, answer="best")
    return {a: (run_search(a, engine, OraclePRM(), TASK, probs, cfg), run_search(f"fetch-{a}", engine, OraclePRM(), TASK, probs, cfg))
            for a in ("beam", "rebase")}


def test_fetch_expands_each_state_once_and_saves_tokens(engine):
    probs = TASK.problems("hard", 8, seed=0)
    for a, (base, merged) in compare(engine, probs, 16).items():
        print(a, base.accuracy, base.counters["tokens_generated"], merged.accuracy, merged.counters["tokens_generated"], merged.counters["fetch_merged"])
        steps = expanded_states(merged, probs)
        assert all(len(s) == len(set(s)) for s in steps)                     # no two expanded candidates share a state
        assert any(len(s) != len(set(s)) for s in expanded_states(base, probs))  # … which the plain rule does
        assert merged.counters["fetch_merged"] > 0
        assert merged.counters["tokens_generated"] < 0.95 * base.counters["tokens_generated"]
        assert merged.accuracy >= base.accuracy


def test_fetch_select_gives_merged_candidates_nothing():
    from types import SimpleNamespace
    from workbench.search.rebase import rebase_select
    rec = SimpleNamespace(task=TASK, problems=[CountdownProblem((12, 5, 17, 3, 8), 41)])
    cands = [SimpleNamespace(steps=s, score=sc, problem=0) for s, sc in
             ((["12+5=17"], 0.9), (["5+12=17"], 0.8), (["17-5=12"], 0.3), (["12*5=60"], 0.2))]
    assert merge_equivalent(cands, state_key, rec) == [[0, 1], [2], [3]]
    full = rebase_select(1.0)(cands, 8, 1, {})
    counts = fetch_select(rebase_select(1.0))(cands, 8, 1, {"recorder": rec})
    assert counts == [full[0], 0, full[2], full[3]] and sum(counts) < 8    # the duplicate's share is not spent
    counts = fetch_select(rebase_select(1.0), respend=True)(cands, 8, 1, {"recorder": rec})
    assert counts[1] == 0 and sum(counts) == 8                               # respend: the rule spends it on the others


@pytest.mark.slow
def test_fetch_token_saving_without_accuracy_loss_on_32_hard_problems(engine):
    probs = TASK.problems("hard", 16, seed=0) + TASK.problems("hard", 16, seed=1)
    right = {"base": 0, "fetch": 0}
    for w in (8, 16):
        for a, (base, merged) in compare(engine, probs, w).items():
            print(w, a, sum(base.correct), base.counters["tokens_generated"], sum(merged.correct), merged.counters["tokens_generated"])
            assert merged.counters["tokens_generated"] < 0.97 * base.counters["tokens_generated"]
            assert sum(merged.correct) >= sum(base.correct) - 1          # at most one problem of 32 either way per setting
            right["base"] += sum(base.correct); right["fetch"] += sum(merged.correct)
    assert right["fetch"] >= right["base"]                               # and none lost over the four settings
