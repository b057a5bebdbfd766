"The engine's byte ledger against the memory the process really takes (the resident set, `core.measured_peak`)."
import json, subprocess, sys
from pathlib import Path
import pytest, torch
from workbench.core import measured_peak
from workbench.engine import Engine
from workbench.models import LM, tiny_llama
from workbench.tokenization import char_tokenizer

torch.set_num_threads(1)
tok = char_tokenizer()
# wide enough that one expansion's attention reads are tens of MiB: the resident set's ~1 MiB of noise stays small
lm = LM(tiny_llama(tok, hidden=256, layers=4, heads=4, intermediate=512, max_len=2048).eval(), tok)


def ledger_and_resident(share_prefix:bool) -> tuple[int, int, bool]:
    "(ledger bytes, measured resident-set peak, held peak ≥ pool use) of one 64-row expansion of a 961-token root."
    e = Engine(lm, capacity_tokens=8192, block_size=16, device="cpu")
    e.share_prefix = share_prefix
    root = e.add_root("1+2=" * 240)                                   # 961 tokens, read by 64 rows
    e.stats.reset(); used = e.pool.used_bytes
    _, measured = measured_peak(lambda: e.expand([(root, 64)], max_step_tokens=4, stop_ids=set(),
                                                 generator=torch.Generator().manual_seed(0)), "cpu")
    ledger = e.pool.used_bytes - used + e.stats.transient_peak_bytes   # new pool pages + the largest transient
    return ledger, measured, e.stats.held_peak_bytes >= e.pool.used_bytes


@pytest.mark.parametrize("share_prefix", [False, True])
def test_ledger_matches_the_resident_set(share_prefix):
    # in a fresh process: a test worker's heap carries what earlier tests left in it, which the resident set then shows
    code = f"import json, test_engine_memory as t; print(json.dumps(t.ledger_and_resident({share_prefix})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ledger, measured, held_ok = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.75 * measured <= ledger <= 1.35 * measured + 8 * 2**20, (ledger / 2**20, measured / 2**20)   # ~MiB of noise
    assert held_ok


def test_shared_prefix_reads_the_prompt_once():
    "Cascade attention: the same tokens, and a fraction of the transient memory of per-row reads."
    got = {}
    for share in (False, True):
        e = Engine(lm, capacity_tokens=8192, block_size=16, device="cpu"); e.share_prefix = share
        root = e.add_root("1+2=" * 240); e.stats.reset()
        kids = e.expand([(root, 64)], max_step_tokens=4, generator=torch.Generator().manual_seed(0))[0]
        got[share] = ([c.tokens for c in kids], e.stats.transient_peak_bytes)
    assert got[True][0] == got[False][0]
    assert got[True][1] < got[False][1] / 5
