"""The faults of a run, drawn from its seed alone: the same seed and length
give the same schedule.  Faults of one lane never overlap (two server
restarts at once are one restart; two locks, one lock); faults of different
lanes do, which is the point: a kill while a lock is held and REST fails."""
import random

# lane -> (kinds with their weights, shortest and longest pause before each)
LANES = {
    "server": ({"kill_worker": 3, "kill_backend": 2, "stop_immediate": 2, "restart_fast": 2}, 8, 20),
    "ws": ({"ws_drop": 2, "ws_freeze": 2, "ws_close": 2, "ws_outage": 3}, 3, 10),
    "rest": ({"rest_5xx": 2, "rest_429": 2, "rest_hang": 1}, 3, 10),
    "db": ({"lock": 3, "transient": 2, "data_error": 2}, 3, 10),
    "reload": ({"reload": 1}, 4, 12),
    # lanes added later come last in no order but their own: each lane draws
    # from its own generator, so an older seed's other lanes replay unchanged
    "disk": ({"journal_full": 1}, 10, 25),
    "port": ({"port_change": 1}, 15, 35),
}
# How long a fault with a length lasts (s); the others are one act.
LENGTHS = {
    "ws_freeze": (1, 6), "ws_outage": (1, 6),
    "rest_5xx": (2, 8), "rest_429": (2, 8), "rest_hang": (2, 6),
    "lock": (1, 20), "transient": (2, 5), "data_error": (2, 6),
    "journal_full": (2, 8),
}
# No fault starts before this (s): the first worker's first events are then
# out of reach of any gap (a restart's gap reaches back to the last alive_at,
# written every 15 s), so a loss among them is never excused or repaired.
WARMUP = 16
# Nor ends this close to the end (s): the last faults' repair still falls in the run.
TAIL = 4


class Fault:
    def __init__(self, lane, kind, start, length, params):
        self.lane, self.kind, self.start, self.length, self.params = lane, kind, start, length, params
        self.done = False
        self.note = None            # what went differently (e.g. the server was down)

    def __repr__(self):
        return "%s@%.1f+%.1f%s" % (self.kind, self.start, self.length,
                                   (" " + str(self.params)) if self.params else "")


def params_for(kind, rng):
    if kind == "rest_5xx":
        return {"status": rng.choice([500, 502, 503])}
    if kind == "rest_429":
        return {"retry_after": rng.randint(1, 3)}
    if kind == "transient":
        return {"code": rng.choice(["55P03", "40P01"])}
    if kind == "reload":
        name = rng.choice(["idle_timeout", "reconnect", "notify_payload"])
        if name == "idle_timeout":
            return {"voipbin.idle_timeout": rng.choice(["2s", "3s", "5s"])}
        if name == "reconnect":
            return {"voipbin.reconnect_min_delay": rng.choice(["50ms", "100ms", "400ms"]),
                    "voipbin.reconnect_max_delay": rng.choice(["1s", "2s"])}
        return {"voipbin.notify_payload": rng.choice(["full", "id"])}
    return {}


def make(seed, seconds, lanes=None):
    """The faults of a run of `seconds`, by start time; lanes: the lanes to
    use (None: all)."""
    out = []
    for lane, (kinds, lo, hi) in sorted(LANES.items()):
        if lanes is not None and lane not in lanes:
            continue
        # one generator per lane: a lane's schedule does not change when another's does
        rng = random.Random("%s/%s" % (seed, lane))
        t = WARMUP + rng.uniform(0, lo)
        names, weights = zip(*sorted(kinds.items()))
        while True:
            kind = rng.choices(names, weights)[0]
            length = rng.uniform(*LENGTHS[kind]) if kind in LENGTHS else 0.0
            if t + length > seconds - TAIL:
                break
            out.append(Fault(lane, kind, t, length, params_for(kind, rng)))
            t += length + rng.uniform(lo, hi)
    return sorted(out, key=lambda f: f.start)
