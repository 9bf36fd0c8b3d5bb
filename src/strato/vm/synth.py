"""Seeded synthetic VM CPU utilisation: the embedded default data of the oversubscription domain.

The generator needs no files and is meant to exercise policies, not to reproduce a published trace: it
mixes four pattern classes that an oversubscription policy has to tell apart, and correlated groups that
make nodes overload. ``vm_class`` of the result is each VM's pattern class, the ground truth for tests.

Time. Slots of 300 s from Monday 00:00; ``days`` may be fractional (rounded to whole slots). Values are CPU %
of the VM's own cores in [0, 100]; ``avg_pct`` is the slot's average and ``max_pct`` its maximum.

Pattern classes (parameters drawn per VM, uniform in the given ranges unless said otherwise)
    ``diurnal``   business-hours load: base 3-20 % plus amplitude 20-55 % times a raised cosine peaking at
                  N(14 h, 2.5 h) (clipped to 8-20 h), sharpened by a power 1-2.5; weekends scale the
                  amplitude by 0.25-0.7; each day's amplitude varies by a log-normal factor (sigma 0.1);
                  AR(1) noise with a 30-minute correlation time and 1.5-4 points standard deviation.
    ``periodic``  a batch job: base 2-12 % and a Gaussian peak of height 35-85 % and width 5-25 minutes
                  (one standard deviation) every 1, 2, 3, 4, 6, 8 or 12 hours with a random phase; the
                  peak is evaluated minute by minute so that a slot's maximum sees a peak its average
                  smooths; white noise of 0.5-2 points.
    ``bursty``    base 1-8 % and Poisson bursts (1-6 a day) lasting 5-60 minutes at 30-95 %; a slot's
                  average counts the part of the slot a burst covers, its maximum the full height.
    ``flat``      a steady 5-45 % with AR(1) noise of 0.3-2 points (2-hour correlation time).

Maximum within a slot. Where a pattern does not define it, ``max = avg (1 + g) + e`` with g ~ gamma(2,
r/2), r 0.15-0.7 per VM (the mean relative excess of the peak over the average), and e ~ exponential(0.8
points), then clipped to [avg, 100].

Correlated groups. ``correlated_groups`` groups of ``group_size`` VMs stand for the replicas of one service:
members are drawn from one class (``diurnal``, ``periodic`` or ``bursty``, with probability proportional
to the VMs of that class still free; ``flat`` VMs stay steady and are never grouped), share that class's
timing (peak hour and weekend factor; period, phase and peak width), have the same size (the first
member's), and add a shared latent load: ``latent_pct`` times a softplus of a slow AR(1) process (1-hour
correlation time) plus shared bursts (1 a day, 15-60 minutes, 1.5-3 times ``latent_pct``), weighted
0.8-1.2 per member. Members therefore peak together, which is what overloads a node that holds several of
them. :func:`group_membership` returns which group each VM is in.

Class counts follow ``mix`` exactly (largest remainder), and classes are shuffled over VM indices so that
position says nothing about class. VM sizes come from :func:`strato.traces.vm.draw_vcpus` with the same seed.
Every random draw uses its own named stream of :class:`~strato.core.rng.RandomStreams`, so the output
depends only on the configuration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

from strato.core.rng import RandomStreams
from strato.core.specs import parse_synthetic_spec
from strato.errors import ConfigError
from strato.vm.model import SLOT_S, SLOTS_PER_DAY, VmUsage

__all__ = [
    "DEFAULT_MIX",
    "PATTERNS",
    "SynthVmConfig",
    "generate_vms",
    "group_membership",
    "parse_synth_vm_spec",
]

PATTERNS = ("diurnal", "periodic", "bursty", "flat")
DEFAULT_MIX: dict[str, float] = {"diurnal": 0.3, "periodic": 0.2, "bursty": 0.2, "flat": 0.3}
_GROUPABLE = ("diurnal", "periodic", "bursty")
_PERIOD_HOURS = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
_MINUTES_PER_SLOT = SLOT_S // 60
# One correlated group per this many VMs when correlated_groups is left to the default.
_VMS_PER_AUTO_GROUP = 25

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SynthVmConfig:
    """What :func:`generate_vms` draws; see the module docstring for the model.

    ``mix`` weights the pattern classes (normalised; missing classes get none). ``correlated_groups`` is the
    number of groups of ``group_size`` VMs sharing a latent load; ``None`` means one group per 25 VMs, as
    many as the groupable classes can fill (4 for the default 100 VMs). ``latent_pct`` scales the shared
    load (CPU points).
    """

    vms: int = 100
    days: float = 28.0
    seed: int = 0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    correlated_groups: int | None = None
    group_size: int = 5
    latent_pct: float = 12.0

    def __post_init__(self) -> None:
        if isinstance(self.vms, bool) or not isinstance(self.vms, int) or self.vms < 1:
            raise ConfigError(f"vms must be a positive integer, not {self.vms!r}")
        if not (isinstance(self.days, int | float) and math.isfinite(self.days) and self.days > 0):
            raise ConfigError(f"days must be a positive number, not {self.days!r}")
        if self.slots < 2:
            raise ConfigError(f"days={self.days:g} is under 2 slots of {SLOT_S} s")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, not {self.seed!r}")
        unknown = [k for k in self.mix if k not in PATTERNS]
        if unknown:
            raise ConfigError(f"unknown pattern class {unknown[0]!r} in mix (known: {', '.join(PATTERNS)})")
        weights = [float(self.mix.get(k, 0.0)) for k in PATTERNS]
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"mix weights must be non-negative with a positive sum, not {dict(self.mix)}")
        # A private copy, normalised, so that a caller's dict changing later cannot change the config.
        object.__setattr__(self, "mix", {k: w / sum(weights) for k, w in zip(PATTERNS, weights, strict=True)})
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 2:
            raise ConfigError(f"group_size must be an integer of at least 2, not {self.group_size!r}")
        groups = self.correlated_groups
        if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int) or groups < 0):
            raise ConfigError(f"correlated_groups must be a non-negative integer, not {groups!r}")
        if not (math.isfinite(self.latent_pct) and self.latent_pct >= 0):
            raise ConfigError(f"latent_pct must be a non-negative number, not {self.latent_pct!r}")
        if groups:
            free = dict(zip(PATTERNS, class_counts(self).tolist(), strict=True))
            fits = sum(free[k] // self.group_size for k in _GROUPABLE)
            if fits < groups:
                raise ConfigError(
                    f"{groups} correlated groups of {self.group_size} VMs do not fit: the diurnal, periodic "
                    f"and bursty classes ({', '.join(f'{free[k]} {k}' for k in _GROUPABLE)}) hold {fits}"
                )

    @property
    def slots(self) -> int:
        return round(self.days * SLOTS_PER_DAY)


# ------------------------------------------------------------------------------------- spec parsing

_SPEC_KEYS: dict[str, tuple[str, type]] = {
    "vms": ("vms", int),
    "days": ("days", float),
    "seed": ("seed", int),
    "groups": ("correlated_groups", int),
    "group_size": ("group_size", int),
    "latent": ("latent_pct", float),
    **{pattern: (pattern, float) for pattern in PATTERNS},
}


def parse_synth_vm_spec(text: str, *, seed: int = 0) -> SynthVmConfig:
    """``synthetic`` or ``synthetic:key=value,...``. Keys: ``vms``, ``days``, ``seed`` (default: the
    ``seed`` argument), ``groups`` (correlated groups), ``group_size``, ``latent`` (latent load, CPU
    points), and class weights ``diurnal``, ``periodic``, ``bursty``, ``flat``: when any is given, they form
    the mix (normalised, absent classes 0). Raises :class:`ConfigError` naming the offending key."""
    values = parse_synthetic_spec(text, _SPEC_KEYS, what="synthetic VM data")
    mix = {k: float(values.pop(k)) for k in PATTERNS if k in values}
    return SynthVmConfig(
        vms=int(values.get("vms", 100)),
        days=float(values.get("days", 28.0)),
        seed=int(values.get("seed", seed)),
        mix=mix or dict(DEFAULT_MIX),
        correlated_groups=int(values["correlated_groups"]) if "correlated_groups" in values else None,
        group_size=int(values.get("group_size", 5)),
        latent_pct=float(values.get("latent_pct", 12.0)),
    )


# ------------------------------------------------------------------------------------- assignment


def class_counts(config: SynthVmConfig) -> NDArray[np.int64]:
    """VMs per class, in :data:`PATTERNS` order: ``mix`` shares of ``vms`` by largest remainder."""
    shares = np.array([config.mix.get(k, 0.0) for k in PATTERNS], dtype=np.float64) * config.vms
    counts: NDArray[np.int64] = np.floor(shares).astype(np.int64)
    # Ties in the remainder go to the earlier class, so the counts do not depend on float noise order.
    order = np.argsort(-(shares - counts), kind="stable")
    counts[order[: config.vms - int(counts.sum())]] += 1
    return counts


def _assign(config: SynthVmConfig) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(class index per VM into PATTERNS, group per VM or -1)."""
    streams = RandomStreams(config.seed)
    counts = class_counts(config)
    classes = np.repeat(np.arange(len(PATTERNS), dtype=np.int64), counts)
    classes = classes[streams.stream("vm-classes").permutation(config.vms)]

    group = np.full(config.vms, -1, dtype=np.int64)
    wanted = config.correlated_groups
    if wanted is None:
        wanted = config.vms // _VMS_PER_AUTO_GROUP
    rng = streams.stream("vm-groups")
    groupable = [PATTERNS.index(k) for k in _GROUPABLE]
    for g in range(wanted):
        free = np.array([np.count_nonzero((classes == c) & (group < 0)) for c in groupable], dtype=float)
        free[free < config.group_size] = 0
        if free.sum() == 0:
            break  # only reachable for the default number of groups; an explicit one was checked
        c = groupable[int(rng.choice(len(groupable), p=free / free.sum()))]
        candidates = np.flatnonzero((classes == c) & (group < 0))
        group[rng.choice(candidates, size=config.group_size, replace=False)] = g
    return classes, group


