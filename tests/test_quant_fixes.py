"""Issue 21's quantization fixes: AWQ (q/k not clipped, block-output scale search, reusable result), HAWQ (clamped
traces, the method's own error), minifloat ties to even, MXFP4 / NVFP4."""
import copy, warnings
import pytest, torch
from torch import nn
from conftest import TEXT_LM
from workbench.core import WorkbenchError
from workbench.corpus import read_text_split
from workbench.models import load
from workbench.quant.calib import calib_from_text, capture_inputs, hessian
from workbench.quant.formats import QuantConfig, decode, encode, fake_quant, format_grid, group_view, quant_params, rtn
from workbench.quant.quantize import quantize

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def text_lm(): return load(TEXT_LM, device="cpu")

@pytest.fixture(scope="module")
def calib(text_lm): return calib_from_text(text_lm.tokenizer, read_text_split(split="train"), 8, 128)

@pytest.fixture(scope="module")
def awq_run(text_lm, calib):
    "AWQ W4 g128 on the text LM, with its recorded scales and clips."
    from workbench.quant.awq import record_awq
    m = copy.deepcopy(text_lm.model)
    with record_awq() as res: rep = quantize(m, QuantConfig("awq", 4, 128), calib=calib, storage="fake")
    return m, rep, res


# ---- AWQ ---------------------------------------------------------------------------------------------------------------
def test_awq_never_clips_q_and_k(awq_run):
    _, rep, res = awq_run
    clipped = {l["name"]: l["clipped"] for l in rep.layers}
    assert len(clipped) == 28
    for n, c in clipped.items(): assert c == (n.rsplit(".", 1)[1] not in ("q_proj", "k_proj")), n
    assert set(res.clip) == {n for n, c in clipped.items() if c}


def test_awq_alpha_zero_is_always_a_candidate_and_is_rtn(text_lm, calib):
    from workbench.quant.awq import awq_scale_search
    W = text_lm.model.model.layers[0].mlp.down_proj.weight.detach()
    X = torch.randn(512, W.shape[1])
    s, a, errs = awq_scale_search([W], X, QuantConfig("awq", 4, 128), alphas=[0.5, 0.75])
    assert len(errs) == 3 and (a == 0.0) == torch.equal(s, torch.ones_like(s))
    assert min(errs) <= errs[0]
    a_m, r_m = copy.deepcopy(text_lm.model), copy.deepcopy(text_lm.model)
    quantize(a_m, QuantConfig("awq", 4, 128, alpha_grid=1, clip=False), calib=calib, storage="fake")
    quantize(r_m, QuantConfig("rtn", 4, 128), storage="fake")
    for (n, p), q in zip(a_m.state_dict().items(), r_m.state_dict().values()): assert torch.equal(p, q), n


