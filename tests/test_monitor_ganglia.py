"""Reading real gmond XML, sending gmetric packets, and every way Ganglia input can be bad."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor_helpers import collector, require
from strato.errors import ConfigError
from strato.monitor import daemons, ganglia
from strato.monitor.gmetric import GmetricSender, MetricSpec, encode, parse_address, spoof_id

pytestmark = pytest.mark.system

SAMPLE = b"""<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>
<!DOCTYPE GANGLIA_XML [ <!ELEMENT GANGLIA_XML (GRID|CLUSTER|HOST)*> ]>
<GANGLIA_XML VERSION="3.7.2" SOURCE="gmetad">
<GRID NAME="grid" AUTHORITY="x" LOCALTIME="1">
<CLUSTER NAME="web" LOCALTIME="1700000000" OWNER="o" LATLONG="" URL="">
<HOST NAME="web-1" IP="10.0.0.1" REPORTED="1700000000" TN="3" TMAX="20" DMAX="0"
 LOCATION="r1" GMOND_STARTED="0">
<METRIC NAME="load_one" VAL="1.5" TYPE="float" UNITS=" " TN="3" TMAX="70" DMAX="0" SLOPE="both">
<EXTRA_DATA><EXTRA_ELEMENT NAME="GROUP" VAL="load"/></EXTRA_DATA></METRIC>
<METRIC NAME="os_name" VAL="Linux" TYPE="string" UNITS="" TN="3" TMAX="1200" DMAX="0" SLOPE="zero"/>
<METRIC NAME="procs" VAL="12" TYPE="uint32" UNITS="" TN="3" TMAX="950" DMAX="0" SLOPE="both"/>
<METRIC NAME="boot" VAL="1699999000" TYPE="timestamp" UNITS="s" TN="3" TMAX="1200" DMAX="0" SLOPE="zero"/>
<METRIC NAME="temp" VAL="n/a" TYPE="double" UNITS="C" TN="3" TMAX="60" DMAX="0" SLOPE="both"/>
<METRIC NAME="tiny" VAL="-3" TYPE="int8" UNITS="" TN="3" TMAX="60" DMAX="0" SLOPE="both"/>
</HOST>
<HOST NAME="web-2" IP="10.0.0.2" REPORTED="1699990000" TN="900" TMAX="20" DMAX="3600"
 LOCATION="r1" GMOND_STARTED="0">
