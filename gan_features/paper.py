"""The DCGAN paper's reported numbers, quoted exactly, for the benchmark tables to sit beside.

Source: Radford, Metz & Chintala, *Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks*, arXiv:1511.06434v2 (ICLR 2016), Table 1 (CIFAR-10) and Table 2
(SVHN, 1000 labels). Every cell is kept as the paper prints it (``text``); numbers are parsed from
that text, so there is one source of truth and a typo cannot hide in a second copy.

Checked against public text of the paper (not the PDF itself):
- the v2 text states 80.6% (1-layer k-means, 4800 maps), 82.0% (multi-layer k-means), 82.8%
  (DCGAN + L2-SVM, 28672-d features, 512 maps in the top layer), that Exemplar CNNs do better,
  22.48% SVHN test error with 1000 labels and 28.87% for the supervised CNN of the same architecture;
- the SVHN baselines KNN 77.93, TSVM 66.55, M1+M2 36.02, SWWAE 27.83 / 23.56 appear with the same
  values in later papers' copies of this table (ALI, IAN).
Not found in any text reachable from here: the 400-per-class column, View Invariant K-means 81.9%,
Exemplar CNN's 84.3% / 1024 (84.3% only in secondary summaries), M1+KNN 65.63 and M1+TSVM 54.33.
Note: ALI (Dumoulin et al. 2016) and IAN (Brock et al. 2016) cite the DCGAN SVHN result as
22.18% (+-1.13%), not 22.48%; the 22.48% here is the v2 paper's own figure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ARXIV_ID = "1511.06434"
CITATION = ("Radford, Metz & Chintala (2015), Unsupervised Representation Learning with Deep Convolutional "
            "Generative Adversarial Networks, arXiv:1511.06434v2 (ICLR 2016)")
TABLE1_SOURCE = f"quoted from the paper (arXiv {ARXIV_ID}, Table 1)"
TABLE2_SOURCE = f"quoted from the paper (arXiv {ARXIV_ID}, Table 2)"

# The paper's column heads, as it prints them.
TABLE1_COLUMNS = ("Model", "Accuracy", "Accuracy (400 per class)", "max # of feature units")
TABLE2_COLUMNS = ("Model", "error rate")

_PERCENT = re.compile(r"^\s*(?P<mean>\d+(?:\.\d+)?)%(?:\s*\(±(?P<spread>\d+(?:\.\d+)?)%\))?")


@dataclass(frozen=True)
class Quoted:
    """One cell as printed, e.g. ``"63.7% (±0.7%)"`` or ``"28.87% (validation)"``."""

    text: str

    @property
    def value(self) -> float:
        """The leading percentage: 63.7 for ``"63.7% (±0.7%)"``."""
        return float(self._match()["mean"])

    @property
    def spread(self) -> float | None:
        """The ``±`` part, when printed: 0.7 for ``"63.7% (±0.7%)"``."""
        spread = self._match()["spread"]
        return None if spread is None else float(spread)

    def _match(self) -> re.Match:
        match = _PERCENT.match(self.text)
        if match is None:
            raise ValueError(f"not a percentage as the paper prints one: {self.text!r}")
        return match


@dataclass(frozen=True)
class Table1Row:
    """CIFAR-10: accuracy with all labels, with 400 labels per class (mean ± std), max # of feature units."""

    model: str
    accuracy: Quoted
    accuracy_400: Quoted
    max_feature_units: str


@dataclass(frozen=True)
class Table2Row:
    """SVHN with 1000 labels: test error (the supervised CNN's number is a validation error)."""

    model: str
    error: Quoted


def _t1(model: str, accuracy: str, accuracy_400: str, units: str) -> Table1Row:
    return Table1Row(model, Quoted(accuracy), Quoted(accuracy_400), units)


TABLE1: tuple[Table1Row, ...] = (
    _t1("1 Layer K-means", "80.6%", "63.7% (±0.7%)", "4800"),
    _t1("3 Layer K-means Learned RF", "82.0%", "70.7% (±0.7%)", "3200"),
    _t1("View Invariant K-means", "81.9%", "72.6% (±0.7%)", "6400"),
    _t1("Exemplar CNN", "84.3%", "77.4% (±0.2%)", "1024"),
    _t1("DCGAN (ours) + L2-SVM", "82.8%", "73.8% (±0.4%)", "512"),
)

TABLE2: tuple[Table2Row, ...] = tuple(Table2Row(model, Quoted(error)) for model, error in (
    ("KNN", "77.93%"),
    ("TSVM", "66.55%"),
    ("M1+KNN", "65.63%"),
    ("M1+TSVM", "54.33%"),
    ("M1+M2", "36.02%"),
    ("SWWAE without dropout", "27.83%"),
    ("SWWAE with dropout", "23.56%"),
    ("DCGAN (ours) + L2-SVM", "22.48%"),
    ("Supervised CNN with the same architecture", "28.87% (validation)"),
))
