"""Per-run scoping, thread and asyncio safety, idempotency, and bounded memory."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from loopguard_core import Breaker, BreakerState, LoopGuardTripped, MemoryStore

from .._build import type_error


def test_a_new_run_starts_clean() -> None:
    breaker = Breaker(max_turns=2)
    with breaker.run() as first:
        breaker.before_model()
        breaker.before_model()
        with pytest.raises(LoopGuardTripped):
            breaker.before_model()
    assert first.result is not None and first.result.turns == 2
    assert breaker.state is BreakerState.OPEN  # the last run is still readable after it ends
    with breaker.run():
        breaker.before_model()  # fresh counts, closed breaker
        assert breaker.usage().turns == 1


def test_nested_runs_join_the_outer_run() -> None:
    breaker = Breaker(max_turns=2)
    with breaker.run():
        breaker.before_model()
        with breaker.run():  # a sub-agent shares the parent's budget
            breaker.before_model()
            with pytest.raises(LoopGuardTripped):
                breaker.before_model()


def test_explicit_scope_shares_state_across_runs_on_purpose() -> None:
    store = MemoryStore()
    a = Breaker(max_turns=3, store=store, scope="crew-42")
    b = Breaker(max_turns=3, store=store, scope="crew-42")
    with a.run():
        a.before_model()
    with b.run():
        b.before_model()
        b.before_model()
        with pytest.raises(LoopGuardTripped):
            b.before_model()


def test_finished_runs_do_not_accumulate_in_memory() -> None:
    store = MemoryStore()
    breaker = Breaker(store=store)
    for _ in range(1_000):
        with breaker.run():
            breaker.before_tool("t", {})
    assert len(store) <= 2


def test_a_hook_scope_forgets_the_finished_run_it_replaces_and_never_the_main_run() -> None:
    breaker = Breaker()
    main = breaker.session_id  # calls outside any run count against the breaker's main run
    breaker.before_tool("outside", {})
    agent = breaker.begin_run("agent")  # an agent's run, held open across its hooks
    with breaker.run("other"):  # another run starts and ends meanwhile: the latest, and finished
        breaker.before_tool("t", {})
    assert breaker.usage(run_id="other").tool_calls == 1  # readable until another run replaces it as the latest
    with breaker.within("agent"):  # the agent's next hook
        breaker.before_tool("t", {"n": 2})
    assert breaker.usage(run_id="other").tool_calls == 0  # forgotten: nothing holds it any more
    assert breaker.usage(run_id="agent").tool_calls == 1
    assert breaker.usage(run_id=main).tool_calls == 1  # the main run is never forgotten
    agent.close()


def test_a_hook_inside_the_latest_run_keeps_it_while_other_runs_start_and_end() -> None:
    import threading

    breaker = Breaker()
    agent = breaker.begin_run("agent")  # the latest run, held open by its handle

    def other_agent() -> None:  # a thread of its own: it starts and ends a run while the hook below is inside
        with breaker.run("other"):
            breaker.before_tool("t", {})

    with breaker.within("agent"):  # the usual hook: its run is the latest already
        breaker.before_tool("t", {"n": 1})
        worker = threading.Thread(target=other_agent)
        worker.start()
        worker.join()
        breaker.before_tool("t", {"n": 2})  # still the agent's run, with its count
        assert breaker.session_id == "agent"
    assert breaker.usage(run_id="agent").tool_calls == 2
    with breaker.within("agent"):  # "other" is the latest now: the hook makes the agent's run the latest again
        breaker.before_tool("t", {"n": 3})
    assert breaker.usage(run_id="other").tool_calls == 0  # forgotten on the way: nothing holds it any more
    assert agent.close().tool_calls == 3
    assert breaker._runs._active == {}


def test_a_late_hook_holds_a_closed_run_while_other_runs_start() -> None:
    import threading

    breaker = Breaker(max_tool_calls=2)
    agent = breaker.begin_run("agent")
    with breaker.within("agent"):
        breaker.before_tool("t", {"n": 1})
    agent.close()  # the agent ended; a hook of it still runs (another thread's, say)
    with breaker.within("agent"):  # the latest run still, but nothing holds it: the hook holds it while inside
        worker = threading.Thread(target=lambda: breaker.begin_run("other").close())
        worker.start()
        worker.join()
        breaker.before_tool("t", {"n": 2})
        assert breaker.usage(run_id="agent").tool_calls == 2  # its counts kept, not forgotten for "other"
        with pytest.raises(LoopGuardTripped, match="tool"):
            breaker.before_tool("t", {"n": 3})
    assert breaker._runs._active == {}


def test_the_scope_functions_do_what_a_run_scope_does_without_an_object() -> None:
    from loopguard_core.runs import enter_scope, leave_scope

    breaker = Breaker()
    agent = breaker.begin_run("agent")
    token, counted = enter_scope(breaker, "agent")  # the latest and held: only the context changes
    assert (breaker.session_id, counted, breaker._runs._active) == ("agent", False, {"agent": 1})
    leave_scope(breaker, "agent", token, counted)
    with breaker.run("other"):  # another run is the latest now
        pass
    token, counted = enter_scope(breaker, "agent")  # the agent's run becomes the latest, held while inside
    assert (breaker.session_id, counted, breaker._runs._active) == ("agent", True, {"agent": 2})
    breaker.before_tool("t", {})
    leave_scope(breaker, "agent", token, counted)
    assert breaker._runs._active == {"agent": 1}
    assert breaker.session_id == "agent"  # the latest run, for a context outside any run
    assert agent.close().tool_calls == 1


async def test_concurrent_asyncio_runs_are_isolated() -> None:
    breaker = Breaker(max_turns=3)

    async def one_run() -> int:
        async with breaker.run():
            for _ in range(3):
                await breaker.abefore_model()
                await asyncio.sleep(0)
            return breaker.usage().turns

    assert await asyncio.gather(*(one_run() for _ in range(20))) == [3] * 20


def test_eight_threads_two_thousand_admissions_each_admit_exactly_the_limit() -> None:
    breaker = Breaker(max_turns=5_000, isolate_runs=False)
    admitted = [0] * 8
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(2_000):
            try:
                breaker.before_model()
                admitted[i] += 1
            except LoopGuardTripped:
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 5_000
    assert breaker.usage().turns == 5_000


def test_the_lock_is_not_held_while_a_guarded_call_runs() -> None:
    breaker = Breaker(isolate_runs=False)
    inside = threading.Event()
    release = threading.Event()

    def slow_tool() -> None:
        breaker.before_tool("slow", {})
        inside.set()
        release.wait(5)  # the "tool body"
        breaker.after_tool("slow", {}, result="done")

    t = threading.Thread(target=slow_tool)
    t.start()
    assert inside.wait(5)
    done = threading.Event()

    def other() -> None:
        breaker.before_tool("fast", {"x": 1})
        done.set()

    threading.Thread(target=other).start()
    assert done.wait(5), "a second call was blocked by the first call's body"
    release.set()
    t.join()


def test_call_ids_make_retries_idempotent() -> None:
    breaker = Breaker(max_turns=2)
    for _ in range(3):
        breaker.before_model(call_id="req-1")  # an HTTP retry of one logical request
    assert breaker.usage().turns == 1
    breaker.after_model(input_tokens=10, output_tokens=10, call_id="req-1")
    breaker.after_model(input_tokens=10, output_tokens=10, call_id="req-1")
    assert breaker.usage().tokens == 20
    for _ in range(5):
        breaker.before_tool("s", {"q": 1}, call_id="tc-1")
    assert breaker.usage().tool_calls == 1


def test_a_retried_refusal_is_refused_again() -> None:
    breaker = Breaker(max_turns=1)
    breaker.before_model(call_id="a")
    for _ in range(2):
        with pytest.raises(LoopGuardTripped):
            breaker.before_model(call_id="b")


class _CountingStore(MemoryStore):
    """A memory store that counts its snapshot reads (each one a round trip on Redis or PostgreSQL)."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots = 0

    def snapshot(self, run):  # type: ignore[no-untyped-def]
        self.snapshots += 1
        return super().snapshot(run)


