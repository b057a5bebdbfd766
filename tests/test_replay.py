"Tree store and replay: exactness beyond the notebook's, misses counted exactly, resumable studies, refusals of bad input."
import sqlite3
import pytest
from workbench.core import WorkbenchError, data_dir
from workbench.engine import Engine
from workbench.models import load
from workbench.rewards import NoisyPRM, OraclePRM
from workbench.search.core import SearchConfig
from workbench.search.registry import search_many
from workbench.search.replay import replay, replay_run, rescore
from workbench.search.store import TreeStore
from workbench.tasks import Countdown, get_task

CLOCK = ("wall_s", "seconds", "solver_s", "replay_s")


def strip_clock(d):
    return {k: strip_clock(v) if isinstance(v, dict) else v for k, v in d.items() if k not in CLOCK}


@pytest.fixture(scope="module")
def lm():
    return load(data_dir() / "models" / "countdown-policy", device="cpu")


@pytest.fixture(scope="module")
def wide(lm, tmp_path_factory):
    "A wide tree: 6 hard Countdown problems, 2 seeds, 8 draws of the prompt then 2 of every node, oracle-scored."
    store = TreeStore(tmp_path_factory.mktemp("wide"))
    task = Countdown()
    search_many("tree", Engine(lm, 1 << 15), OraclePRM(), task, task.problems("hard", 6, seed=3), SearchConfig(width=4096),
                chunk=3, seeds=[0, 1], store=store, branching="8,2")
    return store


def test_study_replay_equals_the_online_study(lm, tmp_path):
    # a whole study (chunks × seeds) replayed gives back search_many's summary, counters included
    task = get_task("chain")
    probs = task.problems("hard", 4, seed=0)
    store = TreeStore(tmp_path / "s")
    policy = load(data_dir() / "models" / "chain-policy", device="cpu")
    online = search_many("weighted-majority", Engine(policy, 1 << 15), NoisyPRM(), task, probs, SearchConfig(width=4),
                         chunk=2, seeds=[0, 1], store=store)
    back = replay(store, "weighted-majority", 4)
    assert back["misses"] == 0 and back["prm_misses"] == 0
    assert strip_clock({k: v for k, v in back.items() if k not in ("source", "misses", "prm_misses")}) == strip_clock(online)


def test_misses_are_counted_exactly(wide):
    # best-of-N at width 12 asks 12 draws of each prompt; the tree holds 8: 4 misses per problem, 6 problems, per seed
    r = replay(wide, "best-of-n", 12)
    assert r["misses"] == 4 * 6
    assert replay(wide, "best-of-n", 8)["misses"] == 0
    # beam with M = 2 asks 2 children of each kept node, which the tree holds; with M = 4 it asks 4 of nodes that have 2
    assert replay(wide, "beam", 8, expand=2)["misses"] == 0
    assert replay(wide, "beam", 8, expand=4)["misses"] > 0


def test_replayed_rule_sees_only_stored_children(wide):
    # every node a replay adds is a stored draw: its text and seed exist in the store
    run = wide.runs()[0]
    seeds = {d["seed"]: d["text"] for d in wide.nodes(run.id) if d["seed"] is not None}
    res = replay_run(wide, run, "rebase", SearchConfig(width=8, seed=run.seed))
    added = [e for e in res.events if e["t"] == "add" and e["parent"] is not None]
    assert added and all(e["text"] in seeds.values() for e in added)


def test_rescore_with_the_same_prm_changes_nothing(wide, tmp_path):
    a = replay(wide, "rebase", 8)
    rescore(wide, OraclePRM(), name="oracle-again")
    b = replay(wide, "rebase", 8, prm="oracle-again")
    assert a["correct"] == b["correct"] and a["prm_calls"] == b["prm_calls"]
    with pytest.raises(WorkbenchError, match="already holds scores"):
        rescore(wide, OraclePRM(), name="oracle-again")


def test_unscored_paths_are_refused_or_filled_by_a_model_free_prm(lm, tmp_path):
    # best-of-N scores finished solutions only: beam over its tree needs partial scores the store lacks
    task = Countdown()
    store = TreeStore(tmp_path / "bon")
    search_many("best-of-n", Engine(lm, 1 << 15), OraclePRM(), task, task.problems("hard", 2, seed=0), SearchConfig(width=8), store=store)
    with pytest.raises(WorkbenchError, match="no oracle score of a path"):
        replay(store, "beam", 8, expand=8)
    r = replay(store, "beam", 8, fallback=OraclePRM(), expand=8)
    assert r["prm_misses"] > 0


