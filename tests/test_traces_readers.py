"""Tests for the Azure Functions 2019 reader/writer and the 2021 reader.

Real-data tests read the data folder (``strato data list``) and skip when a trace is absent; every error
path is exercised on a small hand-made file written into ``tmp_path``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_helpers import shared_data
from strato.errors import ConfigError, TraceFormatError
from strato.traces.faas.azure2019 import read_azure2019, write_azure2019
from strato.traces.faas.azure2021 import read_azure2021
from strato.traces.faas.model import DURATION_PERCENTILES, Workload

DATA = shared_data()
AZ2019 = DATA / "azure-functions-2019"
AZ2021 = DATA / "azure-functions-2021" / "sample-200-rows.csv"


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real trace {path} not present (the data folder: strato data list)")
    return path


# --------------------------------------------------------------------------------------- fixtures

INV_HEADER = "HashOwner,HashApp,HashFunction,Trigger,10,11,12,13"
INV_ROWS = [
    "o1,a1,f1,http,0,1,2,3",
    "o1,a1,f2,timer,1,0,0,0",
    "o2,a2,f3,queue,5,5,5,5",
]
DUR_HEADER = (
    "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,"
    "percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,"
    "percentile_Average_99,percentile_Average_100"
)
DUR_ROWS = [
    "o1,a1,f1,100.5,6,1,900,1,2,50,100,150,800,900",
    "o1,a1,f2,20,1,20,20,20,20,20,20,20,20,20",
    "o2,a2,f3,3000,20,1000,5000,1000,1000,2000,3000,4000,5000,5000",
]
MEM_HEADER = (
    "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5,"
    "AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,AverageAllocatedMb_pct95,"
    "AverageAllocatedMb_pct99,AverageAllocatedMb_pct100"
)
MEM_ROWS = [
    "o1,a1,10,150,140,141,142,150,155,160,170,180",
    "o2,a2,10,300.25,250,260,270,300,310,320,330,340",
]


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def make_trace(
    directory: Path,
    *,
    inv: tuple[str, list[str]] = (INV_HEADER, INV_ROWS),
    dur: tuple[str, list[str]] = (DUR_HEADER, DUR_ROWS),
    mem: tuple[str, list[str]] = (MEM_HEADER, MEM_ROWS),
    names: tuple[str, str, str] = ("invocations.csv", "durations.csv", "memory.csv"),
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_csv(directory / names[0], *inv)
    write_csv(directory / names[1], *dur)
    write_csv(directory / names[2], *mem)
    return directory


def replace_row(rows: list[str], index: int, row: str) -> list[str]:
    return [row if i == index else r for i, r in enumerate(rows)]


def check_error(
    err: TraceFormatError, path: Path, row: int | None, column: str | int | None, *words: str
) -> None:
    message = str(err)
    assert err.path == str(path), message
    assert str(path) in message
    assert err.row == row, message
    assert err.column == column, message
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert f"column {column}" in message
    for word in words:
        assert word in message, message


def read_error(path: Path, **files: Path) -> TraceFormatError:
    with pytest.raises(TraceFormatError) as excinfo:
        read_azure2019(path, **files)
    return excinfo.value


# ----------------------------------------------------------------------------------- real 2019 data


@pytest.mark.shared_data
def test_sampled_1350_facts() -> None:
    prefix = needs(AZ2019 / "sampled" / "1350_inv.csv").with_name("1350")
    w = read_azure2019(prefix)
    assert w.n_functions == 1350
    assert int(w.invocation_counts().sum()) == 927272
    assert w.minute_counts is not None and w.minute_counts.shape == (1350, 1440)
    assert w.first_minute == 0
    # The sampler overwrote HashApp with HashFunction: every function is its own app.
    assert w.n_apps == 1350
    assert set(w.function_trigger.tolist()) == {"unknown"}
    assert w.notes == ()
    assert np.all(np.diff(w.duration_percentiles_ms, axis=1) >= 0)


@pytest.mark.shared_data
def test_sampled_file_and_prefix_agree() -> None:
    by_file = read_azure2019(needs(AZ2019 / "sampled" / "100_inv.csv"))
    by_prefix = read_azure2019(AZ2019 / "sampled" / "100")
    assert by_file.minute_counts is not None and by_prefix.minute_counts is not None
    assert np.array_equal(by_file.minute_counts, by_prefix.minute_counts)
    assert np.array_equal(by_file.app_memory_mb, by_prefix.app_memory_mb)
    assert int(by_file.invocation_counts().sum()) == 86751


@pytest.mark.shared_data
def test_sampled_directory_is_ambiguous() -> None:
    directory = needs(AZ2019 / "sampled")
    err = read_error(directory)
    check_error(err, directory, None, None, "several traces", "1350_inv.csv")


@pytest.mark.shared_data
def test_raw_format_100_8h_facts() -> None:
    directory = needs(AZ2019 / "raw-format-100-8h")
    w = read_azure2019(directory)
    with (directory / "invocations.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (directory / "memory.csv").open() as f:
        memory = {r["HashApp"]: float(r["AverageAllocatedMb"]) for r in csv.DictReader(f)}
    assert w.n_functions == 100
    assert int(w.invocation_counts().sum()) == 339657
    assert w.first_minute == 479
    assert w.minute_counts is not None and w.minute_counts.shape == (100, 480)
    assert w.n_apps == len({r["HashApp"] for r in rows})
    assert w.function_trigger.tolist() == [r["Trigger"] for r in rows]
    for app, mb in zip(w.app_ids.tolist(), w.app_memory_mb.tolist(), strict=True):
        assert mb == memory[app]
    assert w.notes == ()


@pytest.mark.shared_data
def test_raw_format_10_day_facts() -> None:
    w = read_azure2019(needs(AZ2019 / "raw-format-10-day"))
    assert w.n_functions == 10
    assert int(w.invocation_counts().sum()) == 13037064
    assert w.first_minute == 0
    assert w.minute_counts is not None and w.minute_counts.shape == (10, 1440)


@pytest.mark.shared_data
def test_real_round_trip(tmp_path: Path) -> None:
    original = read_azure2019(needs(AZ2019 / "raw-format-100-8h"))
    write_azure2019(original, tmp_path / "out")
    assert_same_workload(original, read_azure2019(tmp_path / "out"))


# --------------------------------------------------------------------------- small 2019 fixtures


def test_original_layout(tmp_path: Path) -> None:
    w = read_azure2019(make_trace(tmp_path / "t"))
    assert w.function_ids.tolist() == ["f1", "f2", "f3"]
    assert w.app_ids.tolist() == ["a1", "a2"]
    assert w.function_app.tolist() == [0, 0, 1]
    assert w.function_trigger.tolist() == ["http", "timer", "queue"]
    assert w.first_minute == 9
    assert w.minute_counts is not None
    assert w.minute_counts.tolist() == [[0, 1, 2, 3], [1, 0, 0, 0], [5, 5, 5, 5]]
    assert w.app_memory_mb.tolist() == [150.0, 300.25]
    assert w.duration_mean_ms.tolist() == [100.5, 20.0, 3000.0]
    assert w.duration_percentiles_ms[0].tolist() == [1, 2, 50, 100, 150, 800, 900]
    assert w.duration_percentiles_ms.shape == (3, len(DURATION_PERCENTILES))
    assert w.notes == ()
    assert w.source == str(tmp_path / "t" / "invocations.csv")


def test_public_file_names_and_explicit_files(tmp_path: Path) -> None:
    names = (
        "invocations_per_function_md.anon.d01.csv",
        "function_durations_percentiles.anon.d01.csv",
        "app_memory_percentiles.anon.d01.csv",
    )
    directory = make_trace(tmp_path / "public", names=names)
    by_dir = read_azure2019(directory)
    by_file = read_azure2019(directory / names[0])
    other = make_trace(
        tmp_path / "other", mem=(MEM_HEADER, replace_row(MEM_ROWS, 0, MEM_ROWS[0].replace("150", "99", 1)))
    )
    overridden = read_azure2019(directory, memory=other / "memory.csv")
    assert by_dir.app_memory_mb.tolist() == by_file.app_memory_mb.tolist() == [150.0, 300.25]
    assert overridden.app_memory_mb.tolist() == [99.0, 300.25]


def test_crlf_and_trailing_blank_lines(tmp_path: Path) -> None:
    directory = make_trace(tmp_path / "t")
    inv = directory / "invocations.csv"
    inv.write_bytes(inv.read_bytes().replace(b"\n", b"\r\n") + b"\r\n\r\n")
    w = read_azure2019(directory)
    assert w.minute_counts is not None and int(w.minute_counts.sum()) == 27


def test_sampled_layout(tmp_path: Path) -> None:
    directory = tmp_path / "sampled"
    inv = (
        "HashFunction,HashOwner,HashApp,minute_1,minute_2,minute_3",
        ["f1,f1,f1,1,2,3", "f2,f2,f2,0,0,7"],
    )
    dur = (
        DUR_HEADER,
        [DUR_ROWS[0].replace("o1,a1,f1", "f1,f1,f1"), DUR_ROWS[1].replace("o1,a1,f2", "f2,f2,f2")],
    )
    mem = (MEM_HEADER, ["f1,f1,1,10,1,1,1,1,1,1,1,1", "f2,f2,1,20,1,1,1,1,1,1,1,1"])
    make_trace(directory, inv=inv, dur=dur, mem=mem, names=("7_inv.csv", "7_run.csv", "7_mem.csv"))
    for path in (directory, directory / "7", directory / "7_inv.csv"):
        w = read_azure2019(path)
        assert w.name.endswith("/7")
        assert w.first_minute == 0
        assert w.function_trigger.tolist() == ["unknown", "unknown"]
        assert w.app_memory_mb.tolist() == [10.0, 20.0]
        assert w.invocation_counts().tolist() == [6, 7]


def test_per_function_memory_takes_app_value_once(tmp_path: Path) -> None:
    header = "HashFunction," + MEM_HEADER
    rows = [
        "f1,o1,a1,10,150,1,1,1,1,1,1,1,1",
        "f2,o1,a1,10,150,1,1,1,1,1,1,1,1",
        "f3,o2,a2,5,64,1,1,1,1,1,1,1,1",
    ]
    w = read_azure2019(make_trace(tmp_path / "same", mem=(header, rows)))
    assert w.app_memory_mb.tolist() == [150.0, 64.0]
    assert w.notes == ()
    disagreeing = replace_row(rows, 1, "f2,o1,a1,10,180,1,1,1,1,1,1,1,1")
    w = read_azure2019(make_trace(tmp_path / "differ", mem=(header, disagreeing)))
    assert w.app_memory_mb.tolist() == [180.0, 64.0]
    assert any("disagree" in note for note in w.notes)


def test_imputation_and_ignored_rows(tmp_path: Path) -> None:
    dur_rows = [DUR_ROWS[0], DUR_ROWS[2], "o9,a9,f9,1,1,1,1,1,1,1,1,1,1,1"]
    mem_rows = [MEM_ROWS[1], "o9,a9,1,1,1,1,1,1,1,1,1,1"]
    inv_rows = [*INV_ROWS, "o3,a3,f4,http,0,0,0,1"]
    w = read_azure2019(
        make_trace(
            tmp_path / "t", inv=(INV_HEADER, inv_rows), dur=(DUR_HEADER, dur_rows), mem=(MEM_HEADER, mem_rows)
        )
    )
    # f2 and f4 lack durations: they copy the lower-median function of {f1: 100.5, f3: 3000}, i.e. f1.
    assert w.duration_mean_ms.tolist() == [100.5, 100.5, 3000.0, 100.5]
    assert w.duration_percentiles_ms[1].tolist() == w.duration_percentiles_ms[0].tolist()
    # a1 and a3 lack memory: the median of the known apps (only a2).
    assert w.app_memory_mb.tolist() == [300.25, 300.25, 300.25]
    notes = " | ".join(w.notes)
    assert "durations imputed for 2 of 4 functions" in notes
    assert "memory imputed for 2 of 3 apps" in notes
    assert "1 durations rows for functions not in the invocation file were ignored" in notes
    assert "1 memory rows for apps not in the invocation file were ignored" in notes


def test_non_monotone_percentiles_are_clipped(tmp_path: Path) -> None:
    rows = replace_row(DUR_ROWS, 0, "o1,a1,f1,100,6,1,900,1,2,50,40,150,800,700")
    w = read_azure2019(make_trace(tmp_path / "t", dur=(DUR_HEADER, rows)))
    assert w.duration_percentiles_ms[0].tolist() == [1, 2, 50, 50, 150, 800, 800]
    assert any("not non-decreasing" in note and "1 functions" in note for note in w.notes)


# ------------------------------------------------------------------------------------ 2019 errors


def test_missing_files(tmp_path: Path) -> None:
    check_error(read_error(tmp_path / "nowhere"), tmp_path / "nowhere", None, None, "missing file")
    check_error(read_error(tmp_path), tmp_path, None, None, "missing file")
    directory = make_trace(tmp_path / "t")
    (directory / "memory.csv").unlink()
    check_error(read_error(directory), directory / "memory.csv", None, None, "missing file", "memory=")


def test_ambiguous_directory(tmp_path: Path) -> None:
    directory = make_trace(tmp_path / "s", names=("1_inv.csv", "1_run.csv", "1_mem.csv"))
    make_trace(directory, names=("2_inv.csv", "2_run.csv", "2_mem.csv"))
    check_error(read_error(directory), directory, None, None, "several traces", "1_inv.csv", "2_inv.csv")


@pytest.mark.parametrize("which", ["invocations.csv", "durations.csv", "memory.csv"])
def test_empty_file(tmp_path: Path, which: str) -> None:
    directory = make_trace(tmp_path / "t")
    (directory / which).write_text("\n\n")
    check_error(read_error(directory), directory / which, None, None, "empty file")


def test_header_only_invocations(tmp_path: Path) -> None:
    directory = make_trace(tmp_path / "t", inv=(INV_HEADER, []))
    check_error(read_error(directory), directory / "invocations.csv", 2, None, "no data rows")


def test_missing_columns(tmp_path: Path) -> None:
    directory = make_trace(
        tmp_path / "inv",
        inv=(INV_HEADER.replace("HashApp,", ""), [r.replace("a1,", "").replace("a2,", "") for r in INV_ROWS]),
    )
    check_error(
        read_error(directory),
        directory / "invocations.csv",
        1,
        "HashApp",
        "missing required column(s) HashApp",
    )

    header = DUR_HEADER.replace(",percentile_Average_50", "").replace(",Average,", ",Mean,")
    directory = make_trace(tmp_path / "dur", dur=(header, [r.rsplit(",", 1)[0] for r in DUR_ROWS]))
    check_error(
        read_error(directory),
        directory / "durations.csv",
        1,
        "Average",
        "missing required column(s) Average, percentile_Average_50",
    )

    directory = make_trace(
        tmp_path / "mem", mem=(MEM_HEADER.replace("AverageAllocatedMb,", "Mb,", 1), MEM_ROWS)
    )
    check_error(
        read_error(directory), directory / "memory.csv", 1, "AverageAllocatedMb", "AverageAllocatedMb"
    )


def test_unexpected_id_column(tmp_path: Path) -> None:
    header = INV_HEADER.replace("Trigger", "Region")
    directory = make_trace(tmp_path / "t", inv=(header, INV_ROWS))
    check_error(read_error(directory), directory / "invocations.csv", 1, 4, "unexpected column 'Region'")


def test_non_contiguous_minutes(tmp_path: Path) -> None:
    directory = make_trace(tmp_path / "t", inv=(INV_HEADER.replace(",12,", ",14,"), INV_ROWS))
    check_error(
        read_error(directory), directory / "invocations.csv", 1, "14", "non-contiguous", "14 follows 11"
    )


def test_zero_minute_label(tmp_path: Path) -> None:
    directory = make_trace(tmp_path / "t", inv=("HashOwner,HashApp,HashFunction,Trigger,0,1,2,3", INV_ROWS))
    check_error(read_error(directory), directory / "invocations.csv", 1, "0", "1-based")


def test_truncated_rows(tmp_path: Path) -> None:
    rows = replace_row(INV_ROWS, 1, "o1,a1,f2,timer,1,0")
    directory = make_trace(tmp_path / "inv", inv=(INV_HEADER, rows))
    check_error(read_error(directory), directory / "invocations.csv", 3, "12", "truncated row", "6 fields")

    rows = [*INV_ROWS[:2], "", INV_ROWS[2]]
    directory = make_trace(tmp_path / "blank", inv=(INV_HEADER, rows))
    check_error(read_error(directory), directory / "invocations.csv", 4, "HashApp", "truncated row")

    rows = replace_row(INV_ROWS, 2, INV_ROWS[2] + ",9")
    directory = make_trace(tmp_path / "long", inv=(INV_HEADER, rows))
    check_error(read_error(directory), directory / "invocations.csv", 4, 9, "9 fields")

    rows = replace_row(DUR_ROWS, 2, DUR_ROWS[2].rsplit(",", 3)[0])
    directory = make_trace(tmp_path / "dur", dur=(DUR_HEADER, rows))
    check_error(
        read_error(directory), directory / "durations.csv", 4, "percentile_Average_75", "truncated row"
    )

    rows = replace_row(MEM_ROWS, 0, "o1,a1,10")
    directory = make_trace(tmp_path / "mem", mem=(MEM_HEADER, rows))
    check_error(read_error(directory), directory / "memory.csv", 2, "AverageAllocatedMb", "truncated row")


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("1.5", ("'1.5' is not an integer",)),
        ("abc", ("'abc' is not an integer",)),
        ("", ("'' is not an integer",)),
        ("-2", ("negative invocation count -2",)),
        ("99999999999999999999", ("too large",)),
    ],
)
def test_bad_invocation_counts(tmp_path: Path, cell: str, words: tuple[str, ...]) -> None:
    rows = replace_row(INV_ROWS, 2, f"o2,a2,f3,queue,5,5,{cell},5")
    directory = make_trace(tmp_path / "t", inv=(INV_HEADER, rows))
    check_error(read_error(directory), directory / "invocations.csv", 4, "12", *words)


def test_duplicate_function(tmp_path: Path) -> None:
    rows = [*INV_ROWS, "o1,a1,f1,http,0,0,0,0"]
    directory = make_trace(tmp_path / "t", inv=(INV_HEADER, rows))
    check_error(
        read_error(directory), directory / "invocations.csv", 5, "HashFunction", "f1 appears twice", "row 2"
    )


def test_empty_id(tmp_path: Path) -> None:
    rows = replace_row(INV_ROWS, 0, "o1,,f1,http,0,1,2,3")
    directory = make_trace(tmp_path / "t", inv=(INV_HEADER, rows))
    check_error(read_error(directory), directory / "invocations.csv", 2, "HashApp", "empty id")


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ("o1,a1,f2,-20,1,20,20,20,20,20,20,20,20,20", "Average", ("'-20' is negative",)),
        ("o1,a1,f2,20,1,20,20,20,20,x,20,20,20,20", "percentile_Average_25", ("'x' is not a number",)),
        ("o1,a1,f2,20,1,20,20,20,20,20,20,20,20,nan", "percentile_Average_100", ("not a finite number",)),
    ],
)
def test_bad_durations(tmp_path: Path, row: str, column: str, words: tuple[str, ...]) -> None:
    directory = make_trace(tmp_path / "t", dur=(DUR_HEADER, replace_row(DUR_ROWS, 1, row)))
    check_error(read_error(directory), directory / "durations.csv", 3, column, *words)


@pytest.mark.parametrize(("value", "word"), [("-1", "negative"), ("big", "not a number")])
def test_bad_memory(tmp_path: Path, value: str, word: str) -> None:
    rows = replace_row(MEM_ROWS, 1, f"o2,a2,10,{value},1,1,1,1,1,1,1,1")
    directory = make_trace(tmp_path / "t", mem=(MEM_HEADER, rows))
    check_error(read_error(directory), directory / "memory.csv", 3, "AverageAllocatedMb", word)


def test_mismatched_hashes(tmp_path: Path) -> None:
    rows = replace_row(DUR_ROWS, 1, DUR_ROWS[1].replace("o1,a1,f2", "o1,a2,f2"))
    directory = make_trace(tmp_path / "app", dur=(DUR_HEADER, rows))
    check_error(
        read_error(directory), directory / "durations.csv", 3, "HashApp", "mismatched hashes", "a2", "a1"
    )

    rows = replace_row(DUR_ROWS, 2, DUR_ROWS[2].replace("o2,a2,f3", "o1,a2,f3"))
    directory = make_trace(tmp_path / "owner", dur=(DUR_HEADER, rows))
    check_error(read_error(directory), directory / "durations.csv", 4, "HashOwner", "mismatched hashes")

    header = "HashFunction," + MEM_HEADER
    mem_rows = ["f1,o1,a1,1,150,1,1,1,1,1,1,1,1", "f3,o2,a1,1,64,1,1,1,1,1,1,1,1"]
    directory = make_trace(tmp_path / "mem", mem=(header, mem_rows))
    check_error(read_error(directory), directory / "memory.csv", 3, "HashApp", "mismatched hashes")

    rows = replace_row(MEM_ROWS, 1, MEM_ROWS[1].replace("o2,a2", "o1,a2"))
    directory = make_trace(tmp_path / "memowner", mem=(MEM_HEADER, rows))
    check_error(read_error(directory), directory / "memory.csv", 3, "HashOwner", "mismatched hashes")


def test_no_matching_companion_rows(tmp_path: Path) -> None:
    directory = make_trace(tmp_path / "t", mem=(MEM_HEADER, ["o9,a9,1,1,1,1,1,1,1,1,1,1"]))
    check_error(read_error(directory), directory / "memory.csv", None, None, "cannot impute memory")


# ------------------------------------------------------------------------------------------ writer


def assert_same_workload(a: Workload, b: Workload) -> None:
    assert a.minute_counts is not None and b.minute_counts is not None
    assert np.array_equal(a.minute_counts, b.minute_counts)
    assert a.first_minute == b.first_minute
    assert a.app_ids.tolist() == b.app_ids.tolist()
    assert a.function_ids.tolist() == b.function_ids.tolist()
    assert a.function_app.tolist() == b.function_app.tolist()
    assert a.function_trigger.tolist() == b.function_trigger.tolist()
    np.testing.assert_allclose(a.app_memory_mb, b.app_memory_mb, rtol=1e-12)
    np.testing.assert_allclose(a.duration_mean_ms, b.duration_mean_ms, rtol=1e-12)
    np.testing.assert_allclose(a.duration_percentiles_ms, b.duration_percentiles_ms, rtol=1e-12)


def test_round_trip_small(tmp_path: Path) -> None:
    original = read_azure2019(make_trace(tmp_path / "in"))
    write_azure2019(original, tmp_path / "out")
    again = read_azure2019(tmp_path / "out")
    assert_same_workload(original, again)
    assert again.notes == ()
    # No owner in the model: the app id stands in for it.
    first_row = (tmp_path / "out" / "invocations.csv").read_text().splitlines()[1]
    assert first_row.startswith("a1,a1,f1,http,0,1,2,3")
    assert (tmp_path / "out" / "memory.csv").read_text().splitlines()[0] == MEM_HEADER


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    counts=st.lists(st.lists(st.integers(0, 10**12), min_size=3, max_size=3), min_size=1, max_size=5),
    first_minute=st.integers(0, 2000),
    scale=st.floats(1e-3, 1e6),
)
def test_round_trip_property(
    tmp_path: Path, counts: list[list[int]], first_minute: int, scale: float
) -> None:
    n = len(counts)
    percentiles = np.sort(np.random.default_rng(n).random((n, 7)) * scale, axis=1)
    workload = Workload(
        name="prop",
        app_ids=np.asarray([f"app{i % 2}" for i in range(min(n, 2))], dtype=np.str_),
        app_memory_mb=np.asarray([0.1 + 0.2, scale][: min(n, 2)], dtype=np.float64),
        function_ids=np.asarray([f"fn{i}" for i in range(n)], dtype=np.str_),
        function_app=np.asarray([i % 2 for i in range(n)], dtype=np.int64),
        function_trigger=np.asarray(["http"] * n, dtype=np.str_),
        duration_mean_ms=percentiles[:, 3].copy(),
        duration_percentiles_ms=percentiles,
        minute_counts=np.asarray(counts, dtype=np.int64),
        first_minute=first_minute,
    )
    out = tmp_path / f"prop-{n}-{first_minute}"
    write_azure2019(workload, out)
    again = read_azure2019(out)
    assert_same_workload(workload, again)
    # repr() of a float round-trips exactly.
    assert again.app_memory_mb.tolist() == workload.app_memory_mb.tolist()


def test_writer_rejects_events_workload(tmp_path: Path) -> None:
    events = read_azure2021(write_csv(tmp_path / "e.csv", "app,func,end_timestamp,duration", ["a,f,2.0,1.0"]))
    with pytest.raises(ConfigError, match="per-minute counts"):
        write_azure2019(events, tmp_path / "out")


def test_writer_rejects_commas_in_ids(tmp_path: Path) -> None:
    w = read_azure2019(make_trace(tmp_path / "in"))
    bad = Workload(**{**w.__dict__, "function_ids": np.asarray(["f,1", "f2", "f3"], dtype=np.str_)})
    with pytest.raises(ConfigError, match="cannot be written"):
        write_azure2019(bad, tmp_path / "out")


# --------------------------------------------------------------------------------------------- 2021

HEADER_2021 = "app,func,end_timestamp,duration"


@pytest.mark.shared_data
def test_azure2021_sample() -> None:
    path = needs(AZ2021)
    w = read_azure2021(path)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 199
    assert w.events is not None
    function, start, duration = w.events
    assert function.dtype == np.int64 and start.dtype == np.float64 and duration.dtype == np.float64
    assert function.size == 199
    assert w.n_apps == len({r["app"] for r in rows}) == 13
    assert w.n_functions == len({(r["app"], r["func"]) for r in rows}) == 31
    assert np.all(np.diff(start) >= 0)
    assert np.all(start >= 0)
    assert w.app_memory_mb.tolist() == [170.0] * 13
    assert any("memory is not in the Azure 2021 trace" in note for note in w.notes)
    ids = w.function_ids.tolist()
    for fn in {r["func"] for r in rows}:
        ms = [float(r["duration"]) * 1000 for r in rows if r["func"] == fn]
        i = ids.index(fn)
        np.testing.assert_allclose(w.duration_percentiles_ms[i], np.percentile(ms, DURATION_PERCENTILES))
        assert w.duration_mean_ms[i] == pytest.approx(np.mean(ms))
    first = rows[0]
    i = ids.index(first["func"])
    k = int(np.flatnonzero(function == i)[0])
    assert start[k] == pytest.approx(float(first["end_timestamp"]) - float(first["duration"]))
    assert len(w.expand()) == 199


def test_azure2021_small(tmp_path: Path) -> None:
    rows = ["a1,f1,10.0,2.5", "a2,f1,3.0,1.0", "a1,f2,5.0,5.0", "a1,f1,20.0,0.5", "a3,f3,0.0795,0.0800"]
    w = read_azure2021(write_csv(tmp_path / "t.csv", HEADER_2021, rows), memory_mb=256)
    # f1 occurs under two apps: two functions, with app-prefixed ids.
    assert w.function_ids.tolist() == ["a1/f1", "a2/f1", "f2", "f3"]
    assert w.function_app.tolist() == [0, 1, 0, 2]
    assert w.app_memory_mb.tolist() == [256.0, 256.0, 256.0]
    assert w.events is not None
    function, start, _ = w.events
    assert start.tolist() == [0.0, 0.0, 2.0, 7.5, 19.5]
    assert function.tolist() == [2, 3, 1, 0, 0]
    assert w.duration_mean_ms[0] == pytest.approx(1500.0)
    assert w.duration_percentiles_ms[0].tolist() == pytest.approx([500, 520, 1000, 1500, 2000, 2480, 2500])
    notes = " | ".join(w.notes)
    assert "256 MB" in notes and "1 invocations started up to 1 ms before time 0" in notes
    assert "'app/'" in notes


@pytest.mark.parametrize(
    ("header", "rows", "row", "column", "words"),
    [
        (
            "app,func,end,duration",
            ["a,f,1,1"],
            1,
            "end_timestamp",
            ("missing required column(s) end_timestamp",),
        ),
        (HEADER_2021, ["a,f,2.0,x"], 2, "duration", ("'x' is not a number",)),
        (HEADER_2021, ["a,f,2.0,1.0", "a,f,2.0,-1"], 3, "duration", ("negative",)),
        (HEADER_2021, ["a,f,2.0,1.0", "a,f,1.0,1.5"], 3, "end_timestamp", ("start before time 0",)),
        (HEADER_2021, ["a,f,abc,1.0"], 2, "end_timestamp", ("not a number",)),
        (HEADER_2021, ["a,f,2.0,1.0", "a,f,2.0"], 3, "duration", ("truncated row",)),
        (HEADER_2021, [",f,2.0,1.0"], 2, "app", ("empty id",)),
        (HEADER_2021, [], 2, None, ("no invocations",)),
    ],
)
def test_azure2021_errors(
    tmp_path: Path, header: str, rows: list[str], row: int, column: str | None, words: tuple[str, ...]
) -> None:
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(TraceFormatError) as excinfo:
        read_azure2021(path)
    check_error(excinfo.value, path, row, column, *words)


def test_azure2021_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError) as excinfo:
        read_azure2021(tmp_path / "absent.csv")
    check_error(excinfo.value, tmp_path / "absent.csv", None, None, "missing file")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TraceFormatError) as excinfo:
        read_azure2021(tmp_path / "empty.csv")
    check_error(excinfo.value, tmp_path / "empty.csv", None, None, "empty file")
    with pytest.raises(ConfigError, match="memory_mb"):
        read_azure2021(tmp_path / "empty.csv", memory_mb=0)