def test_within_counts_calls_against_an_open_run_without_reading_or_restarting_it(tmp_path) -> None:
    from loopguard_core import Ledger, StaticPrices

    store = _CountingStore()
    ledger = Ledger(tmp_path / "l.db")
    breaker = Breaker(store=store, ledger=ledger, prices=StaticPrices({"m": (1.0, 1.0)}), checkpoint_after_usd=100)
    handle = breaker.begin_run("ticket-7")  # what an agent's before-hook does
    handle_id = handle.run_id
    with breaker.run("other"):  # another run is current in this context...
        reads = store.snapshots  # (each run's start checkpoint read its totals)
        for n in range(3):
            with breaker.within(handle_id):  # ...but each hook counts against the agent's run
                assert breaker.session_id == "ticket-7"
                breaker.before_tool("search", {"q": n})
                breaker.after_tool("search", {"q": n}, result=n)
            assert breaker.session_id == "other"
        assert store.snapshots == reads  # no store read per within(), entering or leaving
    assert handle.close().tool_calls == 3
    starts = [r.breach_reason for r in ledger.rows() if r.origin == "checkpoint"]
    assert [s.split(" ")[0] for s in starts] == ["start", "start"]  # ticket-7 and other, once each


async def test_within_works_under_async_with() -> None:
    breaker = Breaker()
    handle = breaker.begin_run("r1")
    async with breaker.within("r1"):
        await breaker.abefore_tool("search", {"q": 1})
    assert breaker.usage("r1").tool_calls == 1
    handle.close()


