"""``guard_node``: a LangGraph node, placed between the model node and the tools node, that checks the
pending tool calls of the last AIMessage before any of them runs.

Wiring (the guard routes with ``Command``, so it needs ``destinations`` and no static edge out of it)::

    graph.add_node("guard", guard_node(breaker, on_trip="end"), destinations=("tools", END))
    graph.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge("tools", "agent")

- ``on_trip="raise"``: ``LoopGuardTripped`` reaches the caller of ``invoke``/``ainvoke``/``stream``.
- ``on_trip="end"``: every pending tool call gets an error ToolMessage (a provider rejects a history with an
  unanswered call), a final AIMessage names the trip, and the graph goes to END.
- ``on_trip="interrupt"``: ``langgraph.types.interrupt`` pauses the run for a person (needs a checkpointer;
  refused without one). Resume with ``graph.invoke(Command(resume="approve"), config)`` to reset the breaker
  and run the calls, or ``Command(resume="deny")`` to end as above. In this mode the breaker run is the
  thread's (``thread_id``), so a resumed run keeps its counts.
- ``on_trip="steer"``: every pending call is checked; each refused one is answered with an error ToolMessage
  carrying ``Breaker.steer``'s text (its body never runs), the admitted ones go to ``tools_node`` alone (one
  ``Send`` each, the way ``create_agent`` dispatches calls), and when all were refused the graph goes straight
  back to ``model_node`` (default ``"agent"``; list it in the guard's ``destinations``). A budget ceiling or the
  ``max_refusals`` stop is raised as in ``"raise"``.

Approval gates, in every mode: a gated call (``ToolPolicy(irreversible=True)``) interrupts the graph with the
approval request when it has a checkpointer (resume with ``Command(resume=...)`` once a person decided; approved
calls with edited arguments go to ``tools_node`` with ``Send``), else ``ApprovalRequired`` reaches the caller. A
rejection is a trip like any other (``"interrupt"`` ends the run on it rather than asking again). The node sees
calls, not tool objects: a gate declared in a tool's ``metadata`` needs ``guard_node(..., tools=tools)`` (or
``Breaker(tools=...)``); ``guarded_tool_node`` reads its own tools' metadata and asks any gate itself.

The node also reports the results of the calls it let through (the ToolMessages it finds on its next visit),
so loop detection sees results with a plain ``ToolNode``. With ``guarded_tool_node`` on the same breaker
nothing is counted twice: both pass the tool call id, and the tool node runs a call the guard admitted in the
thread's run (``on_trip="interrupt"``) in that run too.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END
from langgraph.types import Command, Send, interrupt

from loopguard_core import ApprovalRequired, Breaker, LoopGuardTripped
from loopguard_core.runs import enter_scope, leave_scope
from loopguard_langchain._approval import acheck_tool, check_tool, declare, resumed_run
from loopguard_langchain._common import agent_name, tool_outcome
from loopguard_langchain._scope import InvocationRuns, config_invocation, current_invocation
from loopguard_langchain._steer import steer_lock
from loopguard_langchain.middleware import refused_tool_message, steered_tool_message, stop_message

from ._handoff import Admitted, Handoff, thread_run

__all__ = ["guard_node"]

_MODES = ("raise", "end", "interrupt", "steer")
_MEMORY = 4_096
_CHECKPOINTER_KEY = "__pregel_checkpointer"  # langgraph._internal._constants.CONFIG_KEY_CHECKPOINTER
# An Admitted without its generated __new__ (a Python call): one per admitted call.
_new_admitted: Callable[[type[Admitted], tuple[Any, ...]], Admitted] = tuple.__new__


class _GuardNode:
    def __init__(self, breaker: Breaker, on_trip: str, tools_node: str, messages_key: str, model_node: str) -> None:
        self.breaker = breaker
        self.on_trip = on_trip
        self.tools_node = tools_node
        self.model_node = model_node
        self.messages_key = messages_key
        self.runs = InvocationRuns.of(breaker)
        self.handoff = Handoff.of(breaker)  # the calls admitted whose outcome is not reported yet (see _handoff)
        self._lock = threading.Lock()
        self._awaiting: OrderedDict[tuple[str, str], LoopGuardTripped] = OrderedDict()  # (thread, call id)
        # How far each conversation was read for results: id(first message) -> [first, count, last message].
        self._scanned: OrderedDict[int, list[Any]] = OrderedDict()

    # -- helpers ----------------------------------------------------------------------------------
    def _messages(self, state: Any) -> Sequence[Any]:
        if type(state) is dict or isinstance(state, Mapping):  # (a dict skips the ABC check: every turn)
            return state.get(self.messages_key) or []
        if isinstance(state, Sequence):
            return state
        return getattr(state, self.messages_key, None) or []

    def _scope_key(self, config: RunnableConfig) -> tuple[Any, str | None]:
        if self.on_trip == "interrupt":
            thread = thread_run(config)
            if thread is not None:
                return thread
        key, _ = current_invocation(config=config)
        return key, None

    def _check_checkpointer(self, config: RunnableConfig) -> str:
        configurable = config.get("configurable") or {}
        if configurable.get(_CHECKPOINTER_KEY) is None or configurable.get("thread_id") is None:
            raise ValueError(
                "guard_node(on_trip='interrupt') needs a checkpointer and a thread: compile the graph with "
                "graph.compile(checkpointer=InMemorySaver()) (or a persistent saver) and invoke it with "
                "config={'configurable': {'thread_id': ...}}. Without one, interrupt() cannot be resumed."
            )
        return str(configurable["thread_id"])

    def _unread(self, messages: Sequence[Any]) -> int:
        """Where the messages added since this node last read this conversation start (0: all of them, the first
        time or when the history was rewritten): the results it looks for arrive after the calls it admitted, so a
        long run does not re-read its whole history on every visit. Called under the lock."""
        if not messages:
            return 0
        first, n = messages[0], len(messages)
        slot = id(first)
        mark = self._scanned.get(slot)
        if mark is None:
            self._scanned[slot] = [first, n, messages[n - 1]]  # holds first: its id stays its own
            while len(self._scanned) > _MEMORY:
                self._scanned.popitem(last=False)
            return 0
        seen = mark[1]
        start = seen if 0 < seen <= n and messages[seen - 1] is mark[2] else 0
        mark[1], mark[2] = n, messages[n - 1]  # (in place: the usual visit allocates nothing)
        if next(reversed(self._scanned)) != slot:  # (the conversation read last stays put)
            self._scanned.move_to_end(slot)
        return start

    def _report(self, messages: Sequence[Any]) -> list[tuple[str, Any, str | None, str, Any, Any]]:
        """Results of calls this node let through earlier whose outcome nobody reported yet (their ToolMessages are
        in the state now; ``guarded_tool_node`` reports its own as its body returns, so usually none is left). Called
        inside the run."""
        with self._lock:  # (the mark moves on every visit: an old answer to a reused id is never read as new)
            start = self._unread(messages)
        if not self.handoff.calls:  # nothing to look for (guarded_tool_node reported every call it ran)
            return []
        answers: dict[str, ToolMessage] = {}
        for message in messages[start:] if start else messages:
            if isinstance(message, ToolMessage) and isinstance(message.tool_call_id, str):
                answers.setdefault(message.tool_call_id, message)  # (the first answer to an id is its outcome)
        if not answers:
            return []
        found = []
        for call_id, call in self.handoff.take(self.breaker.session_id, list(answers)):
            result, error = tool_outcome(answers[call_id])
            found.append((call.name, call.args, call.agent, call_id, result, error))
        return found

    def _admit(
        self, call: Mapping[str, Any], agent: str | None, run: str | None = None, *, as_it_is: bool = False
    ) -> None:
        """Remember an admitted call, to report its outcome (called inside the run: ``run``, the id of the run
        entered, else the breaker's current one). ``as_it_is``: its check admitted it with no approval or edit, so
        ``guarded_tool_node`` need not check it again (not so for calls a person let through unchecked)."""
        admitted = _new_admitted(Admitted, (call["name"], call.get("args") or {}, agent, as_it_is))
        self.handoff.admit(self.breaker.session_id if run is None else run, call.get("id"), admitted)

    def _stop(self, calls: Sequence[Mapping[str, Any]], trip: LoopGuardTripped) -> Command[Any]:
        answers: list[Any] = [refused_tool_message(trip, dict(call)) for call in calls]
        return Command(goto=END, update={self.messages_key: [*answers, stop_message(trip)]})

    def _decide(
        self, calls: Sequence[Mapping[str, Any]], trip: LoopGuardTripped, thread: str, agent: str | None
    ) -> Command[Any]:
        payload = {
            "loopguard": {
                "reason": trip.reason,
                "message": str(trip),
                "agent": trip.agent,
                "tool": trip.tool,
                "tool_calls": [{"name": c["name"], "id": c.get("id")} for c in calls],
                "resume_with": ["approve", "deny"],
            }
        }
        decision = interrupt(payload)
        keys = [(thread, c.get("id") or "") for c in calls]
        if decision == "approve":
            with self._lock:
                for key in keys:
                    self._awaiting.pop(key, None)
            self.breaker.reset()
            for call in calls:  # a person approved exactly these calls: they run without a second check
                self._admit(call, agent)
            return Command(goto=self.tools_node)
        if decision == "deny":
            with self._lock:
                for key in keys:
                    self._awaiting.pop(key, None)
            return self._stop(calls, trip)
        raise ValueError(f"resume a loopguard interrupt with Command(resume='approve') or 'deny', got {decision!r}")

    def _steered(self, admitted: Sequence[Mapping[str, Any]], answers: Sequence[ToolMessage]) -> Command[Any]:
        """Refused calls answered for the model; the admitted ones (if any) run, each sent on its own."""
        update = {self.messages_key: list(answers)}
        if not admitted:
            return Command(goto=self.model_node, update=update)
        sends = [Send(self.tools_node, [{**call, "type": "tool_call"}]) for call in admitted]
        return Command(goto=sends, update=update)

    # -- the node ---------------------------------------------------------------------------------
    def _prepare(
        self, state: Any, config: RunnableConfig
    ) -> tuple[Any, str | None, str | None, Sequence[Any], Sequence[Mapping[str, Any]]]:
        """``(invocation key, thread, agent, messages, pending calls)`` of this visit."""
        if self.on_trip == "interrupt":
            thread: str | None = self._check_checkpointer(config)
            key, run_id = self._scope_key(config)
            if run_id is not None:  # a thread's run, under its own id (else the node's scope opens one on first sight)
                self.runs.touch(key, run_id)
        else:
            thread, key = None, config_invocation(config)
            if key is None:  # no runtime in the config: the running node's
                key = current_invocation(config=config)[0]
        messages = self._messages(state)
        last = messages[-1] if messages else None
        calls = getattr(last, "tool_calls", None) or ()  # (read, never changed: no copy)
        return key, thread, agent_name(config.get("metadata") or {}), messages, calls

    def _awaited(self, thread: str | None, calls: Sequence[Mapping[str, Any]]) -> LoopGuardTripped | None:
        if thread is None:
            return None
        with self._lock:
            for call in calls:
                trip = self._awaiting.get((thread, call.get("id") or ""))
                if trip is not None:
                    return trip
        return None

    def _await(self, thread: str | None, calls: Sequence[Mapping[str, Any]], trip: LoopGuardTripped) -> None:
        if thread is None:
            return
        with self._lock:
            for call in calls:
                self._awaiting[(thread, call.get("id") or "")] = trip
            while len(self._awaiting) > _MEMORY:
                self._awaiting.popitem(last=False)

    def _after_trip(
        self, calls: Sequence[Mapping[str, Any]], trip: LoopGuardTripped, thread: str | None, agent: str | None
    ) -> Command[Any]:
        if self.on_trip == "raise":
            raise trip
        if self.on_trip == "end" or thread is None or trip.reason == "approval_rejected":
            return self._stop(calls, trip)  # a person's rejection is final: not asked again as a trip
        self._await(thread, calls, trip)
        return self._decide(calls, trip, thread, agent)

    def _adopt(self, key: Any, calls: Sequence[Mapping[str, Any]], config: RunnableConfig) -> None:
        """A resumed invocation whose gated call asked for approval continues the run that asked."""
        for call in calls:
            declared = self.breaker.tool_policy(call["name"])
            if declared.irreversible:
                found = resumed_run(self.breaker, call["name"], call.get("id"))
                if found is not None:
                    _, is_root = current_invocation(config=config)
                    self.runs.touch(key)  # (as before adopting: the adopted run keeps the entry's depth and owner)
                    self.runs.adopt(key, found, is_root=is_root)
                    return

    def __call__(self, state: Any, config: RunnableConfig) -> Command[Any]:
        key, thread, agent, messages, calls = self._prepare(state, config)
        self._adopt(key, calls, config)
        run = self.runs.run_for(key, touch=True)
        entered = None if run is None else enter_scope(self.breaker, run)
        try:
            for name, args, who, call_id, result, error in self._report(messages):
                self.breaker.after_tool(name, args, result=result, error=error, agent=who, call_id=call_id)
            if not calls:
                return Command(goto=END)
            if self.on_trip == "steer":
                admitted, answers = [], []
                for call in calls:
                    with steer_lock(self.breaker):  # parallel graphs over one breaker check on other threads
                        try:
                            approval = check_tool(
                                self.breaker, call["name"], call.get("args") or {}, agent, call.get("id")
                            )
                        except LoopGuardTripped as refused:  # steer raises when the run must stop
                            answers.append(steered_tool_message(refused, self.breaker.steer(refused), call))
                            continue
                    self._admit(call, agent, run, as_it_is=approval is None)
                    admitted.append(_edited(call, approval))
                return self._steered(admitted, answers) if answers else self._go_all(calls, admitted)
            trip = None if thread is None else self._awaited(thread, calls)  # a resumed interrupt: the person decides
            admitted = []
            if trip is None:
                try:
                    for call in calls:
                        approval = check_tool(self.breaker, call["name"], call.get("args") or {}, agent, call.get("id"))
                        self._admit(call, agent, run, as_it_is=approval is None)
                        admitted.append(call if approval is None else _edited(call, approval))
                except ApprovalRequired:
                    raise  # no checkpointer to suspend on: the caller gets it, and runs again after the decision
                except LoopGuardTripped as refused:
                    trip = refused
            if trip is None:
                return self._go_all(calls, admitted)
            return self._after_trip(calls, trip, thread, agent)
        finally:
            if run is not None and entered is not None:  # (a function pair, not a RunScope: every turn)
                leave_scope(self.breaker, run, *entered)

    async def acall(self, state: Any, config: RunnableConfig) -> Command[Any]:
        key, thread, agent, messages, calls = self._prepare(state, config)
        self._adopt(key, calls, config)
        run = self.runs.run_for(key, touch=True)
        entered = None if run is None else enter_scope(self.breaker, run)
        try:
            for name, args, who, call_id, result, error in self._report(messages):
                await self.breaker.aafter_tool(name, args, result=result, error=error, agent=who, call_id=call_id)
            if not calls:
                return Command(goto=END)
            if self.on_trip == "steer":
                admitted, answers = [], []
                for call in calls:
                    try:
                        approval = await acheck_tool(
                            self.breaker, call["name"], call.get("args") or {}, agent, call.get("id")
                        )
                    except LoopGuardTripped as refused:
                        answers.append(steered_tool_message(refused, await self.breaker.asteer(refused), call))
                        continue
                    self._admit(call, agent, run, as_it_is=approval is None)
                    admitted.append(_edited(call, approval))
                return self._steered(admitted, answers) if answers else self._go_all(calls, admitted)
            trip = None if thread is None else self._awaited(thread, calls)
            admitted = []
            if trip is None:
                try:
                    for call in calls:
                        approval = await acheck_tool(
                            self.breaker, call["name"], call.get("args") or {}, agent, call.get("id")
                        )
                        self._admit(call, agent, run, as_it_is=approval is None)
                        admitted.append(call if approval is None else _edited(call, approval))
                except ApprovalRequired:
                    raise
                except LoopGuardTripped as refused:
                    trip = refused
            if trip is None:
                return self._go_all(calls, admitted)
            return self._after_trip(calls, trip, thread, agent)
        finally:
            if run is not None and entered is not None:  # (a function pair, not a RunScope: every turn)
                leave_scope(self.breaker, run, *entered)

    def _go_all(self, calls: Sequence[Mapping[str, Any]], admitted: Sequence[Mapping[str, Any]]) -> Command[Any]:
        """On to the tools node; when a person edited a call's arguments, each call goes on its own (``Send``)
        so the tools node runs the edited arguments, not the ones in the model's message."""
        for new, old in zip(admitted, calls):  # (a loop, not all() over a generator: every turn)
            if new is not old:
                return Command(goto=[Send(self.tools_node, [{**call, "type": "tool_call"}]) for call in admitted])
        return Command(goto=self.tools_node)


def _edited(call: Mapping[str, Any], approval: Any) -> Mapping[str, Any]:
    """The call as it runs: with the arguments a person gave on approval, if any (else the same object)."""
    changed = None if approval is None else approval.args()
    return call if changed is None else {**call, "args": changed}


def guard_node(
    breaker: Breaker,
    on_trip: str = "raise",
    *,
    tools_node: str = "tools",
    messages_key: str = "messages",
    model_node: str = "agent",
    tools: Sequence[Any] = (),
) -> RunnableLambda[Any, Command[Any]]:
    """A node that checks the last AIMessage's tool calls with ``breaker`` and routes to ``tools_node``,
    or handles the trip per ``on_trip`` ("raise", "end", "interrupt" or "steer"). ``model_node`` is where
    ``"steer"`` goes when every pending call was refused (the model reads the refusals next).

    ``tools``: the tools node's tools, whose metadata (an approval gate, MCP annotations) is declared to
    ``breaker`` now. The node sees only the calls, never the tool objects: without them, a gate declared in a
    tool's metadata is unknown here, and a plain ``ToolNode`` would run the call ungated (``guarded_tool_node``
    declares its own tools and asks the gate itself)."""
    if not isinstance(breaker, Breaker):
        raise TypeError(f"guard_node needs a loopguard_core.Breaker, got {type(breaker).__name__}")
    if on_trip not in _MODES:
        raise ValueError(f"on_trip must be 'raise', 'end', 'interrupt' or 'steer', got {on_trip!r}")
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
        raise TypeError(f"guard_node(tools=...) takes the list of the tools node's tools, got {type(tools).__name__}")
    for tool in tools:
        declare(breaker, tool)
    node = _GuardNode(breaker, on_trip, tools_node, messages_key, model_node)

    # Plain functions, not the bound methods: RunnableLambda reads its function's signature on every call
    # (accepts_config, accepts_run_manager), and a bound method's costs about twice a function's.
    def loopguard_guard(state: Any, config: RunnableConfig) -> Command[Any]:
        return node(state, config)

    async def aloopguard_guard(state: Any, config: RunnableConfig) -> Command[Any]:
        return await node.acall(state, config)

    return RunnableLambda(loopguard_guard, afunc=aloopguard_guard, name="loopguard_guard")
