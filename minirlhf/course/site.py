"""The course as a static website: the solution notebooks with their stored outputs, one page each, in course order.

Sphinx with MyST-NB renders notebooks/NN_*.ipynb (never executed: the pages show the outputs stored in the files)
and a home page made of the README's introduction and course map, with the Furo theme: the parts in the sidebar,
a table of contents on every page, previous / next links through the whole course. Everything a page loads ships
in the site, MathJax 3 included (the files of the django-static-mathjax package, which needs no Django: it is a
copy of MathJax's own build), so building and reading it need no network. Each page links its student version (notebooks/student/) and its solution for download; the home page
links the checkpoint zoo. The tools are test- and author-only: pip install -r requirements-dev.txt.

    python -m minirlhf site                  # writes build/site/; open build/site/index.html
    python -m minirlhf site --out DIR
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..utils import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "build" / "site"
# (title, first notebook number): a notebook belongs to the last part that starts at or before its number, so a
# new notebook past the last part's start (19, 20, ...) joins that part until a new part is added here.
PARTS = (("Part I · Foundations", 0),
         ("Part II · Human feedback and reward models", 6),
         ("Part III · RL fine-tuning", 9),
         ("Part IV · Beyond PPO", 13))
DOWNLOADS = "downloads"          # the site's folder of .ipynb and zoo files
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ('<p class="widget-note"><em>A live widget (a slider, buttons or a progress bar) stands here when you '
               'run the notebook in Jupyter; a static page cannot run it.</em></p>')
NOTEBOOK_NAME = re.compile(r"^(\d{2})_\w+\.ipynb$")
# a browser asks every site for an icon: without one, each page logs a 404
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
           'fill="#1f5f8b"/><text x="16" y="22" font-size="14" font-family="sans-serif" font-weight="bold" '
           'text-anchor="middle" fill="#fff">RL</text></svg>')
# TeX in, SVG out: one script and no font files to load
MATHJAX_SCRIPT = "tex-svg.js"
# Furo's 46em column cuts the notebooks' code lines and shrinks their side-by-side plots: up to 54em (60em with its
# padding) where the page's table of contents is shown beside it (from 82em), centred as Furo centres its own
SITE_CSS = """@media (min-width: 82em) {
  .sidebar-drawer { width: max(15em, calc(50% - 30em)); }
  .main { min-width: 0; }
  .content { width: 54em; min-width: 0; }
}
.widget-note { color: var(--color-foreground-secondary); font-size: var(--font-size--small); }
"""
MISSING_TOOLS = "the site's tools are missing: pip install -r requirements-dev.txt"


@dataclass(frozen=True)
class Notebook:
    number: int
    path: Path
    title: str

    @property
    def stem(self) -> str:
        """The page's document name: 10_ppo.ipynb -> 10_ppo (10_ppo.html on the site)."""
        return self.path.stem


def notebook_number(name: str) -> int | None:
    """10_ppo.ipynb -> 10; None for a file that is not a course notebook."""
    match = NOTEBOOK_NAME.match(name)
    return int(match.group(1)) if match else None


