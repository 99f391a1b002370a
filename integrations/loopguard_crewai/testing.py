"""A scripted LLM for testing CrewAI crews and agents: no network, no API key.

``ScriptedLLM`` is a real ``crewai.llms.base_llm.BaseLLM``. Each call answers the next step of its script: a
``("tool", {args})`` pair is a tool call, a list of pairs is parallel tool calls, a ``str`` is the final answer.
``loop=`` repeats one step after the script (a runaway agent) up to ``cap`` calls; one call more raises
:class:`~loopguard_core.testing.ScriptExhausted`, so a crew that was not stopped fails the test instead of
hanging it (CrewAI retries a failed task ``max_retry_limit`` times before the error reaches you).

- ``native=True`` (default) answers with OpenAI-style tool-call dicts, the shape CrewAI's native
  function-calling path executes; ``native=False`` answers in ReAct text (``Action:`` / ``Action Input:``,
  ``Final Answer:``), CrewAI's text path, one tool call per answer.
- Every call records ``prompt_tokens`` / ``completion_tokens`` the way CrewAI's own providers do, so
  ``llm.get_token_usage_summary()`` grows call by call; it emits CrewAI's LLM call events and runs the
  provider-side ``before_llm_call`` hook seam like a real provider.
- ``errors=[exc, ...]``: the first calls raise these instead of answering (a provider outage, a timeout), after
  emitting ``LLMCallFailedEvent`` the way CrewAI's providers do; they use up no script step.

The test "my crew is stopped when it loops"::

    import pytest
    from crewai import Agent, Crew, Task
    from crewai.tools import tool
    from loopguard_core import Breaker, LoopGuardTripped
    from loopguard_core.testing import BodyCounter
    from loopguard_crewai import guard_crew
    from loopguard_crewai.testing import ScriptedLLM

    def test_my_crew_is_stopped_when_it_loops() -> None:
        counter = BodyCounter()

        @tool("search")
        def search(q: str) -> str:
            '''Search the docs.'''
            counter.hit("search")
            return "nothing new"

        llm = ScriptedLLM(loop=("search", {"q": "refund policy"}))
        agent = Agent(role="support", goal="answer", backstory="careful", llm=llm, tools=[search])
        crew = Crew(agents=[agent], tasks=[Task(description="Refund?", expected_output="an answer", agent=agent)])
        with pytest.raises(LoopGuardTripped) as trip, guard_crew(Breaker()):
            crew.kickoff()
        assert trip.value.reason == "loop"
        assert counter.count("search") == 3  # the fourth identical call never ran

``llm.calls`` counts the calls the model really answered (a call refused pre-flight is not one) and
``llm.seen`` keeps the messages each of them was sent.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable
from typing import Any

from crewai.llms.base_llm import BaseLLM, llm_call_context
from crewai.utilities.types import LLMMessage
from pydantic import Field, PrivateAttr

from loopguard_core import estimate_tokens
from loopguard_core.testing import ModelScript, ScriptedTurn, ScriptExhausted, Step

__all__ = ["ScriptExhausted", "ScriptedLLM", "Step"]

_ids = itertools.count(1)


class ScriptedLLM(BaseLLM):
    """A CrewAI LLM that plays back a script of tool calls and final answers, with token usage.

    ``ScriptedLLM([("search", {"q": "a"}), "found it"])`` or ``ScriptedLLM(loop=("search", {...}))``; the other
    ``BaseLLM`` fields (``max_tokens``, ``model``, ...) work as usual.
    """

    model: str = "fake-scripted"
    script: list[Any] = Field(default_factory=list)
    loop: Any = None
    cap: int = 30
    native: bool = True
    prompt_tokens: int = 100
    completion_tokens: int = 20
    errors: list[Any] = Field(default_factory=list)

    _script: ModelScript = PrivateAttr()
    _seen: list[list[LLMMessage]] = PrivateAttr(default_factory=list)
    _failures: list[BaseException] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, script: Iterable[Step] = (), /, **data: Any) -> None:
        if "script" not in data:
            data["script"] = list(script)
        data.setdefault("model", "fake-scripted")  # BaseLLM's validator insists on an explicit model name
        super().__init__(**data)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._script = ModelScript(self.script, loop=self.loop, cap=self.cap, owner=f"ScriptedLLM {self.model!r}")
        for error in self.errors:
            if not isinstance(error, BaseException):
                raise TypeError(f"ScriptedLLM errors= holds exceptions to raise, got {error!r}")
        self._failures = list(self.errors)
        if not self.native:
            steps = [*self.script, *([] if self.loop is None else [self.loop])]
            if any(_parallel(step) for step in steps):
                raise ValueError(
                    "ScriptedLLM(native=False) answers in ReAct text, one tool call per answer: "
                    "script parallel tool calls with native=True"
                )

    @property
    def calls(self) -> int:
        """How many times the model really answered (a call refused pre-flight does not count)."""
        return self._script.calls

    @property
    def seen(self) -> list[list[LLMMessage]]:
        """The messages each answered call was sent, in order (a copy)."""
        with self._lock:
            return [list(messages) for messages in self._seen]

    def supports_function_calling(self) -> bool:
        return self.native

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 128_000

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        return estimate_tokens(messages)  # BaseLLM's fallback logs a warning on every call

    def call(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: Any | None = None,
    ) -> str | Any:
        from crewai.events.types.llm_events import LLMCallType

        with llm_call_context():
            formatted = self._format_messages(messages)
            self._invoke_before_llm_call_hooks(formatted, from_agent)
            self._emit_call_started_event(messages=formatted, tools=tools, from_task=from_task, from_agent=from_agent)
            with self._lock:
                failure = self._failures.pop(0) if self._failures else None
            if failure is not None:  # like CrewAI's providers: report the failed call, then raise
                self._emit_call_failed_event(
                    error=f"{type(failure).__name__}: {failure}", from_task=from_task, from_agent=from_agent
                )
                raise failure
            turn = self._script.next_turn()
            with self._lock:
                self._seen.append(list(formatted))
            self._track_token_usage_internal(
                {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens,
                    "total_tokens": self.prompt_tokens + self.completion_tokens,
                }
            )
            answer = self._render(turn)
            call_type = LLMCallType.TOOL_CALL if isinstance(answer, list) else LLMCallType.LLM_CALL
            self._emit_call_completed_event(
                response=answer, call_type=call_type, from_task=from_task, from_agent=from_agent, messages=formatted
            )
            return answer

    async def acall(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: Any | None = None,
    ) -> str | Any:
        return self.call(messages, tools, callbacks, available_functions, from_task, from_agent, response_model)

    def _render(self, turn: ScriptedTurn) -> str | list[dict[str, Any]]:
        if turn.text is not None:
            text = turn.text.split("Final Answer:", 1)[1].strip() if "Final Answer:" in turn.text else turn.text
            return text if self.native else f"Thought: I now know the final answer.\nFinal Answer: {text}"
        if self.native:
            return [
                {
                    "id": f"call_{next(_ids)}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for name, args in turn.tool_calls
            ]
        name, args = turn.tool_calls[0]  # the ReAct text format carries one action per answer
        return f"Thought: I should use a tool.\nAction: {name}\nAction Input: {json.dumps(args)}"


def _parallel(step: Any) -> bool:
    return isinstance(step, (list, tuple)) and len(step) > 1 and not isinstance(step[0], str)
