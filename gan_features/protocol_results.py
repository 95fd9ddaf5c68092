"""What a protocol run returns: the chosen C, how every C scored on validation, the test score
and the provenance, as :class:`ProtocolResult`; :class:`Summary` is one score over repeated fits."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Summary:
    """Mean and spread of one score (percent) over ``n`` fits."""

    mean: float
    std: float  # population std (ddof=0), as the original's np.std
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Summary":
        values = np.asarray(values, dtype=np.float64)
        return cls(float(values.mean()), float(values.std()), len(values))

    @property
    def ci95(self) -> float:
        """1.96 std: the half-width the original SVHN analysis prints after its means."""
        return 1.96 * self.std


@dataclass(frozen=True, eq=False)  # eq=False: a DataFrame field has no boolean ==
class ProtocolResult:
    """One protocol run: the chosen C, how every C scored on validation, the test score, provenance."""

    protocol: str
    metric: str  # "accuracy" or "error", in percent
    spread: str  # what the paper prints after +-: "std" or "ci95"
    params: dict  # the protocol's parameters (seed, Cs, draws...) and the SVM's ("svm")
    chosen_C: float
    validation: pd.DataFrame  # one row per C: C, mean, std, ci95, fits, chosen
    test: Summary
    final_validation: Summary | None  # validation scores of the final models; None if they trained on it
    wall_time_s: float  # this run's; fits an earlier, stopped run saved are counted below
    provenance: dict
    resumed_fits: int = 0  # fits loaded from checkpoint_dir instead of refitted
    resumed_fit_seconds: float | None = 0.0  # their solve time as recorded then (None: not recorded)

    def to_row(self) -> dict[str, Any]:
        """Flat scalars for one table row (structured values as JSON text, so CSV round-trips)."""
        chosen = self.validation.loc[self.validation["chosen"]].iloc[0]
        row: dict[str, Any] = {
            "protocol": self.protocol, "metric": self.metric,
            "test_mean": self.test.mean, "test_std": self.test.std, "test_ci95": self.test.ci95,
            "test_fits": self.test.n, "C": self.chosen_C, "validation_mean": float(chosen["mean"]),
            "final_validation_mean": None if self.final_validation is None else self.final_validation.mean,
            "final_validation_ci95": None if self.final_validation is None else self.final_validation.ci95,
            # every C's mean validation score: what a moved choice of C is explained with
            "validation_by_C": _cell({f"{C:g}": round(float(mean), 4)
                                      for C, mean in zip(self.validation["C"], self.validation["mean"])}),
            "wall_time_s": self.wall_time_s, "resumed_fits": self.resumed_fits,
            "resumed_fit_seconds": self.resumed_fit_seconds,
        }
        for key, value in {**self.params, **self.provenance}.items():
            row.setdefault(key, _cell(value))
        return row

    def describe(self) -> str:
        """A few lines for the terminal: the validation table, the choice, the test score."""
        spread = {"std": "std", "ci95": "1.96 std"}[self.spread]
        lines = [f"{self.protocol} (seed {self.params['seed']}): validation {self.metric} (%) per C",
                 self.validation.to_string(index=False, float_format=lambda v: f"{v:.4g}"),
                 f"chosen C = {self.chosen_C:g}"]
        if self.final_validation is not None:
            lines.append(f"validation {self.metric} of the final models: {self.final_validation.mean:.2f} "
                         f"+- {getattr(self.final_validation, self.spread):.2f} %")
        if self.test.n > 1:
            lines.append(f"test {self.metric}: {self.test.mean:.2f} +- {getattr(self.test, self.spread):.2f} % "
                         f"(mean +- {spread} over {self.test.n} fits)")
        else:
            lines.append(f"test {self.metric}: {self.test.mean:.2f} % (one fit)")
        return "\n".join(lines)


def _cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value
