"""End to end: a LangChain ``create_agent`` run of 50 distinct tool calls with a scripted fake model,
unguarded vs guarded by ``loopguard_langchain.LoopGuardMiddleware(Breaker())``.

``python -m benchmarks.end_to_end [--smoke] [--json PATH]``. Rounds alternate the two agents in a
random order; the figure is the median wall time of a whole run and the ratio guarded / unguarded
(goal <= 1.05x). The fake model costs nothing, so this is the worst case: with a real model each turn
takes 10^5-10^6 times longer and the guard's share vanishes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

CALLS = 50


def _passthrough() -> Any:
    """A middleware with the same hooks as LoopGuardMiddleware that does nothing: the framework's own cost."""
    from langchain.agents.middleware import AgentMiddleware

    class Passthrough(AgentMiddleware):  # type: ignore[type-arg]
        def before_agent(self, state: Any, runtime: Any) -> None:
            return None

        def after_agent(self, state: Any, runtime: Any) -> None:
            return None

        def wrap_tool_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

        def wrap_model_call(self, request: Any, handler: Any) -> Any:
            return handler(request)

    return Passthrough()


def _agent(guarded: bool | str) -> Any:
    from langchain.agents import create_agent
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return f"value of {key}"

    class ScriptedModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            done = sum(1 for m in messages if getattr(m, "type", "") == "tool")
            if done >= CALLS:
                message = AIMessage(content="done")
            else:
                message = AIMessage(
                    content="", tool_calls=[{"name": "lookup", "args": {"key": f"k{done}"}, "id": f"c{done}"}]
                )
            return ChatResult(generations=[ChatGeneration(message=message)])

    middleware: list[Any] = []
    if guarded == "passthrough":
        middleware = [_passthrough()]
    elif guarded:
        from loopguard_core import Breaker
        from loopguard_langchain import LoopGuardMiddleware

        middleware = [LoopGuardMiddleware(Breaker())]
    return create_agent(ScriptedModel(), tools=[lookup], middleware=middleware)


def _once(agent: Any) -> float:
    start = time.perf_counter()
    out = agent.invoke({"messages": [{"role": "user", "content": "go"}]})
    seconds = time.perf_counter() - start
    tools = sum(1 for m in out["messages"] if m.type == "tool")
    if tools != CALLS:
        raise RuntimeError(f"expected {CALLS} tool calls, the run made {tools}")
    return seconds


def run(*, smoke: bool = False, seed: int = 6) -> dict[str, Any]:
    try:
        agents = {"unguarded": _agent(False), "passthrough": _agent("passthrough"), "guarded": _agent(True)}
    except ImportError as exc:
        return {"pending": f"the LangChain adapter or langchain is not importable ({exc})"}
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {k: [] for k in agents}
    for key in agents:
        _once(agents[key])  # warm up
    for _ in range(3 if smoke else 25):
        order = list(agents)
        rng.shuffle(order)
        for key in order:
            samples[key].append(_once(agents[key]))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "calls": CALLS,
        "rounds": len(samples["guarded"]),
        "median_seconds": med,
        "p25_p75": {k: statistics.quantiles(v, n=4)[::2] if len(v) > 1 else v for k, v in samples.items()},
        "ratio": round(med["guarded"] / med["unguarded"], 3),
        "ratio_vs_passthrough": round(med["guarded"] / med["passthrough"], 3),
    }


def render(result: dict[str, Any]) -> str:
    if "pending" in result:
        return f"end to end: {result['pending']}"
    m = result["median_seconds"]
    return (
        f"create_agent, {result['calls']} tool calls, {result['rounds']} rounds: "
        f"unguarded {m['unguarded'] * 1000:.1f} ms,"
        f" guarded {m['guarded'] * 1000:.1f} ms, ratio {result['ratio']}x (goal <= 1.05x);"
        f" a pass-through middleware with the same hooks {m['passthrough'] * 1000:.1f} ms"
        f" (guarded / pass-through {result['ratio_vs_passthrough']}x)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    result = run(smoke=args.smoke)
    print(render(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
