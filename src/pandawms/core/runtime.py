"""The objects every core function needs: the engine, the settings and the clock."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass, field

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
