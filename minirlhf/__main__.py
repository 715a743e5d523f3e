"""The course's command line: python -m minirlhf TOOL [ARGS...], TOOL one of zoo, experiments, bench, student, site."""
from __future__ import annotations

import importlib
import sys

TOOLS = {"zoo": "recipes", "experiments": "experiments", "bench": "bench", "student": "student", "site": "site"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in TOOLS:
        print("usage: python -m minirlhf {" + ",".join(TOOLS) + "} [ARGS...]\n"
              "  zoo          list, verify and build the checkpoint zoo\n"
              "  experiments  rerun an experiment whose results ship in data/results\n"
              "  bench        measure speed on this machine\n"
              "  student      regenerate (or --check) the student notebooks\n"
              "  site         render the notebooks into a static website (build/site/)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"minirlhf.course.{TOOLS[argv[0]]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
