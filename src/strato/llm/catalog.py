"""Catalogs of GPUs, DGX-style machines and open LLMs, and the memory arithmetic that joins them.

Three frozen record types and their lookups:

* :class:`Gpu`: one accelerator (peak compute, HBM size and bandwidth, TDP, power cap).
* :class:`Machine`: an 8-GPU node as Splitwise provisions it (NVLink inside, InfiniBand between machines,
  rental cost, power), named like the ``hardware`` column of the public Splitwise profile
  (``a100-80gb``, ``h100-80gb``, ``h100-80gb-pcap``).
* :class:`LlmModel`: a transformer's architecture, enough to size its weights and KV cache and to count
  its FLOPs.

``get_gpu``/``get_machine``/``get_model`` accept any case and the aliases listed in
:mod:`strato.llm.catalog_data` (``a100``, ``h100cap``, ``Llama2-70B``, ``bloom``...); an unknown name raises
:class:`~strato.errors.ConfigError` listing the known ones. The entries themselves, with the source of every
number, live in :mod:`strato.llm.catalog_data`.

Memory: :func:`kv_capacity_tokens` is what a simulated machine uses to decide how many requests it can
hold. Units: sizes in bytes unless a field name says otherwise; GPU memory is binary (``hbm_gb`` 80 means
80 GiB, what ``nvidia-smi`` reports as 81920 MiB for an A100-80GB).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

from strato.errors import ConfigError

GIB = 2**30

DEFAULT_RESERVE_FRACTION = 0.10
"""Share of each GPU's memory held back from weights and KV cache.

Activations of the largest batch, the CUDA context, NCCL buffers and allocator fragmentation live there.
10 % is the margin vLLM leaves by default (``gpu_memory_utilization=0.9``); it is a choice, not a
measurement, hence a parameter of every function that uses it.
"""


@dataclass(frozen=True)
class Gpu:
    """One accelerator.

    ``tflops_fp16`` is the vendor's dense FP16/BF16 tensor-core peak, the figure a roofline needs.
    ``paper_tflops`` keeps the figure the Splitwise paper prints in its hardware table (19.5 for A100,
    66.9 for H100): those equal the vendors' FP32 non-tensor peaks, so they are kept for reference and
    never used to compute times.

    ``power_cap`` is the fraction of TDP the GPU is limited to (1.0: uncapped). A cap leaves the datasheet
    peaks unchanged but lowers the clock the GPU sustains while it is power-bound, which only the
    compute-heavy prompt phase is; ``capped_prompt_slowdown`` is that phase's time multiplier (1.0 when
    uncapped).
    """

    name: str
    part: str
    tflops_fp16: float
    paper_tflops: float
    hbm_gb: float
    hbm_bandwidth_gbps: float
    tdp_w: float
    nvlink_gbps: float
    power_cap: float = 1.0
    capped_prompt_slowdown: float = 1.0

    def __post_init__(self) -> None:
        for field in ("tflops_fp16", "paper_tflops", "hbm_gb", "hbm_bandwidth_gbps", "tdp_w", "nvlink_gbps"):
            _positive(f"GPU {self.name}: {field}", getattr(self, field))
        if not 0 < self.power_cap <= 1:
            raise ConfigError(f"GPU {self.name}: power_cap must be in (0, 1], got {self.power_cap!r}")
        if self.capped_prompt_slowdown < 1:
            raise ConfigError(
                f"GPU {self.name}: capped_prompt_slowdown must be >= 1, got {self.capped_prompt_slowdown!r}"
            )

    @property
    def hbm_bytes(self) -> float:
        return self.hbm_gb * GIB

    @property
    def hbm_bytes_per_s(self) -> float:
        """HBM bandwidth in bytes/s (``hbm_bandwidth_gbps`` is in GB/s, decimal, as vendors quote it)."""
        return self.hbm_bandwidth_gbps * 1e9

    @property
    def flops_per_s(self) -> float:
        return self.tflops_fp16 * 1e12

    @property
    def nvlink_bytes_per_s(self) -> float:
        """NVLink bandwidth one way, bytes/s: half the vendor's bidirectional Gbit/s total."""
        return self.nvlink_gbps * 1e9 / 8 / 2

    @property
    def power_w(self) -> float:
        """The most the GPU draws: TDP times the power cap."""
        return self.tdp_w * self.power_cap


