"""One way to fan work out to a Dask cluster (``--dask ADDRESS`` on plans and sweeps)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from strato.errors import ConfigError, UnavailableError

R = TypeVar("R")


def dask_map(
    address: str,
    function: Callable[..., R],
    items: Sequence[Any],
    *,
    shared: Mapping[str, Any] | None = None,
    constant: Mapping[str, Any] | None = None,
) -> list[R]:
    """``[function(item, **shared, **constant) for item in items]`` on the scheduler at ``address``.

    ``shared`` values (large: a workload, a trace) are scattered once to every worker instead of being
    shipped with each task; ``constant`` ones are small and go with the tasks.
    """
    try:
        from distributed import Client
    except ImportError:  # an optional dependency: the local pool needs nothing more
        raise ConfigError("--dask needs the 'distributed' package (pip install distributed)") from None
    try:
        # distributed ships without type annotations for these calls.
        client = Client(address, timeout=10)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as error:
        raise UnavailableError(f"cannot reach the Dask scheduler at {address}: {error}") from None
    with client:
        scattered = {
            name: client.scatter(value, broadcast=True)  # type: ignore[no-untyped-call]
            for name, value in (shared or {}).items()
        }
        futures = client.map(function, list(items), **scattered, **(constant or {}), pure=False)
        results: list[R] = client.gather(futures)  # type: ignore[no-untyped-call]
    return results
