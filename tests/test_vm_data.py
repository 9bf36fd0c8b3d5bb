"""Tests for the VM utilisation readers, VM sizes, the ``--data`` entry point and the synthetic generator.

Real-data tests read ``azure-vm-2017`` in the data folder (``strato data list``) and skip when it is
absent; every error path is exercised on small hand-made files written into ``tmp_path``.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data_helpers import shared_data
from strato.errors import ConfigError, TraceFormatError
from strato.traces.vm import (
    RC2017_VCPU_SHARES,
    draw_vcpus,
    load_vm_usage,
    read_azure_2017,
    read_public_vm_trace,
)
from strato.vm.model import VmUsage
from strato.vm.synth import PATTERNS, SynthVmConfig, generate_vms, group_membership, parse_synth_vm_spec

DATA = shared_data()
AZ2017 = DATA / "azure-vm-2017"


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real trace {path} not present (the data folder: strato data list)")
    return path


def raw_header(path: Path) -> list[str]:
    with gzip.open(path, "rt") as handle:
        return handle.readline().strip().split(",")[1:]


def check_error(
    err: TraceFormatError, path: Path, row: int | None, column: str | int | None, *words: str
) -> None:
    assert err.path == str(path)
    assert err.row == row
    assert err.column == column
    for word in words:
        assert word in str(err), f"{word!r} not in {err}"


# ----------------------------------------------------------------------------------- real 2017 data


@pytest.mark.shared_data
def test_microsoft_real_data() -> None:
    needs(AZ2017)
    usage = read_azure_2017(AZ2017)
    assert usage.avg_pct.shape == usage.max_pct.shape == (8004, 100)
    assert usage.vm_ids == raw_header(AZ2017 / "microsoft_avg_100.csv.gz")
    assert usage.vm_ids == raw_header(AZ2017 / "microsoft_max_100.csv.gz")
    assert usage.avg_pct.dtype == usage.max_pct.dtype == np.float64
    for values in (usage.avg_pct, usage.max_pct):
        assert np.isfinite(values).all()
        assert values.min() >= 0 and values.max() <= 100
    assert (usage.max_pct >= usage.avg_pct).all()
    assert set(usage.vm_class) == {"unknown"}
    assert usage.vcpus.dtype == np.int64 and set(usage.vcpus.tolist()) <= set(RC2017_VCPU_SHARES)
    assert usage.vcpus_source == "drawn: RC-2017 approximation, seed 0"
    assert usage.slot_s == 300 and usage.days == pytest.approx(27.79, abs=0.01)
    assert usage.name == "azure-vm-2017/microsoft_100"


@pytest.mark.shared_data
def test_periodic_real_data() -> None:
    usage = read_azure_2017(needs(AZ2017) / "periodic_max_78.csv.gz")
    # 78 columns, one VM (83972) listed twice with identical data.
    assert usage.avg_pct.shape == (8400, 77)
    assert len(set(usage.vm_ids)) == 77 and "83972" in usage.vm_ids
    assert "83972 listed twice" in usage.name
    assert Counter(usage.vm_class) == {"periodic-24h": 40, "periodic-8h": 20, "periodic-1h": 17}
    assert usage.vm_class[usage.vm_ids.index("83972")] == "periodic-1h"
    assert (usage.max_pct >= usage.avg_pct).all()
    assert usage.avg_pct.min() >= 0 and usage.max_pct.max() <= 100


@pytest.mark.shared_data
def test_load_vm_usage_real_directory() -> None:
    needs(AZ2017)
    assert load_vm_usage(str(AZ2017)).vms == 100  # microsoft preferred
    periodic = load_vm_usage(f"{AZ2017}:kind=periodic,seed=4")
    assert periodic.vms == 77 and periodic.vcpus_source.endswith("seed 4")
    assert load_vm_usage(str(AZ2017 / "periodic_avg_78.csv.gz")).vm_class[0].startswith("periodic-")


def test_load_vm_usage_named_set(monkeypatch: pytest.MonkeyPatch) -> None:
    needs(AZ2017)
    monkeypatch.setenv("STRATO_DATA", str(AZ2017.parent))
    assert load_vm_usage("azure-vm-2017").vms == 100  # the default member
    periodic = load_vm_usage("azure-vm-2017:periodic,seed=4")
    assert periodic.vms == 77 and periodic.vcpus_source.endswith("seed 4")
    with pytest.raises(ConfigError, match="the member names the kind"):
        load_vm_usage("azure-vm-2017:periodic,kind=microsoft")


# ---------------------------------------------------------------------------- crafted 2017 files

HEADER = ",vm1,vm2,vm3"
AVG = ["1,10,20,30", "2,11,21,31", "3,12,22,32"]
MAX = ["1,15,25,35", "2,16,26,36", "3,17,27,37"]


def write(path: Path, lines: list[str], *, gz: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_pair(
    directory: Path,
    avg: list[str] | None = None,
    mx: list[str] | None = None,
    *,
    header: str = HEADER,
    max_header: str | None = None,
    gz: bool = False,
    kind: str = "microsoft",
) -> tuple[Path, Path]:
    suffix = ".csv.gz" if gz else ".csv"
    a = write(directory / f"{kind}_avg_3{suffix}", [header, *(AVG if avg is None else avg)], gz=gz)
    m = write(
        directory / f"{kind}_max_3{suffix}",
        [header if max_header is None else max_header, *(MAX if mx is None else mx)],
        gz=gz,
    )
    return a, m


def read_error(path: Path, **kwargs: object) -> TraceFormatError:
    with pytest.raises(TraceFormatError) as excinfo:
        read_azure_2017(path, **kwargs)  # type: ignore[arg-type]
    return excinfo.value


@pytest.mark.parametrize("gz", [False, True])
def test_crafted_pair_reads(tmp_path: Path, gz: bool) -> None:
    avg, mx = write_pair(tmp_path, gz=gz)
    for path in (tmp_path, avg, mx):
        usage = read_azure_2017(path, seed=5)
        assert usage.vm_ids == ["vm1", "vm2", "vm3"]
        assert usage.avg_pct.tolist() == [[10, 20, 30], [11, 21, 31], [12, 22, 32]]
        assert usage.max_pct[:, 0].tolist() == [15, 16, 17]
        assert usage.vcpus.tolist() == draw_vcpus(3, 5).tolist()
        assert usage.vcpus_source == "drawn: RC-2017 approximation, seed 5"


def test_gz_and_plain_agree(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_pair(tmp_path / "a", gz=False)
    write_pair(tmp_path / "b", gz=True)
    plain, packed = read_azure_2017(tmp_path / "a"), read_azure_2017(tmp_path / "b")
    assert np.array_equal(plain.avg_pct, packed.avg_pct) and np.array_equal(plain.max_pct, packed.max_pct)


def test_crlf_and_reordered_max_columns(tmp_path: Path) -> None:
    avg = tmp_path / "microsoft_avg_3.csv"
    avg.write_bytes(("\r\n".join([HEADER, *AVG]) + "\r\n").encode())
    write(
        tmp_path / "microsoft_max_3.csv", [",vm3,vm1,vm2", "1,35,15,25", "2,36,16,26", "3,37,17,27"], gz=False
    )
    usage = read_azure_2017(avg)
    assert usage.vm_ids == ["vm1", "vm2", "vm3"]
    assert usage.max_pct[0].tolist() == [15, 25, 35]


@pytest.mark.parametrize("gz", [False, True])
def test_header_without_vm_ids(tmp_path: Path, gz: bool) -> None:
    avg, _ = write_pair(tmp_path, header=",", gz=gz)
    check_error(read_error(avg), avg, 1, None, "header has no VM ids")


def test_empty_vm_id_in_header(tmp_path: Path) -> None:
    avg, _ = write_pair(tmp_path, header=",vm1,,vm3")
    check_error(read_error(avg), avg, 1, 3, "empty VM id")


@pytest.mark.parametrize("gz", [False, True])
def test_row_with_too_few_cells(tmp_path: Path, gz: bool) -> None:
    avg, _ = write_pair(tmp_path, avg=["1,10,20,30", "2,11,21", "3,12,22,32"], gz=gz)
    check_error(read_error(tmp_path), avg, 3, "vm3", "truncated row: 3 fields, the header has 4")


def test_row_with_too_many_cells(tmp_path: Path) -> None:
    _, mx = write_pair(tmp_path, mx=["1,15,25,35", "2,16,26,36", "3,17,27,37,99"])
    check_error(read_error(tmp_path), mx, 4, 5, "row has 5 fields")


@pytest.mark.parametrize("gz", [False, True])
def test_non_numeric_cell(tmp_path: Path, gz: bool) -> None:
    avg, _ = write_pair(tmp_path, avg=["1,10,20,30", "2,11,abc,31", "3,12,22,32"], gz=gz)
    check_error(read_error(tmp_path), avg, 3, "vm2", "missing value", "'abc' is not a number")


def test_empty_cell_is_missing_value(tmp_path: Path) -> None:
    _, mx = write_pair(tmp_path, mx=["1,15,25,35", "2,16,26,36", "3,17,,37"])
    check_error(read_error(tmp_path), mx, 4, "vm2", "missing value", "empty CPU value")


def test_nan_cell_is_missing_value(tmp_path: Path) -> None:
    avg, _ = write_pair(tmp_path, avg=["1,10,20,30", "2,11,21,nan", "3,12,22,32"])
    check_error(read_error(tmp_path), avg, 3, "vm3", "missing value")


@pytest.mark.parametrize("gz", [False, True])
def test_missing_slot(tmp_path: Path, gz: bool) -> None:
    rows = ["1,10,20,30", "2,11,21,31", "4,12,22,32"]
    avg, _ = write_pair(tmp_path, avg=rows, mx=[r.replace(",", ",5", 1) for r in rows], gz=gz)
    check_error(read_error(tmp_path), avg, 4, 1, "missing slot 3 after row 3 (slot 2)")


def test_missing_slots_range_and_named_slot_column(tmp_path: Path) -> None:
    rows = ["1,1", "2,1", "7,1"]
    avg, _ = write_pair(tmp_path, avg=rows, mx=rows, header="rownames,vm1", kind="periodic")
    check_error(read_error(avg), avg, 4, "rownames", "missing slots 3-6 after row 3")


def test_repeated_slot(tmp_path: Path) -> None:
    rows = ["1,10,20,30", "2,11,21,31", "2,12,22,32"]
    avg, _ = write_pair(tmp_path, avg=rows)
    check_error(read_error(tmp_path), avg, 4, 1, "slot 2 repeats or is out of order after row 3")


def test_first_slot_must_be_one(tmp_path: Path) -> None:
    rows = ["0,10,20,30", "1,11,21,31", "2,12,22,32"]
    avg, _ = write_pair(tmp_path, avg=rows)
    check_error(read_error(tmp_path), avg, 2, 1, "first slot is 0, expected 1")


@pytest.mark.parametrize(("value", "shown"), [("100.5", "100.5"), ("-0.2", "-0.2")])
def test_cpu_out_of_range(tmp_path: Path, value: str, shown: str) -> None:
    _, mx = write_pair(tmp_path, mx=["1,15,25,35", f"2,16,26,{value}", "3,17,27,37"])
    check_error(read_error(tmp_path), mx, 3, "vm3", f"CPU {shown} % of VM vm3 is outside [0, 100]")


def test_float_noise_above_100_is_clipped(tmp_path: Path) -> None:
    write_pair(tmp_path, mx=["1,15,25,100.00005", "2,16,26,36", "3,17,27,37"])
    assert read_azure_2017(tmp_path).max_pct[0, 2] == 100.0


def test_avg_above_max_is_inconsistent(tmp_path: Path) -> None:
    avg, mx = write_pair(tmp_path, avg=["1,10,20,30", "2,11,21,31", "3,12,27.5,32"])
    err = read_error(tmp_path)
    check_error(err, avg, 4, "vm2", "inconsistent pair", "27.5", "27 %", mx.name)


def test_avg_above_max_within_tolerance_raises_max(tmp_path: Path) -> None:
    write_pair(tmp_path, avg=["1,15.005,20,30", "2,11,21,31", "3,12,22,32"])
    usage = read_azure_2017(tmp_path)
    assert usage.max_pct[0, 0] == usage.avg_pct[0, 0] == 15.005


def test_fewer_than_two_slots(tmp_path: Path) -> None:
    avg, _ = write_pair(tmp_path, avg=["1,10,20,30"], mx=["1,15,25,35"])
    check_error(read_error(tmp_path), avg, 2, None, "1 slot(s) of data; at least 2 are needed")


def test_pair_with_different_vms(tmp_path: Path) -> None:
    _, mx = write_pair(tmp_path, max_header=",vm1,vm2,vm4")
    check_error(read_error(tmp_path), mx, 1, None, "VM vm3 of microsoft_avg_3.csv is not in this file")


def test_pair_with_different_slot_counts(tmp_path: Path) -> None:
    _, mx = write_pair(tmp_path, mx=[*MAX, "4,18,28,38"])
    check_error(read_error(tmp_path), mx, 5, None, "slot 4 has no counterpart", "ends at slot 3")


def test_missing_partner_file(tmp_path: Path) -> None:
    avg, mx = write_pair(tmp_path)
    mx.unlink()
    check_error(read_error(avg), mx, None, None, "missing file")


def test_directory_without_files(tmp_path: Path) -> None:
    check_error(read_error(tmp_path), tmp_path, None, None, "missing file", "microsoft_avg_*")


def test_corrupt_gzip(tmp_path: Path) -> None:
    avg, _ = write_pair(tmp_path, gz=True)
    avg.write_bytes(avg.read_bytes()[:30])
    check_error(read_error(tmp_path), avg, None, None, "corrupt gzip")


def test_periodic_kind_ids_and_classes(tmp_path: Path) -> None:
    header = "rownames,a 24,b 8,c 1.5"
    write_pair(tmp_path, header=header, kind="periodic")
    write_pair(tmp_path, kind="microsoft")
    usage = read_azure_2017(tmp_path, kind="periodic")
    assert usage.vm_ids == ["a", "b", "c"]
    assert usage.vm_class == ["periodic-24h", "periodic-8h", "periodic-1.5h"]
    assert read_azure_2017(tmp_path).vm_ids == ["vm1", "vm2", "vm3"]  # microsoft preferred


def test_periodic_column_without_period(tmp_path: Path) -> None:
    avg, _ = write_pair(tmp_path, header="rownames,a 24,b,c 1", kind="periodic")
    check_error(read_error(tmp_path), avg, 1, "b", "is not '<vm id> <period hours>'")


def test_periodic_repeated_vm(tmp_path: Path) -> None:
    header = "rownames,a 24,b 8,a 1"
    write_pair(
        tmp_path,
        header=header,
        avg=["1,10,20,10", "2,11,21,11"],
        mx=["1,15,25,15", "2,16,26,16"],
        kind="periodic",
    )
    usage = read_azure_2017(tmp_path)
    assert usage.vm_ids == ["a", "b"] and usage.vm_class == ["periodic-24h", "periodic-8h"]
    assert "VM a listed twice" in usage.name
    avg, _ = write_pair(
        tmp_path,
        header=header,
        avg=["1,10,20,10", "2,11,21,12"],
        mx=["1,15,25,15", "2,16,26,16"],
        kind="periodic",
    )
    check_error(
        read_error(tmp_path), avg, 1, "a 1", "VM a appears in columns 'a 24' and 'a 1' with different data"
    )


def test_unknown_kind(tmp_path: Path) -> None:
    write_pair(tmp_path)
    with pytest.raises(ConfigError, match="kind must be one of microsoft, periodic"):
        read_azure_2017(tmp_path, kind="google")


# -------------------------------------------------------------------------------------- VM sizes


def test_vcpus_file(tmp_path: Path) -> None:
    write_pair(tmp_path)
    sizes = write(tmp_path / "sizes.csv", ["vm_id,vcpus", "vm3,8", "vm1,2", "other,4", "vm2,1"], gz=False)
    usage = read_azure_2017(tmp_path, vcpus=sizes)
    assert usage.vcpus.tolist() == [2, 1, 8]
    assert usage.vcpus_source == f"file: {sizes}"


def test_vcpus_file_missing_vm(tmp_path: Path) -> None:
    write_pair(tmp_path)
    sizes = write(tmp_path / "sizes.csv", ["vm1,2", "vm2,4"], gz=False)
    check_error(read_error(tmp_path, vcpus=sizes), sizes, None, None, "no vCPU count for 1 VM(s)", "vm3")


@pytest.mark.parametrize(
    ("line", "column", "words"),
    [
        ("vm2,two", "vcpus", "'two' is not a number"),
        ("vm2,0", "vcpus", "not a whole number >= 1"),
        ("vm1,4", "vm_id", "twice"),
    ],
)
def test_vcpus_file_bad_rows(tmp_path: Path, line: str, column: str, words: str) -> None:
    write_pair(tmp_path)
    sizes = write(tmp_path / "sizes.csv", ["vm1,2", line, "vm3,1"], gz=False)
    check_error(read_error(tmp_path, vcpus=sizes), sizes, 2, column, words)


def test_draw_vcpus_reproducible_and_distributed() -> None:
    assert np.array_equal(draw_vcpus(50, 7), draw_vcpus(50, 7))
    assert not np.array_equal(draw_vcpus(50, 7), draw_vcpus(50, 8))
    sizes = draw_vcpus(200_000, 1)
    assert sizes.dtype == np.int64
    counts = Counter(sizes.tolist())
    assert set(counts) == set(RC2017_VCPU_SHARES)
    for size, share in RC2017_VCPU_SHARES.items():
        assert counts[size] / sizes.size == pytest.approx(share, abs=0.005)
    assert draw_vcpus(0, 1).shape == (0,)
    with pytest.raises(ConfigError):
        draw_vcpus(-1, 0)


# ------------------------------------------------------------------------------ public trace (V1)

VMTABLE = [
    "a,s1,d1,0,2000,90,20,80,Interactive,2,4",
    "b,s1,d2,0,2000,50,10,40,Delay-insensitive,>24,>64",
    "c,s2,d3,300,2000,70,15,60,Unknown,4,8",
]
# Two files, 4 slots (0..900 s); c has no reading at 0 s.
READINGS_1 = ["0,a,1,30,20", "0,b,2,40,10", "300,a,1,31,21", "300,b,2,41,11", "300,c,3,50,15"]
READINGS_2 = [
    "600,a,1,32,22",
    "600,b,2,42,12",
    "600,c,3,51,16",
    "900,a,1,33,23",
    "900,b,2,43,13",
    "900,c,3,52,17",
]


def write_public(
    directory: Path, vmtable: list[str] | None = None, r1: list[str] | None = None, *, gz: bool = False
) -> tuple[Path, list[Path]]:
    suffix = ".csv.gz" if gz else ".csv"
    table = write(directory / f"vmtable{suffix}", VMTABLE if vmtable is None else vmtable, gz=gz)
    readings = [
        write(directory / f"vm_cpu_readings-file-1-of-2{suffix}", READINGS_1 if r1 is None else r1, gz=gz),
        write(directory / f"vm_cpu_readings-file-2-of-2{suffix}", READINGS_2, gz=gz),
    ]
    return table, readings


def public_error(table: Path, readings: list[Path], **kwargs: float) -> TraceFormatError:
    with pytest.raises(TraceFormatError) as excinfo:
        read_public_vm_trace(table, readings, **kwargs)
    return excinfo.value


@pytest.mark.parametrize("gz", [False, True])
def test_public_trace_drops_incomplete_vms(tmp_path: Path, gz: bool) -> None:
    table, readings = write_public(tmp_path, gz=gz)
    usage = read_public_vm_trace(table, readings)
    assert usage.vm_ids == ["a", "b"]
    assert usage.avg_pct.tolist() == [[20, 10], [21, 11], [22, 12], [23, 13]]
    assert usage.max_pct[:, 0].tolist() == [30, 31, 32, 33]
    assert usage.vcpus.tolist() == [2, 24]  # '>24' read as its bound
    assert usage.vm_class == ["interactive", "delay-insensitive"]
    assert "kept 2 of 3 VMs" in usage.name
    assert "1 dropped: not read in every slot (1 partly, 0 not at all)" in usage.name
    assert "1 core counts given as '>N' buckets read as N" in usage.name
    assert usage.vcpus_source.startswith("data")


def test_public_trace_window(tmp_path: Path) -> None:
    table, readings = write_public(tmp_path)
    usage = read_public_vm_trace(table, readings, start_s=300, days=600 / 86400)
    assert usage.vm_ids == ["a", "b", "c"] and usage.slots == 2
    assert usage.avg_pct[:, 2].tolist() == [15, 16]
    assert usage.vm_class[2] == "unknown" and "kept 3 of 3" in usage.name
    with pytest.raises(ConfigError, match="not on the 300 s grid"):
        read_public_vm_trace(table, readings, start_s=100)
    with pytest.raises(ConfigError, match="runs past the last reading"):
        read_public_vm_trace(table, readings, start_s=600, days=1)
    with pytest.raises(ConfigError, match="at least 2"):
        read_public_vm_trace(table, readings, start_s=900)


def test_public_trace_unknown_vm_readings_ignored(tmp_path: Path) -> None:
    table, readings = write_public(tmp_path, r1=[*READINGS_1, "0,zz,1,2,1"])
    assert "readings of 1 VMs not in vmtable.csv ignored" in read_public_vm_trace(table, readings).name


@pytest.mark.parametrize(
    ("bad", "row", "column", "words"),
    [
        ("300,a,1,31", 3, "avgcpu", "truncated row: 4 fields, the header has 5"),
        ("300,a,1,x,21", 3, "maxcpu", "missing value: 'x' is not a number"),
        ("300,a,1,31,", 3, "avgcpu", "missing value: empty"),
        ("300,a,1,131,21", 3, "maxcpu", "CPU 131 % is outside [0, 100]"),
        ("300,a,1,21,31", 3, "avgcpu", "avgcpu 31 exceeds maxcpu 21"),
        ("450,a,1,31,21", 3, "timestamp", "not on the 300 s grid"),
        ("600,a,1,31,21", 3, "timestamp", "second reading of VM a at timestamp 600"),
    ],
)
def test_public_trace_bad_readings(tmp_path: Path, bad: str, row: int, column: str, words: str) -> None:
    r1 = list(READINGS_1)
    r1[2] = bad
    table, readings = write_public(tmp_path, r1=r1)
    # A repeated reading is reported where the second one is: the second file, row 1.
    where = (readings[1], 1) if "second" in words else (readings[0], row)
    check_error(public_error(table, readings), where[0], where[1], column, words)


@pytest.mark.parametrize(
    ("bad", "column", "words"),
    [
        ("b,s1,d2,0,2000,50,10,40,Batch,2,4", "vmcategory", "'Batch' is not Interactive"),
        ("b,s1,d2,0,2000,50,10,40,Interactive,many,4", "vmcorecount", "'many' is neither an integer"),
        ("b,s1,d2,0,2000,50,10,40,Interactive,2", "vmmemory", "truncated row: 10 fields, the header has 11"),
        ("a,s1,d2,0,2000,50,10,40,Interactive,2,4", "vmid", "VM a is listed twice (first on row 1)"),
    ],
)
def test_public_trace_bad_vmtable(tmp_path: Path, bad: str, column: str, words: str) -> None:
    table, readings = write_public(tmp_path, vmtable=[VMTABLE[0], bad, VMTABLE[2]])
    check_error(public_error(table, readings), table, 2, column, words)


def test_public_trace_no_complete_vm(tmp_path: Path) -> None:
    table, readings = write_public(tmp_path, r1=["0,a,1,30,20"])
    with pytest.raises(ConfigError, match="no VM has a reading in every one of the 4 slots"):
        read_public_vm_trace(table, readings)


def test_load_vm_usage_public_directory(tmp_path: Path) -> None:
    write_public(tmp_path)
    assert load_vm_usage(str(tmp_path)).vm_ids == ["a", "b"]
    assert load_vm_usage(f"{tmp_path}:start_s=300,days=0.00694444").vms == 3
    with pytest.raises(ConfigError, match="'kind' does not apply to the public VM trace"):
        load_vm_usage(f"{tmp_path}:kind=periodic")


# ------------------------------------------------------------------------------------ entry point


def test_load_vm_usage_crafted_2017(tmp_path: Path) -> None:
    write_pair(tmp_path, header="rownames,a 24,b 8,c 1", kind="periodic")
    usage = load_vm_usage(str(tmp_path), seed=9)
    assert usage.vm_class[0] == "periodic-24h" and usage.vcpus_source.endswith("seed 9")
    assert load_vm_usage(f"{tmp_path}:seed=2").vcpus_source.endswith("seed 2")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("/no/such/place", "no such file or directory"),
        ("", "empty workload spec"),
        ("{tmp}", "not a VM data set strato knows"),
        ("{tmp}:colour=red", "unknown option 'colour' (known: kind"),
        ("{tmp}:days", "no such file or directory"),  # no '=': part of the path, which does not exist
    ],
)
def test_load_vm_usage_rejects(tmp_path: Path, spec: str, words: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError) as excinfo:
        load_vm_usage(spec.format(tmp=tmp_path))
    message = str(excinfo.value)
    assert words in message
    if "known" not in words:
        assert "accepted: synthetic" in message


# -------------------------------------------------------------------------------------- synthetic


def correlations(values: np.ndarray) -> np.ndarray:
    return np.corrcoef(values.T)


def test_synthetic_default_is_valid_and_deterministic() -> None:
    config = SynthVmConfig()
    usage = generate_vms(config)
    assert usage.avg_pct.shape == (28 * 288, 100)
    for values in (usage.avg_pct, usage.max_pct):
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 100
    assert (usage.max_pct >= usage.avg_pct).all()
    assert (usage.max_pct > usage.avg_pct).mean() > 0.9
    assert set(usage.vcpus.tolist()) <= set(RC2017_VCPU_SHARES)
    assert Counter(usage.vm_class) == {"diurnal": 30, "periodic": 20, "bursty": 20, "flat": 30}
    again = generate_vms(SynthVmConfig())
    assert np.array_equal(usage.avg_pct, again.avg_pct) and np.array_equal(usage.max_pct, again.max_pct)
    assert usage.vm_class == again.vm_class and np.array_equal(usage.vcpus, again.vcpus)
    other = generate_vms(SynthVmConfig(seed=1))
    assert not np.array_equal(usage.avg_pct, other.avg_pct)


def test_synthetic_mix_counts() -> None:
    usage = generate_vms(SynthVmConfig(vms=7, days=1, mix={"periodic": 2, "flat": 1}))
    assert Counter(usage.vm_class) == {"periodic": 5, "flat": 2}
    usage = generate_vms(parse_synth_vm_spec("synthetic:vms=10,days=1,diurnal=1,bursty=1,groups=0"))
    assert Counter(usage.vm_class) == {"diurnal": 5, "bursty": 5}


def test_synthetic_correlated_groups() -> None:
    config = SynthVmConfig(vms=100, days=14, seed=2)
    usage, group = generate_vms(config), group_membership(config)
    assert sorted(Counter(group[group >= 0].tolist()).values()) == [5, 5, 5, 5]
    corr = correlations(usage.max_pct)
    upper = np.triu(np.ones_like(corr, dtype=bool), k=1)
    same = (group[:, None] == group[None, :]) & (group[:, None] >= 0)
    within = corr[upper & same].mean()
    between = corr[upper & ~same].mean()
    assert within > between + 0.3, (within, between)
    for g in range(4):
        members = np.flatnonzero(group == g)
        assert len({usage.vm_class[i] for i in members}) == 1
        assert len(set(usage.vcpus[members].tolist())) == 1
        assert usage.vm_class[members[0]] != "flat"
    # With no groups, the same VMs' usage is no longer tied together.
    free = generate_vms(SynthVmConfig(vms=100, days=14, seed=2, correlated_groups=0))
    assert correlations(free.max_pct)[upper & same].mean() < within - 0.2


def test_synthetic_classes_differ_in_shape() -> None:
    usage = generate_vms(SynthVmConfig(vms=80, days=14, seed=4, correlated_groups=0))
    cls = np.array(usage.vm_class)
    avg, mx = usage.avg_pct, usage.max_pct
    per_day = usage.slots_per_day
    day_lag = np.array([np.corrcoef(avg[:-per_day, j], avg[per_day:, j])[0, 1] for j in range(usage.vms)])
    spread = avg.std(axis=0)
    peak = np.percentile(mx, 99, axis=0) - np.median(avg, axis=0)
    assert day_lag[cls == "diurnal"].min() > 0.5  # repeats every day
    assert spread[cls == "flat"].max() < 3  # steady
    assert spread[cls == "flat"].max() < spread[cls == "diurnal"].min()
    assert np.median(peak[cls == "bursty"]) > 40  # low median, high bursts
    assert np.median(peak[cls == "periodic"]) > 30
    weekday = avg[: 5 * per_day][:, cls == "diurnal"].mean()
    weekend = avg[5 * per_day : 7 * per_day][:, cls == "diurnal"].mean()
    assert weekend < weekday


def test_synthetic_spec_parsing() -> None:
    config = parse_synth_vm_spec("synthetic:vms=200,days=14,seed=3")
    assert (config.vms, config.days, config.seed) == (200, 14.0, 3)
    assert parse_synth_vm_spec("synthetic", seed=6).seed == 6
    assert parse_synth_vm_spec("synthetic:seed=1", seed=6).seed == 1
    usage = load_vm_usage("synthetic:vms=20,days=2", seed=3)
    assert usage.name == "synthetic:vms=20,days=2,seed=3" and usage.vms == 20 and usage.slots == 576
    assert np.array_equal(usage.avg_pct, generate_vms(SynthVmConfig(vms=20, days=2, seed=3)).avg_pct)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("synthetic:vm=3", "unknown key 'vm' (known keys: vms, days, seed, groups"),
        ("synthetic:vms=x", "vms must be an integer"),
        ("synthetic:vms=0", "vms must be a positive integer"),
        ("synthetic:days=0.001", "under 2 slots"),
        ("synthetic:vms=10,groups=3", "3 correlated groups of 5 VMs do not fit"),
        ("synthetic:diurnal=-1", "non-negative"),
        ("synthetic:", "nothing after ':'"),
        ("synthetic:seed=1,seed=2", "given twice"),
    ],
)
def test_synthetic_spec_errors(spec: str, words: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_vm_usage(spec)
    assert words in str(excinfo.value)


def test_small_synthetic_without_room_for_groups() -> None:
    usage = generate_vms(SynthVmConfig(vms=3, days=0.5))
    assert isinstance(usage, VmUsage) and usage.vms == 3
    assert (group_membership(SynthVmConfig(vms=3, days=0.5)) == -1).all()
    assert set(usage.vm_class) <= set(PATTERNS)
