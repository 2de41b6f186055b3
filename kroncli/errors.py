"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class KronError(Exception):
    """A problem the user can fix; the message says how."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    return (str(error).splitlines() or [type(error).__name__])[0]
