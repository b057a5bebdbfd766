"""Replay against online on a real model: SmolLM2-135M-Instruct on GSM8K (8-shot chain of thought, chat template).

One stored tree (16 draws of each prompt, then one continuation per path: a best-of-16 tree, every step scored by the
outcome verifier) and, side by side, majority vote and best-of-N online and replayed at widths 4 and 16.
Run: OMP_NUM_THREADS=2 python docs/results/replay_smollm2.py > docs/results/replay_smollm2.txt"""
import json, tempfile, time
from pathlib import Path
from workbench.experiment import search_setup
from workbench.search.core import SearchConfig
from workbench.search.registry import search_many
from workbench.search.replay import replay
from workbench.search.store import TreeStore
from workbench.tasks import get_task

task = get_task("gsm8k")
probs = task.problems("test", 6, 0)
setup = search_setup("smollm2-135m-instruct", "outcome", task, probs, 16, max_step_tokens=48, chunk=3, capacity_tokens=40_000)
store = TreeStore(Path(tempfile.mkdtemp()) / "gsm8k-tree")
cfg = dict(max_step_tokens=48, max_depth=12)
t0 = time.perf_counter()
search_many("tree", setup.engine, setup.prm, task, probs, SearchConfig(width=4096, **cfg), chunk=3, store=store, branching="16,1")
gen = time.perf_counter() - t0
rows, on_total, rp_total = [], 0.0, 0.0
for algo in ("majority", "best-of-n"):
    for w in (4, 16):
        t0 = time.perf_counter(); on = search_many(algo, setup.engine, setup.prm, task, probs, SearchConfig(width=w, **cfg), chunk=3)
        on_s = time.perf_counter() - t0
        t0 = time.perf_counter(); rp = replay(store, algo, w)
        rp_s = time.perf_counter() - t0
        on_total, rp_total = on_total + on_s, rp_total + rp_s
        rows.append({"algorithm": algo, "width": w, "online_accuracy": on["accuracy"], "replay_accuracy": rp["accuracy"],
                     "same_correct": on["correct"] == rp["correct"], "misses": rp["misses"],
                     "online_tokens": on["tokens_generated"], "replay_tokens": rp["tokens_generated"],
                     "online_s": round(on_s, 2), "replay_s": round(rp_s, 3)})
        print(json.dumps(rows[-1]), flush=True)
print(json.dumps({"model": "smollm2-135m-instruct", "task": "gsm8k", "n": len(probs), "tree": "16,1", "generate_s": round(gen, 1),
                  "online_s_total": round(on_total, 1), "replay_s_total": round(rp_total, 2), "ratio": rp_total / on_total}))
