"""The documentation site: it builds with ``--strict``, its API reference covers every public name, every typed error
has a troubleshooting entry, the tutorials run and their rendered notebooks hold their current code, the version is
one, and no page or docstring points at a file users do not have."""

from __future__ import annotations

import functools
import http.server
import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import semantic_pullbacks
from semantic_pullbacks import errors

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("[0-9]*.py"))
#: packages whose ``__all__`` the reference must cover (engine.rules lists its rule modules, named on the engine page)
SUBPACKAGES = [
    "semantic_pullbacks.engine", "semantic_pullbacks.methods", "semantic_pullbacks.methods.peers",
    "semantic_pullbacks.models", "semantic_pullbacks.calibration", "semantic_pullbacks.metrics",
    "semantic_pullbacks.evaluation", "semantic_pullbacks.text", "semantic_pullbacks.text.peers",
    "semantic_pullbacks.app", "semantic_pullbacks.cli",
    "semantic_pullbacks.errors", "semantic_pullbacks.images", "semantic_pullbacks.imagenet",
    "semantic_pullbacks.examples", "semantic_pullbacks.visualize",
]  # fmt: skip


def test_version_is_pyprojects():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text("utf-8"), re.M).group(1)
    assert semantic_pullbacks.__version__ == version
    assert f"## [{version}]" in (DOCS / "changelog.md").read_text("utf-8")


def test_no_page_or_docstring_names_files_users_lack():
    pattern = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared|DESIGN\b")
    files = [ROOT / "README.md", *DOCS.rglob("*.md"), *DOCS.rglob("*.py"), *(ROOT / "src").rglob("*.py")]
    hits = [f"{f.relative_to(ROOT)}:{n}" for f in files for n, line in enumerate(f.read_text("utf-8").splitlines(), 1)
            if pattern.search(line)]  # fmt: skip
    assert not hits


def test_every_typed_error_has_a_troubleshooting_entry():
    page = (DOCS / "guides" / "troubleshooting.md").read_text("utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \|", page, re.M))
    assert set(errors.__all__) <= rows, sorted(set(errors.__all__) - rows)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once, strictly: a broken link, a missing page or a name mkdocstrings cannot find fails."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _reference_ids(site: Path) -> set[str]:
    ids = set()
    for page in (site / "reference").rglob("*.html"):
        ids |= set(re.findall(r'id="([\w.]+)"', page.read_text("utf-8")))
    return ids


def test_the_reference_documents_every_public_name(site):
    ids = _reference_ids(site)
    missing = []
    for module_name in SUBPACKAGES:
        module = importlib.import_module(module_name)
        missing += [f"{module_name}.{n}" for n in module.__all__ if f"{module_name}.{n}" not in ids]
    top = (site / "reference" / "index.html").read_text("utf-8")
    lazy = {name for names in semantic_pullbacks._LAZY_EXPORTS.values() for name in names}
    missing += [
        f"semantic_pullbacks.{n}" for n in sorted(set(semantic_pullbacks.__all__) | lazy) if f">{n}<" not in top
    ]
    assert not missing, missing


def test_the_site_has_every_page_of_the_nav(site):
    for page in ("index", "getting-started", "concepts", "changelog", "guides/troubleshooting", "reference/engine"):
        assert (site / page / "index.html").exists() or (site / f"{page}.html").exists(), page
    for script in TUTORIALS:
        html = (site / "tutorials" / script.stem / "index.html").read_text("utf-8")
        assert "data:image/png;base64" in html, f"{script.stem}: the rendered tutorial shows no figure"


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_a_rendered_tutorial_holds_its_scripts_code(script):
    """The site shows the notebook; it must be the script as it is now (re-render after an edit)."""
    jupytext = pytest.importorskip("jupytext")
    notebook = script.with_suffix(".ipynb")
    assert notebook.exists(), f"run: uv run python docs/scripts/render_tutorials.py {script.stem}"
    rendered = [c.source for c in jupytext.read(notebook).cells]
    assert rendered == [c.source for c in jupytext.read(script).cells], f"re-render {script.stem}"
    outputs = [o for c in jupytext.read(notebook).cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "error" for o in outputs) is False
    assert outputs, f"{notebook.name} has no outputs"


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_a_tutorial_runs(script, tmp_path):
    """On CPU, offline, as the reader would run it."""
    env = {**os.environ, "MPLBACKEND": "Agg", "SEMANTIC_PULLBACKS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]


CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
SCREENSHOT = DOCS / "site_screenshot.png"


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_the_site_in_a_browser(served, tmp_path):
    """Landing page and a tutorial render with their figures; the search finds a page. With
    ``SP_UPDATE_SCREENSHOT=1`` the landing page's screenshot is saved to docs/site_screenshot.png."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(served + "/", wait_until="load")
        assert "semantic-pullbacks" in page.title()
        assert page.locator("nav").count() > 0
        figures = page.locator("article img")
        assert figures.count() >= 1
        for i in range(figures.count()):  # loaded figures have a width
            assert figures.nth(i).evaluate("img => img.complete && img.naturalWidth > 0"), figures.nth(i).get_attribute(
                "src"
            )
        shot = SCREENSHOT if os.environ.get("SP_UPDATE_SCREENSHOT") else tmp_path / "site.png"
        page.screenshot(path=str(shot))
        page.locator("input.md-search__input").click()
        page.keyboard.type("counterfactual", delay=20)  # key by key, as the search box listens to keystrokes
        page.wait_for_selector(".md-search-result__item", timeout=60_000)
        assert page.locator(".md-search-result__item").count() > 0
        page.goto(served + "/tutorials/01_first_explanation/", wait_until="load")
        assert "Your first explanation" in page.content()
        images = page.locator("img[src^='data:image/png']")
        assert images.count() >= 3
        assert images.first.evaluate("img => img.complete && img.naturalWidth > 0")
        browser.close()
