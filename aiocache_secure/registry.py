"""The namespaces a manager made: open ones by name, and released ones the application holds.

Private namespaces are kept open up to ``max_private_namespaces``, least recently requested
released first; a released namespace (beyond the cap, or erased) that the application still
holds stays findable by name through a weak map, so ``erase()`` and ``namespace()`` reach it.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from .backend import Backend
from .cache import Cache
from .policy import Policy
from .stores import Stores
from .vault import KeyLease, Vault

__all__ = ["NamespaceRecord", "Registry"]


@dataclass(slots=True, weakref_slot=True)
class NamespaceRecord:
    """One namespace and what the manager keeps beside it."""

    cache: Cache
    store: Backend
    vault: Vault | None
    tag: bytes
    lease: KeyLease | None
    config: tuple[object, Policy]  # (the backend asked for, the policy): what namespace() got
    stats_key: bytes | None = dataclasses.field(repr=False)
    owns_store: bool

    async def renew_key(self) -> None:
        # The cache's hook holds the record through this method, so an application that holds
        # a released namespace keeps it findable by name (for erase()).
        if self.lease is not None:
            await self.lease.renew()


class Registry:
    __slots__ = ("_max_private", "_open", "_private_order", "_released", "_stores")

    def __init__(self, stores: Stores, max_private: int) -> None:
        self._stores = stores
        self._max_private = max_private
        self._open: dict[str, NamespaceRecord] = {}
        # Private namespaces in least-recently-requested order (the open ones only), and those
        # released (beyond the cap, or erased) that the application still holds.
        self._private_order: OrderedDict[str, None] = OrderedDict()  # O(1) oldest-first release
        self._released: weakref.WeakValueDictionary[str, NamespaceRecord] = (
            weakref.WeakValueDictionary()
        )

    def __len__(self) -> int:
        return len(self._open)

    def find(self, name: str) -> NamespaceRecord | None:
        return self._open.get(name) or self._released.get(name)

    def records(self) -> list[NamespaceRecord]:
        """Every namespace still in use: open, or released but still held."""
        held = [r for n, r in list(self._released.items()) if n not in self._open]
        return [*self._open.values(), *held]

    def open(self, name: str, record: NamespaceRecord) -> None:
        self._released.pop(name, None)
        self._open[name] = record
        if record.owns_store:
            self._stores.owned[id(record.store)] = record.store
        if record.lease is None:
            return
        self._private_order.pop(name, None)
        self._private_order[name] = None
        while len(self._private_order) > self._max_private:
            self.release(next(iter(self._private_order)))  # an OrderedDict: O(1)

    def release(self, name: str) -> None:
        """Drop the manager's hold on namespace ``name`` (the application's, if any, stays).

        A store opened for this namespace alone goes with it (on ``memory://``, with its entries):
        closing it is the application's closing of the manager, which a held namespace sees.
        """
        self._private_order.pop(name, None)
        record = self._open.pop(name, None)
        if record is not None:
            if record.owns_store:
                self._stores.forget(record.store)
            self._released[name] = record
