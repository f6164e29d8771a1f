"""Configuration: the schema (``defaults.py``), loading/saving (``loader.py``), checks (``validation.py``)."""
from configs.defaults import Config
from configs.loader import (ConfigError, apply_overrides, build_parser, config_to_dict, load_config,
                            parse_args, parse_cli, save_config)
from configs.validation import validate

__all__ = ["Config", "ConfigError", "apply_overrides", "build_parser", "config_to_dict", "load_config",
           "parse_args", "parse_cli", "save_config", "validate"]
