"""The load: call life-cycles as VoIPBIN publishes them (docs/voipbin.md):
each call created, ringing, progressing with a recording and a transcription
of a few lines, then hung up.  Every event goes to the fake with its object
kept for the REST reads (so gap repair has the truth to read), over the
WebSocket in one of the three frame shapes, on both of its topics; some also
by a signed webhook (some twice, as VoIPBIN's retries do), some only by
webhook."""
import queue
import random
import threading
import time
import uuid
from datetime import datetime, timezone

from webhook_sender import Sender, envelope

from .ledger import Entry
from .rig import WEBHOOK_PATH

NIL = "00000000-0000-0000-0000-000000000000"
SHAPES = ("raw", "wrapped", "event_type")
# A topic no connection subscribes: the event is VoIPBIN's (its object kept
# for REST) but reaches the worker only by webhook.
NO_TOPIC = ["customer_id:%s:nobody:" % NIL]


def ts(t=None):
    return datetime.fromtimestamp(t or time.time(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Clock:
    """tm_update values that never repeat: every version of an object is a distinct event."""

    def __init__(self):
        self.last = 0.0

    def __call__(self):
        self.last = max(time.time(), self.last + 0.000001)
        return ts(self.last)


class Call:
    """One call's life as a list of (delay before it, event_type, kind, data)."""

    def __init__(self, rng, customer_id, clock, seq):
        cid, rec, tr = (str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(3))
        made = clock()
        base = {"id": cid, "customer_id": customer_id, "owner_type": "", "owner_id": NIL,
                "flow_id": NIL, "activeflow_id": NIL, "type": "flow", "master_call_id": NIL,
                "recording_id": NIL, "groupcall_id": NIL,
                "source": {"type": "tel", "target": "+1555%07d" % seq},
                "destination": {"type": "tel", "target": "+15559990000"},
                "direction": "incoming", "tm_create": made}
        self.rng, self.clock = rng, clock
        self.steps = []
        # a created object is one never updated: tm_update = tm_create, which is
        # how a bare frame of it is known as <kind>_created (docs/voipbin.md)
        self.add(0, "call_created", "call", dict(base, status="dialing"), stamp=None)
        self.add(0.3, "call_ringing", "call", dict(base, status="ringing"))
        prog = dict(base, status="progressing", recording_ids=[rec])
        self.add(0.5, "call_progressing", "call", prog)
        rbase = {"id": rec, "customer_id": customer_id, "owner_type": "", "owner_id": NIL,
                 "reference_type": "call", "reference_id": cid, "format": "wav",
                 "on_end_flow_id": NIL, "tm_start": made, "tm_create": made}
        self.add(0.1, "recording_started", "recording", dict(rbase, status="recording"))
        tbase = {"id": tr, "customer_id": customer_id, "activeflow_id": NIL, "on_end_flow_id": NIL,
                 "reference_type": "call", "reference_id": cid, "language": "en-US",
                 "direction": "both", "provider": "gcp", "tm_create": made, "tm_delete": None}
        self.add(0.2, "transcribe_created", "transcribe", dict(tbase, status="progressing"), stamp=None)
        for n in range(rng.randint(2, 12)):
            line = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "customer_id": customer_id,
                    "transcribe_id": tr, "direction": "in" if n % 2 else "out",
                    "message": "call %d line %d" % (seq, n),
                    "tm_transcript": "0001-01-01T00:00:%02d.5Z" % (n * 3)}
            self.add(rng.uniform(0.2, 1.5), "transcript_created", "transcript", line, stamp="tm_create")
        self.add(0.3, "transcribe_done", "transcribe", dict(tbase, status="done"))
        self.add(0.1, "recording_finished", "recording", dict(rbase, status="ended"), end=True)
        self.add(0.2, "call_hangup", "call", dict(prog, status="hangup", hangup_by="remote",
                                                  hangup_reason="normal"), end=True)

    def add(self, delay, event_type, kind, data, stamp="tm_update", end=False):
        # the time stamp is set when the event is published (Load.stamp)
        self.steps.append((delay, event_type, kind, data, stamp, end))


class FollowingSender(Sender):
    """VoIPBIN's webhook sender, to wherever the receiver listens now: each
    attempt (a retry too) reads the rig's port, which the port_change fault
    moves."""

    def __init__(self, rig, path, secret):
        super().__init__("127.0.0.1", rig.webhook_port, path, secret, timeout=10)
        self.rig = rig

    def _connection(self):
        if self.port != self.rig.webhook_port:
            self.close()
            self.port = self.rig.webhook_port
        return super()._connection()


class Load:
    def __init__(self, rig, ledger, rng, stats):
        self.rig, self.fake, self.ledger, self.rng = rig, rig.fake, ledger, rng
        self.stats = stats
        self.clock = Clock()
        self.calls = []             # [next due time, Call, step index]
        self.seq = 0
        self.hooks = queue.Queue()
        self.stop_new = threading.Event()
        self.done = threading.Event()
        self.error = None

    # ---- webhooks, on threads of their own: VoIPBIN's retries take seconds
    def webhook_worker(self):
        s = FollowingSender(self.rig, WEBHOOK_PATH, self.fake_secret())
        while True:
            item = self.hooks.get()
            if item is None:
                break
            entry, body = item
            self.ledger.webhook_done(entry, s.deliver(body))
            self.hooks.task_done()
        s.close()

    def fake_secret(self):
        # the customer's webhook_secret, as VoIPBIN signs with it (read over the control port)
        return self.fake.control("customer", {})["customer"]["webhook_secret"]

    # ---- the publisher
    def publish(self, events):
        """events: [(event_type, kind, data)], published in one request, so
        that their frames reach the worker back to back (a busy moment)."""
        entries, evs = [], []
        for event_type, kind, data in events:
            r = self.rng.random()
            by_ws = r >= 0.1                       # 10%: by webhook only
            hooks = 0 if r >= 0.3 else (2 if self.rng.random() < 0.3 else 1)
            entry = Entry(event_type, data, kind)
            entry.ws = by_ws
            entry.webhooks = hooks
            ev = {"event_type": event_type, "data": data, "store": True,
                  "shape": self.rng.choice(SHAPES)}
            if not by_ws:
                ev["topics"] = NO_TOPIC
            self.ledger.add(entry)
            entries.append(entry)
            evs.append(ev)
        t0 = time.time()
        # one request, so one count of frames delivered: split by topics per event
        out = [self.fake.publish(events=[ev])["delivered"] for ev in evs] if len(evs) == 1 else None
        if out is None:
            # several events: the fake answers with the total; each WS event
            # reached the same connections (all or none within one request)
            total = self.fake.publish(events=evs)["delivered"]
            per = total // max(1, 2 * sum(1 for e in entries if e.ws))
            out = [2 * per if e.ws else 0 for e in entries]
        t1 = time.time()
        for entry, delivered in zip(entries, out):
            entry.t0, entry.t1 = t0, t1
            entry.ws_delivered = delivered if entry.ws else 0
            body = envelope(entry.event_type, entry.data)
            for _ in range(entry.webhooks):
                self.hooks.put((entry, body))

    def stamp(self, data, stamp):
        if stamp is None:
            return dict(data, tm_update=data["tm_create"])
        return dict(data, **{stamp: self.clock()})

    def publish_fence(self):
        """A call's first event over the WebSocket alone: the settling's fence."""
        self.seq += 1
        call = Call(self.rng, self.fake.customer_id, self.clock, self.seq)
        _, event_type, kind, data, stamp, _ = call.steps[0]
        data = self.stamp(data, stamp)
        entry = Entry(event_type, data, kind)
        entry.ws = True
        self.ledger.add(entry)
        entry.t0 = time.time()
        entry.ws_delivered = self.fake.publish(events=[{"event_type": event_type, "data": data,
                                                        "store": True}])["delivered"]
        entry.t1 = time.time()
        self.fence = entry
        self.stats["fence"] = entry.ws_delivered

    def step(self, now, new_calls=None):
        """Publishes every event due by now; starts a call now and then."""
        if new_calls is None:
            # about a call a second (each some 15 events): what a repair of a
            # minute's outage reads back at VoIPBIN's 17 requests a second
            new_calls = 1 if not self.stop_new.is_set() and self.rng.random() < 0.05 else 0
        for _ in range(new_calls):
            self.seq += 1
            self.calls.append([now, Call(self.rng, self.fake.customer_id, self.clock, self.seq), 0])
        due = []
        for c in list(self.calls):
            while c[2] < len(c[1].steps) and (c[0] <= now or self.stop_new.is_set()):
                delay, event_type, kind, data, stamp, end = c[1].steps[c[2]]
                data = self.stamp(data, stamp)
                if end and kind == "call":
                    data["tm_hangup"] = data[stamp]
                if end and kind == "recording":
                    data["tm_end"] = data[stamp]
                due.append((event_type, kind, data))
                c[2] += 1
                if c[2] < len(c[1].steps):
                    c[0] = now + c[1].steps[c[2]][0]
            if c[2] == len(c[1].steps):
                self.calls.remove(c)
        if due:
            self.publish(due)

    def opening(self):
        """A busy moment to begin with: several calls at once while
        voipbin_events is locked for a second, so that the worker's next
        batch holds many frames, both copies of several events among them."""
        conn = self.rig.cluster.connect(autocommit=False)
        try:
            conn.cursor().execute("LOCK TABLE voipbin_events IN ACCESS EXCLUSIVE MODE")
            self.step(time.monotonic(), new_calls=5)
            time.sleep(1)       # the lock's length, not a wait for anything
        finally:
            conn.rollback()
            conn.close()

    def run(self, until):
        """Publishes until `until` (monotonic), then ends every call under way."""
        threads = [threading.Thread(target=self.webhook_worker, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            self.opening()
            while time.monotonic() < until:
                self.step(time.monotonic())
                # the pace of the load, not a wait for anything
                time.sleep(0.05)
            self.stop_new.set()
            self.step(time.monotonic())
        except Exception as e:          # reported by the account, with the seed
            self.error = e
            raise
        finally:
            for _ in threads:
                self.hooks.put(None)
            for t in threads:
                t.join(120)
            self.done.set()
