"""The error every command-line program reports as one line (exit status 2): a user mistake.

Each package raises its own subclass (ConfigError here, DataError in datasets, WeightsError
in model, RunFolderError in utils.run_folder); a genuine bug is any other exception and keeps its
traceback.
"""


class UserError(Exception):
    """A file, folder or value given by the user is missing or wrong; the message says which
    and what was expected."""


class ConfigError(UserError, ValueError):
    """A configuration file, override or value is invalid; the message names the key or file."""
