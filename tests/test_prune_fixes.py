"Issue 21: DSnoT and SparseGPT as their reference code, KIVI per-channel KV keys, OWL layer-wise sparsity."
import copy, inspect, types
import pytest, torch
from conftest import TEXT_LM
from workbench.corpus import read_text_split
from workbench.engine import Engine, KVPool
from workbench.experiment import text_setup
from workbench.models import load
from workbench.prune.api import prune
from workbench.prune.core import PRUNERS, PruneConfig, mask_from_scores, prunable_linears
from workbench.prune.scores import dsnot, dsnot_config, owl_outlier_ratios, owl_ratios, owl_sparsities, wanda_scores
from workbench.prune.sparsegpt import sparsegpt
from workbench.quant.calib import InputStats


@pytest.fixture(scope="module")
def lm(): return load(TEXT_LM, device="cpu")

@pytest.fixture(scope="module")
def inputs(lm):
    "Every prunable linear's inputs on 8 real windows of 256 tokens (dense model), (8, 256, d_in)."
    lin, X = prunable_linears(lm.model), {}
    ids = lm.tokenizer(read_text_split(split="train")[:60000])["input_ids"]
    hs = [m.register_forward_pre_hook(lambda m, a, n=n: X.update({n: a[0].detach()})) for n, m in lin.items()]
    with torch.no_grad(): lm.model(torch.tensor(ids[:8 * 256]).reshape(8, 256))
    for h in hs: h.remove()
    return X

@pytest.fixture(scope="module")
def setup(): return text_setup(TEXT_LM, eval_windows=24, device="cpu")


# ---- 1. DSnoT: a literal copy of the reference loop (zyxxmu/DSnoT lib/prune.py, prune_DSnoT, unstructured) ------------
def _reorder_ref(input_tensor):
    "The reference's `return_reorder_indice`, verbatim."
    positive_tensor, negative_tensor = input_tensor.clone(), input_tensor.clone()
    positive_mask, negative_mask = positive_tensor > 0, negative_tensor < 0
    positive_indices = torch.arange(0, input_tensor.shape[1]).to(torch.float64).repeat(input_tensor.shape[0], 1)
    negative_indices = torch.arange(0, input_tensor.shape[1]).to(torch.float64).repeat(input_tensor.shape[0], 1)
    positive_indices[~positive_mask] = float("inf"); negative_indices[~negative_mask] = float("inf")
    positive_value, _ = torch.sort(positive_indices, dim=1); negative_value, _ = torch.sort(negative_indices, dim=1)
    positive_value = torch.flip(positive_value, dims=[1])
    negative_value[negative_value == float("inf")] = 0; positive_value[positive_value == float("inf")] = 0
    return (positive_value + negative_value).to(torch.int64)

