"""Sharding: the CRC-32 routing every dflockd client uses (computed by the library)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from . import _native as n

ShardingStrategy = Callable[[str, int], int]

DEFAULT_SERVERS: tuple[tuple[str, int], ...] = (("127.0.0.1", 6388),)


def stable_hash_shard(key: str, num_servers: int) -> int:
    """Deterministic CRC-32 shard, `crc32(utf8(key)) % num_servers`: the same
    choice as the Go, TypeScript and Python (dflockd-client) clients."""
    if isinstance(num_servers, bool) or not isinstance(num_servers, int):
        raise TypeError("num_servers must be an integer")
    if num_servers <= 0:
        raise ValueError("num_servers must be > 0")
    raw = n.encode(key, "key")
    out = ctypes.c_size_t()
    n.call(n.lib.dflockd_shard, raw, len(raw), num_servers, ctypes.byref(out))
    return out.value


def is_crc32(strategy: object) -> bool:
    """Whether `strategy` is this package's or the reference client's CRC-32
    (then the library routes by itself, without a callback)."""
    return strategy is stable_hash_shard or (
        getattr(strategy, "__name__", None) == "stable_hash_shard"
        and getattr(strategy, "__module__", None) == "dflockd_client.sharding"
    )
