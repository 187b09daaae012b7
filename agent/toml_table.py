"""TOML tables into frozen dataclasses, with errors that name the file and the key.

agent.toml (agent/config.py), shell.toml's `[shell]` (agent/inventory.py) and
its `[web]` (agent/web_config.py) are all read this way: each key of the table
must be a field of the dataclass, and its value is checked by the field's
default (a bool, a whole number, a number within limits, a path, a StrEnum's
values, a list of strings) or by a check of the caller's own. The message of
every error is `FILE: KEY what is wrong`, KEY dotted from the top of the file.
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent import AgentError

T = TypeVar("T")


@dataclass(frozen=True)
class Where:
    """A place in a configuration file, for an error message."""

    file: str
    key: str = ""
    error_class: type[AgentError] = AgentError

    def at(self, key: str) -> Where:
        return dataclasses.replace(self, key=f"{self.key}.{key}" if self.key else key)

    def error(self, message: str) -> AgentError:
        return self.error_class(
            f"{self.file}: {self.key} {message}"
            if self.key
            else f"{self.file}: {message}"
        )


Check = Callable[[Any, Where], Any]


def read_toml(path: Path, error_class: type[AgentError]) -> dict[str, Any]:
    """The parsed file; `error_class` names the file when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise error_class(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise error_class(f"invalid config file {path}: {e}") from e


def table(
    cls: type[T],
    values: Any,
    where: Where,
    *,
    limits: Mapping[str, tuple[float, float]] | None = None,
    checks: Mapping[str, Check] | None = None,
) -> T:
    """An instance of the dataclass `cls` from a TOML table (pure).

    `limits`: the range of a number field (the key "*": of every float);
    `checks`: a field's own check, which returns the value to keep.
    """
    if not isinstance(values, Mapping):
        raise where.error("must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    defaults = cls()
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        at = where.at(key)
        if key not in fields:
            raise at.error("is not a known key")
        if checks and key in checks:
            kwargs[key] = checks[key](value, at)
            continue
        default = getattr(defaults, key)
        bounds = (limits or {}).get(key)
        if bounds is None and isinstance(default, float):
            bounds = (limits or {}).get("*")
        kwargs[key] = check_value(default, value, at, bounds)
    return cls(**kwargs)


def check_value(
    default: Any, value: Any, where: Where, bounds: tuple[float, float] | None = None
) -> Any:
    """`value` checked against the type of `default`; the value to keep."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise where.error("must be true or false")
        return value
    if isinstance(default, enum.Enum):
        choices = [m.value for m in type(default)]
        if value not in choices:
            raise where.error(f"must be one of {', '.join(choices)}, not {value!r}")
        return type(default)(value)
    if isinstance(default, int) and not isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise where.error("must be a whole number >= 0")
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise where.error(f"must be between {bounds[0]} and {bounds[1]}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            unit = " of seconds" if where.key.endswith("_s") else ""
            raise where.error(f"must be a number{unit}")
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise where.error(f"must be between {bounds[0]} and {bounds[1]}")
        return float(value)
    if isinstance(default, Path):
        return absolute_path(value, where)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v for v in value
        ):
            raise where.error("must be a list of strings")
        return tuple(value)
    if not isinstance(value, str) or not value:
        raise where.error("must be a non-empty string")
    return value


def absolute_path(value: Any, where: Where) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise where.error("must be a path")
    path = Path(value)
    if not path.is_absolute():
        raise where.error(f"must be an absolute path, not {path}")
    return path
