"""A refund that waits for a person, approved from another process with the `loopguard approvals` CLI.

    python examples/approval_from_cli.py

No API key, no network: a scripted model asks a LangChain ``create_agent`` agent (with a LangGraph checkpointer)
for a refund. The refund tool is irreversible, so loopguard suspends the graph on its checkpointer with
LangGraph's own ``interrupt`` and queues an approval request in a SQLite file. Another process, as a person at a
terminal would, runs ``loopguard approvals approve ID --db FILE --by alice``; the agent is then resumed with
``Command(resume=...)``, the refund runs once, and the conversation ends.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from loopguard_core import Breaker, Ledger, ToolPolicy
from loopguard_langchain import LoopGuardMiddleware
from loopguard_langchain.testing import ScriptedChatModel

REFUNDS: list[dict[str, Any]] = []  # stands in for the payments API


@tool
def refund(order: str, amount_eur: int) -> str:
    """Refund part of an order."""
    REFUNDS.append({"order": order, "amount_eur": amount_eur})
    return f"refunded {amount_eur} EUR on {order}"


def main() -> dict[str, Any]:
    REFUNDS.clear()
    folder = Path(tempfile.mkdtemp(prefix="loopguard-approval-"))
    db = folder / "runs.db"
    ledger = Ledger(str(db))  # the approval queue lives in the ledger's database
    breaker = Breaker(
        ledger=ledger,
        tools={
            "refund": ToolPolicy(irreversible=True, preview=lambda a: f"refund {a['amount_eur']} EUR on {a['order']}")
        },
    )
    model = ScriptedChatModel([("refund", {"order": "A-17", "amount_eur": 30}), "The refund is on its way."])
    agent = create_agent(model, [refund], middleware=[LoopGuardMiddleware(breaker)], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "ticket-A-17"}}

    print("1. the agent starts and asks for a refund")
    result = agent.invoke({"messages": [{"role": "user", "content": "Please refund order A-17."}]}, config)
    waiting = result["__interrupt__"][0].value["loopguard"]
    print(f"   suspended on the checkpointer: {waiting['preview']!r} waits for request {waiting['request_id']}")
    print(f"   refunds so far: {len(REFUNDS)}")

    print("2. a person approves it from another process:")
    command = ["loopguard", "approvals", "approve", waiting["request_id"], "--db", str(db), "--by", "alice"]
    print("   $ " + " ".join(command))
    done = subprocess.run(
        [sys.executable, "-m", "loopguard_core", *command[1:]], capture_output=True, text=True, check=True
    )
    print("   " + done.stdout.strip())

    print("3. the agent is resumed from its checkpointer")
    result = agent.invoke(Command(resume="decided"), config)
    print(f"   agent: {result['messages'][-1].content}")
    print(f"   the refund ran {len(REFUNDS)} time(s): {REFUNDS}")
    ledger.close()
    return {"refunds": list(REFUNDS), "request_id": waiting["request_id"], "final": result["messages"][-1].content}


if __name__ == "__main__":
    report = main()
    sys.exit(0 if len(report["refunds"]) == 1 else 1)
