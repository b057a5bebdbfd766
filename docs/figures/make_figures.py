"""Figures of the README, from the shipped models (run: .venv/bin/python docs/figures/make_figures.py).

pass@k curves of the Countdown policy on the test (4 numbers) and hard (5–6 numbers) splits, with the unbiased
estimator over 64 samples per problem, and the greedy accuracy as a dashed line.
"""
import json
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from workbench.core import data_dir
from workbench.evaluate import complete
from workbench.metrics import pass_at_k
from workbench.models import load
from workbench.tasks import Countdown

OUT = Path(__file__).parent
lm, task, n, samples = load(data_dir() / "models" / "countdown-policy", device="cpu"), Countdown(), 100, 64
ks = [1, 2, 4, 8, 16, 32, 64]
fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=150)
summary = {}
for split, color in (("test", "tab:blue"), ("hard", "tab:red")):
    probs = task.problems(split, n, seed=0)
    greedy = sum(task.is_correct(p, c[0]) for p, c in zip(probs, complete(lm, task, probs, greedy=True))) / n
    correct = [sum(task.is_correct(p, s) for s in ss) for p, ss in zip(probs, complete(lm, task, probs, n_samples=samples))]
    curve = [sum(pass_at_k(samples, c, k) for c in correct) / n for k in ks]
    summary[split] = {"greedy": greedy, "pass_at_k": dict(zip(ks, curve))}
    ax.plot(ks, curve, "o-", color=color, label=f"{split}: pass@k (64 samples)")
    ax.axhline(greedy, color=color, ls="--", lw=1, label=f"{split}: greedy {greedy:.0%}")
ax.set_xscale("log", base=2); ax.set_xticks(ks, [str(k) for k in ks]); ax.set_ylim(0, 1)
ax.set_xlabel("k (samples)"); ax.set_ylabel("accuracy"); ax.grid(alpha=0.3)
ax.set_title("Countdown policy (1.3 M params): greedy vs pass@k, 100 problems per split", fontsize=9)
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout(); fig.savefig(OUT / "passk.png")
(OUT / "passk.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
