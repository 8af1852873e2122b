"""Workflows end to end: the views and handlers on events the worker stores from
the fake VoIPBIN (out of order, twice, in both timestamp formats), and the
examples in examples/ run against the live cluster."""
import json
import os
import signal
import subprocess
import threading
import uuid
from datetime import datetime, timedelta, timezone

import psycopg2.extras
import pytest

from pgcluster import PG_BIN, wait_until
from helpers import call, subscribe, transcript

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
PSQL = os.path.join(PG_BIN, "psql")
NODE = "/usr/bin/node"
# far from UTC, and on a half hour: a zone mix-up cannot go unnoticed
ZONE = "Asia/Kolkata"


def at(y, mo, d, h, mi, s, us=0):
    return datetime(y, mo, d, h, mi, s, us, tzinfo=timezone.utc)


def query(cluster, sql, params=None, tz=ZONE):
    """Rows as dicts, read in a session whose TimeZone is not UTC."""
    conn = cluster.connect()
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SET TimeZone = %s", (tz,))
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def stored(cluster, resource_id):
    return cluster.query_one("SELECT count(*) FROM voipbin_events WHERE resource_id = %s",
                             (resource_id,))[0]


def event_id(cluster, event_type, resource_id):
    return cluster.query_one("SELECT id FROM voipbin_events WHERE event_type = %s AND resource_id = %s",
                             (event_type, resource_id))[0]


def wait_frames(cluster, before, n):
    """Until the worker has taken n more frames (stored or counted as duplicates)."""
    cluster.wait_status(lambda s: s["frames_received"] - before["frames_received"] >= n
                        and s["events_stored"] + s["duplicates"] + s["dead_letters"]
                        - before["events_stored"] - before["duplicates"] - before["dead_letters"] >= n,
                        what="%d frames handled" % n)


@pytest.fixture
def wf(vb):
    """The worker connected to the fake; what a test registers or creates goes after it."""
    yield vb
    vb.execute("DELETE FROM voipbin_handlers")
    vb.execute("DROP FUNCTION IF EXISTS wf_first(voipbin_events), wf_second(voipbin_events),"
               " wf_flaky(voipbin_events), summarize_call(voipbin_events)")
    vb.execute("DROP TABLE IF EXISTS wf_log, call_summaries")


