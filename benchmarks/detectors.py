"""The detectors compared in the detection benchmark, each driven the way its users run it.

A detector turns a scenario into one :class:`~benchmarks._frameworks.Step` per scripted call. Guards that
one object can cover a whole crew (loopguard, agentguard47) see the whole trace; framework-native limits
are per agent, so each agent of a multi-agent trace runs in its own agent loop and the crew stops at the
first agent that is stopped. Peers that are not installed are reported as unavailable, never skipped
silently.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loopguard_core import Breaker
from loopguard_core.testing import ScriptedCall

from ._corpus import Case
from ._frameworks import Step, run_agent_executor, run_create_agent, run_pydantic_ai

__all__ = [
    "CREWAI_MAX_ITER",
    "Detector",
    "Outcome",
    "all_detectors",
    "loopguard_config",
    "loopguard_default",
    "outcome_of",
]

CREWAI_MAX_ITER = 25  # crewai Agent.max_iter default (base_agent.py)
HALTS = (Step.HALT_TOOL, Step.HALT_MODEL)


@dataclass(frozen=True)
class Outcome:
    """Where a detector stopped a trace, in the trace's own 1-based call numbers."""

    refused_at: int | None  # first call refused (its body never ran); None if none was
    stopped_at: int | None  # the call at which the run ended; None if it ran to the end of the trace
    executed: int  # tool bodies that ran
    turns: int  # model turns spent proposing calls (a refused pre-flight model call spends none)
    reason: str = ""
    steps: tuple[Step, ...] = ()


def outcome_of(steps: Sequence[Step], reason: str = "") -> Outcome:
    refused = next((i for i, s in enumerate(steps, 1) if s not in (Step.RAN, Step.UNREACHED)), None)
    stopped = next((i for i, s in enumerate(steps, 1) if s in HALTS), None)
    return Outcome(
        refused_at=refused,
        stopped_at=stopped,
        executed=sum(s is Step.RAN for s in steps),
        turns=sum(s in (Step.RAN, Step.BLOCKED, Step.HALT_TOOL) for s in steps),
        reason=reason,
        steps=tuple(steps),
    )


Driver = Callable[[Sequence[ScriptedCall]], "list[Step] | tuple[list[Step], str]"]


@dataclass(frozen=True)
class Detector:
    """A named way to run a trace. ``per_agent``: one instance per agent of a crew (framework limits)."""

    key: str
    label: str
    config: str
    driver: Driver
    per_agent: bool = False
    unavailable: str | None = None  # why it cannot run here (a missing package), if so

    def run(self, case: Case) -> Outcome:
        calls = case.scenario.calls
        if not self.per_agent:
            steps, reason = _split(self.driver(calls))
            return outcome_of(steps, reason)
        agents: dict[str | None, list[int]] = {}
        for index, call in enumerate(calls):
            agents.setdefault(call.agent, []).append(index)
        merged = [Step.UNREACHED] * len(calls)
        reason = ""
        for positions in agents.values():
            steps, why = _split(self.driver([calls[i] for i in positions]))
            reason = reason or why
            for position, step in zip(positions, steps):
                merged[position] = step
        # The crew stops with its first stopped agent: nothing after that call happens.
        halt = next((i for i, s in enumerate(merged) if s in HALTS), None)
        if halt is not None:
            merged[halt + 1 :] = [Step.UNREACHED] * (len(merged) - halt - 1)
        return outcome_of(merged, reason)


def _split(result: list[Step] | tuple[list[Step], str]) -> tuple[list[Step], str]:
    if isinstance(result, tuple):
        return result
    return result, ""


def _guarded(calls: Sequence[ScriptedCall], check: Callable[[ScriptedCall], None], after: Any = None) -> Any:
    """A guard object checked before every call; a raise ends the run (as the peers' handlers do)."""
    steps: list[Step] = []
    reason = ""
    for call in calls:
        if reason:  # the run has ended
            steps.append(Step.UNREACHED)
            continue
        try:
            check(call)
        except Exception as exc:
            steps.append(Step.HALT_TOOL)
            reason = str(getattr(exc, "reason", "") or type(exc).__name__)
            continue
        steps.append(Step.RAN)
        if after is not None:
            after(call)
    return steps, reason