@pytest.mark.parametrize("bad", [None, "", 3, b"r1"])
def test_within_needs_a_run_id(bad: object) -> None:
    with pytest.raises(TypeError, match=type_error("within\\(\\) needs the id of an open run")):
        Breaker().within(bad)  # type: ignore[arg-type]


def test_one_run_scope_object_is_entered_once_at_a_time() -> None:
    breaker = Breaker()
    handle = breaker.begin_run("r1")
    scope = breaker.within("r1")
    with breaker.run("other"):
        with scope:
            with pytest.raises(RuntimeError, match="entered once at a time"), scope:
                pass
            assert breaker.session_id == "r1"
        assert breaker.session_id == "other"  # the first entry's exit still restores the context
        with scope:  # and the object can be entered again once it has left
            assert breaker.session_id == "r1"
    handle.close()
    assert breaker._runs._active == {}


def test_a_run_handle_is_opened_once_at_a_time() -> None:
    breaker = Breaker()
    handle = breaker.begin_run("r1")
    with pytest.raises(RuntimeError, match="open already"), handle:
        pass
    assert breaker.session_id == "r1"  # the failed second opening left the first as it was
    handle.close()
    assert breaker._runs._active == {}
    with handle:  # closed: it may be opened again
        assert breaker.session_id == "r1"


def test_an_integration_s_attachment_is_made_once_per_breaker_from_any_thread() -> None:
    # Adapters keep their per-breaker state here (a run registry, a steer lock): two hooks over one breaker that
    # made one each would not see each other's runs.
    breaker, other, made = Breaker(), Breaker(), []

    def factory() -> object:
        made.append(1)
        time.sleep(0.01)  # a slow factory: the other threads ask meanwhile
        return object()

    assert breaker.attached("adapter.state") is None
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: breaker.attachment("adapter.state", factory), range(8)))
    assert len(made) == 1 and all(each is got[0] for each in got)
    assert breaker.attached("adapter.state") is got[0]
    assert other.attachment("adapter.state", factory) is not got[0]  # one per breaker
    assert breaker.attachment("adapter.other", factory) is not got[0]  # and per key
