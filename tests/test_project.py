"The project's own plumbing: notebooks and library agree, the version is defined once."
import configparser, shutil, subprocess, sys
from pathlib import Path
import workbench
from conftest import ROOT


def test_export_leaves_no_diff(tmp_path):
    # Export a copy of the notebooks and compare with the committed library, file by file.
    for name in ("nbs", "workbench"): shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "settings.ini"): shutil.copy(ROOT / name, tmp_path / name)
    exe = Path(sys.executable).with_name("nbdev-export")
    subprocess.run([str(exe)], cwd=tmp_path, check=True, capture_output=True)
    ours = {p.relative_to(ROOT): p.read_text() for p in (ROOT / "workbench").rglob("*.py") if "__pycache__" not in p.parts}
    fresh = {p.relative_to(tmp_path): p.read_text() for p in (tmp_path / "workbench").rglob("*.py") if "__pycache__" not in p.parts}
    assert ours.keys() == fresh.keys()
    stale = [str(k) for k in ours if ours[k] != fresh[k]]
    assert not stale, f"workbench/ differs from `nbdev-export` for {stale}: edit nbs/ and export"


def test_version_defined_once():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    assert workbench.__version__ == cfg["DEFAULT"]["version"]


def test_torch_pinned_exactly():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    assert "torch==2.13.0" in cfg["DEFAULT"]["requirements"].split()


def import_graph() -> dict[str, set[str]]:
    "Module -> the workbench modules it imports, at the top or inside functions (an import cycle is a cycle either way)."
    import ast
    pkg = ROOT / "workbench"
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in pkg.rglob("*.py") if "__pycache__" not in p.parts and p.name != "_modidx.py"}
    graph = {}
    for name, path in mods.items():
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import): targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                up = base.split(".")[: len(base.split(".")) - (node.level - 1)] if node.level else []
                root = ".".join(up + ([node.module] if node.module else []))
                targets = [root] + [f"{root}.{a.name}" for a in node.names]
            else: continue
            deps |= {t for t in targets if t in mods and t != name}
        graph[name] = deps
    return graph


def test_no_import_cycle():
    import networkx as nx
    g = nx.DiGraph([(a, b) for a, deps in import_graph().items() for b in deps
                    if not b.startswith(a + ".")])   # a package importing its own modules (the front door) is downhill
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles in workbench/: {cycles[:5]}"


def test_no_unused_imports_or_names():
    # pyflakes over the generated library: an unused import is a dependency nobody needs
    out = subprocess.run([sys.executable, "-m", "pyflakes", str(ROOT / "workbench")], capture_output=True, text=True).stdout
    found = [l for l in out.splitlines() if "_modidx.py" not in l and ("imported but unused" in l or "never used" in l)]
    assert not found, "\n".join(found)
