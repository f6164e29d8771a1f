"""The error every command-line program reports as one line (exit status 2): a user mistake.

Each package raises its own subclass (ConfigError here, DataError in datasets, WeightsError
in model, RunFolderError in processor.run_keeper); a genuine bug is any other exception and keeps its
traceback.
"""

from typing import Callable, Iterable, List


class UserError(Exception):
    """A file, folder or value given by the user is missing or wrong; the message says which
    and what was expected."""


class ConfigError(UserError, ValueError):
    """A configuration file, override or value is invalid; the message names the key or file."""


class UserErrors(UserError):
    """Several user mistakes found in one pass (every missing input at once, not one per run)."""

    def __init__(self, errors: List[UserError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(f"  - {error}" for error in self.errors)
        super().__init__(f"{len(self.errors)} problems, all reported at once:\n{lines}")


def raise_all(checks: Iterable[Callable[[], object]]) -> None:
    """Run every check; raise nothing when all pass, the one :class:`UserError` when one fails
    (its own type, so callers can still catch it), else :class:`UserErrors` listing them all
    (a problem two checks find is listed once)."""
    errors: List[UserError] = []
    for check in checks:
        try:
            check()
        except UserError as error:
            if str(error) not in map(str, errors):
                errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise UserErrors(errors)
