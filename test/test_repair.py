"""Gap repair: every outage is recorded in voipbin_gaps, and what VoIPBIN sent
meanwhile comes back over REST (docs/voipbin.md, "The REST reads gap repair uses")."""
import os
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from helpers import FAST, call, point_at, subscribe
from pgcluster import free_port, wait_until
from webhook_sender import Sender, envelope


def subscribe_active(cluster, fake, topic):
    """Subscribed, and active: a drop within 2 s of sending a topic counts against it."""
    stored = subscribe(cluster, fake, topic)
    wait_until(lambda: cluster.query_one("SELECT status FROM voipbin_subscriptions WHERE topic = %s",
                                         (stored,))[0] == "active", timeout=10, what="the topic active")
    return stored


def gaps(cluster):
    return cluster.query("SELECT id, started_at, ended_at, repaired_at, events_repaired, error, cause"
                         " FROM voipbin_gaps ORDER BY id")


def db_now(cluster):
    return cluster.query_one("SELECT clock_timestamp()")[0]


@pytest.fixture
def clean_gaps(vb):
    vb.execute("TRUNCATE voipbin_gaps")
    yield vb


def outage(fake, cluster, seconds, status=503, during=None):
    """The connection drops, and every handshake fails for `seconds` (during()
    runs meanwhile); returns the database clock at the drop and how many
    handshakes failed."""
    fake.config(ws_reject_status=status)
    dropped = db_now(cluster)
    fake.drop()
    cluster.wait_status(lambda s: s["state"] != "connected", what="the outage noticed")
    if during:
        during()
    deadline = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= deadline or None, timeout=seconds + 1, interval=0.05,
               what="the outage's length")
    fails = sum(1 for h in fake.state()["handshakes"] if h["status"] == status)
    fake.config(ws_reject_status=None)
    fake.wait_state(lambda s: s["connections"], timeout=15, what="reconnected")
    return dropped, fails


def test_an_outage_is_recorded(clean_gaps, fake, topic):
    vb = clean_gaps
    sub = subscribe_active(vb, fake, topic + "call:")
    dropped, fails = outage(fake, vb, 2)
    assert fails >= 2, "handshakes failed during the outage"
    fake.wait_topics([sub], timeout=15)
    [g] = wait_until(lambda: gaps(vb) or None, timeout=10, what="a gap row")
    _, started, ended, _, _, error, cause = g
    assert cause == "outage"
    assert abs((started - dropped).total_seconds()) < 1, (started, dropped)
    assert (ended - started).total_seconds() >= 2
    assert ended <= db_now(vb)
    assert vb.status()["last_gap_at"] == started
    # nothing happened meanwhile: the repair finds nothing, and says so
    g = wait_until(lambda: [r for r in gaps(vb) if r[3] is not None] or None, timeout=15,
                   what="the gap repaired")[0]
    assert g[4] == 0 and g[5] is None


@pytest.mark.parametrize("webhook", [False, True], ids=["quiet", "webhook_meanwhile"])
def test_a_frozen_connection_is_a_gap_from_its_last_sign_of_life(clean_gaps, fake, topic, webhook):
    """A half-open connection says nothing: the worker learns of it
    idle_timeout (3 s here) after its last frame or pong, and what VoIPBIN
    published in those seconds is lost too, so the gap starts there, not at
    the close, nor at a webhook that arrived meanwhile (it went through the
    journal, not the socket).  Found by test/chaos --seed 323828945: the gap
    began at the close once the close's words were reworded, and at a
    webhook's arrival when one came during the freeze."""
    vb = clean_gaps
    sub = subscribe_active(vb, fake, topic + "call:")
    sender = None
    if webhook:
        port = free_port()
        vb.set_conf(voipbin__webhook_port=port)
        vb.wait_status(lambda s: s["webhook_state"].startswith("listening on") and "secret" not in s["webhook_state"],
                       what="the webhook receiver listening with a secret")
        sender = Sender("127.0.0.1", port, "/voipbin/events", fake.control("customer", {})["customer"]["webhook_secret"])
    try:
        froze = db_now(vb)
        fake.freeze(True)
        if sender:
            # late in the freeze, just before the worker gives up on the socket
            late = time.monotonic() + 2
            wait_until(lambda: time.monotonic() >= late or None, timeout=3, interval=0.05,
                       what="two seconds into the freeze")
            c = call(fake)
            assert sender.deliver(envelope("call_ringing", c)) == 200
            wait_until(lambda: vb.query_one("SELECT count(*) FROM voipbin_events WHERE resource_id = %s",
                                            (c["id"],))[0] or None, timeout=5, what="the webhook's event stored")
        vb.wait_status(lambda s: s["state"] != "connected", timeout=15, what="the frozen connection noticed")
        noticed = db_now(vb)
        fake.freeze(False)
        fake.wait_topics([sub], timeout=15)
        [g] = wait_until(lambda: gaps(vb) or None, timeout=10, what="a gap row")
    finally:
        if sender:
            sender.close()
            vb.set_conf(voipbin__webhook_port=None)
    _, started, ended, _, _, _, cause = g
    assert cause == "outage"
    # the last frame or pong came before the freeze; the close idle_timeout after it
    assert (noticed - froze).total_seconds() >= 2.5, (froze, noticed)
    assert started <= froze + timedelta(milliseconds=500), (started, froze, noticed)
    assert started >= froze - timedelta(seconds=4), (started, froze)
    assert ended >= noticed


