"""Actuators (simulated, NVML and its dry run), nvidia-smi telemetry, the live control loop and
``strato power control``."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from data_helpers import shared_data
from strato.cli import power_live
from strato.errors import ConfigError, UnavailableError
from strato.power import actuators as act
from strato.power.actuators import Action, GpuLimits, NvmlActuator, Setting, SimulatedActuator
from strato.power.catalog import A100_CLOCKS
from strato.power.controllers import parse_controller

LLAMA = (
    shared_data()
    / "llm-gpu-power/plots/parameter-scale-input-test/raw_stats/llama2-70b/2024-04-05/06-17-19/nvidia-smi.csv"
)


def a100s(n: int = 8) -> list[GpuLimits]:
    return [GpuLimits.from_clocks(i, A100_CLOCKS) for i in range(n)]


# ---- the simulated backend: the state machine every backend shares --------------------------------


def test_the_brake_overrides_locks_and_its_release_restores_what_each_gpu_was_asked() -> None:
    gpus = SimulatedActuator(a100s(4))
    assert gpus.apply(Action.lock("low", 1275.0), [2, 3]) == (
        Setting(2, "lock", 1275.0),
        Setting(3, "lock", 1275.0),
    )
    assert gpus.apply(Action.pull_brake(True), []) == tuple(Setting(g, "lock", 210.0) for g in range(4))
    # A lock asked for under the brake is remembered, not set.
    assert gpus.apply(Action.lock("high", 1305.0), [0, 1]) == ()
    assert [gpus.locked_mhz(g) for g in range(4)] == [210.0] * 4
    assert gpus.apply(Action.pull_brake(False), []) == (
        Setting(0, "lock", 1305.0),
        Setting(1, "lock", 1305.0),
        Setting(2, "lock", 1275.0),
        Setting(3, "lock", 1275.0),
    )
    # Asking for what is already set sets nothing.
    assert gpus.apply(Action.lock("low", 1275.0), [2, 3]) == ()
    assert gpus.apply(Action.lock("low", None), [2, 3]) == (
        Setting(2, "reset-lock", None),
        Setting(3, "reset-lock", None),
    )
    assert gpus.apply(Action.cap("all", 250.0), range(4))[0] == Setting(0, "power-limit", 250.0)
    released = gpus.release_all()
    assert {(s.gpu, s.knob) for s in released} == {(g, "reset-lock") for g in range(4)} | {
        (g, "reset-power-limit") for g in range(4)
    }
    assert all(s.value == 400.0 for s in released if s.knob == "reset-power-limit")


def test_an_out_of_range_value_names_the_gpu_and_sets_nothing() -> None:
    limits = a100s(2)
    limits[1] = GpuLimits(1, "narrow", 300.0, 1200.0, 150.0, 300.0, 300.0)
    gpus = SimulatedActuator(limits)
    with pytest.raises(
        ConfigError, match=r"GPU 1 \(narrow\): SM clock 1275 MHz is outside .* 300\.\.1200 MHz"
    ):
        gpus.apply(Action.lock("all", 1275.0), [0, 1])
    with pytest.raises(ConfigError, match=r"GPU 1 \(narrow\): power limit 350 W is outside .* 150\.\.300 W"):
        gpus.apply(Action.cap("all", 350.0), [0, 1])
    assert gpus.log == [] and gpus.locked_mhz(0) is None
    with pytest.raises(ConfigError, match="GPU 7 is not one of"):
        gpus.apply(Action.lock("low", 1000.0), [7])
    # What a controller is bound to: the range every GPU can honour.
    clocks = gpus.clocks()
    assert (clocks.min_mhz, clocks.max_mhz, clocks.tdp_w) == (300.0, 1200.0, 300.0)
    with pytest.raises(ConfigError, match="polca low1 clock 1275 MHz is outside"):
        act.run_control(parse_controller("polca"), gpus, 500.0, 1.0, {"low": [1]}, duration_s=0)


# ---- NVML ----------------------------------------------------------------------------------------


class FakeNvml(SimpleNamespace):
    """A stand-in for ``pynvml`` with two A100s. Used ONLY by the dry-run and validation unit tests below
    (there is no GPU here); it raises if anything tries to set a knob."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"NVIDIA A100-SXM4-80GB"

    def nvmlDeviceGetSupportedMemoryClocks(self, handle: str) -> list[int]:
        return [1593]

    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: str, memory: int) -> list[int]:
        return list(range(1410, 209, -15))

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: str) -> tuple[int, int]:
        return 100_000, 400_000

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: str) -> int:
        return 400_000

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        return {"handle0": 61_250, "handle1": 250_500}[handle]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("nvmlDeviceSet") or name.startswith("nvmlDeviceReset"):
            raise AssertionError(f"{name} called during a dry run")
        raise AttributeError(name)


