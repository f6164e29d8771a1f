"""Load, override, save and parse configurations layered on the schema of ``configs/defaults.py``.

Order of layers: the dataclass defaults, then the YAML file (after the chain of files it
names with a top-level ``base: other.yaml``, root first), then dotted ``key=value``
overrides. Loading is strict: an unknown section or key, or a value of the wrong type, is a
:class:`ConfigError` naming the dotted key and where it came from. Range and choice checks
are :func:`validate` (``configs/validation.py``).

A YAML value replaces the value below it, lists and ``loss.weights`` included (a child file
that sets ``loss.weights`` sets all of them); the override ``loss.weights.efa=0.5`` sets one
entry. Numbers such as ``1e-5`` are floats (YAML 1.2; PyYAML alone reads them as strings).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from configs.defaults import Config
from configs.errors import ConfigError
from configs.irra_flags import refuse_foreign_flags
from configs.validation import validate

PathLike = Union[str, Path]


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-5`` / ``5E+3`` as floats (YAML 1.2)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


# ---------------------------------------------------------------------------- types


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, Dict):
        key, value = typing.get_args(tp)
        return f"mapping of {_type_name(key)} to {_type_name(value)}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` checked against ``tp`` (and copied); raises TypeError when it does not fit."""
    origin = typing.get_origin(tp)
    if origin in (list, List):
        if not isinstance(value, list):
            raise TypeError
        return [_coerce(item, typing.get_args(tp)[0]) for item in value]
    if origin in (dict, Dict):
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise TypeError
        return {_coerce(k, key_type): _coerce(v, value_type) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and type(value) is tp:
        return value
    raise TypeError


def _section_types(section: Any) -> Dict[str, Any]:
    hints = typing.get_type_hints(type(section))
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


def _plus_joined(section: Any, key: str) -> bool:
    """Keys such as ``loss.names`` accept ``"a-sdm+mlm"`` for ``[a-sdm, mlm]``."""
    return any(f.name == key and f.metadata.get("plus_joined") for f in dataclasses.fields(section))


def split_plus(text: str) -> List[str]:
    """``"a-sdm + mlm"`` -> ``["a-sdm", "mlm"]`` (spaces stripped; empty names kept, for validation to name)."""
    return [part.strip() for part in text.split("+")] if text.strip() else []


def _unknown(name: str, valid: Sequence[str], where: str) -> ConfigError:
    section, _, leaf = name.rpartition(".")
    close = difflib.get_close_matches(leaf, list(valid), n=3, cutoff=0.6)
    prefix = f"{section}." if section else ""
    hint = f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""
    kind = f"keys of {section}" if section else "sections"
    return ConfigError(
        f"unknown {'key' if section else 'section'} '{name}'{where}{hint} (valid {kind}: {', '.join(valid)})"
    )


def _checked(dotted: str, value: Any, tp: Any, where: str) -> Any:
    try:
        return _coerce(value, tp)
    except TypeError:
        raise ConfigError(
            f"{dotted}{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"
            f"{_how_to_write(dotted, value, tp, where)}"
        ) from None


def _how_to_write(dotted: str, value: Any, tp: Any, where: str) -> str:
    """The form to type instead, for the slips that have one: a bare value for a list, a number for a bool."""
    in_file = "(in " in where
    if typing.get_origin(tp) in (list, List) and not isinstance(value, (list, dict)):
        listed = f"[{value}]" if value is not None and value != "" else "[]"
        form = f"{dotted.rpartition('.')[2]}: {listed}" if in_file else f"{dotted}={listed}"
        return f"; a list is written in brackets: {form}"
    if tp is bool and not isinstance(value, bool):
        form = f"{dotted.rpartition('.')[2]}: true" if in_file else f"{dotted}=true or {dotted}=false"
        return f"; write {form}"
    return ""


def _sections_with(leaf: str) -> List[str]:
    """Every dotted key whose last part is ``leaf`` (``batch_size`` -> data.batch_size, eval.batch_size)."""
    cfg = Config()
    return [
        f"{section.name}.{leaf}"
        for section in dataclasses.fields(cfg)
        if any(field.name == leaf for field in dataclasses.fields(getattr(cfg, section.name)))
    ]


def _set(cfg: Config, dotted: str, value: Any, where: str, raw: Optional[str] = None) -> None:
    """Set ``section.key`` (or ``loss.weights.NAME``) to ``value`` after the type check.
    ``raw``: the override's text, used as is for a ``str`` key whose YAML parse is not a string."""
    parts = dotted.split(".")
    sections = [f.name for f in dataclasses.fields(cfg)]
    if parts[0] not in sections:
        keys = _sections_with(parts[0]) if len(parts) == 1 else []
        if keys:
            shown = raw.strip() if raw is not None else repr(value)
            forms = " or ".join(f"{key}={shown}" for key in keys)
            raise ConfigError(f"'{dotted}'{where} has no section: keys are written section.key, here {forms}")
        raise _unknown(parts[0], sections, where)
    section = getattr(cfg, parts[0])
    if len(parts) == 1:  # a whole section: a mapping of its keys
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted}{where}: expected a mapping of its keys, got {value!r}")
        for key, item in value.items():
            _set(cfg, f"{dotted}.{key}", item, where)
        return
    types = _section_types(section)
    if parts[1] not in types:
        raise _unknown(f"{parts[0]}.{parts[1]}", list(types), where)
    tp = types[parts[1]]
    if len(parts) > 2:  # one entry of a mapping-valued key: loss.weights.efa
        if typing.get_origin(tp) not in (dict, Dict) or len(parts) > 3:
            raise ConfigError(f"{dotted}{where}: {parts[0]}.{parts[1]} is a {_type_name(tp)}, it has no sub-keys")
        entry = _checked(dotted, value, typing.get_args(tp)[1], where)
        value = {**getattr(section, parts[1]), parts[2]: entry}
    elif raw is not None and tp is str and not isinstance(value, (str, list, dict)):
        value = raw.strip()  # e.g. train.name=2024
    elif isinstance(value, str) and _plus_joined(section, parts[1]):
        value = split_plus(value)  # parsed once, here: consumers see the list
    value = _checked(dotted, value, tp, where)
    setattr(section, parts[1], value)