def test_repair_off_still_records_the_outage(clean_gaps, fake, topic):
    vb = clean_gaps
    vb.set_conf(voipbin__repair="off")
    try:
        wait_until(lambda: vb.query_one("SELECT current_setting('voipbin.repair')")[0] == "off",
                   what="reloaded")
        subscribe_active(vb, fake, topic + "call:")
        fake.reset()
        outage(fake, vb, 1)
        [g] = wait_until(lambda: gaps(vb) or None, timeout=10, what="a gap row")
        assert g[3] is None and "voipbin.repair is off" in g[5]
        assert not [r for r in fake.state()["rest_requests"] if r["path"] != "/v1.0/customer"], \
            "no repair request"
    finally:
        vb.set_conf(voipbin__repair=None)


def test_gaps_are_dumped_with_their_ids(clean_gaps, fake, topic):
    vb = clean_gaps
    subscribe_active(vb, fake, topic + "call:")
    outage(fake, vb, 0.5)
    # repaired, so that the row no longer changes between the dump and the comparison
    wait_until(lambda: [r for r in gaps(vb) if r[3] is not None] or None, timeout=15,
               what="a gap row, repaired")
    dump = os.path.join(vb.dir, "gaps-dump.sql")
    vb.run_as_postgres("pg_dump", "-h", vb.sock, "-p", str(vb.port), "-f", dump, vb.dbname)
    vb.execute("CREATE DATABASE restored_gaps", dbname="postgres")
    try:
        vb.run_as_postgres("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", vb.sock,
                           "-p", str(vb.port), "-f", dump, "restored_gaps")
        assert vb.query("SELECT * FROM voipbin_gaps ORDER BY id", dbname="restored_gaps") \
            == vb.query("SELECT * FROM voipbin_gaps ORDER BY id")
        max_id = vb.query_one("SELECT max(id) FROM voipbin_gaps")[0]
        new_id = vb.query("INSERT INTO voipbin_gaps (started_at, ended_at) VALUES (now(), now())"
                          " RETURNING id", dbname="restored_gaps")[0][0]
        assert new_id > max_id, "ids continue after the restore"
    finally:
        vb.execute("DROP DATABASE restored_gaps", dbname="postgres")


# ---- the repair ---------------------------------------------------------------

NIL = "00000000-0000-0000-0000-000000000000"


def rfc3339(dt):
    """Go's RFC3339Nano in UTC: trailing zeros trimmed."""
    s = dt.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return s + "Z"


def utcnow():
    return datetime.now(timezone.utc)


def a_call(fake, cid, status, created, updated=None, **extra):
    d = {"id": cid, "customer_id": fake.customer_id, "owner_type": "",
         "owner_id": NIL, "flow_id": "d157ce07-0360-4cad-9007-c8ab89fccf9c",
         "activeflow_id": str(uuid.uuid4()), "type": "flow", "master_call_id": NIL,
         "recording_id": NIL, "groupcall_id": NIL,
         "source": {"type": "tel", "target": "+15551230001"},
         "destination": {"type": "tel", "target": "+15551230002"},
         "status": status, "direction": "incoming", "tm_create": rfc3339(created)}
    if updated is not None:
        d["tm_update"] = rfc3339(updated)
    d.update(extra)
    return d


