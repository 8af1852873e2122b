"""Every event the run published, and what became of each copy of it.

An event is what the dedupe key says it is: its type, its resource id and its
data (docs/events.md); two copies of one event are the same key, whichever
path brought them."""
import json
import threading


def event_key(event_type, resource_id, data):
    return (event_type, str(resource_id) if resource_id else None,
            json.dumps(data, sort_keys=True, separators=(",", ":")))


class Entry:
    __slots__ = ("key", "event_type", "resource_id", "data", "t0", "t1", "ws", "ws_delivered",
                 "webhooks", "webhook_statuses", "kind", "latest")

    def __init__(self, event_type, data, kind):
        self.event_type = event_type
        self.resource_id = data["id"]
        self.data = data
        self.key = event_key(event_type, data["id"], data)
        self.kind = kind            # "call", "transcribe", "transcript", "recording"
        self.t0 = self.t1 = None    # wall clock around the publish
        self.ws = False             # published on the WebSocket topics
        self.ws_delivered = 0       # frames the fake queued to open connections
        self.webhooks = 0           # webhook deliveries asked for
        self.webhook_statuses = []  # the sender's last status of each (0: never answered)
        self.latest = False         # the resource's state at the end (what REST returns)


class Ledger:
    def __init__(self):
        self.entries = []
        self.by_key = {}
        self.lock = threading.Lock()

    def add(self, entry):
        with self.lock:
            if entry.key in self.by_key:
                raise AssertionError("the load published one event twice as two: %r" % (entry.key,))
            self.entries.append(entry)
            self.by_key[entry.key] = entry

    def webhook_done(self, entry, status):
        with self.lock:
            entry.webhook_statuses.append(status)

    def mark_latest(self):
        """Marks the last version of each resource: what VoIPBIN's REST returns now."""
        last = {}
        for e in self.entries:
            last[(e.kind, e.resource_id)] = e
        for e in last.values():
            e.latest = True
