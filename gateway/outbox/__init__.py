"""The durable outbox between the pipeline and the upstream sinks (SQLite, WAL).

``OutboxWriter`` stages and commits rows and keeps the file in shape;
``SqliteOutbox`` is the file, ``MemoryOutbox`` the same without a disk;
``read_summary`` inspects a file read-only (``community-gateway outbox``).
"""

from gateway.outbox.memory import MemoryOutbox
from gateway.outbox.store import EVENT, READING, SqliteOutbox, read_summary
from gateway.outbox.writer import BUFFER_OVERFLOW, OUTBOX_WRITE_FAILED, OutboxWriter

__all__ = ["BUFFER_OVERFLOW", "EVENT", "OUTBOX_WRITE_FAILED", "READING", "MemoryOutbox",
           "OutboxWriter", "SqliteOutbox", "read_summary"]
