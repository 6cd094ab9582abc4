"""Settings: ``init()`` arguments and ``MPIRAY_*`` environment variables, parsed strictly.

A malformed value is an error naming the variable; nothing is read at import.
``init()`` arguments win over the environment.  See docs/settings.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping


class ConfigError(ValueError):
    """A setting has a value mpiray cannot use."""


def _parse_number(name: str, text: str, *, integer: bool, minimum: float) -> Any:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={text!r}: expected {kind}") from None
    if value < minimum:
        raise ConfigError(f"{name}={text!r}: must be >= {minimum}")
    return value


def _parse_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={text!r}: expected 1/0, true/false, yes/no or on/off")


def _parse_resources(name: str, text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}={text!r}: expected a JSON object such as '{{\"nvme\": 1}}' ({exc})") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in value.items()):
        raise ConfigError(f"{name}={text!r}: expected a JSON object of name -> non-negative number")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting, with its environment variable in the field's metadata."""

    num_cpus: float | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_NUM_CPUS", "kind": "number"})
    num_gpus: float | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_NUM_GPUS", "kind": "number"})
    memory: int | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_MEMORY", "kind": "int"})
    resources: dict | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_RESOURCES", "kind": "json"})
    num_nodes: int = dataclasses.field(default=1, metadata={"env": "MPIRAY_NUM_NODES", "kind": "int", "min": 1})
    object_store_memory: int | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_OBJECT_STORE_MEMORY", "kind": "int"})
    inline_limit: int = dataclasses.field(default=100 * 1024, metadata={"env": "MPIRAY_INLINE_LIMIT", "kind": "int"})
    share_host_memory: bool = dataclasses.field(default=True, metadata={"env": "MPIRAY_SHARE_HOST_MEMORY", "kind": "bool"})
    pipeline: float = dataclasses.field(default=2.0, metadata={"env": "MPIRAY_PIPELINE", "kind": "number", "min": 1})
    store_root: str | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_STORE_ROOT", "kind": "str"})
    spill_dir: str | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_SPILL_DIR", "kind": "str"})
    staging_bytes: int = dataclasses.field(default=64 << 20, metadata={"env": "MPIRAY_STAGING_BYTES", "kind": "int", "min": 1 << 16})
    driver_arena_bytes: int | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_DRIVER_ARENA_BYTES", "kind": "int", "min": 0})
    node_arena_bytes: int | None = dataclasses.field(default=None, metadata={"env": "MPIRAY_NODE_ARENA_BYTES", "kind": "int", "min": 0})
    heartbeat_timeout: float = dataclasses.field(default=20.0, metadata={"env": "MPIRAY_HEARTBEAT_TIMEOUT", "kind": "number", "min": 1})
    log_to_driver: bool = dataclasses.field(default=True, metadata={"env": "MPIRAY_LOG_TO_DRIVER", "kind": "bool"})
    lease_workers: bool = dataclasses.field(default=True, metadata={"env": "MPIRAY_LEASE_WORKERS", "kind": "bool"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            text = environ.get(name)
            if text is None or text == "":
                continue
            kind, minimum = f.metadata["kind"], f.metadata.get("min", 0)
            if kind == "number":
                values[f.name] = _parse_number(name, text, integer=False, minimum=minimum)
            elif kind == "int":
                values[f.name] = _parse_number(name, text, integer=True, minimum=minimum)
            elif kind == "bool":
                values[f.name] = _parse_bool(name, text)
            elif kind == "json":
                values[f.name] = _parse_resources(name, text)
            else:
                values[f.name] = text
        return cls(**values)

    def with_args(self, **kwargs: Any) -> "Config":
        """Apply ``init()`` arguments (None means: keep the environment's value)."""
        changes = {}
        for key, value in kwargs.items():
            if value is None:
                continue
            if key in ("num_cpus", "num_gpus", "memory", "num_nodes", "object_store_memory"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"init({key}={value!r}): expected a non-negative number")
                if key == "num_nodes" and (int(value) != value or value < 1):
                    raise ValueError(f"init(num_nodes={value!r}): expected a whole number >= 1")
            if key == "resources":
                if not isinstance(value, Mapping) or not all(
                        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                        for k, v in value.items()):
                    raise ValueError(f"init(resources={value!r}): expected a dict of name -> non-negative number")
                value = dict(value)
            changes[key] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def settings_table() -> list[tuple[str, str, str]]:
    """(init argument, environment variable, default) for the docs."""
    return [(f.name, f.metadata["env"], repr(f.default)) for f in dataclasses.fields(Config)]
