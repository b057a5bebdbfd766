"Studies on Ray workers and into a tree store: the same results, the same trees, as one process searching alone."
import json, sys
import pytest
from conftest import POLICY, run_cli
from test_cli import assert_clean_error

CLOCKS = ("wall_s", "seconds", "solver_s")


def unclock(x):
    "`x` without its wall-clock fields (at any depth): all that may differ between two runs of one study."
    if isinstance(x, dict): return {k: unclock(v) for k, v in x.items() if k not in CLOCKS}
    if isinstance(x, list): return [unclock(v) for v in x]
    return x


def store_rows(store) -> dict:
    "Run key -> everything the store holds of that run (clocks left out)."
    out = {}
    for r in store.runs():
        out[r.key] = dict(meta=r.meta, answers=r.answers, correct=r.correct, solutions=r.solutions, counters=unclock(r.counters),
                          nodes=store.nodes(r.id), scores={p: store.scores(r.id, p) for p in store.prms(r.id)},
                          events=unclock(store.events(r.id)), embeddings={t: v.tolist() for t, v in store.embeddings(r.id).items()})
    return out


def small_study(prm="noisy"):
    from workbench.experiment import search_setup
    from workbench.tasks import Countdown
    task = Countdown()
    return search_setup(POLICY, prm, task, task.problems("hard", 4, seed=0), width=4, chunk=2, device="cpu")


@pytest.fixture
def one_thread():
    "Search with one thread, as each Ray worker does (the thread count is restored after the test)."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_store_keeps_every_run_and_changes_nothing(tmp_path, one_thread):
    from workbench.search.core import SearchConfig
    from workbench.search.registry import search_units
    from workbench.search.store import TreeStore
    s, cfg = small_study(), SearchConfig(width=4)
    plain = s.many("rebase", cfg, seeds=[0, 1])
    store = TreeStore(tmp_path / "trees")
    kept = s.many("rebase", cfg, seeds=[0, 1], store=store)
    assert unclock(kept) == unclock(plain)
    assert plain["tokens_generated"] > 0 and len(plain["correct"]) == 4
    units = search_units(4, 2, [0, 1])
    assert len(store) == len(units) == 4
    for seed, i, j in units:                   # every unit is in the store, under the key a rerun looks up
        run = store.lookup("rebase", s.engine, s.prm, s.task, s.problems[i:j], SearchConfig(width=4, seed=seed))
        assert run is not None and (run.seed, run.start) == (seed, i) and len(run.correct) == j - i
        nodes = store.nodes(run.id)
        assert nodes[0]["id"] == 0 and len(nodes) > j - i                 # numbered from 0 in every run, the whole tree
    again = s.many("rebase", cfg, seeds=[0, 1], store=store)         # read back, not searched again
    assert len(store) == 4 and again["correct"] == plain["correct"] and again["tokens_generated"] == plain["tokens_generated"]


def test_ray_missing_is_refused(monkeypatch):
    from workbench.core import WorkbenchError
    from workbench.experiment import search_backend
    monkeypatch.setitem(sys.modules, "ray", None)        # `import ray` raises ImportError
    with pytest.raises(WorkbenchError, match="pip install ray"): search_backend("ray", workers=2)
    assert search_backend("local") is None               # the core library needs no ray


