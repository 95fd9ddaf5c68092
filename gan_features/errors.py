"""The one exception type the CLI turns into a one-line message and exit status 2."""


class GanFeaturesError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it, on one line."""
