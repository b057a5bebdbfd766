"Compression search: the non-dominated set, a sweep resumed after SIGKILL, local vs Ray fronts, CLI bad input."
import json, signal, sqlite3, subprocess, time
from pathlib import Path
import pytest
from conftest import WORKBENCH, run_cli
from test_cli import assert_clean_error
from workbench.explore.pareto import hypervolume, pareto_mask
from workbench.explore.strategies import pareto_ranks

SMALL = ["--preset", "quick", "--workers", "2"]


def test_nondominated_hand_made():
    pts = [[1, 9], [2, 7], [2, 8], [3, 7], [4, 4], [5, 5], [6, 1], [9, 9]]
    brute = [not any(all(q[i] <= p[i] for i in range(2)) and q != p for q in pts) for p in pts]
    assert list(pareto_mask(pts, ("min", "min"))) == brute == [True, True, False, False, True, False, True, False]
    assert list(pareto_mask([[1, 2], [1, 2], [2, 1]], ("min", "min"))).count(True) == 2   # a duplicate is kept once
    assert list(pareto_mask([[1, 9], [2, 7]], ("max", "min"))) == [False, True]
    assert list(pareto_ranks(pts))[:6] == [0, 0, 1, 1, 0, 1]
    # 2-D hypervolume by hand (compression.md §9.1): front (1,9),(2,7),(4,4),(6,1), ref (10,10)
    assert hypervolume(pts, ("min", "min"), [10, 10]) == pytest.approx(1 * 1 + 2 * 3 + 2 * 6 + 4 * 9)


def _count(db:Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as c: return c.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0]
    except sqlite3.Error: return 0


def _keys(db:Path) -> dict:
    with sqlite3.connect(db) as c:
        rows = c.execute("select t.number, a.value_json from trials t join trial_user_attributes a on a.trial_id = t.trial_id "
                         "where a.key = 'key' and t.state = 'COMPLETE'").fetchall()
    return {n: json.loads(v) for n, v in rows}


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    db, ref = tmp_path / "killed.db", tmp_path / "whole.db"
    args = ["sweep", *SMALL, "--strategy", "evolution", "--trials", "24", "--json"]
    p = subprocess.Popen([WORKBENCH, *args, "--store", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while _count(db) < 6 and p.poll() is None and time.time() - t0 < 300: time.sleep(0.2)
    assert p.poll() is None, "the sweep finished before it could be killed"
    p.send_signal(signal.SIGKILL); p.wait()
    before = _keys(db)
    assert 6 <= len(before) < 24
    rc, out, err = run_cli(*args, "--store", db, "--resume")
    assert rc == 0, err
    res = json.loads(out)
    after = _keys(db)
    assert all(after[n] == k for n, k in before.items())                       # nothing finished was lost
    assert len(set(after.values())) == len(after)                              # nothing evaluated twice
    assert res["reused"] == len(before) and res["evaluated_now"] == len(after) - len(before)
    rc, out, err = run_cli(*args, "--store", ref)                               # the same sweep, never killed
    assert rc == 0, err
    whole = json.loads(out)
    assert set(_keys(ref).values()) == set(after.values())
    assert [(t["bytes"], t["ppl"]) for t in whole["pareto"]] == [(t["bytes"], t["ppl"]) for t in res["pareto"]]
    assert whole["hypervolume"] == res["hypervolume"]


@pytest.mark.slow
def test_local_and_ray_fronts_equal(tmp_path):
    pytest.importorskip("ray")
    args = ["sweep", *SMALL, "--strategy", "nsga2", "--trials", "12", "--json"]
    out = {}
    for b in ("local", "ray"):
        rc, o, err = run_cli(*args, "--backend", b, "--store", tmp_path / f"{b}.db")
        assert rc == 0, err
        out[b] = json.loads(o)
    assert set(_keys(tmp_path / "local.db").values()) == set(_keys(tmp_path / "ray.db").values())
    assert out["local"]["pareto"] == out["ray"]["pareto"] and out["local"]["hypervolume"] == out["ray"]["hypervolume"]


@pytest.mark.parametrize("args,needles", [
    (["sweep", "--store", "x.db"], ["--preset quick"]),
    (["sweep", "--preset", "slow", "--store", "x.db"], ["unknown preset", "quick"]),
    (["sweep", "--preset", "quick", "--strategy", "annealing", "--store", "x.db"], ["unknown strategy", "nsga2"]),
    (["sweep", "--preset", "quick", "--trials", "0", "--store", "x.db"], ["trials must be"]),
    (["sweep", "--preset", "quick", "--backend", "slurm", "--store", "x.db"], ["unknown backend"]),
    (["sweep", "no/such.yaml", "--store", "x.db"], ["does not exist"]),
    (["sweep", ".", "--store", "x.db"], ["is a directory"]),
    (["sweep", "--preset", "quick", "--store", "/proc/wb/x.db"], ["cannot be written"]),
])
def test_sweep_bad_input(args, needles, tmp_path):
    assert_clean_error(*run_cli(*args, "--json", cwd=tmp_path), *needles)


def test_sweep_bad_space_and_store(tmp_path):
    (tmp_path / "s.yaml").write_text("space:\n  bits: [5]\n")
    assert_clean_error(*run_cli("sweep", "s.yaml", "--store", "x.db", "--json", cwd=tmp_path), "bits", "allowed: 2, 3, 4, 8")
    (tmp_path / "s.yaml").write_text("space:\n  bits: [99]\n")
    assert_clean_error(*run_cli("sweep", "s.yaml", "--store", "x.db", "--json", cwd=tmp_path), "bad choice 99", "16 (fp16)")
    (tmp_path / "junk.db").write_text("not a database at all")
    assert_clean_error(*run_cli("sweep", *SMALL, "--store", "junk.db", "--resume", "--json", cwd=tmp_path), "not a SQLite file")
    assert (tmp_path / "junk.db").read_text() == "not a database at all" and not (tmp_path / "junk.db.lock").exists()
    (tmp_path / "x.txt").write_text("")
    assert_clean_error(*run_cli("sweep", "--preset", "quick", "--store", "x.txt", "--json", cwd=tmp_path), ".db")


def test_store_in_use_is_refused(tmp_path):
    import os
    from workbench.explore.sweep import store_lock
    with store_lock(tmp_path / "busy.db"):                            # as a running sweep holds it
        assert_clean_error(*run_cli("sweep", *SMALL, "--store", tmp_path / "busy.db", "--resume", "--json"),
                           "in use by another sweep", f"pid {os.getpid()}")
    assert not (tmp_path / "busy.db").exists()


@pytest.mark.slow
def test_concurrent_sweeps_on_one_store(tmp_path):
    # two sweeps started at once on one new store: whichever way they interleave, no trial is stored twice
    db = tmp_path / "shared.db"
    args = [WORKBENCH, "sweep", *SMALL, "--trials", "12", "--store", str(db), "--resume", "--json"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in results)[0] == 0, results
    for rc, out, err in results:
        if rc != 0: assert_clean_error(rc, out, err, "in use by another sweep")
    keys = _keys(db)
    assert len(keys) == len(set(keys.values()))                      # nothing stored twice
    assert len(set(keys.values())) == sum(json.loads(o)["evaluated_now"] for rc, o, _ in results if rc == 0)
    rc, out, err = run_cli(*args[1:])                                  # the store then resumes with nothing to redo
    assert rc == 0, err
    assert json.loads(out)["evaluated_now"] == 0 and _keys(db) == keys and not Path(f"{db}.lock").exists()
