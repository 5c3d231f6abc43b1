"""Where clients find their backend: ``~/.stigmer/config.yaml``, env vars, flags.

The CLI and Python code resolve the same settings the same way, so a script
that calls ``connect_from_config()`` talks to whatever ``stigmer backend
switch`` last chose::

    backend:
      type: local            # or: remote
    store: postgresql://stigmer@db.internal/stigmer   # optional: the team server's database
    local:
      data_dir: ~/.stigmer/data
      address: 127.0.0.1:50051   # where `stigmer local start` listens
    remote:
      endpoint: stigmer.example.com:443
      token: stg_...
      ca_file: ~/.stigmer/team-ca.pem   # optional: a private CA instead of the default roots
      cert_file: ~/.stigmer/me.pem      # optional: a client certificate and its key, for a server
      key_file: ~/.stigmer/me.key       #   started with --tls-client-ca (mutual TLS)
    server:                  # `stigmer serve`; flags override
      require_auth: true
      tls_cert: /etc/stigmer/server.pem
      tls_key: /etc/stigmer/server.key
      tls_client_ca: /etc/stigmer/clients-ca.pem   # optional: mutual TLS
      insecure_no_auth: false
      metrics_address: 127.0.0.1:9464   # optional: Prometheus metrics over HTTP (docs/design.md, Metrics)
      log_format: json       # optional: the daemon's log as one JSON object per line (default: text)
    org: local

Precedence, highest first: explicit arguments (CLI flags), environment
variables (``STIGMER_BACKEND``, ``STIGMER_DATA_DIR``, ``STIGMER_STORE``, ``STIGMER_ADDRESS``,
``STIGMER_ENDPOINT``, ``STIGMER_TOKEN``, ``STIGMER_CA_FILE``, ``STIGMER_CERT_FILE``, ``STIGMER_KEY_FILE``,
``STIGMER_ORG``), the config file,
built-in defaults; but a ``data_dir`` argument (``--data-dir``) is the local backend, whatever
the environment and the file say (``resolve``). ``store`` empty (the default) means LMDB in ``data_dir``;
a ``postgresql://`` URL makes the daemon (and a CLI opening the store in
process) use that database, with ``data_dir`` keeping per-daemon files only. ``STIGMER_HOME`` moves the whole base directory (default
``~/.stigmer``), which is what keeps tests away from a real home.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from stigmer_core.config_file import CONFIG_NAME as CONFIG_NAME
from stigmer_core.config_file import DEFAULT_HOME as DEFAULT_HOME
from stigmer_core.config_file import ENV as ENV
from stigmer_core.config_file import HOME_ENV as HOME_ENV
from stigmer_core.config_file import ConfigError as ConfigError
from stigmer_core.config_file import config_path as config_path
from stigmer_core.config_file import endpoint_problem, local_data, pick, section
from stigmer_core.config_file import load_config as load_config
from stigmer_core.config_file import save_config as save_config
from stigmer_core.config_file import stigmer_home as stigmer_home

if TYPE_CHECKING:  # the client opens the store in process: imported when a command connects, not before
    from stigmer_core.auth.transport import TlsFiles
    from stigmer_core.client import Client

LOCAL = "local"
REMOTE = "remote"
BACKENDS = (LOCAL, REMOTE)
DEFAULT_ORG = "local"
DEFAULT_ADDRESS = "127.0.0.1:50051"


@attrs.frozen
class Settings:
    """Everything a client needs to reach its backend, fully resolved."""

    backend: str
    data_dir: Path
    store: str
    """A PostgreSQL URL, or "" for LMDB in ``data_dir``."""
    address: str
    endpoint: str
    token: str
    org: str
    home: Path
    config_file: Path
    ca_file: str = ""
    cert_file: str = ""
    """The client certificate a mutual-TLS server asks for (with ``key_file``), or ""."""
    key_file: str = ""

    @property
    def target(self) -> str:
        """What ``stigmer_core.client.connect`` takes: ``"local"`` or ``host:port``."""
        return LOCAL if self.backend == LOCAL else self.endpoint


def resolve(
    *,
    backend: str | None = None,
    data_dir: str | Path | None = None,
    address: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    org: str | None = None,
    store: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> Settings:
    """Settings from arguments, then environment, then the config file, then defaults.

    A ``data_dir`` argument (``--data-dir``) selects the local backend, over ``STIGMER_BACKEND``
    and the config file: it names a local store, and a command given one (restoring a backup
    into a fresh directory) must not quietly reach the team server that ``login`` configured.
    With ``backend="remote"`` too it is refused as contradictory. ``STIGMER_DATA_DIR`` does not
    select a backend: it is often set once for every shell, and says only where the local
    store is when the backend is local. Likewise an ``endpoint`` argument (``--endpoint``) without
    a ``backend`` selects the remote backend: it names a server, and a command given one must not
    quietly answer from the local store instead (a revoke "not found" there left the token valid
    on the server); with ``data_dir`` too it is refused. ``STIGMER_ENDPOINT`` selects it only
    where no backend is chosen at all (no ``STIGMER_BACKEND``, none in the config file): a
    script's or a runner's environment naming its server."""
    home = stigmer_home()
    data = load_config(home / CONFIG_NAME)
    local = section(data, "local")
    remote = section(data, "remote")
    if data_dir and backend is not None and backend.lower() == REMOTE:
        raise ConfigError(local_and_remote(data_dir))
    if data_dir and endpoint and backend is None:
        raise ConfigError(local_and_remote(data_dir, f"--endpoint {endpoint}"))
    configured = section(data, "backend").get("type")
    if data_dir:
        chosen = LOCAL
    elif backend is None and (endpoint or (_given("endpoint") and not _given("backend") and not configured)):
        chosen = REMOTE  # a server named, and no backend chosen anywhere: that server, not a new local store
    else:
        chosen = pick(backend, "backend", configured, LOCAL).lower()
    if chosen not in BACKENDS:
        told = "" if backend is not None or _given("backend") else f" (backend.type in {home / CONFIG_NAME})"
        raise ConfigError(f"unknown backend '{chosen}'{told}: use 'local' or 'remote'")
    directory, chosen_store = local_data(data_dir, store, home=home, data=data)
    saved_endpoint = str(remote.get("endpoint") or "")
    chosen_endpoint = pick(endpoint, "endpoint", saved_endpoint, "")
    chosen_token = pick(token, "token", remote.get("token"), "")
    if not (token or os.environ.get(ENV["token"])) and chosen_endpoint != saved_endpoint:
        chosen_token = ""  # the file's token was saved for the file's endpoint: never sent to another
    # so were its CA and client certificate: another endpoint (a plaintext daemon on loopback,
    # another team's server) is dialled with the flags' and the environment's files only
    saved = remote if chosen_endpoint == saved_endpoint else {}
    return Settings(
        backend=chosen,
        data_dir=directory,
        store=chosen_store,
        address=pick(address, "address", local.get("address"), DEFAULT_ADDRESS),
        endpoint=chosen_endpoint,
        token=chosen_token,
        org=pick(org, "org", data.get("org"), DEFAULT_ORG),
        home=home,
        config_file=home / CONFIG_NAME,
        ca_file=pick(ca_file, "ca_file", saved.get("ca_file"), ""),
        cert_file=pick(cert_file, "cert_file", saved.get("cert_file"), ""),
        key_file=pick(key_file, "key_file", saved.get("key_file"), ""),
    )


def _given(key: str) -> bool:
    return bool(os.environ.get(ENV[key]))


def local_and_remote(data_dir: str | Path, remote: str = "--backend remote") -> str:
    """Why ``--data-dir`` and ``--backend remote`` (or ``--endpoint``) are not taken together."""
    return (
        f"--data-dir {data_dir} names a local store, but {remote} asks for the remote server; "
        "give one of them (--data-dir alone uses the local backend)"
    )


def data_dir_behind_store(data_dir: str | Path, store: str, *, store_flag: bool) -> str | None:
    """Why ``--data-dir`` given on the command line is refused beside a database store that the
    environment or the config file names; None when ``store`` is no database, or ``data_dir`` is
    a database daemon's (its key, and no local store).

    The store and the data directory are set apart (a team daemon's data directory holds its
    lock, socket and key, its objects being in the database), so a command given a directory
    worked on the database: ``org delete ORG --data-dir ./scratch`` removed the team's org from
    it, and ``import --data-dir NEW`` wrote into it, leaving ``NEW`` empty. A directory holding
    a local store, or nothing yet, names where the person means to work, which the store set
    once for the shell or the host was not chosen for: neither silently wins. ``store_flag``:
    the command takes ``--store``, which says the database is meant."""
    scheme, found, _ = store.partition("://")
    if not found or scheme.lower() not in ("postgresql", "postgres"):
        return None
    from stigmer_core.store.lmdb_store import DATA_FILE  # LMDB's, not psycopg's: only for this check
    from stigmer_core.store.postgres_settings import redact_url

    directory = Path(data_dir).expanduser()
    if (directory / DATA_FILE).exists():
        holds = "holds a local store"
    elif not directory.is_dir() or not any(directory.iterdir()):
        holds = "holds nothing yet"
    else:
        return None  # a database daemon's data directory: its key goes with the database
    if os.environ.get(ENV["store"]):
        named, drop = f"STIGMER_STORE ({redact_url(store)})", "run it with STIGMER_STORE unset"
    else:
        named = f"the config file's store ({redact_url(store)}, in {config_path()})"
        drop = f"remove store from {config_path()}"
    database = (
        "give --store URL too"
        if store_flag
        else "leave --data-dir out (where a local daemon holds the default data directory, set "
        "STIGMER_DATA_DIR to another one for the command's lock and key, instead of --data-dir)"
    )
    return (
        f"--data-dir {data_dir} {holds}, but {named} names a database, which this command would work on "
        f"instead; to work on a local store in {data_dir}, {drop}; to work on the database, {database}"
    )


@attrs.frozen
class ServerSecurity:
    """How ``stigmer serve`` protects itself: flags over the config file's ``server:`` section."""

    require_auth: bool
    tls: TlsFiles | None
    insecure_no_auth: bool


