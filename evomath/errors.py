"""The one base class of the failures a user can act on.

A bad file, flag, config value or model directory raises an ``InputError`` (or a subclass) whose
message is one line saying what is wrong and where; the command line prints it and exits 2
(``evomath.commands.run_command``). Any other exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Input that cannot be used as given; the message is one line naming the file, flag or field."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or directory the input names (a problem file, saved trees, the data directory) is not there."""