@pytest.fixture
def cli(monkeypatch, capsys):
    "Run `workbench ARGS` in this process (no interpreter start-up): (exit code, stdout, stderr)."
    from workbench.cli import main
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["workbench", *map(str, args)])
        try: main(); rc = 0
        except SystemExit as e: rc = e.code or 0
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def test_cli_ray_missing_refused_before_loading(cli, monkeypatch):
    import workbench.models
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(workbench.models, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert_clean_error(*cli("search", "rebase", "--n", "2", "--backend", "ray", "--json"), "pip install ray")


@pytest.mark.parametrize("args,needles", [
    (["--backend", "slurm"], ["unknown backend 'slurm'", "local or ray"]),
    (["--address", "127.0.0.1:6379"], ["--backend ray only"]),
    (["--backend", "ray", "--workers", "0"], ["--workers must be ≥ 1"]),
    (["--backend", "ray", "--address", "127.0.0.1:1"], ["nothing answers", "127.0.0.1:1"]),   # at once, not after minutes
    (["--save-trees", "afile"], ["is a file, not a folder"]),
    (["--save-trees", "afile/trees"], ["cannot be created", "is a file"]),
    (["--save-trees", "junk"], ["not a tree store"]),
])
def test_search_cli_bad_store_or_backend(cli, tmp_path, monkeypatch, args, needles):
    import workbench.models
    (tmp_path / "afile").write_text("in the way")
    (tmp_path / "junk").mkdir(); (tmp_path / "junk" / "trees.sqlite").write_text("not a database at all " * 50)
    before = sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(workbench.models, "load", lambda *a, **k: pytest.fail("a model was loaded"))   # refused before
    assert_clean_error(*cli("search", "rebase", "--n", "2", *args, "--json"), *needles)
    assert sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*")) == before    # nothing written


def test_search_cli_save_trees_resumes(cli, tmp_path):
    from workbench.search.store import TreeStore
    args = ("search", "rebase", "--n", "4", "--width", "4", "--chunk", "2", "--seeds", "0,1", "--save-trees", tmp_path / "trees", "--json")
    rc, first, err = cli(*args)
    assert rc == 0, err
    store = TreeStore(tmp_path / "trees")
    assert len(store) == 4                                   # 2 chunks × 2 seeds
    rows = store_rows(store)
    rc, second, err = cli(*args)                             # every run read back
    assert rc == 0, err
    assert unclock(json.loads(second)) == unclock(json.loads(first))
    assert json.loads(second)["wall_s"] == json.loads(first)["wall_s"]   # not even searched again: the stored clocks
    assert len(store) == 4 and store_rows(store) == rows


@pytest.mark.slow
def test_ray_study_same_as_local(tmp_path, one_thread):
    "A local Ray cluster of 2 workers: the same summary, and the same trees under the same run keys, as searching here."
    from workbench.experiment import RayWorkers
    from workbench.search.core import SearchConfig
    from workbench.search.store import TreeStore
    s, cfg = small_study(), SearchConfig(width=4)
    here, there = TreeStore(tmp_path / "here"), TreeStore(tmp_path / "there")
    local = s.many("rebase", cfg, seeds=[0, 1], store=here)
    with RayWorkers(2) as w:
        s.backend = w
        on_ray = s.many("rebase", cfg, seeds=[0, 1], store=there)
        plain = s.many("rebase", cfg, seeds=[0, 1])          # without a store: no records travel
    assert unclock(on_ray) == unclock(local) and unclock(plain) == unclock(local)
    assert local["tokens_generated"] > 0 and local["prm_calls"] > 0
    a, b = store_rows(here), store_rows(there)
    assert len(a) == 4 and a.keys() == b.keys()
    for key in a:
        for part in a[key]: assert a[key][part] == b[key][part], (key, part)


@pytest.mark.slow
def test_search_cli_ray(tmp_path, monkeypatch):
    "`workbench search --backend ray` prints what the local backend prints, and resumes a store the local one wrote."
    from workbench.search.store import TreeStore
    # each Ray actor runs one torch thread; the local run must too, or its float sums (log-probabilities) differ in the last bits
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ("search", "rebase", "--n", "4", "--width", "4", "--chunk", "2", "--seeds", "0,1", "--prm", "noisy", "--json")
    rc, local, err = run_cli(*args, "--save-trees", tmp_path / "local")
    assert rc == 0, err
    rc, ray, err = run_cli(*args, "--save-trees", tmp_path / "ray", "--backend", "ray", "--workers", "2")
    assert rc == 0, err
    assert unclock(json.loads(ray)) == unclock(json.loads(local))
    assert store_rows(TreeStore(tmp_path / "ray")) == store_rows(TreeStore(tmp_path / "local"))


def test_bench_search_backend_options(cli, monkeypatch):
    import workbench.models
    rc, out, _ = cli("bench", "search", "--help")
    assert rc == 0 and "--backend" in out and "--workers" in out and "--address" in out
    rc, out, _ = cli("bench", "ets", "--help")            # a benchmark that runs here only takes none of them
    assert rc == 0 and "--backend" not in out and "--workers" not in out
    monkeypatch.setattr(workbench.models, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert_clean_error(*cli("bench", "search", "--quick", "--backend", "slurm", "--json"), "unknown backend 'slurm'")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert_clean_error(*cli("bench", "search", "--quick", "--backend", "ray", "--json"), "pip install ray")
