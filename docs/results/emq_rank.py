# Held-out Spearman rho of EMQ's evolved proxy vs the hand proxies (the 52b notebook's demo as a script)
import numpy as np, torch
torch.set_num_threads(1)
from workbench.explore.space import Evaluator, load_space, random_config
from workbench.explore.proxy_search import ProxyFeatures, rank_against_measured
from workbench.models import load
lm = load("text-lm", "cpu")
for head in (True, False):
    space = load_space({"unit": "sublayer", "head": head, "precision": ["int2", "int3", "int4", "nf4", "fp4_e2m1", "fp8_e4m3", "int8", "fp16"]}, lm.model)
    ev = Evaluator(space, eval_tokens=1024); feats = ProxyFeatures(ev)
    for name, targets in (("wide 2.5-14 bits", np.linspace(2.5, 14, 48)), ("fixed 5 bits", np.full(48, 5.0))):
        rng = np.random.default_rng(11)
        cfgs = [random_config(space, rng, t) for t in targets]
        kl = [ev(c, windows=2)["kl"] for c in cfgs]
        rep = rank_against_measured(ev, cfgs, kl, feats, seed=0)
        print(f"head={head} {name}: held-out rho", {k: round(v, 3) for k, v in rep["rho_test"].items()}, rep["expr"], flush=True)
