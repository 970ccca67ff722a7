"""The one exception type for mistakes a user can fix (bad flags, files, data).

Command-line entry points catch it and print its message without a traceback; everything else
is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message names the file/row/flag and the fix."""