def group_membership(config: SynthVmConfig) -> NDArray[np.int64]:
    """The correlated group of each VM of ``generate_vms(config)`` (0, 1, ...), or -1 for none."""
    return _assign(config)[1]


# ------------------------------------------------------------------------------------- generation


def generate_vms(config: SynthVmConfig) -> VmUsage:
    """Synthetic VM usage for ``config``; deterministic for a configuration."""
    from strato.traces.vm import draw_vcpus  # traces.vm imports this module lazily; keep the cycle lazy too

    streams = RandomStreams(config.seed)
    classes, group = _assign(config)
    slots, n = config.slots, config.vms
    avg = np.empty((slots, n), dtype=np.float64)
    floor_max = np.zeros((slots, n), dtype=np.float64)
    hours = np.arange(slots, dtype=np.float64) * (SLOT_S / 3600)

    for c, pattern in enumerate(PATTERNS):
        members = np.flatnonzero(classes == c)
        if members.size == 0:
            continue
        rng = streams.stream(f"vm-{pattern}")
        groups = group[members]
        if pattern == "diurnal":
            avg[:, members] = _diurnal(rng, hours, groups)
        elif pattern == "periodic":
            avg[:, members], floor_max[:, members] = _periodic(rng, slots, groups)
        elif pattern == "bursty":
            avg[:, members], floor_max[:, members] = _bursty(rng, slots, members.size)
        else:
            avg[:, members] = _flat(rng, slots, members.size)

    latent_avg, latent_max = _latent(streams.stream("vm-latent"), slots, group, config.latent_pct)
    avg += latent_avg
    np.clip(avg, 0.0, 100.0, out=avg)
    floor_max += latent_max

    rng = streams.stream("vm-peaks")
    ratio = rng.uniform(0.15, 0.7, size=n)
    excess = rng.gamma(2.0, ratio / 2, size=(slots, n))
    mx = avg * (1.0 + excess) + rng.exponential(0.8, size=(slots, n))
    np.maximum(mx, floor_max, out=mx)
    np.clip(mx, avg, 100.0, out=mx)

    vcpus = draw_vcpus(n, config.seed)
    for g in np.unique(group[group >= 0]).tolist():
        members = np.flatnonzero(group == g)
        vcpus[members] = vcpus[members[0]]  # replicas of one service have one size

    days = f"{config.days:g}"
    return VmUsage(
        name=f"synthetic:vms={n},days={days},seed={config.seed}",
        avg_pct=avg,
        max_pct=mx,
        vcpus=vcpus,
        vm_ids=[f"syn-{i:04d}" for i in range(n)],
        vm_class=[PATTERNS[c] for c in classes.tolist()],
        slot_s=SLOT_S,
        vcpus_source=f"drawn: RC-2017 approximation, seed {config.seed}"
        + ("; one size per correlated group" if (group >= 0).any() else ""),
    )


