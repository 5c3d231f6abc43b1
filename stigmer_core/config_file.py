"""The config file and the environment variables, read without anything that serves or connects.

``config`` resolves a client's whole ``Settings`` from these; ``client.connect``
reads only where the local data is (``local_data``), so it never imports what
connects in turn.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stigmer_core.errors import StigmerError

HOME_ENV = "STIGMER_HOME"
DEFAULT_HOME = Path("~/.stigmer")
CONFIG_NAME = "config.yaml"

ENV = {
    "backend": "STIGMER_BACKEND",
    "data_dir": "STIGMER_DATA_DIR",
    "store": "STIGMER_STORE",
    "address": "STIGMER_ADDRESS",
    "endpoint": "STIGMER_ENDPOINT",
    "token": "STIGMER_TOKEN",
    "ca_file": "STIGMER_CA_FILE",
    "cert_file": "STIGMER_CERT_FILE",
    "key_file": "STIGMER_KEY_FILE",
    "org": "STIGMER_ORG",
}


KEYS: dict[str, frozenset[str] | None] = {
    "backend": frozenset({"type"}),
    "local": frozenset({"data_dir", "address", "org"}),
    "remote": frozenset({"endpoint", "token", "ca_file", "cert_file", "key_file", "org"}),
    "server": frozenset(
        {"require_auth", "tls_cert", "tls_key", "tls_client_ca", "insecure_no_auth", "metrics_address", "log_format"}
    ),
    "org": None,
    "store": None,
}
"""Every key the config file is read for (docs/cli.md), by section; None: a value, not a section."""
_warned: set[tuple[str, str]] = set()


class ConfigError(StigmerError):
    """The config file or a setting cannot be used as given."""


_ENDPOINT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[^\s:/\[\]]+):(\d{1,5})$")


def endpoint_problem(endpoint: str) -> str | None:
    """Why ``endpoint`` is not a HOST:PORT a client can dial, or None: caught before grpc,
    whose resolver answers a bad one in its own words (``errors resolving ...``)."""
    found = _ENDPOINT.match(endpoint)
    if found is None or not 0 < int(found.group(2)) < 65536:
        return f"invalid endpoint '{endpoint}': use HOST:PORT (a port from 1 to 65535)"
    return None


def listen_problem(address: str, name: str = "--address") -> str | None:
    """Why ``address`` is not a HOST:PORT a daemon can listen on (port 0: a free one), or None:
    grpc takes a host alone and listens on port 443 (``--address localhost`` started a daemon
    there, exit 0)."""
    found = _ENDPOINT.match(address)
    if found is None or not 0 <= int(found.group(2)) < 65536:
        return f"invalid {name} '{address}': use HOST:PORT (a port from 0, a free one, to 65535)"
    return None


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
    import yaml  # type: ignore[import-untyped, unused-ignore]  # here: with no config file, a command loads no YAML

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # one line, as a manifest's: PyYAML's own words span several
        mark = getattr(exc, "problem_mark", None)
        problem = str(getattr(exc, "problem", None) or exc)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML: {where}{problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    _warn_unknown(path, data)
    _warn_readable(path, data)
    return data


def _secret_held(data: Mapping[str, Any]) -> str:
    """What of the config is a secret: the remote token, or a store URL's password; "" for none."""
    remote = data.get("remote")
    if isinstance(remote, Mapping) and remote.get("token"):
        return "an API token (remote.token)"
    store = data.get("store")
    if isinstance(store, str) and "://" in store:
        from urllib.parse import urlsplit

        try:
            if urlsplit(store).password:
                return "the database password (store)"
        except ValueError:
            return ""
    return ""


def _warn_readable(path: Path, data: Mapping[str, Any]) -> None:
    """Say, once, that a config holding a secret can be read by other users: `login` writes it
    0600, but a hand-written one (docs/operations.md puts `store:` there) kept the umask's 0644."""
    import logging
    import stat

    held = _secret_held(data)
    if not held or (str(path), "readable") in _warned:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        _warned.add((str(path), "readable"))
        logging.getLogger(__name__).warning(
            "config file %s holds %s and other users may read it (mode %s): `chmod 600 %s`",
            path, held, oct(stat.S_IMODE(mode)), path,
        )  # fmt: skip


