from __future__ import annotations

import builtins
import importlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from loopguard_core.errors import MissingExtra
from loopguard_core.ledger import (
    Checkpoint,
    CheckpointError,
    Ledger,
    generate_signing_key,
    load_public_key,
    load_signing_key,
    row_hash,
)

from .conftest import columns, raw


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "ledger.key"
    path.parent.mkdir()
    generate_signing_key(path)
    return path


def _fill(ledger: Ledger, n: int, session: str = "s") -> None:
    for i in range(n):
        ledger.record(session_id=session, origin="model", turn=i, input_text=str(i), input_tokens=i)


def test_checkpoint_note_is_a_signed_note(ledger_path: Path, key_path: Path) -> None:
    ledger = Ledger(ledger_path, signing_key=key_path)
    _fill(ledger, 5)
    cp = ledger.checkpoint()
    lines = cp.note.split("\n")
    assert lines[0] == ledger.origin == f"loopguard-ledger/{ledger.chain_id}"
    assert lines[1] == "5"
    assert lines[3] == "" and lines[4].startswith(f"\u2014 {ledger.origin} ")
    assert cp.signed and cp.size == 5
    assert cp.head_hash == ledger.verify().head_hash
    parsed = Checkpoint.parse(cp.note)
    assert parsed == cp
    assert parsed.verify_signature(Path(f"{key_path}.pub"))
    assert not parsed.verify_signature(generate_signing_key())
    assert ledger.checkpoints() == [cp]


def test_verify_against_checkpoint_ok_and_after_more_rows(ledger_path: Path, key_path: Path) -> None:
    ledger = Ledger(ledger_path, signing_key=key_path)
    _fill(ledger, 10)
    note = ledger.checkpoint().note
    _fill(ledger, 5)
    result = ledger.verify(checkpoint=note, public_key=Path(f"{key_path}.pub"))
    assert result.ok, result.problems
    assert result.checkpoint is not None
    assert result.checkpoint.matches and result.checkpoint.signature_checked and result.checkpoint.size == 10


def test_truncation_is_detected_against_a_checkpoint(ledger_path: Path, key_path: Path) -> None:
    ledger = Ledger(ledger_path, signing_key=key_path)
    _fill(ledger, 10)
    note = ledger.checkpoint().note
    raw(ledger_path).execute("DELETE FROM loopguard_ledger WHERE seq > 6")
    assert ledger.verify().ok  # a hash chain alone cannot see a cut tail...
    result = ledger.verify(checkpoint=note, public_key=Path(f"{key_path}.pub"))
    assert not result.ok  # ...the saved checkpoint can
    assert [p.kind for p in result.problems] == ["truncated"]
    assert result.problems[0].seqs == (10,)


def test_wholesale_rewrite_is_detected_against_a_checkpoint(ledger_path: Path, key_path: Path) -> None:
    ledger = Ledger(ledger_path, signing_key=key_path)
    _fill(ledger, 8)
    note = ledger.checkpoint().note
    # Rewrite every row with new token counts and recompute the whole chain: self-consistent afterwards.
    conn = raw(ledger_path)
    prev = columns(conn, 1)[14]
    for seq in range(1, 9):
        row = list(columns(conn, seq))
        row[7] = 0
        new = row_hash(str(prev), row[1:14])
        conn.execute(
            "UPDATE loopguard_ledger SET input_tokens = 0, prev_hash = ?, row_hash = ? WHERE seq = ?",
            (prev, new, seq),
        )
        prev = new
    assert ledger.verify().ok
    result = ledger.verify(checkpoint=note, public_key=Path(f"{key_path}.pub"))
    assert [p.kind for p in result.problems] == ["rewritten"]
    assert result.seqs() == {8}


