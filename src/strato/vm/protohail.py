"""ProtoHAIL: prototypical imitation learning of oversubscription ratios, with humans in the loop.

The public text is thin; this is our reconstruction (docs/vm.md):

1. Encode each node-window's recent past: the last day's shape as six 4-hour peaks, and its level:
   p50/p90/p99/max/std over the history, the last day's p99 and max, the daily peaks (weighted up: level
   decides safety).
2. Learn K prototypes with k-means (k-means++ seeding, seeded): windows that look alike share a prototype
   -- the "approximate symmetries" of utilisation patterns.
3. Imitate the hindsight oracle per prototype with a safety margin: a prototype's ratio is the
   ``safety`` quantile of the oracle's safe ratios over its training members (0.1: the ratio that would
   have been safe in 90 % of similar windows), snapped down to the allowed set.
4. Infuse human knowledge. (a) Hard rules, always enforced at prediction time (:class:`HumanRules`):
   never oversubscribe a node whose last-day p99 exceeded a threshold, a global maximum, caps per VM class.
   (b) Feedback on prototypes (:class:`Feedback`): accept, lower to a ratio, or forbid (ratio 1.0); stored
   with the prototype's centroid so that retraining maps it onto the nearest new prototype.

Every decision names its prototype (:meth:`ProtoHAIL.explain`). The interface follows scikit-learn:
``fit(inputs, targets)``, ``predict(inputs)``, ``save``/``load``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from strato.core.rng import RandomStreams
from strato.core.specs import read_toml
from strato.errors import ConfigError
from strato.vm.env import oracle_ratios, snap_down, window_series
from strato.vm.policies import DecisionInputs, Policy

if TYPE_CHECKING:
    from strato.vm.evaluate import Experiment

MODEL_FORMAT = "strato-protohail"
MODEL_VERSION = 1
ACTIONS = ("accept", "lower", "forbid")


# ---- encoding ---------------------------------------------------------------------------------------


LEVEL_WEIGHT = 5.0
"""Default weight of the level features against the shape ones in prototype distances. Whether a ratio is
safe depends mostly on how high a node runs, so level dominates; the shape still separates patterns of
equal level (docs/vm.md gives the sensitivity)."""


def encode(inputs: DecisionInputs, level_weight: float = LEVEL_WEIGHT) -> np.ndarray:
    """(n, 20) features per node-window; needs at least one day of history.

    Shape: the last day's peak in each 4-hour block (6). Level: p50, p90, p99, max and std over the whole
    history, the last day's p99 and max (7), and the history's daily peaks, highest first (7).
    """
    per_day = inputs.slots_per_day
    history = inputs.history_max
    count = len(history)
    last_day = history[:, -per_day:]
    if np.isnan(last_day).any():
        raise ConfigError("ProtoHAIL needs at least one whole day of history before every decision")
    blocks = last_day[:, : per_day // 6 * 6].reshape(count, 6, per_day // 6).max(axis=2)
    days = history.shape[1] // per_day
    daily = history[:, history.shape[1] - days * per_day :].reshape(count, days, per_day)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # days before the data began are all NaN
        peaks = np.nanmax(daily, axis=2)
        stats = np.column_stack(
            [
                np.nanpercentile(history, [50, 90, 99, 100], axis=1).T,
                np.nanstd(history, axis=1),
                np.percentile(last_day, 99, axis=1),
                last_day.max(axis=1),
            ]
        )
    # A day without data counts as the highest day seen, the cautious reading of a short history.
    peaks = np.where(np.isnan(peaks), np.nanmax(peaks, axis=1, keepdims=True), peaks)
    peaks = -np.sort(-peaks, axis=1)[:, :7]
    if peaks.shape[1] < 7:
        peaks = np.hstack([peaks, np.repeat(peaks[:, -1:], 7 - peaks.shape[1], axis=1)])
    return np.hstack([blocks, level_weight * stats, level_weight * peaks])


def hourly_profile(inputs: DecisionInputs) -> np.ndarray:
    """(n, 24) the last day's hourly peaks: what a reviewer looks at."""
    per_day = inputs.slots_per_day
    last_day = inputs.history_max[:, -per_day:]
    hours = last_day[:, : per_day // 24 * 24].reshape(len(last_day), 24, per_day // 24)
    profile: np.ndarray = hours.max(axis=2)
    return profile


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm with k-means++ seeding; returns (centroids, labels)."""
    rng = RandomStreams(seed).stream("protohail-kmeans")
    n = len(points)
    k = min(k, n)
    centroids = [points[int(rng.integers(n))]]
    distance = ((points - centroids[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = distance.sum()
        pick = int(rng.choice(n, p=distance / total)) if total > 0 else int(rng.integers(n))
        centroids.append(points[pick])
        distance = np.minimum(distance, ((points - points[pick]) ** 2).sum(axis=1))
    centres = np.array(centroids)
    labels = np.zeros(n, dtype=int)
    for _ in range(iterations):
        d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        new_labels = d2.argmin(axis=1)
        if _ and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for cluster in range(k):
            chosen = points[labels == cluster]
            if len(chosen):
                centres[cluster] = chosen.mean(axis=0)
    return centres, labels


def nearest(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d2 = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    labels = d2.argmin(axis=1)
    return labels, np.sqrt(d2[np.arange(len(points)), labels])


def prototype_id(index: int) -> str:
    return f"P{index:02d}"


# ---- human knowledge ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HumanRules:
    """Hard constraints an operator imposes; enforced on every prediction, whatever was learned."""

    max_p99: float | None = None
    """Never oversubscribe a node whose utilisation p99 over the last day exceeded this (0-1)."""
    max_ratio: float | None = None
    class_caps: dict[str, float] = field(default_factory=dict)
    """Largest ratio on a node hosting any VM of the class."""

    @classmethod
    def load(cls, path: Path) -> HumanRules:
        """TOML: ``never_oversubscribe_above_p99 = 0.8``, ``max_ratio = 1.8``,
        ``[class_caps]`` ``interactive = 1.2``."""
        data = read_toml(
            path,
            what="rules",
            known=("never_oversubscribe_above_p99", "max_ratio", "class_caps"),
            entries="rule(s)",
        )
        caps = data.get("class_caps", {})
        if not isinstance(caps, dict):
            raise ConfigError(f"{path}: [class_caps] must be a table of class = ratio")
        return cls.checked(data.get("never_oversubscribe_above_p99"), data.get("max_ratio"), caps, str(path))

    @classmethod
    def checked(cls, max_p99: Any, max_ratio: Any, caps: dict[str, Any], where: str = "rules") -> HumanRules:
        def number(value: Any, name: str, low: float, high: float) -> float:
            if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{where}: {name} must be a number in [{low:g}, {high:g}], not {value!r}")
            return float(value)

        return cls(
            max_p99=None if max_p99 is None else number(max_p99, "never_oversubscribe_above_p99", 0, 1),
            max_ratio=None if max_ratio is None else number(max_ratio, "max_ratio", 1, 100),
            class_caps={name: number(cap, f"class_caps.{name}", 1, 100) for name, cap in caps.items()},
        )

    def apply(self, inputs: DecisionInputs, ratios: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Clip ``ratios`` to the rules; the reason a rule bound each decision (None where none did)."""
        result = ratios.copy()
        reasons: list[str | None] = [None] * len(result)
        if self.max_ratio is not None:
            cap = snap_down(np.array([self.max_ratio]), inputs.ratios)[0]
            for index in np.flatnonzero(result > cap).tolist():
                result[index] = cap
                reasons[index] = f"rule: max ratio {self.max_ratio:g}"
        if self.class_caps:
            for index, classes in enumerate(inputs.classes):
                caps = [self.class_caps[c] for c in set(classes) if c in self.class_caps]
                if caps:
                    cap = snap_down(np.array([min(caps)]), inputs.ratios)[0]
                    if result[index] > cap:
                        result[index] = cap
                        reasons[index] = f"rule: class cap {min(caps):g}"
        if self.max_p99 is not None:
            last_day = inputs.history_max[:, -inputs.slots_per_day :]
            p99 = np.nanpercentile(last_day, 99, axis=1)
            for index in np.flatnonzero(p99 > self.max_p99).tolist():
                if result[index] > 1.0:
                    reasons[index] = f"rule: last-day p99 {p99[index]:.2f} > {self.max_p99:g}"
                result[index] = 1.0
        return result, reasons

    def to_json(self) -> dict[str, Any]:
        return {"max_p99": self.max_p99, "max_ratio": self.max_ratio, "class_caps": dict(self.class_caps)}


@dataclass(frozen=True)
class FeedbackEntry:
    action: str
    ratio: float | None = None
    centroid: list[float] | None = None
    note: str = ""


@dataclass
class Feedback:
    """Operators' verdicts on prototypes: ``accept``, ``lower`` (to ``ratio``) or ``forbid``."""

    entries: dict[str, FeedbackEntry] = field(default_factory=dict)
    model: str | None = None
    """The fingerprint of the model the ids refer to."""

    @classmethod
    def load(cls, path: Path) -> Feedback:
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the feedback: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("prototypes"), dict):
            raise ConfigError(f"{path}: expected an object with a 'prototypes' object")
        entries = {}
        for name, raw in data["prototypes"].items():
            if not isinstance(raw, dict) or raw.get("action") not in ACTIONS:
                raise ConfigError(f"{path}: prototype {name}: action must be one of {', '.join(ACTIONS)}")
            ratio = raw.get("ratio")
            if raw["action"] == "lower" and (not isinstance(ratio, int | float) or ratio < 1.0):
                raise ConfigError(f"{path}: prototype {name}: 'lower' needs a ratio >= 1.0")
            entries[name] = FeedbackEntry(raw["action"], ratio, raw.get("centroid"), str(raw.get("note", "")))
        return cls(entries, data.get("model"))

    def save(self, path: Path) -> None:
        payload = {
            "model": self.model,
            "prototypes": {
                name: {"action": e.action, "ratio": e.ratio, "centroid": e.centroid, "note": e.note}
                for name, e in sorted(self.entries.items())
            },
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")


# ---- the learner ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One node-window's ratio and why: its prototype, the distance to it, what bound the ratio."""

    ratio: float
    prototype: str
    distance: float
    reason: str

    def to_row(self) -> dict[str, str | float]:
        return asdict(self)

    def to_json(self) -> dict[str, str | float]:
        return asdict(self)


@dataclass(frozen=True)
class PrototypeRow:
    """One prototype of a trained model, as a reviewer sees it."""

    prototype: str
    members: int
    """Training windows it holds."""
    learned: float
    """The ratio it imitates from the oracle, before feedback."""
    ratio: float
    """The ratio predictions use (after feedback; the hard rules still apply per decision)."""
    feedback: str
    """The verdict given on it (``accept``, ``lower``, ``forbid``), or empty."""

    def to_row(self) -> dict[str, str | int | float]:
        return asdict(self)

    def to_json(self) -> dict[str, str | int | float]:
        return asdict(self)


class ProtoHAIL(Policy):
    parameter = "safety"

    def __init__(
        self,
        *,
        k: int = 12,
        safety: float = 0.1,
        seed: int = 0,
        level_weight: float = LEVEL_WEIGHT,
        rules: HumanRules | None = None,
        feedback: Feedback | None = None,
    ) -> None:
        if k < 1:
            raise ConfigError("ProtoHAIL needs at least one prototype (k >= 1)")
        if not 0.0 <= safety <= 1.0:
            raise ConfigError(f"safety is a quantile in [0, 1], not {safety!r}")
        if not level_weight > 0:
            raise ConfigError(f"level weight must be positive, not {level_weight!r}")
        self.k = k
        self.safety = safety
        self.seed = seed
        self.level_weight = level_weight
        self.rules = rules or HumanRules()
        self.feedback = feedback or Feedback()
        self.centroids: np.ndarray | None = None
        self.learned: np.ndarray | None = None
        """Per prototype: the imitated ratio before feedback."""
        self.prototype_ratios: np.ndarray | None = None
        """Per prototype: after feedback (what predictions use, before the hard rules)."""
        self.members: np.ndarray | None = None
        self.ratios_allowed: tuple[float, ...] = ()
        self.feedback_map: dict[str, str] = {}
        """Feedback id -> prototype it applies to in this model (ids survive retraining by centroid)."""
        self.training_labels: np.ndarray | None = None
        self.training_targets: np.ndarray | None = None
        self.trained_on: dict[str, Any] = {}
        """Where the model came from (data, days, environment), so a review can rebuild its members."""

    @property
    def name(self) -> str:  # type: ignore[override]
        level = "" if self.level_weight == LEVEL_WEIGHT else f",level={self.level_weight:g}"
        return f"protohail:k={self.k},safety={self.safety:g}{level}"

    @property
    def fitted(self) -> bool:
        return self.centroids is not None

    @classmethod
    def from_options(cls, options: Mapping[str, str], *, text: str) -> ProtoHAIL:
        """A model from a policy spec's ``key=value`` options (``text``, the whole spec, for errors)."""
        for key, value in options.items():
            if key not in ("k", "safety", "seed", "level", "model"):
                raise ConfigError(
                    f"protohail option {key}={value!r}: expected k=, safety=, seed=, level= or model="
                )
        if "model" in options:
            if len(options) > 1:
                raise ConfigError("protohail:model=PATH takes no other options (they are in the model)")
            return cls.load(Path(options["model"]))
        try:
            return cls(
                k=int(options.get("k", 12)),
                safety=float(options.get("safety", 0.1)),
                seed=int(options.get("seed", 0)),
                level_weight=float(options.get("level", LEVEL_WEIGHT)),
            )
        except ValueError as error:
            raise ConfigError(f"{text}: {error}") from None

    # ---- fit / predict ------------------------------------------------------------------------

    def fit(self, inputs: DecisionInputs, targets: np.ndarray) -> ProtoHAIL:
        """Learn prototypes from node-window histories and the oracle's safe ratio for each window."""
        if len(targets) != inputs.count:
            raise ConfigError(f"{inputs.count} training windows but {len(targets)} targets")
        if inputs.count == 0:
            raise ConfigError("no training windows: train on at least 2 days (one of history, one to learn)")
        if inputs.count < self.k:
            raise ConfigError(f"{inputs.count} training windows cannot make {self.k} prototypes; lower k")
        centroids, labels = kmeans(encode(inputs, self.level_weight), self.k, self.seed)
        self.centroids, self.ratios_allowed = centroids, inputs.ratios
        self.members = np.bincount(labels, minlength=len(centroids))
        self.training_labels, self.training_targets = labels, targets
        self._imitate()
        return self

    def _imitate(self) -> None:
        """Each prototype's ratio: the ``safety`` quantile of its training windows' oracle ratios."""
        assert self.centroids is not None and self.training_labels is not None
        assert self.training_targets is not None
        learned = np.full(len(self.centroids), self.ratios_allowed[0])
        for cluster in range(len(self.centroids)):
            mine = self.training_targets[self.training_labels == cluster]
            if len(mine):
                quantile = np.quantile(mine, self.safety, method="lower")
                learned[cluster] = snap_down(np.array([quantile]), self.ratios_allowed)[0]
        self.learned = learned
        self.apply_feedback()

    def with_safety(self, safety: float) -> ProtoHAIL:
        """The same prototypes imitating another quantile: a frontier point without clustering again."""
        variant = ProtoHAIL(
            k=self.k,
            safety=safety,
            seed=self.seed,
            level_weight=self.level_weight,
            rules=self.rules,
            feedback=self.feedback,
        )
        if self.training_labels is None:
            return variant
        variant.centroids, variant.ratios_allowed = self.centroids, self.ratios_allowed
        variant.members, variant.trained_on = self.members, self.trained_on
        variant.training_labels, variant.training_targets = self.training_labels, self.training_targets
        variant._imitate()
        return variant

    def fit_experiment(self, experiment: Experiment) -> ProtoHAIL:
        spans = experiment.train
        inputs = experiment.inputs(spans)
        keep = ~np.isnan(inputs.history_max[:, -inputs.slots_per_day :]).any(axis=1)
        targets = oracle_ratios(window_series(experiment.nodes.util_max, spans), inputs.ratios)
        config = experiment.config
        self.trained_on = {
            "data": experiment.usage.name,
            "train_days": experiment.train_days,
            "cores": config.cores,
            "packings": config.packings,
            "history_days": config.history_days,
            "window_days": config.window_days,
            "seed": config.seed,
        }
        return self.fit(subset(inputs, keep), targets[keep])

    def apply_feedback(self, feedback: Feedback | None = None) -> None:
        """Recompute the prototypes' ratios from the learned ones and ``feedback`` (default: the current)."""
        if feedback is not None:
            self.feedback = feedback
        assert self.centroids is not None and self.learned is not None
        ratios = self.learned.copy()
        self.feedback_map = {}
        fingerprint = self.fingerprint_of_centroids()
        for name, entry in self.feedback.entries.items():
            if entry.centroid is not None and len(entry.centroid) == self.centroids.shape[1]:
                # Retraining renumbers prototypes; a verdict follows the pattern it was given on.
                index = int(nearest(np.array([entry.centroid]), self.centroids)[0][0])
            elif self.feedback.model in (None, fingerprint) and _index(name) < len(self.centroids):
                index = _index(name)
            else:
                known = ", ".join(prototype_id(i) for i in range(len(self.centroids)))
                raise ConfigError(
                    f"feedback names prototype {name!r}, which this model does not have ({known})"
                )
            self.feedback_map[name] = prototype_id(index)
            if entry.action == "forbid":
                ratios[index] = 1.0
            elif entry.action == "lower":
                assert entry.ratio is not None
                ratios[index] = min(ratios[index], snap_down(np.array([entry.ratio]), self.ratios_allowed)[0])
        self.prototype_ratios = ratios

    def explain(self, inputs: DecisionInputs) -> list[Decision]:
        if self.centroids is None or self.prototype_ratios is None:
            raise ConfigError("this ProtoHAIL model is not trained yet (fit it or load a saved model)")
        labels, distances = nearest(encode(inputs, self.level_weight), self.centroids)
        proposed = self.prototype_ratios[labels]
        allowed = snap_down(proposed, inputs.ratios)
        final, reasons = self.rules.apply(inputs, allowed)
        verdicts = {proto: name for name, proto in self.feedback_map.items()}
        decisions = []
        for index, label in enumerate(labels.tolist()):
            proto = prototype_id(label)
            reason = reasons[index] or (
                f"prototype {proto} ({self.feedback.entries[verdicts[proto]].action} by feedback)"
                if proto in verdicts
                else f"prototype {proto}"
            )
            decisions.append(Decision(float(final[index]), proto, float(distances[index]), reason))
        return decisions

    def prototypes(self) -> list[PrototypeRow]:
        """Every prototype with its members, learned and used ratio, and verdict."""
        if self.learned is None or self.prototype_ratios is None or self.members is None:
            raise ConfigError("this ProtoHAIL model is not trained yet (fit it or load a saved model)")
        verdicts = {proto: self.feedback.entries[name].action for name, proto in self.feedback_map.items()}
        return [
            PrototypeRow(
                prototype=prototype_id(index),
                members=int(self.members[index]),
                learned=float(self.learned[index]),
                ratio=float(self.prototype_ratios[index]),
                feedback=verdicts.get(prototype_id(index), ""),
            )
            for index in range(len(self.learned))
        ]

    def predict(self, inputs: DecisionInputs) -> np.ndarray:
        return np.array([decision.ratio for decision in self.explain(inputs)])

    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        return self.predict(inputs)

    def sweep(self) -> list[Policy]:
        return [self.with_safety(s) for s in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)]

    # ---- persistence ----------------------------------------------------------------------------

    def fingerprint_of_centroids(self) -> str:
        assert self.centroids is not None
        return hashlib.sha256(np.round(self.centroids, 9).tobytes()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        if self.centroids is None or self.learned is None or self.members is None:
            raise ConfigError("train the model before saving it")
        return {
            "k": self.k,
            "safety": self.safety,
            "seed": self.seed,
            "level_weight": self.level_weight,
            "ratios": list(self.ratios_allowed),
            "centroids": self.centroids.tolist(),
            "learned": self.learned.tolist(),
            "members": self.members.tolist(),
            "rules": self.rules.to_json(),
            "feedback": {
                "model": self.feedback.model,
                "prototypes": {n: vars(e) for n, e in self.feedback.entries.items()},
            },
            "fingerprint": self.fingerprint_of_centroids(),
            "trained_on": self.trained_on,
        }

    def save(self, path: str | Path) -> None:
        body = self.to_json()
        text = json.dumps(body, sort_keys=True)
        envelope = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "sha256": _digest(text), "model": body}
        Path(path).write_text(json.dumps(envelope, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ProtoHAIL:
        path = Path(path)
        try:
            envelope = json.loads(path.read_text())
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the model: {error.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: corrupt model file (not JSON: {error})") from None
        if not isinstance(envelope, dict) or envelope.get("format") != MODEL_FORMAT:
            raise ConfigError(f"{path}: not a strato ProtoHAIL model (no format {MODEL_FORMAT!r})")
        if envelope.get("version") != MODEL_VERSION:
            raise ConfigError(
                f"{path}: model version {envelope.get('version')!r}; this strato reads {MODEL_VERSION}"
            )
        body = envelope.get("model")
        if not isinstance(body, dict) or _digest(json.dumps(body, sort_keys=True)) != envelope.get("sha256"):
            raise ConfigError(f"{path}: corrupt model file (its checksum does not match its contents)")
        try:
            rules = body["rules"]
            model = cls(
                k=int(body["k"]),
                safety=float(body["safety"]),
                seed=int(body["seed"]),
                level_weight=float(body["level_weight"]),
                rules=HumanRules.checked(
                    rules["max_p99"], rules["max_ratio"], rules["class_caps"], str(path)
                ),
                feedback=Feedback(
                    {n: FeedbackEntry(**e) for n, e in body["feedback"]["prototypes"].items()},
                    body["feedback"]["model"],
                ),
            )
            model.ratios_allowed = tuple(float(r) for r in body["ratios"])
            model.centroids = np.array(body["centroids"], dtype=float)
            model.learned = np.array(body["learned"], dtype=float)
            model.members = np.array(body["members"], dtype=int)
            model.trained_on = dict(body.get("trained_on", {}))
            if model.centroids.ndim != 2 or len(model.learned) != len(model.centroids):
                raise ValueError("centroids and ratios disagree")
            model.apply_feedback()
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{path}: corrupt model file ({error})") from None
        return model


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _index(name: str) -> int:
    if len(name) > 1 and name[0] == "P" and name[1:].isdigit():
        return int(name[1:])
    return 1 << 30


def subset(inputs: DecisionInputs, keep: np.ndarray) -> DecisionInputs:
    chosen = np.flatnonzero(keep)
    return DecisionInputs(
        history_max=inputs.history_max[chosen],
        history_avg=inputs.history_avg[chosen],
        vm_peak=lambda p: inputs.vm_peak(p)[chosen],
        classes=[inputs.classes[i] for i in chosen.tolist()],
        ratios=inputs.ratios,
        slots_per_day=inputs.slots_per_day,
        future_max=None if inputs.future_max is None else inputs.future_max[chosen],
    )