def _warn_unknown(path: Path, data: Mapping[str, Any]) -> None:
    """Say which keys nothing reads, once per process: a misspelt ``bakend:`` or ``remote: endpont:``
    was ignored without a word, and every command then went to the local store, or to no server.
    Warned rather than refused, so a file a newer release wrote still works here."""
    for key, value in data.items():
        known = KEYS.get(key, ...) if isinstance(key, str) else ...
        if known is ...:
            _warn(path, str(key), KEYS)
        elif known is not None and isinstance(value, Mapping):
            for inner in value:
                if inner not in known:
                    _warn(path, f"{key}.{inner}", known)


def _warn(path: Path, key: str, known: Mapping[str, Any] | frozenset[str]) -> None:
    import difflib  # here: every command reads the config, few find a key to warn of
    import logging

    if (str(path), key) in _warned:
        return
    _warned.add((str(path), key))
    leaf = key.rpartition(".")[2]
    close = difflib.get_close_matches(leaf, sorted(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(known))})"
    logging.getLogger(__name__).warning("config file %s: '%s' is not a setting and is ignored%s", path, key, hint)


def save_config(data: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write the config readable by its owner only: it may hold a token.

    The text goes to a file of its own name (``mkstemp``: created 0600, never one found there,
    whatever its mode) and replaces the config in one rename, so a reader sees the old file or the
    new one, and two commands saving at once both succeed (the last one's is kept). A config that is
    a symlink (a dotfiles repository) has its target replaced, the link kept."""
    import yaml  # type: ignore[import-untyped, unused-ignore]

    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = path.resolve() if path.is_symlink() else path
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config file {config_path()}: '{name}' must be a mapping")
    return value


def pick(flag: str | None, env_key: str, configured: object, default: str) -> str:
    if flag:
        return flag
    from_env = os.environ.get(ENV[env_key])
    if from_env:
        return from_env
    if configured not in (None, ""):
        return str(configured)
    return default


def local_data(
    data_dir: str | Path | None = None,
    store: str | None = None,
    *,
    home: Path | None = None,
    data: Mapping[str, Any] | None = None,
) -> tuple[Path, str]:
    """The local backend's data directory and store (a PostgreSQL URL, or "" for LMDB there).

    Each is the argument, else its environment variable (``STIGMER_DATA_DIR``,
    ``STIGMER_STORE``), else the config file (``local.data_dir``, ``store``),
    else the default (``$STIGMER_HOME/data``, LMDB). ``home`` and ``data`` are
    the home and config file a caller has read already.
    """
    home = home or stigmer_home()
    data = load_config(home / CONFIG_NAME) if data is None else data
    local = section(data, "local")
    directory = pick(str(data_dir) if data_dir else None, "data_dir", local.get("data_dir"), str(home / "data"))
    return Path(directory).expanduser(), pick(store, "store", data.get("store"), "")


def follow_backend_org(data: dict[str, Any], backend: str, default_org: str) -> None:
    """Make ``data``'s org (the config's ``org``) the one last used with ``backend``.

    The org in use is remembered in the section of the backend being left
    (``local.org``, ``remote.org``), and the org remembered for ``backend``
    takes its place: a token's org, set by ``login``, stays with the remote
    server, and switching back to the local store finds the local objects'
    org again. A local store never used with another org gets ``default_org``;
    a remote one with nothing remembered keeps the org in use.
    """
    was = str(section(data, "backend").get("type") or "local")
    current = data.get("org")
    if current:
        data[was] = {**dict(section(data, was)), "org": current}
    remembered = section(data, backend).get("org")
    chosen = remembered or (default_org if backend == "local" else current)
    if chosen:
        data["org"] = chosen
    else:
        data.pop("org", None)
