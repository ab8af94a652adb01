"""Errors the `drover` command reports as one line on stderr with exit status 2 (no traceback)."""


class UsageError(Exception):
    pass
