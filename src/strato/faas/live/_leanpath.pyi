"""Types of the C module (its source: _leanpath.c)."""

from collections.abc import Callable
from typing import Any

def parse_invocation(
    data: bytes, max_head: int, max_body: int, max_headers: int
) -> tuple[str, bytes, bytes, bytes | None, bool, str] | None: ...
def split_result(
    data: bytes, request_id: int, max_meta: int, max_body: int
) -> tuple[bytes, bytes] | None: ...

class Route:
    name: str
    def __init__(self, name: str, dispatched: Callable[[Slot], None]) -> None: ...
    def idle_count(self) -> int: ...

class Slot:
    instance: Any
    started: float
    busy: int
    lent: int
    def __init__(
        self, route: Route, instance: Any, transport: Any, max_body: int, fd: int = -1, protocol: Any = None
    ) -> None: ...
    def lend(self) -> None: ...
    def reclaim(self) -> None: ...
    def cache(self, meta: bytes, head: bytes, status: int) -> None: ...
    def demote(self) -> tuple[int, Any, bool, str, float] | None: ...
    def complete(self, data: bytes) -> bool: ...

class Lane:
    def __init__(
        self,
        routes: dict[str, Route],
        finish: Callable[[Slot, int, Any, bool], None],
        bearer: Callable[[bytes], bool] | None,
        protect: bool,
        max_head: int,
        max_body: int,
        max_headers: int,
        spin_s: float = 0.0,
    ) -> None: ...
    def serve(self, client: Any, data: bytes) -> int: ...