@dataclass(frozen=True)
class Machine:
    """A DGX-like node of ``gpus_per_machine`` identical GPUs.

    ``interconnect_gbps`` is the InfiniBand bandwidth per GPU between machines (Gbit/s), the link the KV
    cache crosses from a prompt machine to a token machine. ``nvlink_gbps`` is the GPU's NVLink bandwidth
    (Gbit/s, bidirectional total, as in :class:`Gpu`). ``cost_per_hour`` is USD per machine-hour and
    ``power_kw`` the machine's draw at full load. ``public_sim_cost`` and ``public_sim_power`` are the
    unitless per-machine figures the public Splitwise simulator's notebooks add up for iso-cost and
    iso-power clusters (REFERENCE.md calls the cost figure a cost per GPU-hour: 17.6 / 8 = 2.2).
    """

    name: str
    label: str
    gpu: Gpu
    gpus_per_machine: int
    interconnect_gbps: float
    cost_per_hour: float
    power_kw: float
    public_sim_cost: float | None = None
    public_sim_power: float | None = None

    def __post_init__(self) -> None:
        if self.gpus_per_machine < 1:
            raise ConfigError(
                f"machine {self.name}: gpus_per_machine must be >= 1, got {self.gpus_per_machine}"
            )
        for field in ("interconnect_gbps", "cost_per_hour", "power_kw"):
            _positive(f"machine {self.name}: {field}", getattr(self, field))

    @property
    def nvlink_gbps(self) -> float:
        return self.gpu.nvlink_gbps

    @property
    def interconnect_bytes_per_s(self) -> float:
        return self.interconnect_gbps * 1e9 / 8

    @property
    def hbm_bytes(self) -> float:
        return self.gpu.hbm_bytes * self.gpus_per_machine


