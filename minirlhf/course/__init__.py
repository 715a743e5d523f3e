"""Course tooling: what builds and checks the course, never what a trainer needs.

- recipes: how every zoo entry is built from what it declares (`python -m minirlhf zoo ...`);
- experiments: runs too slow for a notebook, whose results ship in data/results (`... experiments NAME`);
- bench: speed on this machine, as ratios in one run (`... bench`);
- student: the student versions of the notebooks (`... student [--check]`).

Each tool has `main(argv) -> exit code`; `python -m minirlhf TOOL ...` runs it. Nothing outside this
package imports it (the notebooks may: they sit above everything).
"""