def a_transcribe(fake, tid, call_id, status, created, updated=None):
    return {"id": tid, "customer_id": fake.customer_id, "activeflow_id": str(uuid.uuid4()),
            "on_end_flow_id": NIL, "reference_type": "call", "reference_id": call_id,
            "status": status, "language": "en-US", "direction": "both", "provider": "gcp",
            "tm_create": rfc3339(created),
            "tm_update": rfc3339(updated) if updated else None, "tm_delete": None}


def a_line(fake, tid, n, created):
    return {"id": str(uuid.uuid4()), "customer_id": fake.customer_id, "transcribe_id": tid,
            "direction": "in" if n % 2 else "out", "message": "line %d" % n,
            "tm_transcript": "0001-01-01T00:00:%02d.5Z" % (n * 3), "tm_create": rfc3339(created)}


def a_recording(fake, rid, call_id, status, created, updated):
    d = {"id": rid, "customer_id": fake.customer_id, "owner_type": "", "owner_id": NIL,
         "reference_type": "call", "reference_id": call_id, "status": status, "format": "wav",
         "on_end_flow_id": NIL, "tm_start": rfc3339(created), "tm_create": rfc3339(created),
         "tm_update": rfc3339(updated)}
    if status == "ended":
        d["tm_end"] = rfc3339(updated)
    return d


def happen(fake, *evs):
    """Events VoIPBIN publishes (delivered if connected) and whose objects its REST reads return."""
    return fake.publish(events=[{"event_type": t, "data": d, "store": True} for t, d in evs])


def a_ringing_call_stored(vb, fake):
    """A call ringing since 5 s ago, stored live (the only event): its id and creation time."""
    c = str(uuid.uuid4())
    t = utcnow() - timedelta(seconds=5)
    happen(fake, ("call_created", a_call(fake, c, "ringing", t)))
    wait_until(lambda: vb.query_one("SELECT count(*) FROM voipbin_events")[0] == 1, what="stored")
    return c, t


def repair_requests(fake):
    return [r for r in fake.state()["rest_requests"] if r["path"] != "/v1.0/customer"]


