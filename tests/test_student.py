"""course/student.py: the student versions of the notebooks."""

import nbformat
import pytest

from minirlhf.course import student


# ---------------------------------------------------------------- student versions
def test_strip_solutions_keeps_indentation_and_rejects_broken_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nf = check_f(f)"
    out = student.strip_solutions(src)
    assert out == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nf = check_f(f)"
    with pytest.raises(ValueError, match="never closed"):
        student.strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without"):
        student.strip_solutions("x = 1\n### END SOLUTION")


def test_student_version_clears_outputs():
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"state": {}}
    cell = nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION")
    cell.outputs = [nbformat.v4.new_output("stream", text="hi")]
    cell.execution_count = 3
    nb.cells.append(cell)
    out = student.student_version(nb)
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    assert "widgets" not in out.metadata and "y = 2" not in out.cells[0].source
    assert nb.cells[0].outputs, "the solution notebook itself must not be modified"


def test_committed_student_notebooks_are_up_to_date():
    assert student.solution_notebooks(), "no solution notebooks found"
    assert student.main(["--check"]) == 0, "run `python -m minirlhf student` and commit notebooks/student/"


def test_every_solution_notebook_has_exercises_with_checks():
    overview = {"00_rlhf_map.ipynb"}   # the opening map runs the pipeline; it teaches nothing to exercise yet
    for path in student.solution_notebooks():
        assert nbformat.read(path, as_version=4).metadata.kernelspec.name == "python3"
        if path.name in overview:
            continue
        text = student.render(path)
        nb = nbformat.reads(text, as_version=4)
        stubs = sum("raise NotImplementedError()" in c.source for c in nb.cells if c.cell_type == "code")
        assert stubs >= 1, f"{path.name} has no exercise"
        assert "exercise_summary(" in text, f"{path.name} does not end with exercise_summary"
