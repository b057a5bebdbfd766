"`bench_replay` at tiny settings: its fields, the ratio it reports, and the exact replay of the generating rule."
import math
import pytest
from workbench.benchmarks.replay import bench_replay
from workbench.core import WorkbenchError

RULES, WIDTHS = ["best-of-n", "weighted-majority", "beam", "rebase"], [2, 4]


@pytest.fixture(scope="module")
def res():
    return bench_replay(n=3, seeds=[0, 1], rules=RULES, widths=WIDTHS, branching="4,2,1")


def test_fields_and_grid(res):
    for k in ("rules", "widths", "n", "seeds", "branching", "tree_nodes", "generate_s", "online_s_total", "replay_s_total",
              "ratio", "target_met", "rows"):
        assert k in res, k
    assert res["rules"] == RULES and res["widths"] == WIDTHS and res["n"] == 3 and res["seeds"] == [0, 1]
    assert res["branching"] == "4,2,1" and res["tree_nodes"] > 3 * 4 and res["generate_s"] > 0
    grid = [r for r in res["rows"] if not r["generating"]]
    assert [(r["algorithm"], r["width"]) for r in grid] == [(a, w) for a in RULES for w in WIDTHS]
    for r in grid:
        for k in ("accuracy", "accuracy_ci", "replay_accuracy", "replay_accuracy_ci", "misses", "online_s", "replay_s",
                  "tokens_generated", "replay_tokens_generated"):
            assert k in r, (r["algorithm"], k)
        assert r["misses"] >= 0 and 0 <= r["miss_rate"] < 1 and r["online_s"] > 0 and r["replay_s"] > 0
        lo, hi = r["replay_accuracy_ci"]
        assert 0 <= lo <= r["replay_accuracy"] <= hi <= 1
    # 4 draws of the prompt, then one draw of every node: the sampling baselines find every child they ask for
    assert all(r["misses"] == 0 for r in grid if r["algorithm"] in ("best-of-n", "weighted-majority"))


def test_ratio_is_replay_over_online(res):
    grid = [r for r in res["rows"] if not r["generating"]]
    on, rp = sum(r["online_s"] for r in grid), sum(r["replay_s"] for r in grid)
    assert math.isclose(res["online_s_total"], on) and math.isclose(res["replay_s_total"], rp)
    assert math.isfinite(res["ratio"]) and math.isclose(res["ratio"], rp / on)
    assert res["target_met"] == (res["ratio"] < 0.05)


def test_generating_rule_replays_exactly(res):
    gen = [r for r in res["rows"] if r["generating"]]
    assert len(gen) == 1 and gen[0] is res["rows"][-1]
    g = gen[0]
    assert g["algorithm"] == "tree" and g["knobs"] == {"branching": "4,2,1"}
    assert g["exact"] is True and res["exact"] is True
    assert g["misses"] == 0 and g["agree"] == 1.0
    assert g["replay_accuracy"] == g["accuracy"] and g["replay_accuracy_ci"] == g["accuracy_ci"]
    assert g["replay_tokens_generated"] == g["tokens_generated"]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(WorkbenchError, match="use keys of SEARCHES but tree"): bench_replay(n=1, rules=["tree"])
    with pytest.raises(WorkbenchError, match="--n must be"): bench_replay(n=0)
    with pytest.raises(WorkbenchError, match="widths must lie in"): bench_replay(n=1, widths=[0, 4])