def notebook_title(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first level-1 Markdown heading of a notebook ("10 · PPO for RLHF"), else the fallback."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def course_notebooks(folder: Path) -> list[Notebook]:
    """The course notebooks of a folder (NN_name.ipynb), in course order."""
    found = [(notebook_number(p.name), p) for p in folder.glob("*.ipynb")]
    return [Notebook(number, path, notebook_title(nbformat.read(path, as_version=4), path.stem))
            for number, path in sorted((n, p) for n, p in found if n is not None)]


def part_of(number: int) -> str:
    """The title of the part a notebook number belongs to (numbers past the last part's start join it)."""
    if number < PARTS[0][1]:
        raise ValueError(f"notebook {number} comes before the first part, which starts at {PARTS[0][1]}")
    return [title for title, start in PARTS if start <= number][-1]


def group_by_part(notebooks: list[Notebook]) -> list[tuple[str, list[Notebook]]]:
    """The notebooks grouped by part, parts and notebooks in course order; a part with no notebook is left out."""
    groups: dict[str, list[Notebook]] = {title: [] for title, _ in PARTS}
    for notebook in sorted(notebooks, key=lambda n: n.number):
        groups[part_of(notebook.number)].append(notebook)
    return [(title, members) for title, members in groups.items() if members]


def readme_section(readme: str, heading: str) -> str:
    """The README's text under `heading` (e.g. "## The course") up to the next heading of any level."""
    lines = readme.splitlines()
    if heading not in lines:
        raise ValueError(f"README.md has no '{heading}' heading")
    body = []
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("#"):
            break
        body.append(line)
    return "\n".join(body).strip()


def readme_intro(readme: str) -> tuple[str, str]:
    """The README's title and the paragraphs before its first section."""
    lines = readme.splitlines()
    title = lines[0].removeprefix("# ").strip()
    intro = []
    for line in lines[1:]:
        if line.startswith("## "):
            break
        intro.append(line)
    return title, "\n".join(intro).strip()


def site_links(markdown: str) -> str:
    """README links to notebooks/NN_x.ipynb point at the notebook's page instead (same folder on the site)."""
    return re.sub(r"\]\(notebooks/(\d{2}_\w+\.ipynb)\)", r"](\1)", markdown)


def toctree(caption: str, notebooks: list[Notebook]) -> str:
    """A MyST toctree block: one part of the sidebar, and of the previous / next chain."""
    entries = "\n".join(n.stem for n in notebooks)
    return f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n{entries}\n```"


def file_size(size: int) -> str:
    """Bytes as a reader wants them: 3,301,234 -> "3.3 MB", 21,450 -> "21 kB"."""
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


def zoo_links(zoo_files: list[Path]) -> str:
    """The zoo's files in one line, each linked for download with its size."""
    return ", ".join(f'<a href="{DOWNLOADS}/zoo/{p.name}" download>{p.name}</a> ({file_size(p.stat().st_size)})'
                     for p in zoo_files)


def home_page(readme: str, notebooks: list[Notebook], zoo_files: list[Path]) -> str:
    """index.md: the README's title, introduction and course map, one toctree per part, and the downloads."""
    title, intro = readme_intro(readme)
    parts = "\n\n".join(toctree(caption, members) for caption, members in group_by_part(notebooks))
    return f"""# {title}

{intro}

## The course

{site_links(readme_section(readme, "## The course"))}

## The notebooks, part by part

{parts}

## Run it yourself

These pages show every notebook with the outputs stored in it. Each page links its **student version** (the
exercises left for you, no outputs) and its solution. A notebook needs the `minirlhf` package and the
checkpoint zoo beside it: get the whole course and follow the README's quick start
(`pip install -r requirements.txt && jupyter lab notebooks/`).

The checkpoint zoo (`data/zoo/`), the small models the notebooks load: {zoo_links(zoo_files)}.
"""


def download_links(notebook: Notebook, has_student: bool) -> str:
    """The HTML line under a page's title that links its .ipynb files (the site keeps them in downloads/)."""
    name = notebook.path.name
    student = (f'<a href="{DOWNLOADS}/student/{name}" download>the student version</a> (exercises to do, no outputs), '
               if has_student else "")
    return (f'<p class="notebook-downloads">Download this notebook: {student}'
            f'<a href="{DOWNLOADS}/{name}" download>the solution</a> (with its outputs).</p>')


def is_widget(output: nbformat.NotebookNode) -> bool:
    """A live ipywidget's output: only a model id, which a static page cannot bring back."""
    return WIDGET_MIME in output.get("data", {})


def web_notebook(nb: nbformat.NotebookNode, links: str) -> nbformat.NotebookNode:
    """A copy of a notebook for its page: download links under the title, each widget output replaced by a note
    (the notebooks draw a static figure beside every widget), no widget state."""
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)      # with state, MyST-NB would load the widget manager from a CDN
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": WIDGET_NOTE})
                            if is_widget(o) else o for o in cell.outputs]
    first = nb.cells[0]
    title, _, rest = first.source.partition("\n")
    first.source = f"{title}\n\n{links}\n\n{rest.lstrip()}" if title.startswith("# ") else f"{links}\n\n{first.source}"
    return nb


def mathjax_dir() -> Path:
    """MathJax 3's browser build as the django-static-mathjax package ships it (found, not imported)."""
    spec = importlib.util.find_spec("mathjax")
    folder = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5" if spec else None
    if folder is None or not (folder / MATHJAX_SCRIPT).is_file():
        raise SystemExit(f"{MISSING_TOOLS} (MathJax's files, from django-static-mathjax, were not found)")
    return folder


def sphinx_config(title: str) -> dict:
    """Sphinx's configuration (no conf.py): MyST-NB without execution, Furo, MathJax from the site's _static."""
    return {
        "project": "minirlhf",
        "extensions": ["myst_nb"],
        "nb_execution_mode": "off",                   # the stored outputs are the pages' content
        "myst_enable_extensions": ["dollarmath", "amsmath"],
        "mathjax_path": f"mathjax/{MATHJAX_SCRIPT}",   # under _static/, copied there by copy_assets
        "html_theme": "furo",
        "html_title": title,
        "html_favicon": "favicon.svg",                # written into the source folder by write_sources
        "html_static_path": ["_static"],              # and so is _static/minirlhf.css
        "html_css_files": ["minirlhf.css"],
        "html_copy_source": False,                    # _sources/ would hold a second copy of every notebook
        "html_show_sourcelink": False,
    }


def write_sources(src: Path, notebooks: list[Notebook], readme: str, zoo_files: list[Path], student_dir: Path) -> None:
    """Sphinx's source folder: index.md, a web copy of each notebook, the site's icon and style."""
    (src / "index.md").write_text(home_page(readme, notebooks, zoo_files))
    (src / "favicon.svg").write_text(FAVICON)
    (src / "_static").mkdir()
    (src / "_static" / "minirlhf.css").write_text(SITE_CSS)
    for notebook in notebooks:
        links = download_links(notebook, (student_dir / notebook.path.name).is_file())
        nb = web_notebook(nbformat.read(notebook.path, as_version=4), links)
        nbformat.write(nb, src / notebook.path.name)


def copy_assets(out: Path, notebooks: list[Notebook], zoo_files: list[Path], student_dir: Path, mathjax: Path) -> None:
    """What the pages link or load beyond Sphinx's own files: the .ipynb downloads, the zoo, MathJax."""
    downloads = out / DOWNLOADS
    (downloads / "student").mkdir(parents=True, exist_ok=True)
    (downloads / "zoo").mkdir(exist_ok=True)
    for notebook in notebooks:
        shutil.copy2(notebook.path, downloads / notebook.path.name)
        student = student_dir / notebook.path.name
        if student.is_file():
            shutil.copy2(student, downloads / "student" / student.name)
    for path in zoo_files:
        shutil.copy2(path, downloads / "zoo" / path.name)
    shutil.copytree(mathjax, out / "_static" / "mathjax", dirs_exist_ok=True)


def clear_output_folder(out: Path) -> None:
    """Empty `out` for a fresh build, refusing a folder with anything in it that is not a site built before (a
    mistyped --out must not delete someone's files)."""
    if not out.exists():
        return
    if any(out.iterdir()) and not ((out / "index.html").is_file() and (out / "_static").is_dir()):
        raise SystemExit(f"{out} is not empty and holds no site built before: choose another --out")
    shutil.rmtree(out)


def build_site(out: Path, repo: Path = REPO_ROOT, log=sys.stdout) -> list[str]:
    """Render the course into `out` (a site built there before is replaced); returns Sphinx's warnings, one a line."""
    try:
        from sphinx.application import Sphinx
        import furo, myst_nb  # noqa: F401  (fail here with the fix, not deep inside Sphinx)
    except ImportError as error:
        raise SystemExit(f"{MISSING_TOOLS} ({error})") from None
    mathjax = mathjax_dir()
    notebooks = course_notebooks(repo / "notebooks")
    if not notebooks:
        raise SystemExit(f"no course notebooks (NN_name.ipynb) in {repo / 'notebooks'}")
    student_dir = repo / "notebooks" / "student"
    zoo_files = sorted(p for p in (repo / "data" / "zoo").glob("*") if p.is_file())
    readme = (repo / "README.md").read_text()
    clear_output_folder(out)
    warnings = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="minirlhf-site-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        write_sources(src, notebooks, readme, zoo_files, student_dir)
        app = Sphinx(str(src), None, str(out), str(Path(tmp) / "doctrees"), "html",
                     confoverrides=sphinx_config(readme_intro(readme)[0]), status=log, warning=warnings,
                     freshenv=True)
        app.build()
    copy_assets(out, notebooks, zoo_files, student_dir, mathjax)
    return [line for line in warnings.getvalue().splitlines() if line.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf site", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and the result")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    warnings = build_site(args.out.resolve(), log=io.StringIO() if args.quiet else sys.stdout)
    for line in warnings:
        print(line, file=sys.stderr)
    print(f"site written to {args.out / 'index.html'} in {time.perf_counter() - start:.0f} s "
          f"({len(warnings)} warning(s)); open it in a browser, or serve it: "
          f"python -m http.server -b 127.0.0.1 -d {args.out}")
    return 0