def test_a_replaced_ledger_file_does_not_match_the_checkpoint(ledger_path: Path, tmp_path: Path) -> None:
    key = generate_signing_key()
    ledger = Ledger(ledger_path, signing_key=key)
    _fill(ledger, 4)
    note = ledger.checkpoint().note
    ledger.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger_path}{suffix}").unlink(missing_ok=True)
    fresh = Ledger(ledger_path, signing_key=key)
    _fill(fresh, 4)
    result = fresh.verify(checkpoint=note)
    assert not result.ok and result.problems[0].kind == "checkpoint"
    assert "belongs to another ledger" in result.problems[0].message or "replaced" in result.problems[0].message


def test_forged_or_unsigned_checkpoint_is_refused_when_a_key_is_given(ledger_path: Path, key_path: Path) -> None:
    ledger = Ledger(ledger_path, signing_key=key_path)
    _fill(ledger, 3)
    cp = ledger.checkpoint()
    forged = Ledger(ledger_path, signing_key=generate_signing_key()).checkpoint()
    result = ledger.verify(checkpoint=forged.note, public_key=Path(f"{key_path}.pub"))
    assert [p.kind for p in result.problems] == ["checkpoint"]
    unsigned = cp.body + "\n"
    result = ledger.verify(checkpoint=unsigned, public_key=Path(f"{key_path}.pub"))
    assert "not signed" in result.problems[0].message
    # Without any key, the content is still checked.
    plain = Ledger(ledger_path)
    check = plain.verify(checkpoint=unsigned)
    assert check.ok and check.checkpoint is not None and not check.checkpoint.signature_checked


def test_checkpoint_every_n_rows(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path, checkpoint_every=4, signing_key=generate_signing_key())
    _fill(ledger, 10)
    assert [cp.size for cp in ledger.checkpoints()] == [4, 8]
    assert all(cp.signed for cp in ledger.checkpoints())
    for cp in ledger.checkpoints():
        assert ledger.verify(checkpoint=cp).ok


@pytest.mark.parametrize(
    "note",
    [
        "",
        "hello\n1\nAAAA\n",
        "loopguard-ledger/x\nten\nAAAA\n",
        "loopguard-ledger/x\n1\n!!!\n",
        "loopguard-ledger/x\n1\nAAAA\n",
    ],
)
def test_malformed_checkpoints_are_refused(note: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(note)


def test_key_helpers_round_trip_pem_and_raw(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = generate_signing_key(tmp_path / "k.pem")
    assert oct((tmp_path / "k.pem").stat().st_mode & 0o777) == "0o600"
    raw_seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    (tmp_path / "k.raw").write_bytes(raw_seed)
    for source in (tmp_path / "k.pem", tmp_path / "k.raw", raw_seed, key):
        loaded = load_signing_key(source)
        assert load_public_key(loaded).public_bytes_raw() == key.public_key().public_bytes_raw()
    assert load_public_key(tmp_path / "k.pem.pub").public_bytes_raw() == key.public_key().public_bytes_raw()


def test_missing_cryptography_names_the_signing_extra(ledger_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_crypto(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("cryptography"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_crypto)
    monkeypatch.setattr(importlib, "import_module", lambda name, package=None: no_crypto(name))
    with pytest.raises(MissingExtra, match=r"loopguard-core\[signing\]") as info:
        Ledger(ledger_path, signing_key=b"\x01" * 32)
    assert info.value.extra == "signing"
    with pytest.raises(MissingExtra, match="signing"):
        generate_signing_key()
    # Without signing, the ledger works without cryptography.
    ledger = Ledger(ledger_path)
    _fill(ledger, 2)
    assert ledger.verify().ok
    assert not ledger.checkpoint().signed


def test_copy_of_a_ledger_verifies_elsewhere(ledger_path: Path, tmp_path: Path) -> None:
    ledger = Ledger(ledger_path)
    _fill(ledger, 3)
    ledger.close()
    copy = tmp_path / "copy.db"
    shutil.copy(ledger_path, copy)
    for suffix in ("-wal",):
        if Path(f"{ledger_path}{suffix}").exists():
            shutil.copy(f"{ledger_path}{suffix}", f"{copy}{suffix}")
    assert Ledger(copy).verify().ok
