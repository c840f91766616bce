"""Per-namespace counters: the zero-dependency view of what a namespace did.

``breaker`` is not a counter: it is the state of the circuit breaker of the namespace's backend
(``closed``, ``open``, ``half_open``; ``off`` without one), kept current by the breaker, and left
out of :meth:`Stats.as_dict` and :meth:`Stats.reset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """What one namespace did since it was opened (or :meth:`reset`): plain counters.

    ``tampered`` counts entries that failed authentication (each also an audit event);
    ``errors`` counts backend errors, including those ``fail_open`` turned into misses.
    """

    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: int = 0
    evictions: int = 0
    tampered: int = 0
    near_hits: int = 0
    breaker: str = field(default="off", compare=False)

    @property
    def hit_ratio(self) -> float:
        """Hits over reads (0.0 before the first read)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict (for JSON and metrics exporters)."""
        return {name: getattr(self, name) for name in _COUNTERS}

    def reset(self) -> None:
        """Set every counter back to 0."""
        for name in _COUNTERS:
            setattr(self, name, 0)


_COUNTERS = tuple(name for name in Stats.__dataclass_fields__ if name != "breaker")
