"""The engine pods of every InferenceDeployment, kept from watch events. Pure.

The autoscaler needs each deployment's pods every tick. Listing them from the API server each
tick costs a LIST per deployment per second and, at thousands of pods, more time decoding
them than the whole decision; so the loop reads them from here instead, an informer-style
index that the operator's pod watch feeds (`apply`, one call per watch event) and that a LIST
now and then makes whole again (`resync`): the loop lists once when it starts and then every
`RESYNC_SECONDS`, which repairs anything a broken watch missed, deletions included.

Order between a LIST and events: an object is replaced only by one with a resourceVersion at
least as new (when both are integers, as the API server's are in practice; otherwise the
later arrival wins), a deleted pod's uid is remembered for a while so that a LIST which began
before the deletion cannot bring it back, and a resync drops only entries it did not list and
that no event touched since the LIST began. Time (`now`) is an argument: seconds on the
caller's monotonic clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

RESYNC_SECONDS = 60.0
"""How often the loop lists its pods to repair the index."""
TOMBSTONE_SECONDS = 300.0
"""How long a deleted pod's uid is remembered."""

Key = tuple[str, str]
"""(namespace, InferenceDeployment name)."""


@dataclasses.dataclass
class _Entry:
    obj: dict[str, Any]
    key: Key
    updated_at: float


def _version(obj: Mapping[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


class Inventory:
    """Pods by (namespace, owner label value); see the module docstring."""

    def __init__(self, owner_label: str) -> None:
        self._owner_label = owner_label
        self._by_uid: dict[str, _Entry] = {}
        self._by_key: dict[Key, set[str]] = {}
        self._deleted: dict[str, float] = {}
        """uid -> when its deletion was seen."""
        self._synced: dict[Key, float] = {}

    def _key(self, obj: Mapping[str, Any]) -> Key | None:
        metadata = obj.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(self._owner_label)
        namespace = metadata.get("namespace")
        if not owner or not namespace:
            return None
        return (str(namespace), str(owner))

    def _remove(self, uid: str) -> None:
        entry = self._by_uid.pop(uid, None)
        if entry is not None:
            self._by_key.get(entry.key, set()).discard(uid)

    def _put(self, uid: str, key: Key, obj: Mapping[str, Any], now: float) -> None:
        entry = self._by_uid.get(uid)
        if entry is not None:
            old, new = _version(entry.obj), _version(obj)
            if old is not None and new is not None and new < old:
                return  # an older copy than the one held
            if entry.key != key:
                self._remove(uid)
        self._by_uid[uid] = _Entry(dict(obj), key, now)
        self._by_key.setdefault(key, set()).add(uid)

    def _forget_old_deletions(self, now: float) -> None:
        for uid in [uid for uid, at in self._deleted.items() if now - at > TOMBSTONE_SECONDS]:
            del self._deleted[uid]

    def apply(self, event_type: str | None, obj: Mapping[str, Any], now: float) -> None:
        """One watch event: "ADDED", "MODIFIED", "DELETED", or None (a listing at start)."""
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if not uid:
            return
        self._forget_old_deletions(now)
        if event_type == "DELETED":
            self._remove(uid)
            self._deleted[uid] = now
            return
        key = self._key(obj)
        if uid in self._deleted:
            return
        if key is None:
            self._remove(uid)  # its owner label was removed: no longer an engine pod
            return
        self._put(uid, key, obj, now)

    def resync(
        self, key: Key, listed: Sequence[Mapping[str, Any]], started_at: float, now: float
    ) -> None:
        """Make `key`'s pods whole from a LIST that began at `started_at`."""
        self._forget_old_deletions(now)
        seen = set()
        for obj in listed:
            uid = str((obj.get("metadata") or {}).get("uid") or "")
            if not uid or uid in self._deleted:
                continue
            seen.add(uid)
            self._put(uid, key, obj, now)
        for uid in list(self._by_key.get(key, ())):
            entry = self._by_uid[uid]
            if uid not in seen and entry.updated_at < started_at:
                self._remove(uid)
        self._synced[key] = now

    def synced_at(self, key: Key) -> float | None:
        """When `key` was last resynced; None if never."""
        return self._synced.get(key)

    def pods(self, key: Key) -> list[dict[str, Any]]:
        """The pods of one InferenceDeployment, by name."""
        found = [self._by_uid[uid].obj for uid in self._by_key.get(key, ())]
        found.sort(key=lambda obj: str((obj.get("metadata") or {}).get("name") or ""))
        return found

    def forget(self, key: Key) -> None:
        """Drop everything about one InferenceDeployment (it was deleted)."""
        for uid in list(self._by_key.pop(key, ())):
            self._by_uid.pop(uid, None)
        self._synced.pop(key, None)