def test_what_the_outage_cost_comes_back(clean_gaps, fake, topic):
    vb = clean_gaps
    subscribe_active(vb, fake, topic)
    fake.config(rate_limit={"rate": 17, "burst": 33})
    now = utcnow()

    # 250 old calls, settled long ago: the walk must stop before them
    old = [a_call(fake, str(uuid.uuid4()), "hangup", now - timedelta(days=2, seconds=-i),
                  now - timedelta(days=2, seconds=-i - 60), hangup_by="remote", hangup_reason="normal")
           for i in range(250)]
    happen(fake, *[("call_hangup", c) for c in old])

    # a live call A, with a recording and a transcription of 2 lines so far; a call D
    a, b, d = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    rec, tr = str(uuid.uuid4()), str(uuid.uuid4())
    t_a = now - timedelta(seconds=20)
    a_ringing = a_call(fake, a, "ringing", t_a)
    a_progressing = a_call(fake, a, "progressing", t_a, t_a + timedelta(seconds=2), recording_ids=[rec],
                           tm_progressing=rfc3339(t_a + timedelta(seconds=2)))
    lines = [a_line(fake, tr, n, t_a + timedelta(seconds=4 + n)) for n in range(5)]
    happen(fake, ("call_created", a_ringing), ("call_progressing", a_progressing),
           ("recording_started", a_recording(fake, rec, a, "recording", t_a + timedelta(seconds=2),
                                             t_a + timedelta(seconds=2, milliseconds=5))),
           ("transcribe_created", a_transcribe(fake, tr, a, "progressing", t_a + timedelta(seconds=3))),
           ("transcript_created", lines[0]), ("transcript_created", lines[1]),
           ("call_created", a_call(fake, d, "ringing", t_a)),
           ("call_progressing", a_call(fake, d, "progressing", t_a, t_a + timedelta(seconds=1))))
    wait_until(lambda: vb.query_one("SELECT count(*) FROM voipbin_events")[0] == 250 + 8,
               timeout=20, what="the live events stored")
    assert vb.query_one("SELECT status FROM voipbin_calls WHERE call_id = %s", (a,))[0] == "progressing"

    # 6 s of failed handshakes; meanwhile A hangs up, B lives its whole life, D is deleted
    fake.config(ws_reject_status=503)
    dropped = db_now(vb)
    fake.drop()
    vb.wait_status(lambda s: s["state"] != "connected", what="the outage noticed")
    t = utcnow()
    b_ringing = a_call(fake, b, "ringing", t)
    b_progressing = a_call(fake, b, "progressing", t, t + timedelta(milliseconds=300))
    b_hangup = a_call(fake, b, "hangup", t, t + timedelta(seconds=1), hangup_by="local",
                      hangup_reason="normal")
    a_hangup = dict(a_progressing, status="hangup", hangup_by="remote", hangup_reason="normal",
                    tm_hangup=rfc3339(t), tm_update=rfc3339(t))
    d_deleted = a_call(fake, d, "progressing", t_a, t, tm_delete=rfc3339(t))
    out = happen(fake, ("transcript_created", lines[2]), ("transcript_created", lines[3]),
                 ("call_hangup", a_hangup), ("transcript_created", lines[4]),
                 ("transcribe_done", a_transcribe(fake, tr, a, "done", t_a + timedelta(seconds=3),
                                                  t + timedelta(milliseconds=200))),
                 ("recording_finished", a_recording(fake, rec, a, "ended", t_a + timedelta(seconds=2),
                                                    t + timedelta(milliseconds=400))),
                 ("call_created", b_ringing), ("call_progressing", b_progressing),
                 ("call_hangup", b_hangup), ("call_deleted", d_deleted))
    assert out["delivered"] == 0, "nothing reached the worker during the outage"
    deadline = time.monotonic() + 6
    wait_until(lambda: time.monotonic() >= deadline or None, timeout=7, interval=0.05,
               what="the outage's length")
    assert sum(1 for h in fake.state()["handshakes"] if h["status"] == 503) >= 3
    # the customer's own users have spent the shared budget, and take 15 of its 17/s
    fake.config(ws_reject_status=None, rate_limit={"rate": 17, "burst": 33, "others": 15, "tokens": 0})
    st = fake.wait_state(lambda s: s["connections"], timeout=15, what="reconnected")
    reconnected = st["connections"][0]["connected_at"]

    [g] = wait_until(lambda: [r for r in gaps(vb) if r[3] is not None] or None,
                     timeout=30 - (time.time() - reconnected), what="the gap repaired")
    assert time.time() - reconnected <= 30
    gid, started, ended, repaired, events_repaired, error, cause = g
    assert cause == "outage" and abs((started - dropped).total_seconds()) < 1
    assert started < ended <= repaired

    calls = dict(vb.query("SELECT call_id::text, status FROM voipbin_calls WHERE call_id IN (%s, %s)", (a, b)))
    assert calls == {a: "hangup", b: "hangup"}
    got = vb.query("SELECT message FROM voipbin_transcripts WHERE transcribe_id = %s ORDER BY tm_offset", (tr,))
    assert [m for (m,) in got] == ["line %d" % n for n in range(5)]
    assert vb.query_one("SELECT count(*) FROM voipbin_events WHERE resource = 'transcript'")[0] == 5
    assert vb.query_one("SELECT count(*) FROM voipbin_transcripts WHERE call_id = %s", (a,))[0] == 5
    rest = sorted(vb.query("SELECT event_type, resource_id::text FROM voipbin_events WHERE source = 'rest'"))
    assert rest == sorted([("call_hangup", a), ("transcribe_done", tr), ("recording_finished", rec),
                           ("transcript_created", lines[2]["id"]), ("transcript_created", lines[3]["id"]),
                           ("transcript_created", lines[4]["id"]),
                           ("call_created", b), ("call_progressing", b), ("call_hangup", b)])
    assert events_repaired == len(rest)
    assert vb.query("SELECT event_type, resource_id, count(*) FROM voipbin_events"
                    " GROUP BY 1, 2 HAVING count(*) > 1") == [], "nothing stored twice"
    assert error is not None and "deleted" in error, "the deleted call is said to be lost"

    log = repair_requests(fake)
    lists = [r for r in log if r["path"] == "/v1.0/calls"]
    assert 1 <= len(lists) <= 2, lists
    old_ids = {c["id"] for c in old}
    assert not [r for r in log if r["path"].rsplit("/", 1)[-1] in old_ids], "no old call read one by one"
    transcripts = [r for r in log if r["path"] == "/v1.0/transcripts"]
    assert transcripts and all("page_token" not in r["query"] for r in transcripts)
    assert len([r for r in log if d in r["path"]]) <= 3, "the deleted call is not asked again and again"
    # paced: no second-long window above VoIPBIN's burst
    times = sorted(r["at"] for r in log)
    assert max(sum(1 for u in times if s <= u < s + 1) for s in times) <= 33
    # Retry-After honoured: a refused request is not sent again before it has
    # passed, and nothing new is started meanwhile (what arrives then was in flight:
    # at most 4 run at once)
    refused = [r for r in log if r["status"] == 429]
    assert refused, "the customer's own users left too little: some requests were refused"
    for r in refused:
        again = [x for x in log if x["at"] > r["at"] and (x["path"], x["query"]) == (r["path"], r["query"])]
        assert again and again[0]["at"] >= r["at"] + r["retry_after"] - 0.02, (r, again[:1])
        early = [x for x in log if r["at"] < x["at"] < r["at"] + r["retry_after"] - 0.02]
        assert len(early) <= 3, (r, early)


def rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("RssAnon:")).split()[1])


def test_a_big_repair_holds_little_memory(clean_gaps, fake, topic):
    """What the repair reads is journaled object by object and freed with its
    answer: reading back 60 calls of 90 long transcript lines each (some 11 MB
    of JSON) the worker grows by what a few answers in flight and the frames
    waiting for the store take (15 MB here), not by all it read.  Before,
    every answer's parsed body and text stayed until the repair's end: 114 MB
    here, and a long chaos run under a heavier load saw the worker 26 MB past
    voipbin.buffer_limit + 16 MB."""
    vb = clean_gaps
    vb.set_conf(voipbin__repair_rate=17)
    subscribe_active(vb, fake, topic)
    fake.config(ws_reject_status=503)
    fake.drop()
    vb.wait_status(lambda s: s["state"] != "connected", what="the outage noticed")
    pid = vb.worker_pid()
    before = rss_anon_kb(pid)
    t = utcnow()
    text = "x" * 2000
    for n in range(60):
        cid, tid, rid = (str(uuid.uuid4()) for _ in range(3))
        lines = [dict(a_line(fake, tid, i, t), message="%d %s" % (i, text)) for i in range(90)]
        happen(fake, ("call_hangup", a_call(fake, cid, "hangup", t, t + timedelta(seconds=1),
                                            recording_ids=[rid], hangup_by="remote", hangup_reason="normal")),
               ("transcribe_done", a_transcribe(fake, tid, cid, "done", t, t + timedelta(seconds=1))),
               ("recording_finished", a_recording(fake, rid, cid, "ended", t, t + timedelta(seconds=1))),
               *[("transcript_created", line) for line in lines])
    fake.config(ws_reject_status=None)
    peak = [before]

    def repaired():
        peak[0] = max(peak[0], rss_anon_kb(pid))
        return [g for g in gaps(vb) if g[3] is not None] or None
    try:
        [g] = wait_until(repaired, timeout=120, interval=0.1, what="the gap repaired")
    finally:
        vb.set_conf(voipbin__repair_rate=None)
    assert vb.worker_pid() == pid
    assert g[4] >= 60 * 92, "every call, its recording and its transcript lines came back: %r" % (g,)
    grown_mb = (peak[0] - before) / 1024.0
    assert grown_mb < 30, "the worker grew by %.1f MB during the repair" % grown_mb


