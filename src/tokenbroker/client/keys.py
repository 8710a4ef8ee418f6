"""Device keys: P-256 (ES256) key pairs that never leave the device.

A key lives in ``$XDG_CONFIG_HOME/tokenbroker/keys/<name>.pem`` (``~/.config/...`` when
the variable is unset), a PKCS#8 PEM file readable only by its owner, or, when the
``keyring`` package is installed and asked for, in the OS keyring. Its RFC 7638
thumbprint (``jkt``) is what an admin enrolls.

The private key is reachable only through :meth:`DeviceKey.sign_jwt`: it is in no repr,
str, log line or exception, and a ``DeviceKey`` refuses to be pickled.
"""

from __future__ import annotations

import importlib
import os
import re
import secrets
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tokenbroker.client.errors import KeyFileError
from tokenbroker.domain.jose import b64url_encode
from tokenbroker.domain.rfc7638 import jwk_thumbprint

DEFAULT_NAME = "default"
KEYRING_SERVICE = "tokenbroker"
ALGORITHM = "ES256"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAX_KEY_FILE = 16 * 1024  # a P-256 PKCS#8 PEM is ~240 bytes
_POSIX = os.name == "posix"


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/tokenbroker``, or ``~/.config/tokenbroker`` (the XDG spec says
    to ignore a relative XDG_CONFIG_HOME)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "tokenbroker"


def key_path(name: str = DEFAULT_NAME, directory: Path | None = None) -> Path:
    """Where the key called ``name`` is stored (``directory`` defaults to
    ``config_dir()/keys``)."""
    if not _NAME.fullmatch(name):
        raise KeyFileError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return (directory or config_dir() / "keys") / f"{name}.pem"