class Running:
    """A subprocess in a process group of its own, its stdout collected line by line."""

    def __init__(self, argv, env=None, cwd=ROOT):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, cwd=cwd,
                                     env=dict(os.environ, **(env or {})), start_new_session=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text, timeout=15):
        return wait_until(lambda: next((l for l in self.lines if text in l), None), timeout,
                          what="a line with %r (got %r)" % (text, self.lines))

    def stop(self):
        """Ends the group it leads (a pipeline's psql, sed and loop too); returns stderr."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.reader.join(5)
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        return err


def client_env(cluster, appname):
    return {"PGHOST": cluster.sock, "PGPORT": str(cluster.port), "PGUSER": "postgres",
            "PGDATABASE": cluster.dbname, "PGAPPNAME": appname}


def wait_listening(cluster, appname):
    """Until the client has run its LISTEN (a notification before it would be
    lost), and after it the read of voipbin_events where its feed starts."""
    wait_until(lambda: cluster.query_one(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND state = 'idle'"
        " AND (query ILIKE 'LISTEN%%' OR query ILIKE 'SELECT WHERE false%%'"
        " OR query ILIKE '%%FROM voipbin_events%%')", (appname,)),
        timeout=15, what="%s listening" % appname)


def psql(cluster, *args):
    return subprocess.run([PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-h", cluster.sock,
                           "-p", str(cluster.port), "-U", "postgres", "-d", cluster.dbname] + list(args),
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60, check=True)


def session(fake, call_id, session_id=None, **extra):
    """A transcription session of a call, as its transcribe_created frame."""
    data = {
        "id": session_id or str(uuid.uuid4()),
        "customer_id": fake.customer_id,
        "reference_type": "call",
        "reference_id": call_id,
        "status": "progressing",
        "language": "en-US",
        "direction": "both",
        "provider": "gcp",
        "tm_create": "2026-02-21T10:05:12.5Z",
        "tm_update": "2026-02-21T10:05:12.5Z",
    }
    data.update(extra)
    return data


def line(fake, transcribe_id, message, offset, direction="in", **extra):
    data = transcript(fake, message)
    data.update(transcribe_id=transcribe_id, tm_transcript=offset, direction=direction, **extra)
    return data


# -- voipbin_calls ------------------------------------------------------------

def test_calls_view_keeps_the_latest_state(wf, fake, topic):
    # every frame arrives twice (both of VoIPBIN's topics match)
    subscribe(wf, fake, topic)
    cid = str(uuid.uuid4())
    ringing = call(fake, "ringing", cid, tm_ringing="2026-02-21T10:05:10.5Z",
                   tm_update="2026-02-21T10:05:10.5Z")
    progressing = dict(ringing, status="progressing", tm_progressing="2026-02-21T10:05:12Z",
                       tm_update="2026-02-21T10:05:12Z")
    hangup = dict(progressing, status="hangup", hangup_by="remote", hangup_reason="normal",
                  tm_hangup="2026-02-21T10:05:20.25Z", tm_update="2026-02-21T10:05:20.25Z")

    before = wf.status()
    fake.publish("call_ringing", ringing)
    wait_frames(wf, before, 2)
    row = query(wf, "SELECT * FROM voipbin_calls WHERE call_id = %s", (cid,))[0]
    assert (row["status"], row["hangup_by"], row["hangup_reason"], row["tm_hangup"]) == \
        ("ringing", None, None, None)

    # the hangup overtakes progressing, which then comes late, in another
    # shape and under another event type; ringing comes again
    fake.publish("call_hangup", hangup)
    fake.publish("call_progressing", progressing, shape="wrapped")
    fake.publish("call_updated", progressing, shape="event_type")
    fake.publish("call_ringing", ringing, shape="event_type")
    wait_frames(wf, before, 10)
    assert stored(wf, cid) == 4

    rows = query(wf, "SELECT * FROM voipbin_calls WHERE call_id = %s", (cid,))
    assert len(rows) == 1
    row = rows[0]
    assert row == {
        "call_id": cid, "status": "hangup", "direction": "incoming",
        "source_target": "+15550001", "destination_target": "+15550002",
        "hangup_by": "remote", "hangup_reason": "normal",
        "tm_create": at(2026, 2, 21, 10, 5, 10, 100000),
        "tm_ringing": at(2026, 2, 21, 10, 5, 10, 500000),
        "tm_progressing": at(2026, 2, 21, 10, 5, 12),
        "tm_hangup": at(2026, 2, 21, 10, 5, 20, 250000),
        "tm_update": at(2026, 2, 21, 10, 5, 20, 250000),
        "last_event_id": event_id(wf, "call_hangup", cid),
    }
    assert row["tm_update"].utcoffset() == timedelta(hours=5, minutes=30)
    # the same instants whatever the reader's zone
    assert query(wf, "SELECT * FROM voipbin_calls WHERE call_id = %s", (cid,), tz="UTC") == rows


def test_calls_view_reads_both_timestamp_formats(wf, fake, topic):
    subscribe(wf, fake, topic + "call:call_")
    cid = str(uuid.uuid4())
    older = dict(call(fake, "dialing", cid, direction="outgoing", hangup_by="", hangup_reason=""),
                 tm_create="2022-04-11 06:10:54.788000", tm_update="2022-04-11 06:10:54.788000",
                 tm_ringing="9999-01-01 00:00:00.000000", tm_progressing="9999-01-01 00:00:00.000000",
                 tm_hangup="9999-01-01 00:00:00.000000")
    hangup = dict(older, status="hangup", hangup_by="local", hangup_reason="noanswer",
                  tm_update="2022-04-11 06:10:58.431000", tm_hangup="2022-04-11 06:10:58.431000")
    # earlier than the hangup, but "2022-04-11T…" sorts after "2022-04-11 …" as text
    ringing = dict(call(fake, "ringing", cid, direction="outgoing"), tm_create="2022-04-11T06:10:54.788Z",
                   tm_ringing="2022-04-11T06:10:55Z", tm_update="2022-04-11T06:10:55Z")
    before = wf.status()
    fake.publish("call_created", older, shape="wrapped")
    fake.publish("call_hangup", hangup)
    fake.publish("call_ringing", ringing)
    wait_frames(wf, before, 3)
    assert stored(wf, cid) == 3

    for tz in ("America/Los_Angeles", "Pacific/Chatham", "UTC"):
        row = query(wf, "SELECT * FROM voipbin_calls WHERE call_id = %s", (cid,), tz=tz)[0]
        assert (row["status"], row["hangup_by"], row["hangup_reason"]) == ("hangup", "local", "noanswer")
        assert row["tm_create"] == at(2022, 4, 11, 6, 10, 54, 788000)
        assert row["tm_update"] == row["tm_hangup"] == at(2022, 4, 11, 6, 10, 58, 431000)
        # the 9999 sentinel is unset
        assert row["tm_ringing"] is None and row["tm_progressing"] is None
        assert row["last_event_id"] == event_id(wf, "call_hangup", cid)


# -- voipbin_transcripts ------------------------------------------------------

def test_transcripts_view_dedupes_orders_and_finds_the_call(wf, fake, topic):
    subscribe(wf, fake, topic)
    cid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    late = line(fake, tid, "and how are you", "0001-01-01T00:00:08.99184Z", direction="out")
    early = line(fake, tid, "hello there", "0001-01-01 00:00:03.500000",
                 tm_create="2026-02-21 10:05:16.000000")
    # the same line again, re-encoded in the older format: a second event
    late_again = dict(late, tm_transcript="0001-01-01 00:00:08.991840", tm_create="2026-02-21 10:05:15.100000")
    before = wf.status()
    fake.publish("transcript_created", late)
    fake.publish("transcript_created", early)
    fake.publish("transcript_created", late_again, shape="wrapped")
    fake.publish("transcript_created", late, shape="wrapped")
    wait_frames(wf, before, 8)
    assert stored(wf, late["id"]) == 2

    sql = ("SELECT transcript_id::text, transcribe_id::text, call_id::text, direction, message,"
           " tm_offset, tm_create FROM voipbin_transcripts WHERE transcribe_id = %s"
           " ORDER BY transcribe_id, tm_offset")
    rows = query(wf, sql, (tid,))
    # the session has not arrived yet: no call
    assert [(r["message"], r["call_id"]) for r in rows] == [("hello there", None), ("and how are you", None)]

    before = wf.status()
    fake.publish("transcribe_created", session(fake, cid, tid))
    wait_frames(wf, before, 2)
    rows = query(wf, sql, (tid,))
    assert rows == [
        {"transcript_id": early["id"], "transcribe_id": tid, "call_id": cid, "direction": "in",
         "message": "hello there", "tm_offset": timedelta(seconds=3.5),
         "tm_create": at(2026, 2, 21, 10, 5, 16)},
        {"transcript_id": late["id"], "transcribe_id": tid, "call_id": cid, "direction": "out",
         "message": "and how are you", "tm_offset": timedelta(seconds=8, microseconds=991840),
         "tm_create": at(2026, 2, 21, 10, 5, 15, 100000)},
    ]
    assert query(wf, sql, (tid,), tz="UTC") == rows


def test_transcripts_of_a_recording_have_no_call(wf, fake, topic):
    subscribe(wf, fake, topic)
    tid = str(uuid.uuid4())
    before = wf.status()
    fake.publish("transcribe_created", session(fake, str(uuid.uuid4()), tid, reference_type="recording"))
    fake.publish("transcript_created", line(fake, tid, "from a recording", "0001-01-01T00:00:01Z"))
    wait_frames(wf, before, 4)
    rows = query(wf, "SELECT call_id, message FROM voipbin_transcripts WHERE transcribe_id = %s", (tid,))
    assert rows == [{"call_id": None, "message": "from a recording"}]


# -- handlers -------------------------------------------------------------------

LOG_TABLE = """CREATE TABLE wf_log (n serial, handler text, event_type text, event_id bigint,
                                   resource_id uuid, xact bigint)"""


def logging_handler(name):
    return """CREATE FUNCTION %s(e voipbin_events) RETURNS void LANGUAGE sql AS $$
                  INSERT INTO wf_log (handler, event_type, event_id, resource_id, xact)
                  VALUES ('%s', e.event_type, e.id, e.resource_id, txid_current())
              $$""" % (name, name)


def test_handlers_run_once_per_event_in_order(wf, fake, topic):
    subscribe(wf, fake, topic)
    wf.execute(LOG_TABLE)
    wf.execute(logging_handler("wf_first"))
    wf.execute(logging_handler("wf_second"))
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_first(voipbin_events)')")
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_second(voipbin_events)')")
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_first(voipbin_events)')")  # no-op
    assert wf.query("SELECT handler FROM voipbin_handlers ORDER BY id") == \
        [("public.wf_first(public.voipbin_events)",), ("public.wf_second(public.voipbin_events)",)]

    hangups = [call(fake, "hangup") for _ in range(3)]
    before = wf.status()
    for h in hangups:
        fake.publish("call_hangup", h)
    fake.publish("call_hangup", hangups[0], shape="wrapped")  # a duplicate
    fake.publish("call_ringing", call(fake, "ringing"))       # not a hangup
    fake.publish("transcript_created", transcript(fake))
    wait_frames(wf, before, 12)

    ids = [event_id(wf, "call_hangup", h["id"]) for h in hangups]
    log = wf.query("SELECT handler, event_type, event_id FROM wf_log ORDER BY n")
    assert sorted(log, key=lambda r: (ids.index(r[2]), r[0])) == \
        [(name, "call_hangup", i) for i in ids for name in ("wf_first", "wf_second")]
    # in registration order for each event
    for i in ids:
        assert [r[0] for r in log if r[2] == i] == ["wf_first", "wf_second"]


def test_voipbin_off_stops_a_handler(wf, fake, topic):
    subscribe(wf, fake, topic + "call:call_")
    wf.execute(LOG_TABLE)
    wf.execute(logging_handler("wf_first"))
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_first(voipbin_events)')")
    first, second = call(fake, "hangup"), call(fake, "hangup")
    fake.publish("call_hangup", first)
    wait_until(lambda: wf.query("SELECT resource_id::text FROM wf_log") == [(first["id"],)],
               what="the handler ran")
    assert wf.query_one("SELECT voipbin_off('call_hangup', 'wf_first(voipbin_events)')")[0] is True
    assert wf.query_one("SELECT voipbin_off('call_hangup', 'wf_first(voipbin_events)')")[0] is False
    fake.publish("call_hangup", second)
    wait_until(lambda: stored(wf, second["id"]) == 1, what="the second hangup stored")
    assert wf.query("SELECT resource_id::text FROM wf_log") == [(first["id"],)]


def worker_waits_on_a_lock(cluster):
    row = cluster.query_one("SELECT wait_event_type FROM pg_stat_activity WHERE backend_type = 'voipbin'")
    return row and row[0] == "Lock"


def test_raising_handler_dead_letters_only_its_event(wf, fake, topic):
    # each frame once: the poisoned one must fail once
    subscribe(wf, fake, topic + "call:call_")
    wf.execute(LOG_TABLE)
    wf.execute("""CREATE FUNCTION wf_flaky(e voipbin_events) RETURNS void LANGUAGE plpgsql AS $$
                  BEGIN
                      IF e.data->'metadata'->>'poison' = 'yes' THEN
                          RAISE EXCEPTION 'wf_flaky refuses call %', e.resource_id;
                      END IF;
                      INSERT INTO wf_log (handler, event_type, event_id, resource_id, xact)
                      VALUES ('wf_flaky', e.event_type, e.id, e.resource_id, txid_current());
                  END $$""")
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_flaky(voipbin_events)')")

    # The worker redoes a failed batch frame by frame; make the poisoned frame
    # share a batch with good ones by holding the worker on a lock while they
    # arrive.  Batching is the worker's choice, so try a few times.
    for attempt in range(3):
        good = [call(fake, "hangup") for _ in range(3)]
        bad = call(fake, "hangup", metadata={"poison": "yes"})
        locker = wf.connect(autocommit=False)
        try:
            locker.cursor().execute("LOCK TABLE voipbin_events IN SHARE MODE")
            fake.publish("call_hangup", good[0])
            wait_until(lambda: worker_waits_on_a_lock(wf), what="the worker waiting on the lock")
            fake.publish(events=[{"event_type": "call_hangup", "data": d} for d in (good[1], bad, good[2])],
                         flush=True)
        finally:
            locker.rollback()
            locker.close()

        wait_until(lambda: all(stored(wf, g["id"]) == 1 for g in good)
                   and wf.query_one("SELECT count(*) FROM voipbin_dead_letters"
                                    " WHERE convert_from(raw, 'UTF8') LIKE %s", ("%" + bad["id"] + "%",))[0],
                   what="good frames stored, the poisoned one dead-lettered")
        assert stored(wf, bad["id"]) == 0
        dead = wf.query("SELECT convert_from(raw, 'UTF8'), error, xmin::text FROM voipbin_dead_letters"
                        " WHERE convert_from(raw, 'UTF8') LIKE %s", ("%" + bad["id"] + "%",))
        assert len(dead) == 1
        assert json.loads(dead[0][0]) == bad
        assert dead[0][1] == "wf_flaky refuses call %s" % bad["id"]
        # each good event handled exactly once, whatever was redone
        log = wf.query("SELECT resource_id::text, xact FROM wf_log WHERE resource_id = ANY(%s::uuid[])",
                       ([g["id"] for g in good],))
        assert sorted(r[0] for r in log) == sorted(g["id"] for g in good)
        # shared a transaction with the dead letter: the batch was redone around it
        if any(xact % 2**32 == int(dead[0][2]) for _, xact in log):
            break
    else:
        pytest.fail("the poisoned frame never shared a batch with good frames")
    assert wf.status()["state"] == "connected"


def test_dropping_a_handler_unregisters_it(wf, fake, topic):
    subscribe(wf, fake, topic + "call:call_")
    wf.execute(LOG_TABLE)
    wf.execute(logging_handler("wf_first"))
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_first(voipbin_events)')")
    wf.execute("DROP FUNCTION wf_first(voipbin_events)")
    assert wf.query("SELECT * FROM voipbin_handlers") == []
    h = call(fake, "hangup")
    fake.publish("call_hangup", h)
    wait_until(lambda: stored(wf, h["id"]) == 1, what="stored without the dropped handler")
    assert wf.query("SELECT * FROM voipbin_dead_letters") == []


def test_handlers_survive_pg_dump_and_restore(wf):
    wf.execute(LOG_TABLE)
    wf.execute(logging_handler("wf_first"))
    wf.execute(logging_handler("wf_second"))
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_second(voipbin_events)')")
    wf.execute("SELECT voipbin_on('call_hangup', 'wf_first(voipbin_events)')")
    handlers = wf.query("SELECT id, event_type, handler FROM voipbin_handlers ORDER BY id")
    dump = os.path.join(wf.dir, "wf_dump.sql")
    wf.run_as_postgres("pg_dump", "-h", wf.sock, "-p", str(wf.port), "-f", dump, wf.dbname)
    wf.execute("CREATE DATABASE wf_restored", dbname="postgres")
    try:
        wf.run_as_postgres("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", wf.sock,
                           "-p", str(wf.port), "-f", dump, "wf_restored")
        assert wf.query("SELECT id, event_type, handler FROM voipbin_handlers ORDER BY id",
                        dbname="wf_restored") == handlers
        # they run there, in their order, and new ones come after them
        wf.execute("INSERT INTO voipbin_events (event_type, resource, resource_id, data)"
                   " VALUES ('call_hangup', 'call', gen_random_uuid(), '{}')", dbname="wf_restored")
        assert wf.query("SELECT handler FROM wf_log ORDER BY n", dbname="wf_restored") == \
            [("wf_second",), ("wf_first",)]
        wf.execute("SELECT voipbin_on('call_ringing', 'wf_first(voipbin_events)')", dbname="wf_restored")
        assert wf.query_one("SELECT max(id) FROM voipbin_handlers", dbname="wf_restored")[0] > handlers[-1][0]
    finally:
        wf.execute("DROP DATABASE wf_restored", dbname="postgres")


def test_handler_signature_is_checked(wf):
    with pytest.raises(psycopg2.Error) as e:
        wf.execute("SELECT voipbin_on('call_hangup', 'length(text)')")
    assert e.value.pgcode == "42P17" and "voipbin_events" in e.value.diag.message_detail
    with pytest.raises(psycopg2.Error) as e:
        wf.execute("SELECT voipbin_on('Call-Hangup', 'length(text)')")
    assert e.value.pgcode == "22023" and e.value.diag.message_hint


# -- examples -------------------------------------------------------------------

def publish_line(fake, message):
    data = transcript(fake, message)
    fake.publish("transcript_created", data)
    return data


def test_example_python_live_feed(wf, fake, topic):
    subscribe(wf, fake, topic + "transcript:")
    feed = Running(["/usr/bin/python3", os.path.join(EXAMPLES, "live_transcripts.py"),
                    "--limit", "1", "--seconds", "60"], env=client_env(wf, "wf-python"))
    try:
        wait_listening(wf, "wf-python")
        data = publish_line(fake, "hello from python %s" % uuid.uuid4())
        got = feed.wait_line(data["message"])
        assert "  in   " in got and "+00:00:08.99184" in got
        # --limit 1: it exits by itself
        assert feed.proc.wait(15) == 0
    finally:
        err = feed.stop()
    assert err == ""


def test_example_psql_live_feed(wf, fake, topic):
    subscribe(wf, fake, topic + "transcript:")
    feed = Running(["sh", os.path.join(EXAMPLES, "live_transcripts.sh"), "-h", wf.sock,
                    "-p", str(wf.port), "-U", "postgres", "-d", wf.dbname],
                   env={"PGAPPNAME": "wf-psql"})
    try:
        wait_listening(wf, "wf-psql")
        data = publish_line(fake, "hello from psql %s" % uuid.uuid4())
        payload = json.loads(feed.wait_line(data["message"]))
        assert payload["event_type"] == "transcript_created" and payload["data"] == data
    finally:
        err = feed.stop()
    assert "ERROR" not in err


def test_example_node_feed_is_valid_javascript():
    # the suite does not npm install; test_example_node_live_feed runs it when `pg` is there
    r = subprocess.run([NODE, "--check", os.path.join(EXAMPLES, "live_transcripts.js")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode == 0, r.stdout
    with open(os.path.join(EXAMPLES, "package.json")) as f:
        assert "pg" in json.load(f)["dependencies"]


def node_has_pg():
    r = subprocess.run([NODE, "-e", "require.resolve('pg')"], cwd=EXAMPLES,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return r.returncode == 0


def test_example_node_live_feed(wf, fake, topic):
    if not node_has_pg():
        pytest.skip("the pg module is not installed (cd examples && npm install, or NODE_PATH)")
    subscribe(wf, fake, topic + "transcript:")
    feed = Running([NODE, os.path.join(EXAMPLES, "live_transcripts.js")],
                   env=client_env(wf, "wf-node"), cwd=EXAMPLES)
    try:
        wait_listening(wf, "wf-node")
        data = publish_line(fake, "hello from node %s" % uuid.uuid4())
        assert "+00:00:08.99184" in feed.wait_line(data["message"])
    finally:
        err = feed.stop()
    assert err == ""


def test_example_call_summary(wf, fake, topic):
    subscribe(wf, fake, topic)
    psql(wf, "-f", os.path.join(EXAMPLES, "call_summary.sql"))
    psql(wf, "-f", os.path.join(EXAMPLES, "call_summary.sql"))  # runs again safely
    assert wf.query("SELECT event_type, handler FROM voipbin_handlers") == \
        [("call_hangup", "public.summarize_call(public.voipbin_events)")]

    answered, unanswered, ringing = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    hangup = call(fake, "hangup", answered, tm_progressing="2026-02-21T10:05:12Z",
                  tm_hangup="2026-02-21T10:06:12.5Z", tm_update="2026-02-21T10:06:12.5Z",
                  hangup_by="remote", hangup_reason="normal")
    # a later copy of the same hangup (VoIPBIN touched the call again), and a stale one
    later = dict(hangup, tm_update="2026-02-21T10:06:13Z", hangup_by="local")
    stale = dict(hangup, tm_update="2026-02-21T10:06:12Z", hangup_reason="failed")
    older_format = dict(call(fake, "hangup", unanswered, direction="outgoing"),
                        tm_create="2022-04-11 06:10:54.788000", tm_update="2022-04-11 06:10:58.431000",
                        tm_progressing="9999-01-01 00:00:00.000000", tm_hangup="2022-04-11 06:10:58.431000",
                        hangup_by="local", hangup_reason="noanswer")
    before = wf.status()
    fake.publish("call_ringing", call(fake, "ringing", ringing))
    fake.publish("call_hangup", hangup)
    fake.publish("call_hangup", hangup, shape="wrapped")
    fake.publish("call_hangup", later)
    fake.publish("call_hangup", stale)
    fake.publish("call_hangup", older_format)
    wait_frames(wf, before, 12)
    assert stored(wf, answered) == 3

    rows = query(wf, "SELECT call_id::text, direction, source, destination, hangup_by, hangup_reason,"
                     " created_at, answered_at, ended_at, talk_time, event_id FROM call_summaries"
                     " ORDER BY created_at")
    assert rows == [
        {"call_id": unanswered, "direction": "outgoing", "source": "+15550001",
         "destination": "+15550002", "hangup_by": "local", "hangup_reason": "noanswer",
         "created_at": at(2022, 4, 11, 6, 10, 54, 788000), "answered_at": None,
         "ended_at": at(2022, 4, 11, 6, 10, 58, 431000), "talk_time": None,
         "event_id": event_id(wf, "call_hangup", unanswered)},
        {"call_id": answered, "direction": "incoming", "source": "+15550001",
         "destination": "+15550002", "hangup_by": "local", "hangup_reason": "normal",
         "created_at": at(2026, 2, 21, 10, 5, 10, 100000), "answered_at": at(2026, 2, 21, 10, 5, 12),
         "ended_at": at(2026, 2, 21, 10, 6, 12, 500000), "talk_time": timedelta(seconds=60.5),
         "event_id": wf.query_one("SELECT id FROM voipbin_events WHERE resource_id = %s"
                                  " AND data->>'tm_update' = %s", (answered, later["tm_update"]))[0]},
    ]


def test_example_transcripts_by_call(wf, fake, topic):
    subscribe(wf, fake, topic)
    cid, tid, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    lines = [line(fake, tid, "second thing said", "0001-01-01T00:00:09Z", direction="out"),
             line(fake, tid, "first thing said", "0001-01-01 00:00:02.250000")]
    before = wf.status()
    for l in lines:
        fake.publish("transcript_created", l)
    fake.publish("transcript_created", lines[0], shape="wrapped")
    fake.publish("call_hangup", call(fake, "hangup", cid))
    fake.publish("transcribe_created", session(fake, cid, tid))
    # another call's line, which a call_id filter leaves out
    other_tid = str(uuid.uuid4())
    fake.publish("transcribe_created", session(fake, other, other_tid))
    fake.publish("transcript_created", line(fake, other_tid, "elsewhere", "0001-01-01T00:00:01Z"))
    wait_frames(wf, before, 14)

    out = psql(wf, "-A", "-t", "-F", "|", "-v", "call_id=" + cid,
               "-f", os.path.join(EXAMPLES, "transcripts_by_call.sql")).stdout.split("\n")
    rows = [r.split("|") for r in out if r]
    assert rows == [
        [cid, "+15550001", "+15550002", "hangup", "00:00:02.25", "in", "first thing said"],
        [cid, "+15550001", "+15550002", "hangup", "00:00:09", "out", "second thing said"],
        [cid, "en-US", "00:00:02.25", "in", "first thing said"],
        [cid, "en-US", "00:00:09", "out", "second thing said"],
    ]
    everything = psql(wf, "-A", "-t", "-f", os.path.join(EXAMPLES, "transcripts_by_call.sql")).stdout
    assert "elsewhere" in everything
