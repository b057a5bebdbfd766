"Issue 21: `inspect_model` / `workbench inspect` say whether AWQ, SmoothQuant, Wanda and rotation can help; planted fixtures test it."
import copy, json
import pytest
import torch
from conftest import TEXT_LM, assert_clean_error, run_cli
from workbench.models import load
from workbench.quant.calib import calib_from_text, capture_inputs
from workbench.quant.fixtures import plant_massive_activation, plant_outliers, with_leading_token
from workbench.quant.inspect import THRESHOLDS, inspect_model, wanda_over_magnitude


@pytest.fixture(scope="module")
def lm():
    return load("text-lm", "cpu")


@pytest.fixture(scope="module")
def cal(lm):
    return calib_from_text(lm.tokenizer, None, 8, 256, 0)


@pytest.fixture(scope="module")
def plain(lm, cal):
    return inspect_model(lm.model, cal)


def verdict(rep, method): return rep["verdicts"][method]["verdict"]


def test_streamed_statistics_equal_a_whole_capture(lm, cal, plain):
    names = ["model.layers.1.self_attn.k_proj", "model.layers.2.mlp.down_proj"]     # k_proj shares q_proj's accumulator
    X, _ = capture_inputs(lm.model, {n: lm.model.get_submodule(n) for n in names}, cal)
    by = {l["name"]: l for l in plain["layers"]}
    for n in names:
        x = X[n].double()
        rms, amax = x.pow(2).mean(0).sqrt(), x.abs().amax(0)
        c = x - x.mean()
        kurt = (c ** 4).mean() / (c ** 2).mean() ** 2
        assert by[n]["tokens"] == len(x) == 2048
        assert by[n]["rms_spread"] == pytest.approx((rms.max() / rms.median()).item(), rel=1e-5)
        assert by[n]["absmax_spread"] == pytest.approx((amax.max() / amax.median()).item(), rel=1e-5)
        assert by[n]["kurtosis"] == pytest.approx(kurt.item(), rel=1e-4)
        assert by[n]["top_channels"][0] == rms.argmax().item()


def test_wanda_equals_magnitude_when_activation_norms_are_flat():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(32, 128, generator=g)
    assert wanda_over_magnitude(W, torch.full((128,), 3.0)) == 1.0
    n = torch.ones(128); n[:8] = 20.0
    assert wanda_over_magnitude(W / n, n) > 1.2            # small weights on busy channels: magnitude removes them


def test_plant_outliers_keeps_the_function(lm, cal):
    x = torch.stack(cal[:4])
    w0 = lm.model.model.layers[1].input_layernorm.weight.clone()
    p = plant_outliers(lm.model, n_channels=2, factor=30.0, blocks=[1, 2])
    with torch.no_grad(): diff = (p.model(x).logits - lm.model(x).logits).abs().max().item()
    assert diff < 1e-4
    assert len(p.channels) == 2 and len(p.layers) == 10 and all(".layers.1." in n or ".layers.2." in n for n in p.layers)
    pw = p.model.model.layers[1].input_layernorm.weight
    assert torch.allclose(pw[p.channels], 30 * w0[p.channels]) and torch.equal(lm.model.model.layers[1].input_layernorm.weight, w0)
    assert torch.equal(p.model.model.layers[0].input_layernorm.weight, lm.model.model.layers[0].input_layernorm.weight)


def test_plain_text_lm_has_little_to_gain(plain):
    assert [verdict(plain, m) for m in ("awq", "smoothquant", "wanda")] == ["little to gain"] * 3
    assert not plain["massive_activations"]["found"] and len(plain["massive_activations"]["blocks"]) == 4
    assert all(not l["outlier_channels"] for l in plain["layers"])
    assert plain["verdicts"]["wanda"]["measure"] < THRESHOLDS["wanda"][0]
    json.dumps(plain, allow_nan=False)                       # plain JSON: no NaN or inf


def test_planted_outliers_are_found_and_turn_the_verdicts(lm, cal, plain):
    p = plant_outliers(lm.model, n_channels=2, factor=30.0)
    rep = inspect_model(p.model, cal)
    by = {l["name"]: l for l in rep["layers"]}
    for n in p.layers:                                       # q/k/v and gate/up of every block: exactly the planted channels
        assert sorted(by[n]["outlier_channels"]) == p.channels and sorted(by[n]["top_channels"][:2]) == p.channels
        assert by[n]["outlier_energy"] > 0.8 and by[n]["rms_spread"] > 20
    assert all(not by[n]["outlier_channels"] for n in by if n not in p.layers)   # o_proj, down_proj, lm_head untouched
    assert verdict(rep, "awq") == verdict(rep, "smoothquant") == "helps"
    assert verdict(rep, "wanda") != "little to gain"
    assert rep["verdicts"]["wanda"]["measure"] > plain["verdicts"]["wanda"]["measure"] + 0.05
    p8 = plant_outliers(lm.model, n_channels=8, factor=30.0)
    assert verdict(inspect_model(p8.model, cal), "wanda") == "helps"


