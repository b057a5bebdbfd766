"GGUF export (`workbench.quant.checkpoint.export_gguf`, `workbench export`): llama.cpp's blocks bit for bit, round trips, refusals."
import json
import numpy as np
import pytest
import torch
import gguf
from gguf import GGMLQuantizationType as GT
from conftest import TEXT_LM, assert_clean_error, run_cli
from workbench.core import WorkbenchError
from workbench.models import load
from workbench.quant import checkpoint as ck
from workbench.quant.checkpoint import export_gguf, ggml_blocks, ggml_qweight, gguf_reference, llama_permute

# Allowed max |Δlogit| between the re-imported file and the workbench's model of the same values: float32 summation
# order only. Rounding the Q4_0/Q8_0 scales to fp16 alone moves text-lm's logits by 7.5e-3; Q4_0 itself by ~1 (text-lm) to ~25 (SmolLM2).
TOL = 1e-4
TEXT = "The function returns a list of the values, 12345 times.\n\nIt reads"


@pytest.fixture(scope="module")
def text_lm():
    return load(TEXT_LM, device="cpu")


def reimport(path, monkeypatch, tmp_path):
    "Load a GGUF the way the workbench does: `load(x.gguf)` converts it through transformers' GGUF loader into the cache."
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    return load(path, device="cpu")


@torch.no_grad()
def logit_gaps(back, ref, fp, ids):
    "(max |Δ| file vs reference, max |Δ| float model vs reference) on one sequence."
    x = torch.tensor([ids])
    r = ref(x).logits
    return (back(x).logits - r).abs().max().item(), (fp(x).logits - r).abs().max().item()


# ---- llama.cpp's reference formulas, one block at a time in float32 (ggml-quants.c: quantize_row_q4_0_ref, _q8_0_ref)

def _c_q4_0(block):
    f32 = np.float32
    amax, mx = f32(0), f32(0)
    for v in block:
        if amax < abs(v): amax, mx = abs(v), v
    d = f32(mx / f32(-8))
    idn = f32(f32(1) / d) if d else f32(0)
    q = [min(15, int(f32(f32(v * idn) + f32(8.5)))) for v in block]      # (int8_t)(x + 8.5f): truncation
    return np.frombuffer(np.float16(d).tobytes() + bytes(q[j] | (q[j + 16] << 4) for j in range(16)), np.uint8)

def _c_q8_0(block):
    f32 = np.float32
    d = f32(max(abs(v) for v in block) / f32(127))
    idn = f32(f32(1) / d) if d else f32(0)
    rf = lambda x: int(np.sign(x) * np.floor(abs(np.float64(x)) + 0.5))  # roundf: halves away from zero
    return np.frombuffer(np.float16(d).tobytes() + np.array([rf(f32(v * idn)) for v in block], np.int8).tobytes(), np.uint8)


