"""The data layer: one spec grammar, data_root(), the CSV helpers, the plug-in registry, strato data list."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import strato
from strato.cli.main import app
from strato.core.registry import Registry
from strato.core.specs import split_spec
from strato.errors import ConfigError, StratoError, TraceFormatError
from strato.faas.policies import POLICIES as FAAS_POLICIES
from strato.llm.schedulers import ROUTERS, make_router
from strato.traces import csvio
from strato.traces.datasets import DATA_SETS, data_root, find_data_root
from strato.traces.faas.loader import load_workload
from strato.traces.spec import parse_workload_spec
from strato.traces.vm import load_vm_usage
from strato.vm.policies import POLICIES as VM_POLICIES
from strato.vm.policies import parse_policy as parse_vm_policy

LLM_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.5,10,2\n"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder holding one LLM trace, named by STRATO_DATA."""
    (tmp_path / "azure-llm-2023").mkdir()
    (tmp_path / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv").write_text(LLM_HEADER)
    monkeypatch.setenv("STRATO_DATA", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------------------- grammar


def test_split_spec_parts() -> None:
    spec = split_spec(" hybrid:2h, tail=95 ,head=5 ")
    assert (spec.head, spec.positional, dict(spec.params)) == ("hybrid", "2h", {"tail": "95", "head": "5"})
    assert split_spec("never-unload").has_items is False


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty name"),
        (":x", "empty name"),
        ("fixed:", "nothing after ':'"),
        ("fixed:a,,b", "empty item"),
        ("fixed:k=", "key 'k' needs a value"),
        ("fixed:k=1,k=2", "key 'k' is given twice"),
        ("fixed:1,2", "more than one positional argument"),
    ],
)
def test_split_spec_errors(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        split_spec(text, what="policy")


def test_workload_specs_of_each_kind(data: Path, tmp_path: Path) -> None:
    assert parse_workload_spec("synthetic:apps=5", "faas").kind == "synthetic"
    named = parse_workload_spec("azure-llm-2023:code", "llm")
    assert named.kind == "named" and named.member == "code"
    assert named.path == data / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv"
    folder = tmp_path / "vm"
    folder.mkdir()
    with_options = parse_workload_spec(
        f"{folder}:start_s=0,days=7", "vm", options={"start_s": "", "days": ""}
    )
    assert with_options.kind == "path" and with_options.path == folder
    assert dict(with_options.options) == {"start_s": "0", "days": "7"}
    # A path whose name contains ':' is still a path when it exists.
    odd = tmp_path / "a:b=c"
    odd.mkdir()
    assert parse_workload_spec(str(odd), "vm").path == odd


@pytest.mark.parametrize(
    ("spec", "domain", "words"),
    [
        ("", "faas", "empty workload spec; accepted: synthetic"),
        ("synthetic:conv", "llm", "'conv' is not key=value"),
        ("azure-vm-2017", "faas", "azure-vm-2017 holds VM CPU usage, not FaaS invocations"),
        ("azure-llm-2023", "llm", "needs a member: azure-llm-2023:code, azure-llm-2023:conv"),
        ("azure-llm-2023:chat", "llm", "has no member 'chat'"),
        ("azure-llm-2023:conv", "llm", "AzureLLMInferenceTrace_conv.csv is missing; set STRATO_DATA"),
        ("azure-llm-2023:code,rate=3", "llm", r"unknown option 'rate' \(known: none\)"),
        ("no/such/trace", "faas", "no such file or directory, and not a data set"),
        ("no-such-set:x", "vm", "accepted: synthetic.*azure-vm-2017:microsoft, azure-vm-2017:periodic"),
    ],
)
def test_workload_spec_errors_name_what_is_known(data: Path, spec: str, domain: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_workload_spec(spec, domain)  # type: ignore[arg-type]


def test_every_loader_speaks_the_grammar(data: Path) -> None:
    assert load_workload("synthetic:apps=3,minutes=30,seed=1").n_apps == 3
    assert load_vm_usage("synthetic:vms=4,days=2").vms == 4
    for loader, spec in ((load_workload, "azure-llm-2023:code"), (load_vm_usage, "azure-functions-2021")):
        with pytest.raises(ConfigError, match="holds"):
            loader(spec)


# --------------------------------------------------------------------------------------- data_root


def test_data_root_prefers_strato_data(data: Path) -> None:
    found = find_data_root()
    assert found is not None and (found.path, found.source) == (data, "STRATO_DATA")
    assert data_root() == data


def test_strato_data_must_be_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATO_DATA", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"STRATO_DATA=.*is not a directory"):
        data_root()


def test_checkout_data_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRATO_DATA", raising=False)
    checkout_data = Path(strato.__file__).resolve().parents[3] / "shared" / "data"
    before = find_data_root()
    monkeypatch.chdir(tmp_path)
    after = find_data_root()
    assert before == after
    if checkout_data.is_dir():
        assert after is not None and (after.path, after.source) == (checkout_data, "checkout")
    else:
        assert after is None


def test_no_data_folder_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATO_DATA", raising=False)
    installed = tmp_path / "site-packages" / "strato" / "__init__.py"
    installed.parent.mkdir(parents=True)
    installed.touch()
    monkeypatch.setattr(strato, "__file__", str(installed))
    assert find_data_root() is None
    with pytest.raises(ConfigError, match="set STRATO_DATA to the folder holding the traces"):
        data_root()


# ------------------------------------------------------------------------------------- CSV helpers


def write(path: Path, text: str, *, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_read_table_names_row_and_column(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / "t.csv", "a,b,c\n1,2,3\n4,5\n", gz=gz)
    with pytest.raises(TraceFormatError) as short:
        csvio.read_table(path)
    assert (short.value.path, short.value.row, short.value.column) == (str(path), 3, "c")
    assert "truncated row: 2 fields, the header has 3" in str(short.value)
    long = write(tmp_path / "long.csv", "a,b\n1,2,3\n")
    with pytest.raises(TraceFormatError, match="row has 3 fields") as raised:
        csvio.read_table(long)
    assert (raised.value.row, raised.value.column) == (2, 3)
    with pytest.raises(TraceFormatError, match=r"missing required column\(s\) d, e") as missing:
        csvio.read_table(path, ("a", "d", "e"))
    assert (missing.value.row, missing.value.column) == (1, "d")


def test_read_table_without_header_and_with_quotes(tmp_path: Path) -> None:
    bare = csvio.read_table(write(tmp_path / "bare.csv", "x,1\ny,2\n"), columns=("vm_id", "vcpus"))
    assert bare.first_row == 1 and bare.whole("vcpus").tolist() == [1, 2]
    headed = csvio.read_table(write(tmp_path / "h.csv", "VM_ID,vcpus\nx,1\n"), columns=("vm_id", "vcpus"))
    assert headed.first_row == 2 and headed.column("vm_id") == ["x"]
    quoted = csvio.read_table(write(tmp_path / "q.csv", 'name,n\n"a, b",3\n'))
    assert quoted.rows == [["a, b", "3"]]


@pytest.mark.parametrize(
    ("cells", "kwargs", "row", "words"),
    [
        (["1", "x"], {}, 3, "missing value: 'x' is not a number"),
        (["1", " "], {}, 3, "missing value: empty"),
        (["-1", "2"], {}, 2, "'-1' is negative"),
        (["1", "inf"], {"negative": True}, 3, "'inf' is not a finite number"),
    ],
)
def test_parse_floats_errors(cells: list[str], kwargs: dict[str, bool], row: int, words: str) -> None:
    with pytest.raises(TraceFormatError, match=words) as raised:
        csvio.parse_floats(Path("f.csv"), cells, "col", **kwargs)
    assert (raised.value.row, raised.value.column) == (row, "col")


def test_parse_whole() -> None:
    assert csvio.parse_whole(Path("f.csv"), ["3", "4.0"], "n", minimum=1).tolist() == [3, 4]
    for bad in ("2.5", "0"):
        with pytest.raises(TraceFormatError, match=f"'{bad}' is not a whole number >= 1") as raised:
            csvio.parse_whole(Path("f.csv"), ["1", bad], "n", first_row=5, minimum=1)
        assert raised.value.row == 6


def test_file_level_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b not gzip")
    (tmp_path / "latin.csv").write_bytes("a\ncaf\xe9\n".encode("latin-1"))
    cases = {
        tmp_path / "absent.csv": "missing file",
        tmp_path: "is a directory",
        write(tmp_path / "empty.csv", "\n\n"): "empty file",
        tmp_path / "bad.gz": "corrupt gzip data",
        tmp_path / "latin.csv": "not UTF-8 text",
    }
    for path, words in cases.items():
        with pytest.raises(TraceFormatError, match=words) as raised:
            csvio.read_lines(path)
        assert raised.value.path == str(path)
    with pytest.raises(TraceFormatError, match="corrupt gzip data"):
        csvio.first_line(tmp_path / "bad.gz")
    assert csvio.first_line(write(tmp_path / "h.csv.gz", "a,b\r\n1,2\n", gz=True)) == "a,b"


def test_load_block() -> None:
    assert csvio.load_block(["a,1,2", "b,3,4"], range(1, 3), np.int64).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError):
        csvio.load_block(["a,1,x"], range(1, 3), np.int64)


# ---------------------------------------------------------------------------------------- registry


def test_registry() -> None:
    things: Registry[int] = Registry("thing")
    things.register("b", 2)
    assert things.add("a")(1) == 1
    assert (things.names(), list(things), len(things), "a" in things) == (["a", "b"], ["a", "b"], 2, True)
    assert things.get("b") == 2
    with pytest.raises(ConfigError, match=r"unknown thing 'c' \(known: a, b\)"):
        things.get("c")
    with pytest.raises(StratoError, match="'a' is already registered"):
        things.register("a", 3)
    with pytest.raises(ConfigError, match="must be non-empty"):
        things.register(" a", 3)
    things.remove("a")
    assert things.names() == ["b"]
    with pytest.raises(ConfigError, match=r"unknown thing 'a' \(known: b\)"):
        things.remove("a")


def test_every_plug_in_kind_uses_the_registry() -> None:
    assert {"fixed", "hybrid", "never-unload", "greedy-dual"} <= set(FAAS_POLICIES.names())
    assert {"jsq", "mixed-pool"} <= set(ROUTERS.names())
    assert {"fixed", "nsigma", "percentile", "borg", "max", "oracle", "protohail"} == set(VM_POLICIES.names())
    assert DATA_SETS.get("azure-vm-2017").domain == "vm"
    with pytest.raises(ConfigError, match=r"unknown router 'fastest' \(known: jsq, mixed-pool"):
        make_router("fastest", split=False)
    with pytest.raises(ConfigError, match=r"unknown policy 'magic' \(known: borg, fixed"):
        parse_vm_policy("magic:1")


# ------------------------------------------------------------------------------------ data list


def test_data_list_json_and_table(data: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["data", "list", "--json"])
    assert done.exit_code == 0, done.output
    listing = json.loads(done.output)
    assert (listing["root"], listing["source"]) == (str(data), "STRATO_DATA")
    found = {row["spec"]: row["found"] for row in listing["sets"]}
    assert found["azure-llm-2023:code"] is True and found["azure-llm-2023:conv"] is False
    assert set(found) >= {"azure-functions-2019:sampled/1350", "azure-vm-2017:periodic"}
    table = runner.invoke(app, ["data", "list"])
    assert table.exit_code == 0
    assert f"data folder: {data} (from STRATO_DATA)" in table.output
    assert "azure-llm-2023:code" in table.output


def test_data_list_with_a_bad_strato_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATO_DATA", str(tmp_path / "nowhere"))
    done = CliRunner().invoke(app, ["data", "list"])
    assert done.exit_code == 2
    assert "is not a directory" in done.output
