"""The one error type for user mistakes (bad flag, file, shape, config key).

The CLI prints its message on one line without a traceback and exits non-zero. Internal
invariants use ``assert`` instead: an AssertionError is a bug in pcgan, a PcganError is not.
"""


class PcganError(Exception):
    """A user-facing error. The message names the file, key or shape, and the fix."""