def test_a_failed_repair_is_said_and_retried(clean_gaps, fake, topic):
    vb = clean_gaps
    subscribe_active(vb, fake, topic)
    c, t = a_ringing_call_stored(vb, fake)
    fake.config(rest_status=503)
    outage(fake, vb, 0.5)
    # each read is asked 5 times (1, 2, 4, 8 s apart) before the attempt fails
    g = wait_until(lambda: [r for r in gaps(vb) if r[5] and "repair failed" in r[5]] or None,
                   timeout=40, what="the failure said")[0]
    assert g[3] is None and "HTTP 503" in g[5] and "attempt 1" in g[5]
    # a second outage takes the repair over; the call ends meanwhile
    fake.config(rest_status=None)
    outage(fake, vb, 0.5, during=lambda: happen(fake, ("call_hangup", a_call(fake, c, "hangup", t, utcnow()))))
    done = wait_until(lambda: (lambda rows: rows if len(rows) == 2 and all(r[3] for r in rows) else None)(gaps(vb)),
                      timeout=20, what="both gaps repaired")
    assert "repaired together with gap %d" % done[1][0] in done[0][5]
    assert vb.query_one("SELECT status FROM voipbin_calls WHERE call_id = %s", (c,))[0] == "hangup"
    assert vb.query_one("SELECT source FROM voipbin_events WHERE event_type = 'call_hangup'")[0] == "rest"


def test_a_read_failing_for_a_moment_is_asked_again(clean_gaps, fake, topic):
    """A read answered 503 for a few seconds is asked again (1, 2, 4, 8 s
    later) within the same attempt, which then completes: under a REST API
    failing now and then, an attempt that started its walk again at each
    failure might never end (a 30-minute test/chaos run, seed 2061462869)."""
    vb = clean_gaps
    subscribe_active(vb, fake, topic)
    c, t = a_ringing_call_stored(vb, fake)
    log_from = len(vb.read_log())
    fake.config(rest_status=503)
    outage(fake, vb, 0.5, during=lambda: happen(fake, ("call_hangup", a_call(fake, c, "hangup", t, utcnow()))))
    wait_until(lambda: [r for r in fake.state()["rest_requests"]
                        if r["path"] != "/v1.0/customer" and r["status"] == 503] or None,
               timeout=15, what="a read of the repair answered 503")
    # the fault lasts a few seconds more, as VoIPBIN's hiccups do
    until = time.monotonic() + 2.5
    wait_until(lambda: time.monotonic() >= until or None, timeout=5, interval=0.1, what="the 503s' length")
    fake.config(rest_status=None)
    [g] = wait_until(lambda: [r for r in gaps(vb) if r[3] is not None] or None, timeout=40,
                     what="the gap repaired")
    assert g[5] is None, "repaired whole, in its first attempt: %r" % (g,)
    assert "repair failed" not in vb.read_log()[log_from:]
    assert vb.query_one("SELECT source FROM voipbin_events WHERE event_type = 'call_hangup'")[0] == "rest"


@pytest.mark.parametrize("stop", ["fast", "immediate"])
def test_a_restart_of_the_server_is_a_gap_and_repaired(clean_gaps, fake, topic, stop):
    """While PostgreSQL is down no worker listens: VoIPBIN's events of that
    time are lost like an outage's, and are repaired like one."""
    vb = clean_gaps
    subscribe_active(vb, fake, topic + "call:")
    c = str(uuid.uuid4())
    t = utcnow() - timedelta(seconds=5)
    happen(fake, ("call_created", a_call(fake, c, "ringing", t)),
           ("call_progressing", a_call(fake, c, "progressing", t, t + timedelta(seconds=1))))
    wait_until(lambda: vb.query_one("SELECT count(*) FROM voipbin_events WHERE resource_id = %s",
                                    (c,))[0] == 2, what="the live events stored")
    # the worker's last sign of life is on record before the server goes
    alive = wait_until(lambda: vb.query_one("SELECT max(alive_at) FROM voipbin_journal")[0],
                       timeout=20, what="alive_at written")
    r = vb.stop(stop)
    assert r.returncode == 0, r.stdout
    stopped = utcnow()
    out = happen(fake, ("call_hangup", a_call(fake, c, "hangup", t, utcnow(), hangup_by="remote",
                                             hangup_reason="normal")))
    assert out["delivered"] == 0, "nobody was listening"
    vb.start()
    [g] = wait_until(lambda: [r for r in gaps(vb) if r[3] is not None] or None, timeout=30,
                     what="the restart's gap repaired")
    _, started, ended, repaired, events_repaired, error, cause = g
    assert cause == "restart"
    assert alive <= started <= stopped, (alive, started, stopped)
    assert (stopped - started).total_seconds() <= 20, "the gap starts near the stop"
    assert started < ended <= repaired
    assert error is None
    assert vb.query_one("SELECT status FROM voipbin_calls WHERE call_id = %s", (c,))[0] == "hangup"
    assert vb.query("SELECT source FROM voipbin_events WHERE resource_id = %s AND event_type = 'call_hangup'",
                    (c,)) == [("rest",)]
    assert events_repaired == 1
    assert vb.status()["last_gap_at"] == started


