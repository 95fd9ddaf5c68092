"""The one exception type the CLI turns into a one-line message and exit status 2, and the two
helpers its messages are made with."""


class GanFeaturesError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it, on one line."""


def one_line(text: object) -> str:
    """``text`` with its line breaks (and the indentation around them) turned into single spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def shortened(text: object, limit: int) -> str:
    """:func:`one_line` of ``text``, cut to ``limit`` characters (ending in "...")."""
    text = one_line(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."
