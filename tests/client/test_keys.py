"""Device keys: generation, 0600 files written atomically under the user's config
directory, refusal of unsafe or broken files, the optional OS keyring, and no private
key material in any repr, str or error. Also ``tokenbroker keygen``."""

from __future__ import annotations

import json
import os
import pickle
import stat
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.jwk import ECKey

from tokenbroker.cli.client import keygen
from tokenbroker.client import DeviceKey, KeyFileError
from tokenbroker.client.keys import KEYRING_SERVICE, config_dir, key_path


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def test_keys_are_created_under_xdg_config_home_readable_only_by_their_owner(
    config_home: Path,
) -> None:
    key = DeviceKey.create()
    path = config_home / "tokenbroker" / "keys" / "default.pem"
    assert key.location == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["default.pem"]  # no temp file left
    assert DeviceKey.load().jkt == key.jkt


def test_without_xdg_config_home_keys_live_under_dot_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_dir() == tmp_path / ".config" / "tokenbroker"
    assert (
        config_dir({"XDG_CONFIG_HOME": "relative/ignored"}) == tmp_path / ".config" / "tokenbroker"
    )
    assert key_path("laptop") == tmp_path / ".config" / "tokenbroker" / "keys" / "laptop.pem"


def test_the_key_is_p256_and_its_jkt_is_the_rfc7638_thumbprint_joserfc_computes(
    config_home: Path,
) -> None:
    key = DeviceKey.create("work")
    assert key.public_jwk == {k: key.public_jwk[k] for k in ("kty", "crv", "x", "y")}
    assert (key.public_jwk["kty"], key.public_jwk["crv"]) == ("EC", "P-256")
    public: dict[str, str | list[str]] = {**key.public_jwk}
    assert key.jkt == ECKey.import_key(public).thumbprint()
    stored = ECKey.import_key((config_home / "tokenbroker/keys/work.pem").read_bytes())
    assert stored.thumbprint() == key.jkt


def test_an_existing_key_is_never_replaced_unless_forced(config_home: Path) -> None:
    first = DeviceKey.create()
    with pytest.raises(KeyFileError, match=r"already exists.*--force"):
        DeviceKey.create()
    assert DeviceKey.load().jkt == first.jkt
    second = DeviceKey.create(force=True)
    assert second.jkt != first.jkt
    assert DeviceKey.load().jkt == second.jkt
    assert stat.S_IMODE(Path(str(second.location)).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700 | 0o007])
def test_a_key_file_accessible_by_others_is_refused_with_the_chmod_fix(
    config_home: Path, mode: int
) -> None:
    key = DeviceKey.create()
    path = Path(str(key.location))
    path.chmod(mode)
    with pytest.raises(KeyFileError) as caught:
        DeviceKey.load()
    assert f"chmod 600 {path}" in str(caught.value)
    path.chmod(0o600)
    assert DeviceKey.load().jkt == key.jkt


def test_a_missing_key_file_says_how_to_create_one(config_home: Path) -> None:
    with pytest.raises(KeyFileError, match="tokenbroker keygen --name laptop"):
        DeviceKey.load("laptop")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"x" * 100_000,
    ],
)
def test_a_corrupt_key_file_is_refused_without_echoing_its_content(
    config_home: Path, content: bytes
) -> None:
    path = key_path("default")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as caught:
        DeviceKey.load()
    assert str(path) in str(caught.value)
    if content:
        assert content[:20].decode() not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("kind", ["p384", "ed25519", "encrypted"])
def test_a_key_that_is_not_an_unencrypted_p256_key_is_refused(config_home: Path, kind: str) -> None:
    if kind == "ed25519":
        private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
            ed25519.Ed25519PrivateKey.generate()
        )
    else:
        private = ec.generate_private_key(ec.SECP384R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(b"pw")
        if kind == "encrypted"
        else serialization.NoEncryption()
    )
    path = key_path("default")
    path.parent.mkdir(parents=True)
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
    )
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"P-256|unencrypted PEM"):
        DeviceKey.load()


@pytest.mark.parametrize("name", ["../escape", "", ".hidden", "a/b", "x" * 65, "sp ace"])
def test_key_names_cannot_leave_the_keys_directory(config_home: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="invalid key name"):
        DeviceKey.create(name)


def test_the_private_key_is_in_no_repr_str_or_pickle(config_home: Path) -> None:
    key = DeviceKey.create()
    path = Path(str(key.location))
    d = str(ECKey.import_key(path.read_bytes()).as_dict(private=True)["d"])
    pem_body = path.read_text().splitlines()[1]
    for text in (repr(key), str(key), f"{key}", repr([key]), repr(key.public_jwk)):
        assert d not in text
        assert pem_body not in text
        assert key.jkt in text or text == repr(key.public_jwk)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert not hasattr(key, "__dict__")  # nothing to dump by vars()


def test_without_the_keyring_package_asking_for_the_keyring_is_a_clean_error(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # import keyring -> ImportError
    with pytest.raises(KeyFileError, match="install the `keyring` package"):
        DeviceKey.create(keyring=True)
    with pytest.raises(KeyFileError, match="install the `keyring` package"):
        DeviceKey.load(keyring=True)
    assert not (config_home / "tokenbroker").exists()


def test_with_a_keyring_the_key_is_stored_there_and_not_in_a_file(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault: dict[tuple[str, str], str] = {}
    fake = types.ModuleType("keyring")
    fake.get_password = lambda service, name: vault.get((service, name))  # type: ignore[attr-defined]
    fake.set_password = lambda service, name, value: vault.__setitem__((service, name), value)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", fake)
    key = DeviceKey.create("laptop", keyring=True)
    assert key.location == f"keyring:{KEYRING_SERVICE}/laptop"
    assert (KEYRING_SERVICE, "laptop") in vault
    assert not (config_home / "tokenbroker").exists()
    assert DeviceKey.load("laptop", keyring=True).jkt == key.jkt
    with pytest.raises(KeyFileError, match="already exists in the OS keyring"):
        DeviceKey.create("laptop", keyring=True)
    with pytest.raises(KeyFileError, match="no device key named 'other'"):
        DeviceKey.load("other", keyring=True)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_the_key_file_is_0600_whatever_the_umask(config_home: Path) -> None:
    previous = os.umask(0o000)
    try:
        key = DeviceKey.create()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(Path(str(key.location)).stat().st_mode) == 0o600


# ---- tokenbroker keygen ---------------------------------------------------------------


def test_keygen_prints_the_jkt_and_the_key_path(config_home: Path) -> None:
    result = CliRunner().invoke(keygen, ["--name", "laptop"])
    assert result.exit_code == 0, result.output
    key = DeviceKey.load("laptop")
    assert key.jkt in result.stdout
    assert str(config_home / "tokenbroker/keys/laptop.pem") in result.stdout
    assert f"tokenbroker devices enroll --client-id ID --jkt {key.jkt}" in result.stderr


def test_keygen_json_output_is_one_object(config_home: Path) -> None:
    result = CliRunner().invoke(keygen, ["--output", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body == {
        "name": "default",
        "jkt": DeviceKey.load().jkt,
        "path": str(config_home / "tokenbroker/keys/default.pem"),
    }


def test_keygen_refuses_to_replace_a_key_without_force_in_one_line(config_home: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(keygen, []).exit_code == 0
    again = runner.invoke(keygen, [])
    assert again.exit_code == 1
    assert again.stderr.startswith("Error: a key already exists at ")
    assert len(again.stderr.strip().splitlines()) == 1
    assert "Traceback" not in again.output
    assert runner.invoke(keygen, ["--force"]).exit_code == 0