</HOST>
<HOSTS UP="1" DOWN="1" SOURCE="gmetad"/>
<METRICS NAME="load_one" SUM="1.5" NUM="1" TYPE="float" UNITS=" " SLOPE="both" SOURCE="gmond"/>
</CLUSTER>
</GRID>
</GANGLIA_XML>
"""


def test_parse_every_type_and_nesting() -> None:
    snapshot = ganglia.parse_xml([SAMPLE[i : i + 37] for i in range(0, len(SAMPLE), 37)], source="sample")
    assert sorted(snapshot.hosts) == ["web-1", "web-2"]
    assert snapshot.clusters == ["web"]
    web1 = snapshot.hosts["web-1"]
    assert (web1.ip, web1.cluster, web1.tn, web1.location) == ("10.0.0.1", "web", 3, "r1")
    assert web1.metrics["load_one"].value == 1.5 and web1.metrics["load_one"].group == "load"
    assert web1.metrics["load_one"].units == ""
    assert web1.metrics["os_name"].value == "Linux" and not web1.metrics["os_name"].numeric
    assert web1.metrics["procs"].value == 12.0
    assert web1.metrics["boot"].value == 1699999000.0
    assert web1.metrics["tiny"].value == -3.0
    # A numeric metric whose value is not a number is kept as text rather than lost or guessed.
    assert web1.metrics["temp"].value == "n/a"
    # web-2 is silent for 900 s: still reported (DMAX not reached), judged down.
    assert web1.alive() and not snapshot.hosts["web-2"].alive()
    assert snapshot.hosts["web-2"].alive(stale_after_s=1000)


def test_malformed_truncated_and_foreign_xml() -> None:
    with pytest.raises(ganglia.GangliaError, match=r"malformed XML at line 1, column \d+"):
        ganglia.parse_xml([b"<GANGLIA_XML><HOST NAME='a' IP=></GANGLIA_XML>"])
    with pytest.raises(ganglia.GangliaError, match="truncated after 120 bytes"):
        ganglia.parse_xml([SAMPLE[:120]])
    cut = SAMPLE[: SAMPLE.index(b'<METRIC NAME="procs"')]
    with pytest.raises(
        ganglia.GangliaError, match=r"truncated .* inside GANGLIA_XML > GRID > CLUSTER > HOST"
    ):
        ganglia.parse_xml([cut])
    with pytest.raises(ganglia.GangliaError, match="sent nothing"):
        ganglia.parse_xml([])
    with pytest.raises(ganglia.GangliaError, match="not Ganglia's"):
        ganglia.parse_xml([b"<html><body>hello</body></html>"])
    with pytest.raises(ganglia.GangliaError, match="malformed"):
        ganglia.parse_xml([b"\x00\xff garbage"])


# What gmond 3.7 writes for a spoofed host whose name and metric name carry XML's special characters: the
# names raw, the string value escaped.
UNESCAPED = b"""<?xml version="1.0" encoding="ISO-8859-1" standalone="yes"?>
<GANGLIA_XML VERSION="3.7.2" SOURCE="gmond">
<CLUSTER NAME="strato" LOCALTIME="1" OWNER="strato" LATLONG="unspecified" URL="unspecified">
@HOST@
<METRIC NAME="x"y<" VAL="a&quot;&lt;&amp;b" TYPE="string" UNITS="" TN="0" TMAX="20" DMAX="0" SLOPE="both">
<EXTRA_DATA>
<EXTRA_ELEMENT NAME="SPOOF_HOST" VAL="10.0.0.1:evil"<&1"/>
</EXTRA_DATA>
</METRIC>
</HOST>
<HOST NAME="odd" IP="10.0.0.2" REPORTED="1" TN="1" >
</HOST>
</CLUSTER>
</GANGLIA_XML>
""".replace(
    b"@HOST@",
    b'<HOST NAME="evil"<&1" IP="10.0.0.1" TAGS="" REPORTED="1" TN="1" TMAX="20" DMAX="0" '
    b'LOCATION="unspecified" GMOND_STARTED="0">',
)


def test_repair_lines_escapes_what_gmond_leaves_raw() -> None:
    with pytest.raises(ganglia.MalformedXmlError):
        ganglia.parse_xml([UNESCAPED])
    for size in (1, 7, len(UNESCAPED)):  # lines cut anywhere between chunks
        chunks = [UNESCAPED[i : i + size] for i in range(0, len(UNESCAPED), size)]
        snapshot = ganglia.parse_xml(ganglia.repair_lines(chunks))
        assert sorted(snapshot.hosts) == ['evil"<&1', "odd"]  # 'odd' is not in gmond's shape: left alone
        metric = snapshot.hosts['evil"<&1'].metrics['x"y<']
        assert metric.value == 'a"<&b'  # escaped by gmond already: not escaped twice
    assert b"".join(ganglia.repair_lines([SAMPLE])) == SAMPLE  # a well-formed dump is unchanged


def test_parse_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ganglia.GangliaError, match="cannot read it"):
        ganglia.parse_file(tmp_path / "missing.xml")
    path = tmp_path / "dump.xml"
    path.write_bytes(SAMPLE)
    assert "web-1" in ganglia.parse_file(path).hosts


@contextmanager
def fake_daemon(behaviour: str) -> Iterator[int]:
    """A TCP server that misbehaves like a broken gmond: slow, trickling, or cut mid-document."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                if behaviour == "cut":
                    conn.sendall(SAMPLE[:300])
                elif behaviour == "trickle":
                    for byte in SAMPLE:
                        if stop.is_set():
                            break
                        try:
                            conn.sendall(bytes([byte]))
                        except OSError:
                            break
                        time.sleep(0.01)
                elif behaviour == "silent":
                    stop.wait(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        server.close()


def test_dead_slow_and_cut_daemons() -> None:
    dead = daemons.free_port()
    with pytest.raises(ganglia.GangliaError, match="refused the connection: is gmond/gmetad running"):
        ganglia.fetch(f"127.0.0.1:{dead}")
    with fake_daemon("silent") as port, pytest.raises(ganglia.GangliaError, match=r"within 0\.3 s"):
        ganglia.fetch(f"127.0.0.1:{port}", read_timeout_s=0.3)
    with fake_daemon("trickle") as port:
        started = time.monotonic()
        with pytest.raises(ganglia.GangliaError, match=r"did not finish sending its XML within 0\.5 s"):
            ganglia.fetch(f"127.0.0.1:{port}", read_timeout_s=0.5)
        assert time.monotonic() - started < 2
    with fake_daemon("cut") as port, pytest.raises(ganglia.GangliaError, match="truncated after 300 bytes"):
        ganglia.fetch(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="not a number"):
        ganglia.fetch("127.0.0.1:http")


def test_addresses_and_metric_specs() -> None:
    assert parse_address("10.0.0.1") == ("10.0.0.1", 8649)
    assert parse_address("gmetad:8651") == ("gmetad", 8651)
    for bad in (":8649", "host:0", "host:70000"):
        with pytest.raises(ConfigError):
            parse_address(bad)
    with pytest.raises(ConfigError, match="metric type"):
        MetricSpec("x", "float32")
    with pytest.raises(ConfigError, match="without spaces"):
        MetricSpec("a b")
    with pytest.raises(ConfigError, match="not a number"):
        encode(MetricSpec("x", "double"), "fast")
    with pytest.raises(ConfigError, match="not an integer"):
        encode(MetricSpec("x", "uint32"), 1.5)
    with pytest.raises(ConfigError, match="exceeds 1472"):
        encode(MetricSpec("x", "string"), "y" * 2000)
    with pytest.raises(ConfigError, match="without ':'"):
        spoof_id("10.0.0.1", "a:b")


def test_gmetric_packets_match_the_gmetric_tool(tmp_path: Path) -> None:
    """Our datagrams are byte-identical to what Ganglia's own gmetric sends."""
    require("gmetric", "Debian package ganglia-monitor")
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    conf = tmp_path / "send.conf"
    conf.write_text(f"udp_send_channel {{\n  host = 127.0.0.1\n  port = {port}\n}}\n")
    import subprocess

    subprocess.run(
        [
            "gmetric",
            "-c",
            str(conf),
            "-n",
            "queue",
            "-v",
            "3",
            "-t",
            "uint32",
            "-u",
            "req",
            "-S",
            "10.1.1.1:llm-0",
            "-g",
            "llm",
            "-x",
            "60",
            "-d",
            "0",
        ],
        check=True,
    )
    theirs = [listener.recv(2000), listener.recv(2000)]
    ours = encode(MetricSpec("queue", "uint32", units="req", group="llm", tmax=60), 3, spoof="10.1.1.1:llm-0")
    # gmetric lists SPOOF_HOST before GROUP; compare the parts, then the extra-data sets.
    assert ours[1] == theirs[1]
    assert len(ours[0]) == len(theirs[0])
    assert ours[0][:-40] != b"" and sorted(ours[0]) == sorted(theirs[0])
    listener.close()


def test_real_gmond_roundtrip_and_spoofed_hosts(tmp_path: Path) -> None:
    with collector(tmp_path, metrics=("load_one", "cpu_user"), collect_every_s=1) as gmond:
        specs = {
            "role": MetricSpec("role", "string", group="llm"),
            "kv_util": MetricSpec("kv_util", "float", units="fraction"),
            "queue": MetricSpec("queue", "uint32"),
            "tiny": MetricSpec("tiny", "int8"),
            "big": MetricSpec("big", "double"),
        }
        with GmetricSender(gmond.udp_address) as sender:
            for index in range(5):
                spoof = spoof_id(f"10.9.0.{index + 1}", f"node-{index}")
                sender.send(specs["role"], "prompt" if index % 2 else "token", spoof=spoof)
                sender.send(specs["kv_util"], index / 10, spoof=spoof)
                sender.send(specs["queue"], index * 7, spoof=spoof)
                sender.send(specs["tiny"], -index, spoof=spoof)
                sender.send(specs["big"], 1.25e12, spoof=spoof)
        snapshot = gmond.wait_for(
            lambda s: all(f"node-{i}" in s.hosts and len(s.hosts[f"node-{i}"].metrics) == 5 for i in range(5))
        )
        for index in range(5):
            host = snapshot.hosts[f"node-{index}"]
            assert host.ip == f"10.9.0.{index + 1}"
            assert host.value("role") == ("prompt" if index % 2 else "token")
            assert host.value("kv_util") == pytest.approx(index / 10)
            assert host.value("queue") == index * 7
            assert host.value("tiny") == -index
            assert host.value("big") == 1.25e12
            assert host.metrics["role"].group == "llm"
            assert host.metrics["kv_util"].units == "fraction"
        # The collector measures itself too (real modules loaded by absolute path).
        own = gmond.wait_for(lambda s: any("load_one" in h.metrics for h in s.hosts.values()))
        assert any(host.value("cpu_user") is not None for host in own.hosts.values())


def test_config_is_unicast_and_bound() -> None:
    text = daemons.GmondConfig(udp_port=1, tcp_port=2).render()
    assert "mcast" not in text
    assert "bind = 127.0.0.1" in text and "host = 127.0.0.1" in text
    assert all(line.strip().startswith('path = "/') for line in text.splitlines() if "path =" in line)
    with pytest.raises(ConfigError, match="network namespace"):
        daemons.gmetad(daemons.GmetadConfig({"a": ["127.0.0.1:1"]}), "/tmp/unused", netns=None)
