"Property-based checks of the task verifiers (hypothesis)."
import random
from hypothesis import given, settings, strategies as st
from workbench.tasks import ArithmeticChain, Countdown, countdown_reachable, split_of

cd, ch = Countdown(), ArithmeticChain()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), split=st.sampled_from(["train", "test", "hard"]))
def test_reference_solutions_verify_and_stay_reachable(seed, split):
    for task in (cd, ch):
        p, sol = task.sample(random.Random(seed), split)
        steps = task.steps(sol)
        assert task.is_correct(p, sol)
        assert all(task.reachable(p, steps[:i]) for i in range(len(steps) + 1))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_wrong_result_is_never_valid(seed):
    p, sol = cd.sample(random.Random(seed), "train")
    steps = cd.steps(sol)
    i = seed % len(steps)
    lhs, rhs = steps[i].split("=")
    broken = steps[:i] + [f"{lhs}={int(rhs) + 1}"]
    assert not cd.step_valid(p, broken) and not cd.reachable(p, broken)
    assert not cd.is_correct(p, "\n".join(broken))


@settings(max_examples=40, deadline=None)
@given(nums=st.lists(st.integers(1, 12), min_size=2, max_size=4), target=st.integers(1, 60))
def test_reachability_matches_brute_force(nums, target):
    # Brute force over every sequence of legal steps, independent of the memoised solver.
    def brute(pool):
        if target in pool: return True
        for i in range(len(pool)):
            for j in range(len(pool)):
                if i == j: continue
                a, b = pool[i], pool[j]
                rest = [x for k, x in enumerate(pool) if k not in (i, j)]
                for r in (a + b, a * b, a - b if a > b else None, a // b if a % b == 0 else None):
                    if r is not None and brute(rest + [r]): return True
        return False
    assert countdown_reachable(tuple(sorted(nums)), target) == brute(list(nums))


def test_splits_are_disjoint_and_deterministic():
    keys = {s: {cd.key(p) for p in cd.problems(s, 200, seed=3)} for s in ("train", "validation", "test", "hard")}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"] and not keys["test"] & keys["hard"]
    assert all(split_of(k) == "test" for k in keys["hard"] | keys["test"])
    assert [cd.key(p) for p in cd.problems("test", 50, seed=3)] == [cd.key(p) for p in cd.problems("test", 50, seed=3)]
    assert keys["test"] != {cd.key(p) for p in cd.problems("test", 200, seed=4)}
