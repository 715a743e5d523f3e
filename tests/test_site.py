"""The course website (minirlhf/course/site.py): the page order and parts, checked fast without the site's tools;
then the real build, served on a loopback port and read in headless Chromium (Playwright driving the system's
`chromium`): no console error, no failed request and none off this machine, every equation typeset by MathJax,
every plot loaded, the downloads there, and the previous / next links walking the whole course in order.

The browser test is slow-marked and skipped with the reason where the tools are missing (a student's laptop);
`.ci/run` installs them (requirements-dev.txt and the OS package). Screenshots go to .artifacts/site/."""
import functools
import http.server
import importlib.util
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

from minirlhf import REPO_ROOT
from minirlhf.course import site

ARTIFACTS = REPO_ROOT / ".artifacts" / "site"
SOLUTIONS = site.course_notebooks(REPO_ROOT / "notebooks")


def _notebook(number: int, stem: str = "") -> site.Notebook:
    return site.Notebook(number, Path(f"{number:02d}_{stem or 'x'}.ipynb"), f"{number:02d} · title")


# ---- page order and parts (fast, no site tools needed) ----

@pytest.mark.parametrize("number, part", [(0, 0), (5, 0), (6, 1), (8, 1), (9, 2), (12, 2), (13, 3), (18, 3),
                                          (19, 3), (42, 3)])
def test_every_number_has_its_part_and_new_numbers_join_the_last_part(number, part):
    assert site.part_of(number) == site.PARTS[part][0]


def test_notebooks_are_grouped_by_part_in_course_order():
    shuffled = [_notebook(n) for n in (13, 2, 19, 6, 0, 9, 20, 8)]
    groups = site.group_by_part(shuffled)
    assert [(title, [n.number for n in members]) for title, members in groups] == [
        (site.PARTS[0][0], [0, 2]), (site.PARTS[1][0], [6, 8]), (site.PARTS[2][0], [9]), (site.PARTS[3][0], [13, 19, 20])]
    assert [title for title, _ in site.group_by_part([_notebook(14)])] == [site.PARTS[3][0]]   # empty parts left out


def test_only_numbered_notebooks_count_and_their_title_is_the_first_heading(tmp_path):
    for name, source in [("10_ppo.ipynb", "# 10 · PPO\ntext"), ("02_toy.ipynb", "intro\n# 02 · Toys"),
                         ("19_new.ipynb", "no heading"), ("notes.ipynb", "# notes"), ("1_short.ipynb", "# 1")]:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(source)]), tmp_path / name)
    found = site.course_notebooks(tmp_path)
    assert [(n.number, n.stem, n.title) for n in found] == [(2, "02_toy", "02 · Toys"), (10, "10_ppo", "10 · PPO"),
                                                            (19, "19_new", "19_new")]


def test_the_shipped_notebooks_run_from_00_without_gaps_and_fill_every_part():
    assert [n.number for n in SOLUTIONS] == list(range(len(SOLUTIONS)))
    assert all(n.title.startswith(f"{n.number:02d} ") for n in SOLUTIONS)
    assert len(site.group_by_part(SOLUTIONS)) == len(site.PARTS)


def test_the_home_page_has_the_course_map_with_page_links_and_one_toctree_per_part():
    readme = (REPO_ROOT / "README.md").read_text()
    page = site.home_page(readme, SOLUTIONS, zoo_files=[REPO_ROOT / "data" / "zoo" / "MANIFEST.json"])
    assert "](notebooks/" not in page and "](10_ppo.ipynb)" in page and "| notebook | what you build" in page
    toctrees = re.findall(r"```\{toctree\}\n:caption: ([^\n]+)\n:maxdepth: 1\n\n(.*?)\n```", page, re.S)
    assert [caption for caption, _ in toctrees] == [title for title, _ in site.PARTS]
    assert [stem for _, entries in toctrees for stem in entries.split()] == [n.stem for n in SOLUTIONS]
    assert 'href="downloads/zoo/MANIFEST.json" download' in page
    assert site.file_size(3_301_234) == "3.3 MB" and site.file_size(21_450) == "21 kB"


def test_a_page_gets_download_links_under_its_title_and_a_note_instead_of_a_widget():
    widget = nbformat.v4.new_output("display_data", data={site.WIDGET_MIME: {"model_id": "x"}, "text/plain": "VBox()"})
    figure = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 10 · PPO\nWhat you will learn."),
                                         nbformat.v4.new_code_cell("slider", outputs=[widget, figure])],
                                  metadata={"widgets": {"state": {}}})
    links = site.download_links(_notebook(10, "ppo"), has_student=True)
    web = site.web_notebook(nb, links)
    assert web.cells[0].source == f"# 10 · PPO\n\n{links}\n\nWhat you will learn."
    assert 'href="downloads/student/10_ppo.ipynb"' in links and 'href="downloads/10_ppo.ipynb"' in links
    assert "student" not in site.download_links(_notebook(10, "ppo"), has_student=False)
    assert web.cells[1].outputs[0].data == {"text/html": site.WIDGET_NOTE} and web.cells[1].outputs[1] == figure
    assert "widgets" not in web.metadata and "widgets" in nb.metadata and nb.cells[1].outputs[0] == widget


