"""Structured logs: readable on a terminal, JSON lines otherwise (files, CI, log shippers).

structlog loggers and the standard library's (pysyncobj, aiohttp, podman-py, our containerizer)
go through the same renderer, so a log file is JSON lines throughout.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _PysyncobjResendFilter(logging.Filter):
    """pysyncobj 0.3.17 logs CRITICAL "truncating already-applied log entries" when a follower receives
    entries it already has again (the leader re-sent them after a stale acknowledgement). Applied entries
    are committed, and Raft never changes a committed entry, so the re-sent ones are identical: nothing
    diverges (the stores stay byte-identical; `drover replay bisect` would show otherwise). Logged as a
    warning instead, so that a real CRITICAL stays rare enough to be read."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.CRITICAL and str(record.msg).startswith("truncating already-applied"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "pysyncobj re-received entries it had applied (a duplicate re-send, harmless): " + str(
                record.msg)
        return True


def configure(level: str | None = None, component: str | None = None) -> None:
    level_name = (level or os.environ.get("DROVER_LOG_LEVEL", "info")).upper()
    lvl = getattr(logging, level_name, logging.INFO)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # pysyncobj and aiohttp chatter only matters when debugging them.
    for noisy in ("aiohttp.access", "pysyncobj", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    logging.getLogger("pysyncobj.syncobj").addFilter(_PysyncobjResendFilter())
    if component:
        structlog.contextvars.bind_contextvars(component=component)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
