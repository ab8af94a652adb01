"""Structured logs: readable on a terminal, JSON lines otherwise (files, CI, log shippers)."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(level: str | None = None, component: str | None = None) -> None:
    level_name = (level or os.environ.get("DROVER_LOG_LEVEL", "info")).upper()
    lvl = getattr(logging, level_name, logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    # pysyncobj and aiohttp chatter only matters when debugging them.
    for noisy in ("aiohttp.access", "pysyncobj", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    renderer = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    if component:
        structlog.contextvars.bind_contextvars(component=component)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
