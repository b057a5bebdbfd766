"QuantLinear's fused CPU kernels (nbs/31) against its dequantize path, and `workbench bench kernels` (nbs/38a)."
import copy, io, json
import pytest, torch
import torch.nn.functional as F
from torch import nn
from conftest import TEXT_LM, assert_clean_error, run_cli
from workbench.core import WorkbenchError
from workbench.models import load
from workbench.quant.formats import QuantConfig, rtn
from workbench.quant.quantize import quantize
from workbench.quant.storage import QuantLinear, dequant_only, from_qweight, kernel_kinds, pack_for_kernel

torch.set_num_threads(1)
KERNEL_OPS = {"int4pack": "aten::_weight_int4pack_mm_for_cpu", "int8pack": "aten::_weight_int8pack_mm",
              "dyn4": "aten::_dyn_quant_matmul_4bit"}


@pytest.fixture(scope="module")
def text_lm(): return load(TEXT_LM, device="cpu")


def weight(rows=256, cols=512, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.02


def rel(a, b): return ((a.float() - b.float()).norm() / b.float().norm()).item()


def bf16_err(x, W):
    "Relative error of the same product in bf16 (activations and weight rounded): what a kernel path may cost."
    return rel(F.linear(x.bfloat16(), W.bfloat16()), x @ W.T)


def ops_run(fn) -> set[str]:
    "Names of the aten ops `fn()` ran."
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p: fn()
    return {e.key for e in p.key_averages()}


CASES = [(QuantConfig(bits=4, group_size=64), "int4pack"), (QuantConfig(bits=4, group_size=128), "int4pack"),
         (QuantConfig(bits=4, group_size=128, symmetric=True), "int4pack"), (QuantConfig(bits=4, group_size=32), "int4pack"),
         (QuantConfig(bits=4, group_size=512), "int4pack"), (QuantConfig(bits=4, group_size=None), "int4pack"),
         (QuantConfig(bits=3, group_size=64), "int4pack"), (QuantConfig(bits=2, group_size=128), "int4pack"),
         (QuantConfig(bits=8, group_size=None), "int8pack"), (QuantConfig(bits=8, group_size=None, symmetric=True), "int8pack"),
         (QuantConfig(bits=6, group_size=None), "int8pack")]


@pytest.mark.parametrize("cfg,kind", CASES, ids=[f"{c.bits}bit-g{c.group_size}{'-sym' if c.symmetric else ''}" for c, _ in CASES])
def test_kernel_matches_dequantized_reference_and_is_taken(cfg, kind):
    ql = from_qweight(rtn(weight(), cfg), bias=torch.randn(256) * 0.1)
    assert ql.kernel == kind and kernel_kinds(ql)[0] == kind
    x = torch.randn(2, 3, 512, generator=torch.Generator().manual_seed(1))
    Wd = ql.dequantize()
    ref = F.linear(x, Wd, ql.bias)
    with torch.no_grad():
        ran = ops_run(lambda: ql(x))
        y = ql(x)
    assert KERNEL_OPS[kind] in ran and ql.kernel_bytes > 0                 # the fused op ran, not a decode of the weight
    assert y.shape == ref.shape and y.dtype == torch.float32
    tol = 1.5 * bf16_err(x.reshape(-1, 512), Wd)                            # ≈ 0.3 %: bf16 rounding, with 50 % headroom
    assert rel(y - ql.bias, ref - ql.bias) <= tol, (rel(y - ql.bias, ref - ql.bias), tol)
    with dequant_only(): assert torch.equal(ql(x), ref)                     # the fallback: fp32, as before


def test_kernel_tolerance_is_tight_enough_to_catch_a_wrong_zero_point():
    "The test above can fail: the same layer with its zero points off by one is far outside the tolerance."
    qw = rtn(weight(), QuantConfig(bits=4, group_size=64))
    ql = from_qweight(qw)
    bad = from_qweight(qw); bad.zero.copy_((qw.zero + 1).clamp(max=15))
    x = torch.randn(4, 512)
    assert rel(bad(x), F.linear(x, ql.dequantize())) > 10 * bf16_err(x, ql.dequantize())


def test_dyn4_is_asked_for_only_and_close_with_int8_activations():
    ql = from_qweight(rtn(weight(), QuantConfig(bits=4, group_size=64, symmetric=True)))
    assert ql.kernel == "int4pack" and "dyn4" in kernel_kinds(ql)
    assert ql.prepare_kernel("dyn4") == "dyn4" and ql.kernel == "dyn4"
    x = torch.randn(3, 512)
    with torch.no_grad(): assert KERNEL_OPS["dyn4"] in ops_run(lambda: ql(x))
    assert rel(ql(x), x @ ql.dequantize().T) < 0.03                         # int8 activations: ~0.7 %
    asym = from_qweight(rtn(weight(), QuantConfig(bits=4, group_size=64)))
    with pytest.raises(WorkbenchError, match="cannot run"): asym.prepare_kernel("dyn4")   # it has no zero points


@pytest.mark.parametrize("cfg,shape", [(QuantConfig(fmt="nf4", group_size=64), (256, 512)), (QuantConfig(fmt="fp8_e4m3", group_size=64), (256, 512)),
                                       (QuantConfig(bits=5, group_size=64), (256, 512)), (QuantConfig(bits=8, group_size=128), (256, 512)),
                                       (QuantConfig(bits=4, group_size=48), (256, 96)), (QuantConfig(bits=4, group_size=64), (200, 512)),
                                       (QuantConfig("squeezellm", 3), (256, 512))])
def test_formats_no_kernel_represents_fall_back(cfg, shape):
    from workbench.quant.squeezellm import squeezellm
    W = weight(*shape)
    qw = rtn(W, cfg) if cfg.method == "rtn" else squeezellm(W, torch.ones_like(W), QuantConfig("squeezellm", 3, kmeans_iters=3, sparse_frac=0.01))
    ql = from_qweight(qw)
    assert ql.kernel == "dequant" and kernel_kinds(ql) == ["dequant"]
    x = torch.randn(3, shape[1])
    with torch.no_grad(): ran = ops_run(lambda: ql(x))
    assert not ran & set(KERNEL_OPS.values())
    assert torch.equal(ql(x), F.linear(x, qw.dequantize())) and ql.kernel_bytes == 0


def test_three_bit_runs_int4pack_and_other_devices_fall_back():
    "3-bit (and 2-bit) integer codes fit the int4 kernel exactly (codes + 4, zero term s·(4 − z)); off CPU: dequantize."
    ql = from_qweight(rtn(weight(), QuantConfig(bits=3, group_size=128)))
    assert ql.kernel == "int4pack" and kernel_kinds(ql, "cuda") == ["dequant"] and kernel_kinds(ql, "meta") == ["dequant"]
    x = torch.randn(5, 512)
    assert rel(ql(x), x @ ql.dequantize().T) <= 1.5 * bf16_err(x, ql.dequantize())
    assert ql.prepare_kernel("int4pack") == "int4pack" and ql.to("meta").kernel == "dequant"   # asked for, but not there
    assert ql.kernel_bytes == 0                                            # moving dropped the CPU layout


def test_gradients_and_dequant_only_take_the_dequantize_path():
    ql = from_qweight(rtn(weight(), QuantConfig(bits=4, group_size=64)))
    x = torch.randn(2, 512, requires_grad=True)
    y = ql(x)
    assert torch.equal(y, F.linear(x, ql.dequantize()))
    y.sum().backward()
    assert torch.allclose(x.grad, ql.dequantize().sum(0).expand(2, -1), atol=1e-6)
    with dequant_only():
        assert ql.kernel == "dequant"
        with dequant_only(): pass                                         # nested: leaving the inner block keeps the outer one
        assert ql.kernel == "dequant"
    assert ql.kernel == "int4pack"


def test_layout_follows_the_buffers_and_stays_out_of_checkpoints(tmp_path):
    qw = rtn(weight(), QuantConfig(bits=4, group_size=64))
    ql = from_qweight(qw)
    x = torch.randn(3, 512)
    ql(x)
    state = {k: v.clone() for k, v in ql.state_dict().items()}
    assert set(state) == {"qweight", "scale", "zero"}                      # nothing of the layout is stored
    other = from_qweight(rtn(weight(seed=5), QuantConfig(bits=4, group_size=64)))
    ql.load_state_dict(other.state_dict())                                 # new weights: the layout is rebuilt
    assert rel(ql(x), x @ other.dequantize().T) < 0.01
    buf = io.BytesIO(); torch.save(ql, buf)
    assert len(buf.getvalue()) < ql.stored_bytes + 8192                    # pickles leave the layout behind
    assert copy.deepcopy(ql).kernel_bytes == 0
    bf = copy.deepcopy(ql).to(torch.bfloat16)                              # a dtype cast keeps the stored format
    assert bf.scale.dtype == torch.float16 and bf.zero.dtype == torch.uint8 and torch.equal(bf.dequantize(), other.dequantize())
    yb = bf(x.bfloat16())
    assert yb.dtype == torch.bfloat16 and rel(yb, x @ other.dequantize().T) < 0.01


def test_bad_kernel_requests_are_refused():
    ql = from_qweight(rtn(weight(), QuantConfig(bits=4, group_size=64)))
    with pytest.raises(WorkbenchError, match="use one of int4pack, dequant"): ql.prepare_kernel("int8pack")
    with pytest.raises(WorkbenchError, match="unknown kernel path"): pack_for_kernel(nn.Sequential(ql), "fast")
    from workbench.benchmarks.kernels import bench_kernels
    with pytest.raises(WorkbenchError, match="unknown kinds"): bench_kernels(kinds=("fp32", "w2"), decode=False)
    with pytest.raises(WorkbenchError, match="threads must be"): bench_kernels(threads=0, decode=False)
    assert_clean_error(*run_cli("bench", "kernels", "--threads", "0", "--json"), "threads must be ≥ 1")


def _greedy(model, ids, n):
    with torch.no_grad(): return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                                pad_token_id=0)[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("cfg,kind", [(QuantConfig("rtn", 4, 64), "int4pack"), (QuantConfig("rtn", 8, None), "int8pack"),
                                      (QuantConfig("gptq", 4, 128), "int4pack")])
def test_quantized_text_lm_same_on_both_paths(text_lm, cfg, kind):
    m = copy.deepcopy(text_lm.model)
    from workbench.corpus import corpus_dir, read_text_split
    from workbench.quant.calib import calib_from_text
    calib = calib_from_text(text_lm.tokenizer, read_text_split(corpus_dir(), "train"), 4, 128) if cfg.needs_calib else None
    quantize(m, cfg, calib=calib)
    assert set(pack_for_kernel(m).values()) == {kind}
    ids = torch.tensor([text_lm.tokenizer.encode("Once upon a time there was")])
    with torch.no_grad():
        fast = m(ids).logits
        with dequant_only(): ref = m(ids).logits
    assert rel(fast, ref) < 0.02                                           # measured ≈ 0.3 %
    assert (fast[0, -1].argmax() == ref[0, -1].argmax()).item()
    with dequant_only(): cont = _greedy(m, ids, 16)
    full = torch.cat([ids, torch.tensor([cont])], 1)                        # teacher-forced: the same prefix on both paths
    with torch.no_grad():
        fast = m(full).logits[0, ids.shape[1] - 1:-1]
        with dequant_only(): ref = m(full).logits[0, ids.shape[1] - 1:-1]
    top2 = ref.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05                                 # bf16 activations may flip a near-tie, nothing else
    assert clear.sum() >= 8 and (fast.argmax(-1) == ref.argmax(-1))[clear].all()


@pytest.mark.slow
def test_quantized_smollm2_same_greedy_continuation_on_both_paths():
    lm = load("smollm2-135m-instruct", device="cpu")
    quantize(lm.model, QuantConfig("rtn", 4, 64))
    assert set(pack_for_kernel(lm.model).values()) == {"int4pack"}
    ids = torch.tensor([lm.tokenizer.encode("The sky is blue because")])
    with torch.no_grad():
        fast = lm.model(ids).logits
        with dequant_only(): ref = lm.model(ids).logits
    assert rel(fast, ref) < 0.02
    cont = _greedy(lm.model, ids, 16)
    with dequant_only(): assert cont == _greedy(lm.model, ids, 16)


def test_bench_kernels_small_run(text_lm):
    from workbench.benchmarks.kernels import DECODE_KINDS, KINDS, bench_kernels
    res = bench_kernels(quick=True, model=TEXT_LM, device="cpu", shapes=((512, 256),), batches=(1,), new_tokens=3, threads=1)
    assert [r["kind"] for r in res["rows"]] == list(KINDS) and set(res["decode_tokens_per_s"]) == set(DECODE_KINDS)
    paths = {r["kind"]: r["path"] for r in res["rows"]}
    assert paths["w4_packed"] == "int4pack" and paths["w8_packed"] == "int8pack" and paths["w4_dequant"] == "dequant"
    assert res["threads"] == 1 and all(r["ms"] > 0 for r in res["rows"])
    json.dumps(res)                                                         # the --json output is plain JSON


@pytest.mark.slow
def test_cli_bench_kernels_quick_json():
    rc, out, err = run_cli("bench", "kernels", "--quick", "--json", "--threads", "1", timeout=900)
    assert rc == 0, err[-2000:]
    res = json.loads(out)
    assert {"rows", "decode", "decode_tokens_per_s", "targets", "threads", "notes"} <= res.keys()
    assert {r["layer_shape"] for r in res["rows"]} == {"2048x2048", "576x576", "576x1536", "1536x576", "576x49152"}
    assert {r["batch"] for r in res["rows"]} == {1, 8, 64}
    assert {"fp32", "bf16", "w4_packed", "w8_packed", "w4_dyn", "w4_dequant"} <= set(res["decode_tokens_per_s"])
    assert all(k in r for r in res["rows"] for k in ("layer_shape", "batch", "kind", "ms"))
    assert all(t.keys() == {"goal", "value", "met"} for t in res["targets"].values()) and len(res["targets"]) == 2