def _ar1(rng: np.random.Generator, slots: int, sigma: FloatArray, tau_s: float) -> FloatArray:
    """Stationary AR(1) noise, (slots, len(sigma)), standard deviation ``sigma`` per column, correlation
    time ``tau_s`` seconds; filtered in C by scipy rather than a Python loop over slots."""
    phi = math.exp(-SLOT_S / tau_s)
    white = rng.standard_normal((slots, sigma.size))
    start = phi * rng.standard_normal((1, sigma.size))  # a stationary state before slot 0
    filtered, _ = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], white, axis=0, zi=start)
    return np.asarray(filtered, dtype=np.float64) * sigma


def _share(values: FloatArray, groups: NDArray[np.int64]) -> FloatArray:
    """Give every member of a group the first member's value (shared timing of a service's replicas)."""
    for g in np.unique(groups[groups >= 0]).tolist():
        members = np.flatnonzero(groups == g)
        values[members] = values[members[0]]
    return values


def _diurnal(rng: np.random.Generator, hours: FloatArray, groups: NDArray[np.int64]) -> FloatArray:
    n = groups.size
    base = rng.uniform(3, 20, n)
    amplitude = rng.uniform(20, 55, n)
    peak = _share(np.clip(rng.normal(14, 2.5, n), 8, 20), groups)
    sharpness = _share(rng.uniform(1.0, 2.5, n), groups)
    weekend = _share(rng.uniform(0.25, 0.7, n), groups)
    sigma = rng.uniform(1.5, 4.0, n)
    day = (hours // 24).astype(np.int64)
    n_days = int(day[-1]) + 1
    daily = np.exp(rng.normal(0, 0.1, (n_days, n)))[day]
    shape = ((1 + np.cos(2 * np.pi * ((hours % 24)[:, None] - peak) / 24)) / 2) ** sharpness
    factor = np.where((day % 7 >= 5)[:, None], weekend, 1.0) * daily
    level: FloatArray = base + amplitude * factor * shape
    return level + _ar1(rng, hours.size, sigma, 1800.0)


def _periodic(
    rng: np.random.Generator, slots: int, groups: NDArray[np.int64]
) -> tuple[FloatArray, FloatArray]:
    n = groups.size
    period = _share(rng.choice(_PERIOD_HOURS, n) * 60, groups)  # minutes
    phase = _share(rng.uniform(0, 1, n) * period, groups)
    width = _share(rng.uniform(5, 25, n), groups)
    base = rng.uniform(2, 12, n)
    height = rng.uniform(35, 85, n)
    sigma = rng.uniform(0.5, 2.0, n)
    minutes = np.arange(slots * _MINUTES_PER_SLOT, dtype=np.float64) + 0.5
    position = np.mod(minutes[:, None] - phase, period)
    distance = np.minimum(position, period - position)
    fine = (base + height * np.exp(-0.5 * (distance / width) ** 2)).reshape(slots, _MINUTES_PER_SLOT, n)
    noise = sigma * rng.standard_normal((slots, n))
    return fine.mean(axis=1) + noise, fine.max(axis=1) + noise


def _bursts(
    rng: np.random.Generator,
    slots: int,
    n: int,
    per_day: FloatArray,
    height_range: tuple[float, float],
    minutes_range: tuple[float, float],
) -> tuple[FloatArray, FloatArray]:
    """Poisson bursts per column: (added average, added maximum) per slot. A burst covering part of a
    slot adds its height times the covered share to the average and its full height to the maximum."""
    total_min = slots * _MINUTES_PER_SLOT
    count = rng.poisson(per_day * total_min / 1440)
    column = np.repeat(np.arange(n), count)
    start = rng.uniform(0, total_min, column.size)
    end = start + rng.uniform(*minutes_range, column.size)
    height = rng.uniform(*height_range, column.size)
    add_avg = np.zeros((slots, n))
    add_max = np.zeros((slots, n))
    first = (start // _MINUTES_PER_SLOT).astype(np.int64)
    longest = math.ceil(minutes_range[1] / _MINUTES_PER_SLOT) + 1
    for k in range(longest + 1):  # a burst touches at most this many slots
        slot = first + k
        lo = np.maximum(start, slot * _MINUTES_PER_SLOT)
        hi = np.minimum(end, (slot + 1) * _MINUTES_PER_SLOT)
        covered = np.clip(hi - lo, 0, None) / _MINUTES_PER_SLOT
        use = (covered > 0) & (slot < slots)
        np.add.at(add_avg, (slot[use], column[use]), height[use] * covered[use])
        np.maximum.at(add_max, (slot[use], column[use]), height[use])
    # Overlapping bursts add up in the average; the maximum keeps the highest one.
    return add_avg, add_max


def _bursty(rng: np.random.Generator, slots: int, n: int) -> tuple[FloatArray, FloatArray]:
    base = rng.uniform(1, 8, n)
    sigma = rng.uniform(0.3, 1.5, n)
    add_avg, add_max = _bursts(rng, slots, n, rng.uniform(1, 6, n), (30, 95), (5, 60))
    level = base + sigma * np.abs(rng.standard_normal((slots, n)))
    return level + add_avg, level + add_max


def _flat(rng: np.random.Generator, slots: int, n: int) -> FloatArray:
    level = rng.uniform(5, 45, n)
    sigma = rng.uniform(0.3, 2.0, n)
    return level + _ar1(rng, slots, sigma, 7200.0)


def _latent(
    rng: np.random.Generator, slots: int, group: NDArray[np.int64], scale: float
) -> tuple[FloatArray, FloatArray]:
    """The shared load of each correlated group, weighted per member: (added average, added maximum)."""
    n = group.size
    add_avg = np.zeros((slots, n))
    add_max = np.zeros((slots, n))
    ids = np.unique(group[group >= 0])
    if ids.size == 0 or scale == 0:
        return add_avg, add_max
    slow = _ar1(rng, slots, np.ones(ids.size), 3600.0)
    slow = np.logaddexp(0.0, slow)  # softplus: positive, mostly moderate, occasionally high
    b_avg, b_max = _bursts(rng, slots, ids.size, np.ones(ids.size), (1.5, 3.0), (15, 60))
    weight = rng.uniform(0.8, 1.2, n)
    for k, g in enumerate(ids.tolist()):
        members = np.flatnonzero(group == g)
        add_avg[:, members] = scale * (slow[:, k] + b_avg[:, k])[:, None] * weight[members]
        add_max[:, members] = scale * (slow[:, k] + b_max[:, k])[:, None] * weight[members]
    return add_avg, add_max


# ---- a workload whose best policy is known --------------------------------------------------------

KNOWN_BEST_RATIOS = {"steady": 2.0, "diurnal": 1.7, "batch": 1.3, "spiky": 1.0}
"""The best static ratio per class of :func:`known_best_workload`, by construction (ratios 1.0-2.0 in
steps of 0.1): every window of a class peaks at the same designed level, so one ratio is right for it."""

_DESIGNED_PEAK = {"steady": 0.30, "diurnal": 0.575, "batch": 0.745, "spiky": 0.95}


def known_best_workload(vms: int = 96, days: int = 21, seed: int = 0) -> tuple[VmUsage, dict[str, float]]:
    """Four services whose replicas move together, each peaking at one designed level every day.

    ``steady`` (flat at 25-30 %), ``diurnal`` (a daily wave to 57.5 %), ``batch`` (four sharp runs a day
    to 74.5 %) and ``spiky`` (one 15-minute spike a day, at a random time, to 95 %). Noise is bounded
    (+-1 point), so the largest safe ratio of a node holding one class is ``KNOWN_BEST_RATIOS[class]``
    on every day (``1 / peak`` snapped down): the best policy is known and per class. Pack it with
    ``EnvConfig(packing="by-class")`` so that a node's class is its VMs'.
    """
    if vms < 4 or days < 2:
        raise ConfigError("the known-best workload needs at least 4 VMs and 2 days")
    streams = RandomStreams(seed)
    slots = days * SLOTS_PER_DAY
    hours = np.arange(slots) * SLOT_S / 3600
    day_hour = hours % 24
    shapes = {
        "steady": np.full(slots, 0.25),
        "diurnal": 0.15 + (0.575 - 0.15) * (0.5 - 0.5 * np.cos(2 * np.pi * (day_hour - 2) / 24)) ** 2,
        "batch": 0.10 + (0.745 - 0.10) * (np.abs(((day_hour + 0.5) % 6) - 0.5) < 0.25),
    }
    spike = np.full(slots, 0.08)
    starts = streams.stream("known-spikes").integers(0, SLOTS_PER_DAY - 3, size=days)
    for day, start in enumerate(starts.tolist()):
        begin = day * SLOTS_PER_DAY + start
        spike[begin : begin + 3] = 0.95
    shapes["spiky"] = spike
    names = list(KNOWN_BEST_RATIOS)
    classes = [names[vm % len(names)] for vm in range(vms)]
    noise = streams.stream("known-noise").uniform(-0.01, 0.0, size=(slots, vms))
    levels = np.column_stack([shapes[name] for name in classes]) + noise
    # The designed peak is reached exactly once a day, so the safe ratio never depends on the noise.
    for vm, name in enumerate(classes):
        per_day = levels[:, vm].reshape(days, SLOTS_PER_DAY)
        top = per_day.argmax(axis=1)
        per_day[np.arange(days), top] = _DESIGNED_PEAK[name]
    max_pct = np.clip(levels * 100, 0, 100)
    from strato.traces.vm import draw_vcpus

    usage = VmUsage(
        name=f"known-best:vms={vms},days={days},seed={seed}",
        avg_pct=max_pct * 0.9,
        max_pct=max_pct,
        vcpus=draw_vcpus(vms, seed),
        vm_ids=[f"kb{vm:03d}" for vm in range(vms)],
        vm_class=classes,
        vcpus_source=f"drawn: RC-2017 approximation, seed {seed}",
    )
    return usage, dict(KNOWN_BEST_RATIOS)
