"""The Faa$T example apps (examples/faast) against an in-memory stand-in for ``context.storage``, on the
bench's own generated objects: real decoding, real computation, answers checked against numpy/pyarrow."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from strato.faas.live.cachebench import (
    APPS,
    BUCKETS,
    EXAMPLES_DIR,
    Requests,
    Seeded,
    SeededObject,
    Workload,
    generate,
)
from strato.faas.live.runtime import Event

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
Image = pytest.importorskip("PIL.Image")

SMALL = Workload(
    seed=3,
    model_bytes=2 * 2**20,
    model_features=256,
    images=((1600, 1200), (1200, 900)),
    table_bytes=2 * 2**20,
    small_objects=40,
    noreuse_objects=5,
    noreuse_bytes=4096,
)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class FakeStorage:
    """The handler API of the spec over a dict; counts reads so tests see what a handler fetched."""

    class ObjectNotFound(KeyError):
        pass

    class StoreUnavailable(Exception):
        pass

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.reads: list[tuple[str, str]] = []

    def _data(self, bucket: str, key: str) -> bytes:
        try:
            return self.objects[bucket, key]
        except KeyError:
            raise self.ObjectNotFound(f"no object {bucket}/{key}") from None

    def get(self, bucket: str, key: str) -> bytes:
        self.reads.append((bucket, key))
        return self._data(bucket, key)

    def get_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        self.reads.append((bucket, key))
        return self._data(bucket, key)[start:end]

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.objects[bucket, key] = bytes(data)
        return hashlib.md5(data).hexdigest()

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def exists(self, bucket: str, key: str) -> bool:
        return (bucket, key) in self.objects

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        return [
            ObjectInfo(k, len(v), hashlib.md5(v).hexdigest())
            for (b, k), v in sorted(self.objects.items())
            if b == bucket and k.startswith(prefix)
        ]

    @contextlib.contextmanager
    def open(self, bucket: str, key: str) -> Iterator[io.BytesIO]:
        yield io.BytesIO(self.get(bucket, key))


@dataclass(frozen=True)
class FakeContext:
    storage: FakeStorage
    function: str = "test"
    instance_id: str = "i-1"


def _handler(app: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"faast_example_{app}", EXAMPLES_DIR / app / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(app: str, storage: FakeStorage, request: dict[str, Any]) -> Any:
    event = Event("POST", f"/function/{app}", {}, json.dumps(request).encode())
    return _handler(app).handle(event, FakeContext(storage))


@pytest.fixture(scope="module")
def seeded() -> tuple[FakeStorage, Seeded]:
    storage = FakeStorage()
    objects: dict[str, list[SeededObject]] = {}
    for app, bucket, key, data in generate(SMALL):
        storage.put(bucket, key, data)
        objects.setdefault(app, []).append(SeededObject(bucket, key, len(data)))
    return storage, Seeded({app: tuple(items) for app, items in objects.items()})


def test_generation_is_deterministic_and_sized() -> None:
    first = {(b, k): hashlib.sha256(d).hexdigest() for _, b, k, d in generate(SMALL, ["small", "noreuse"])}
    again = {(b, k): hashlib.sha256(d).hexdigest() for _, b, k, d in generate(SMALL, ["noreuse", "small"])}
    assert first == again
    other = {
        (b, k): hashlib.sha256(d).hexdigest()
        for _, b, k, d in generate(Workload(seed=4, small_objects=40), ["small"])
    }
    assert set(other) <= set(first) and all(first[key] != value for key, value in other.items())
    sizes = [len(d) for app, _, _, d in generate(SMALL, ["small"])]
    assert len(sizes) == 40 and min(sizes) >= 5 * 1024 and max(sizes) <= 30 * 1024


def test_default_workload_sizes_match_the_issue() -> None:
    workload = Workload()
    model = next(generate(workload, ["model"]))[3]
    assert 50e6 <= len(model) <= 200e6
    table = next(generate(workload, ["table"]))[3]
    assert 20e6 <= len(table) <= 100e6
    image = next(generate(Workload(images=((3000, 2000),)), ["thumbnail"]))[3]
    assert 1e6 <= len(image) <= 8e6


def test_model_predicts_with_the_stored_weights(seeded: tuple[FakeStorage, Seeded]) -> None:
    storage, objects = seeded
    model = objects.objects["model"][0]
    weights = np.load(io.BytesIO(storage.objects[model.bucket, model.key]))
    x = np.random.default_rng(1).standard_normal(weights.shape[0]).astype(np.float32)
    answer = _call("model", storage, {"bucket": model.bucket, "key": model.key, "x": x.tolist(), "top": 3})
    expected = np.argsort(x @ weights)[::-1][:3]
    assert answer["classes"] == [int(i) for i in expected]
    assert answer["shape"] == list(weights.shape)
    body, status = _call("model", storage, {"bucket": model.bucket, "key": model.key, "x": [1.0]})
    assert status == 400 and "needs 256 values" in body


def test_thumbnail_fits_the_box_and_looks_like_the_photo(seeded: tuple[FakeStorage, Seeded]) -> None:
    storage, objects = seeded
    photo = objects.objects["thumbnail"][0]
    body, status, headers = _call(
        "thumbnail", storage, {"bucket": photo.bucket, "key": photo.key, "size": [200, 200], "format": "png"}
    )
    assert status == 200 and headers == {"Content-Type": "image/png"}
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.format == "PNG" and max(thumb.size) == 200
        small = np.asarray(thumb.convert("RGB"), dtype=np.float32)
    with Image.open(io.BytesIO(storage.objects[photo.bucket, photo.key])) as original:
        reference = np.asarray(original.convert("RGB").resize(thumb.size), dtype=np.float32)
    # Same picture: the thumbnail tracks the original's colours (the photo is not flat: its spread is large).
    assert reference.std() > 20
    assert np.abs(small - reference).mean() < 12


def test_table_aggregates_like_pyarrow(seeded: tuple[FakeStorage, Seeded]) -> None:
    storage, objects = seeded
    table_object = objects.objects["table"][0]
    answer = _call(
        "table", storage, {"bucket": table_object.bucket, "key": table_object.key, "min_quantity": 4}
    )
    table = pq.read_table(pa.BufferReader(storage.objects[table_object.bucket, table_object.key]))
    quantity = table["quantity"].to_numpy()
    amount = table["amount"].to_numpy()
    region = np.asarray(table["region"].to_pylist())
    kept = quantity >= 4
    assert answer["rows_scanned"] == table.num_rows and answer["rows_kept"] == int(kept.sum())
    groups = {g["region"]: g for g in answer["groups"]}
    for name in set(region[kept]):
        rows = kept & (region == name)
        assert groups[name]["count"] == int(rows.sum())
        assert groups[name]["amount_sum"] == pytest.approx(amount[rows].sum(), abs=0.01)
        assert groups[name]["quantity_sum"] == int(quantity[rows].sum())
    sums = [g["amount_sum"] for g in answer["groups"]]
    assert sums == sorted(sums, reverse=True)


def test_small_reads_the_named_objects(seeded: tuple[FakeStorage, Seeded]) -> None:
    storage, objects = seeded
    requests = Requests(objects, seed=0)
    body, size = requests.next("small")
    request = json.loads(body)
    storage.reads.clear()
    answer = _call("small", storage, request)
    datas = [storage.objects[request["bucket"], k] for k in request["keys"]]
    crc = 0
    for data in datas:
        crc = zlib.crc32(data, crc)
    assert answer == {"objects": len(datas), "bytes": size, "crc32": crc}
    assert storage.reads == [(request["bucket"], k) for k in request["keys"]]


def test_small_requests_follow_zipf(seeded: tuple[FakeStorage, Seeded]) -> None:
    _, objects = seeded
    requests = Requests(objects, seed=0)
    counts: dict[str, int] = {}
    for _ in range(500):
        for key in json.loads(requests.next("small")[0])["keys"]:
            counts[key] = counts.get(key, 0) + 1
    ranked = [counts.get(o.key, 0) for o in objects.objects["small"]]
    # The most popular object is read far more often than the median one.
    assert ranked[0] > 5 * sorted(ranked)[len(ranked) // 2]


def test_noreuse_never_rereads(seeded: tuple[FakeStorage, Seeded]) -> None:
    storage, objects = seeded
    requests = Requests(objects, seed=0)
    storage.reads.clear()
    for _ in range(5):
        body, size = requests.next("noreuse")
        answer = _call("noreuse", storage, json.loads(body))
        data = storage.objects[BUCKETS["noreuse"], answer["key"]]
        assert answer["bytes"] == size == len(data) and answer["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(set(storage.reads)) == len(storage.reads) == 5
    with pytest.raises(Exception, match="read all its 5 objects"):
        requests.next("noreuse")


def test_missing_object_is_a_key_error(seeded: tuple[FakeStorage, Seeded]) -> None:
    storage, _ = seeded
    with pytest.raises(KeyError, match="faast-small/nope"):
        _call("small", storage, {"bucket": "faast-small", "keys": ["nope"]})


def test_every_app_has_an_example() -> None:
    assert sorted(p.name for p in EXAMPLES_DIR.iterdir() if (p / "handler.py").is_file()) == sorted(APPS)