def dsnot_ref(W, scaler_row, sum_metric_row, var, sparsity, max_cycle_time=50, update_threshold=0.1, pow_of_var=1):
    "The reference's unstructured DSnoT with initial_method wanda and its default flags; True = pruned."
    initial_metric = torch.abs(W) * torch.sqrt(scaler_row.reshape((1, -1)))
    DSnoT_metric = W * sum_metric_row.reshape((1, -1))
    weight_mask = torch.zeros_like(initial_metric) == 1
    _, sorted_initial_indice = torch.sort(initial_metric, dim=-1, stable=True)
    sparsity_num = int(initial_metric.shape[1] * sparsity); res_sparsity_num = sorted_initial_indice.shape[1] - sparsity_num
    initial_prune_indices, initial_res_indices = torch.split(sorted_initial_indice, [sparsity_num, res_sparsity_num], dim=1)
    weight_mask.scatter_(1, initial_prune_indices, True)
    metric_for_regrowing = DSnoT_metric.clone()
    wanda_metric = torch.abs(W) * torch.sqrt(scaler_row.reshape((1, -1)))
    metric_for_regrowing.scatter_(1, initial_res_indices, 0)
    reconstruction_error = torch.sum(metric_for_regrowing, dim=1, keepdim=True)
    metric_for_regrowing /= torch.pow(var.reshape((1, -1)), pow_of_var)
    _, regrowing_indices_block = torch.sort(metric_for_regrowing, dim=1, stable=True)
    wanda_metric.scatter_(1, initial_prune_indices, float("inf"))
    wanda_res_indices, _ = torch.split(torch.sort(wanda_metric, dim=1, stable=True)[1], [res_sparsity_num, sparsity_num], dim=1)
    pruning_indices_block = torch.gather(wanda_res_indices, 1, _reorder_ref(torch.gather(DSnoT_metric, 1, wanda_res_indices)))
    rows = reconstruction_error.shape[0]
    ptr_g = torch.zeros((rows, 2), dtype=torch.long); ptr_g[:, 1] = regrowing_indices_block.shape[-1] - 1
    ptr_p = torch.zeros((rows, 2), dtype=torch.long); ptr_p[:, 1] = pruning_indices_block.shape[-1] - 1
    step = torch.ones((rows, 2), dtype=torch.long); step[:, 1] = -1
    update_mask = torch.ones_like(reconstruction_error, dtype=torch.bool)
    cycle_time = 0
    while not (torch.all(update_mask == False) or cycle_time >= max_cycle_time):
        cycle_time += 1
        side = (reconstruction_error > 0).int().to(torch.int64)
        at = torch.gather(ptr_g, 1, side)
        regrowing_indice = torch.gather(regrowing_indices_block, 1, at)
        regrowing_metric = DSnoT_metric.gather(1, regrowing_indice)
        ptr_g.scatter_(1, side, at + step.gather(1, side))
        side = (reconstruction_error < 0).int().to(torch.int64)
        at = torch.gather(ptr_p, 1, side)
        pruning_indice = torch.gather(pruning_indices_block, 1, at)
        pruning_metric = DSnoT_metric.gather(1, pruning_indice)
        ptr_p.scatter_(1, side, at + step.gather(1, side))
        update_mask = update_mask & (abs(reconstruction_error) > update_threshold)     # --without_same_sign True
        weight_mask.scatter_(1, pruning_indice, update_mask)
        weight_mask.scatter_(1, regrowing_indice, ~update_mask)
        reconstruction_error += torch.where(update_mask, pruning_metric, torch.zeros_like(pruning_metric))
        reconstruction_error -= torch.where(update_mask, regrowing_metric, torch.zeros_like(regrowing_metric))
    return weight_mask

def ref_stats(x):
    "The reference's WrappedGPT statistics, one calibration sample per add_batch: scaler_row, sum_metric_row, var."
    scaler, summ, var, mean, ntok, nsam = 0, 0, None, None, 0, 0
    for s in x:                                   # s: (tokens, d_in)
        inp = s.t().float()
        v, n = torch.var(inp, dim=1, unbiased=False), inp.shape[1]
        var = v if ntok == 0 else (var * ntok + v * n) / (ntok + n)
        ntok += n
        scaler = scaler * (nsam / (nsam + 1)); summ = summ * (nsam / (nsam + 1)); nsam += 1
        scaler = scaler + torch.norm(inp, p=2, dim=1) ** 2 / nsam; summ = summ + torch.sum(inp, dim=1) / nsam
    return scaler, summ, var


def test_dsnot_defaults_are_the_reference():
    d = {k: p.default for k, p in inspect.signature(dsnot).parameters.items() if p.default is not inspect.Parameter.empty}
    assert d == dict(max_cycles=50, update_threshold=0.1, power=1.0, same_sign=False, seqlen=2048)   # main.py defaults
    assert all(s in dsnot.__doc__ for s in ("50 cycles", "threshold 0.1", "Var^1", "no sign test"))
    assert PruneConfig("dsnot", 0.5).init == "wanda"                                    # --initial_method wanda
    assert dsnot_config(0.5) == {"*.mlp.*": PruneConfig("wanda", 0.5), "*": PruneConfig("dsnot", 0.5)}   # --skip_layer mlp
    assert dsnot_config(0.5, skip=None) == {"*": PruneConfig("dsnot", 0.5)}


