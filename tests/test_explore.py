"Compression search: the non-dominated set, an evaluator that order cannot corrupt, a sweep resumed after SIGKILL, local vs Ray fronts, CLI bad input."
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
    "trial number -> (config key, rung) of every finished evaluation."
    with sqlite3.connect(db) as c:
        rows = c.execute("select t.number, a.value_json, r.value_json from trials t "
                         "join trial_user_attributes a on a.trial_id = t.trial_id and a.key = 'key' "
                         "join trial_user_attributes r on r.trial_id = t.trial_id and r.key = 'rung' "
                         "where t.state = 'COMPLETE'").fetchall()
    return {n: (json.loads(k), json.loads(r)) for n, k, r in rows}


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
    assert [(t["bytes"], t["kl"]) for t in whole["pareto"]] == [(t["bytes"], t["kl"]) for t in res["pareto"]]
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
    (["sweep", "--preset", "quick", "--seed-with", "hawk", "--store", "x.db"], ["unknown seed_with", "knapsack"]),
    (["bench", "sweep", "--model", "gpt5"], ["--model must be", "smollm2-135m-instruct"]),
    (["bench", "sweep", "--strategies", "random,annealing", "--quick"], ["unknown strategy", "+knapsack"]),
    (["sweep", "no/such.yaml", "--store", "x.db"], ["does not exist"]),
    (["sweep", ".", "--store", "x.db"], ["is a directory"]),
    (["sweep", "--preset", "quick", "--store", "/proc/wb/x.db"], ["cannot be written"]),
])
def test_sweep_bad_input(args, needles, tmp_path):
    assert_clean_error(*run_cli(*args, "--json", cwd=tmp_path), *needles)


def test_sweep_bad_space_and_store(tmp_path):
    (tmp_path / "s.yaml").write_text("space:\n  bits: [1]\n")
    assert_clean_error(*run_cli("sweep", "s.yaml", "--store", "x.db", "--json", cwd=tmp_path), "bits", "allowed: 2, 3, 4, 8")
    (tmp_path / "s.yaml").write_text("space:\n  precision: [int4, fp5]\n")
    assert_clean_error(*run_cli("sweep", "s.yaml", "--store", "x.db", "--json", cwd=tmp_path), "bad choice 'fp5'", "nf4", "fp8_e4m3")
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


# ---- the evaluator and the objective ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def awq_space():
    from workbench.explore.space import load_space
    return load_space({"model": "text-lm", "unit": "sublayer", "bits": [3, 4, 16], "quant_method": ["awq", "rtn"]})


def test_evaluation_order_does_not_change_results(awq_space):
    # AWQ folds scales into the RMSNorm weights; a restore of the searched linears alone left 6 of 9 norms changed
    import torch
    from workbench.explore.space import Evaluator, apply_config, uniform_config
    sp = awq_space
    fp = uniform_config(sp)
    awq = tuple(sp.spec(i, precision="int3", quant_method="awq") for i in range(len(sp)))
    rtn = uniform_config(sp, 4)
    a, b = Evaluator(sp, eval_tokens=1024, calib_windows=4), Evaluator(sp, eval_tokens=1024, calib_windows=4)
    order1 = {k: a(c)["kl"] for k, c in (("fp", fp), ("awq", awq), ("rtn", rtn))}
    a.cache.clear()
    again = {k: a(c)["kl"] for k, c in (("rtn", rtn), ("fp", fp), ("awq", awq))}
    order2 = {k: b(c)["kl"] for k, c in (("awq", awq), ("rtn", rtn), ("fp", fp))}
    assert order1 == again == order2
    norms = {n: t for n, t in a.float_state.items() if "norm" in n}
    apply_config(a, awq)
    assert any(not torch.equal(t, norms[n]) for n, t in a.lm.model.state_dict().items() if "norm" in n)   # AWQ did fold
    a.restore()
    assert all(torch.equal(t, a.float_state[n]) for n, t in a.lm.model.state_dict().items())


def test_kl_sees_what_perplexity_misses():
    # the audit: on 2,048 tokens the ppl order of fp16 / W8 / W4 came out wrong; paired KL orders them with disjoint intervals
    from workbench.explore.space import Evaluator, load_space, uniform_config
    sp = load_space({"model": "text-lm", "bits": [4, 8, 16], "head": False})
    ev = Evaluator(sp, eval_tokens=2048)
    r = {b: ev(uniform_config(sp, b)) for b in (16, 8, 4)}
    assert r[16]["kl"] < r[8]["kl"] < r[4]["kl"]
    assert r[16]["kl_ci"][1] < r[8]["kl_ci"][0] and r[8]["kl_ci"][1] < r[4]["kl_ci"][0]
    assert r[4]["tokens"] == 8 * 255
    rel = lambda x, k: (x[f"{k}_ci"][1] - x[f"{k}_ci"][0]) / abs(x[k])
    assert rel(r[4], "kl") < 0.5 * rel(r[4], "delta_nll")        # the paired KL's interval is far tighter than ΔNLL's


