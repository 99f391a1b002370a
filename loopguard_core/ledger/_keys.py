"""Ed25519 key helpers for signed checkpoints (needs the ``signing`` extra: ``cryptography``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._extras import require
from ._errors import LedgerConfigError

__all__ = ["generate_signing_key", "load_public_key", "load_signing_key", "public_key_bytes"]

_PURPOSE = "Signing ledger checkpoints (Ed25519)"


def _ed25519() -> Any:
    return require("cryptography.hazmat.primitives.asymmetric.ed25519", extra="signing", purpose=_PURPOSE)


def _serialization() -> Any:
    return require("cryptography.hazmat.primitives.serialization", extra="signing", purpose=_PURPOSE)


def generate_signing_key(path: str | os.PathLike[str] | None = None) -> Any:
    """Create an Ed25519 private key; with ``path``, also write it (PEM, mode 0600) and ``<path>.pub``.

    Keep the private key away from the ledger file: whoever holds it can sign a rewritten ledger.
    """
    key = _ed25519().Ed25519PrivateKey.generate()
    if path is not None:
        ser = _serialization()
        target = Path(path)
        pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        pub = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
        Path(f"{target}.pub").write_bytes(pub)
    return key


def _read(source: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise LedgerConfigError(f"cannot read key file {os.fspath(source)!r}: {exc.strerror}") from exc


def load_signing_key(source: Any) -> Any:
    """An Ed25519 private key from a key object, a PEM file/bytes, or a 32-byte raw seed (file or bytes)."""
    ed = _ed25519()
    if isinstance(source, ed.Ed25519PrivateKey):
        return source
    data = _read(source)
    if len(data) == 32:
        return ed.Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = _serialization().load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise LedgerConfigError(
            "signing_key must be an Ed25519 private key: a PEM (PKCS8, unencrypted) or a 32-byte raw seed"
        ) from exc
    if not isinstance(key, ed.Ed25519PrivateKey):
        raise LedgerConfigError(f"signing_key must be an Ed25519 key, got {type(key).__name__}")
    return key


def load_public_key(source: Any) -> Any:
    """An Ed25519 public key from a key object (public or private), a PEM file/bytes, or 32 raw bytes."""
    ed = _ed25519()
    if isinstance(source, ed.Ed25519PublicKey):
        return source
    if isinstance(source, ed.Ed25519PrivateKey):
        return source.public_key()
    data = _read(source)
    if len(data) == 32:
        return ed.Ed25519PublicKey.from_public_bytes(data)
    ser = _serialization()
    try:
        key = ser.load_pem_public_key(data)
    except ValueError:
        try:
            return load_signing_key(data).public_key()
        except LedgerConfigError as exc:
            raise LedgerConfigError(
                "public_key must be an Ed25519 public key: a PEM (SubjectPublicKeyInfo) or 32 raw bytes"
            ) from exc
    if not isinstance(key, ed.Ed25519PublicKey):
        raise LedgerConfigError(f"public_key must be an Ed25519 key, got {type(key).__name__}")
    return key


def public_key_bytes(key: Any) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    ser = _serialization()
    raw: bytes = load_public_key(key).public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return raw
