"""argparse types for ``gan-features``: every number and list is checked when parsed, and a bad one is
one line naming the option and what it expected."""
from __future__ import annotations

import argparse
import json
import math


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def positive_int_list(text: str) -> tuple[int, ...]:
    values = int_list(text)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers of at least 1, got {text!r}")
    return values


def checked_list(parse, valid, what: str):
    """An argparse type: ``parse(text)`` when it gives a non-empty list that ``valid`` accepts, else one
    line saying ``what`` was expected."""
    def check(text: str) -> tuple:
        try:
            values = parse(text)
        except argparse.ArgumentTypeError:
            values = ()
        if not values or not valid(values):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return values

    return check


# --layers: conv block indices, 0 or more; --C: a grid of distinct, finite, positive numbers
index_list = checked_list(int_list, lambda values: min(values) >= 0,
                            "comma-separated block indices (whole numbers from 0), e.g. 0,1,2,3")
positive_float_list = checked_list(
    float_list, lambda values: all(math.isfinite(v) and v > 0 for v in values) and len(set(values)) == len(values),
    "comma-separated distinct positive numbers, e.g. 1e-4,1e-3,1e-2")


def positive(convert, what: str):
    """An argparse type: ``convert(text)`` when that is a finite number above 0, else an error saying ``what``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def whole(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number from ``minimum`` (to ``maximum``), else a one-line error saying so."""
    what = (f"a whole number from {minimum} to {maximum}" if maximum is not None
            else f"a whole number of at least {minimum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def number_in(low: float, high: float, what: str):
    """An argparse type: a finite float with ``low <= value < high``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value < high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


SEED_MAX = 2**32 - 1  # torch and numpy both take these; train adds the rank and the epoch to it
positive_whole = whole(1)  # batch sizes, steps, epochs, threads, sizes
non_negative_whole = whole(0)  # worker processes, centroids (0: none)
seed_value = whole(0, SEED_MAX)
positive_number = positive(float, "a positive number")


def key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers and lists as such; anything else stays text
    except json.JSONDecodeError:
        return key, value