def test_knapsack_beats_uniform_and_random_at_equal_size():
    import numpy as np
    from workbench.explore.knapsack import additivity, knapsack, sensitivity_table
    from workbench.explore.space import Evaluator, config_bytes, load_space, uniform_config
    from workbench.explore.strategies import RandomSearch
    sp = load_space({"model": "text-lm", "unit": "sublayer", "bits": [2, 3, 4, 8, 16]})
    ev = Evaluator(sp, eval_tokens=2048)
    t = sensitivity_table(ev, windows=4)
    for b in (3, 4):      # at int4's size uniform int4 may itself be the knapsack's answer: never worse, strictly better at int3
        u = uniform_config(sp, b); k = knapsack(t, sp, config_bytes(sp, u))
        assert config_bytes(sp, k) <= config_bytes(sp, u) and ev(k, windows=8)["kl"] <= ev(u, windows=8)["kl"]
        if b == 3: assert ev(k, windows=8)["kl"] < 0.98 * ev(u, windows=8)["kl"]       # 0.200 vs 0.207 with 9 sub-layer units
    rand = RandomSearch(sp, seed=0).ask(10)
    wins = [ev(knapsack(t, sp, config_bytes(sp, c)), windows=4)["kl"] <= ev(c, windows=4)["kl"] * 1.02 for c in rand]
    assert sum(wins) >= 9, wins
    add = additivity(t, rand, [ev(c, windows=4)["kl"] for c in rand])
    assert add["spearman"] > 0.9


def test_stratified_random_spans_the_bits_range():
    import numpy as np
    from workbench.explore.space import config_stats, load_space, random_config
    from workbench.explore.strategies import RandomSearch
    sp = load_space({"model": "text-lm", "bits": [2, 3, 4, 8, 16]})
    avg = np.array([config_stats(sp, c)["avg_bits"] for c in RandomSearch(sp, seed=0).ask(24)])
    rng = np.random.default_rng(0)
    iid = np.array([config_stats(sp, random_config(sp, rng))["avg_bits"] for _ in range(24)])
    assert avg.min() < 3.5 and avg.max() > 12 and avg.std() > 3          # the whole range, evenly
    assert 4 < iid.min() and iid.max() < 9.5 and iid.std() < 1.5          # independent uniform draws pile up near 6.6


def test_joint_prune_quantize_keeps_compensation():
    # pruned + GPTQ runs SparseGPT's joint mode: mask and int grid in one pass, zeros kept, better than prune-then-RTN
    import torch
    from workbench.explore.space import Evaluator, apply_config, load_space
    sp = load_space({"model": "text-lm", "layers": "model.layers.*", "bits": [4], "sparsity": [0.5], "head": False,
                     "quant_method": ["gptq", "rtn"], "prune_method": ["wanda", "magnitude"]})
    ev = Evaluator(sp, eval_tokens=1024, calib_windows=8)
    joint = tuple(sp.spec(i, quant_method="gptq", prune_method="wanda") for i in range(len(sp)))
    assert all(s.joint for s in joint)
    naive = tuple(sp.spec(i, quant_method="rtn", prune_method="magnitude") for i in range(len(sp)))
    apply_config(ev, joint)
    w = ev.lm.model.get_submodule(sp.members[0][0]).weight
    assert abs((w == 0).float().mean().item() - 0.5) < 0.01
    for row in w[:4]: assert len(torch.unique(row[row != 0])) <= 16              # one int4 grid per row
    assert ev(joint)["kl"] < ev(naive)["kl"]


def test_bench_sweep_json_fields(tmp_path):
    rc, out, err = run_cli("bench", "sweep", "--quick", "--seeds", "1", "--trials", "6", "--strategies", "uniform,random,knapsack", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert set(res["strategies"]) == {"uniform", "random", "knapsack"}
    for s in res["strategies"].values():
        assert {"hv_mean", "hv_ci", "trials", "wall_s", "coverage", "qd_score"} <= set(s) and s["trials"] == 6
        assert s["hv_ci"][0] <= s["hv_mean"] <= s["hv_ci"][1]
    assert res["additivity"]["spearman"] > 0.8 and res["rungs"][-1]["tokens"] >= 4000
