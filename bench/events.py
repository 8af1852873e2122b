"""The benchmark's event mix, and the classification both Python clients use.

Every scenario of the benchmark sends the same kind of stream: calls that
overlap in time, each one five call events (the bare call object, 1-2 KB, as
VoIPBIN sends it today: created, ringing, progressing, terminating, hangup)
around ten transcript lines (`transcript_created`, ~300 B).  So a third of the
events are calls and two thirds transcripts; every frame is the raw resource
shape (no envelope), compact JSON like Go's encoder writes it.

Each (event_type, resource_id) pair occurs once, so a NOTIFY payload names the
frame it came from; the stream always ends with a call_hangup, whose
notification tells a listener that everything before it was committed (every
client stores in arrival order).
"""
import json
import random
import struct
import uuid
from datetime import datetime, timedelta, timezone

CUSTOMER_ID = "7d2f3c1a-5b6e-4f80-9a1b-2c3d4e5f6a7b"
NIL = "00000000-0000-0000-0000-000000000000"
TOPICS = ["customer_id:%s:call:call_" % CUSTOMER_ID,
          "customer_id:%s:transcript:transcript_" % CUSTOMER_ID]
CALL_EVENTS = 5
TRANSCRIPTS_PER_CALL = 10
EVENTS_PER_CALL = CALL_EVENTS + TRANSCRIPTS_PER_CALL
CONCURRENT_CALLS = 8

_WORDS = ("hello thanks calling support account number order delivery please hold "
          "moment check confirm address yesterday payment card update problem "
          "internet connection service technician appointment tomorrow morning "
          "afternoon refund invoice email password reset welcome assist today "
          "minute transfer agent speak again sorry understand perfect great").split()


def rfc3339(dt):
    """Go's RFC3339Nano in UTC: fractional seconds with trailing zeros trimmed."""
    s = "%04d-%02d-%02dT%02d:%02d:%02d" % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    frac = ("%06d" % dt.microsecond).rstrip("0")
    return s + ("." + frac if frac else "") + "Z"


def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _sentence(rng, lo, hi):
    words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize() + "."


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _call_events(rng, t0):
    """One call's frames, in the order VoIPBIN would send them."""
    cid, transcribe_id = _uuid(rng), _uuid(rng)
    outgoing = rng.random() < 0.5
    ours, theirs = "+1555%07d" % rng.randrange(10 ** 7), "+1%010d" % rng.randrange(10 ** 10)
    src, dst = (ours, theirs) if outgoing else (theirs, ours)
    call = {
        "id": cid, "customer_id": CUSTOMER_ID, "owner_type": "agent", "owner_id": _uuid(rng),
        "flow_id": _uuid(rng), "activeflow_id": _uuid(rng), "type": "flow",
        "master_call_id": NIL, "chained_call_ids": [], "recording_id": NIL, "recording_ids": [],
        "groupcall_id": NIL,
        "source": {"type": "tel", "target": src, "target_name": "", "name": "", "detail": ""},
        "destination": {"type": "tel", "target": dst, "target_name": "", "name": "", "detail": ""},
        "status": "dialing",
        "action": {"id": _uuid(rng), "next_id": _uuid(rng), "type": "talk",
                   "option": {"text": _sentence(rng, 10, 80), "language": "en-US",
                              "gender": "female"},
                   "tm_execute": rfc3339(t0)},
        "metadata": {"campaign": "bench", "queue": "support", "priority": rng.randint(1, 5)},
        "direction": "outgoing" if outgoing else "incoming",
        "mute_direction": "", "hangup_by": "", "hangup_reason": "",
        "tm_create": rfc3339(t0), "tm_update": rfc3339(t0),
    }
    out = []
    t = t0

    def call_event(status, **extra):
        nonlocal t
        ev = dict(call)
        ev.update(extra)
        ev["status"] = status
        if status != "dialing":
            t += timedelta(milliseconds=rng.randint(200, 3000))
            ev["tm_update"] = rfc3339(t)
        call.update(ev)
        out.append(("call_created" if status == "dialing" else "call_" + status, "call", cid,
                    _compact(ev)))

    call_event("dialing")
    call_event("ringing", tm_ringing=rfc3339(t + timedelta(milliseconds=1)))
    call_event("progressing", tm_progressing=rfc3339(t + timedelta(milliseconds=1)))
    offset = 0.0
    for i in range(TRANSCRIPTS_PER_CALL):
        offset += rng.uniform(1.0, 6.0)
        t += timedelta(milliseconds=rng.randint(500, 4000))
        line = {
            "id": _uuid(rng), "customer_id": CUSTOMER_ID, "transcribe_id": transcribe_id,
            "direction": "in" if i % 2 else "out", "message": _sentence(rng, 3, 14),
            "tm_transcript": rfc3339(datetime(1, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=offset)),
            "tm_create": rfc3339(t),
        }
        out.append(("transcript_created", "transcript", line["id"], _compact(line)))
    call_event("terminating", hangup_by="local", hangup_reason="normal")
    call_event("hangup", tm_hangup=rfc3339(t + timedelta(milliseconds=1)))
    return out