def test_dry_run_prints_each_nvml_call_per_gpu_and_checks_the_gpus_real_ranges() -> None:
    nvml = FakeNvml()
    printed: list[str] = []
    gpus = NvmlActuator([0, 1], dry_run=True, echo=printed.append, nvml=nvml)  # type: ignore[arg-type]
    assert gpus.limits[1] == GpuLimits(
        1, "NVIDIA A100-SXM4-80GB", 210.0, 1410.0, 100.0, 400.0, 400.0, tuple(range(210, 1411, 15))
    )
    assert gpus.read_power_w() == pytest.approx(311.75)
    gpus.apply(Action.lock("low", 1110.0), [1])
    gpus.apply(Action.cap("all", 250.0), [0, 1])
    gpus.apply(Action.pull_brake(True), [])
    assert printed == [
        "dry-run: gpu 1: nvmlDeviceSetGpuLockedClocks(1110, 1110)  # lock SM clock at 1110 MHz",
        "dry-run: gpu 0: nvmlDeviceSetPowerManagementLimit(250000)  # power limit 250 W",
        "dry-run: gpu 1: nvmlDeviceSetPowerManagementLimit(250000)  # power limit 250 W",
        "dry-run: gpu 0: nvmlDeviceSetGpuLockedClocks(210, 210)  # lock SM clock at 210 MHz",
        "dry-run: gpu 1: nvmlDeviceSetGpuLockedClocks(210, 210)  # lock SM clock at 210 MHz",
    ]
    with pytest.raises(ConfigError, match=r"GPU 0 \(NVIDIA A100-SXM4-80GB\): SM clock 1500 MHz is outside"):
        gpus.apply(Action.lock("all", 1500.0), [0, 1])
    with pytest.raises(ConfigError, match=r"power limit 450 W is outside its range 100\.\.400 W"):
        gpus.apply(Action.cap("all", 450.0), [0])
    with pytest.raises(ConfigError, match=r"GPU 2 does not exist: this machine has GPUs 0\.\.1"):
        NvmlActuator([0, 2], dry_run=True, nvml=nvml)  # type: ignore[arg-type]


