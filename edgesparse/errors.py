"""User-facing errors: one line that names the offending file, node, input or shape.

The CLI prints `error: <message>` and exits with code 2 for these; anything else is a bug and keeps its
traceback.
"""


class EdgesparseError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2