def test_dsnot_is_the_reference_loop(lm, inputs):
    "Bit-identical masks on the real layers wide enough for the reference's 50 cycles (the 384-input down projections)."
    for name in [n for n in inputs if n.endswith("down_proj")]:
        W = prunable_linears(lm.model)[name].weight.detach()
        scaler, summ, var = ref_stats(inputs[name])
        ref = ~dsnot_ref(W.clone(), scaler, summ, var, 0.5)
        assert (ref.sum(1) == W.shape[1] // 2).all()                      # the reference's own rows stay exact here
        k0 = mask_from_scores(W.abs() * scaler.sqrt(), 0.5, "row")
        ours = dsnot(W, k0, types.SimpleNamespace(mean=summ, norm=scaler.sqrt(), var=var), seqlen=1)
        assert torch.equal(ours, ref), name
        assert (ours != k0).sum() > 100                                   # it did swap


@pytest.mark.parametrize("init", ["wanda", "magnitude"])
def test_dsnot_reduces_expected_reconstruction_error(lm, inputs, init):
    "On top of Wanda or magnitude, every layer's expected output error ‖(W − Ŵ)E[x]‖² shrinks; row counts stay."
    for name, x in inputs.items():
        W = prunable_linears(lm.model)[name].weight.detach()
        st = InputStats(W.shape[1]); st.add(x)
        base = W * mask_from_scores(W.abs() if init == "magnitude" else wanda_scores(W, st.norm), 0.5, "row")
        out = PRUNERS["dsnot"].prune_layer(W, PruneConfig("dsnot", 0.5, init=init), st)
        err = lambda Wp: ((W - Wp) @ st.mean).pow(2).sum().item()
        assert ((out == 0).sum(1) == W.shape[1] // 2).all(), name
        assert err(out) < 0.5 * err(base), (name, err(base), err(out))


# ---- 2. SparseGPT: one saliency threshold per rows × blocksize tile, as IST-DASLab/sparsegpt fasterprune ---------------
def fasterprune_ref(W, H, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=.01):
    "IST-DASLab/sparsegpt sparsegpt.py SparseGPT.fasterprune (no quantizer), verbatim on tensors."
    W, H = W.clone().float(), H.clone()
    columns = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1; W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns); H[diag, diag] += damp
    H = torch.linalg.cholesky(H); H = torch.cholesky_inverse(H); Hinv = torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns); count = i2 - i1
        W1 = W[:, i1:i2].clone(); Q1 = torch.zeros_like(W1); Err1 = torch.zeros_like(W1); Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else: mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w, d = W1[:, i], Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone(); q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


