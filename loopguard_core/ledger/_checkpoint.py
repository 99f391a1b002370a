"""Checkpoints: a small signed text note that pins the ledger's size and head hash.

The format follows C2SP tlog-checkpoint / signed-note::

    loopguard-ledger/<chain id>      origin: which ledger (a verifier binds trust to it)
    1200                             size: rows covered (the head row's seq)
    q1Jx...=                         base64 of the head row's 32-byte hash

    — loopguard-ledger/<chain id> AbCd...   Ed25519 signature line(s): base64(key id || signature)

The signature covers the body (the three lines and their newlines). The key id is the first four bytes of
SHA-256(name || "\\n" || 0x01 || public key), as in signed-note. A checkpoint saved outside the database
(or handed to someone else) makes truncation and wholesale rewrites detectable: the ledger must still hold
a row ``size`` whose hash equals the head hash, and the chain must be intact up to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from ._errors import CheckpointError
from ._keys import load_public_key, load_signing_key, public_key_bytes

__all__ = ["ORIGIN_PREFIX", "Checkpoint", "make_checkpoint", "origin_for"]

ORIGIN_PREFIX = "loopguard-ledger/"
_DASH = "\u2014 "
_ED25519 = b"\x01"


def origin_for(chain_id: str) -> str:
    return f"{ORIGIN_PREFIX}{chain_id}"


def _key_id(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + public_raw).digest()[:4]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint note. ``note`` is the exact text to save or hand to a witness."""

    origin: str
    size: int
    head_hash: str
    note: str

    @property
    def signed(self) -> bool:
        return any(line.startswith(_DASH) for line in self.note.split("\n"))

    @property
    def chain_id(self) -> str:
        return self.origin[len(ORIGIN_PREFIX) :]

    @property
    def body(self) -> str:
        return _body_text(self.origin, self.size, self.head_hash)

    @classmethod
    def parse(cls, note: str | bytes) -> Checkpoint:
        """Parse a checkpoint note, refusing anything malformed."""
        text = note.decode("utf-8") if isinstance(note, bytes) else note
        lines = text.split("\n")
        if len(lines) < 3 or not lines[0].startswith(ORIGIN_PREFIX):
            raise CheckpointError(
                f"not a loopguard checkpoint: the first line must start with {ORIGIN_PREFIX!r}, "
                "then the size, then the base64 head hash"
            )
        origin, size_text, head_b64 = lines[0], lines[1], lines[2]
        if not size_text.isdigit():
            raise CheckpointError(f"checkpoint size must be a non-negative integer, got {size_text!r}")
        try:
            head = base64.b64decode(head_b64, validate=True)
        except binascii.Error as exc:
            raise CheckpointError("checkpoint head hash is not valid base64") from exc
        if len(head) != 32:
            raise CheckpointError(f"checkpoint head hash must be 32 bytes, got {len(head)}")
        rest = lines[3:]
        if rest and rest[0] != "":
            raise CheckpointError("checkpoint has extra lines in its body; loopguard writes none")
        for line in rest[1:]:
            if line and not line.startswith(_DASH):
                raise CheckpointError(f"unexpected line in checkpoint signatures: {line!r}")
        return cls(origin, int(size_text), head.hex(), text)

    def verify_signature(self, public_key: Any) -> bool:
        """True when some signature line is a valid Ed25519 signature of the body by ``public_key``."""
        from .._extras import require

        exceptions = require("cryptography.exceptions", extra="signing", purpose="Verifying a checkpoint")
        key = load_public_key(public_key)
        raw = public_key_bytes(key)
        body = self.body.encode("utf-8")
        for line in self.note.split("\n"):
            if not line.startswith(_DASH):
                continue
            try:
                name, sig_b64 = line[len(_DASH) :].rsplit(" ", 1)
                blob = base64.b64decode(sig_b64, validate=True)
            except (ValueError, binascii.Error):
                continue
            if len(blob) != 68 or blob[:4] != _key_id(name, raw):
                continue
            try:
                key.verify(blob[4:], body)
            except exceptions.InvalidSignature:
                continue
            return True
        return False


def _body_text(origin: str, size: int, head_hash: str) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(bytes.fromhex(head_hash)).decode('ascii')}\n"


def make_checkpoint(chain_id: str, size: int, head_hash: str, signing_key: Any | None) -> Checkpoint:
    """Build (and sign, when a key is given) the checkpoint note for a ledger head."""
    origin = origin_for(chain_id)
    body = _body_text(origin, size, head_hash)
    note = body + "\n"
    if signing_key is not None:
        key = load_signing_key(signing_key)
        raw = public_key_bytes(key)
        sig = key.sign(body.encode("utf-8"))
        blob = base64.b64encode(_key_id(origin, raw) + sig).decode("ascii")
        note += f"{_DASH}{origin} {blob}\n"
    return Checkpoint(origin, size, head_hash, note)
