"""Make the student versions of the notebooks from the solution versions.

In a solution notebook, an exercise's answer sits between two marker lines in a code cell:

        ### BEGIN SOLUTION
        return torch.tril(...)
        ### END SOLUTION

The student version replaces each region with `# YOUR CODE HERE` and `raise NotImplementedError()`
(at the marker's indentation), clears every output and widget state, and is written to
notebooks/student/. The exercise checks see the NotImplementedError and fall back to the package's
reference, so a student notebook with every exercise blank still runs top to bottom.

    python -m minirlhf student            # regenerate notebooks/student/
    python -m minirlhf student --check    # exit 1 if the committed student versions are stale
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from ..utils import REPO_ROOT

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
STUDENT_DIR = NOTEBOOK_DIR / "student"


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every BEGIN/END SOLUTION region of a cell's source by a stub that raises NotImplementedError."""
    out, inside = [], False
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def student_version(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of a solution notebook with solutions stubbed, outputs cleared and widget state removed."""
    nb = nbformat.from_dict(nb)
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.source = strip_solutions(cell.source, where=f"{name}, cell {i}")
        cell.outputs = []
        cell.execution_count = None
    return nb


def solution_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def render(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return nbformat.writes(student_version(nb, path.name)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirlhf student", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that notebooks/student/ is up to date")
    args = parser.parse_args(argv)
    stale = []
    expected_names = set()
    for path in solution_notebooks():
        target = STUDENT_DIR / path.name
        expected_names.add(path.name)
        text = render(path)
        if target.is_file() and target.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            STUDENT_DIR.mkdir(exist_ok=True)
            target.write_text(text)
    orphans = sorted(p.name for p in STUDENT_DIR.glob("*.ipynb") if p.name not in expected_names)
    if args.check:
        if stale or orphans:
            print(f"student notebooks out of date: {', '.join(stale + orphans)}. "
                  f"Run `python -m minirlhf student` and commit notebooks/student/.", file=sys.stderr)
            return 1
        print("student notebooks are up to date")
        return 0
    for name in orphans:
        (STUDENT_DIR / name).unlink()
    print(f"wrote {len(stale)} student notebook(s) to {STUDENT_DIR}; removed {len(orphans)} orphan(s)")
    return 0

