"The engine benchmark's peers (nbs/28b): valid children, the same sampling settings, measured memory, the row schema."
import pytest, torch, transformers
from workbench.benchmarks.engine import (SYSTEMS, BatchedGenerate, ContinuousBatching, GenerateNumReturnSequences, PerPathPeer,
                                         bench_engine, make_system, peak_memory, ratios, targets)
from workbench.engine import Engine
from workbench.models import load
from workbench.search.core import SearchConfig
from workbench.tasks import Countdown

PEERS = (PerPathPeer, BatchedGenerate, GenerateNumReturnSequences, ContinuousBatching)

@pytest.fixture(scope="module")
def lm():
    transformers.logging.set_verbosity_error()
    return load("countdown-policy", device="cpu")

@pytest.fixture(scope="module")
def prompts():
    t = Countdown()
    return [t.prompt(p) for p in t.problems("hard", 2)]

def _make(cls, lm):
    return Engine(lm, capacity_tokens=2048, block_size=16) if cls is Engine else cls(lm, capacity_tokens=2048) if cls is ContinuousBatching else cls(lm)

def _expand(cls, lm, prompts, **kw):
    s = _make(cls, lm)
    try:
        roots = [s.add_root(p, i) for i, p in enumerate(prompts)]
        kids = s.expand([(roots[0], 3), (roots[1], 2)], generator=torch.Generator().manual_seed(0), **kw)
        more = s.expand([(kids[0][0], 2), (kids[1][1], 1)], generator=torch.Generator().manual_seed(1), **kw)
        return s, kids, more
    finally:
        if hasattr(s, "close"): s.close()

@pytest.mark.parametrize("cls", PEERS)
def test_peer_children_are_valid_steps(cls, lm, prompts):
    s, kids, more = _expand(cls, lm, prompts, max_step_tokens=24)
    nl = lm.tokenizer.encode("\n", add_special_tokens=False)[0]
    assert [len(k) for k in kids] == [3, 2] and [len(k) for k in more] == [2, 1]
    flat = [c for k in kids + more for c in k]
    for c in flat:
        assert 1 <= len(c.tokens) <= 24 and c.tokens[-1] == nl and nl not in c.tokens[:-1]   # a step ends at its first "\n"
        assert c.text == lm.tokenizer.decode(c.tokens, skip_special_tokens=True) and c.n_path == c.parent.n_path + len(c.tokens)
    assert all(c.parent is kids[0][0] for c in more[0]) and more[1][0].depth == 2
    assert s.stats.tokens_generated == sum(len(c.tokens) for c in flat)

@pytest.mark.parametrize("cls", PEERS)
def test_peer_greedy_and_top_p_match_the_engine(cls, lm, prompts):
    "Temperature 0 and top_p → 0 both leave one token: every peer must take the engine's exact steps."
    ref = [[c.tokens for c in k] for k in _expand(Engine, lm, prompts, temperature=0)[1]]
    for kw in (dict(temperature=0), dict(temperature=1.0, top_p=1e-9)):
        assert [[c.tokens for c in k] for k in _expand(cls, lm, prompts, **kw)[1]] == ref, kw

@pytest.mark.parametrize("cls", PEERS)
def test_peer_honours_max_step_tokens_and_stop_ids(cls, lm, prompts):
    _, kids, more = _expand(cls, lm, prompts, max_step_tokens=2)
    assert all(1 <= len(c.tokens) <= 2 for k in kids + more for c in k) and any(len(c.tokens) == 2 for k in kids for c in k)
    digits = {lm.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)} - {None, lm.tokenizer.unk_token_id}
    _, kids, _ = _expand(cls, lm, prompts, max_step_tokens=24, stop_ids=digits)
    assert all(c.tokens[-1] in digits and not digits & set(c.tokens[:-1]) for k in kids for c in k if len(c.tokens) < 24)

