"""The base of every error a user can fix (a bad grid file, missing data or weights, wrong credentials).

The command line prints such an error as one line starting with ``error:`` and exits with status 2.
"""


class UserError(Exception):
    """An error whose message says what is wrong and what to do; never a bug."""
