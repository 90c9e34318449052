"""Errors that reach the user as one line, without a traceback."""


class UserError(Exception):
    """Bad input or a missing resource: the message says what is wrong and what to do.

    The command line prints it as ``error: <message>`` and exits with status 2.
    """
