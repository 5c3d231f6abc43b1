"""``stigmer_core.config``: the settings the CLI uses, for Python callers too."""

from __future__ import annotations

from pathlib import Path

import pytest

from stigmer_core import config
from stigmer_core.api.agentic.agent.v1 import agent_pb2, service_pb2_grpc
from stigmer_core.config_file import KEYS


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in config.ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(config.HOME_ENV, str(tmp_path))
    return tmp_path


def test_defaults_live_under_stigmer_home(home: Path) -> None:
    settings = config.resolve()
    assert (settings.backend, settings.org, settings.address) == ("local", "local", "127.0.0.1:50051")
    assert settings.data_dir == home / "data"
    assert settings.config_file == home / "config.yaml"


def test_flags_beat_env_beat_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.save_config({"backend": {"type": "remote"}, "remote": {"endpoint": "file:1"}, "org": "from-file"})
    assert (config.resolve().endpoint, config.resolve().org) == ("file:1", "from-file")
    monkeypatch.setenv("STIGMER_ENDPOINT", "env:2")
    monkeypatch.setenv("STIGMER_ORG", "from-env")
    assert (config.resolve().endpoint, config.resolve().org) == ("env:2", "from-env")
    flags = config.resolve(endpoint="flag:3", org="from-flag", backend="local")
    assert (flags.backend, flags.endpoint, flags.org) == ("local", "flag:3", "from-flag")


