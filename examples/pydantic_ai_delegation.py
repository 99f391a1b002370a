"""Two Pydantic AI agents, one budget: an editor delegates to a researcher, both guarded by one breaker.

    python examples/pydantic_ai_delegation.py

The editor's tool runs the researcher with ``usage=ctx.usage`` (Pydantic AI's delegation pattern) through
``guarded_run``, which joins the editor's breaker run: loop memory, turns and tokens are shared, and the
ledger attributes every call to the agent that made it. No API key needed (scripted models); with
ANTHROPIC_API_KEY set, both agents use the real model.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.ledger import Ledger
from loopguard_pydantic_ai import guarded_run


def scripted(*steps: Any) -> Any:
    """A scripted model: each step is a (tool, args) call or a final text; the last step repeats."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "anthropic:claude-sonnet-4-6"
    state = {"i": 0}

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = steps[min(state["i"], len(steps) - 1)]
        state["i"] += 1
        usage = RequestUsage(input_tokens=600, output_tokens=60)
        if isinstance(step, str):
            return ModelResponse(parts=[TextPart(step)], usage=usage)
        return ModelResponse(parts=[ToolCallPart(step[0], step[1])], usage=usage)

    return FunctionModel(answer, model_name="scripted")


async def main_async(ledger_path: Path) -> dict[str, Any]:
    ledger = Ledger(ledger_path)
    breaker = Breaker(max_tokens=100_000, ledger=ledger)

    # The researcher looks something up and answers; the editor is never satisfied and asks again.
    researcher = Agent(
        scripted(("fetch_paper", {"doi": "10.1000/xyz"}), "The paper says X."),
        name="researcher",
    )

    @researcher.tool_plain
    def fetch_paper(doi: str) -> str:
        """Fetch a paper's abstract."""
        return f"Abstract of {doi}: X."

    editor = Agent(scripted(("ask_researcher", {"question": "What does the paper say?"})), name="editor")

    @editor.tool
    async def ask_researcher(ctx: RunContext[None], question: str) -> str:
        """Delegate a question to the researcher agent."""
        result = await guarded_run(researcher, question, breaker, usage=ctx.usage)
        return str(result.output)

    report: dict[str, Any] = {"stopped": False}
    try:
        await guarded_run(editor, "Write a summary of the paper.", breaker)
    except LoopGuardTripped as trip:
        report.update(stopped=True, reason=trip.reason, agent=trip.agent, tool=trip.tool)
        print(f"loopguard stopped the editor and its researcher: {trip}")

    rows = list(ledger.rows())
    per_agent = Counter((row.agent, row.origin) for row in rows)
    for (agent, origin), count in sorted(per_agent.items(), key=lambda item: (str(item[0][0]), item[0][1])):
        print(f"  ledger: {agent or '-':<10} {origin:<8} x{count}")
    verified = ledger.verify().ok
    print(f"  ledger verifies: {verified}; one run for both agents: {len({r.session_id for r in rows}) == 1}")
    report.update(per_agent={f"{a}/{o}": n for (a, o), n in per_agent.items()}, ledger_ok=verified)
    ledger.close()
    return report


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(main_async(Path(tmp) / "ledger.db"))


if __name__ == "__main__":
    main()