def test_a_worker_with_no_predecessor_records_no_gap(fake, secret_dir):
    """A new install lost nothing; the first restart after it did."""
    from pgcluster import Cluster
    c = Cluster(FAST)
    try:
        c.start()
        c.execute("CREATE EXTENSION voipbin")
        point_at(c, fake, secret_dir)
        c.wait_status(lambda s: s["state"] == "connected", timeout=20, what="connected")
        wait_until(lambda: c.query_one("SELECT max(alive_at) FROM voipbin_journal")[0],
                   timeout=20, what="alive_at written")
        assert gaps(c) == [], "the first worker had no predecessor"
        r = c.stop("fast")
        assert r.returncode == 0, r.stdout
        c.start()
        c.wait_status(lambda s: s["state"] == "connected", timeout=20, what="connected again")
        [g] = wait_until(lambda: gaps(c) or None, timeout=15, what="the restart's gap")
        assert g[6] == "restart"
    finally:
        c.destroy()


# ---- the fake's REST reads, as VoIPBIN's server code has them ---------------------

def rest_get(fake, path, **query):
    import json
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request
    ctx = ssl.create_default_context(cafile=fake.ca_file)
    q = urllib.parse.urlencode(dict(query, accesskey=fake.accesskey))
    try:
        with urllib.request.urlopen(fake.api_url + path + "?" + q, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_the_fake_reads_like_voipbin(fake):
    now = utcnow()
    calls = [a_call(fake, str(uuid.uuid4()), "hangup", now - timedelta(seconds=i), now) for i in range(150)]
    tid = str(uuid.uuid4())
    fake.control("objects", {"calls": calls,
                             "transcribes": [a_transcribe(fake, tid, calls[0]["id"], "done", now)],
                             "transcripts": [a_line(fake, tid, n % 50, now - timedelta(seconds=n))
                                             for n in range(120)],
                             "delete": {"calls": [calls[1]["id"]]}})
    # newest-created first; a token on every non-empty page; only an empty page ends
    st, p1, _ = rest_get(fake, "/calls")
    assert st == 200 and len(p1["result"]) == 100 and calls[1]["id"] not in [c["id"] for c in p1["result"]]
    assert p1["result"][0]["id"] == calls[0]["id"] and p1["next_page_token"].endswith("Z")
    assert len(p1["next_page_token"].split(".")[1]) == 7           # 6 digits and the Z
    _, p2, _ = rest_get(fake, "/calls", page_token=p1["next_page_token"], status="hangup")
    assert len(p2["result"]) == 49 and p2["next_page_token"]
    _, p3, _ = rest_get(fake, "/calls", page_token=p2["next_page_token"])
    assert p3 == {"result": [], "next_page_token": ""}
    assert rest_get(fake, "/calls", page_size="x")[0] == 400
    # 409 deleted, 404 unknown, 403 another customer's, 400 the nil id
    assert rest_get(fake, "/calls/" + calls[1]["id"])[1]["error"]["reason"] == "STATE_INVALID"
    assert rest_get(fake, "/calls/" + calls[1]["id"])[0] == 409
    assert rest_get(fake, "/calls/" + str(uuid.uuid4()))[0] == 404
    assert rest_get(fake, "/calls/" + NIL)[0] == 400
    other = dict(calls[2], id=str(uuid.uuid4()), customer_id=str(uuid.uuid4()))
    fake.control("objects", {"calls": [other]})
    assert rest_get(fake, "/calls/" + other["id"])[0] == 403
    # the transcripts: the newest 100, and the token brings the same page back
    _, t1, _ = rest_get(fake, "/transcripts", transcribe_id=tid)
    _, t2, _ = rest_get(fake, "/transcripts", transcribe_id=tid, page_token=t1["next_page_token"], page_size=10)
    assert len(t1["result"]) == 100 and t1 == t2
    assert rest_get(fake, "/transcripts")[0] == 400
    assert rest_get(fake, "/transcribes", reference_type="call")[0] == 400
    _, tr, _ = rest_get(fake, "/transcribes", reference_type="call", reference_id=calls[0]["id"])
    assert [t["id"] for t in tr["result"]] == [tid]
    # the limiter (slowed down here): its burst, then 429 with Retry-After
    fake.config(rate_limit={"rate": 0.5, "burst": 5})
    codes = [rest_get(fake, "/calls/" + calls[0]["id"])[0] for _ in range(8)]
    assert codes[:5] == [200] * 5 and 429 in codes[5:]
    st, body, headers = rest_get(fake, "/calls/" + calls[0]["id"])
    assert st == 429 and int(headers["Retry-After"]) >= 1
    assert fake.state()["rest_requests"][-1]["retry_after"] == int(headers["Retry-After"])
    assert body["error"]["details"] == [{"limited_by": "customer"}]
    log = fake.state()["rest_requests"]
    assert all("accesskey" not in r["query"] for r in log)


def test_only_what_the_topics_carry_comes_back(clean_gaps, fake, topic):
    vb = clean_gaps
    subscribe_active(vb, fake, topic + "call:")
    c, tr = str(uuid.uuid4()), str(uuid.uuid4())
    t = utcnow() - timedelta(seconds=5)
    happen(fake, ("call_created", a_call(fake, c, "ringing", t)),
           ("transcribe_created", a_transcribe(fake, tr, c, "progressing", t)))
    wait_until(lambda: vb.query_one("SELECT count(*) FROM voipbin_events")[0] == 1, what="the call stored")

    def meanwhile():
        happen(fake, ("transcript_created", a_line(fake, tr, 1, utcnow())),
               ("call_hangup", a_call(fake, c, "hangup", t, utcnow())),
               ("transcribe_done", a_transcribe(fake, tr, c, "done", t, utcnow())))
    outage(fake, vb, 0.5, during=meanwhile)
    g = wait_until(lambda: [r for r in gaps(vb) if r[3] is not None] or None, timeout=15,
                   what="the gap repaired")[0]
    assert vb.query("SELECT event_type, source FROM voipbin_events ORDER BY id") == \
        [("call_created", "websocket"), ("call_hangup", "rest")]
    assert g[4] == 1
    # the transcription was read (it hangs off the call), not stored: no topic carries it
    assert [r for r in repair_requests(fake) if r["path"] == "/v1.0/transcripts"]


def test_a_repair_cut_short_by_a_crash_is_taken_over(clean_gaps, fake, topic):
    """Found by test/chaos --seed 1 --minutes 0.5: a repair waiting to be
    tried again lived only in the worker's memory, so a worker killed then
    left its gap "next in 5 s" for ever, and what was lost before the next
    worker's own gap began never came back.  The next worker takes it over."""
    import signal
    from helpers import try_query
    vb = clean_gaps
    subscribe_active(vb, fake, topic + "call:")
    c, t = a_ringing_call_stored(vb, fake)
    fake.config(rest_status=503)
    outage(fake, vb, 0.5, during=lambda: happen(fake, ("call_hangup", a_call(fake, c, "hangup", t, utcnow()))))
    [first] = wait_until(lambda: [r for r in gaps(vb) if r[5] and "repair failed" in r[5]] or None,
                         timeout=40, what="the repair failed once, to be tried again")
    fake.config(rest_status=None)
    pid = vb.worker_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: try_query(lambda: vb.worker_pid() not in (None, pid)), timeout=60,
               what="a new worker after the crash")
    done = wait_until(lambda: try_query(lambda: (lambda rows: rows if len(rows) == 2 and all(r[3] for r in rows)
                                                 else None)(gaps(vb))),
                      timeout=30, what="both gaps repaired")
    assert done[0][0] == first[0] and "repaired together with gap %d" % done[1][0] in done[0][5]
    assert vb.query_one("SELECT status FROM voipbin_calls WHERE call_id = %s", (c,))[0] == "hangup"
    assert "left unrepaired by an earlier worker" in vb.read_log()
