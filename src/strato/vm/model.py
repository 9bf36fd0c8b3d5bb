"""VM CPU utilisation as every vm module sees it: slots x VMs arrays of CPU percent, plus VM sizes.

``max_pct`` (the per-slot maximum reading) drives risk, as the issue asks: a node is overloaded when its
VMs' peaks together exceed its cores. ``avg_pct`` is kept for encodings and plots. Percent of each VM's
own vCPUs, in [0, 100]; slots are ``slot_s`` seconds (Azure: 300).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from strato.errors import ConfigError

SLOT_S = 300
SLOTS_PER_DAY = 86400 // SLOT_S


@dataclass
class VmUsage:
    name: str
    avg_pct: np.ndarray
    """(slots, vms) float64, average CPU % per 5-minute slot."""
    max_pct: np.ndarray
    """(slots, vms) float64, maximum CPU % per slot (risk is computed on these)."""
    vcpus: np.ndarray
    """(vms,) int64 virtual cores per VM."""
    vm_ids: list[str]
    vm_class: list[str] = field(default_factory=list)
    """A class per VM (e.g. ``interactive``, ``batch``, ``unknown``), for human rules such as per-class ratio
    caps; synthetic data also uses it for the generator's pattern class."""
    slot_s: int = SLOT_S
    vcpus_source: str = "data"
    """``data`` when the trace has sizes, else how they were drawn (documented distribution and seed)."""

    def __post_init__(self) -> None:
        if self.avg_pct.shape != self.max_pct.shape or self.avg_pct.ndim != 2:
            raise ConfigError(f"{self.name}: avg and max must be (slots, vms) arrays of one shape")
        vms = self.max_pct.shape[1]
        if self.vcpus.shape != (vms,) or len(self.vm_ids) != vms:
            raise ConfigError(
                f"{self.name}: {vms} VMs but {len(self.vcpus)} sizes and {len(self.vm_ids)} ids"
            )
        if not self.vm_class:
            self.vm_class = ["unknown"] * vms
        if len(self.vm_class) != vms:
            raise ConfigError(f"{self.name}: {vms} VMs but {len(self.vm_class)} classes")

    @property
    def slots(self) -> int:
        return int(self.max_pct.shape[0])

    @property
    def vms(self) -> int:
        return int(self.max_pct.shape[1])

    @property
    def days(self) -> float:
        return self.slots * self.slot_s / 86400

    @property
    def slots_per_day(self) -> int:
        return 86400 // self.slot_s

    def first_days(self, days: int) -> VmUsage:
        """The first ``days`` days only: tune on a validation split without touching the later test days."""
        if not 2 <= days <= self.days:
            raise ConfigError(f"{self.name}: cannot keep the first {days} days of {self.days:.1f}")
        cut = days * self.slots_per_day
        return VmUsage(
            name=f"{self.name} (days 0-{days - 1})",
            avg_pct=self.avg_pct[:cut],
            max_pct=self.max_pct[:cut],
            vcpus=self.vcpus,
            vm_ids=self.vm_ids,
            vm_class=self.vm_class,
            slot_s=self.slot_s,
            vcpus_source=self.vcpus_source,
        )
