"""Read real Ganglia: gmond's XML dump (TCP 8649), gmetad's XML port (8651) and query port (8652).

The XML is parsed as it streams off the socket (expat), so a poll of thousands of hosts never holds more
than one chunk of text besides the result. Any nesting gmetad produces (``GRID`` within ``GRID``,
summary ``HOSTS``/``METRICS`` elements) is accepted; hosts are taken from ``HOST`` elements wherever they
appear. A host gmond has already dropped (past its DMAX) simply is not in the dump; a silent one is
still there with a growing TN, which :meth:`strato.monitor.model.Host.alive` judges.

Every failure is a :class:`GangliaError` that says which daemon, what happened and what to check: refused
or unreachable, slow (connect or total read deadline), malformed XML (line and column), truncated
documents, oversized dumps.

gmond 3.7 escapes metric values in its XML but writes host names, metric names and extra data as they
came, and anyone who can send it UDP chooses those: one host named ``a"b`` makes every dump malformed,
for every reader, until gmond forgets that host. When a dump is malformed, :func:`fetch` reads it once
more through :func:`repair_lines`, which re-escapes the attribute values of gmond's ``HOST``, ``METRIC``
and ``EXTRA_ELEMENT`` lines (their attributes come in a fixed order, so a value runs up to the next
known attribute); a line in any other shape is left alone, and if the repaired dump is still malformed
the first error stands.
"""

from __future__ import annotations

import re
import socket
import time
import xml.parsers.expat
from collections.abc import Iterable, Iterator
from pathlib import Path

import re2

from strato.errors import UnavailableError
from strato.monitor.gmetric import parse_address
from strato.monitor.model import NUMERIC_TYPES, Host, Metric, Snapshot

MAX_DOCUMENT_BYTES = 512 * 2**20


class GangliaError(UnavailableError):
    """Ganglia could not be read: unreachable, slow, or it sent something that is not Ganglia XML."""


class MalformedXmlError(GangliaError):
    """The answer is not well-formed XML (as opposed to cut short, or not Ganglia's)."""


def _int(value: str | None, default: int = 0) -> int:
    if not value:
        return default
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # not a number, NaN, or infinite ("inf" from a hostile source)
        return default


class _Builder:
    """expat callbacks that assemble a Snapshot; ``depth`` tracks where a truncated document stopped."""

    def __init__(self, source: str) -> None:
        self.snapshot = Snapshot(source=source, taken_at=time.time())
        self.cluster = ""
        self.host: Host | None = None
        self.metric: Metric | None = None
        self.open: list[str] = []
        self.root_closed = False

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.open.append(tag)
        if tag == "METRIC" and self.host is not None:
            self._metric(attrs)
        elif tag == "EXTRA_ELEMENT":
            if self.metric is not None and attrs.get("NAME") == "GROUP":
                self.metric.group = attrs.get("VAL", "")
        elif tag == "HOST":
            self.host = Host(
                name=attrs.get("NAME", ""),
                ip=attrs.get("IP", ""),
                cluster=self.cluster,
                reported=_int(attrs.get("REPORTED")),
                tn=_int(attrs.get("TN")),
                tmax=_int(attrs.get("TMAX"), 20),
                dmax=_int(attrs.get("DMAX")),
                location=attrs.get("LOCATION", ""),
            )
        elif tag == "CLUSTER":
            self.cluster = attrs.get("NAME", "")
            self.snapshot.clusters.append(self.cluster)
        elif tag == "GANGLIA_XML" and len(self.open) == 1:
            self.snapshot.source += f" (ganglia {attrs.get('VERSION', '?')}, {attrs.get('SOURCE', '?')})"

    def _metric(self, attrs: dict[str, str]) -> None:
        kind = attrs.get("TYPE", "string")
        raw = attrs.get("VAL", "")
        value: float | str = raw
        if kind in NUMERIC_TYPES:
            try:
                value = float(raw)
            except ValueError:
                value = raw  # kept as text so a rule can still see it; numeric comparisons are unknown
        name = attrs.get("NAME", "")
        metric = Metric(
            name=name,
            value=value,
            type=kind,
            units=attrs.get("UNITS", "").strip(),
            tn=_int(attrs.get("TN")),
            tmax=_int(attrs.get("TMAX")),
            dmax=_int(attrs.get("DMAX")),
            slope=attrs.get("SLOPE", "both"),
        )
        assert self.host is not None
        self.host.metrics[name] = metric
        self.metric = metric

    def end(self, tag: str) -> None:
        self.open.pop()
        if tag == "METRIC":
            self.metric = None
        elif tag == "HOST" and self.host is not None:
            hosts = self.snapshot.hosts
            previous = hosts.get(self.host.name)
            if previous is None or previous.reported <= self.host.reported:
                hosts[self.host.name] = self.host
            self.host = None
        elif tag == "CLUSTER":
            self.cluster = ""
        elif tag == "GANGLIA_XML" and not self.open:
            self.root_closed = True


