"""Settings out of their range stop the start, naming what the operator set: a variable, a store
URL parameter or a flag. ``nan`` and ``inf`` parse as numbers but bound nothing (every comparison
with ``nan`` fails), so they are refused with the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from stigmer_core import Application, call_limit, keepalive, limits, request_read
from stigmer_core.cli.app import main
from stigmer_core.errors import StartupError
from stigmer_core.keepalive import Keepalive
from stigmer_core.limits import Limits
from stigmer_core.pipeline.events import StreamSettings
from stigmer_core.server_pools import PoolSizes
from stigmer_core.store.postgres_store import PostgresSettings, PostgresStore
from stigmer_core.store.retention import EventRetention

POOL_VARIABLES = (
    "STIGMER_READ_THREADS",
    "STIGMER_RPC_THREADS",
    "STIGMER_MAX_REFLECTION_STREAMS",
    "STIGMER_MAX_PENDING_CALLS",
    call_limit.ENV,
    call_limit.GRACE_ENV,
    request_read.ENV,
)
STREAM_COUNTS = ("STIGMER_MAX_STREAMS", "STIGMER_MAX_STREAMS_PER_CALLER", "STIGMER_MAX_STREAMS_PER_ORG")


@pytest.mark.parametrize("variable", (*STREAM_COUNTS, "STIGMER_WATCH_BOOKMARK_SECONDS"))
@pytest.mark.parametrize("value", ["inf", "-inf", "1e400", "nan"])
def test_a_stream_setting_that_is_not_finite_stops_the_start_naming_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """``inf`` crashed the start with an OverflowError naming nothing; ``nan`` streams were a
    ValueError from attrs naming the attribute."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(StartupError, match=f"^{variable}='{value}' is not a finite number$"):
        StreamSettings.from_env()
    with pytest.raises(StartupError, match=variable):
        Application.open(tmp_path, durable=False)


@pytest.mark.parametrize("value", ["1e-06", "0.05", "86401", "1e23"])
def test_a_bookmark_interval_outside_a_tenth_of_a_second_to_a_day_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A microsecond sent one idle watch thousands of bookmarks a second, at the daemon's CPU."""
    monkeypatch.setenv("STIGMER_WATCH_BOOKMARK_SECONDS", value)
    with pytest.raises(
        StartupError, match=rf"^STIGMER_WATCH_BOOKMARK_SECONDS must be from 0\.1 to 86,400 seconds, not {value}$"
    ):
        StreamSettings.from_env()


@pytest.mark.parametrize("value", ["0.1", "86400"])
def test_the_ends_of_the_bookmark_range_are_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STIGMER_WATCH_BOOKMARK_SECONDS", value)
    assert StreamSettings.from_env().bookmark_seconds == float(value)


def test_zero_streams_is_refused_saying_it_would_refuse_every_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """0 refused every watch and every runner, where 0 for an org's quota means no limit."""
    monkeypatch.setenv("STIGMER_MAX_STREAMS", "0")
    with pytest.raises(
        StartupError, match=r"^STIGMER_MAX_STREAMS must be 1 or more, not 0: 0 would refuse every stream"
    ):
        StreamSettings.from_env()
    with pytest.raises(ValueError, match="max_streams"):
        StreamSettings(max_streams=0)


@pytest.mark.parametrize("variable", STREAM_COUNTS[1:])
def test_a_stream_share_below_one_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "0")
    with pytest.raises(StartupError, match=f"^{variable} must be 1 or more, not 0$"):
        StreamSettings.from_env()


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("STIGMER_EVENT_RETENTION_REVISIONS", "0", "must be from 1 to 4,611,686,018,427,387,903, not 0"),
        ("STIGMER_EVENT_RETENTION_BYTES", "-1", "must be from 0 to 4,611,686,018,427,387,903, not -1"),
        ("STIGMER_EVENT_RETENTION_SECONDS", str(10**10), f"must be from 0 to 3,162,240,000, not {10**10}"),
    ],
)
def test_event_retention_out_of_range_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(StartupError, match=f"^event retention: {variable} {words}$"):
        EventRetention.from_env()


def test_a_page_too_small_for_the_largest_object_asks_for_them_at_least_the_room_apart() -> None:
    with pytest.raises(StartupError, match=r"lower the first, or raise the second; at least 2048 bytes apart\)$"):
        Limits.from_env({"STIGMER_MAX_PAGE_BYTES": "10"})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_store_url_number_that_is_not_finite_stops_the_start(value: str) -> None:
    """``pool_timeout=nan`` answered every busy pool UNAVAILABLE "stayed busy for nan s"; ``inf``
    waited without bound."""
    with pytest.raises(StartupError, match=f"^store URL: pool_timeout='{value}' is not a finite number$"):
        PostgresSettings.from_url(f"postgresql://127.0.0.1/db?pool_timeout={value}")


