"""The objects every core function needs: the engine, the settings and the clock."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from pandawms.config import ConfigError, Settings
from pandawms.db.engine import backend_name, make_engine, supports_skip_locked
from pandawms.model import retry_rules


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
    #: Answers this process may reuse for a few seconds (the queue list, busy jobs by share,
    #: recently sent counts), keyed by what they answer. They hang on the runtime, so two
    #: runtimes in one process (tests, tools) never see each other's.
    _memo: dict[Hashable, tuple[float, Any]] = field(default_factory=dict, repr=False)

    def remembered(self, key: Hashable, ttl: float) -> Any | None:
        """The value remembered under ``key`` if it is younger than ``ttl`` seconds, else None."""
        hit = self._memo.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return hit[1]
        return None

    def remember(self, key: Hashable, value: Any, at: float | None = None) -> None:
        """Keep ``value`` under ``key`` (``at``: the monotonic time it was computed, default now)."""
        self._memo[key] = (time.monotonic() if at is None else at, value)

    def forget(self, key: Hashable) -> None:
        """Drop what is remembered under ``key`` (after a change that makes it wrong)."""
        self._memo.pop(key, None)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        """Open the configured database with the configured pool; load the retry rules."""
        try:
            retry_rules.configure(settings.retry_rules)
        except retry_rules.RetryRuleError as exc:
            raise ConfigError(f"retry_rules: {exc}") from None
        engine = make_engine(
            settings.effective_db_url,
            settings.db_pool_size,
            settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            statement_timeout_ms=settings.db_statement_timeout,
            connect_timeout=settings.db_connect_timeout,
        )
        return cls(engine=engine, settings=settings, node=settings.node_name or socket.gethostname())

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
