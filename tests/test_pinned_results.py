"""Pinned results: with the same seeds every search, quantizer, pruner and allocation gives bit-identical results
across refactors. The pins (`pinned_results.json`) were written by the code before the registry renovation; rewrite
them only for a deliberate change of behaviour: `WORKBENCH_WRITE_PINS=1 pytest tests/test_pinned_results.py`."""
import copy, hashlib, json, os
from pathlib import Path
import pytest, torch
from conftest import POLICY, TEXT_LM

PINS = Path(__file__).with_name("pinned_results.json")
WRITE = os.environ.get("WORKBENCH_WRITE_PINS") == "1"


def digest(model) -> str:
    "sha256 of every parameter and buffer, in name order, as stored."
    h = hashlib.sha256()
    for name, t in sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items()):
        h.update(name.encode()); h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


@pytest.fixture(scope="module")
def pins():
    got = {}
    yield got
    if WRITE:          # the pins that ran replace theirs; the others stay as they were
        old = json.loads(PINS.read_text()) if PINS.exists() else {}
        PINS.write_text(json.dumps({**old, **got}, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # float reductions depend on the thread count: pin results at one thread
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def check_pin(pins, key, value):
    value = json.loads(json.dumps(value))          # tuples -> lists, as stored
    pins[key] = value
    if WRITE: return
    expected = json.loads(PINS.read_text())
    assert key in expected, f"no pin for {key}: write the pins with WORKBENCH_WRITE_PINS=1"
    assert value == expected[key], f"{key} changed:\n got      {value}\n expected {expected[key]}"


# ---- searches: every algorithm on the same 3 hard problems, oracle PRM (and a noisy one), width 8 ----------------
SEARCH_CASES = [("greedy", "oracle"), ("best-of-n", "oracle"), ("majority", "oracle"), ("weighted-majority", "oracle"),
                ("beam", "oracle"), ("beam", "noisy"), ("dvts", "oracle"), ("rebase", "oracle"), ("rebase", "noisy"),
                ("ets", "oracle"), ("particle-filter", "oracle"), ("astar", "oracle"), ("mcts", "oracle"),
                ("diverse-beam", "oracle"), ("qstar", "oracle"), ("fetch-beam", "oracle"), ("fetch-rebase", "oracle"),
                ("qalign", "oracle"), ("rebase", "calibrated")]
COUNTERS = ("tokens_generated", "forward_passes", "prm_calls", "kv_tokens_ets_metric", "finished")


@pytest.fixture(scope="module")
def policy():
    from workbench.models import load
    return load(POLICY, device="cpu")


@pytest.mark.parametrize("algo,prm", SEARCH_CASES)
def test_search_pinned(pins, policy, algo, prm):
    from workbench.engine import Engine
    from workbench.learned_prm import get_prm
    from workbench.search.core import SearchConfig
    from workbench.search.registry import run_search
    from workbench.tasks import Countdown
    from workbench.models import load
    from workbench.search.registry import SEARCHES
    from workbench.tasks import ArithmeticChain
    task, lm = Countdown(), policy
    if SEARCHES[algo].votes:                             # votes need a hidden answer: chains, with their policy
        task, lm = ArithmeticChain(), load("chain-policy", device="cpu")
    probs = task.problems("hard", 3, seed=0)
    r = run_search(algo, Engine(lm, capacity_tokens=1 << 15), get_prm(prm, task=task, seed=0), task, probs,
                   SearchConfig(width=8, seed=0))       # every knob at its default (expand = 4 where there is one)
    assert all(r.knobs[k] == 4 for k in r.knobs if k == "expand")
    check_pin(pins, f"search/{algo}/{prm}", {"answers": r.answers, "correct": r.correct, "solutions": r.solutions,
                                             **{k: r.counters[k] for k in COUNTERS if k in r.counters}})


# ---- quantizers: text LM, 4 calibration windows of 128 tokens -------------------------------------------------------
@pytest.fixture(scope="module")
def text_lm():
    from workbench.models import load
    return load(TEXT_LM, device="cpu")


@pytest.fixture(scope="module")
def calib(text_lm):
    from workbench.corpus import read_text_split
    from workbench.quant.calib import calib_from_text
    return calib_from_text(text_lm.tokenizer, read_text_split(split="train"), 4, 128)


QUANT_CASES = {"rtn-w4g32": dict(method="rtn", bits=4, group_size=32), "rtn-w3-channel-sym": dict(method="rtn", bits=3, group_size=None, symmetric=True),
               "awq-w4g32": dict(method="awq", bits=4, group_size=32), "gptq-w4g32": dict(method="gptq", bits=4, group_size=32),
               "gptq-w3g64-actorder": dict(method="gptq", bits=3, group_size=64, act_order=True),
               "squeezellm-w3": dict(method="squeezellm", bits=3, kmeans_iters=10), "nf4-g64": dict(method="rtn", fmt="nf4", group_size=64),
               "fp4-g32": dict(method="rtn", fmt="fp4_e2m1", group_size=32), "fp8e4m3-channel": dict(method="rtn", fmt="fp8_e4m3", group_size=None)}


@pytest.mark.parametrize("case", list(QUANT_CASES))
def test_quantizer_pinned(pins, text_lm, calib, case):
    from workbench.quant.formats import QuantConfig
    from workbench.quant.quantize import quantize
    m = copy.deepcopy(text_lm.model)
    rep = quantize(m, QuantConfig(**QUANT_CASES[case]), calib=calib, storage="fake")
    check_pin(pins, f"quant/{case}", {"weights": digest(m), "stored_bytes": rep.stored_bytes,
                                      "bits_per_param": round(rep.bits_per_param, 9)})


def test_packed_quantizer_pinned(pins, text_lm, calib):
    from workbench.quant.formats import QuantConfig
    from workbench.quant.quantize import quantize
    m = copy.deepcopy(text_lm.model)
    rep = quantize(m, QuantConfig("gptq", 4, 32), calib=calib)
    check_pin(pins, "quant/gptq-w4g32-packed", {"weights": digest(m), "stored_bytes": rep.stored_bytes, "model_bytes": rep.model_bytes})


def test_hawq_pinned(pins, text_lm, calib):
    from workbench.quant.hawq import hawq_allocate, hutchinson_traces
    names = [n for n, mod in text_lm.model.named_modules() if isinstance(mod, torch.nn.Linear) and n != "lm_head"]
    torch.manual_seed(0)
    traces = hutchinson_traces(copy.deepcopy(text_lm.model), names, list(calib)[:2], max_iters=4, min_iters=4, seed=0)
    res = hawq_allocate(text_lm.model, traces, 3.5)
    check_pin(pins, "quant/hawq-3.5", {"bits": res.bits, "size_bits": res.size_bits})


# ---- pruners ----------------------------------------------------------------------------------------------------------
PRUNE_CASES = {"magnitude-0.5": dict(method="magnitude", sparsity=0.5), "magnitude-global-0.6": dict(method="magnitude", sparsity=0.6, scope="global"),
               "random-0.5": dict(method="random", sparsity=0.5), "lamp-0.7": dict(method="lamp", sparsity=0.7),
               "wanda-0.5": dict(method="wanda", sparsity=0.5), "wanda-2:4": dict(method="wanda", pattern="2:4"),
               "sparsegpt-0.6": dict(method="sparsegpt", sparsity=0.6), "sparsegpt-2:4-int4": dict(method="sparsegpt", pattern="2:4", bits=4),
               "dsnot-0.5": dict(method="dsnot", sparsity=0.5), "magnitude-4:8": dict(method="magnitude", pattern="4:8"),
               "heads-magnitude-0.5": dict(method="magnitude", sparsity=0.5, pattern="heads"),
               "channels-wanda-0.25": dict(method="wanda", sparsity=0.25, pattern="channels")}


@pytest.mark.parametrize("case", list(PRUNE_CASES))
def test_pruner_pinned(pins, text_lm, calib, case):
    from workbench.prune.api import prune
    from workbench.prune.core import PruneConfig
    m = copy.deepcopy(text_lm.model)
    rep = prune(m, PruneConfig(**PRUNE_CASES[case]), calib=calib)
    check_pin(pins, f"prune/{case}", {"weights": digest(m), **rep.totals()})


# ---- compression search: the configurations a strategy proposes, and one evaluation ------------------------------
def test_compression_search_pinned(pins):
    import numpy as np
    from workbench.explore.space import Evaluator, config_key, load_space, random_config
    space = load_space({"model": "text-lm", "layers": "model.layers.0.*", "precision": ["int3", "int4", "nf4", "int8", "fp16"],
                        "sparsity": [0.0, 0.5, "2:4"], "quant_method": ["rtn", "gptq"], "prune_method": ["magnitude", "wanda"]})
    rng = np.random.default_rng(0)
    configs = [random_config(space, rng) for _ in range(3)]
    ev = Evaluator(space, eval_tokens=512, calib_windows=4)
    res = [ev(c) for c in configs]
    check_pin(pins, "explore/random-3", {"configs": [config_key(c) for c in configs], "kl": [r["kl"] for r in res],
                                         "ppl": [r["ppl"] for r in res], "bytes": [r["bytes"] for r in res]})
