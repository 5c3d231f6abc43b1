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
    server:                  # `stigmer serve`; flags override
      require_auth: true
      tls_cert: /etc/stigmer/server.pem
      tls_key: /etc/stigmer/server.key
      tls_client_ca: /etc/stigmer/clients-ca.pem   # optional: mutual TLS
      insecure_no_auth: false
    org: local

Precedence, highest first: explicit arguments (CLI flags), environment
variables (``STIGMER_BACKEND``, ``STIGMER_DATA_DIR``, ``STIGMER_STORE``, ``STIGMER_ADDRESS``,
``STIGMER_ENDPOINT``, ``STIGMER_TOKEN``, ``STIGMER_CA_FILE``, ``STIGMER_ORG``), the config file,
built-in defaults. ``store`` empty (the default) means LMDB in ``data_dir``;
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
import yaml  # type: ignore[import-untyped, unused-ignore]

from stigmer_core.errors import StigmerError

if TYPE_CHECKING:  # the client opens the store in process: imported when a command connects, not before
    from stigmer_core.auth.transport import TlsFiles
    from stigmer_core.client import Client

HOME_ENV = "STIGMER_HOME"
DEFAULT_HOME = Path("~/.stigmer")
CONFIG_NAME = "config.yaml"
LOCAL = "local"
REMOTE = "remote"
BACKENDS = (LOCAL, REMOTE)
DEFAULT_ORG = "local"
DEFAULT_ADDRESS = "127.0.0.1:50051"

ENV = {
    "backend": "STIGMER_BACKEND",
    "data_dir": "STIGMER_DATA_DIR",
    "store": "STIGMER_STORE",
    "address": "STIGMER_ADDRESS",
    "endpoint": "STIGMER_ENDPOINT",
    "token": "STIGMER_TOKEN",
    "ca_file": "STIGMER_CA_FILE",
    "org": "STIGMER_ORG",
}


class ConfigError(StigmerError):
    """The config file or a setting cannot be used as given."""


def stigmer_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def config_path() -> Path:
    return stigmer_home() / CONFIG_NAME


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The config file as a dict; an absent file is an empty config."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    return data


def save_config(data: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write the config readable by its owner only: it may hold a token."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False))
    tmp.replace(path)
    return path


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config file {config_path()}: '{name}' must be a mapping")
    return value


def _pick(flag: str | None, env_key: str, configured: object, default: str) -> str:
    if flag:
        return flag
    from_env = os.environ.get(ENV[env_key])
    if from_env:
        return from_env
    if configured not in (None, ""):
        return str(configured)
    return default


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
) -> Settings:
    """Settings from arguments, then environment, then the config file, then defaults."""
    home = stigmer_home()
    data = load_config(home / CONFIG_NAME)
    local = _section(data, "local")
    remote = _section(data, "remote")
    chosen = _pick(backend, "backend", _section(data, "backend").get("type"), LOCAL).lower()
    if chosen not in BACKENDS:
        raise ConfigError(f"unknown backend '{chosen}': use 'local' or 'remote'")
    directory = _pick(str(data_dir) if data_dir else None, "data_dir", local.get("data_dir"), str(home / "data"))
    saved_endpoint = str(remote.get("endpoint") or "")
    chosen_endpoint = _pick(endpoint, "endpoint", saved_endpoint, "")
    chosen_token = _pick(token, "token", remote.get("token"), "")
    if not (token or os.environ.get(ENV["token"])) and chosen_endpoint != saved_endpoint:
        chosen_token = ""  # the file's token was saved for the file's endpoint: never sent to another
    return Settings(
        backend=chosen,
        data_dir=Path(directory).expanduser(),
        store=_pick(store, "store", data.get("store"), ""),
        address=_pick(address, "address", local.get("address"), DEFAULT_ADDRESS),
        endpoint=chosen_endpoint,
        token=chosen_token,
        org=_pick(org, "org", data.get("org"), DEFAULT_ORG),
        home=home,
        config_file=home / CONFIG_NAME,
        ca_file=_pick(ca_file, "ca_file", remote.get("ca_file"), ""),
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

    server = _section(load_config(config_path()), "server")
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


def _flag(section: Mapping[str, Any], name: str) -> bool:
    """A yes/no setting: YAML's true or false only. ``"false"`` (quoted) is a string, which
    Python counts as true: read so, it would turn ``insecure_no_auth`` on."""
    value = section.get(name, False)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ConfigError(f"config file {config_path()}: server.{name} must be true or false (unquoted), not {value!r}")


def connect_settings(settings: Settings) -> Client:
    """A client for resolved settings; see ``connect_from_config``."""
    from stigmer_core.client import connect

    if settings.backend == REMOTE and not settings.endpoint:
        raise ConfigError(
            "the remote backend has no endpoint: run `stigmer backend switch remote --endpoint HOST:PORT`"
        )
    if settings.backend != REMOTE:
        return connect(LOCAL, data_dir=settings.data_dir, store=settings.store or None)
    return connect(settings.endpoint, token=settings.token or None, ca_file=settings.ca_file or None)


def connect_from_config(
    *,
    backend: str | None = None,
    data_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    ca_file: str | None = None,
) -> Client:
    """A ``Client`` for the configured backend: what the ``stigmer`` CLI uses.

    ``local`` reaches the daemon holding the data directory when one runs and
    opens the store in this process otherwise; ``remote`` dials the endpoint
    and sends the token with every call. Arguments override the environment
    and the config file, as CLI flags do.
    """
    return connect_settings(
        resolve(backend=backend, data_dir=data_dir, endpoint=endpoint, token=token, ca_file=ca_file)
    )
