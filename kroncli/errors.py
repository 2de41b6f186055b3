"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class KronError(Exception):
    """A problem the user can fix; the message says how."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    return (str(error).splitlines() or [type(error).__name__])[0]


# `kron predict ... | head -1`: the reader closed stdout. The status a Unix tool killed by SIGPIPE gets (128 + 13),
# as `yes | head -1` reports it; no message (kroncli/cli/common.py and the fast `python -m kroncli.predict`).
BROKEN_PIPE_EXIT = 141


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has closed it; False where that cannot be told."""
    import select
    import sys

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or a stdout without a file descriptor
        return False


def silence_stdout() -> int:
    """Point stdout at /dev/null, so that Python's flush at exit does not report the broken pipe again; returns the
    exit status to stop with."""
    import os
    import sys

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return BROKEN_PIPE_EXIT
