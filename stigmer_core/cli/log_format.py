"""How the command line's log lines look: one line for a command, tracebacks kept for a daemon."""

from __future__ import annotations

import logging
import time
from typing import Any

LINE = "%(levelname)s %(name)s: %(message)s"
HANDLER = "stigmer"
"""The name of the command line's own handler on the root logger (a test's or an embedding
program's handlers are left as they are)."""
QUIET_LIBRARIES = ("grpc", "grpc_reflection")
"""Loggers whose lines below WARNING the command's handler drops under ``-v``, which shows the
framework's own DEBUG lines: their INFO lines (one per descriptor file read) bury a failure's
details. A filter on the handler, not the loggers' levels, which would outlive the command in a
process that runs it (a test's ``CliRunner``)."""


def not_chatty(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.split(".", 1)[0] not in QUIET_LIBRARIES


class OneLine(logging.Formatter):
    """Log lines without their tracebacks: a command's error is one line (the store opened in this
    process logs a plugin's bug with its traceback, which `-v` shows). A line is said as the
    command's own (``stigmer: warning: …``), not as a logger's: the person reading it ran a
    command, and the module that logged it is `-v`'s to show."""

    def formatException(self, ei: Any) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        return f"stigmer: {record.levelname.lower()}: {record.message}".rstrip("\n")


def utc_time(record: logging.LogRecord) -> str:
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}.{int(record.msecs):03d}Z"


class DaemonLine(logging.Formatter):
    """A daemon's line starts with its time in UTC, to the millisecond: its log is read after the
    fact (``local start``'s file has no other clock), beside other hosts' logs and the database's."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_time(record)


DAEMON_LINE = "%(asctime)s " + LINE


def daemon_lines(*, json: bool = False) -> None:
    """A daemon's log keeps the traceback of every error logged with one (an internal error in a
    plugin's step): the one reading it is the plugin's author or the operator, after the fact,
    and `-v` would also turn on every debug line. Its lines carry their time (``DaemonLine``).

    ``json``: one object per record, its traceback inside it, for a log collector that would
    otherwise take each line of a traceback for a record of its own."""
    formatter = _json_formatter() if json else DaemonLine(DAEMON_LINE)
    from stigmer_core.said import as_records

    as_records(json)  # the daemon's words outside its log (a wait, the error it stops on) as records too
    for handler in logging.getLogger().handlers:
        if handler.name == HANDLER:
            handler.setFormatter(formatter)


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class JsonLine(JsonFormatter):
        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            return utc_time(record)

    return JsonLine(
        ["asctime", "levelname", "name", "message"],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
    )
