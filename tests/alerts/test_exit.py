"""A process that queues alerts and exits still sends them (the atexit flush), and never hangs on a dead server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .server import Receiver

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    from loopguard_core.alerts import Alert, Alerts, Retry, WebhookSink

    url, dead, exit_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    alerts = Alerts(
        [WebhookSink(url, timeout=5.0)],
        retry=Retry(initial=0.05, maximum=0.1),
        dead_letter=dead,
        exit_timeout=exit_timeout,
    )
    for n in range(3):
        alert = Alert(kind="trip", severity="critical", title=f"exit {n}", dedup_key=("exit", n))
        alerts.submit(alert)
        print(alert.id, flush=True)
    # no flush, no close: the interpreter exits here
    """
)


def run(url: str, dead: Path, exit_timeout: float) -> tuple[list[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, str(dead), str(exit_timeout)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split(), time.monotonic() - started


def test_alerts_queued_just_before_exit_are_delivered(receiver: Receiver, tmp_path: Path) -> None:
    ids, _ = run(receiver.url, tmp_path / "dead.jsonl", 5.0)
    assert len(ids) == 3
    assert receiver.delivered == dict.fromkeys(ids, 1)
    assert not (tmp_path / "dead.jsonl").exists()


def test_exit_waits_at_most_exit_timeout_and_dead_letters_the_rest(receiver: Receiver, tmp_path: Path) -> None:
    receiver.down()
    dead = tmp_path / "dead.jsonl"
    ids, took = run(receiver.url, dead, 0.5)
    assert took < 10.0  # interpreter start-up + 0.5 s (slow on a loaded machine), never the 15-minute window
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(line["alert"]["id"] for line in lines) == sorted(ids)
    assert {line["reason"] for line in lines} <= {"closed", "in flight at close"}


def test_an_alert_its_worker_is_writing_off_at_exit_is_written_once(tmp_path: Path) -> None:
    """The interpreter exits while the worker is dead-lettering an alert (a rejected one, a slow disk): the exit's
    close waits for that write (daemon threads stop mid-write at exit) and does not write the alert again."""
    script = textwrap.dedent(
        """
        import sys, threading, time
        from loopguard_core.alerts import Alert, AlertDeliveryError, Alerts, CallbackSink, DeadLetter

        writing = threading.Event()

        class SlowLog(DeadLetter):
            def write(self, alert, **fields):
                writing.set()
                time.sleep(0.5)
                super().write(alert, **fields)

        def refuses(alert):
            raise AlertDeliveryError("no", retryable=False)

        alerts = Alerts([CallbackSink(refuses)], dead_letter=SlowLog(sys.argv[1]), exit_timeout=0.05)
        alert = Alert(kind="trip", severity="critical", title="t", dedup_key=("exit", 1))
        alerts.submit(alert)
        print(alert.id, flush=True)
        writing.wait(5)
        # the interpreter exits here, mid-write
        """
    )
    dead = tmp_path / "dead.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", script, str(dead)], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(line["alert"]["id"], line["reason"]) for line in lines] == [(done.stdout.strip(), "rejected")]
