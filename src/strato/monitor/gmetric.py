"""Send custom metrics to gmond in Ganglia's own wire format (what the ``gmetric`` tool sends).

Each metric is two XDR-encoded UDP datagrams: a metadata message (type, units, slope, tmax, dmax and the
extra data GROUP, TITLE, DESC, SPOOF_HOST) and a value message carrying the value as a string with the
``%s`` format. gmond forgets metadata it has not seen, so we resend metadata every ``metadata_every_s``
and whenever a host/metric pair is new, as gmetric does on every call.

Spoofing (``gmetric -S ip:name``) makes the metric appear under another host: that is how strato
publishes simulated machines as Ganglia hosts.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from strato.errors import ConfigError
from strato.monitor.model import GANGLIA_TYPES

_METADATA_FULL = 128
_VALUE_STRING = 133
SLOPES = {"zero": 0, "positive": 1, "negative": 2, "both": 3, "unspecified": 4}
_MAX_DATAGRAM = 1472


def _xdr_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw + b"\0" * (-len(raw) % 4)


def parse_address(text: str, default_port: int = 8649) -> tuple[str, int]:
    """``host[:port]`` -> (host, port), with a clear error for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    if not host:
        raise ConfigError(f"address {text!r} has no host (expected host:port, e.g. 127.0.0.1:8649)")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"address {text!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ConfigError(f"address {text!r}: port {number} is outside 1-65535")
    return host, number


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """How Ganglia should describe a custom metric."""

    name: str
    type: str = "double"
    units: str = ""
    slope: str = "both"
    tmax: int = 60
    dmax: int = 0
    group: str = ""
    title: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(ch.isspace() or ch in '<>&"' for ch in self.name):
            raise ConfigError(f'metric name {self.name!r} must be non-empty, without spaces or <>&"')
        if self.type not in GANGLIA_TYPES:
            raise ConfigError(f"metric type {self.type!r} is not one of {', '.join(sorted(GANGLIA_TYPES))}")
        if self.slope not in SLOPES:
            raise ConfigError(f"slope {self.slope!r} is not one of {', '.join(SLOPES)}")
        if self.tmax < 0 or self.dmax < 0:
            raise ConfigError("tmax and dmax are seconds and cannot be negative")


def _check_value(spec: MetricSpec, value: float | int | str) -> str:
    if spec.type == "string":
        return str(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(
                f"metric {spec.name} is {spec.type} but the value {value!r} is not a number"
            ) from None
    if spec.type.startswith(("int", "uint")) or spec.type == "timestamp":
        if value != int(value):
            raise ConfigError(f"metric {spec.name} is {spec.type} but {value!r} is not an integer")
        return str(int(value))
    return repr(float(value))


def encode(
    spec: MetricSpec, value: float | int | str, *, host: str = "", spoof: str | None = None
) -> list[bytes]:
    """The two datagrams for one value. ``spoof`` is ``ip:name`` (gmetric's -S)."""
    text = _check_value(spec, value)
    sender = spoof or host
    metric_id = _xdr_string(sender) + _xdr_string(spec.name) + struct.pack(">I", 1 if spoof else 0)
    extra = [("GROUP", spec.group), ("TITLE", spec.title), ("DESC", spec.description)]
    if spoof:
        extra.append(("SPOOF_HOST", spoof))
    extra = [(key, val) for key, val in extra if val]
    metadata = (
        struct.pack(">I", _METADATA_FULL)
        + metric_id
        + _xdr_string(spec.type)
        + _xdr_string(spec.name)
        + _xdr_string(spec.units)
        + struct.pack(">III", SLOPES[spec.slope], spec.tmax, spec.dmax)
        + struct.pack(">I", len(extra))
        + b"".join(_xdr_string(key) + _xdr_string(val) for key, val in extra)
    )
    value_message = struct.pack(">I", _VALUE_STRING) + metric_id + _xdr_string("%s") + _xdr_string(text)
    for packet in (metadata, value_message):
        if len(packet) > _MAX_DATAGRAM:
            raise ConfigError(f"metric {spec.name}: message of {len(packet)} bytes exceeds {_MAX_DATAGRAM}")
    return [metadata, value_message]


def spoof_id(ip: str, name: str) -> str:
    if ":" in name or not name or not ip:
        raise ConfigError(f"spoofed host needs an ip and a name without ':' (got {ip!r}, {name!r})")
    return f"{ip}:{name}"


class GmetricSender:
    """A UDP socket to one gmond's ``udp_recv_channel``. Values are sent now; nothing is queued."""

    def __init__(self, address: str | tuple[str, int], *, metadata_every_s: float = 30.0) -> None:
        self.address = parse_address(address) if isinstance(address, str) else address
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.metadata_every_s = metadata_every_s
        self._metadata_sent: dict[tuple[str, str], float] = {}
        self.hostname = socket.gethostname()

    def send(
        self,
        spec: MetricSpec,
        value: float | int | str,
        *,
        spoof: str | None = None,
    ) -> None:
        metadata, value_message = encode(spec, value, host=self.hostname, spoof=spoof)
        key = (spoof or "", spec.name)
        now = time.monotonic()
        if now - self._metadata_sent.get(key, -1e18) >= self.metadata_every_s:
            self.socket.sendto(metadata, self.address)
            self._metadata_sent[key] = now
        self.socket.sendto(value_message, self.address)

    def send_many(
        self, items: Iterable[tuple[MetricSpec, float | int | str, str | None]], *, pace_every: int = 0
    ) -> int:
        """Send (spec, value, spoof) triples; with ``pace_every`` > 0 yield the CPU every N datagrams so a
        local gmond's receive buffer keeps up."""
        count = 0
        for spec, value, spoof in items:
            self.send(spec, value, spoof=spoof)
            count += 1
            if pace_every and count % pace_every == 0:
                time.sleep(0.002)
        return count

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> GmetricSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
