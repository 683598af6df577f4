"""The one way the package reads settings: a dataclass, filled from a mapping or a YAML file.

Every settings class (the training configs of :mod:`openmm_cgkd.training.config`, the
network architecture :class:`~openmm_cgkd.model.potential.PotentialConfig`, the analysis
:class:`~openmm_cgkd.analysis.report.AnalysisSettings`, the
:class:`~openmm_cgkd.benchmark.md.BenchmarkSettings`, the pipeline config) is a dataclass deriving
from :class:`Config`, which gives it ``from_dict``, ``from_yaml`` and ``to_dict``:

* a key the dataclass does not have is a :class:`ConfigError` naming it by its dotted path
  (``trainer.max_epoch``) and listing the known ones, so a typo never falls back to a default;
* a value of the wrong type is a :class:`ConfigError` (``trainer.max_epochs must be an integer,
  got 'ten'``); ints are accepted for floats (``1`` for ``1.0``), never bools for numbers;
  nested dataclasses, lists, tuples, mappings and ``X | None`` are converted recursively;
* the dataclass's ``__post_init__`` then checks values (ranges, consistency) and raises the
  package's error of its domain.

:class:`ConfigError` is a :class:`~openmm_cgkd.errors.CGKDError` (exit code 2) and a
``ValueError``. This module imports nothing heavy (PyYAML only when a file is read).
"""
from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from openmm_cgkd.errors import CGKDError, MissingFileError

__all__ = ["ConfigError", "ConfigFileNotFoundError", "Config", "config_from_dict", "config_to_dict",
           "read_yaml_mapping", "load_config", "merge"]


class ConfigError(CGKDError, ValueError):
    """Settings that no run can use: unknown key, wrong type or impossible value."""

    exit_code = 2  # bad settings: usage error


class ConfigFileNotFoundError(ConfigError, MissingFileError):
    """A settings file that does not exist (also a ``FileNotFoundError``)."""


def read_yaml_mapping(path: str | os.PathLike, what: str = "config", error: type = ConfigError) -> dict:
    """The mapping at the top of the YAML file ``path`` (an empty file gives ``{}``).

    :class:`ConfigFileNotFoundError` when there is no such file; ``error`` (naming ``what``) when
    it is not YAML text or its top level is not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigFileNotFoundError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _mapping(value, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {value!r}")
    return dict(value)


def _sequence(value, path: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list, got {value!r}")
    return list(value)


def _convert(value, tp, path: str):
    """``value`` as type ``tp`` (see the module docstring); :class:`ConfigError` naming ``path``."""
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(typing.get_args(tp)):
                return None
            raise ConfigError(f"{path} must not be null")
        errors = []
        for a in args:
            try:
                return _convert(value, a, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of {args}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return config_from_dict(tp, _mapping(value, path), path)
    if origin is list:
        (item,) = typing.get_args(tp) or (typing.Any,)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(_sequence(value, path))]
    if origin is tuple:
        args = typing.get_args(tp)
        items = _sequence(value, path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(items))
        if args and len(args) != len(items):
            raise ConfigError(f"{path} must have {len(args)} entries, got {value!r}")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(items, args or [Any] * len(items))))
    if tp is dict or origin is dict:
        return _mapping(value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{path} must be a path, got {value!r}")
        return Path(value)
    return value


def config_from_dict(cls, data: Mapping, path: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`
    naming their dotted path (``path`` prefixes it, e.g. ``"trainer"``). Keys a class renamed
    (its class variable ``RENAMED_KEYS``: {old: new}) are read under their old name too."""
    data = _mapping(data, path or cls.__name__)
    for old, new in getattr(cls, "RENAMED_KEYS", {}).items():
        if old in data:
            if new in data:
                where = f"{path}." if path else ""
                raise ConfigError(f"{where}{old} is the old name of {where}{new}: give one of them")
            data = {(new if k == old else k): v for k, v in data.items()}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in {path}" if path else ""
        raise ConfigError(f"unknown key(s) {unknown}{where}; known: {sorted(names)}")
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def config_to_dict(obj) -> dict:
    """A settings dataclass as plain, YAML-safe values (tuples as lists)."""
    def plain(v):
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(dataclasses.asdict(obj))


def merge(base: Mapping, over: Mapping) -> dict:
    """``base`` updated by ``over``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls, path: str | os.PathLike, overrides: Mapping | None = None, what: str = "config"):
    """Read YAML ``path`` into dataclass ``cls``. Relative paths under the top-level keys named
    by ``cls.PATH_KEYS`` (a class variable; none when absent) are taken relative to the file's
    directory; ``overrides`` (nested) win over the file."""
    path = Path(path)
    data = read_yaml_mapping(path, what)
    for key in getattr(cls, "PATH_KEYS", ()):
        if isinstance(data.get(key), str) and data[key] and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return config_from_dict(cls, merge(data, overrides or {}))


class Config:
    """Base of the package's settings dataclasses: ``from_dict``, ``from_yaml`` and ``to_dict``
    by the rules of this module."""

    @classmethod
    def from_dict(cls, data: Mapping, source: str = ""):
        """Build from a mapping; :class:`ConfigError` names unknown keys and wrong types."""
        return config_from_dict(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Mapping | None = None):
        """Read a YAML file (its top level: this class's fields)."""
        return load_config(cls, path, overrides, what=cls.__name__)

    def to_dict(self) -> dict:
        return config_to_dict(self)