# -- loopguard -----------------------------------------------------------------------------------
def _loopguard(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
    breaker = Breaker()

    def after(call: ScriptedCall) -> None:
        failed = call.error not in (False, None, "")
        error = (call.error if isinstance(call.error, str) else str(call.result)) if failed else None
        breaker.after_tool(call.tool, call.args, result=None if failed else call.result, error=error, agent=call.agent)

    def check(call: ScriptedCall) -> None:
        breaker.before_tool(call.tool, call.args, agent=call.agent)

    steps: list[Step]
    steps, reason = _guarded(calls, check, after)
    return steps, reason


def loopguard_config() -> str:
    """``Breaker()``'s loop rules as they are in the installed version (read from the defaults, not typed)."""
    limits = Breaker().limits
    loop = limits.loop
    return (
        f"Breaker() defaults: max_repeats={loop.max_repeats} (same call, same answer), "
        f"similarity={loop.similarity} (paraphrase), max_empty_results={loop.max_empty_results} (stall), "
        f"poll_max_repeats={loop.poll_max_repeats} for tools named like a status poll, "
        f"max_consecutive_failures={limits.max_consecutive_failures}"
    )


def loopguard_default() -> Detector:
    return Detector("loopguard", "loopguard", loopguard_config(), _loopguard)


# -- agentguard47 --------------------------------------------------------------------------------
def _agentguard(factory: Callable[[], Any]) -> Driver:
    def driver(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
        guard = factory()
        args = lambda c: c.args if isinstance(c.args, dict) else {"input": c.args}  # noqa: E731
        result: tuple[list[Step], str] = _guarded(calls, lambda c: guard.check(c.tool, args(c)))
        return result

    return driver


def _agentguard_detectors() -> list[Detector]:
    missing = None if importlib.util.find_spec("agentguard") else "pip install agentguard47==2.0.0"
    if missing:
        factory_loop: Callable[[], Any] = lambda: None  # noqa: E731
        factory_fuzzy: Callable[[], Any] = factory_loop
    else:
        from agentguard import FuzzyLoopGuard, LoopGuard

        factory_loop, factory_fuzzy = LoopGuard, FuzzyLoopGuard
    return [
        Detector(
            "agentguard_loop",
            "agentguard47 LoopGuard",
            "LoopGuard() defaults: max_repeats=3, window=6",
            _agentguard(factory_loop),
            unavailable=missing,
        ),
        Detector(
            "agentguard_fuzzy",
            "agentguard47 FuzzyLoopGuard",
            "FuzzyLoopGuard() defaults: max_tool_repeats=5, max_alternations=3, window=10",
            _agentguard(factory_fuzzy),
            unavailable=missing,
        ),
    ]


# -- CrewAI --------------------------------------------------------------------------------------
def _crewai(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
    """One CrewAI agent: its real ``ToolUsage._check_tool_repeated_usage`` plus ``max_iter``.

    The repeated-usage rule refuses a call identical to the agent's last *successful* call and answers the
    model "I tried reusing the same input, I must stop using this action input..."; the run goes on
    (BLOCKED). ``max_iter`` (25) makes the next iteration a forced final answer (HALT_MODEL).
    """
    from crewai.agents.tools_handler import ToolsHandler
    from crewai.tools.tool_calling import ToolCalling
    from crewai.tools.tool_usage import ToolUsage

    handler = ToolsHandler()
    usage = ToolUsage(tools_handler=handler, tools=[], task=None, function_calling_llm=None)  # type: ignore[arg-type]
    steps: list[Step] = []
    reason = ""
    for iteration, call in enumerate(calls):
        if Step.HALT_MODEL in steps:
            steps.append(Step.UNREACHED)
            continue
        if iteration >= CREWAI_MAX_ITER:
            steps.append(Step.HALT_MODEL)
            reason = reason or "max_iter"
            continue
        calling = ToolCalling(tool_name=call.tool, arguments=call.args if isinstance(call.args, dict) else None)
        if usage._check_tool_repeated_usage(calling=calling):
            steps.append(Step.BLOCKED)
            reason = reason or "repeated_usage"
            continue
        steps.append(Step.RAN)
        if call.error in (False, None, ""):  # a raising tool never reaches on_tool_use
            handler.on_tool_use(calling=calling, output=call.result)
    return steps, reason


# -- frameworks ------------------------------------------------------------------------------------
TOOL_CALL_LIMIT = {"thread_limit": 20, "run_limit": 10}  # ToolCallLimitMiddleware docstring example
MODEL_CALL_LIMIT = {"thread_limit": 10, "run_limit": 5}  # ModelCallLimitMiddleware docstring example
EXECUTOR_MAX_ITERATIONS = 15  # AgentExecutor default
PYDANTIC_TOOL_CALLS_LIMIT = 10


def _framework_detectors() -> list[Detector]:
    out: list[Detector] = []
    has = importlib.util.find_spec

    def tool_limit(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
        from langchain.agents.middleware import ToolCallLimitMiddleware

        return run_create_agent(calls, [ToolCallLimitMiddleware(**TOOL_CALL_LIMIT)]), "tool_call_limit"

    def model_limit(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
        from langchain.agents.middleware import ModelCallLimitMiddleware

        return run_create_agent(calls, [ModelCallLimitMiddleware(**MODEL_CALL_LIMIT)]), "model_call_limit"

    def executor(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
        return run_agent_executor(calls, max_iterations=EXECUTOR_MAX_ITERATIONS), "max_iterations"

    def pydantic_default(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
        from pydantic_ai.usage import UsageLimits

        return run_pydantic_ai(calls, UsageLimits()), "request_limit"

    def pydantic_tools(calls: Sequence[ScriptedCall]) -> tuple[list[Step], str]:
        from pydantic_ai.usage import UsageLimits

        return run_pydantic_ai(calls, UsageLimits(tool_calls_limit=PYDANTIC_TOOL_CALLS_LIMIT)), "tool_calls_limit"

    lc = None if has("langchain") else "pip install langchain==1.4.7"
    lcc = None if has("langchain_classic") else "pip install langchain-classic==1.0.8"
    pai = None if has("pydantic_ai") else "pip install pydantic-ai-slim==2.68.0"
    crew = None if has("crewai") else "pip install crewai==1.15.30"
    tl, ml = TOOL_CALL_LIMIT, MODEL_CALL_LIMIT
    out += [
        Detector(
            "crewai",
            "CrewAI repeated-usage rule",
            f"ToolUsage._check_tool_repeated_usage + max_iter={CREWAI_MAX_ITER} (defaults)",
            _crewai,
            per_agent=True,
            unavailable=crew,
        ),
        Detector(
            "lc_tool_limit",
            "LangChain ToolCallLimitMiddleware",
            f"thread_limit={tl['thread_limit']}, run_limit={tl['run_limit']}, exit_behavior='continue' (default)",
            tool_limit,
            per_agent=True,
            unavailable=lc,
        ),
        Detector(
            "lc_model_limit",
            "LangChain ModelCallLimitMiddleware",
            f"thread_limit={ml['thread_limit']}, run_limit={ml['run_limit']}, exit_behavior='end' (default)",
            model_limit,
            per_agent=True,
            unavailable=lc,
        ),
        Detector(
            "agent_executor",
            "LangChain AgentExecutor",
            f"max_iterations={EXECUTOR_MAX_ITERATIONS} (default)",
            executor,
            per_agent=True,
            unavailable=lcc,
        ),
        Detector(
            "pydantic_default",
            "Pydantic AI UsageLimits",
            "UsageLimits() defaults: request_limit=50",
            pydantic_default,
            per_agent=True,
            unavailable=pai,
        ),
        Detector(
            "pydantic_tools",
            "Pydantic AI UsageLimits(tool_calls_limit)",
            f"request_limit=50, tool_calls_limit={PYDANTIC_TOOL_CALLS_LIMIT}",
            pydantic_tools,
            per_agent=True,
            unavailable=pai,
        ),
    ]
    return out


def all_detectors() -> list[Detector]:
    return [loopguard_default(), *_agentguard_detectors(), *_framework_detectors()]
