"Property-based checks of the tree KV engine (hypothesis): random trees, random releases, two block sizes."
from collections import Counter
import pytest
import torch
from hypothesis import given, settings, strategies as st
from workbench.engine import Engine
from workbench.models import LM, tiny_llama
from workbench.tokenization import char_tokenizer

torch.set_num_threads(1)  # a 32-wide model gains nothing from threads, and they thrash on a busy machine
tok = char_tokenizer()
lm = LM(tiny_llama(tok, hidden=32, layers=2, heads=2, intermediate=64).eval(), tok)
STOP = set(range(4, 12))  # a few digits end a step, so rows of one batch finish at different lengths


def check_invariants(e: Engine):
    # Logits: every live node's logits, read through the pool, equal a fresh forward over its whole path.
    for n in list(e.live.values()):
        with torch.no_grad(): ref = lm.model(torch.tensor([e.path_ids(n)])).logits[0, -1]
        got = e.logits(n)
        assert torch.allclose(got, ref, atol=1e-4), (n.id, (got - ref).abs().max())
    # Blocks: free + used == total, each block's count = the live block tables holding it, free blocks unheld.
    p = e.pool
    assert len(set(p.free)) == len(p.free) and p.used_blocks + len(p.free) == p.n_blocks
    held = Counter(b for n in e.live.values() for b in n.blocks)
    assert all(p.refs[b] == held.get(b, 0) for b in range(p.n_blocks))
    assert not set(p.free) & set(held) and set(p.free) | set(held) == set(range(p.n_blocks))
    # Nodes: refs = kept + live children; a live node's block table covers exactly its path.
    for n in e.live.values():
        assert n.refs == (not n.released) + sum(c.alive for c in n.children) > 0
        assert n.parent is None or n.parent.alive
        assert n.stored in (n.n_path - 1, n.n_path) and (not n.children or n.stored == n.n_path)
        assert len(n.blocks) == -(-n.stored // p.block_size) and n.n_path == len(e.path_ids(n))
    if p.block_size == 1:   # the pool holds each live node's own stored tokens, nothing else
        assert p.used_blocks == sum(n.stored - (n.parent.n_path if n.parent else 0) for n in e.live.values())


@settings(max_examples=15, deadline=None)
@given(data=st.data(), block_size=st.sampled_from([1, 4, 16]), seed=st.integers(0, 2**31))
def test_random_trees_keep_logits_and_blocks_consistent(data, block_size, seed):
    e = Engine(lm, capacity_tokens=2048, block_size=block_size)
    g = torch.Generator().manual_seed(seed)
    for i, prompt in enumerate(data.draw(st.lists(st.sampled_from(["12+7=", "3*(4+5)=", "9-2=", "1"]), min_size=1, max_size=2))):
        e.add_root(prompt, problem=i)
    for _ in range(data.draw(st.integers(1, 5))):
        kept = [n for n in e.live.values() if not n.released]
        if not kept: break
        if data.draw(st.booleans()):
            nodes = data.draw(st.lists(st.sampled_from(kept), min_size=1, max_size=3, unique=True))
            reqs = [(n, data.draw(st.integers(0, 3))) for n in nodes]
            kids = e.expand(reqs, max_step_tokens=data.draw(st.integers(1, 6)), stop_ids=STOP, generator=g,
                            temperature=data.draw(st.sampled_from([0.0, 1.0])))
            assert [len(k) for k in kids] == [k for _, k in reqs]
        else:
            e.release(data.draw(st.sampled_from(kept)))
        check_invariants(e)
    for n in list(e.live.values()):
        if not n.released: e.release(n)
    assert e.pool.used_blocks == 0 and not e.live and e.pool.refs.sum() == 0


@pytest.fixture(scope="module")
def smol():
    "SmolLM2-135M-Instruct (Llama, 3 key/value heads for 9 query heads, 49k vocabulary), fetched once into the cache."
    from workbench import fetch
    from workbench.models import load
    fetch.fetch_model("smollm2-135m-instruct", quiet=True)
    return load("smollm2-135m-instruct", "cpu")


@settings(max_examples=4, deadline=None)
@given(data=st.data(), block_size=st.sampled_from([1, 16]), seed=st.integers(0, 2**31))
def test_random_trees_on_smollm2(smol, data, block_size, seed):
    "The logits invariant on a real model with grouped key/value heads: random trees, shared prompts, two problems."
    e = Engine(smol, capacity_tokens=4096, block_size=block_size)
    g = torch.Generator().manual_seed(seed)
    prompts = ["Question: Natalia sold clips to 48 of her friends in April. How many in May?\nAnswer:", "2+3="]
    for i, p in enumerate(data.draw(st.lists(st.sampled_from(prompts), min_size=1, max_size=2))): e.add_root(p, problem=i)
    for _ in range(data.draw(st.integers(1, 3))):
        kept = [n for n in e.live.values() if not n.released]
        nodes = data.draw(st.lists(st.sampled_from(kept), min_size=1, max_size=2, unique=True))
        e.expand([(n, data.draw(st.integers(1, 3))) for n in nodes], max_step_tokens=data.draw(st.integers(1, 5)), generator=g)
    for n in list(e.live.values()):
        with torch.no_grad(): ref = smol.model(torch.tensor([e.path_ids(n)])).logits[0, -1]
        assert torch.allclose(e.logits(n), ref, atol=1e-4), (n.id, (e.logits(n) - ref).abs().max())