def parse_xml(chunks: Iterable[bytes], source: str = "xml") -> Snapshot:
    """Parse a Ganglia XML document given as byte chunks (a socket's reads, or a file's)."""
    builder = _Builder(source)
    parser = xml.parsers.expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    size = 0
    final = False
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_DOCUMENT_BYTES:
                raise GangliaError(
                    f"{source}: the XML exceeds {MAX_DOCUMENT_BYTES // 2**20} MiB; refusing it"
                )
            parser.Parse(chunk, False)
        final = True
        parser.Parse(b"", True)
    except xml.parsers.expat.ExpatError as error:
        # An error only once the input ended means the document stopped early, not that it was wrong.
        if final and size == 0:
            raise GangliaError(f"{source}: sent nothing (an empty answer, not Ganglia XML)") from None
        if final:
            where = " > ".join(builder.open) or "the document"
            raise GangliaError(
                f"{source}: the XML is truncated after {size} bytes (it ended inside {where})"
            ) from None
        raise MalformedXmlError(
            f"{source}: malformed XML at line {error.lineno}, column {error.offset + 1}: "
            f"{xml.parsers.expat.errors.messages[error.code]}"
        ) from None
    if not builder.root_closed:
        if not builder.open and size:
            raise GangliaError(f"{source}: this is XML but not Ganglia's (no GANGLIA_XML element)")
        raise GangliaError(f"{source}: the XML is truncated after {size} bytes")
    return builder.snapshot


def parse_file(path: str | Path) -> Snapshot:
    path = Path(path)

    def chunks() -> Iterable[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 16):
                yield chunk

    try:
        return parse_xml(chunks(), source=str(path))
    except OSError as error:
        raise GangliaError(f"{path}: cannot read it: {error.strerror}") from None


def fetch(
    address: str,
    *,
    query: str | None = None,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 10.0,
) -> Snapshot:
    """Read one dump from a gmond or gmetad at ``host:port``.

    ``query`` is a gmetad query-port path (``/``, ``/cluster``, ``/cluster/host``, ``?filter=summary``);
    leave it None for gmond and gmetad's XML port, which send the whole state on connect.
    ``read_timeout_s`` bounds the whole read, so a daemon that trickles bytes cannot stall a poll. A
    malformed dump is read a second time through :func:`repair_lines` (see the module docstring).
    """
    try:
        return _fetch(address, query, connect_timeout_s, read_timeout_s, repair=False)
    except MalformedXmlError as malformed:
        try:
            return _fetch(address, query, connect_timeout_s, read_timeout_s, repair=True)
        except GangliaError:
            raise malformed from None


def _fetch(
    address: str, query: str | None, connect_timeout_s: float, read_timeout_s: float, *, repair: bool
) -> Snapshot:
    host, port = parse_address(address)
    label = f"ganglia at {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout_s)
    except ConnectionRefusedError:
        raise GangliaError(
            f"{label} refused the connection: is gmond/gmetad running and listening there?"
        ) from None
    except TimeoutError:
        raise GangliaError(f"{label} did not accept a connection within {connect_timeout_s:g} s") from None
    except OSError as error:
        raise GangliaError(f"{label} is unreachable: {error.strerror or error}") from None
    deadline = time.monotonic() + read_timeout_s

    def chunks() -> Iterable[bytes]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(1 << 18)
            if not chunk:
                return
            yield chunk

    with sock:
        try:
            if query is not None:
                sock.sendall(query.strip().encode() + b"\n")
            return parse_xml(repair_lines(chunks()) if repair else chunks(), source=label)
        except TimeoutError:
            raise GangliaError(
                f"{label} did not finish sending its XML within {read_timeout_s:g} s"
            ) from None
        except ConnectionResetError:
            raise GangliaError(f"{label} reset the connection mid-answer") from None


# The attributes gmond 3.7 writes, in its order, for the elements whose values it does not escape.
_GMOND_ATTRIBUTES = {
    b"HOST": ("NAME", "IP", "TAGS", "REPORTED", "TN", "TMAX", "DMAX", "LOCATION", "GMOND_STARTED"),
    b"METRIC": ("NAME", "VAL", "TYPE", "UNITS", "TN", "TMAX", "DMAX", "SLOPE"),
    b"EXTRA_ELEMENT": ("NAME", "VAL"),
}
_LATIN1 = re2.Options()
_LATIN1.encoding = re2.Options.Encoding.LATIN1  # bytes as they come: '.' is any byte
_LATIN1.log_errors = False
# RE2, not re: the greedy groups would make a backtracking matcher polynomial in a hostile line's length.
_GMOND_LINES = {
    tag: re2.compile(
        b"^(\\s*<"
        + tag
        + b" )"
        + b" ".join(name.encode() + b'="(.*)"' for name in names)
        + b"(\\s*/?>\\s*)$",
        _LATIN1,
    )
    for tag, names in _GMOND_ATTRIBUTES.items()
}
_BARE_AMPERSAND = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9A-Fa-f]+);)")


def repair_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The same bytes, with the attribute values of gmond's HOST, METRIC and EXTRA_ELEMENT lines escaped.

    Escaping is idempotent (an existing ``&amp;`` or ``&#34;`` stays), so values gmond did escape are
    unchanged."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        cut = pending.rfind(b"\n") + 1
        if cut:
            yield b"".join(_repair_line(line) for line in bytes(pending[:cut]).splitlines(keepends=True))
            del pending[:cut]
    if pending:
        yield _repair_line(bytes(pending))


def _repair_line(line: bytes) -> bytes:
    start = line.lstrip()[1:].split(b" ", 1)[0] if line.lstrip().startswith(b"<") else b""
    pattern = _GMOND_LINES.get(start)
    if pattern is None:
        return line
    found = pattern.fullmatch(line)
    if found is None:
        return line
    names = _GMOND_ATTRIBUTES[start]
    head, tail = bytes(found.group(1)), bytes(found.group(len(names) + 2))
    values = [_escape(found.group(index + 2)) for index in range(len(names))]
    return (
        head
        + b" ".join(name.encode() + b'="' + value + b'"' for name, value in zip(names, values, strict=True))
        + tail
    )


def _escape(value: bytes) -> bytes:
    return _BARE_AMPERSAND.sub(b"&amp;", value).replace(b"<", b"&lt;").replace(b'"', b"&quot;")
