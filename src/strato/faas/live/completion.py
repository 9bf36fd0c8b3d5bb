"""A future whose callbacks run at once, for the lean backend's warm invocation path.

An :class:`asyncio.Future` runs its done-callbacks through ``loop.call_soon``: a warm invocation went
through two of them (the instance's result, then the node's bookkeeping) before the client got its answer,
each a scheduling round trip of the event loop with a handle allocated for it. Profiles of the gateway put
that at about a quarter of its CPU per request (docs/live.md, "The lean path"). A :class:`Completion`
calls back synchronously instead, on the same event-loop thread, so the chain from the instance's frame to
the client's response runs in one go. Everything that touches the node still runs on the loop thread, as
before, so nothing here races an unload.

It offers the part of the future interface the platform uses (``done``, ``cancelled``, ``result``,
``exception``, ``set_result``, ``set_exception``, ``cancel``, ``add_done_callback``) and can be awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_PENDING, _DONE, _CANCELLED = 0, 1, 2


class Completion(Generic[T]):
    __slots__ = ("_callbacks", "_exception", "_result", "_state")

    def __init__(self) -> None:
        self._state = _PENDING
        self._result: T | None = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Completion[T]], None]] = []

    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def result(self) -> T:
        if self._state == _CANCELLED:
            raise asyncio.CancelledError
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("result is not set")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[return-value]

    def exception(self) -> BaseException | None:
        if self._state == _CANCELLED:
            raise asyncio.CancelledError
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("exception is not set")
        return self._exception

    def set_result(self, value: T) -> None:
        if self._state != _PENDING:
            raise asyncio.InvalidStateError("already done")
        self._result = value
        self._settle(_DONE)

    def set_exception(self, exception: BaseException) -> None:
        if self._state != _PENDING:
            raise asyncio.InvalidStateError("already done")
        self._exception = exception
        self._settle(_DONE)

    def cancel(self) -> bool:
        if self._state != _PENDING:
            return False
        self._settle(_CANCELLED)
        return True

    def add_done_callback(self, callback: Callable[[Completion[T]], None]) -> None:
        if self._state != _PENDING:
            self._run(callback)
        else:
            self._callbacks.append(callback)

    def _settle(self, state: int) -> None:
        self._state = state
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._run(callback)

    def _run(self, callback: Callable[[Completion[T]], None]) -> None:
        # As asyncio does for a future: one failing callback is reported and the others still run, and the
        # failure does not land in whoever settled this (an instance's channel, which would be closed).
        try:
            callback(self)
        except Exception as error:
            asyncio.get_running_loop().call_exception_handler(
                {"message": "a completion callback failed", "exception": error, "completion": self}
            )

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake(_: Completion[T]) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            self.add_done_callback(wake)
            yield from waiter.__await__()
        return self.result()
