"""Compare freshly regenerated CI-scale bench tables with the committed ones.

    python benchmarks/check_ci_tables.py --fresh DIR [--committed results/ci] [--tolerance POINTS]
                                         [--tolerance PROTOCOL=POINTS ...]

Every measured row of the committed ``table1_cifar10.csv`` / ``table2_svhn.csv`` (and
``layers_cifar10.csv``, the per-block table, when it is committed) is matched with the fresh row of
the same model, protocol (and blocks). The check fails (exit 1, one line per offending row)
when a row's score moved further than its protocol's tolerance, when a row is missing from the
fresh tables, or when the fresh tables are not of the same CI subset; otherwise it passes (exit 0).
Either way it prints a comparison table. Bad arguments or unreadable tables exit 2.

Tolerances (percentage points, absolute). The pipeline is seeded end to end (the CI subset, the
validation splits, the label draws, the random discriminator, k-means), so rerunning on the same
machine reproduces every number exactly; what can move a number between machines is only
floating-point nondeterminism: bf16 feature extraction (CPUs with and without native bf16 round
differently; oneDNN picks different kernels, so sums are ordered differently), BLAS summation order
and thread count in the SVM solver, and its stopping test (tol 1e-4) ending at slightly different
weights. These flip a few test images that lie on a decision boundary, and occasionally the choice of
C between two near-tied values, which shifts the whole score. Measured on a 3,000 / 1,000-image
CIFAR-10 subset with the paper authors' SVHN discriminator: fp32 instead of bf16 features (a larger
perturbation than two bf16 kernels differ by) moved `cifar10` by 0.2 points (2 test images) and
`cifar10-400` by 0.04; 1 instead of 2 solver threads moved nothing; C was the same in every run.
Real regressions (a broken batch-norm recompute, wrong scaling, another subset) move scores by
several points. Hence 1.0 point for every protocol: 20 of the 2,000 CI test images, five times the
largest floating-point move seen, below what a bug does. (It is not a sampling tolerance: the test
images and label draws are the same in both runs, so the binomial spread of an accuracy on 2,000
images, ~0.9 points, does not apply.)

A chosen C that moves at a near tie is not a regression. At CI scale a validation score counts 1,000
(``cifar10``) or 2,000 images, so two Cs within a few of them are a coin toss between machines: our
random discriminator's ``cifar10`` validation scores at C = 1e-4 / 5e-4 were 59.2 / 59.2 on an AMD
EPYC (the tie goes to 1e-4) and 59.1 / 59.3 on an Intel Xeon with AMX (5e-4), and the test score
moved 1.65 points with the C. So when the fresh run chose another C, and by the fresh run's own
validation scores the committed C lies within :data:`NEAR_TIE` points of its choice, the row passes
under the wider :data:`NEAR_TIE_TOLERANCE` and says so ("ok, C near tie"). A regression that changes
the validation curve moves the choice by more than a near tie, or the test score by more than that.

The k-NN columns (rows of protocol ``knn-k20`` and ``knn-k200``: DINO's weighted k-NN probe) are
compared the same way, with the same 1.0-point tolerance: the k-NN chooses nothing, so only the
floating-point perturbations above can move it (they reorder near-tied neighbours and votes). Measured
on the 10,000 / 2,000 CIFAR-10 images of the CI subset (our discriminator's full-scale features of
them): holding the normalised training features in bf16 instead of fp32 (each rounded to 8 significant
bits, a larger perturbation than two bf16 kernels differ by) changed 7 of the 2,000 predictions at k=20
and 4 at k=200, moving the accuracies by 0.05 and 0.00 points. Committed tables written before the k-NN
columns existed have no such rows: the fresh ones are then listed as new, unchecked, and the output says so; the
check does not fail for it. (A k-NN row the committed tables have and the fresh ones lack fails, as
any missing row does.)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

TABLES = ("table1_cifar10.csv", "table2_svhn.csv")
OPTIONAL_TABLES = ("layers_cifar10.csv",)  # checked when committed (bench --layers); fails if then not fresh
TOLERANCES = {"cifar10": 1.0, "cifar10-400": 1.0, "svhn-1000": 1.0,  # points; see the module docstring
              "knn-k20": 1.0, "knn-k200": 1.0}
NEAR_TIE = 0.3  # validation points: 3 of the 1,000 cifar10 CI validation images (see the module docstring)
NEAR_TIE_TOLERANCE = 3.0  # test points allowed when the C moved within a near tie
KNN_PREFIX = "knn-"  # the k-NN rows' protocols (gan_features.bench.knn_protocols)
SUBSET_COLUMNS = ("train_subset_sha256", "test_subset_sha256")
NOT_MEASURED = "not measured yet"  # gan_features.bench.NOT_MEASURED: the script runs without the package
EXIT_FAIL, EXIT_USAGE = 1, 2


class UsageError(Exception):
    """Bad arguments or unreadable tables: exit status 2."""


@dataclass(frozen=True)
class Row:
    table: str
    model: str
    protocol: str
    score: float
    scale: str
    subset: tuple[str, ...]
    C: float | None = None  # the chosen C (SVM rows)
    validation_by_C: tuple[tuple[float, float], ...] = ()  # (C, validation score) of every C tried
    blocks: str = ""  # the per-block table's block set ("block 2", "blocks 1-3"); "" in Tables 1 and 2

    @property
    def name(self) -> str:
        return f"{self.model} [{self.blocks}]" if self.blocks else self.model

    def near_tie(self, other_C: float | None) -> bool:
        """Whether ``other_C``, not this row's C, was within :data:`NEAR_TIE` of its choice by this row's
        own validation scores (higher is better for accuracy, lower for error)."""
        scores = dict(self.validation_by_C)
        if other_C is None or self.C is None or other_C == self.C or other_C not in scores or self.C not in scores:
            return False
        return abs(scores[other_C] - scores[self.C]) <= NEAR_TIE


def read_measured(directory: Path, optional: tuple[str, ...] = OPTIONAL_TABLES
                  ) -> dict[tuple[str, str, str, str], Row]:
    """Measured rows of the tables, by (table, model, blocks, protocol); those of :data:`OPTIONAL_TABLES`
    are read when they exist, or must exist unless named in ``optional``."""
    rows: dict[tuple[str, str, str, str], Row] = {}
    for name in (*TABLES, *OPTIONAL_TABLES):
        path = directory / name
        if name in optional and not path.exists():
            continue
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                records = list(csv.DictReader(handle))
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}") from None
        for record in records:
            if record.get("source") == NOT_MEASURED:  # a partial table checks fewer rows than it seems to
                raise UsageError(f"{path}: {record.get('model')!r} [{record.get('protocol')}] was not measured "
                                 f"(the table was written with --saved-only): regenerate it with a complete run")
            if record.get("source") != "measured":
                continue  # the paper's quoted rows are constants, not measurements
            try:
                row = Row(name, record["model"], record["protocol"], float(record["test_mean"]),
                          record.get("scale", ""), tuple(record.get(column, "") for column in SUBSET_COLUMNS),
                          _number(record.get("C")), _by_C(record.get("validation_by_C")), record.get("blocks", ""))
            except (KeyError, ValueError) as error:
                raise UsageError(f"{path}: a measured row lacks a usable {error} column") from None
            key = (name, row.model, row.blocks, row.protocol)
            if key in rows:
                raise UsageError(f"{path}: {row.name!r} appears twice under protocol {row.protocol}")
            rows[key] = row
    return rows


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _by_C(text: str | None) -> tuple[tuple[float, float], ...]:
    """The ``validation_by_C`` column ({"C": score, ...} as JSON), as (C, score) pairs."""
    try:
        return tuple((float(C), float(score)) for C, score in json.loads(text).items()) if text else ()
    except (ValueError, AttributeError, TypeError):
        return ()


def parse_tolerances(values: list[str] | None) -> dict[str, float]:
    tolerances = dict(TOLERANCES)
    for value in values or []:
        protocol, sep, points = value.rpartition("=")
        try:
            number = float(points)
        except ValueError:
            raise UsageError(f"--tolerance {value!r}: expected POINTS or PROTOCOL=POINTS") from None
        if not math.isfinite(number) or number < 0:
            raise UsageError(f"--tolerance {value!r}: points must be a non-negative number")
        if sep:
            tolerances[protocol] = number
        else:
            tolerances = {key: number for key in tolerances}
            tolerances["*"] = number  # also protocols not listed above
    return tolerances


def tolerance_for(protocol: str, tolerances: dict[str, float]) -> float:
    if protocol in tolerances:
        return tolerances[protocol]
    if "*" in tolerances:
        return tolerances["*"]
    raise UsageError(f"no tolerance for protocol {protocol!r}: pass --tolerance {protocol}=POINTS")


def compare(committed: dict, fresh: dict, tolerances: dict[str, float]) -> tuple[list[list[str]], list[str]]:
    """(comparison table lines, failure lines)."""
    lines, failures = [], []
    for key, old in committed.items():
        tolerance = tolerance_for(old.protocol, tolerances)
        new = fresh.get(key)
        if new is None:
            lines.append([old.name, old.protocol, f"{old.score:.2f}", "missing", "", f"{tolerance:g}", "FAIL"])
            failures.append(f"FAIL {old.name} [{old.protocol}]: committed {old.score:.2f}, fresh: missing "
                            f"(tolerance {tolerance:g})")
            continue
        moved = new.score - old.score
        tie = new.near_tie(old.C)  # the C moved between two Cs the fresh run itself finds near-tied
        if tie:
            tolerance = max(tolerance, NEAR_TIE_TOLERANCE)
        ok = abs(moved) <= tolerance
        status = ("ok" if ok else "FAIL") + (f", C near tie ({old.C:g} -> {new.C:g})" if tie else "")
        lines.append([old.name, old.protocol, f"{old.score:.2f}", f"{new.score:.2f}", f"{moved:+.2f}",
                      f"{tolerance:g}", status])
        if not ok:
            failures.append(f"FAIL {old.name} [{old.protocol}]: committed {old.score:.2f}, fresh {new.score:.2f} "
                            f"(moved {moved:+.2f}, tolerance {tolerance:g})")
    for key, new in fresh.items():
        if key not in committed:
            lines.append([new.name, new.protocol, "", f"{new.score:.2f}", "", "", "new"])
    for which, rows in (("committed", committed), ("fresh", fresh)):
        scales = sorted({row.scale for row in rows.values()} - {"ci"})
        if scales:
            failures.append(f"FAIL the {which} tables hold {', '.join(scales)}-scale rows: compare CI-scale "
                            f"tables only")
    subsets = {(row.table, row.subset) for rows in (committed, fresh) for row in rows.values()}
    for table in (*TABLES, *OPTIONAL_TABLES):
        seen = sorted({subset for name, subset in subsets if name == table})
        if len(seen) > 1:
            failures.append(f"FAIL {table}: the tables were made on different CI subsets (rows sha256 "
                            f"{' vs '.join('/'.join(part[:12] for part in subset) for subset in seen)})")
    return lines, failures


def notes(committed: dict, fresh: dict) -> list[str]:
    """Lines saying what was not checked and why (not failures)."""
    def has_knn(rows: dict) -> bool:
        return any(row.protocol.startswith(KNN_PREFIX) for row in rows.values())

    if has_knn(fresh) and not has_knn(committed):
        return ["note: the committed tables have no k-NN rows (they predate the k-NN columns): the fresh k-NN "
                "accuracies are listed as new and not checked; commit tables with them to check them"]
    return []


def render(lines: list[list[str]]) -> str:
    header = ["model", "protocol", "committed", "fresh", "moved", "tolerance", "status"]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--committed", type=Path, default=Path(__file__).resolve().parents[1] / "results" / "ci",
                        help="folder of the committed CI tables (default: results/ci)")
    parser.add_argument("--fresh", type=Path, required=True, help="folder of the freshly regenerated CI tables")
    parser.add_argument("--tolerance", action="append", metavar="[PROTOCOL=]POINTS",
                        help=f"allowed move in percentage points, for all protocols or one (default: "
                             f"{', '.join(f'{k}={v:g}' for k, v in TOLERANCES.items())})")
    args = parser.parse_args(argv)
    try:
        tolerances = parse_tolerances(args.tolerance)
        committed = read_measured(args.committed)
        # A per-block table committed must be fresh too (a missing one fails its rows); one only fresh is new.
        fresh = read_measured(args.fresh, optional=tuple(name for name in OPTIONAL_TABLES
                                                         if not (args.committed / name).exists()))
        if not committed:
            raise UsageError(f"{args.committed} holds no measured rows to check against")
        lines, failures = compare(committed, fresh, tolerances)
    except UsageError as error:
        print(f"check_ci_tables: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(render(lines))
    for note in notes(committed, fresh):
        print(note)
    for failure in failures:
        print(failure)
    verdict = "failed" if failures else "passed"
    print(f"check {verdict}: {len(committed)} committed rows checked against {args.fresh}")
    return EXIT_FAIL if failures else 0


if __name__ == "__main__":
    sys.exit(main())