@pytest.mark.parametrize("name", ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj", "model.layers.2.mlp.up_proj"])
def test_sparsegpt_is_fasterprune(lm, inputs, name):
    W = prunable_linears(lm.model)[name].weight.detach()
    st = InputStats(W.shape[1], hessian=True); st.add(inputs[name])
    for s, nm in ((0.5, None), (0.7, None), (0.5, (2, 4))):
        ours, keep = sparsegpt(W, st.hessian, s, nm)
        ref = fasterprune_ref(W, st.hessian, s, *((nm[1] - nm[0], nm[1]) if nm else (0, 0)))
        assert (ours - ref).abs().max().item() <= 1e-6, (name, s, nm)
        if nm is None:                            # one threshold per 128-column tile: ⌊s·numel⌋ + 1 zeros, rows differ
            for i1 in range(0, W.shape[1], 128):
                tile = ~keep[:, i1:i1 + 128]
                assert tile.sum().item() == int(tile.numel() * s) + 1
            assert len(set((~keep).sum(1).tolist())) > 1


# ---- 3. KV keys per channel over groups of tokens (KIVI), recent tokens in full precision -----------------------------
def test_kv_channel_scales_per_token_group():
    torch.manual_seed(0)
    k = torch.randn(1, 2, 10, 8); k[:, :, 4:8] *= 10; k[..., 3] += 50        # block 1 spans 10× block 0; an offset channel
    pool = KVPool(layers=1, kv_heads=2, head_dim=8, capacity_tokens=12, block_size=4, kv_bits=4, key_axis="channel")
    s = pool.slots(pool.alloc(3), 0, 10)
    pool.write(0, s[:6], k[0, :, :6], k[0, :, :6]); pool.write(0, s[6:], k[0, :, 6:], k[0, :, 6:])   # a prompt, then decoding
    for b in range(2):                                   # full blocks: one fp16 scale and minimum per channel from their tokens
        g = k[0, :, 4 * b:4 * b + 4]
        assert torch.equal(pool.k_min[0, :, b], g.amin(1).half())
        assert torch.equal(pool.k_scale[0, :, b], ((g.amax(1).half().float() - g.amin(1).half().float()) / 15).half())
    got = pool.read(0, s)[0]
    assert torch.equal(got[:, 8:], k[0, :, 8:])          # the residual (2 newest tokens) is exact
    for b in range(2):                                   # each block's error is within half its own step
        step = pool.k_scale[0, :, b].float()[:, None]
        assert ((got[:, 4 * b:4 * b + 4] - k[0, :, 4 * b:4 * b + 4]).abs() <= step / 2 + 0.05).all()
    assert pool.sealed[0, :2].all() and not pool.sealed[0, 2] and pool.res_used == 1
    assert pool.bytes_per_token == 2 * (4 + 4) + 2 * (4 + 4 * 8 // 4)   # values per token; keys: codes + 4 B/channel per block


def _kv_ppl(lm, ids, kv_bits, key_axis, windows=8, L=256, bs=16):
    "Teacher-forced perplexity with every token's keys and values read back from the engine's pool."
    X = torch.stack([ids[i * L:(i + 1) * L] for i in range(windows)])
    e = Engine(lm, capacity_tokens=windows * L, block_size=bs, kv_bits=kv_bits, kv_key_axis=key_axis)
    tables, nll = [e.pool.alloc(L // bs) for _ in range(windows)], 0.0
    for t in range(L - 1):
        b = e._batch(tables, [t] * windows, [tb[t // bs] * bs + t % bs for tb in tables], list(range(windows)))
        logits = e._forward(X[:, t:t + 1], torch.full((windows, 1), t), b)
        nll -= torch.log_softmax(logits, -1).gather(-1, X[:, t + 1:t + 2]).sum().item()
    return float(torch.exp(torch.tensor(nll / (windows * (L - 1)))))


def test_kv4_channel_no_worse_than_token(setup):
    tok, ch = (_kv_ppl(setup.lm, setup.eval_ids, 4, a) for a in ("token", "channel"))
    assert ch <= tok, (ch, tok)


# ---- 4. OWL ---------------------------------------------------------------------------------------------------------
def test_owl_mean_and_order(setup):
    lin = prunable_linears(setup.lm.model)
    D = owl_outlier_ratios(setup.lm.model, setup.calib)
    owl = owl_sparsities(setup.lm.model, 0.6, setup.calib)
    assert owl == owl_ratios(D, 0.6, 0.08, {p: sum(m.weight.numel() for n, m in lin.items() if n.startswith(p[:-1])) for p in D})
    size = {p: sum(m.weight.numel() for n, m in lin.items() if n.startswith(p[:-1])) for p in owl}
    assert abs(sum(owl[p] * size[p] for p in owl) / sum(size.values()) - 0.6) < 1e-12          # by parameter count
    order = sorted(D, key=D.get)                                                              # more outliers, less pruning
    assert all(owl[a] > owl[b] for a, b in zip(order, order[1:]))
    assert abs(max(owl.values()) - min(owl.values()) - 2 * 0.08) < 1e-12
    sk = owl_ratios({"a": 1.0, "b": 3.0, "c": 2.0}, 0.5, 0.1, {"a": 1, "b": 1, "c": 2})   # unequal sizes: weighted mean
    assert abs((sk["a"] + sk["b"] + 2 * sk["c"]) / 4 - 0.5) < 1e-12 and sk["a"] > sk["c"] > sk["b"]
    m = copy.deepcopy(setup.lm.model)
    rep = prune(m, {p: PruneConfig("wanda", s) for p, s in owl.items()}, calib=setup.calib)   # the driver takes the dict
    for n, mod in prunable_linears(m).items():
        p = next(p for p in owl if n.startswith(p[:-1]))
        assert ((mod.weight == 0).sum(1) == round(owl[p] * mod.in_features)).all(), n
    assert abs(rep.totals()["sparsity"] - 0.6) < 2e-3


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="measured on the 4-block text LM: OWL (M=5, λ=0.08) + Wanda 60 % ppl 80.8 vs "
                   "uniform Wanda 65.4 (whole held-out split); the paper's gain is on 7B+ LLMs")
def test_owl_wanda_60_no_worse_than_uniform(setup):
    ppl = {}
    for k, cfg in (("owl", {p: PruneConfig("wanda", s) for p, s in owl_sparsities(setup.lm.model, 0.6, setup.calib).items()}),
                   ("uniform", PruneConfig("wanda", 0.6))):
        m = copy.deepcopy(setup.lm.model); prune(m, cfg, calib=setup.calib); ppl[k] = setup.perplexity(m).ppl
    assert ppl["owl"] <= ppl["uniform"], ppl
