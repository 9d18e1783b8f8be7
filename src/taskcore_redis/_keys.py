"""The key layout (documented in docs/redis.md).

Every key of a queue starts with the hash tag ``{<prefix>:<queue>}`` so that all of
them hash to one Redis Cluster slot and one Lua script can touch them together.
Keys that are not about one queue start with ``{<prefix>}``. The keys of one journal
stream share the hash tag ``{<prefix>|j:<stream>}`` (``|``, not ``:``, after the
prefix: no queue name can produce it).
"""

from __future__ import annotations

from taskcore.errors import ConfigurationError

__all__ = ["INDEX_PIN", "INDEX_PIN_VALUE", "Keys"]

# A field of the id index that is no task's id (no task id holds a NUL: the app's
# enqueue refuses one), whose value is longer than Redis's ``hash-max-listpack-value``
# (64 bytes by default): it keeps the index a hash table. Under
# ``hash-max-listpack-entries`` (512) fields Redis would keep it as a listpack, where
# every HSETNX/HGET/HDEL scans all the fields (docs/redis.md, "The id index stays a
# hash table"); a hash table never turns back into a listpack.
INDEX_PIN = "\x00hashtable"
INDEX_PIN_VALUE = "keeps this hash a hash table: as a listpack every lookup would scan it"


class Keys:
    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"invalid Redis key prefix {prefix!r}: use a non-empty string without "
                "'{' or '}' (the backend adds the cluster hash tags itself)"
            )
        self.prefix = prefix
        g = f"{{{prefix}}}"
        self.index = f"{g}:idx"  # hash: task id -> queue name
        self.queues = f"{g}:queues"  # set of queue names
        self.workers = f"{g}:workers"  # hash: worker id -> WorkerInfo
        self.worker_expiry = f"{g}:wexp"  # zset: worker id by heartbeat expiry
        self.runtimes = f"{g}:rt"  # hash: "n:<task>" count, "s:<task>" seconds

    def base(self, queue: str) -> str:
        return f"{{{self.prefix}:{queue}}}"

    def queue_of(self, base: str) -> str:
        """The queue whose key base (:meth:`base`) is ``base``."""
        return base[len(self.prefix) + 2 : -1]

    def outbox(self, queue: str) -> str:
        return f"{self.base(queue)}:out"

    def meta(self, queue: str) -> str:
        return f"{self.base(queue)}:meta"

    def task(self, queue: str, task_id: str) -> str:
        return f"{self.base(queue)}:t:{task_id}"

    def wake(self, queue: str) -> str:
        return f"{self.base(queue)}:wake"

    def waiters(self, queue: str) -> str:
        """Sorted set of the idle workers registered for hand-offs (see RedisBackend.wait)."""
        return f"{self.base(queue)}:hw"

    def hand(self, queue: str, backend_id: str) -> str:
        """One waiting backend's hand-off list: the task or marker meant for it."""
        return f"{self.base(queue)}:h:{backend_id}"

    def inbox(self, queue: str, backend_id: str) -> str:
        """One waiting backend's inbox: what its blocking BLMOVE took from its hand-off
        list, kept until its next round trip (so a lost reply loses nothing)."""
        return f"{self.base(queue)}:in:{backend_id}"

    def done(self, queue: str, task_id: str) -> str:
        return f"{self.base(queue)}:d:{task_id}"

    def reply(self, queue: str, request: str) -> str:
        return f"{self.base(queue)}:reply:{request}"

    def bucket(self, name: str) -> str:
        return f"{{{self.prefix}}}:bucket:{name}"

    def once(self, key: str) -> str:
        return f"{{{self.prefix}}}:once:{key}"

    def kv(self, key: str) -> str:
        return f"{{{self.prefix}}}:kv:{key}"

    def journal(self, stream: str) -> str:
        """The key base of journal ``stream``: ``:z`` records, ``:f`` first record's time
        per key, ``:n`` sequence, ``:k:<key>`` one key's records."""
        return f"{{{self.prefix}|j:{stream}}}"

    def queue_keys(self, queue: str) -> list[str]:
        """The fixed keys of a queue (per-task keys come on top)."""
        b = self.base(queue)
        suffixes = ("meta", "n", "all", "sched", "run", "purge", "uniq", "fin", "wake", "out", "jx")
        return [f"{b}:{s}" for s in suffixes] + [f"{b}:r{p}" for p in range(5)]