class DeviceKey:
    """A P-256 private key with its public JWK and RFC 7638 thumbprint."""

    __slots__ = ("_jkt", "_private_key", "_public_jwk", "location", "name")

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        name: str = DEFAULT_NAME,
        location: str | None = None,
    ) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise KeyFileError("device keys are P-256 (ES256) keys")
        numbers = private_key.public_key().public_numbers()
        self._private_key = private_key
        self._public_jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }
        self._jkt = jwk_thumbprint(self._public_jwk)
        self.name = name
        #: the key file path, ``keyring:tokenbroker/<name>``, or None (in memory only)
        self.location = location

    # ---- construction -------------------------------------------------------------
    @classmethod
    def generate(cls, name: str = DEFAULT_NAME) -> DeviceKey:
        """A new key in memory only (see :meth:`create` to store one)."""
        return cls(ec.generate_private_key(ec.SECP256R1()), name=name)

    @classmethod
    def create(
        cls,
        name: str = DEFAULT_NAME,
        *,
        directory: Path | None = None,
        force: bool = False,
        keyring: bool = False,
    ) -> DeviceKey:
        """Generate a key and store it: a new 0600 file (never replacing an existing
        key unless ``force``), or the OS keyring."""
        key = cls.generate(name)
        pem = key._pem()
        if keyring:
            _keyring_store(name, pem, force=force)
            key.location = f"keyring:{KEYRING_SERVICE}/{name}"
        else:
            path = key_path(name, directory)
            _write_private_file(path, pem, force=force)
            key.location = str(path)
        return key

    @classmethod
    def load(
        cls, name: str = DEFAULT_NAME, *, directory: Path | None = None, keyring: bool = False
    ) -> DeviceKey:
        """The stored key called ``name``; :class:`KeyFileError` if it is missing,
        corrupt, or its file is accessible by other users."""
        if keyring:
            location = f"keyring:{KEYRING_SERVICE}/{name}"
            return cls(_parse_pem(_keyring_load(name), location), name=name, location=location)
        path = key_path(name, directory)
        data = _read_private_file(path, name)
        return cls(_parse_pem(data, str(path)), name=name, location=str(path))

    @classmethod
    def from_file(cls, path: Path | str) -> DeviceKey:
        """The key in ``path`` (same checks as :meth:`load`)."""
        path = Path(path)
        data = _read_private_file(path, path.stem)
        return cls(_parse_pem(data, str(path)), name=path.stem, location=str(path))

    # ---- public side --------------------------------------------------------------
    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (``kty``, ``crv``, ``x``, ``y``; never ``d``)."""
        return dict(self._public_jwk)

    @property
    def jkt(self) -> str:
        """RFC 7638 SHA-256 thumbprint of the public key: what an admin enrolls."""
        return self._jkt

    def sign_jwt(self, claims: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
        """A compact ES256 JWS over ``claims`` with ``headers`` (pyjwt adds ``alg``)."""
        return jwt.encode(
            dict(claims), self._private_key, algorithm=ALGORITHM, headers=dict(headers)
        )

    def __repr__(self) -> str:
        return f"DeviceKey(name={self.name!r}, jkt={self._jkt!r}, location={self.location!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DeviceKey holds a private key and cannot be pickled or copied")

    def _pem(self) -> bytes:
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


# ---- files --------------------------------------------------------------------------


def _write_private_file(path: Path, data: bytes, *, force: bool) -> None:
    """Write to a fresh 0600 temporary file (O_CREAT|O_EXCL), then link it into place:
    readers never see a half-written key, and without ``force`` an existing key is never
    replaced (``link`` fails if the name exists; ``replace`` would not)."""
    try:
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
    except OSError as exc:
        raise KeyFileError(f"cannot create a key file in {path.parent}: {_why(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            if _POSIX:
                os.fchmod(file.fileno(), 0o600)  # whatever the umask
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise KeyFileError(
            f"a key already exists at {path}; keep it, or replace it with --force "
            "(the old key's enrollment becomes useless)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {_why(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _read_private_file(path: Path, name: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(
            f"no device key at {path}: create one with `tokenbroker keygen --name {name}`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {_why(exc)}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())  # of the file we opened, not of the name
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        if _POSIX and info.st_mode & 0o077:
            raise KeyFileError(
                f"{path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                f"fix it with: chmod 600 {shlex.quote(str(path))}"
            )
        if _POSIX and info.st_uid != os.geteuid():
            raise KeyFileError(f"{path} belongs to another user")
        data = file.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{path} is not a device key (too large)")
    return data


def _parse_pem(data: bytes, where: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # never chain: nothing of the key material goes into an exception
        raise KeyFileError(f"{where} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{where} is not a P-256 key; device keys are ES256")
    return key


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# ---- OS keyring (optional) ----------------------------------------------------------


def keyring_module() -> ModuleType | None:
    """The ``keyring`` package if it is installed, else None."""
    try:
        return importlib.import_module("keyring")
    except ImportError:
        return None


def _require_keyring() -> ModuleType:
    module = keyring_module()
    if module is None:
        raise KeyFileError(
            "the OS keyring is not available: install the `keyring` package, "
            "or keep the key in a file (the default)"
        )
    return module


def _keyring_store(name: str, pem: bytes, *, force: bool) -> None:
    module = _require_keyring()
    key_path(name)  # the same name rules as files
    try:
        if not force and module.get_password(KEYRING_SERVICE, name) is not None:
            raise KeyFileError(
                f"a key named {name!r} already exists in the OS keyring; "
                "keep it, or replace it with --force"
            )
        module.set_password(KEYRING_SERVICE, name, pem.decode("ascii"))
    except KeyFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - keyring backends raise many types
        raise KeyFileError(
            f"the OS keyring refused to store the key: {type(exc).__name__}"
        ) from None


def _keyring_load(name: str) -> bytes:
    module = _require_keyring()
    try:
        value = module.get_password(KEYRING_SERVICE, name)
    except Exception as exc:  # noqa: BLE001 - keyring backends raise many types
        raise KeyFileError(
            f"the OS keyring refused to read the key: {type(exc).__name__}"
        ) from None
    if not isinstance(value, str):
        raise KeyFileError(f"no device key named {name!r} in the OS keyring")
    return value.encode("ascii", errors="replace")
