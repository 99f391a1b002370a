"""Through real framework runtimes: loopguard's events land on the span that is current when the guard runs,
the framework's own span where it traces (Pydantic AI's ``execute_tool`` spans), else the application's."""

from __future__ import annotations

import pytest

from loopguard_core import Breaker, LoopGuardTripped
from loopguard_core.otel import CALLS, CHECK_EVENT, RECORD_EVENT, TRIP_EVENT, Telemetry
from loopguard_core.testing import BodyCounter

from .conftest import Otel

ARG_MARKER = "ARG-MARKER-77d0"


def test_langchain_create_agent_events_join_the_applications_span(otel: Otel) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    from loopguard_langchain import LoopGuardMiddleware
    from loopguard_langchain.testing import ScriptedChatModel

    counter = BodyCounter()

    @tool
    def search(q: str) -> str:
        """Search the docs."""
        counter.hit("search")
        return "nothing new"

    breaker = Breaker()
    Telemetry(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider).attach(breaker)
    model = ScriptedChatModel(loop=("search", {"q": ARG_MARKER}))
    agent = create_agent(model, [search], middleware=[LoopGuardMiddleware(breaker)])
    with otel.tracer.start_as_current_span("invoke_agent support"), pytest.raises(LoopGuardTripped) as trip:
        agent.invoke({"messages": [{"role": "user", "content": "refund?"}]})

    assert trip.value.reason == "loop" and counter.count("search") == 3
    span = otel.span("invoke_agent support")
    # LangGraph runs the tool on a worker thread: the context (and so the current span) went with it
    tool_steps = [
        (e.name, (e.attributes or {}).get("loopguard.verdict"))
        for e in span.events
        if (e.attributes or {}).get("gen_ai.tool.name") == "search"
    ]
    assert tool_steps == [(CHECK_EVENT, "admitted"), (RECORD_EVENT, "recorded")] * 3 + [
        (CHECK_EVENT, "refused"),
        (TRIP_EVENT, "refused"),
    ]
    model_steps = [e for e in span.events if (e.attributes or {}).get("gen_ai.operation.name") == "chat"]
    assert model_steps and all((e.attributes or {})["gen_ai.request.model"] for e in model_steps)
    assert (span.events[-1].attributes or {})["loopguard.rule"] == "repeat"
    assert otel.total(CALLS, **{"gen_ai.tool.name": "search"}) == 4
    assert ARG_MARKER not in otel.everything()


def test_pydantic_ai_events_land_on_its_own_execute_tool_spans(otel: Otel) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.capabilities import Instrumentation
    from pydantic_ai.models.instrumented import InstrumentationSettings

    from loopguard_pydantic_ai import LoopGuardCapability
    from loopguard_pydantic_ai.testing import ScriptedModel

    breaker = Breaker()
    Telemetry(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider).attach(breaker)
    # Pydantic AI's own OpenTelemetry instrumentation (include_content=False: it would export arguments itself)
    traced = Instrumentation(
        InstrumentationSettings(
            tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, include_content=False
        )
    )
    agent = Agent(
        ScriptedModel(loop=("search", {"q": ARG_MARKER})), capabilities=[LoopGuardCapability(breaker), traced]
    )

    @agent.tool_plain
    def search(q: str) -> str:
        return "nothing new"

    with pytest.raises(LoopGuardTripped) as trip:
        agent.run_sync("refund?")
    assert trip.value.reason == "loop"

    tool_spans = [s for s in otel.spans() if s.name == "execute_tool search"]
    assert len(tool_spans) == 4
    checks = [
        [(e.attributes or {}).get("loopguard.verdict") for e in s.events if e.name == CHECK_EVENT] for s in tool_spans
    ]
    assert checks == [["admitted"], ["admitted"], ["admitted"], ["refused"]]
    refused = tool_spans[-1]
    trips = [e for e in refused.events if e.name == TRIP_EVENT]
    assert len(trips) == 1 and (trips[0].attributes or {})["loopguard.reason"] == "loop"
    assert (refused.attributes or {})["gen_ai.tool.name"] == "search"  # the framework's span, the same names
    # the trip escaped the tool span: the framework recorded it as the span's exception and error status
    assert "exception" in [e.name for e in refused.events]
    assert refused.status.status_code.name == "ERROR"
    chat_spans = [s for s in otel.spans() if (s.attributes or {}).get("gen_ai.operation.name") == "chat"]
    assert chat_spans and all(CHECK_EVENT in [e.name for e in s.events] for s in chat_spans)
    loopguard_events = [
        dict(e.attributes or {}) for s in otel.spans() for e in s.events if e.name.startswith("loopguard.")
    ]
    assert ARG_MARKER not in repr(loopguard_events)