def server_security(
    *,
    require_auth: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    insecure_no_auth: bool = False,
) -> ServerSecurity:
    from stigmer_core.auth.transport import TlsFiles

    server = section(load_config(config_path()), "server")
    cert = tls_cert or server.get("tls_cert")
    key = tls_key or server.get("tls_key")
    client_ca = tls_client_ca or server.get("tls_client_ca")
    if bool(cert) != bool(key):
        raise ConfigError("TLS needs both a certificate and its key: give --tls-cert FILE and --tls-key FILE")
    if client_ca and not cert:
        raise ConfigError("--tls-client-ca needs TLS: give --tls-cert FILE and --tls-key FILE too")
    return ServerSecurity(
        require_auth=require_auth or _flag(server, "require_auth"),
        tls=TlsFiles(str(cert), str(key), str(client_ca) if client_ca else None) if cert and key else None,
        insecure_no_auth=insecure_no_auth or _flag(server, "insecure_no_auth"),
    )


def metrics_address(given: str | None = None) -> str:
    """Where ``stigmer serve`` serves its metrics: ``given`` (``--metrics-address``, or
    ``STIGMER_METRICS_ADDRESS``), else the config file's ``server.metrics_address``; empty: nowhere.
    One that is no ``HOST:PORT`` is refused here, before the daemon opens its store."""
    from stigmer_core.auth.transport import listen_address_problem  # grpc: only a daemon's start reads this

    value = given or section(load_config(config_path()), "server").get("metrics_address")
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"config file {config_path()}: server.metrics_address must be HOST:PORT, not {value!r}")
    problem = listen_address_problem(value)
    if problem is not None:
        raise ConfigError(f"cannot serve metrics on {value!r}: {problem}")
    return value