def test_continuous_batching_on_this_thread_is_generate_batch(lm, prompts):
    "The in-thread generation loop (timed and profiled) returns what `generate_batch` itself returns."
    outs = []
    for in_thread in (True, False):
        s = ContinuousBatching(lm, capacity_tokens=2048, in_thread=in_thread)
        roots = [s.add_root(p, i) for i, p in enumerate(prompts)]
        kids = s.expand([(roots[0], 3), (roots[1], 2)], generator=torch.Generator().manual_seed(0))
        more = s.expand([(kids[0][0], 2)], generator=torch.Generator().manual_seed(1))
        s.close()
        outs.append([c.tokens for k in kids + more for c in k])
    assert outs[0] == outs[1]
    assert lm.model.config._attn_implementation == "sdpa"   # restored after close

def test_peak_memory_measures_a_known_allocation():
    def f():
        x = torch.ones(16 * 2**20)            # 64 MiB, freed before the end
        del x
        return torch.ones(2**20)              # 4 MiB, kept
    out, peak = peak_memory(f, "cpu")
    assert out.numel() == 2**20 and abs(peak - 64 * 2**20) <= 0.03 * 64 * 2**20, peak
    two = lambda: (torch.ones(8 * 2**20), torch.ones(8 * 2**20))   # two live at once: 64 MiB
    assert abs(peak_memory(two, "cpu")[1] - 64 * 2**20) <= 0.03 * 64 * 2**20

def test_peak_memory_counts_a_pool_built_inside(lm):
    eng, peak = peak_memory(lambda: Engine(lm, capacity_tokens=4096, block_size=16), "cpu")
    pool = eng.pool.k.nbytes + eng.pool.v.nbytes
    assert pool <= peak <= 1.5 * pool

def test_bench_engine_rows(lm):
    res = bench_engine(model="countdown-policy", algorithms=("beam",), widths=(4,), n=1, repeats=2, device="cpu")
    assert [r["system"] for r in res["rows"]] == list(SYSTEMS)
    for r in res["rows"]:
        assert {"model", "algorithm", "width", "system", "tokens", "tokens_per_s", "peak_bytes", "wall_s"} <= set(r)
        assert r["model"] == "countdown-policy" and r["width"] == 4 and r["tokens"] > 0 and r["peak_bytes"] > 0
        assert r["repeats"] == 2                                             # a second timed pass repeated the same tokens
        assert abs(r["tokens_per_s"] - r["tokens"] / r["wall_s"]) < 1e-6 * r["tokens_per_s"] and r["same_tokens_in_memory_pass"]
    e = res["rows"][-1]
    assert e["block_size"] == 16 and e["pool_bytes"] > 0 and e["peak_bytes"] >= e["pool_bytes"]   # the pool is built inside the pass
    (r,) = res["ratios"]
    best = max(res["rows"][:-1], key=lambda x: x["tokens_per_s"])
    assert r["best_peer"] == best["system"] and r["engine_over_best_peer_tokens_per_s"] == e["tokens_per_s"] / best["tokens_per_s"]
    assert res["targets"] == targets(ratios(res["rows"])) and res["workloads"]["countdown-policy"]["task"] == "countdown"

def test_bench_engine_refuses_bad_input():
    from workbench.core import WorkbenchError
    with pytest.raises(WorkbenchError, match="unknown task"): bench_engine(model="countdown-policy", task="nope")
    with pytest.raises(WorkbenchError, match="unknown systems"): bench_engine(model="countdown-policy", systems=("vllm",))
    with pytest.raises(WorkbenchError, match="unknown system"): make_system("vllm", None, 1, 16, SearchConfig())

def test_peak_memory_sees_frees_across_profiler_windows():
    "A long run is profiled in windows of module calls: a block freed in a later window still leaves the total."
    lin = torch.nn.Linear(8, 8)
    def f():
        x = torch.ones(16 * 2**20)                          # 64 MiB
        for _ in range(600): lin(torch.zeros(1, 8))         # three windows of 256 module calls
        del x
        return torch.ones(8 * 2**20)                        # 32 MiB: 96 MiB if the free were lost
    assert abs(peak_memory(f, "cpu")[1] - 64 * 2**20) <= 0.01 * 64 * 2**20
