"""The one exception type for errors a user can cause and fix."""


class RefreshError(Exception):
    """A problem the user can fix: bad config or policy, unreachable database, missing binary.

    The message says what is wrong and how to fix it; the CLI prints it without a traceback.
    """