LOG_FORMATS = ("text", "json")


def log_format(given: str | None = None) -> str:
    """How ``stigmer serve`` writes its log: ``given`` (``--log-format``, or ``STIGMER_LOG_FORMAT``),
    else the config file's ``server.log_format``, else ``text``. Checked before the daemon opens its
    store, so a misspelt one stops the start instead of logging in a format nobody parses."""
    value = given or section(load_config(config_path()), "server").get("log_format") or "text"
    if value not in LOG_FORMATS:
        raise ConfigError(f"config file {config_path()}: server.log_format must be text or json, not {value!r}")
    return str(value)


def _flag(section: Mapping[str, Any], name: str) -> bool:
    """A yes/no setting: YAML's true or false only. ``"false"`` (quoted) is a string, which
    Python counts as true: read so, it would turn ``insecure_no_auth`` on."""
    value = section.get(name, False)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ConfigError(f"config file {config_path()}: server.{name} must be true or false (unquoted), not {value!r}")


def connect_settings(settings: Settings, *, read_only: bool = False) -> Client:
    """A client for resolved settings; see ``connect_from_config``. ``read_only``: a local
    store opened in this process is opened read-only (``connect``)."""
    from stigmer_core.client import connect

    if settings.backend == REMOTE and not settings.endpoint:
        raise ConfigError(
            "the remote backend has no endpoint: run `stigmer backend switch remote --endpoint HOST:PORT`"
        )
    if settings.backend != REMOTE:
        return connect(LOCAL, data_dir=settings.data_dir, store=settings.store or None, read_only=read_only)
    problem = endpoint_problem(settings.endpoint)  # $STIGMER_ENDPOINT's (a flag's was refused as it was parsed)
    if problem is not None:
        raise ConfigError(problem)
    return connect(
        settings.endpoint,
        token=settings.token or None,
        ca_file=settings.ca_file or None,
        cert_file=settings.cert_file or None,
        key_file=settings.key_file or None,
    )


def connect_from_config(
    *,
    backend: str | None = None,
    data_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> Client:
    """A ``Client`` for the configured backend: what the ``stigmer`` CLI uses.

    ``local`` reaches the daemon holding the data directory when one runs and
    opens the store in this process otherwise; ``remote`` dials the endpoint
    and sends the token with every call. Arguments override the environment
    and the config file, as CLI flags do.
    """
    return connect_settings(
        resolve(
            backend=backend,
            data_dir=data_dir,
            endpoint=endpoint,
            token=token,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
        )
    )
