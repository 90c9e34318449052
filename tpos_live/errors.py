"""Errors that reach the user as one line, without a traceback."""


class UserError(Exception):
    """Bad input or a missing resource: the message says what is wrong and what to do.

    The command line prints it as ``error: <message>`` and exits with ``exit_code`` (2: usage).
    """

    exit_code = 2


class MissingResource(UserError):
    """Something to fetch is neither here nor downloadable (offline, say): the message names it. Exit 1."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The gist of a library error for a one-line message (a heading ending in ':' takes its first item)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]