def test_without_a_driver_nvml_is_unavailable_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uses a stand-in pynvml whose nvmlInit fails, as on a machine without the driver (validation test)."""
    fake = FakeNvml()

    def fail() -> None:
        raise FakeNvml.NVMLError("NVML Shared Library Not Found")

    fake.nvmlInit = fail  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(UnavailableError, match=r"no NVIDIA GPU here: nvmlInit failed \(NVML Shared Library"):
        NvmlActuator()


def real_nvml() -> Any:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        pytest.skip(f"no NVIDIA GPU here: nvmlInit failed ({error})")
    return pynvml


def test_on_a_real_gpu_the_dry_run_reads_real_ranges_and_power_and_sets_nothing() -> None:
    nvml = real_nvml()
    printed: list[str] = []
    gpus = NvmlActuator([0], dry_run=True, echo=printed.append)
    limit = gpus.limits[0]
    assert 0 < limit.min_mhz < limit.max_mhz and 0 < limit.min_limit_w <= limit.default_limit_w
    assert 0 < gpus.read_power_w() < 2 * limit.max_limit_w
    gpus.apply(Action.lock("all", limit.min_mhz), [0])
    mhz = f"{limit.min_mhz:.0f}"
    assert printed == [
        f"dry-run: gpu 0: nvmlDeviceSetGpuLockedClocks({mhz}, {mhz})  # lock SM clock at {mhz} MHz"
    ]
    gpus.close()
    nvml.nvmlShutdown()


# ---- nvidia-smi telemetry ------------------------------------------------------------------------


def stand_in(tmp_path: Path, body: str) -> list[str]:
    """A process printing what ``nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits
    -lms N`` prints, then staying alive like it."""
    script = tmp_path / "fake_smi.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, "-u", str(script)]


def test_nvidia_smi_telemetry_averages_each_gpu_since_the_last_read(tmp_path: Path) -> None:
    command = stand_in(
        tmp_path,
        """
        import sys, time
        for watts in (100.0, 200.0, 300.0):
            print(f"0, {watts:.2f}"); print("1, [N/A]"); print(f"1, {watts / 2:.2f}"); print("2, 999.00")
        sys.stdout.flush()
        time.sleep(30)
        """,
    )
    telemetry = act.NvidiaSmiTelemetry([0, 1], command=command)
    try:
        telemetry.wait_ready()
        deadline = __import__("time").monotonic() + 5
        while telemetry.lines < 12 and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.01)
        assert telemetry.read_power_w() == pytest.approx(200.0 + 100.0)
        # Nothing new: the latest readings.
        assert telemetry.read_power_w() == pytest.approx(300.0 + 150.0)
    finally:
        telemetry.close()
    assert telemetry.process.poll() is not None


def test_a_malformed_nvidia_smi_line_is_one_clear_error(tmp_path: Path) -> None:
    command = stand_in(tmp_path, 'print("0, 58.1"); print("1, 58.x W")\nimport time; time.sleep(30)')
    telemetry = act.NvidiaSmiTelemetry([0, 1], command=command)
    try:
        with pytest.raises(ConfigError, match=r"row 2, column power.draw: '58.x W' is not a number"):
            telemetry.wait_ready()
    finally:
        telemetry.close()
    assert act.parse_power_line("3, 58.67 W") == (3, 58.67)
    with pytest.raises(ConfigError, match=r"expected 'index, power\.draw'"):
        act.parse_power_line("2024/04/05 06:17:19.635, 58.67 W, 0 %")


# ---- the live loop -------------------------------------------------------------------------------


class Machine:
    """Eight GPUs whose power follows their locked clocks (active power ~ f^1.12 above 60 W idle: a toy
    machine, not the calibrated model), a
    virtual clock, and a load that steps up at t = 10 s."""

    def __init__(self, gpus: SimulatedActuator) -> None:
        self.gpus = gpus
        self.now = 0.0

    def power(self) -> float:
        demand = 250.0 if self.now >= 10 else 120.0
        total = 0.0
        for gpu in self.gpus.gpus:
            mhz = self.gpus.locked_mhz(gpu) or 1410.0
            total += 60.0 + demand * (mhz / 1410.0) ** 1.12
        return total

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_live_loop_locks_low_priority_first_and_resets_everything_at_the_end() -> None:
    gpus = SimulatedActuator(a100s(8))
    machine = Machine(gpus)
    gpus._power = machine.power
    budget = 2500.0  # 8 x 310 W = 2480 W after the step: 99.2 %
    steps: list[act.ControlStep] = []
    run = act.run_control(
        parse_controller("polca"),
        gpus,
        budget,
        1.0,
        {"low": [4, 5, 6, 7]},
        duration_s=30.0,
        clock=lambda: machine.now,
        sleep=machine.sleep,
        on_step=steps.append,
    )
    assert len(run.steps) == 30 and run.brake_events == 0
    before = [s for s in run.steps if s.time_s < 10]
    assert all(s.share == pytest.approx(8 * 180 / budget) and not s.actions for s in before)
    acted = [s for s in run.steps if s.actions]
    # Over t2 (89 %): low priority straight to 1110 MHz, then (no actuation delay here) high to 1305.
    assert acted[0].time_s == 10.0 and acted[0].actions == ("low: lock 1110 MHz",)
    assert {s.gpu for s in acted[0].settings} == {4, 5, 6, 7}
    assert acted[1].actions == ("high: lock 1305 MHz",)
    assert {s.gpu for s in acted[1].settings} == {0, 1, 2, 3}
    # 4 x 251 + 4 x 310 W = 89.8 % after the first lock, 4 x 251 + 4 x 289 W = 86.4 % after the second.
    assert run.steps[-1].share == pytest.approx(0.864, abs=0.002)
    assert {s.knob for s in run.released} == {"reset-lock"} and len(run.released) == 8
    assert all(gpus.locked_mhz(g) is None for g in range(8))
    assert (
        run.to_json()["settings"][0]
        == "gpu 4: nvmlDeviceSetGpuLockedClocks(1110, 1110)  # lock SM clock at 1110 MHz"
    )


def test_classes_must_split_the_controlled_gpus() -> None:
    gpus = SimulatedActuator(a100s(4))
    with pytest.raises(
        ConfigError, match=r"low-priority GPU 5 is not among the controlled GPUs \[0, 1, 2, 3\]"
    ):
        act.check_classes(gpus, {"low": [5]})
    with pytest.raises(ConfigError, match="GPU 1 is in both priority classes"):
        act.check_classes(gpus, {"low": [1], "high": [0, 1, 2, 3]})
    assert act.check_classes(gpus, {"low": [2, 3]}) == {"high": (0, 1), "low": (2, 3)}


# ---- strato power control ------------------------------------------------------------------------


def app() -> typer.Typer:
    made = typer.Typer()
    power_live.register(made)

    @made.callback()
    def power() -> None:
        """Stands in for ``strato power``."""

    return made


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app(), list(args))


def no_gpu() -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return
    pynvml.nvmlShutdown()
    pytest.skip("this machine has a GPU: the no-GPU exit cannot be seen here")


def test_control_without_a_gpu_says_so_in_one_line_and_exits_5() -> None:
    no_gpu()
    result = invoke("control", "--budget", "2.4kW", "--controller", "polca", "--low-priority-gpus", "4,5,6,7")
    assert result.exit_code == 5, result.output
    assert result.output.count("\n") == 1 and "no NVIDIA GPU here" in result.output


def recorded(tmp_path: Path, rows: Callable[[int], float], samples: int = 60) -> Path:
    """A 2-GPU nvidia-smi CSV (10 Hz per GPU) whose GPU power at sample k is rows(k)."""
    lines = ["timestamp, index, power.draw [W]"]
    for k in range(samples):
        ms = k * 100
        stamp = f"2024/04/05 06:17:{19 + ms // 1000:02d}.{ms % 1000:03d}"
        for gpu in (0, 1):
            lines.append(f"{stamp}, {gpu}, {rows(k):.2f} W")
    path = tmp_path / "nvidia-smi.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dry_run_replays_a_recording_and_prints_what_it_would_set(tmp_path: Path) -> None:
    path = recorded(tmp_path, lambda k: 100.0 if k < 30 else 300.0)
    result = invoke(
        "control", "--budget", "500W", "--low-priority-gpus", "1", "--dry-run", "--telemetry-file", str(path),
        "--telemetry", "1s", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    run = json.loads(result.stdout)
    # 200 W (40 %) for 3 s, then 600 W (120 %): polca locks gpu 1 then gpu 0, and the brake pulls both.
    assert run["steps"] == 5 and run["brake_events"] == 1
    assert run["actions"][0] == {"time_s": 4.0, "share": pytest.approx(1.2), "action": "power brake on"}
    assert "gpu 1: nvmlDeviceSetGpuLockedClocks(210, 210)  # lock SM clock at 210 MHz" in result.output
    assert run["released"] == [
        "gpu 0: nvmlDeviceResetGpuLockedClocks()  # SM clock back to the driver's choice",
        "gpu 1: nvmlDeviceResetGpuLockedClocks()  # SM clock back to the driver's choice",
    ]


def test_control_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp, index, power.draw [W]\n2024/04/05 06:17:19.635, 0, 58.x W\n")
    for args, message in (
        (["--budget", "2.4 kV"], "not a power such as 260kW"),
        (["--budget", "1kW", "--controller", "polca:t1=0.9,t2=0.8"], "thresholds must rise"),
        (["--budget", "1kW", "--telemetry-file", str(bad)], "needs --dry-run"),
        (
            ["--budget", "1kW", "--dry-run", "--telemetry-file", str(bad)],
            "bad.csv, row 2, column power.draw [W]",
        ),
        (
            ["--budget", "1kW", "--dry-run", "--telemetry-file", str(bad), "--low-priority-gpus", "x"],
            "not a GPU",
        ),
    ):
        result = invoke("control", *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


@pytest.mark.shared_data
def test_dry_run_over_the_real_llama2_70b_trace(tmp_path: Path) -> None:
    if not LLAMA.exists():
        pytest.skip(f"the llama2-70b nvidia-smi trace is not in {LLAMA.parent}")
    result = invoke(
        "control", "--budget", "750W", "--low-priority-gpus", "2,3", "--dry-run",
        "--telemetry-file", str(LLAMA), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    run = json.loads(result.stdout)
    assert run["steps"] == 650 and run["brake_events"] == 0
    assert run["actions"][0]["action"] == "low: lock 1110 MHz"
    assert {s.split(":")[0] for s in run["settings"]} == {"gpu 0", "gpu 1", "gpu 2", "gpu 3"}


# ---- review fixes (issue 13) ---------------------------------------------------------------------


def test_a_power_option_needs_its_unit_and_refuses_milliwatts() -> None:
    from strato.cli.common import power_option

    assert power_option("260kW", "--budget") == 260_000.0
    assert power_option("2400 W", "--budget") == 2400.0
    assert power_option("2.4kw", "--budget") == 2400.0
    assert power_option("1.5MW", "--budget") == 1_500_000.0
    assert power_option("750w", "--budget") == 750.0
    for text, message in (
        ("260000", "--budget needs a power with its unit, e.g. 260kW (got '260000')"),
        ("250000mW", "--budget: 'mW' is ambiguous"),
        ("250000mw", "--budget: 'mw' is ambiguous"),
        ("2.4 kV", "--budget: '2.4 kV' is not a power such as 260kW, 2400W or 1.5MW"),
        ("0W", "--budget: a power must be positive and finite, got '0W'"),
    ):
        with pytest.raises(ConfigError) as caught:
            power_option(text, "--budget")
        assert message in str(caught.value), (text, str(caught.value))


def test_control_refuses_a_budget_without_its_unit(tmp_path: Path) -> None:
    path = recorded(tmp_path, lambda k: 100.0)
    result = invoke("control", "--budget", "2400", "--dry-run", "--telemetry-file", str(path))
    assert result.exit_code == 2, result.output
    assert "--budget needs a power with its unit, e.g. 260kW (got '2400')" in result.output


def test_peak_share_ignores_the_initial_settings_step() -> None:
    gpus = SimulatedActuator(a100s(2), power_w=lambda: 300.0)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    run = act.run_control(
        parse_controller("static:1110"),
        gpus,
        500.0,
        1.0,
        {},
        duration_s=3.0,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert run.steps[0].actions == ("initial",)
    assert run.peak_share == pytest.approx(0.6)
    assert run.to_json()["peak_share"] == pytest.approx(0.6)


def test_replayed_telemetry_sums_only_the_chosen_gpus(tmp_path: Path) -> None:
    lines = ["timestamp, index, power.draw [W]"]
    for k in range(50):
        ms = k * 100
        stamp = f"2024/04/05 06:17:{19 + ms // 1000:02d}.{ms % 1000:03d}"
        lines += [f"{stamp}, {gpu}, {watts:.2f} W" for gpu, watts in enumerate((100.0, 200.0, 300.0))]
    path = tmp_path / "nvidia-smi.csv"
    path.write_text("\n".join(lines) + "\n")
    every = act.ReplayTelemetry(path, 1.0)
    every.sleep(2.0)
    assert every.read_power_w() == pytest.approx(600.0)
    chosen = act.ReplayTelemetry(path, 1.0, watch=[0, 2])
    chosen.sleep(2.0)
    assert chosen.read_power_w() == pytest.approx(400.0)
    with pytest.raises(ConfigError, match=r"nvidia-smi.csv: GPU 5 is not in the recording \(GPUs 0, 1, 2\)"):
        act.ReplayTelemetry(path, 1.0, watch=[5])
    # Through the CLI: 100 W of GPU 0 against a 150 W budget is 67 %, not the recording's 600 W.
    result = invoke(
        "control", "--budget", "150W", "--gpus", "0", "--controller", "capping", "--dry-run",
        "--telemetry-file", str(path), "--telemetry", "1s", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    run = json.loads(result.stdout)
    assert run["peak_share"] == pytest.approx(100.0 / 150.0) and run["brake_events"] == 0


def test_an_automatic_cap_under_the_gpus_minimum_limit_is_raised_to_it() -> None:
    # H100 SXM: NVML refuses limits under ~200 W, while the capping controller's floor is a quarter of
    # its 700 W TDP (175 W).
    h100 = [GpuLimits(i, "NVIDIA H100 80GB HBM3", 210.0, 1980.0, 200.0, 700.0, 700.0) for i in range(2)]
    printed: list[str] = []
    gpus = SimulatedActuator(h100, power_w=lambda: 900.0, echo=printed.append)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    run = act.run_control(
        parse_controller("capping:threshold=0.9"), gpus, 300.0, 1.0, {}, duration_s=2.0,
        clock=lambda: now[0], sleep=sleep,
    )  # fmt: skip
    caps = [s for s in run.settings if s.knob == "power-limit"]
    assert caps and {s.value for s in caps} == {200.0}
    assert any("cap 200 W (asked 175 W" in action for step in run.steps for action in step.actions)
    assert "dry-run: gpu 0: nvmlDeviceSetPowerManagementLimit(200000)  # power limit 200 W" in printed
