"Every report renders with --quick; its HTML looks right in Chromium with the network cut off; bad input is refused early."
import json
from pathlib import Path
import nbformat, pytest
from conftest import need_chromium, run_cli
from workbench.browser import chromium
from workbench.report import list_reports, remote_resources, render_report, report_params

REPORTS = ["search_scaling", "ets_tradeoff", "quant_bits", "prune_sparsity", "hawq_sensitivity", "compression_pareto",
           "map_elites", "search_x_compression", "replay_curves"]


def toy_report(path: Path) -> Path:
    "A tiny report: a figure, a table, and a cell that fails when asked to."
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 3  # points\nfail = False  # raise in the last cell\nquick = False  # nothing to shrink")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Toy\n> A report for the tests."), params,
                nbformat.v4.new_code_cell("from workbench.report import report_header, save_figure, table\nreport_header('toy', dict(n=n))"),
                nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot(range(n))\nsave_figure(fig, 'line')"),
                nbformat.v4.new_code_cell("assert not fail, 'asked to fail'\ntable([dict(i=i) for i in range(n)])")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def check_offline_in_chromium(html: Path, min_images: int = 1):
    "Open the page with every non-file request aborted: nothing is asked of the network, every figure decodes."
    need_chromium()
    remote = []
    with chromium() as ctx:
        def route(r):
            if r.request.url.startswith(("file:", "data:")): r.continue_()
            else: remote.append(r.request.url); r.abort()
        ctx.route("**/*", route)
        page = ctx.new_page()
        page.goto(html.as_uri(), wait_until="load")
        imgs = page.evaluate("() => [...document.images].map(i => [i.complete, i.naturalWidth])")
        text = page.inner_text("body")
    assert remote == [], remote
    assert len(imgs) >= min_images and all(ok and w > 100 for ok, w in imgs), imgs
    assert "settings" in text
    return text


def test_every_report_is_listed_with_its_parameters():
    assert sorted(list_reports()) == sorted(REPORTS)
    rc, out, err = run_cli("report", "--list")
    assert rc == 0, err
    for name in REPORTS:
        assert f"{name}: " in out
        spec = report_params(list_reports()[name])
        assert {"seed", "device", "quick"} <= set(spec), (name, list(spec))
        assert all(p.help for p in spec.values()), (name, [p.name for p in spec.values() if not p.help])


def test_bad_parameter_is_refused_before_anything_runs(tmp_path):
    rc, out, err = run_cli("report", "quant_bits", "-p", "bitz", "4", "--out", tmp_path / "a")
    assert rc == 2 and err.startswith("error: report quant_bits has no parameter 'bitz'") and "Valid parameters: model (str" in err
    rc, out, err = run_cli("report", "quant_bits", "-p", "group_size", "big", "--out", tmp_path / "b")
    assert rc == 2 and "parameter group_size wants int, got 'big'" in err
    rc, out, err = run_cli("report", "no_such_report")
    assert rc == 2 and "unknown report 'no_such_report': choose one of" in err
    rc, out, err = run_cli("report", "quant_bits", "-p", "bits")
    assert rc == 2 and "-p key value" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_failing_report_keeps_the_notebook_and_names_the_cell(tmp_path):
    nb = toy_report(tmp_path / "toy.ipynb")
    rc, out, err = run_cli("report", nb, "-p", "fail", "true", "--out", tmp_path / "out")
    assert rc == 1, (out, err)
    assert "report toy failed in cell" in err and "AssertionError: asked to fail" in err
    kept = nbformat.read(str(tmp_path / "out" / "toy.ipynb"), as_version=4)
    assert kept.cells[-1].outputs[0]["output_type"] == "error"        # executed up to the failing cell, marked there
    assert not (tmp_path / "out" / "toy.html").exists()
    rc, out, err = run_cli("report", nb, "-p", "n", "5", "--out", tmp_path / "out", "--json")   # the same folder, now fine
    assert rc == 0, err
    res = json.loads(out)
    assert [Path(f).name for f in res["figures"]] == ["toy-line.png", "toy-line.svg"]
    check_offline_in_chromium(Path(res["html"]))


@pytest.mark.slow
@pytest.mark.parametrize("name", REPORTS)
def test_report_renders_quick_and_reads_offline(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")     # two xdist workers share 2 cores: one torch thread per kernel
    res = render_report(name, quick=True, out_dir=tmp_path)
    nb = nbformat.read(res["notebook"], as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code" and c.outputs and "injected-parameters" not in c.metadata.get("tags", []))
    assert "settings" in json.dumps(first.outputs), "the first output states the report's settings"
    pngs = [f for f in res["figures"] if f.endswith(".png")]
    assert pngs and len(pngs) * 2 == len(res["figures"]), res["figures"]
    assert all(Path(f).stat().st_size > 5000 for f in res["figures"])
    page = Path(res["html"]).read_text()
    assert remote_resources(page) == []
    check_offline_in_chromium(Path(res["html"]), min_images=len(pngs))
    print(f"{name}: {res['seconds']} s, figures {[Path(f).name for f in res['figures']]}")


@pytest.mark.slow
def test_search_scaling_countdown_skips_votes_and_pairs_against_best_of_n(tmp_path, monkeypatch):
    "search_scaling on Countdown: every voting search is skipped with its reason; each algorithm is paired with best-of-N at matched FLOPs."
    import ast
    from workbench.search.registry import SEARCHES
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    res = render_report("search_scaling", {"task": "countdown"}, quick=True, out_dir=tmp_path)
    assert sorted(Path(f).name for f in res["figures"]) == [f"search_scaling-accuracy_vs_{k}.{e}" for k in ("auroc", "flops") for e in ("png", "svg")]
    nb = nbformat.read(res["notebook"], as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    s = ast.literal_eval(nb.cells[-1].outputs[0]["data"]["text/plain"])        # the results as data
    assert s["task"] == "countdown" and s["reference"] == "best-of-n" and len(s["seeds"]) >= 2 and len(s["prms"]) == 2
    voting = s["skipped"]
    assert voting and all(SEARCHES[a].votes for a in voting), voting      # majority, weighted-majority: never run, never silent
    assert not any(SEARCHES[a].votes for a in s["algorithms"]), s["algorithms"]
    for a in voting: assert f"skipped {a}: {a} votes over answers, but countdown states the answer in the prompt" in printed
    for prm, by_algo in s["matched"].items():
        assert set(by_algo) == set(s["algorithms"]) - {"greedy"}, (prm, by_algo)
        ref = by_algo["best-of-n"]
        assert ref["minus_reference"] == 0 and ref["minus_reference_ci"] == [0, 0], ref
        for a, m in by_algo.items():
            assert m is not None, f"{a} never reaches best-of-n's FLOPs at {prm}"
            lo, hi = m["accuracy_ci"]; dlo, dhi = m["minus_reference_ci"]
            assert 0 <= lo <= m["accuracy"] <= hi <= 1 and dlo <= m["minus_reference"] <= dhi, (prm, a, m)
            assert -1 <= m["accuracy"] - m["minus_reference"] <= 1 and m["flops_per_problem"] > 0, (prm, a, m)
    page = Path(res["html"]).read_text()
    assert "minus best-of-n [95 %]" in page and "matched at" in page