# ---------------------------------------------------------------------------- files


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"YAML syntax error in {path}{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _chain(path: Path) -> List[Tuple[Path, Dict[str, Any]]]:
    """The file and the files it names with ``base:``, root first."""
    chain: List[Tuple[Path, Dict[str, Any]]] = []
    seen: List[Path] = []
    current: Optional[Path] = Path(path)
    while current is not None:
        resolved = current.resolve()
        if resolved in seen:
            cycle = " -> ".join(str(p) for p in seen + [resolved])
            raise ConfigError(f"cycle of 'base:' files: {cycle}")
        seen.append(resolved)
        data = dict(_read_yaml(current))
        base = data.pop("base", None)
        chain.append((current, data))
        if base is not None and not isinstance(base, str):
            raise ConfigError(f"{current}: 'base' must be a file name, got {base!r}")
        if base and not (current.parent / base).is_file():
            raise ConfigError(f"{current}: base file {current.parent / base} not found")
        current = current.parent / base if base else None
    return chain[::-1]


def _apply_file(cfg: Config, path: Path, data: Dict[str, Any]) -> None:
    for section, values in data.items():
        _set(cfg, str(section), values, f" (in {path})")


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply dotted ``key=value`` overrides (values read as YAML) to ``cfg`` in place."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        key = key.strip()
        if not sep and key.endswith((".yaml", ".yml")):
            raise ConfigError(
                f"override {override!r} is a config file, not key=value; a config file goes after --config: "
                f"--config {key}"
            )
        if not sep or not key:
            raise ConfigError(f"override {override!r} is not of the form key=value (e.g. solver.lr=1e-5)")
        try:
            value = _yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override {override!r}: value is not valid YAML ({getattr(exc, 'problem', exc)})"
            ) from None
        _set(cfg, key, value, f" (override {override!r})", raw=raw)
    return cfg


def load_config(path: Optional[PathLike], overrides: Sequence[str] = (), check: bool = True) -> Config:
    """Defaults, then the YAML file (and its ``base:`` chain), then ``key=value`` overrides;
    validated (:func:`configs.validation.validate`) unless ``check`` is false."""
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a sequence of 'key=value' strings, got {overrides!r}")
    cfg = Config()
    if path is not None:
        for file, data in _chain(Path(path)):
            _apply_file(cfg, file, data)
    apply_overrides(cfg, overrides)
    if check:
        validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_differences(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """``section.key: before -> after`` for every value that differs between two config dicts."""
    return [
        f"{section}.{key}: {value!r} -> {after.get(section, {}).get(key)!r}"
        for section, values in before.items()
        for key, value in values.items()
        if after.get(section, {}).get(key) != value
    ]


def config_yaml(cfg: Config) -> str:
    """``cfg`` as YAML text, readable back by :func:`load_config` (``utils.io.save_config`` writes it)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------------------- command line


def build_parser(description: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Overrides are dotted keys of configs/defaults.py with YAML values, e.g. "
        "solver.lr=1e-5 data.dataset=RSTPReid model.image_size=[384,128] "
        "loss.weights.efa=0.5 eval.cross_domain=[ICFG-PEDES,RSTPReid]",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML config layered on the defaults (default: the defaults only)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    return parser


def parse_args(
    argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None, check: bool = True
) -> Tuple[Config, argparse.Namespace]:
    """Parse ``--config FILE key=value ...`` (``parser`` may add its own options) into a Config,
    validated when ``check``. A configuration error exits with the usage and the message."""
    parser = parser or build_parser()
    refuse_foreign_flags(parser, sys.argv[1:] if argv is None else argv)  # IRRA's --batch_size 64: name the key
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, check)
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg, args


def parse_cli(argv: Optional[Sequence[str]] = None, check: bool = True) -> Config:
    return parse_args(argv, check=check)[0]
