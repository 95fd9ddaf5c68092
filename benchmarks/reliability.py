"""The command line's bad-input contract, case by case: results/reliability.md.

    python benchmarks/reliability.py [--out results/reliability.md]

Runs every case of the catalogue in tests/test_bad_input.py (``CASES``) in-process, each in a fresh
temporary folder, and tabulates what happened: exit status, the stderr line, and whether every
file that was there before is byte-identical after with nothing added. The contract: exit status 2,
exactly one stderr line ``gan-features[ CMD]: error: ...`` naming the fix, no traceback, nothing
written. Exit status 1 when any case breaks it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = "python benchmarks/reliability.py"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "reliability.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    torch.set_num_threads(1)  # the cases are tiny; more threads only contend
    from test_bad_input import CASES, run_case

    from gan_features.provenance import git_commit, package_source_state

    started = time.perf_counter()
    rows, broken = [], []
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            outcome = run_case(case, Path(folder))
        problems = outcome.problems(case)
        if problems:
            broken.append(f"{case.id}: {'; '.join(problems)}")
        line = outcome.lines[0] if len(outcome.lines) == 1 else " / ".join(outcome.lines) or "(nothing)"
        rows.append(f"| {case.id} | `{_cell(case.command)}` | {_cell(case.expected)} | {outcome.code} | "
                    f"{_cell(line)} | {'yes' if outcome.unchanged else 'NO'} | {'ok' if not problems else 'BROKEN'} |")
    seconds = time.perf_counter() - started
    commit = git_commit() or "unknown"
    dirty = package_source_state()[1]
    lines = [
        "# Bad input: one line, exit status 2, nothing overwritten",
        "",
        "The command line's contract (issue 16): bad input gives ONE line on stderr (`gan-features CMD: error: "
        "...` or, from argparse, `PROG: error: ... (see PROG --help)`) saying how to fix it, exit status 2, no "
        "traceback, and no existing file replaced or half-written (no `.partial` left, no output folder made). "
        "Each case below runs `gan_features.cli.main(argv)` in-process in a fresh temporary folder that its "
        "setup filled (paths are relative to it); *files unchanged* compares the sha256 of every file there "
        "before and after, and lists anything added. A folder marked read-only is chmod 555 and, as root "
        "(who writes anywhere), also reported unwritable by `os.access`.",
        "",
        f"- date: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- cases: {len(CASES)}, holding: {len(CASES) - len(broken)}, broken: {len(broken)} "
        f"({seconds:.1f} s in all)",
        f"- regenerate: `{COMMAND}` (the same catalogue runs as tests: "
        "`python -m pytest tests/test_bad_input.py`)",
        "",
        "| case | command | expected in stderr | exit | the stderr line | files unchanged | contract |",
        "| --- | --- | --- | --: | --- | :-: | :-: |",
        *rows,
        "",
    ]
    if broken:
        lines += ["## Broken", "", *[f"- {b}" for b in broken], ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text("\n".join(lines))
    partial.replace(args.out)
    print(f"{len(CASES)} cases, {len(broken)} broken, {seconds:.1f} s -> {args.out}")
    for b in broken:
        print(f"BROKEN {b}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
