"""The one map from redis-py's exceptions to the project's, applied around every driver call.

Driver messages carry host:port and more; ours never do. :data:`driver_errors` is the context
manager every engine wraps its driver calls in (standalone, Cluster and its topology discovery,
Sentinel and its primary discovery, closing), after httpx's ``map_httpcore_exceptions``;
:func:`convert` is the same map for an error reply returned in place of a reply, and
:func:`fail` settles a queued caller's future with it. Every converted error is raised ``from``
the driver's exception, for debugging.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Final

from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import BackendError, BackendTimeout, BackendUnavailable, CacheError

__all__ = ["DRIVER_ERRORS", "convert", "driver_errors", "fail"]

# RedisClusterException (topology discovery, slot routing) is not a RedisError.
DRIVER_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)


def convert(exc: BaseException) -> BackendError:
    """The project's error for a driver exception (a project error stays as it is)."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return BackendTimeout("redis backend timed out")
    if isinstance(exc, AuthenticationError):
        return BackendUnavailable("redis backend refused the credentials")
    if isinstance(exc, ResponseError):
        return BackendUnavailable("redis backend refused the command")
    return BackendUnavailable("redis backend unreachable")


class _DriverErrors:
    """``with driver_errors:``: a class, not a generator context manager, since it wraps every
    command on the hot path."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, DRIVER_ERRORS) and not isinstance(exc, CacheError):
            raise convert(exc) from exc


driver_errors: Final = _DriverErrors()


def fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Settle a queued operation's ``future`` with ``exc`` converted (if still pending)."""
    if future.done():
        return
    if isinstance(exc, CacheError):
        future.set_exception(exc)
        return
    error = convert(exc)
    error.__cause__ = exc
    future.set_exception(error)