def generate(n_events, seed=1):
    """About n_events frames (whole calls, at least one): a list of
    (event_type, resource, resource_id, frame_text), interleaving
    CONCURRENT_CALLS calls at a time; the last one is always a call_hangup."""
    rng = random.Random(seed)
    calls = max(1, round(n_events / EVENTS_PER_CALL))
    start = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)
    pending = [_call_events(rng, start + timedelta(seconds=i * 7)) for i in range(calls)]
    active, out = [], []
    while pending or active:
        while pending and len(active) < CONCURRENT_CALLS:
            active.append(pending.pop(0))
        i = rng.randrange(len(active))
        out.append(active[i].pop(0))
        if not active[i]:
            active.pop(i)
    assert out[-1][0] == "call_hangup"
    return out


SHAPES = ("raw", "wrapped", "quick-start")


def reshape(frames, shape):
    """The same events in another of the three frame shapes (docs/voipbin.md, "Frame shapes"):
    raw (the resource itself, VoIPBIN today), wrapped {"type","data"} (until
    August, and the webhook's), quick-start {"event_type","timestamp","topic","data"}
    (the public quick-start pages)."""
    if shape == "raw":
        return frames
    out = []
    for et, resource, rid, text in frames:
        if shape == "wrapped":
            framed = '{"type":%s,"data":%s}' % (json.dumps(et), text)
        else:
            data = json.loads(text)
            framed = '{"event_type":%s,"timestamp":%s,"topic":%s,"data":%s}' % (
                json.dumps(et), json.dumps(data.get("tm_update") or data["tm_create"]),
                json.dumps("customer_id:%s:%s:%s" % (CUSTOMER_ID, resource, rid)), text)
        out.append((et, resource, rid, framed))
    return out


def write_frames(path, frames):
    """The emitter's frames file: [u32 big-endian length][UTF-8 payload]..."""
    with open(path, "wb") as f:
        for fr in frames:
            b = fr[3].encode()
            f.write(struct.pack(">I", len(b)))
            f.write(b)


# -------------------------------------------------------------- classification

def _unset(v):
    return v is None or v == "" or (isinstance(v, str) and v.startswith("9999-01-01"))


def classify(obj):
    """(event_type, resource, data) of one frame, by the rules of docs/events.md ("Frames and event types") for the
    shapes and for the two resource kinds the bench sends (calls, transcript
    lines); anything else is 'unknown' here (the extension knows more kinds)."""
    if not isinstance(obj, dict):
        return "unknown", None, obj
    if (len(obj) == 2 and isinstance(obj.get("type"), str)
            and isinstance(obj.get("data"), dict)):
        et, data = obj["type"], obj["data"]
    elif isinstance(obj.get("event_type"), str) and isinstance(obj.get("data"), dict):
        et, data = obj["event_type"], obj["data"]
    else:
        data = obj
        if "transcribe_id" in obj and "message" in obj and "tm_transcript" in obj:
            et = "transcript_created"
        elif "source" in obj and "destination" in obj and "status" in obj:
            if not _unset(obj.get("tm_delete")):
                et = "call_deleted"
            elif _unset(obj.get("tm_update")) or obj.get("tm_update") == obj.get("tm_create"):
                et = "call_created"
            else:
                et = "call_" + str(obj["status"])
        else:
            et = "unknown"
    resource = None if et == "unknown" else et.split("_", 1)[0]
    return et, resource, data


if __name__ == "__main__":
    import sys
    frames = generate(int(sys.argv[1]) if len(sys.argv) > 1 else 150)
    sizes = {}
    for et, _, _, text in frames:
        sizes.setdefault(et, []).append(len(text.encode()))
        assert classify(json.loads(text))[0] == et, (et, text)
    for et, s in sorted(sizes.items()):
        print("%-20s n=%-6d min=%d avg=%d max=%d" % (et, len(s), min(s), sum(s) // len(s), max(s)))
    print("total", len(frames), "frames", sum(len(f[3].encode()) for f in frames), "bytes")