@dataclass(frozen=True)
class LlmModel:
    """A decoder-only transformer.

    ``kv_heads`` equals ``heads`` for multi-head attention and is smaller for grouped-query attention.
    ``mlp_matrices`` is 3 for gated (SwiGLU) feed-forward blocks, 2 for plain GELU ones; with
    ``vocab_size`` and ``tied_embeddings`` it lets :meth:`parameter_count` recount the weights from the
    architecture, a check on ``params_billion`` (the published count).
    """

    name: str
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    intermediate_size: int
    vocab_size: int
    params_billion: float
    mlp_matrices: int = 3
    tied_embeddings: bool = False
    dtype_bytes: int = 2
    max_context: int | None = None

    def __post_init__(self) -> None:
        for field in (
            "layers",
            "hidden_size",
            "heads",
            "kv_heads",
            "intermediate_size",
            "vocab_size",
            "dtype_bytes",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {self.name}: {field} must be a positive integer, got {value!r}")
        _positive(f"model {self.name}: params_billion", self.params_billion)
        if self.hidden_size % self.heads:
            raise ConfigError(
                f"model {self.name}: hidden_size {self.hidden_size} is not a multiple of heads {self.heads}"
            )
        if self.heads % self.kv_heads:
            raise ConfigError(
                f"model {self.name}: heads {self.heads} is not a multiple of kv_heads {self.kv_heads}"
            )
        if self.mlp_matrices not in (2, 3):
            raise ConfigError(f"model {self.name}: mlp_matrices must be 2 or 3, got {self.mlp_matrices}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.heads

    @property
    def params(self) -> float:
        return self.params_billion * 1e9

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of KV cache one token occupies: K and V, every layer, every KV head."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def uses_gqa(self) -> bool:
        return self.kv_heads < self.heads

    def parameter_count(self) -> int:
        """Weights recounted from the architecture (matrices and embeddings; norms and biases left out)."""
        h, kv_width = self.hidden_size, self.kv_heads * self.head_dim
        attention = 2 * h * h + 2 * h * kv_width
        mlp = self.mlp_matrices * h * self.intermediate_size
        embeddings = self.vocab_size * h * (1 if self.tied_embeddings else 2)
        return self.layers * (attention + mlp) + embeddings


# ------------------------------------------------------------------------------------------------ lookups

_Entry = TypeVar("_Entry", Gpu, Machine, LlmModel)


def normalize_name(name: str) -> str:
    """Lower case, with ``_``, spaces and dots read as ``-``, so ``Llama_2 70B`` finds ``llama-2-70b``."""
    return "-".join(str(name).strip().lower().replace("_", " ").replace(".", " ").replace("-", " ").split())


@cache
def _tables() -> tuple[dict[str, Gpu], dict[str, Machine], dict[str, LlmModel], dict[str, str]]:
    # Imported here because catalog_data builds its entries from the classes above.
    from strato.llm import catalog_data

    gpus = {entry.name: entry for entry in catalog_data.GPUS}
    machines = {entry.name: entry for entry in catalog_data.MACHINES}
    models = {entry.name: entry for entry in catalog_data.MODELS}
    aliases: dict[str, str] = {}
    for canonical, names in catalog_data.ALIASES.items():
        for alias in (canonical, *names):
            key = normalize_name(alias)
            if aliases.get(key, canonical) != canonical:
                raise ConfigError(f"catalog alias {alias!r} names both {aliases[key]} and {canonical}")
            aliases[key] = canonical
    for canonical in (*gpus, *machines, *models):
        aliases.setdefault(normalize_name(canonical), canonical)
    return gpus, machines, models, aliases


def _lookup(kind: str, name: str, table: Mapping[str, _Entry]) -> _Entry:
    if isinstance(name, Gpu | Machine | LlmModel):
        raise ConfigError(f"expected a {kind} name, got a {type(name).__name__} object")
    aliases = _tables()[3]
    key = normalize_name(name)
    canonical = aliases.get(key, key)
    if canonical not in table:
        raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    return table[canonical]


def gpu_names() -> list[str]:
    return sorted(_tables()[0])


def machine_names() -> list[str]:
    return sorted(_tables()[1])


def model_names() -> list[str]:
    return sorted(_tables()[2])


def get_gpu(name: str) -> Gpu:
    return _lookup("GPU", name, _tables()[0])


def get_machine(name: str) -> Machine:
    return _lookup("machine", name, _tables()[1])


def get_model(name: str) -> LlmModel:
    return _lookup("model", name, _tables()[2])


def resolve_model(model: LlmModel | str) -> LlmModel:
    return model if isinstance(model, LlmModel) else get_model(model)


def resolve_machine(machine: Machine | str) -> Machine:
    return machine if isinstance(machine, Machine) else get_machine(machine)


# ----------------------------------------------------------------------------------------- memory sizing


def check_tensor_parallel(model: LlmModel, machine: Machine, tensor_parallel: int) -> None:
    """Raise unless ``tensor_parallel`` GPUs of one machine can split ``model``'s attention heads evenly."""
    if not isinstance(tensor_parallel, int) or isinstance(tensor_parallel, bool) or tensor_parallel < 1:
        raise ConfigError(f"tensor_parallel must be a positive integer, got {tensor_parallel!r}")
    if tensor_parallel > machine.gpus_per_machine:
        raise ConfigError(
            f"tensor_parallel {tensor_parallel} exceeds the {machine.gpus_per_machine} GPUs "
            f"of a {machine.name} machine"
        )
    if model.heads % tensor_parallel:
        raise ConfigError(
            f"{model.name}'s {model.heads} attention heads do not split evenly over "
            f"tensor_parallel {tensor_parallel}"
        )


def kv_bytes_per_token_per_gpu(model: LlmModel, tensor_parallel: int) -> int:
    """KV bytes one token occupies on each of the ``tensor_parallel`` GPUs.

    Tensor parallelism splits KV heads across GPUs; when there are fewer KV heads than GPUs each GPU
    keeps a copy of the head its query heads share, so the per-GPU share never drops below one head.
    """
    heads_per_gpu = math.ceil(model.kv_heads / tensor_parallel)
    return 2 * model.layers * heads_per_gpu * model.head_dim * model.dtype_bytes


def _free_bytes_per_gpu(
    model: LlmModel, machine: Machine, tensor_parallel: int, reserve_fraction: float
) -> float:
    check_tensor_parallel(model, machine, tensor_parallel)
    if not 0 <= reserve_fraction < 1:
        raise ConfigError(f"reserve_fraction must be in [0, 1), got {reserve_fraction!r}")
    usable = machine.gpu.hbm_bytes * (1 - reserve_fraction)
    return usable - model.weight_bytes / tensor_parallel


def fits(
    model: LlmModel | str,
    machine: Machine | str,
    tensor_parallel: int,
    reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
) -> bool:
    """Whether the weights, the reserve and at least one request of maximum context fit in memory.

    A model that leaves no room for even one token of KV cache is useless, and one that cannot hold a
    single full-length request cannot serve its context window; models without a ``max_context`` need
    room for one token.
    """
    model, machine = resolve_model(model), resolve_machine(machine)
    free = _free_bytes_per_gpu(model, machine, tensor_parallel, reserve_fraction)
    needed_tokens = model.max_context or 1
    return free >= needed_tokens * kv_bytes_per_token_per_gpu(model, tensor_parallel)


def kv_capacity_tokens(
    model: LlmModel | str,
    machine: Machine | str,
    tensor_parallel: int,
    reserve_fraction: float = DEFAULT_RESERVE_FRACTION,
) -> int:
    """Tokens of KV cache one model instance of ``tensor_parallel`` GPUs can hold after its weights.

    Each GPU holds ``1/tensor_parallel`` of the weights and keeps ``reserve_fraction`` of its memory free
    (see :data:`DEFAULT_RESERVE_FRACTION`). Raises :class:`ConfigError`, naming the sizes, when the model
    does not fit as :func:`fits` defines it.
    """
    model, machine = resolve_model(model), resolve_machine(machine)
    free = _free_bytes_per_gpu(model, machine, tensor_parallel, reserve_fraction)
    per_token = kv_bytes_per_token_per_gpu(model, tensor_parallel)
    tokens = math.floor(free / per_token) if free > 0 else 0
    needed = model.max_context or 1
    if tokens < needed:
        usable = machine.gpu.hbm_bytes * (1 - reserve_fraction) / GIB
        raise ConfigError(
            f"{model.name} does not fit on {tensor_parallel} x {machine.gpu.name}: "
            f"{model.weight_bytes / tensor_parallel / GIB:.1f} GiB of weights per GPU against "
            f"{usable:.1f} GiB usable ({machine.gpu.hbm_gb:g} GiB less a {reserve_fraction:.0%} reserve), "
            f"leaving room for {tokens} KV tokens where one {needed}-token request needs "
            f"{needed * per_token / GIB:.2f} GiB"
        )
    return tokens


def _positive(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