def test_planted_massive_activation_is_found(lm, cal):
    q = plant_massive_activation(lm.model, value=2000.0)
    x = torch.stack(cal[:4])
    with torch.no_grad(): assert torch.equal(q.model(x).logits, lm.model(x).logits)     # text without <bos>: same function
    rep = inspect_model(q.model, with_leading_token(cal, q.token))
    m = rep["massive_activations"]
    assert m["found"] and len(m["blocks"]) == 4
    for b in m["blocks"]:
        assert b["massive"] == len(cal) and b["dims"] == [[q.channels[0], len(cal)]] and b["positions"] == [[0, len(cal)]]
        assert b["max_abs"] == pytest.approx(2000.0, rel=1e-2) and b["ratio"] > 1000
    assert verdict(rep, "rotation") == "helps" and verdict(rep, "awq") == "little to gain"
    assert not inspect_model(q.model, cal)["massive_activations"]["found"]


def test_cli_json_and_table():
    rc, so, se = run_cli("inspect", TEXT_LM, "--n-calib", "4", "--json")
    assert rc == 0, se
    res = json.loads(so)
    assert {"layers", "massive_activations", "verdicts", "calibration"} <= set(res) and len(res["layers"]) == 29
    assert res["calibration"] == {"text": "docstrings", "windows": 4, "length": 256, "seed": 0} and res["tokens"] == 1024
    assert {m: v["verdict"] for m, v in res["verdicts"].items() if m != "rotation"} == dict.fromkeys(("awq", "smoothquant", "wanda"), "little to gain")
    rc, so, se = run_cli("inspect", "text-lm", "--n-calib", "2", "--calib-len", "64", "--top", "3")
    assert rc == 0, se
    assert "2 windows × 64 tokens of docstrings" in so and "massive activations" in so and "awq         little to gain" in so
    assert len([l for l in so.splitlines() if l.startswith("model.layers.")]) == 3


@pytest.mark.parametrize("args,needle", [
    (["--n-calib", "0"], "--n-calib must be ≥ 1"),
    (["--calib-len", "1"], "--calib-len must be ≥ 2"),
    (["--calib-len", "512"], "longer than the model's 256 positions"),
    (["--text", "wiki"], "use one of auto, docstrings, boolq, lambada"),
    (["--top", "0"], "--top and --batch-size must be ≥ 1"),
])
def test_cli_refuses_bad_input(args, needle):
    assert_clean_error(*run_cli("inspect", "text-lm", *args, "--json"), needle)


def test_cli_refuses_an_unknown_model():
    assert_clean_error(*run_cli("inspect", "no-such-model"), "unknown model 'no-such-model'")


@pytest.fixture(scope="module")
def setup():
    from workbench.experiment import text_setup
    return text_setup("text-lm", calib_windows=16, device="cpu")


@pytest.mark.slow
def test_awq_beats_rtn_on_planted_outliers(setup):
    from workbench.quant.formats import QuantConfig
    from workbench.quant.quantize import quantize
    p0 = setup.perplexity().ppl
    def gaps(model):
        out = {}
        for method in ("rtn", "awq"):
            m = copy.deepcopy(model)
            quantize(m, QuantConfig(method, 4, 128), calib=setup.calib)
            out[method] = setup.perplexity(m).ppl - p0
        return out
    plain, planted = gaps(setup.lm.model), gaps(plant_outliers(setup.lm.model, n_channels=2, factor=30.0).model)
    print("W4 g128 ppl gaps: plain", plain, "planted", planted)
    assert planted["awq"] <= 0.5 * planted["rtn"]            # measured 0.33× (whole held-out split)
    assert planted["rtn"] > 1.5 * plain["rtn"]                # the planted columns round to zero under RTN


@pytest.mark.slow
def test_wanda_ignores_planted_outliers_magnitude_does_not(setup):
    from workbench.prune.api import prune
    from workbench.prune.core import PruneConfig
    def ppl(model, method):
        m = copy.deepcopy(model)
        prune(m, PruneConfig(method, 0.5), calib=setup.calib)
        return setup.perplexity(m).ppl
    base, planted = setup.lm.model, plant_outliers(setup.lm.model, n_channels=2, factor=30.0).model
    pl = {m: ppl(base, m) for m in ("magnitude", "wanda")}
    pt = {m: ppl(planted, m) for m in ("magnitude", "wanda")}
    print("50 % ppl: plain", pl, "planted", pt)
    assert abs(pl["magnitude"] / pl["wanda"] - 1) < 0.05     # plain: both close (measured 1.029)
    assert pt["wanda"] == pytest.approx(pl["wanda"], rel=1e-3)   # Wanda's score |W|·‖X‖ is unchanged by the planting
    assert pt["magnitude"] > 1.01 * pl["magnitude"] and pt["wanda"] < pt["magnitude"]


@pytest.mark.slow
def test_smollm2_has_massive_activations_and_outlier_channels():
    from workbench.fetch import cached_model
    if cached_model("smollm2-135m-instruct") is None: pytest.skip("smollm2-135m-instruct is not fetched")
    rc, so, se = run_cli("inspect", "smollm2-135m-instruct", "--n-calib", "4", "--json")
    assert rc == 0, se
    res = json.loads(so)
    assert res["calibration"]["text"] == "boolq" and res["massive_activations"]["found"]
    assert {m: v["verdict"] for m, v in res["verdicts"].items()} == dict.fromkeys(("awq", "smoothquant", "wanda", "rotation"), "helps")
