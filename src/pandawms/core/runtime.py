"""The objects every core function needs: the engine, the settings and the clock.

The :class:`Runtime` is also where a process keeps state between requests: answers reused for
a few seconds, objects made once (a DDM client, a cipher, the metrics registry), the retry
rules. Nothing of the kind lives in a module global, so two runtimes in one process (two apps
on two databases, a test and its server) never see each other's.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine

from pandawms.config import ConfigError, Settings
from pandawms.db.engine import backend_name, make_engine, supports_skip_locked
from pandawms.infra.ttlcache import TTLCache
from pandawms.model.retry_rules import RetryRule, RetryRuleError, load_rules

T = TypeVar("T")


def utcnow() -> dt.datetime:
    """Naive UTC now, as PanDA stores every timestamp."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass
class Runtime:
    """Engine + settings + node name, shared by every request in a process."""

    engine: Engine
    settings: Settings
    node: str = field(default_factory=socket.gethostname)
    _skip_locked: bool | None = None
    #: This runtime's per-process state, keyed by what it is (a string, or a tuple starting
    #: with one: ``"queues"``, ``("sent", site)``, ``("monitor.summary",)``...).
    cache: TTLCache = field(default_factory=TTLCache, repr=False)
    #: The retry rules applied to failed jobs (from ``settings.retry_rules`` unless given).
    _retry_rules: tuple[RetryRule, ...] | None = field(default=None, repr=False)

    def remembered(self, key: Hashable, ttl: float) -> Any | None:
        """The value remembered under ``key`` if it is younger than ``ttl`` seconds, else None."""
        return self.cache.peek(key, ttl)

    def remember(self, key: Hashable, value: Any, at: float | None = None) -> None:
        """Keep ``value`` under ``key`` (``at``: the monotonic time it was computed, default now)."""
        self.cache.put(key, value, at)

    def forget(self, key: Hashable) -> None:
        """Drop what is remembered under ``key`` (after a change that makes it wrong)."""
        self.cache.drop(key)

    def forget_kind(self, kind: str) -> None:
        """Drop everything remembered under ``kind`` (every site's count, every statistic...)."""
        self.cache.drop_kind(kind)

    def cached(self, key: Hashable, compute: Callable[[], T], ttl: float, stale: float = 0.0) -> T:
        """``compute()``, reused for ``ttl`` seconds and served stale for ``stale`` more while
        one background thread recomputes it (see :class:`pandawms.infra.ttlcache.TTLCache`)."""
        return self.cache.get(key, compute, ttl, stale)

    def kept(self, key: Hashable, make: Callable[[], T]) -> T:
        """The object kept under ``key`` for this runtime's life, made by ``make()`` once."""
        return self.cache.keep(key, make)

    @property
    def retry_rules(self) -> tuple[RetryRule, ...]:
        """The rules that decide which failed jobs run again (read once from the settings)."""
        if self._retry_rules is None:
            self._retry_rules = _load_retry_rules(self.settings)
        return self._retry_rules

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Open the configured database with the configured pool; load the retry rules.

        A retry-rule file that cannot be used stops the start with a ConfigError, before the
        server takes any traffic.
        """
        rules = _load_retry_rules(settings)
        engine = make_engine(
            settings.effective_db_url,
            settings.db_pool_size,
            settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            statement_timeout_ms=settings.db_statement_timeout,
            connect_timeout=settings.db_connect_timeout,
        )
        return cls(
            engine=engine,
            settings=settings,
            node=settings.node_name or socket.gethostname(),
            _retry_rules=rules,
        )

    @property
    def backend(self) -> str:
        """'sqlite', 'postgresql', 'mysql' or 'oracle'."""
        return backend_name(self.engine)

    @property
    def skip_locked_if_known(self) -> bool:
        """:attr:`skip_locked` without connecting (False until known): for the event loop."""
        return bool(self._skip_locked)

    @property
    def skip_locked(self) -> bool:
        """Whether dispatch can use ``FOR UPDATE SKIP LOCKED`` (known after the first connect)."""
        if self._skip_locked is None:
            with self.engine.connect():
                pass
            self._skip_locked = supports_skip_locked(self.engine)
        return self._skip_locked


def _load_retry_rules(settings: Settings) -> tuple[RetryRule, ...]:
    try:
        return load_rules(settings.retry_rules)
    except RetryRuleError as exc:
        raise ConfigError(f"retry_rules: {exc}") from None
