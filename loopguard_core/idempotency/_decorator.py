"""``@side_effect``: a tool function that runs at most once per idempotency key (a thin layer over SideEffects)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from ._base import DEFAULT_LEASE_SECONDS, DEFAULT_TTL_SECONDS, DEFAULT_WAIT_SECONDS, SideEffectStore
from ._runner import KeyOption, SideEffects
from ._serializer import Serializer

__all__ = ["side_effect"]

_F = TypeVar("_F", bound=Callable[..., Any])
_IMPLICIT = ("self", "cls")


def side_effect(
    store: SideEffectStore | str | None = None,
    *,
    breaker: Any = None,
    key: KeyOption | None = None,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    in_flight: str = "wait",
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    on_unknown: str = "refuse",
    on_error: str = "release",
    serializer: Serializer | None = None,
    name: str | None = None,
    exclude_args: Iterable[str] = (),
) -> Callable[[_F], _F]:
    """Make a tool function run at most once per idempotency key; repeats get the recorded outcome.

    ::

        @side_effect("sqlite:///effects.db", breaker=breaker)
        def send_refund(order_id: str, amount_cents: int) -> dict: ...

    The key is a digest of the breaker's current run id (``breaker.session_id``), the tool's ``name`` (default
    ``module.qualname``) and the function's bound arguments (``inspect.signature(...).bind`` with defaults
    applied, so ``f(1, b=2)`` and ``f(a=1, b=2)`` are one call; ``self``/``cls`` and ``exclude_args`` are left
    out). ``key=`` replaces the run id and arguments with your key (a str, or ``callable(args_dict) -> str``);
    the arguments digest is still recorded, and the same key with other arguments is refused. Works on sync
    and async functions; the wrapper keeps the function's name, docstring and signature, so a framework's tool
    decorator placed above it builds the same schema. The other options are :class:`SideEffects`'.

    The wrapper also carries ``side_effects`` (the :class:`SideEffects` it runs through), ``tool_name``, and
    ``release(*args, **kwargs)``: forget the record of that call (after checking the external system).
    """
    if inspect.isroutine(store) or inspect.isclass(store):
        raise TypeError(
            f"side_effect's first argument is the store (a SideEffectStore object or a URL), got {store!r}: write "
            "@side_effect(store, breaker=breaker) or @side_effect(store, key=...), not a bare @side_effect"
        )
    if breaker is None and key is None:
        raise TypeError(
            "side_effect needs breaker= (the key is derived from its current run id) or key= (a key of yours, or a "
            "callable from the arguments to one)"
        )
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if isinstance(exclude_args, str):
        raise TypeError(f"exclude_args must be a list of parameter names, not one str ({exclude_args!r})")
    excluded = frozenset(exclude_args)
    effects = SideEffects(
        store,
        breaker=breaker,
        key=key,
        ttl_seconds=ttl_seconds,
        lease_seconds=lease_seconds,
        in_flight=in_flight,
        wait_seconds=wait_seconds,
        on_unknown=on_unknown,
        on_error=on_error,
        serializer=serializer,
    )

    def decorate(func: _F) -> _F:
        if not callable(func):
            raise TypeError(f"@side_effect decorates a function, got {type(func).__name__}")
        signature = inspect.signature(func)
        unknown = sorted(excluded - set(signature.parameters))
        if unknown:
            raise ValueError(f"exclude_args names no parameter of {func.__qualname__}: {', '.join(unknown)}")
        first = next(iter(signature.parameters), None)
        skip = excluded | ({first} if first in _IMPLICIT else set())
        tool = name or f"{func.__module__}.{func.__qualname__}"

        def bound(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            binding = signature.bind(*args, **kwargs)
            binding.apply_defaults()
            return {k: v for k, v in binding.arguments.items() if k not in skip}

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                call_args = bound(args, kwargs)
                body = cast(Callable[[], Awaitable[Any]], functools.partial(func, *args, **kwargs))
                return await effects.arun(tool, call_args, body)

            wrapper: Callable[..., Any] = run_async
        else:

            @functools.wraps(func)
            def run_sync(*args: Any, **kwargs: Any) -> Any:
                return effects.run(tool, bound(args, kwargs), functools.partial(func, *args, **kwargs))

            wrapper = run_sync

        def release(*args: Any, **kwargs: Any) -> bool:
            return effects.release(tool, bound(args, kwargs))

        wrapper.side_effects = effects  # type: ignore[attr-defined]
        wrapper.tool_name = tool  # type: ignore[attr-defined]
        wrapper.release = release  # type: ignore[attr-defined]
        return cast(_F, wrapper)

    return decorate
