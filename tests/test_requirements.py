"""What a student installs stays small; test-only tools live in requirements-dev.txt, which .ci/run installs."""
from minirlhf import REPO_ROOT


def _packages(name):
    lines = (REPO_ROOT / name).read_text().splitlines()
    return {line.split("==")[0].strip().lower() for line in lines if line.strip() and not line.startswith("#")}


def test_students_requirements_pin_torch_and_hold_no_test_only_tool():
    students = _packages("requirements.txt")
    assert "torch==2.13.0" in (REPO_ROOT / "requirements.txt").read_text()
    assert not students & {"playwright", "torchrun", "trl"}            # torchrun ships with torch; trl is optional
    assert not students & {"sphinx", "myst-nb", "furo", "django-static-mathjax"}        # the website's tools


def test_ci_installs_the_dev_requirements_and_chromium():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "requirements-dev.txt" in ci and "chromium" in ci
    assert "playwright" in _packages("requirements-dev.txt") and "torchrun" not in _packages("requirements-dev.txt")
    assert {"sphinx", "myst-nb", "furo", "django-static-mathjax"} <= _packages("requirements-dev.txt")