@pytest.mark.parametrize(
    ("name", "most"),
    [
        ("statement_timeout_ms", "2,147,483,647"),
        ("idle_in_transaction_timeout_ms", "2,147,483,647"),
        ("answer_timeout_ms", "2,147,483,647"),
        ("health_timeout_ms", "2,147,483,647"),
        ("pool_timeout", "86,400"),
        ("scan_bytes", "1,099,511,627,776"),
    ],
)
def test_a_store_url_number_past_its_range_stops_the_start_at_parse_time(name: str, most: str) -> None:
    """A timeout past PostgreSQL's integer range was refused by the server at the first
    connection, which the start reported as a database it could not reach."""
    too_many = int(most.replace(",", "")) + 1
    with pytest.raises(StartupError, match=f"^store URL: {name} must be at most {most}, not {too_many}$"):
        PostgresSettings.from_url(f"postgresql://127.0.0.1/db?{name}={too_many}")


def test_the_largest_timeouts_the_url_takes_are_ones_postgresql_accepts(stigmer_postgres_store_url: str) -> None:
    url = f"{stigmer_postgres_store_url}&statement_timeout_ms=2147483647&idle_in_transaction_timeout_ms=2147483647"
    store = PostgresStore(url)
    try:
        with psycopg.connect(PostgresSettings.from_url(url).conninfo) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with store.read() as txn:
            txn.get(b"m/revision")
    finally:
        store.close()


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-1", "3601"])
def test_a_drain_that_is_not_a_number_of_seconds_up_to_an_hour_stops_serve(tmp_path: Path, value: str) -> None:
    """``nan`` stopped at the first SIGTERM as if no drain were set; ``inf`` drained until a second signal.
    (The address, without TLS off loopback, stops a serve that took the drain before it listens.)"""
    for args, env in (([f"--drain={value}"], {}), ([], {"STIGMER_DRAIN_SECONDS": value})):
        result = CliRunner().invoke(
            main, ["serve", "--data-dir", str(tmp_path / "data"), "--address", "0.0.0.0:0", *args], env=env
        )
        assert result.exit_code == 2, result.output
        where = "'--drain' (env STIGMER_DRAIN_SECONDS)" if env else "'--drain'"
        assert f"Invalid value for {where}: must be from 0 to 3,600 seconds" in result.output, result.output
        assert not (tmp_path / "data").exists(), "refused before the daemon opened anything"


@pytest.mark.parametrize("value", ["nan", "inf", "0", "0.5", "3601"])
def test_a_stop_limit_that_is_not_a_second_to_an_hour_stops_serve(tmp_path: Path, value: str) -> None:
    """``nan`` would never have fired, and 0 ended every stop before it could drain a call."""
    for args, env in (([f"--stop-limit={value}"], {}), ([], {"STIGMER_STOP_LIMIT_SECONDS": value})):
        result = CliRunner().invoke(
            main, ["serve", "--data-dir", str(tmp_path / "data"), "--address", "0.0.0.0:0", *args], env=env
        )
        assert result.exit_code == 2, result.output
        where = "'--stop-limit' (env STIGMER_STOP_LIMIT_SECONDS)" if env else "'--stop-limit'"
        assert f"Invalid value for {where}: must be from 1 to 3,600 seconds" in result.output, result.output
        assert not (tmp_path / "data").exists(), "refused before the daemon opened anything"


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        *((Keepalive, name) for _, name in keepalive._SETTINGS),
        *((PoolSizes, name) for name in POOL_VARIABLES),
        *((Limits, name) for name in limits.ENV.values()),
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_every_other_numeric_setting_refuses_what_is_not_finite_naming_its_variable(
    settings: Any, variable: str, value: str
) -> None:
    with pytest.raises(StartupError, match=variable):
        settings.from_env({variable: value})


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "0", "-1", "86401", "soon"])
@pytest.mark.parametrize(
    "command", [["call", "agent", "get", "--set", "value=x"], ["local", "start"], ["local", "stop"]], ids=" ".join
)
def test_a_timeout_that_is_not_a_wait_of_up_to_a_day_is_a_usage_error(
    tmp_path: Path, command: list[str], value: str
) -> None:
    """``--timeout nan`` gave up at once (``local start`` killed the daemon it had just spawned,
    saying it was not ready "within nans"), and a call handed grpc a deadline it refused."""
    result = CliRunner().invoke(main, [*command, "--timeout", value], env={"STIGMER_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--timeout'" in result.output, result.output
    assert "at most 86,400 seconds" in result.output or "is not a valid float" in result.output, result.output
    assert not (tmp_path / "home").exists(), "refused before anything was started or opened"


def test_a_timeout_within_the_range_is_taken(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["local", "stop", "--timeout", "0.5", "--data-dir", str(tmp_path / "data")], env={"STIGMER_HOME": str(tmp_path)}
    )
    assert result.exit_code not in (0, 2), result.output  # parsed; then no daemon was running to stop
    assert "no daemon" in result.output.lower() or "not running" in result.output.lower(), result.output