def _blocks_data(seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(24, 128, generator=g) * 10 ** (3 * torch.rand(24, 1, generator=g) - 2)   # scales 1e-2 … 1e1
    W[0, :32] = 0                                                          # d = 0: every code at the zero point
    W[1, :32] = torch.arange(32) - 15.5                                    # Q8_0: halves after scaling (127 / 15.5)
    W[2, :32] = torch.tensor([-8.0, 2.5, -2.5, 6.5, 7.5, 8.0] + [0.5] * 26)  # Q4_0: d = 1, ties and the +8 → 15 clamp
    W[3, :32] = 3.0                                                        # all equal, positive max: d < 0
    W[4, :64] = torch.randn(64, generator=g) * 1e-6                        # fp16 subnormal scales
    return W


@pytest.mark.parametrize("qtype,gt,c_ref", [("q4_0", GT.Q4_0, _c_q4_0), ("q8_0", GT.Q8_0, _c_q8_0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_blocks_equal_gguf_quants_and_llama_cpp_reference_bit_for_bit(qtype, gt, c_ref, seed):
    W = _blocks_data(seed)
    qw = ggml_qweight(W, qtype)
    mine = ggml_blocks(qw, qtype)
    ref = gguf.quants.quantize(W.numpy(), gt)
    assert mine.dtype == np.uint8 and mine.shape == ref.shape == (24, 128 // 32 * (18 if qtype == "q4_0" else 34))
    assert np.array_equal(mine, ref)
    blocks = W.numpy().reshape(-1, 32)
    assert np.array_equal(mine.reshape(len(blocks), -1), np.stack([c_ref(b) for b in blocks]))   # the C formula itself
    assert torch.equal(qw.dequantize(), torch.from_numpy(gguf.quants.dequantize(ref, gt)))       # same decoded values


def test_q4_0_rounds_half_up_and_clamps_the_far_side():
    v = ggml_qweight(torch.tensor([[-8.0, 2.5, -2.5, 6.5, 7.5, 8.0] + [0.5] * 26]), "q4_0").dequantize()[0, :6]
    assert v.tolist() == [-8.0, 3.0, -2.0, 7.0, 7.0, 7.0]       # d = 1: the largest weight is −8, +8 clamps to +7
    w = ggml_qweight(torch.tensor([[127.0, 2.5, -2.5, 0.5, -0.5] + [0.0] * 27]), "q8_0").dequantize()[0, :5]
    assert w.tolist() == [127.0, 3.0, -3.0, 1.0, -1.0]          # roundf, where torch.round would give 2, −2, 0, −0


def test_permutation_is_the_one_transformers_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    rng = np.random.default_rng(0)
    for rows, heads, kv in [(9 * 64, 9, 9), (3 * 64, 9, 3), (2 * 16, 4, 2)]:
        w = rng.standard_normal((rows, 32)).astype(np.float32)
        p = llama_permute(w, heads, kv)
        assert not np.array_equal(p, w)
        assert np.array_equal(LlamaTensorProcessor()._reverse_permute_weights(p, heads, kv), w)
        assert np.array_equal(llama_permute(p, heads, kv, undo=True), w)
    assert torch.equal(llama_permute(torch.arange(8), 1), torch.tensor([0, 4, 1, 5, 2, 6, 3, 7]))   # halves → adjacent pairs


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "f16"])
def test_round_trip_text_lm(text_lm, qtype, tmp_path, monkeypatch):
    info = export_gguf(text_lm.model, text_lm.tokenizer, tmp_path / f"t-{qtype}.gguf", qtype)
    back = reimport(info["path"], monkeypatch, tmp_path)
    ref = gguf_reference(text_lm.model, qtype)
    ids = text_lm.tokenizer(TEXT)["input_ids"]
    d_file, d_quant = logit_gaps(back.model, ref, text_lm.model, ids)
    assert d_file <= TOL and d_file <= 1e-3 * d_quant, (d_file, d_quant)
    x = torch.tensor([ids[:12]])
    assert torch.equal(back.model.generate(x, max_new_tokens=16, do_sample=False), ref.generate(x, max_new_tokens=16, do_sample=False))
    for s in (TEXT, "<eos> a<bos>b  <pad>\n\n\tx", "ünïcödé — 1 2 3"):
        assert back.tokenizer(s)["input_ids"] == text_lm.tokenizer(s)["input_ids"], s
    assert info["bytes"] == (tmp_path / f"t-{qtype}.gguf").stat().st_size and info["params"] == 1_115_264
    assert info["bytes_per_param"] < {"q4_0": 0.75, "q8_0": 1.13, "f16": 2.06}[qtype]


def _tiny_gqa(tokenizer, tie):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2: p.normal_(0, 0.2)           # large enough weights for attention patterns that matter
    return m


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_grouped_kv_heads(text_lm, tie, tmp_path, monkeypatch):
    m = _tiny_gqa(text_lm.tokenizer, tie)
    info = export_gguf(m, text_lm.tokenizer, tmp_path / "gqa.gguf", "q4_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(info["path"]).tensors}
    assert types["token_embd.weight"] == ("Q8_0" if tie else "Q4_0") and types.get("output.weight") == (None if tie else "Q8_0")
    back = reimport(info["path"], monkeypatch, tmp_path)
    assert back.model.config.num_key_value_heads == 2 and back.model.config.tie_word_embeddings == tie
    d_file, d_quant = logit_gaps(back.model, gguf_reference(m, "q4_0"), m, text_lm.tokenizer(TEXT)["input_ids"])
    assert d_file <= TOL and d_file <= 1e-3 * d_quant, (d_file, d_quant)


def test_without_the_permutation_the_round_trip_breaks(text_lm, tmp_path, monkeypatch):
    "The check can fail: a file written in Hugging Face row order does not reproduce the model."
    m = _tiny_gqa(text_lm.tokenizer, True)
    monkeypatch.setattr(ck, "llama_permute", lambda w, *a, **k: w)
    info = export_gguf(m, text_lm.tokenizer, tmp_path / "raw.gguf", "q4_0")
    back = reimport(info["path"], monkeypatch, tmp_path)
    d_file, d_quant = logit_gaps(back.model, gguf_reference(m, "q4_0"), m, text_lm.tokenizer(TEXT)["input_ids"])
    assert d_file > 100 * TOL, d_file


@pytest.mark.parametrize("bits,qtype", [(4, "q4_0"), (8, "q8_0")])
def test_workbench_int_g32_symmetric_layers_are_written_losslessly(text_lm, bits, qtype, tmp_path, monkeypatch):
    from workbench.quant.formats import QuantConfig
    from workbench.quant.quantize import quantize
    from workbench.quant.storage import QuantLinear
    m = load(TEXT_LM, device="cpu").model
    quantize(m, QuantConfig("rtn", bits, 32, symmetric=True))
    info = export_gguf(m, text_lm.tokenizer, tmp_path / "rtn.gguf", qtype)
    assert info["lossless_layers"] == 28
    q = m.model.layers[1].self_attn.k_proj
    assert isinstance(q, QuantLinear)
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(info["path"]).tensors}
    want = llama_permute(ggml_blocks(q.to_qweight(), qtype), 4, 4)
    assert np.array_equal(stored["blk.1.attn_k.weight"], want)                     # the workbench's codes and scales
    back = reimport(info["path"], monkeypatch, tmp_path)
    d_file, _ = logit_gaps(back.model, gguf_reference(m, qtype), m, text_lm.tokenizer(TEXT)["input_ids"])
    assert d_file <= TOL, d_file


def test_other_formats_are_requantized_from_their_values(text_lm, tmp_path, monkeypatch):
    from workbench.quant.formats import QuantConfig
    from workbench.quant.quantize import quantize
    m = load(TEXT_LM, device="cpu").model
    quantize(m, QuantConfig("rtn", 4, 128))                                         # asymmetric g128: not Q4_0
    info = export_gguf(m, text_lm.tokenizer, tmp_path / "g128.gguf", "q4_0")
    assert info["lossless_layers"] == 0
    back = reimport(info["path"], monkeypatch, tmp_path)
    d_file, d_quant = logit_gaps(back.model, gguf_reference(m, "q4_0"), text_lm.model, text_lm.tokenizer(TEXT)["input_ids"])
    assert d_file <= TOL and d_quant > 0.1, (d_file, d_quant)


def test_metadata_reads_back(text_lm, tmp_path):
    info = export_gguf(text_lm.model, text_lm.tokenizer, tmp_path / "t.gguf", "q4_0")
    r = gguf.GGUFReader(info["path"])
    f = {k: r.fields[k].contents() for k in r.fields}
    want = {"general.architecture": "llama", "general.type": "model", "general.name": "text-lm", "general.file_type": 2,
            "general.quantization_version": 2, "llama.block_count": 4, "llama.context_length": 256, "llama.embedding_length": 128,
            "llama.feed_forward_length": 384, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 4,
            "llama.rope.dimension_count": 32, "llama.vocab_size": 2048, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 3,
            "tokenizer.ggml.padding_token_id": 0, "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False}
    assert {k: f[k] for k in want} == want
    assert f["llama.rope.freq_base"] == 10000.0 and abs(f["llama.attention.layer_norm_rms_epsilon"] - 1e-6) < 1e-12
    assert f["tokenizer.ggml.tokens"][:5] == ["<pad>", "<bos>", "<eos>", "<unk>", text_lm.tokenizer.convert_ids_to_tokens(4)]
    assert f["tokenizer.ggml.token_type"][:5] == [3, 3, 3, 3, 1] and len(f["tokenizer.ggml.tokens"]) == 2048
    merges = json.loads(text_lm.tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert f["tokenizer.ggml.merges"] == [" ".join(m) for m in merges]
    t = {x.name: (x.tensor_type.name, [int(n) for n in x.shape]) for x in r.tensors}
    assert len(t) == 38 and "output.weight" not in t                               # tied: token_embd is the output too
    assert t["token_embd.weight"] == ("Q8_0", [128, 2048]) and t["blk.3.ffn_down.weight"] == ("Q4_0", [384, 128])
    assert t["blk.0.attn_norm.weight"] == ("F32", [128]) and t["output_norm.weight"] == ("F32", [128])


def test_refusals_write_nothing(text_lm, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    cases = [(lambda: export_gguf(gpt2, text_lm.tokenizer, tmp_path / "a.gguf"), "Llama-architecture causal LMs only (LlamaForCausalLM"),
             (lambda: export_gguf(text_lm.model, text_lm.tokenizer, tmp_path / "a.gguf", "q4_k"), "use one of q4_0, q8_0, f16"),
             (lambda: export_gguf(text_lm.model, text_lm.tokenizer, tmp_path / "a.bin"), "ends in .gguf")]
    for fn, msg in cases:
        with pytest.raises(WorkbenchError, match=msg.replace("(", r"\(")): fn()
    (tmp_path / "keep.gguf").write_text("keep")
    with pytest.raises(WorkbenchError, match="exists; choose a new file name"):
        export_gguf(text_lm.model, text_lm.tokenizer, tmp_path / "keep.gguf")
    assert (tmp_path / "keep.gguf").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.gguf"]


def test_refuses_scaled_rope_and_other_tokenizers(text_lm, tmp_path):
    import copy
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    m = copy.deepcopy(text_lm.model)
    m.config.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    with pytest.raises(WorkbenchError, match="plain RoPE only; this model has rope_type 'linear'"):
        export_gguf(m, text_lm.tokenizer, tmp_path / "a.gguf")
    t = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])); t.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(WorkbenchError, match="byte-level BPE tokenizers .* this one is BPE with pre-tokenizer Whitespace"):
        export_gguf(text_lm.model, PreTrainedTokenizerFast(tokenizer_object=t), tmp_path / "a.gguf")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_midway_leaves_no_file(text_lm, tmp_path, monkeypatch):
    real, calls = ck._encode, []
    def flaky(s, t):
        calls.append(t)
        if len(calls) == 5: raise RuntimeError("disk full")
        return real(s, t)
    monkeypatch.setattr(ck, "_encode", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        export_gguf(text_lm.model, text_lm.tokenizer, tmp_path / "a.gguf")
    assert list(tmp_path.iterdir()) == []


# ---- the CLI

def main_in_process(args, monkeypatch, capsys):
    "`workbench ARGS` through the CLI's own entry point, in this process: (exit code, stdout, stderr)."
    import sys
    from workbench.cli import main
    monkeypatch.setattr(sys, "argv", ["workbench", *map(str, args)])
    try: main(); code = 0
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exports_a_packed_folder_losslessly(text_lm, tmp_path, monkeypatch, capsys):
    from workbench.quant.checkpoint import save_quantized
    from workbench.quant.formats import QuantConfig
    from workbench.quant.quantize import quantize
    m = load(TEXT_LM, device="cpu").model
    rep = quantize(m, QuantConfig("rtn", 4, 32, symmetric=True))
    save_quantized(m, tmp_path / "q", text_lm.tokenizer, rep)
    rc, out, err = main_in_process(["export", tmp_path / "q", "--format", "gguf", "--qtype", "q4_0", "--out", tmp_path / "q.gguf", "--json"],
                                   monkeypatch, capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert res["lossless_layers"] == 28 and res["tensors"] == {"q8_0": 1, "q4_0": 28, "f32": 9} and res["format"] == "gguf"
    assert gguf.GGUFReader(tmp_path / "q.gguf").fields["general.name"].contents() == "q"


@pytest.mark.parametrize("model,out,extra,needle", [
    ("text-lm", "new.gguf", ["--qtype", "q4_k"], "unknown --qtype 'q4_k': use one of q4_0, q8_0, f16"),
    ("text-lm", "new.gguf", ["--format", "onnx"], "unknown --format 'onnx': use gguf"),
    ("text-lm", "new.bin", [], "--out must name a .gguf file"),
    ("text-lm", "keep.gguf", [], "exists; choose a new file name"),
    ("gpt2-folder", "new.gguf", [], "is a 'gpt2' model: GGUF export writes Llama-architecture models only"),
    ("llama-7b", "new.gguf", [], "`workbench models list` shows what can be fetched"),
])
def test_cli_refusals(tmp_path, monkeypatch, capsys, model, out, extra, needle):
    (tmp_path / "keep.gguf").write_text("keep")
    (tmp_path / "gpt2-folder").mkdir(); (tmp_path / "gpt2-folder" / "config.json").write_text('{"model_type": "gpt2"}')
    before = sorted(p.name for p in tmp_path.iterdir())
    model = TEXT_LM if model == "text-lm" else tmp_path / model if model == "gpt2-folder" else model
    for flag in ([], ["--json"]):
        assert_clean_error(*main_in_process(["export", model, "--out", tmp_path / out, *extra, *flag], monkeypatch, capsys), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "keep.gguf").read_text() == "keep"


def test_cli_refusal_end_to_end(tmp_path):
    "The installed `workbench` command: one error line, exit 2, nothing written."
    assert_clean_error(*run_cli("export", TEXT_LM, "--qtype", "q3_k", "--out", tmp_path / "x.gguf"), "unknown --qtype 'q3_k'")
    assert list(tmp_path.iterdir()) == []


# ---- SmolLM2-135M-Instruct (fetched): 9 heads, 3 KV heads, tied embeddings, 49,152 tokens, a chat template

@pytest.fixture(scope="module")
def smol_q4(tmp_path_factory):
    from workbench.fetch import cached_model
    if cached_model("smollm2-135m-instruct") is None: pytest.skip("smollm2-135m-instruct is not fetched (workbench models fetch smollm2-135m-instruct)")
    lm = load("smollm2-135m-instruct", device="cpu")
    info = export_gguf(lm.model, lm.tokenizer, tmp_path_factory.mktemp("smol") / "smol-q4_0.gguf", "q4_0")
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France? Count 1 2 3 10 100."}],
                                            tokenize=False, add_generation_prompt=True)
    return lm, info, text


@pytest.mark.slow
def test_smollm2_round_trip(smol_q4, monkeypatch):
    from pathlib import Path
    from transformers import AutoModelForCausalLM
    from workbench.core import quiet_transformers
    lm, info, text = smol_q4
    p = Path(info["path"])
    # transformers rebuilds gguf's tensor-name map once per module (~400 times, ~15 s on one core): the same pure
    # function, cached, keeps this test under a minute
    import functools
    monkeypatch.setattr(gguf, "get_tensor_name_map", functools.lru_cache(None)(gguf.get_tensor_name_map))
    with quiet_transformers():
        back = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32, local_files_only=True).eval()
    assert back.config.num_key_value_heads == 3 and back.config.tie_word_embeddings
    ref = gguf_reference(lm.model, "q4_0")
    ids = lm.tokenizer(text)["input_ids"]
    d_file, d_quant = logit_gaps(back, ref, lm.model, ids)
    assert d_file <= TOL and d_file <= 1e-3 * d_quant, (d_file, d_quant)
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(back.generate(x, max_new_tokens=8, do_sample=False), ref.generate(x, max_new_tokens=8, do_sample=False))
    assert 0.65 < info["bytes_per_param"] < 0.70 and info["tensors"] == {"q8_0": 1, "q4_0": 210, "f32": 61}


@pytest.mark.slow
def test_smollm2_tokenizer_and_metadata(smol_q4):
    from pathlib import Path
    from transformers import AutoTokenizer
    from workbench.core import quiet_transformers
    lm, info, text = smol_q4
    p = Path(info["path"])
    with quiet_transformers(): tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name, local_files_only=True)
    for s in (text, "x = 2024 * 3.14  # ünïcödé\n\n<|endoftext|>"):
        assert tok(s)["input_ids"] == lm.tokenizer(s)["input_ids"], s
    assert tok.chat_template == lm.tokenizer.chat_template
    r = gguf.GGUFReader(p)
    f = lambda k: r.fields[k].contents()
    assert (f("llama.attention.head_count"), f("llama.attention.head_count_kv"), f("llama.context_length"), f("llama.vocab_size")) == (9, 3, 8192, 49152)
    assert (f("tokenizer.ggml.bos_token_id"), f("tokenizer.ggml.eos_token_id"), f("tokenizer.ggml.add_bos_token")) == (1, 2, False)
    assert {t.name: t.tensor_type.name for t in r.tensors}["token_embd.weight"] == "Q8_0"
