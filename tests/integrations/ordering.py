"""A breaker that forces which of two parallel siblings of one model answer goes first (shared by the adapter tests).

The answer holds the 4th repeat of a call and a fresh sibling. With ``sibling_first`` the 4th repeat is checked only
after the sibling reported; without it the sibling reports only after the 4th repeat was checked. ``waits`` records,
for each wait, whether the order asked for really happened (a wait that runs out records False).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from loopguard_core import Breaker

__all__ = ["SiblingOrder"]

Pick = Callable[[str, Any], bool]  # (tool, args) -> whether the call is the one meant


class SiblingOrder(Breaker):
    """Sync hooks block on the events (a thread pool runs the siblings); async hooks poll them without blocking the
    event loop the siblings share."""

    def __init__(self, *, sibling_first: bool, is_repeat: Pick, is_sibling: Pick, timeout: float = 10.0) -> None:
        super().__init__()
        self.sibling_first = sibling_first
        self.is_repeat, self.is_sibling, self.timeout = is_repeat, is_sibling, timeout
        self.sibling_recorded = threading.Event()
        self.fourth_checked = threading.Event()
        self.waits: list[bool] = []
        self._repeats = 0
        self._count = threading.Lock()

    def _is_fourth(self, tool: str, args: Any) -> bool:
        if not self.is_repeat(tool, args):
            return False
        with self._count:
            self._repeats += 1
            return self._repeats == 4

    async def _await(self, event: threading.Event) -> None:
        for _ in range(int(self.timeout / 0.002)):
            if event.is_set():
                break
            await asyncio.sleep(0.002)
        self.waits.append(event.is_set())

    def before_tool(self, tool: str, args: Any = None, **kwargs: Any) -> Any:
        fourth = self._is_fourth(tool, args)
        if fourth and self.sibling_first:
            self.waits.append(self.sibling_recorded.wait(self.timeout))
        try:
            return super().before_tool(tool, args, **kwargs)
        finally:
            if fourth:
                self.fourth_checked.set()

    async def abefore_tool(self, tool: str, args: Any = None, **kwargs: Any) -> Any:
        fourth = self._is_fourth(tool, args)
        if fourth and self.sibling_first:
            await self._await(self.sibling_recorded)
        try:
            return await super().abefore_tool(tool, args, **kwargs)
        finally:
            if fourth:
                self.fourth_checked.set()

    def after_tool(self, tool: str, args: Any = None, **kwargs: Any) -> None:
        sibling = self.is_sibling(tool, args)
        if sibling and not self.sibling_first:
            self.waits.append(self.fourth_checked.wait(self.timeout))
        super().after_tool(tool, args, **kwargs)
        if sibling:
            self.sibling_recorded.set()

    async def aafter_tool(self, tool: str, args: Any = None, **kwargs: Any) -> None:
        sibling = self.is_sibling(tool, args)
        if sibling and not self.sibling_first:
            await self._await(self.fourth_checked)
        await super().aafter_tool(tool, args, **kwargs)
        if sibling:
            self.sibling_recorded.set()
