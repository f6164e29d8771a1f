"""Configuration: the schema (``defaults.py``), loading (``loader.py``), allowed values and
checks (``validation.py``), the user-error types (``errors.py``). Imports no other package
of the project; every other package may import it."""

from configs.defaults import Config
from configs.errors import ConfigError, UserError
from configs.loader import (
    apply_overrides,
    build_parser,
    config_to_dict,
    config_yaml,
    load_config,
    parse_args,
    parse_cli,
)
from configs.validation import validate

__all__ = [
    "Config",
    "ConfigError",
    "UserError",
    "apply_overrides",
    "build_parser",
    "config_to_dict",
    "config_yaml",
    "load_config",
    "parse_args",
    "parse_cli",
    "validate",
]