def test_an_endpoint_given_selects_the_remote_backend(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--endpoint`` (or ``STIGMER_ENDPOINT``) on a local backend was ignored: the command
    answered from the local store, exit 0, as if that server had been asked."""
    assert config.resolve(endpoint="team:7443").backend == config.REMOTE
    assert config.resolve(endpoint="team:7443", backend="local").backend == config.LOCAL  # said outright
    with pytest.raises(config.ConfigError, match=r"--data-dir d names a local store, but --endpoint team:7443"):
        config.resolve(endpoint="team:7443", data_dir="d")
    monkeypatch.setenv("STIGMER_ENDPOINT", "team:7443")  # a script's server, no backend chosen anywhere
    assert config.resolve().backend == config.REMOTE
    monkeypatch.setenv("STIGMER_BACKEND", "local")  # chosen: kept
    assert config.resolve().backend == config.LOCAL
    monkeypatch.delenv("STIGMER_BACKEND")
    config.save_config({"backend": {"type": "local"}})  # `backend switch local`: kept
    assert config.resolve().backend == config.LOCAL
    assert config.resolve(data_dir="d").backend == config.LOCAL


def test_bad_config_is_named(home: Path) -> None:
    (home / "config.yaml").write_text("backend: [\n")
    with pytest.raises(config.ConfigError, match=r"config\.yaml is not valid YAML"):
        config.resolve()
    (home / "config.yaml").write_text("backend: {type: cloud}\n")
    with pytest.raises(config.ConfigError, match="unknown backend 'cloud'"):
        config.resolve()


def test_a_key_nothing_reads_is_named_once_with_the_setting_it_likely_meant(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelt key was ignored without a word: `bakend: {type: remote}` left every command on
    the local store. It is still ignored (a newer release's file keeps working), but said."""
    (home / "config.yaml").write_text(
        "bakend: {type: remote}\nremote: {endpont: 'team:7443', token: stg_x}\n"
        "server: {require_auht: true}\ncolour: blue\norg: acme\n"
    )
    (home / "config.yaml").chmod(0o600)  # it holds a token
    with caplog.at_level("WARNING", logger="stigmer_core.config_file"):
        settings = config.resolve()
        config.resolve()  # said once per process, not per read
    assert (settings.backend, settings.endpoint, settings.org) == ("local", "", "acme")
    where = f"config file {home / 'config.yaml'}"
    assert [r.getMessage() for r in caplog.records] == [
        f"{where}: 'bakend' is not a setting and is ignored (did you mean 'backend'?)",
        f"{where}: 'remote.endpont' is not a setting and is ignored (did you mean 'endpoint'?)",
        f"{where}: 'server.require_auht' is not a setting and is ignored (did you mean 'require_auth'?)",
        f"{where}: 'colour' is not a setting and is ignored (known: backend, local, org, remote, server, store)",
    ]


def test_every_documented_setting_is_read_without_a_word(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The config file docs/cli.md shows, every key in it: none is taken for a misspelling."""
    import re

    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    shown = re.search(r"```yaml\n(backend:\n.*?)```", docs, re.DOTALL)
    assert shown is not None
    (home / "config.yaml").write_text(shown.group(1))
    (home / "config.yaml").chmod(0o600)  # as `login` writes it: it holds a token
    with caplog.at_level("WARNING", logger="stigmer_core.config_file"):
        config.load_config()
    assert caplog.records == []
    assert set(config.load_config()) == set(KEYS)


def test_connect_from_config_opens_the_local_store_in_process(home: Path) -> None:
    with config.connect_from_config() as client:
        assert client.in_process
        stub = client.stub(service_pb2_grpc.AgentCommandControllerStub)
        created = stub.create(agent_pb2.Agent(metadata={"name": "Scripted"}))
        assert created.metadata.org == "local"
    assert (home / "data").is_dir()


def test_connect_from_config_remote_needs_an_endpoint(home: Path) -> None:
    config.save_config({"backend": {"type": "remote"}})
    with pytest.raises(config.ConfigError, match="has no endpoint"):
        config.connect_from_config()
    with config.connect_from_config(endpoint="127.0.0.1:1", token="t") as client:
        assert not client.in_process and client.target == "127.0.0.1:1"


def test_the_saved_token_goes_only_to_the_endpoint_it_was_saved_for(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stigmer --endpoint elsewhere` must not hand another server the token `login` saved."""
    config.save_config({"backend": {"type": "remote"}, "remote": {"endpoint": "team:443", "token": "stg_saved"}})
    assert config.resolve().token == "stg_saved"
    assert config.resolve(endpoint="team:443").token == "stg_saved"
    assert config.resolve(endpoint="elsewhere:443").token == ""
    assert config.resolve(endpoint="elsewhere:443", token="stg_given").token == "stg_given"
    monkeypatch.setenv("STIGMER_ENDPOINT", "elsewhere:443")
    assert config.resolve().token == ""
    monkeypatch.setenv("STIGMER_TOKEN", "stg_env")
    assert config.resolve().token == "stg_env"


def test_a_data_directory_argument_is_the_local_backend(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.save_config({"backend": {"type": "remote"}, "remote": {"endpoint": "team:443"}})
    monkeypatch.setenv("STIGMER_BACKEND", "remote")
    assert config.resolve(data_dir=home / "new").backend == "local"
    monkeypatch.setenv("STIGMER_DATA_DIR", str(home / "env"))
    assert config.resolve().backend == "remote"
    with pytest.raises(config.ConfigError, match="--backend remote asks for the remote server"):
        config.resolve(data_dir=home / "new", backend="remote")


def test_a_saved_config_is_its_owners_alone_whatever_was_left_beside_it(home: Path) -> None:
    """A ``config.tmp`` left world-readable (a crash, a hand edit) was reused as it was: the config,
    token and all, ended up 0644."""
    (home / "config.tmp").write_text("left here\n")
    (home / "config.tmp").chmod(0o644)
    path = config.save_config({"remote": {"endpoint": "team:443", "token": "stg_saved"}})
    assert path.stat().st_mode & 0o777 == 0o600
    assert config.load_config()["remote"]["token"] == "stg_saved"


def test_configs_saved_at_once_all_succeed_and_leave_one_whole_file(home: Path) -> None:
    """Saves racing on one temporary name failed (`config.tmp: No such file or directory`)."""
    import threading

    failures: list[BaseException] = []

    def save(n: int) -> None:
        try:
            for i in range(20):
                config.save_config({"org": f"o{n}-{i}", "padding": "x" * 4000})
        except BaseException as exc:  # the test reports what any thread raised
            failures.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert config.load_config()["org"].endswith("-19")
    assert sorted(p.name for p in home.iterdir()) == ["config.yaml"]


def test_a_symlinked_config_keeps_its_link(home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    dotfiles = tmp_path_factory.mktemp("dotfiles")
    (dotfiles / "stigmer.yaml").write_text("org: before\n")
    (home / "config.yaml").symlink_to(dotfiles / "stigmer.yaml")
    config.save_config({"org": "after"})
    assert (home / "config.yaml").is_symlink()
    assert config.load_config() == {"org": "after"}
    assert (dotfiles / "stigmer.yaml").stat().st_mode & 0o777 == 0o600


def test_the_saved_ca_and_client_certificate_go_only_to_their_endpoint(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`login --ca-file` saved a CA that every other endpoint was then dialled with: a plaintext
    daemon on loopback failed "the TLS handshake failed", and an empty $STIGMER_CA_FILE could not
    undo it."""
    saved = {"endpoint": "team:443", "ca_file": "/ca.pem", "cert_file": "/me.pem", "key_file": "/me.key"}
    config.save_config({"backend": {"type": "remote"}, "remote": saved})
    at_team = config.resolve()
    assert (at_team.ca_file, at_team.cert_file, at_team.key_file) == ("/ca.pem", "/me.pem", "/me.key")
    elsewhere = config.resolve(endpoint="127.0.0.1:50051")
    assert (elsewhere.ca_file, elsewhere.cert_file, elsewhere.key_file) == ("", "", "")
    assert config.resolve(endpoint="127.0.0.1:50051", ca_file="/given.pem").ca_file == "/given.pem"
    monkeypatch.setenv("STIGMER_CA_FILE", "/env.pem")
    assert config.resolve(endpoint="127.0.0.1:50051").ca_file == "/env.pem"


@pytest.mark.parametrize(
    ("text", "held"),
    [("remote: {endpoint: 'team:7443', token: stg_x}\n", "an API token (remote.token)"),
     ("store: postgresql://app:s3cret@db:5432/stigmer\n", "the database password (store)")],
)  # fmt: skip
def test_a_config_holding_a_secret_that_others_may_read_is_said_once(
    home: Path, caplog: pytest.LogCaptureFixture, text: str, held: str
) -> None:
    """`login` writes the file 0600; one written by hand (docs/operations.md puts `store:` there)
    kept the umask's 0644, and the daemon used its password without a word."""
    path = home / "config.yaml"
    path.write_text(text)
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="stigmer_core.config_file"):
        config.resolve()
        config.resolve()
    assert [r.getMessage() for r in caplog.records] == [
        f"config file {path} holds {held} and other users may read it (mode 0o644): `chmod 600 {path}`"
    ]
    caplog.clear()
    other = home / "other.yaml"  # 0600: nothing to say
    other.write_text(text)
    other.chmod(0o600)
    from stigmer_core.config_file import load_config

    load_config(other)
    assert caplog.records == []
