"""The daemon: ``stigmer serve`` in the foreground, ``stigmer local start|stop|status`` in the background."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from stigmer_core.cli.errors import CliError, describe
from stigmer_core.cli.options import EnvOption, seconds_within, verbose_option, wait_seconds
from stigmer_core.stop_bound import DEFAULT_LIMIT_SECONDS
from stigmer_core.store_wait import MAX_STORE_WAIT_SECONDS, STORE_WAIT_SECONDS

if TYPE_CHECKING:
    from stigmer_core.cli import daemon

address_option = click.option(
    "--address", cls=EnvOption, envvar="STIGMER_ADDRESS", metavar="HOST:PORT",
    help="Where to listen (env STIGMER_ADDRESS, config local.address; default 127.0.0.1:50051; port 0 picks a free one).",
)  # fmt: skip
data_dir_option = click.option(
    "--data-dir", cls=EnvOption, envvar="STIGMER_DATA_DIR",
    help="Data directory: the LMDB store, or with --store the daemon's lock, socket and key (env STIGMER_DATA_DIR, "
    "config local.data_dir; default $STIGMER_HOME/data).",
)  # fmt: skip

local_data_dir_option = click.option(
    "--data-dir", cls=EnvOption, envvar="STIGMER_DATA_DIR",
    help="The daemon's data directory: its LMDB store (or, for a daemon serving a database, its lock, socket and "
    "key), env STIGMER_DATA_DIR, config local.data_dir; default $STIGMER_HOME/data.",
)  # fmt: skip
"""``--data-dir`` of ``local start|stop|status``, which take no ``--store``: the daemon they start
or find serves whatever its config names."""

store_option = click.option(
    "--store", cls=EnvOption, envvar="STIGMER_STORE", metavar="URL",
    help="The team server's database, postgresql://... (env STIGMER_STORE, config store; default: LMDB in the data directory).",
)  # fmt: skip


MAX_DRAIN_SECONDS = 3600.0
"""A load balancer sees a NOT_SERVING health within its check interval, seconds; a longer drain
only delays the stop. ``inf`` drained until a second signal and ``nan`` (which every comparison
fails) not at all, so both are refused with the rest of what is out of range."""

MAX_STOP_LIMIT_SECONDS = 3600.0
"""A stop that has not ended within an hour will not end: its stacks are due by then."""


@click.command()
@address_option
@data_dir_option
@click.option("--require-auth", is_flag=True, help="Network calls must carry an API token (config server.require_auth).")
@click.option("--tls-cert", metavar="FILE", help="PEM certificate chain: serve TLS (config server.tls_cert).")
@click.option("--tls-key", metavar="FILE", help="PEM private key of --tls-cert (config server.tls_key).")
@click.option("--tls-client-ca", metavar="FILE", help="PEM CA that client certificates must chain to: mutual TLS.")
@click.option(
    "--insecure-no-auth", is_flag=True,
    help="Allow a non-loopback address without TLS and tokens: only behind a mesh that does both.",
)  # fmt: skip
@click.option(
    "--drain", cls=EnvOption, envvar="STIGMER_DRAIN_SECONDS", type=float, default=0.0, metavar="SECONDS",
    callback=seconds_within(0, MAX_DRAIN_SECONDS),
    help="On SIGTERM, answer health NOT_SERVING but keep serving this long before stopping, "
    f"so a load balancer moves calls away first (env STIGMER_DRAIN_SECONDS; default 0, at most {MAX_DRAIN_SECONDS:,.0f}).",
)
@click.option(
    "--stop-limit", cls=EnvOption, envvar="STIGMER_STOP_LIMIT_SECONDS", type=float, default=DEFAULT_LIMIT_SECONDS,
    metavar="SECONDS", callback=seconds_within(1, MAX_STOP_LIMIT_SECONDS),
    help="A stop (after any drain) still running this long prints every thread's stack and exits 1 "
    f"(env STIGMER_STOP_LIMIT_SECONDS; default {DEFAULT_LIMIT_SECONDS:g}, 1 to {MAX_STOP_LIMIT_SECONDS:,.0f}).",
)  # fmt: skip
@click.option(
    "--metrics-address", cls=EnvOption, envvar="STIGMER_METRICS_ADDRESS", metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (env STIGMER_METRICS_ADDRESS, "
    "config server.metrics_address; default: none; port 0 picks a free one).",
)  # fmt: skip
@click.option(
    "--store-wait", cls=EnvOption, envvar="STIGMER_STORE_WAIT_SECONDS", type=float, default=STORE_WAIT_SECONDS, metavar="SECONDS",
    callback=seconds_within(0, MAX_STORE_WAIT_SECONDS),
    help="How long a start waits for a database that does not answer yet, trying again, before it exits 1 "
    f"(env STIGMER_STORE_WAIT_SECONDS; default {STORE_WAIT_SECONDS:g}, at most {MAX_STORE_WAIT_SECONDS:,.0f}).",
)  # fmt: skip
@click.option(
    "--log-format", cls=EnvOption, envvar="STIGMER_LOG_FORMAT", type=click.Choice(["text", "json"]),
    help="The log on stderr: text lines, or one JSON object per line for a log collector "
    "(env STIGMER_LOG_FORMAT, config server.log_format; default: text).",
)  # fmt: skip
@store_option
@verbose_option
def serve(
    address: str | None,
    data_dir: str | None,
    require_auth: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    insecure_no_auth: bool,
    drain: float,
    stop_limit: float,
    metrics_address: str | None,
    store_wait: float,
    log_format: str | None,
    store: str | None,
) -> None:
    """Run the daemon in the foreground (SIGTERM or Ctrl-C stops it cleanly).

    On 127.0.0.1 it needs nothing. Any other address needs TLS and
    --require-auth (see docs/security.md), or it refuses to start.
    """
    # grpc's core logs a failed bind itself, before the one-line error this command prints;
    # GRPC_VERBOSITY set by the user still wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from stigmer_core import config, stop_bound
    from stigmer_core.cli.log_format import daemon_lines
    from stigmer_core.said import announce
    from stigmer_core.server import serve as run_daemon

    daemon_lines(json=config.log_format(log_format) == "json")
    settings = config.resolve(address=address, data_dir=data_dir, store=store)
    _check_listen(settings.address, "--address")
    security = config.server_security(
        require_auth=require_auth,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        insecure_no_auth=insecure_no_auth,
    )
    code = run_daemon(
        settings.address,
        settings.data_dir,
        require_auth=security.require_auth,
        tls=security.tls,
        insecure_no_auth=security.insecure_no_auth,
        store=settings.store or None,
        drain=drain,
        stop_limit=stop_limit,
        metrics_address=config.metrics_address(metrics_address) or None,
        store_wait=store_wait,
    )
    announce(f"stigmer daemon stopped (exit code {code})")
    stop_bound.bound_exit()
    sys.exit(code)


@click.group()
def local() -> None:
    """Run the local daemon in the background."""


def _not_running(files: daemon.Files, *, exit_code: int = 1) -> CliError:
    from stigmer_core.cli import daemon

    stale = daemon.clean_stale_pid_file(files)
    note = f"; removed a stale pid file ({files.pid_file})" if stale is not None else ""
    return CliError(
        f"the stigmer daemon is not running (data directory {files.data_dir}){note}; `stigmer local start` starts it",
        exit_code=exit_code,
    )


def _check_listen(address: str, name: str) -> None:
    """A usage error for an address no daemon should listen on (a host alone: grpc took port 443)."""
    from stigmer_core.config_file import listen_problem

    problem = listen_problem(address, name)
    if problem is not None:
        raise CliError(problem, exit_code=2)


def _same_address(asked: str, serving: str) -> bool:
    """Whether a daemon serving on ``serving`` is one started with ``--address asked`` (port 0
    picks any port, and ``localhost`` is the loopback address the daemon records)."""
    from stigmer_core.auth.transport import split_address

    (host, port), (on_host, on_port) = split_address(asked), split_address(serving)
    loopback = {"localhost", "127.0.0.1"}
    same_host = host.lower() == on_host.lower() or {host.lower(), on_host.lower()} <= loopback
    return same_host and port in ("0", on_port)


@local.command()
@address_option
@local_data_dir_option
@click.option("--timeout", type=float, callback=wait_seconds, default=30.0, show_default=True, help="Seconds to wait for it to serve.")
@verbose_option
def start(address: str | None, data_dir: str | None, timeout: float) -> None:
    """Start the daemon in the background and wait until it serves."""
    from stigmer_core import config
    from stigmer_core.cli import daemon

    settings = config.resolve(address=address, data_dir=data_dir)
    _check_listen(settings.address, "--address")
    files = daemon.Files(settings.data_dir)
    with daemon.starting(files):
        found = daemon.running(files.data_dir)
        if found is not None:
            if address is not None and found.address and not _same_address(address, found.address):
                raise CliError(
                    f"the stigmer daemon of {files.data_dir} already runs (pid {found.pid}) on {found.address}, "
                    f"not on {address}: `stigmer local stop` first to move it, or give another --data-dir "
                    "for a second daemon"
                )
            where = found.address or "(still starting)"
            click.echo(f"stigmer daemon already running (pid {found.pid}) on {where}; data directory {files.data_dir}")
            return
        stale = daemon.clean_stale_pid_file(files)
        if stale is not None:
            click.echo(f"removed a stale pid file ({files.pid_file}: pid {stale} is not running)")
        process = daemon.spawn(files, settings.address)
        ready = daemon.wait_ready(files, process, timeout)
    click.echo(f"stigmer daemon started (pid {ready.pid}), listening on {ready.address}")
    click.echo(f"data directory: {files.data_dir}")
    click.echo(f"log file: {files.log_file} (beside the data directory)")
    click.echo(f"pid file: {files.pid_file} (beside the data directory)")


@local.command()
@local_data_dir_option
@click.option("--timeout", type=float, callback=wait_seconds, default=30.0, show_default=True, help="Seconds to wait for it to stop.")
@click.option("--force", is_flag=True, help="Kill it if it has not stopped in time.")
@verbose_option
def stop(data_dir: str | None, timeout: float, force: bool) -> None:
    """Stop the daemon gracefully (SIGTERM; in-flight calls finish)."""
    from stigmer_core import config
    from stigmer_core.cli import daemon

    settings = config.resolve(data_dir=data_dir)
    files = daemon.Files(settings.data_dir)
    found = daemon.running(files.data_dir)
    if found is None:
        raise _not_running(files)
    log = daemon.started_log(files, found)  # before the stop forgets its pid file
    killed = daemon.stop(files, found, timeout=timeout, force=force)
    click.echo(f"stigmer daemon {'killed' if killed else 'stopped'} (pid {found.pid})")
    if not killed and daemon.hung_in_stop(log):
        click.echo(
            f"warning: its stop hung, and it ended itself at its limit: the stack of each of its threads "
            f"is at the end of {log} (a bug of stigmer or of a plugin: report it with that log)",
            err=True,
        )


@local.command()
@local_data_dir_option
@verbose_option
@click.pass_context
def status(ctx: click.Context, data_dir: str | None) -> None:
    """Whether the daemon runs, where, and how many objects of each kind it holds.

    A kind that cannot be counted (its list refuses a query across orgs, or
    fails) is reported in its row and the others are still counted.
    """
    from stigmer_core import config, errors
    from stigmer_core.cli import daemon, render, stored
    from stigmer_core.cli.session import Session

    settings = config.resolve(backend=config.LOCAL, data_dir=data_dir)
    files = daemon.Files(settings.data_dir)
    found = daemon.running(files.data_dir)
    if found is None or not found.address:
        if found is not None:
            raise CliError(f"the stigmer daemon (pid {found.pid}) is starting; try again shortly", exit_code=3)
        raise _not_running(files, exit_code=3)
    click.echo(f"stigmer daemon running (pid {found.pid}), listening on {found.address}")
    click.echo(f"data directory: {files.data_dir}")
    log_file = daemon.started_log(files, found)
    if log_file is not None:
        click.echo(f"log file: {log_file}")
    else:
        click.echo("log file: none (started with `stigmer serve`, which logs to its own terminal)")
    session = Session(settings)
    ctx.call_on_close(session.close)
    rows = []
    for kind in session.catalog.kinds:
        try:
            rows.append([kind.cli_name, str(session.calls(kind).count())])
        except (errors.StigmerError, CliError) as exc:
            rows.append([kind.cli_name, f"? (cannot count: {describe(exc)[0]})"])
    click.echo(render.table(["KIND", "OBJECTS"], rows))
    unserved = stored.unserved(files.data_dir, {kind.key_prefix for kind in session.catalog.kinds}) or {}
    for prefix, count in sorted(unserved.items()):  # kept, not served: their package was uninstalled
        click.echo(
            f"{count} stored object{'s' if count != 1 else ''} under key prefix '{prefix}': no installed plugin "
            "serves that kind (reinstall its package to serve them again)"
        )
