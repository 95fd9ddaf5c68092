"""Wall time of whole protocol runs (every C, every draw, the refit, the test scores) under
several SVM settings, side by side in one process, on the same stores.

``svm_speed.py`` times one solver on one matrix; this times what a table row costs: the C path,
the choice of C, the refits, with the Gram matrix shared by a protocol's fits (formed afresh in
every run here: no cache is read or kept, so runs are comparable). Each run also reports its
chosen C, test score and validation score per C, so a faster setting is seen to give the same
answer. The real run (CI-scale stores of ``gan-features bench --scale ci``, quiet machine)::

    python benchmarks/protocol_speed.py --pair "our D" TRAIN.h5 TEST.h5 --pair pixels TRAIN.h5 TEST.h5 \\
        --protocol cifar10 --svm preconditioner_rank=0 --svm preconditioner_rank=256

Writes ``<out-dir>/protocol_speed.md`` and ``.csv`` (one row per store pair x protocol x setting x
repeat; the markdown gives medians).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import pandas as pd

from gan_features.protocols import get_protocol
from gan_features.report import write_benchmark


def _setting(text: str) -> dict:
    """``key=value,key=value`` of LinearL2SVM parameters (values parsed as JSON where they parse)."""
    setting = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            setting[key] = json.loads(value)
        except json.JSONDecodeError:
            setting[key] = value
    return setting


def measure(pairs: list[tuple[str, str, str]], protocols: list[str], overrides: dict, settings: list[str],
            repeats: int) -> pd.DataFrame:
    rows = []
    for label, train, test in pairs:
        for name in protocols:
            protocol = get_protocol(name, **overrides.get(name, {}))
            for repeat in range(repeats):
                for setting in settings:  # interleaved: a drift in the machine's load hits every setting
                    started = time.perf_counter()
                    result = protocol.run(train, test, svm_params=_setting(setting), progress=False,
                                          gram_cache=False)
                    seconds = time.perf_counter() - started
                    row = result.to_row()
                    rows.append({"representation": label, "protocol": name, "svm": setting, "repeat": repeat,
                                 "seconds": round(seconds, 1), "C": result.chosen_C,
                                 "test_mean": round(result.test.mean, 3), "validation_by_C": row["validation_by_C"],
                                 "shared_gram": json.dumps(result.provenance["shared_gram"]),
                                 "train_store": train, "test_store": test})
                    print(json.dumps(rows[-1]), flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("LABEL", "TRAIN", "TEST"))
    parser.add_argument("--protocol", action="append", required=True, help="cifar10, cifar10-400, ...")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PROTOCOL:KEY=VALUE",
                        help="a protocol parameter, e.g. cifar10-400:validation_size=2000")
    parser.add_argument("--svm", action="append", required=True, metavar="KEY=VALUE[,KEY=VALUE]",
                        help="LinearL2SVM settings of one arm, e.g. preconditioner_rank=0 ('' for the defaults)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args(argv)
    overrides: dict[str, dict] = {}
    for text in args.overrides:
        name, _, assignment = text.partition(":")
        overrides.setdefault(name, {}).update(_setting(assignment))
    warnings.simplefilter("ignore")  # ConvergenceWarnings are in the rows' statuses
    load_before = os.getloadavg()
    table = measure([tuple(pair) for pair in args.pair], args.protocol, overrides, args.svm, args.repeats)
    load_after = os.getloadavg()
    medians = (table.groupby(["representation", "protocol", "svm"], sort=False)
               .agg(seconds=("seconds", statistics.median), runs=("seconds", "size"), C=("C", "first"),
                    test_mean=("test_mean", "first")).reset_index())
    print(write_benchmark(args.out_dir, "protocol_speed", "Protocol runs side by side", medians,
                          [f"protocol overrides {json.dumps(overrides)}; median of {args.repeats} run(s) per "
                           "setting; validation scores per C in the CSV (one row per run)"],
                          (load_before[0], load_after[0]), csv_table=table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
