"""``LoopGuardCallbackHandler``: the breaker as a LangChain callback handler.

For what middleware cannot reach: the classic ``AgentExecutor`` (``langchain_classic``), plain LangGraph
graphs, chains, and ``create_agent`` when you prefer ``config={"callbacks": [handler]}``.

Why it is built this way (each point verified against langchain-core 1.7):

- It is a SYNC ``BaseCallbackHandler`` with ``raise_error = True``. With the default ``raise_error=False``
  LangChain logs the trip and runs the tool anyway. An ``AsyncCallbackHandler`` is swallowed on the sync
  callback path, which LangChain also takes under ``ainvoke`` for every sync ``def`` tool. So this class
  refuses ``raise_error=False``, async subclasses and ``async def`` hook overrides with a ``TypeError``.
- ``on_tool_start`` runs before the tool's ``try`` block: raising there means the body never runs.
  The classic ``AgentExecutor`` passes no ``tool_call_id`` to it, but its ``on_agent_action`` (fired just
  before, with the ``ToolAgentAction``) carries the id, so the check happens there for that executor.
- Model pre-flight in ``on_chat_model_start`` (``on_llm_start`` for completion models); usage in ``on_llm_end``.
- One breaker run per top-level invocation: the root chain's start/end/error events bound it, and every
  event is attributed to its root through ``parent_run_id``; nested agents therefore share the run.
- ``on_trip="steer"``: a refused tool call is answered for the model instead of stopping the run. A callback
  cannot replace a result, so ``on_tool_start`` raises :class:`LoopGuardSteered` (a ``ToolInvocationError``,
  which LangGraph's ``ToolNode`` turns into an error ToolMessage by default, and a ``LoopGuardTripped``)
  carrying ``Breaker.steer``'s text. That works wherever a ``ToolNode`` runs the tools (``create_agent``,
  LangGraph graphs). The classic ``AgentExecutor`` converts nothing: there a refusal is raised as in ``"raise"``.
  Budget ceilings and the ``max_refusals`` stop are raised as in ``"raise"``.
- Approval gates: a gated call raises ``ApprovalRequired`` to the caller (a callback cannot suspend a graph on
  its checkpointer: use ``LoopGuardMiddleware`` or ``guarded_tool_node`` for that); run again under the same
  run id (``with breaker.run("ticket-42"):``) once a person decided. A rejection is steerable like a loop. A
  callback cannot change a tool's arguments, so an approval with edited arguments is refused with
  ``ApprovalError`` rather than run as the model asked. Tool metadata (``{"loopguard": {...}}``, MCP annotations)
  reaches ``Breaker.declare_tool`` on the tool's first call.

LangChain still logs ``Error in LoopGuardCallbackHandler.on_tool_start callback: ...`` at WARNING before
re-raising the trip: that line is LangChain's, and the trip does reach the caller.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from loopguard_core import ApprovalError, Breaker, LoopGuardTripped, estimate_tokens
from loopguard_core.runs import RunHandle

from ._approval import declare_named
from ._batch import message_batch
from ._common import agent_name, estimate_history, history_input, message_history, tool_outcome, usage_of
from ._steer import LoopGuardSteered, steer_lock

__all__ = ["LoopGuardCallbackHandler", "LoopGuardSteered"]

_CAP_KEYS = ("max_tokens", "max_output_tokens", "max_completion_tokens", "max_new_tokens", "num_predict")
_MODEL_KEYS = ("model", "model_name", "model_id")
_MEMORY = 8_192  # bound on the run-id bookkeeping (runs that never reported an end)
_HOOKS = tuple(name for name in dir(BaseCallbackHandler) if name.startswith("on_"))
_ON_TRIP = ("raise", "steer")


def _positive_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class _Bounded(OrderedDict[Any, Any]):
    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        while len(self) > _MEMORY:
            self.popitem(last=False)


class LoopGuardCallbackHandler(BaseCallbackHandler):
    """Checks tool calls and model calls before they run, from LangChain's callback events.

    Pass it where nested runs inherit it: ``agent.invoke(inputs, config={"callbacks": [handler]})``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if issubclass(cast(type, cls), AsyncCallbackHandler):
            raise TypeError(
                f"{cls.__name__} mixes LoopGuardCallbackHandler with AsyncCallbackHandler: LangChain swallows "
                "errors from async handlers on its sync callback path (sync tools, even under ainvoke), so the "
                "trip would never stop the run. Use LoopGuardCallbackHandler as it is (a sync handler)."
            )
        for hook in _HOOKS:
            if inspect.iscoroutinefunction(cls.__dict__.get(hook)):
                raise TypeError(
                    f"{cls.__name__}.{hook} is 'async def': LangChain runs a sync handler's coroutine on a path "
                    "that swallows its errors, so a trip raised there would be lost. Override it with a plain def."
                )

    def __init__(self, breaker: Breaker, *, on_trip: str = "raise") -> None:
        if not isinstance(breaker, Breaker):
            raise TypeError(f"LoopGuardCallbackHandler needs a loopguard_core.Breaker, got {type(breaker).__name__}")
        if on_trip not in _ON_TRIP:
            raise ValueError(
                f"on_trip must be 'raise' or 'steer', got {on_trip!r} (a callback cannot end a run gracefully: "
                "use LoopGuardMiddleware(on_trip='end') or guard_node(on_trip='end') for that)"
            )
        self.breaker = breaker
        self.on_trip = on_trip
        self._lock = threading.Lock()
        self._roots: dict[UUID, RunHandle] = {}
        self._root_of = _Bounded()  # run id -> root chain run id
        self._actions = _Bounded()  # AgentExecutor run id -> [(tool, call_id)] checked in on_agent_action
        self._tools = _Bounded()  # tool run id -> (tool, args, call_id, agent, root)
        self._models = _Bounded()  # llm run id -> (model, agent, input estimate (a function), digest input, root)
        self._agents = _Bounded()  # chain run id -> agent name from its metadata (for on_agent_action)
        self._batches = _Bounded()  # tool call id -> (the model answer that carried it, root), from on_llm_end
        self._history = message_history()  # each model call reads only the messages added since the last

    # -- the trap guard -----------------------------------------------------------------------------
    @property
    def raise_error(self) -> bool:
        return True

    @raise_error.setter
    def raise_error(self, value: bool) -> None:
        if not value:
            raise TypeError(
                "LoopGuardCallbackHandler needs raise_error=True: with False LangChain logs the trip and runs "
                "the tool anyway."
            )

    # -- run scoping --------------------------------------------------------------------------------
    def _attach(self, run_id: UUID, parent_run_id: UUID | None) -> UUID | None:
        with self._lock:
            root = self._root_of.get(parent_run_id) if parent_run_id is not None else None
            if root is not None:
                self._root_of.put(run_id, root)
            return root

    def _scope(self, root: UUID | None) -> AbstractContextManager[Any]:
        with self._lock:
            handle = self._roots.get(root) if root is not None else None
        return self.breaker.within(handle.run_id) if handle is not None else nullcontext()

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        agent = agent_name(metadata or {})
        if agent is not None:
            with self._lock:
                self._agents.put(run_id, agent)
        if parent_run_id is not None:
            self._attach(run_id, parent_run_id)
            return
        handle = self.breaker.begin_run()  # joins a run the caller opened around invoke
        with self._lock:
            self._roots[run_id] = handle
            self._root_of.put(run_id, run_id)

    def _end_chain(self, run_id: UUID) -> None:
        with self._lock:
            handle = self._roots.pop(run_id, None)
            if handle is None:
                return
            stale = {k for k, root in self._root_of.items() if root == run_id}
            for table in (self._root_of, self._actions, self._tools, self._models, self._agents):
                for key in [k for k in table if k in stale]:
                    del table[key]
            for key in [k for k, (_, root) in self._batches.items() if root == run_id]:
                del self._batches[key]
        handle.close()

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_chain(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_chain(run_id)

    # -- tool calls ---------------------------------------------------------------------------------
    def on_agent_action(self, action: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """Classic AgentExecutor: the action carries the tool call id that on_tool_start lacks."""
        tool = getattr(action, "tool", None)
        if not isinstance(tool, str) or not tool:
            return
        args = getattr(action, "tool_input", None)
        call_id = getattr(action, "tool_call_id", None)
        with self._lock:
            root = self._root_of.get(run_id)
            agent = self._agents.get(run_id)
            batch = self._batch(call_id)
        with self._scope(root):
            _no_edits(self.breaker.before_tool(tool, args, agent=agent, call_id=call_id, batch=batch), tool)
        with self._lock:
            pending = self._actions.get(run_id) or []
            pending.append((tool, call_id, args))
            self._actions.put(run_id, pending)

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        tool = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        args: Any = inputs if inputs is not None else input_str
        call_id = kwargs.get("tool_call_id")
        agent = agent_name(metadata or {})
        declare_named(self.breaker, tool, metadata)  # the tool's own metadata is merged into the run's
        root = self._attach(run_id, parent_run_id)
        checked = False
        with self._lock:
            batch = self._batch(call_id)
        if parent_run_id is not None:
            with self._lock:
                pending = self._actions.get(parent_run_id)
                if pending:
                    for index, (name, action_id, action_args) in enumerate(pending):
                        if name == tool:
                            del pending[index]
                            checked, call_id, args = True, call_id or action_id, action_args
                            break
        with self._scope(root):
            if not checked:
                with steer_lock(self.breaker, self.on_trip):
                    try:
                        approval = self.breaker.before_tool(tool, args, agent=agent, call_id=call_id, batch=batch)
                        _no_edits(approval, tool)
                    except LoopGuardTripped as trip:
                        if self.on_trip != "steer":
                            raise
                        text = self.breaker.steer(trip)  # raises the trip itself when the run must stop
                        raise LoopGuardSteered(trip, text) from None
        with self._lock:
            self._tools.put(run_id, (tool, args, call_id, agent, root))

    def _batch(self, call_id: Any) -> str | None:
        """The model answer a tool call came in (under the lock). LangGraph runs an answer's calls in parallel
        (``create_agent`` sends each to the tools node on its own, so their parent runs differ; a plain ``ToolNode``
        shares one): the model's own run saw them all, and each is judged on the run as the model saw it."""
        found = self._batches.get(call_id) if isinstance(call_id, str) and call_id else None
        return None if found is None else found[0]  # type: ignore[no-any-return]

    def _remember_batches(self, run_id: UUID, response: Any, root: UUID | None) -> None:
        """Note which answer carried each tool call of a model response (read by on_tool_start / on_agent_action)."""
        for generations in getattr(response, "generations", None) or ():
            for generation in generations:
                message = getattr(generation, "message", None)
                calls = getattr(message, "tool_calls", None) if message is not None else None
                if not calls:
                    continue
                batch = message_batch(message) or f"llm:{run_id}"
                with self._lock:
                    for call in calls:
                        call_id = call.get("id") if isinstance(call, Mapping) else None
                        if isinstance(call_id, str) and call_id:
                            self._batches.put(call_id, (batch, root))

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            entry = self._tools.pop(run_id, None)
        if entry is None:
            return
        tool, args, call_id, agent, root = entry
        result, error = tool_outcome(output)
        with self._scope(root):
            self.breaker.after_tool(tool, args, result=result, error=error, agent=agent, call_id=call_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            entry = self._tools.pop(run_id, None)
        if entry is None:
            return
        tool, args, call_id, agent, root = entry
        with self._scope(root):
            self.breaker.after_tool(tool, args, error=error, agent=agent, call_id=call_id)

    # -- model calls --------------------------------------------------------------------------------
    def _model_start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: Mapping[str, Any] | None,
        params: Mapping[str, Any],
        estimate: Callable[[], int],
        digest: Any,
    ) -> None:
        meta = metadata or {}
        model = meta.get("ls_model_name") or next(
            (params[k] for k in _MODEL_KEYS if isinstance(params.get(k), str)), None
        )
        cap = _positive_int(meta.get("ls_max_tokens")) or next(
            (_positive_int(params.get(k)) for k in _CAP_KEYS if _positive_int(params.get(k))), 0
        )
        agent = agent_name(meta)
        root = self._attach(run_id, parent_run_id)
        # The input is estimated only when a ceiling or budget reads it, or (on_llm_end) when no usage comes back.
        estimated = estimate() if self.breaker.needs_token_estimate else 0
        with self._scope(root):
            self.breaker.before_model(
                model=model, estimated_input_tokens=estimated, max_output_tokens=cap, agent=agent, call_id=str(run_id)
            )
        with self._lock:
            self._models.put(run_id, (model, agent, estimate, digest, root))

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        batch = messages[0] if messages else []
        params = kwargs.get("invocation_params") or {}
        history = self._history
        digest = history_input(history, batch) if self.breaker.ledger is not None else None  # ledger-only
        estimate = functools.partial(estimate_history, history, batch)
        self._model_start(run_id, parent_run_id, metadata, params, estimate, digest)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        texts = list(prompts)
        self._model_start(run_id, parent_run_id, metadata, params, functools.partial(estimate_tokens, texts), texts)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            entry = self._models.pop(run_id, None)
        if entry is None:
            return
        model, agent, estimate, digest, root = entry
        self._remember_batches(run_id, response, root)
        usage = _usage(response)
        if usage is None:  # nothing reported: count the estimate rather than zero
            texts = [getattr(g, "text", "") for gens in getattr(response, "generations", []) for g in gens]
            usage = (estimate(), estimate_tokens(texts))  # the history's estimate reads only what it has not seen
        with self._scope(root):
            self.breaker.after_model(
                input_tokens=usage[0],
                output_tokens=usage[1],
                model=model,
                agent=agent,
                call_id=str(run_id),
                input=digest,
            )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            entry = self._models.pop(run_id, None)
        if entry is None:
            return
        model, agent, _, _, root = entry
        with self._scope(root):  # an admitted call that failed: release its reservation at once
            self.breaker.model_failed(model=model, agent=agent, error=error)


def _no_edits(approval: Any, tool: str) -> None:
    """A callback cannot change a tool's arguments: an approval that edited them is not run as the model asked."""
    if approval is None or approval.args() is None:
        return
    raise ApprovalError(
        f"a person approved {tool!r} with edited arguments (request {approval.id}), but a callback handler cannot "
        "change the arguments a tool runs with, so the call was not made. Use LoopGuardMiddleware (create_agent) "
        "or loopguard_langgraph.guarded_tool_node, which run edited arguments, or approve without --args."
    )


def _usage(response: Any) -> tuple[int, int] | None:
    """Token usage of an LLMResult: the message's usage_metadata, else the provider's llm_output."""
    messages = [getattr(g, "message", None) for gens in getattr(response, "generations", []) for g in gens]
    found = usage_of([m for m in messages if m is not None])
    if found is not None:
        return found
    output = getattr(response, "llm_output", None) or {}
    usage = output.get("token_usage") or output.get("usage") or {}
    if not isinstance(usage, Mapping) or not usage:
        return None
    prompt = usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0
    completion = usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0
    return int(prompt), int(completion)
