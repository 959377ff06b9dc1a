"""Argument checks with the reference client's exception classes (TypeError for a
wrong type, ValueError for a bad value), made before anything reaches the library
(which checks again and answers ValueError too)."""

from __future__ import annotations

import math

MAX_LINE_BYTES = 256
MAX_SECONDS = 9_223_372_036
MAX_TCP_PORT = 65535
_WS = (" ", "\t", "\n", "\r")


def key(value: object, name: str = "key") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value == "":
        raise ValueError(f"{name} must not be empty")
    if "\n" in value or "\r" in value:
        raise ValueError(f"{name} must not contain newlines")
    if len(value.encode("utf-8")) > MAX_LINE_BYTES:
        raise ValueError(f"{name} too long (max {MAX_LINE_BYTES} bytes)")
    if any(c in value for c in _WS):
        raise ValueError(f"{name} must not contain whitespace")
    return value


def integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer")
    return value


def seconds(value: object, name: str, *, min_value: int) -> int:
    integer(value, name)
    assert isinstance(value, int)
    if value < min_value:
        raise ValueError(f"{name} must be >= {min_value}")
    if value > MAX_SECONDS:
        raise ValueError(f"{name} too large (max {MAX_SECONDS})")
    return value


def timeout_s(value: object, name: str = "acquire_timeout_s") -> int:
    return seconds(value, name, min_value=0)


def lease_ttl_s(value: object) -> int | None:
    if value is None:
        return None
    return seconds(value, "lease_ttl_s", min_value=1)


def limit(value: object) -> int:
    integer(value, "limit")
    assert isinstance(value, int)
    if value <= 0:
        raise ValueError("limit must be > 0")
    return value


def positive_duration(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite")
    if value <= 0:
        raise ValueError(f"{name} must be > 0")
    if value > MAX_SECONDS:
        raise ValueError(f"{name} too large (max {MAX_SECONDS})")
    return float(value)


def boolean(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool")
    return value


def renew_ratio(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("renew_ratio must be a number")
    if not 0 < value < 1:
        raise ValueError("renew_ratio must be between 0 and 1 (exclusive)")
    return float(value)


def auth_token(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("auth_token must be a str")
    if "\n" in value or "\r" in value:
        raise ValueError("auth token must not contain newlines")
    return value


def endpoint(host: object, port: object) -> tuple[str, int]:
    if not isinstance(host, str):
        raise TypeError("server host must be a string")
    if host == "":
        raise ValueError("server host must not be empty")
    if any(c in host for c in _WS):
        raise ValueError("server host must not contain whitespace")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError("server port must be an integer")
    if not 0 < port <= MAX_TCP_PORT:
        raise ValueError(f"server port must be between 1 and {MAX_TCP_PORT}")
    return host, port


def servers(value: object) -> tuple[tuple[str, int], ...]:
    """A list/tuple of (host, port), or a "host:port,host:port" string."""
    if isinstance(value, str):
        out = []
        for item in value.split(","):
            host, sep, port = item.strip().rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"server {item!r} is not host:port")
            out.append(endpoint(host.strip("[]"), int(port)))
        value = out
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("servers must be a non-empty list or tuple")
    result = []
    for server in value:
        if not isinstance(server, tuple) or len(server) != 2:
            raise TypeError("servers must contain (host, port) tuples")
        result.append(endpoint(server[0], server[1]))
    return tuple(result)


def shard_index(index: object, num_servers: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError("sharding_strategy must return an integer index")
    if not 0 <= index < num_servers:
        raise IndexError(
            f"sharding_strategy returned index {index}, but there are {num_servers} servers"
        )
    return index
