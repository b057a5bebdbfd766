"""PRM quality as an independent variable (issue 19): the calibrated oracle hits its target step AUROC on prefixes the
shipped policy really produces, and OmegaPRM's binary search finds the first error that a per-step MC scan finds, with
fewer rollouts."""
import pytest
import torch
from workbench.learned_prm import (RolloutMC, auroc, first_error_binary_search, first_error_scan, get_prm,
                                   sample_solutions)
from workbench.models import load
from workbench.rewards import CalibratedPRM, OraclePRM
from workbench.tasks import Countdown
from conftest import POLICY

CD = Countdown()


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    return load(POLICY, "cpu")


@pytest.fixture(scope="module")
def hard(lm):
    "Policy samples on the hard split: `(problem, steps, oracle labels)` with at least one step."
    exs = sample_solutions(lm, CD, CD.problems("hard", 800, 7), seed=7)
    return [(CD.from_record(e["problem"]), e["steps"], e["oracle"], e["correct"]) for e in exs if e["steps"]]


def test_calibrated_prm_hits_its_auroc_on_policy_prefixes(hard):
    ys = [y for _, _, o, _ in hard for y in o]
    assert len(ys) > 2500 and 0.2 < sum(ys) / len(ys) < 0.6, (len(ys), sum(ys) / len(ys))
    for target in (0.6, 0.8, 0.95):
        prm = get_prm("calibrated", auroc=target)   # the default seed, as searches get it
        scores = [x for s in prm.batch(CD, [(p, st) for p, st, _, _ in hard]) for x in s]
        got = auroc(scores, ys)
        assert abs(got - target) <= 0.03, (target, got)


def test_calibrated_prm_is_a_fixed_function_of_the_prefix(hard):
    a, b, other = CalibratedPRM(0.8, seed=1), CalibratedPRM(0.8, seed=1), CalibratedPRM(0.8, seed=2)
    items = [(p, st) for p, st, _, _ in hard[:100]]
    full = a.batch(CD, items)
    assert full == b.batch(CD, list(reversed(items)))[::-1]                 # order and instance do not matter
    assert all(a(CD, p, st[:i]) == s[:i] for (p, st), s in zip(items, full) for i in range(1, len(st) + 1))  # prefix only
    assert sum(x != y for s, t in zip(full, other.batch(CD, items)) for x, y in zip(s, t)) > 0.9 * sum(map(len, full))
    # the same noise at every auroc: raising it moves positives up and negatives down, never reorders within a class
    lo, hi = CalibratedPRM(0.6, seed=1).batch(CD, items), CalibratedPRM(0.95, seed=1).batch(CD, items)
    ys = OraclePRM().batch(CD, items)
    assert all((h > l) == (y == 1.0) for L, H, Y in zip(lo, hi, ys) for l, h, y in zip(L, H, Y))


def first_errors(hard):
    "Wrong policy solutions of at least 3 steps, with the oracle's first error (the step count when none)."
    wrong = [(p, st, o) for p, st, o, c in hard if not c and len(st) >= 3]
    return [(p, st, next((i for i, y in enumerate(o, 1) if y == 0), len(st))) for p, st, o in wrong]


def test_binary_search_matches_scan_with_exact_mc(hard):
    oracle_mc = lambda items: [float(CD.reachable(p, s)) for p, s in items]
    cases, n_bin, n_scan = first_errors(hard)[:200], 0, 0
    assert len(cases) == 200 and len({fe for _, _, fe in cases}) >= 3  # first errors at several depths
    for p, st, fe in cases:
        b, s = first_error_binary_search(None, CD, p, st, k=8, mc=oracle_mc), first_error_scan(None, CD, p, st, k=8, mc=oracle_mc)
        assert b.step == s.step == fe, (st, b, s, fe)
        assert b.rollouts <= s.rollouts
        n_bin, n_scan = n_bin + b.rollouts, n_scan + s.rollouts
    assert n_bin < 0.85 * n_scan, (n_bin, n_scan)


def test_binary_search_matches_scan_with_policy_rollouts(lm, hard):
    cases = first_errors(hard)[:40]
    mc = RolloutMC(lm, CD, k=4, seed=0)
    mc([(p, st[:i]) for p, st, _ in cases for i in range(1, len(st))])   # one batch: every proper prefix, shared by both searches
    n = mc.rollouts
    assert n == 4 * sum(len(st) - 1 for _, st, _ in cases)
    agree = n_bin = n_scan = 0
    for p, st, fe in cases:
        s, b = first_error_scan(lm, CD, p, st, k=4, mc=mc), first_error_binary_search(lm, CD, p, st, k=4, mc=mc)
        assert all(s.mc[i] == v for i, v in b.mc.items())                  # the same estimates
        assert b.mc[b.step] == 0 and (b.step == 1 or b.mc[b.step - 1] > 0) # a boundary: solvable before, MC 0 at it
        assert s.step <= fe and b.step <= fe                               # MC > 0 proves a prefix solvable
        if all(s.mc[i] == 0 for i in range(s.step, len(st) + 1)): assert b.step == s.step; agree += 1
        assert b.rollouts <= s.rollouts
        n_bin, n_scan = n_bin + b.rollouts, n_scan + s.rollouts
    assert mc.rollouts == n                                                # all from the cache
    assert agree >= 0.75 * len(cases), agree
    assert n_bin < 0.85 * n_scan, (n_bin, n_scan)