def test_a_build_replaces_an_old_site_but_never_a_folder_of_other_files(tmp_path):
    old_site, other = tmp_path / "site", tmp_path / "notes"
    (old_site / "_static").mkdir(parents=True)
    (old_site / "index.html").write_text("old")
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    site.clear_output_folder(old_site)
    assert not old_site.exists()
    with pytest.raises(SystemExit, match="holds no site built before"):
        site.clear_output_folder(other)
    assert (other / "mine.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    site.clear_output_folder(tmp_path / "empty")
    site.clear_output_folder(tmp_path / "absent")


def test_without_the_site_tools_the_build_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sphinx.application", None)          # as if Sphinx were not installed
    with pytest.raises(SystemExit, match=re.escape("pip install -r requirements-dev.txt")):
        site.build_site(tmp_path / "site")
    assert not (tmp_path / "site").exists()


# ---- the built site in a real browser ----

TOOLS = ("sphinx", "myst_nb", "furo", "mathjax", "playwright")
MISSING = [name for name in TOOLS if importlib.util.find_spec(name) is None]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_MARKS = [pytest.mark.slow,
                 pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed "
                                                          "(pip install -r requirements-dev.txt)"),
                 pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")]
OPENED = ["06_preference_data", "10_ppo", "13_dpo", "18_scaling_up"]     # widgets, math, plots, the last page
VISIBLE_TEX = re.compile(r"\$\$|\\\(|\\\[|\\(frac|sum|mathbb|log|pi|theta|beta|text)\b")


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "minirlhf", "site", "--quiet", "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    print(f"site built in {time.perf_counter() - start:.1f} s")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr == "", f"the build warned:\n{run.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def base_url(built_site):
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):                  # keep pytest's output to the failures
        pass


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser, url: str):
    """A page opened at url with every console error, page error, failed and off-machine request recorded;
    returns (page, problems) once MathJax has typeset (where the page loads it)."""
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
    page.on("request", lambda r: urlparse(r.url).hostname != "127.0.0.1" and problems.append(f"off-machine: {r.url}"))
    page.goto(url, wait_until="load")
    if page.locator(".math").count():
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=60_000)
        page.evaluate("MathJax.startup.promise")                             # every equation typeset
    return page, problems


def _prose_text(page) -> str:
    """The article's visible text outside code cells and outputs, where raw TeX would show if MathJax failed."""
    return page.evaluate("""() => {
        const article = document.querySelector('article').cloneNode(true);
        article.querySelectorAll('pre, code, script, .cell_output').forEach(e => e.remove());
        return article.innerText; }""")


def _check_page(page, problems, site_dir: Path):
    assert not problems, "\n".join(problems)
    maths = page.locator(".math")
    untypeset = page.evaluate("[...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container svg'))"
                              ".map(m => m.textContent)")
    assert not untypeset, f"equations not typeset: {untypeset[:5]}"
    assert page.locator("mjx-merror, [data-mjx-error]").count() == 0, "MathJax could not read an equation"
    leaked = VISIBLE_TEX.findall(_prose_text(page))
    assert not leaked, f"raw TeX visible: {leaked[:5]}"
    broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
    assert not broken, f"images not loaded: {broken}"
    for href in page.evaluate("[...document.querySelectorAll('a[download]')].map(a => a.getAttribute('href'))"):
        assert (site_dir / href).is_file(), f"download link to a missing file: {href}"
    return maths.count()


class TestInABrowser:
    pytestmark = BROWSER_MARKS

    def test_the_home_page_shows_the_course_map_and_links_every_part(self, browser, base_url, built_site):
        page, problems = _open(browser, base_url)
        _check_page(page, problems, built_site)
        assert page.locator("table").first.inner_text().startswith("notebook")
        captions = [c.strip() for c in page.locator(".sidebar-tree p.caption").all_text_contents()]
        assert captions == [title for title, _ in site.PARTS]
        assert page.locator('a[href="downloads/zoo/MANIFEST.json"]').count() == 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "index.png"))
        page.close()

    @pytest.mark.parametrize("stem", OPENED)
    def test_a_notebook_page_shows_its_math_plots_and_downloads(self, stem, browser, base_url, built_site):
        page, problems = _open(browser, f"{base_url}{stem}.html")
        maths = _check_page(page, problems, built_site)
        notebook = nbformat.read(REPO_ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        plots = sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))
        widgets = sum(site.is_widget(o) for c in notebook.cells for o in c.get("outputs", []))
        assert page.locator(".cell_output img").count() == plots > 0                # every plot, loaded (above)
        assert page.locator(".widget-note").count() == widgets                      # a note, not an error
        assert maths > 0
        assert page.locator(f'a[href="downloads/student/{stem}.ipynb"]').count() == 1
        assert page.locator(".toc-drawer .toc-tree a").count() >= 3                 # the page's table of contents
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{stem}.png"))
        page.locator(".cell_output img").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"{stem}_plot.png"))
        page.close()

    def test_next_and_previous_walk_the_whole_course_in_order(self, browser, base_url):
        expected = ["index"] + [n.stem for n in SOLUTIONS]
        page = browser.new_page()
        # only the pages themselves: the walk checks links, the tests above check what the pages load
        page.route("**/*", lambda route: route.continue_() if route.request.resource_type == "document"
                   else route.abort())
        page.goto(base_url + "index.html", wait_until="domcontentloaded")
        forward, backward = _follow(page, "a.next-page", len(expected)), _follow(page, "a.prev-page", len(expected))
        assert forward == expected and backward == expected[::-1]
        page.close()


def _follow(page, link: str, limit: int) -> list[str]:
    """The pages met by clicking `link` from the current page until a page has none (at most `limit` pages)."""
    met = [_page_name(page.url)]
    while page.locator(link).count():
        assert len(met) < limit, f"{link} goes on past {limit} pages: {met}"
        with page.expect_navigation(wait_until="domcontentloaded"):
            page.locator(link).first.click()
        met.append(_page_name(page.url))
    return met


def _page_name(url: str) -> str:
    """http://127.0.0.1:PORT/10_ppo.html -> 10_ppo"""
    return Path(urlparse(url).path).stem or "index"