def test_awq_scale_search_measures_the_attention_output(text_lm, calib):
    "The q/k/v group's error is that of the whole attention output; the chosen s does better there than RTN (α = 0)."
    from workbench.quant.awq import awq_scale_search, group_error_fn
    model = copy.deepcopy(text_lm.model); attn = model.model.layers[0].self_attn
    names = [f"model.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
    mods = [model.get_submodule(n) for n in names]
    X, _ = capture_inputs(model, dict(zip(names, mods)), calib, model.model.layers[0])
    outs = []
    def attn_out(Ws):          # independent of the search: the model's own forward, read at the attention's output
        keep = [m.weight.data for m in mods]
        for m, w in zip(mods, Ws): m.weight.data = w
        outs.clear()
        with torch.no_grad(): model(input_ids=torch.stack(calib), use_cache=False)
        for m, w in zip(mods, keep): m.weight.data = w
        return outs[0]
    cfg = QuantConfig("awq", 3, 128)
    Ws = [m.weight.detach().clone() for m in mods]
    s, alpha, errs = awq_scale_search(Ws, X[names[0]], cfg, err_fn=group_error_fn(model, names, X, calib[0]))
    q = lambda s: [rtn(W * s, cfg).dequantize() / s for W in Ws]
    h = attn.register_forward_hook(lambda m, a, o: outs.append(o[0].detach()))
    try:
        ref = attn_out(Ws)
        e_awq, e_rtn = (((attn_out(q(v)) - ref) ** 2).sum().item() for v in (s, torch.ones_like(s)))
    finally: h.remove()
    assert alpha > 0 and e_awq < e_rtn
    assert errs[0] == pytest.approx(e_rtn, rel=1e-3)     # the search's α = 0 error is the attention output's


def test_awq_result_round_trip_reproduces_the_model_bit_for_bit(text_lm, awq_run, tmp_path):
    from workbench.quant.awq import apply_awq, load_awq, save_awq
    m, _, res = awq_run
    assert len(res.groups) == 16 and all(g.fold_into for g in res.groups)
    back = load_awq(save_awq(res, tmp_path / "awq"))
    assert [g.layers for g in back.groups] == [g.layers for g in res.groups] and back.clip.keys() == res.clip.keys()
    fresh = apply_awq(copy.deepcopy(text_lm.model), back)
    quantize(fresh, QuantConfig("rtn", 4, 128), storage="fake")
    for (n, p), q in zip(m.state_dict().items(), fresh.state_dict().values()): assert torch.equal(p, q), n
    with pytest.raises(WorkbenchError, match="not an AWQ result"): load_awq(tmp_path)


# ---- HAWQ --------------------------------------------------------------------------------------------------------------
def test_hawq_clamps_negative_traces(text_lm):
    from workbench.quant.hawq import TraceEstimate, hawq_allocate, hawq_costs
    names = [f"model.layers.0.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
    n = {k: text_lm.model.get_submodule(k).weight.numel() for k in names}
    tr = {names[0]: TraceEstimate(-5.0 * n[names[0]], n[names[0]], 4, 1.0, False),
          names[1]: TraceEstimate(1.0 * n[names[1]], n[names[1]], 4, 0.0, True),
          names[2]: TraceEstimate(2.0 * n[names[2]], n[names[2]], 4, 0.0, True)}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        om, _ = hawq_costs(text_lm.model, tr, QuantConfig(), (2, 4, 8))
        res = hawq_allocate(text_lm.model, tr, 4.5, (2, 4, 8))
    assert any("negative" in str(x.message) for x in w)
    assert all(v >= 0 for d in om.values() for v in d.values()) and set(om[names[0]].values()) == {0.0}
    assert res.clamped == [names[0]] and res.objective >= 0


def test_hawq_prices_the_methods_own_error(text_lm, calib):
    from workbench.quant.gptq import gptq
    from workbench.quant.hawq import TraceEstimate, hawq_costs
    name = "model.layers.1.self_attn.o_proj"
    W = text_lm.model.get_submodule(name).weight.detach()
    tr = {name: TraceEstimate(3.0 * W.numel(), W.numel(), 4, 0.0, True)}
    X = capture_inputs(text_lm.model, {name: text_lm.model.get_submodule(name)}, calib, text_lm.model.model.layers[1])[0][name]
    om = hawq_costs(text_lm.model, tr, QuantConfig("gptq", 4, 64), (3, 4), calib)[0][name]
    for b in (3, 4):
        want = 3.0 * float(((gptq(W, hessian(X), QuantConfig("gptq", b, 64)).dequantize() - W) ** 2).sum())
        assert om[b] == pytest.approx(want, rel=1e-6)
        assert om[b] != pytest.approx(3.0 * float(((rtn(W, QuantConfig("rtn", b, 64)).dequantize() - W) ** 2).sum()), rel=1e-3)
    with pytest.raises(WorkbenchError, match="pass calib"): hawq_costs(text_lm.model, tr, QuantConfig("gptq"), (4,))


# ---- minifloat rounding: exact ties go to the even neighbour ---------------------------------------------------------
def _round(vals, fmt):
    cfg = QuantConfig(fmt=fmt, group_size=None)
    one = torch.ones(1)
    return decode(encode(torch.tensor(vals), one, None, cfg), one, None, cfg).tolist()

def test_minifloat_ties_round_to_even():
    assert _round([-2.5, 2.5, -0.25, 0.75, -1.25, 1.75, 3.5, -5.0], "fp4_e2m1") == [-2, 2, 0, 1, -1, 2, 4, -4]
    # E4M3: between 1 (mantissa 000) and 1.125 (001) the tie goes down, between 1.125 and 1.25 (010) up; both signs
    assert _round([1.0625, 1.1875, -1.0625, -1.1875, 2 ** -10, 272.0, -304.0], "fp8_e4m3") == [1.0, 1.25, -1.0, -1.25, 0.0, 256.0, -320.0]
    g = format_grid("fp8_e4m3"); ties = (g[1:] + g[:-1]) / 2
    assert _round(ties.tolist(), "fp8_e4m3") == ties.to(torch.float8_e4m3fn).float().tolist()   # torch's RNE cast
    g = format_grid("fp8_e5m2"); ties = (g[1:] + g[:-1]) / 2
    assert _round(ties.tolist(), "fp8_e5m2") == ties.to(torch.float8_e5m2).float().tolist()


# ---- MXFP4 / NVFP4 -----------------------------------------------------------------------------------------------------
def test_mx_and_nv_fp4_configs_and_bits(text_lm):
    mx, nv = QuantConfig(fmt="mxfp4"), QuantConfig(fmt="nvfp4")
    assert (mx.bits, mx.group_size, nv.bits, nv.group_size) == (4, 32, 4, 16)
    with pytest.raises(WorkbenchError, match="blocks of 32"): QuantConfig(fmt="mxfp4", group_size=64)
    W = text_lm.model.model.layers[0].mlp.down_proj.weight.detach()
    assert rtn(W, mx).theory_bits() / W.numel() == 4.25
    assert rtn(W, nv).theory_bits() / W.numel() == 4.5 + 32 / W.numel()
    rep = quantize(copy.deepcopy(text_lm.model), mx)                          # through the driver, packed
    assert rep.bits_per_param == 4.25


def test_mxfp4_scale_is_a_power_of_two_and_grid_values_are_exact():
    torch.manual_seed(0)
    W = torch.randn(64, 256) * torch.logspace(-3, 1, 64)[:, None]
    s, z = quant_params(group_view(W, 32), QuantConfig(fmt="mxfp4"))
    assert z is None and torch.equal(torch.exp2(torch.log2(s).round()), s)
    amax = group_view(W, 32).abs().amax(-1)
    assert torch.equal(s, torch.exp2(torch.floor(torch.log2(amax)) - 2))    # 2^(floor(log2 amax) - emax), emax(E2M1) = 2
    e2m1 = format_grid("fp4_e2m1")
    on = e2m1[torch.randint(0, 15, (8, 64))]; on[:, ::16] = -6.0
    for fmt in ("mxfp4", "nvfp4"):
        for k in (-7, 0, 3):
            assert torch.equal(fake_quant(on * 2.0 ** k, QuantConfig(fmt=fmt)), on * 2.0 ** k), (fmt, k)


def test_nvfp4_beats_mxfp4_on_gaussian_weights():
    torch.manual_seed(1)
    W = torch.randn(256, 512) * 0.02
    mse = lambda fmt: (fake_quant(W, QuantConfig(fmt=fmt)) - W).pow(2).mean().item()
    assert mse("nvfp4") < mse("mxfp4")
    s, _ = quant_params(group_view(W, 16), QuantConfig(fmt="nvfp4"))
    t = 2.0 ** torch.ceil(torch.log2(W.abs().max() / (6 * 448)))          # per-tensor scale (a power of two here)
    assert torch.equal((s / t).to(torch.float8_e4m3fn).float(), s / t)        # block scales are E4M3 values
