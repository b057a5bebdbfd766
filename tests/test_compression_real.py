"""Compression on the fetched real models: block streaming is model-agnostic (grouped KV heads, Gemma-3's
sliding-window layers), and GPTQ / AWQ / Wanda do on a real model what their papers claim, measured against the
float model token by token (KL, paired ΔNLL)."""
import copy
import pytest, torch
from torch import nn
from workbench import fetch
from workbench.experiment import compression_setup
from workbench.metrics import compare_to_reference, reference_scores
from workbench.models import load
from workbench.prune.api import prune
from workbench.prune.core import PruneConfig
from workbench.quant.calib import BlockStream, capture_inputs, find_blocks
from workbench.quant.formats import QuantConfig
from workbench.quant.quantize import quantize

SMOL, QWEN, GEMMA = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma3-270m"


@pytest.fixture(scope="module")
def smol():
    fetch.fetch_model(SMOL, quiet=True)
    torch.manual_seed(0)
    s = compression_setup(SMOL, eval_tokens=2048, calib_windows=8, device="cpu")
    return s, reference_scores(s.lm.model, s.eval_ids, s.context)


@pytest.mark.slow
@pytest.mark.parametrize("name", [SMOL, GEMMA, QWEN])
def test_block_stream_sees_what_a_forward_from_the_start_sees(name):
    fetch.fetch_model(name, quiet=True)
    lm = load(name, "cpu")
    calib = [torch.randint(10, 5000, (64,)) for _ in range(2)]
    prefix, blocks = find_blocks(lm.model)
    stream = BlockStream(lm.model, calib, batch_size=2)
    types = set()
    for i in range(min(len(blocks), 7)):           # Gemma-3: five sliding-window layers, then a global one
        types.add((getattr(lm.model.config, "layer_types", None) or ["full_attention"] * len(blocks))[i])
        name_i = next(f"{prefix}.{i}.{n}" for n, m in blocks[i].named_modules() if isinstance(m, nn.Linear) and n.endswith("down_proj"))
        mod = lm.model.get_submodule(name_i)
        ref = capture_inputs(lm.model, {name_i: mod}, calib, stop_after=blocks[i], batch_size=2)[0][name_i]
        got = stream.capture({name_i: mod})[0][name_i]
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), (name, i)
        stream.advance()
    if name == GEMMA: assert len(types) == 2, types      # both attention types were streamed with their own kwargs


@pytest.mark.slow
@pytest.mark.bench      # AWQ and GPTQ on SmolLM2: minutes on 2 cores (`make test-bench`); the bench quant table measures the same
def test_gptq_and_awq_beat_rtn_on_smollm2_in_kl(smol):
    setup, ref = smol
    kl = {}
    for m in ("rtn", "gptq", "awq"):
        q = copy.deepcopy(setup.lm.model)
        quantize(q, QuantConfig(m, 4, 64), calib=setup.calib)
        kl[m] = compare_to_reference(q, ref)
    assert kl["awq"]["kl_ci"][1] < kl["rtn"]["kl_ci"][0], kl       # intervals apart: a real effect, not noise
    assert kl["gptq"]["kl"] < kl["rtn"]["kl"] and kl["gptq"]["top1"] > kl["rtn"]["top1"], kl
    assert all(k["top1"] < 1 and k["delta_nll"] > 0 for k in kl.values())


@pytest.mark.slow
def test_wanda_beats_magnitude_on_smollm2(smol):
    setup, ref = smol
    kl = {}
    for m in ("magnitude", "wanda"):
        q = copy.deepcopy(setup.lm.model)
        prune(q, PruneConfig(m, 0.5), calib=setup.calib)
        kl[m] = compare_to_reference(q, ref)
    assert kl["wanda"]["kl_ci"][1] < kl["magnitude"]["kl_ci"][0], kl
    assert kl["wanda"]["ppl"] < 0.8 * kl["magnitude"]["ppl"], kl
