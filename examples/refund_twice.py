"""A support agent that would send the same refund twice, and the one refund that actually goes out.

    python examples/refund_twice.py

No API key, no network: a scripted "model" asks for the refund, then asks again (models do), and the run then
crashes before it finishes; a restarted process resumes the same task and replays the tool calls, as durable
agent runtimes do. ``@side_effect`` records the first refund's outcome in a SQLite file before returning it, so
every repeat is answered from the record and the payments provider sees exactly one refund. Last, a worker
that dies between a refund and its record: the retry is refused (``side_effect_unknown``), not run again,
because nobody knows whether the refund went out.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.idempotency import SQLiteSideEffects, side_effect


class FakePayments:
    """Stands in for the payments API (an external system: it outlives our process)."""

    def __init__(self) -> None:
        self.refunds: list[dict[str, Any]] = []

    def refund(self, order_id: str, amount_cents: int) -> dict[str, Any]:
        refund = {"id": f"re_{len(self.refunds) + 1:04d}", "order_id": order_id, "amount_cents": amount_cents}
        self.refunds.append(refund)
        return refund


PAYMENTS = FakePayments()

# What the model asks for, in order: the refund, the same refund again ("to be sure"), then a reply.
SCRIPT = [
    ("send_refund", {"order_id": "order-42", "amount_cents": 1500}),
    ("send_refund", {"order_id": "order-42", "amount_cents": 1500}),
    ("reply", {"text": "Your refund of 15.00 EUR is on its way."}),
]


class SimulatedCrash(Exception):
    """The worker dies after the tool calls and before the reply (an OOM kill, a deploy, a lost node)."""


def run_agent(db: Path, task_id: str, *, crash_before_reply: bool) -> None:
    """One process's attempt at the task: a breaker, the store on the shared file, and the scripted loop."""
    breaker = Breaker(max_tool_calls=10)
    store = SQLiteSideEffects(db)  # the same file in every process: the record outlives the crash

    @side_effect(store, breaker=breaker, name="send_refund")
    def send_refund(order_id: str, amount_cents: int) -> dict[str, Any]:
        """Refund part of an order (the body runs at most once per run, order and amount)."""
        print(f"    -> payments API: refunding {amount_cents} cents on {order_id}")
        return PAYMENTS.refund(order_id, amount_cents)

    tools = {"send_refund": send_refund, "reply": lambda text: print(f"    agent replies: {text}")}
    with breaker.run(task_id):  # the task id is the run id: a resumed task gets the same idempotency keys
        for tool, args in SCRIPT:
            if tool == "reply" and crash_before_reply:
                store.close()
                raise SimulatedCrash
            breaker.before_tool(tool, args)  # what a framework adapter does before every tool call
            sent = len(PAYMENTS.refunds)
            result = tools[tool](**args)
            breaker.after_tool(tool, args, result=result)
            if tool == "send_refund":
                how = (
                    "the body ran" if len(PAYMENTS.refunds) > sent else "answered from the record, the body did not run"
                )
                print(f"    model asked for {tool}({args}) -> {result['id']} ({how})")
    store.close()


class WorkerKilled(BaseException):
    """The process dies in the middle of the body: the refund went out, its outcome was never recorded."""


def killed_mid_refund(db: Path) -> None:
    """What happens when nobody knows whether the side effect happened: the repeat is refused, not rerun."""
    breaker = Breaker()
    store = SQLiteSideEffects(db)

    @side_effect(store, breaker=breaker, name="send_refund")
    def send_refund(order_id: str, amount_cents: int) -> dict[str, Any]:
        PAYMENTS.refund(order_id, amount_cents)
        raise WorkerKilled  # dies before returning: like kill -9 between the body and the record

    with breaker.run("ticket-5678"):
        try:
            send_refund("order-43", 900)
        except WorkerKilled:
            print("    !! worker killed after the payments API call, before the outcome was recorded")
        try:
            send_refund("order-43", 900)
        except LoopGuardTripped as trip:
            print(f"    the retry was refused [{trip.reason}]:\n      {trip}")
    store.close()


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "side-effects.db"
        print("1. The model asks for the same refund twice, then the worker crashes before replying:")
        try:
            run_agent(db, "ticket-1234", crash_before_reply=True)
        except SimulatedCrash:
            print("    !! worker crashed")
        print("2. A new process resumes ticket-1234 and replays the tool calls:")
        try:
            run_agent(db, "ticket-1234", crash_before_reply=False)
        except LoopGuardTripped as trip:  # not expected here; shown so a refusal would be readable
            print(f"    refused: {trip}")
            return 1
        print(f"\nThe payments provider received {len(PAYMENTS.refunds)} refund for order-42: {PAYMENTS.refunds}")
        print(f"Four requests for the refund, one refund: the repeats were answered from the record in {db.name}.\n")
        if len(PAYMENTS.refunds) != 1:
            return 1
        print("3. Another ticket: the worker dies between the refund and its record, and the agent retries:")
        killed_mid_refund(db)
        if len(PAYMENTS.refunds) != 2:  # one for order-42, one for order-43: never a second one for either
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