def test_a_killed_study_resumes_without_repeating_a_run(lm, tmp_path, monkeypatch):
    import workbench.search.registry as reg
    task = Countdown()
    probs = task.problems("hard", 4, seed=0)
    whole = search_many("rebase", Engine(lm, 1 << 15), OraclePRM(), task, probs, SearchConfig(width=4), chunk=2, seeds=[0, 1])
    store, calls, real = TreeStore(tmp_path / "k"), [], TreeStore.run

    def dies_on_the_third(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3: raise KeyboardInterrupt("killed")
        return real(self, *a, **kw)
    monkeypatch.setattr(TreeStore, "run", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        reg.search_many("rebase", Engine(lm, 1 << 15), OraclePRM(), task, probs, SearchConfig(width=4), chunk=2, seeds=[0, 1], store=store)
    assert len(store) == 2
    monkeypatch.setattr(TreeStore, "run", real)     # the two stored runs are read back (a repeat would break the unique key)
    again = reg.search_many("rebase", Engine(lm, 1 << 15), OraclePRM(), task, probs, SearchConfig(width=4), chunk=2, seeds=[0, 1], store=store)
    assert len(store) == 4 and again["correct"] == whole["correct"]
    assert strip_clock(again)["tokens_generated"] == whole["tokens_generated"]


def test_a_failed_write_leaves_nothing(tmp_path, wide):
    store = TreeStore(tmp_path / "atomic")
    run = wide.runs()[0]
    rec = {"key": "k1", "algorithm": "x", "seed": 0, "start": 0, "meta": run.meta,
           "result": {"answers": [], "correct": [], "solutions": [], "counters": {}},
           "nodes": [(1, None, 0, 0, None, "[]", "", "[]", 0, 0, 0, None, 0)] * 2,   # a duplicate node id fails the insert
           "scores": [], "events": [], "embeddings": []}
    with pytest.raises(sqlite3.IntegrityError):
        store.add(rec)
    assert len(store) == 0 and store.db.execute("select count(*) from nodes").fetchone()[0] == 0


def test_bad_stores_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(WorkbenchError):
        TreeStore(tmp_path / "f")                      # a file where the folder should be
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other); db.execute("create table runs (a, b, c)"); db.commit(); db.close()
    with pytest.raises(WorkbenchError, match="not a tree store"):
        TreeStore(other)
    db = sqlite3.connect(other)
    assert [r[0] for r in db.execute("select name from sqlite_master")] == ["runs"]   # nothing was added to it
    db.close()
    with pytest.raises(WorkbenchError, match="no tree store"):
        replay(tmp_path / "empty", "beam", 4)


def test_replay_cannot_change_how_children_were_drawn(wide):
    run = wide.runs()[0]
    with pytest.raises(WorkbenchError, match="cannot change how children are drawn"):
        replay_run(wide, run, "beam", SearchConfig(width=4, temperature=0.7, seed=run.seed), expand=2)
    with pytest.raises(WorkbenchError, match="cannot be replayed"):
        replay(wide, "diverse-beam", 4)


def test_learned_prm_ledger_is_replayed_exactly(lm, tmp_path):
    # a learned PRM reads tokens (and costs FLOPs by its size): the replay gives back its ledger batch by batch
    from workbench.learned_prm import get_prm
    task = Countdown()
    prm = get_prm("learned", task=task, device="cpu")
    store = TreeStore(tmp_path / "learned")
    res = store.run("rebase", Engine(lm, 1 << 15), prm, task, task.problems("hard", 3, seed=0), SearchConfig(width=4))
    assert res.counters["prm_tokens"] > 0
    back = replay_run(store, store.runs()[0], "rebase")
    assert back.correct == res.correct and back.events == res.events
    assert strip_clock(back.counters) == {**strip_clock(res.counters), "misses": 0, "prm_misses": 0}


def test_a_replay_pool_holds_no_bytes(wide):
    # the replay's pool is on the meta device: a pool far larger than this machine's memory is fine
    from workbench.search.replay import ReplayEngine
    run = wide.runs()[0]
    run.meta["engine"]["pool"]["capacity_tokens"] = 1 << 24      # 80 GB of K/V at this model's 5 KB per token
    eng = ReplayEngine(wide, run)
    assert eng.pool.k.device.type == "meta" and eng.pool.capacity_tokens == 1 << 24
