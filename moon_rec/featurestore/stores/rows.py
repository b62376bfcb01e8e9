"""Rows in Feast's wire format, and the helpers every MOON online store shares.

- ``EncodedRows``: one feature view's rows already serialised (the bulk write's input);
- ``OnlineRow`` / ``RowUpdate``: one entity's stored row and the function that replaces it
  (the atomic read-modify-write's input);
- entity keys: Feast's ``serialize_entity_key`` for single-int64-key entities, assembled
  with numpy (``serialized_int64_keys``) or per key with a cached prefix (``key_serializer``),
  checked against Feast's own function so that a format change fails loudly;
- times: microseconds since the epoch (``epoch_micros`` / ``from_epoch_micros``) and the
  whole seconds Feast's SQL stores keep (``feast_seconds``).

Nothing here depends on a back-end.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

WriteRow = tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]
"""One row of ``OnlineStore.online_write_batch``: (entity key, {feature: value}, event
time, created time)."""


@dataclass
class EncodedRows:
    """Rows of one feature view already in Feast's wire format: the bulk write path.

    ``online_write_batch`` takes one ``EntityKeyProto`` and a dict of ``ValueProto`` per
    entity, and every store serialises them again (a 1M x 480-float load spends most of
    its time building and serialising protobuf messages). A bulk writer that has the
    serialised values at hand (``materialize_embeddings`` assembles them with numpy) hands
    them over as they are; every MOON store writes exactly the bytes ``online_write_batch``
    would (tests compare both paths and read back through Feast).

    Attributes:
        join_key: the entity's single int64 join key (e.g. ``item_id``).
        ids: int64 [N] entity ids.
        values: feature name -> N serialised ``ValueProto`` messages.
        event_us: int64 [N] event times, microseconds since the epoch (UTC).
        texts: feature name -> N ``value_text`` strings (Feast's SQL stores keep scalar
            features as text too); list-valued features are absent.
        created: the created timestamp of every row (None: not recorded).
    """

    join_key: str
    ids: np.ndarray
    values: dict[str, Sequence[bytes]]
    event_us: np.ndarray
    texts: dict[str, Sequence[str | None]] = field(default_factory=dict)
    created: datetime | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def write_rows(self) -> list[WriteRow]:
        """The same rows as ``online_write_batch`` input (for any other store)."""
        parse = ValueProto.FromString
        names = list(self.values)
        cols = [[parse(v) for v in self.values[n]] for n in names]
        stamps: dict[int, datetime] = {}
        rows: list[WriteRow] = []
        for i, (item, us) in enumerate(zip(self.ids.tolist(), self.event_us.tolist(), strict=True)):
            ts = stamps.get(us)
            if ts is None:
                ts = stamps[us] = from_epoch_micros(us)
            key = EntityKeyProto(
                join_keys=[self.join_key], entity_values=[ValueProto(int64_val=item)]
            )
            rows.append(
                (key, {n: c[i] for n, c in zip(names, cols, strict=True)}, ts, self.created)
            )
        return rows


@dataclass
class OnlineRow:
    """One entity's row of a feature view, as ``update_rows`` reads and writes it.

    Attributes:
        values: feature name -> value (the features present in the store).
        event_us: the row's event time, microseconds since the epoch (0: unknown).
        extra: bytes kept beside the row for the writer (None: none): Feast's readers never
            see them, plain writes leave them as they were, so whoever reads them back
            validates them against the row.
    """

    values: dict[str, ValueProto]
    event_us: int
    extra: bytes | None = None


RowUpdate = Callable[[int, "OnlineRow | None"], OnlineRow]
"""``update(i, stored)`` -> the new row of the i-th key; ``stored`` is None for an entity
without a row. It may be called more than once per key (a retried transaction), so it
must not have side effects."""


def serialized_int64_keys(join_key: str, ids: np.ndarray, version: int) -> list[bytes]:
    """``serialize_entity_key`` of N single-int64-key entities, assembled with numpy.

    The fixed prefix (key name, type tags, lengths) is taken from Feast's own function and
    checked against it with a second probe, so a future change of the format fails loudly
    instead of writing keys that Feast cannot find.
    """

    def feast_key(v: int) -> bytes:
        return serialize_entity_key(
            EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=v)]),
            entity_key_serialization_version=version,
        )

    probe = 0x0102030405060708
    want = feast_key(probe)
    prefix = want[:-8]
    if prefix + struct.pack("<q", probe) != want or feast_key(-1) != prefix + b"\xff" * 8:
        raise RuntimeError(f"unexpected Feast entity key layout (version {version})")
    n = int(ids.shape[0])
    width = len(prefix) + 8
    buf = np.empty((n, width), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    buf[:, len(prefix) :] = np.ascontiguousarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8)
    raw = buf.tobytes()
    return [raw[i : i + width] for i in range(0, n * width, width)]


def epoch_micros(ts: datetime) -> int:
    """Microseconds since the epoch of ``ts`` (naive means UTC, as in Feast)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the epoch (inverse of ``epoch_micros``)."""
    return _EPOCH + timedelta(microseconds=us)


def feast_seconds(ts: datetime | None) -> int | None:
    """The whole seconds Feast's SQLite store keeps for ``ts`` (None for None)."""
    # Feast stores naive-UTC datetimes through sqlite3's epoch adapter and reads them back
    # with datetime.fromtimestamp; store exactly what it would, so its reader agrees.
    if ts is None:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return int(ts.timestamp())


def key_serializer(version: int) -> Callable[[EntityKeyProto], bytes]:
    """``serialize_entity_key`` with a fast path for one int64 join key (every MOON entity).

    The fast path reuses the bytes Feast produces for the key name and swaps in the value,
    and is checked against Feast's own function once per call site.
    """
    cache: dict[str, bytes] = {}

    def serialize(key: EntityKeyProto) -> bytes:
        if len(key.join_keys) == 1 and key.entity_values[0].WhichOneof("val") == "int64_val":
            name = key.join_keys[0]
            prefix = cache.get(name)
            if prefix is None:
                probe = serialize_entity_key(key, entity_key_serialization_version=version)
                prefix = probe[:-8]
                if prefix + struct.pack("<q", key.entity_values[0].int64_val) != probe:
                    prefix = cache[name] = b""
                else:
                    cache[name] = prefix
            if prefix:
                return prefix + struct.pack("<q", key.entity_values[0].int64_val)
        return serialize_entity_key(key, entity_key_serialization_version=version)

    return serialize
