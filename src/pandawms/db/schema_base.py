"""The one metadata every table joins, and the column types every backend needs the same way.

Table modules (``schema``, ``schema_tasks``, ``schema_workers``...) import these and nothing from
each other; :mod:`pandawms.db` imports every table module, so the metadata is complete whichever
module a caller imports first.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

metadata = MetaData()

#: Datetimes with microseconds everywhere (MariaDB's DATETIME drops them unless asked).
Timestamp: TypeEngine = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: Large text: MariaDB's TEXT stops at 64 KiB, job parameters and reports can be larger.
LongText: TypeEngine = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
#: Auto-increment 64-bit keys that also work on SQLite (which only autoincrements INTEGER).
IdType: TypeEngine = BigInteger().with_variant(Integer(), "sqlite")
