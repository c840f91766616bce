"""The project's exceptions: one root, driver errors converted at the backend boundary.

::

    CacheError
    ├── ConfigurationError        bad or insecure configuration, found at construction time
    ├── BackendError
    │   ├── BackendUnavailable    cannot reach or talk to the store
    │   └── BackendTimeout
    ├── IntegrityError            opaque, like Fernet's InvalidToken: never says why
    ├── ValueTooLarge
    ├── SerializationError
    ├── ClosedError
    ├── ContentionError       an atomic update lost its race more often than its retry budget
    └── UnsupportedOperation  the namespace's backend cannot do this (e.g. no atomic updates)

Messages never carry a key, a value, key material, a password or a URL with credentials. Backends
raise ``BackendError`` subclasses ``from`` the driver's exception so the cause stays inspectable in
a debugger without being rendered into the message.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CacheError",
    "ClosedError",
    "ConfigurationError",
    "ContentionError",
    "IntegrityError",
    "SerializationError",
    "UnsupportedOperation",
    "ValueTooLarge",
]


class CacheError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigurationError(CacheError, ValueError):
    """Bad or insecure configuration, found when a manager or namespace is built."""


class BackendError(CacheError):
    """The store failed. The message names the backend kind, never its address or credentials."""


class BackendUnavailable(BackendError):
    """The store cannot be reached or answered something we cannot use."""


class BackendTimeout(BackendError, TimeoutError):
    """The store did not answer in time."""


class IntegrityError(CacheError):
    """A stored entry failed authentication. Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("entry failed integrity check")


class ValueTooLarge(CacheError, ValueError):
    """A value is larger than the namespace's ``max_value_bytes``; nothing was written."""


class SerializationError(CacheError, TypeError):
    """A value cannot be serialized, or stored bytes cannot be deserialized."""


class ClosedError(CacheError, RuntimeError):
    """The manager (or namespace) was closed."""


class ContentionError(CacheError):
    """An atomic update (``incr``, ``expire``) kept losing races beyond its retry budget."""


class UnsupportedOperation(CacheError, NotImplementedError):
    """The namespace's backend does not implement the operation (see ``AtomicBackend``)."""
