"""Two CrewAI agents hand a ticket back and forth; one shared loopguard breaker stops the ping-pong.

    python examples/crewai_crew.py [LEDGER_PATH]

Triage keeps delegating ticket T-1 to billing, billing keeps answering "that is a triage matter". Neither
agent loops on its own, but the crew does. One breaker across the crew sees the fourth identical hand-off
and refuses it; the ledger (SQLite, hash-chained) attributes every call to the agent that made it.

No API key needed (scripted models). With ANTHROPIC_API_KEY (or OPENAI_API_KEY) set, real models play both
agents (a real model may of course resolve the ticket instead of looping).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

for _name, _value in {
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}.items():
    os.environ.setdefault(_name, _value)

from crewai import LLM, Agent, Crew, Task  # noqa: E402

from loopguard_core import Breaker, LoopGuardTripped  # noqa: E402
from loopguard_core.ledger import Ledger  # noqa: E402
from loopguard_crewai import guard_crew  # noqa: E402

HANDOFF = {"task": "Refund ticket T-1", "context": "The customer wants a refund.", "coworker": "billing"}


def pick_llms() -> tuple[Any, Any]:
    for key, model in (("ANTHROPIC_API_KEY", "anthropic/claude-sonnet-4-6"), ("OPENAI_API_KEY", "openai/gpt-4o-mini")):
        if os.environ.get(key):
            return LLM(model=model, max_tokens=1024), LLM(model=model, max_tokens=1024)
    from loopguard_crewai.testing import ScriptedLLM

    triage = ScriptedLLM(loop=("delegate_work_to_coworker", HANDOFF), max_tokens=1024)
    billing = ScriptedLLM(script=["That is a triage matter; please send it back to triage."] * 20)
    return triage, billing


def main(ledger_path: str | None = None) -> dict[str, Any]:
    path = ledger_path or str(Path(tempfile.mkdtemp(prefix="loopguard-crew-")) / "ledger.db")
    ledger = Ledger(path)
    triage_llm, billing_llm = pick_llms()
    triage = Agent(
        role="triage",
        goal="Route ticket T-1 to whoever can settle it.",
        backstory="Front desk.",
        llm=triage_llm,
        allow_delegation=True,
    )
    billing = Agent(role="billing", goal="Settle billing questions.", backstory="Accounts team.", llm=billing_llm)
    crew = Crew(
        agents=[triage, billing],
        tasks=[Task(description="Resolve ticket T-1: a refund request.", expected_output="a resolution", agent=triage)],
    )

    breaker = Breaker(max_turns=30, ledger=ledger)  # one breaker for the whole crew
    report: dict[str, Any] = {"stopped": False, "ledger": path}
    try:
        with guard_crew(breaker):
            print(f"The crew finished on its own: {crew.kickoff()}")
    except LoopGuardTripped as trip:
        report.update(stopped=True, reason=trip.reason, agent=trip.agent, tool=trip.tool, message=str(trip))
        print(f"\nloopguard stopped the crew: {trip}")

    rows = list(ledger.rows(breaker.session_id))
    calls = Counter((row.agent, row.origin) for row in rows)
    print(f"\nledger {path} (session {breaker.session_id}):")
    for (agent, origin), count in sorted(calls.items(), key=lambda item: (str(item[0][0]), item[0][1])):
        print(f"  {agent or '-':<8} {origin:<8} {count} row(s)")
    verified = ledger.verify()
    print(f"  chain verified: {verified.ok}")
    ledger.close()
    report.update(rows={f"{agent}/{origin}": n for (agent, origin), n in calls.items()}, verified=verified.ok)
    return report


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
