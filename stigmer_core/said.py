"""A daemon's own words on stderr outside its log records (a wait at start, the error it stops on):
one ``stigmer: …`` line, or, where its log is JSON, a record of that log, so a collector parsing
every line of stderr as JSON meets no plain text."""

from __future__ import annotations

import logging
import sys

_RECORDS = [False]
LOGGER = "stigmer"


def as_records(on: bool = True) -> None:
    """From now on, said as log records (the daemon's log is JSON: ``--log-format json``)."""
    _RECORDS[0] = on
    if on:  # its start and stop lines are INFO records of it (``announce``), whatever the log's level
        logging.getLogger(LOGGER).setLevel(logging.INFO)


def announce(text: str) -> None:
    """A daemon's start, drain and stop lines: plain on stdout, or, where its log is JSON, INFO
    records of that log, so a collector reading both streams (systemd's journal) meets no plain
    text from a daemon told to write JSON."""
    if _RECORDS[0]:
        logging.getLogger(LOGGER).info(text)
    else:
        print(text, flush=True)


def said_as_records() -> bool:
    return _RECORDS[0]


def say(text: str, level: int = logging.WARNING) -> None:
    if _RECORDS[0]:
        logging.getLogger(LOGGER).log(level, text)
    else:
        print(f"stigmer: {text}", file=sys.stderr, flush=True)
