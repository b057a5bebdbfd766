"`workbench docs`: offline HTML API pages from the notebooks (nbdev's processors + nbconvert, no quarto)."
import html, re
from html.parser import HTMLParser
import pytest
from conftest import run_cli
from test_cli import assert_clean_error

URL = re.compile(r"^\s*(?:https?:)?//", re.I)               # http://, https:// and protocol-relative //host
CSS_URL = re.compile(r"""url\(\s*["']?\s*(?:https?:)?//|@import\s+["']?(?:https?:)?//""", re.I)


class Resources(HTMLParser):
    "Every URL a page would fetch by itself: src/srcset/poster/data of any tag, <link href>, url()/@import in CSS."
    def __init__(self):
        super().__init__(); self.urls, self._style = [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "srcset", "poster", "data"): a.get(k) and self.urls.append((tag, a[k]))
        if tag == "link" and a.get("href"): self.urls.append((tag, a["href"]))
        if a.get("style") and CSS_URL.search(a["style"]): self.urls.append((tag, a["style"]))
        self._style = tag == "style"

    def handle_endtag(self, tag): self._style = False

    def handle_data(self, data):
        if self._style: self.urls += [("style", m.group()) for m in CSS_URL.finditer(data)]


def external(page):
    p = Resources(); p.feed(page)
    return [(t, u) for t, u in p.urls if t == "style" or URL.match(u)]


def text(page):
    "The page as plain text (tags dropped, entities decoded), so highlighted code reads as written."
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    rc, so, se = run_cli("docs", "--out", out, "--only", "01_core", "--only", "10_tasks", "--quiet")
    assert rc == 0, se
    assert so.strip() == f"index: {out / 'index.html'}"
    return out


def test_two_pages_and_an_index(docs):
    assert sorted(p.name for p in docs.iterdir()) == ["core.html", "index.html", "tasks.html"]
    index = (docs / "index.html").read_text()
    assert re.search(r'<a href="core.html">Core</a>.*<a href="tasks.html">Tasks</a>', index, re.S)  # sidebar, in order
    assert "Errors, devices and seeding shared by every module." in text(index)                       # descriptions


def test_page_shows_signatures_and_docstrings(docs):
    core = (docs / "core.html").read_text()
    t = text(core)
    assert "<title>Core</title>" in core and 'id="pick_device"' in core
    assert 'def pick_device(\n    device:str | torch.device | None=None, # "cpu", "cuda", "cuda:1" or None for the best available' in t
    assert "The torch device to use: device if given, else CUDA when present, else CPU." in t
    assert "cond:bool, # Condition that must hold" in t and "Raise WorkbenchError(msg) unless cond." in t
    assert "#| export" not in t and "#| echo" not in t                  # directives and exported source hidden
    assert 'href="index.html"' in core and 'href="tasks.html"' in core  # sidebar and pager link the pages
    assert 'href="core.html#workbencherror"' in core and '<a id="workbencherror"></a>' in core  # nbdev's doc links resolve


def test_nothing_is_loaded_from_the_network(docs):
    for p in docs.iterdir():
        page = p.read_text()
        assert not re.search(r"""<script[^>]*\bsrc=["']?(https?:)?//|<link[^>]*\bhref=["']?(https?:)?//""", page, re.I), p.name
        assert external(page) == [], p.name
        assert not re.search(r"mathjax|require\.js|cdn\.", page, re.I), p.name


def test_unknown_notebook_is_one_line_exit_2(tmp_path):
    out = tmp_path / "d"
    assert_clean_error(*run_cli("docs", "--out", out, "--only", "01_core", "--only", "99_nope"),
                       "no notebook matches '99_nope'", "01_core", "10_tasks")
    assert not out.exists()  # nothing written
