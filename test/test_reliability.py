"""Nothing lost, nothing crashes: bad input, failing triggers, rejected topics,
restarts, a locked table, failover, retention, shutdown, dump and restore."""
import base64
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from helpers import call, count, point_at, reset_cluster, subscribe, transcript, try_query
from pgcluster import Cluster, Listener, wait_until


def rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def journal_bytes(directory):
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
               if f.endswith(".seg"))



def test_bad_frames_are_stored_or_dead_lettered(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    big = call(fake, "progressing", metadata={"blob": "x" * (2 * 1024 * 1024)})
    deep = '{"id": "11111111-1111-1111-1111-111111111111", "deep": ' + "[" * 10000 + "]" * 10000 + "}"
    fake.publish("call_ringing", call(fake, "ringing"))
    fake.send(text="not json at all")
    fake.send(text="[1, 2]")
    fake.send(text="17")
    fake.send(b64=base64.b64encode(b'{"id": "\xff\xfe"}').decode())       # invalid UTF-8 in a text frame
    fake.send(text='{"id": "22222222-2222-2222-2222-222222222222", "m": "a\\u0000b"}')
    fake.publish("call_progressing", big)
    fake.send(text=deep)
    fake.send(b64=base64.b64encode(b'{"binary": true}').decode(), binary=True)
    fake.send(fragments=['{"id": "33333333-3333-3333-3333-333333333333", "source": {}, ',
                         '"destination": {}, "status": "ringing", ',
                         '"tm_create": "2026-01-01T00:00:00Z"}'])
    fake.publish("call_hangup", call(fake, "hangup"))

    wait_until(lambda: count(vb) + count(vb, "voipbin_dead_letters") == 11, timeout=20,
               what="11 frames accounted for")
    types = [r[0] for r in vb.query("SELECT event_type FROM voipbin_events ORDER BY id")]
    assert types[0] == "call_ringing" and types[-1] == "call_hangup"
    assert "call_progressing" in types                      # the 2 MB event is stored whole
    big_row = vb.query_one("SELECT length(data->'metadata'->>'blob') FROM voipbin_events"
                           " WHERE event_type = 'call_progressing'")
    assert big_row[0] == 2 * 1024 * 1024
    assert "call_created" in types                          # the fragmented one
    dead = vb.query("SELECT raw, error FROM voipbin_dead_letters ORDER BY id")
    raws = [bytes(r[0]) for r in dead]
    assert raws[:5] == [b"not json at all", b"[1, 2]", b"17", b'{"id": "\xff\xfe"}',
                        b'{"id": "22222222-2222-2222-2222-222222222222", "m": "a\\u0000b"}']
    # nested 10,000 deep: jsonb takes it (or, past the stack limit, a dead letter)
    assert vb.query_one("SELECT count(*) FROM voipbin_events WHERE data ? 'deep'")[0] \
        + sum(1 for r in raws if r.startswith(b'{"id": "1111')) == 1
    assert b'{"binary": true}' in raws
    errors = {bytes(r[0])[:12]: r[1] for r in dead}
    assert "UTF-8" in errors[b'{"id": "\xff\xfe"}'[:12]]
    assert vb.worker_pid() == pid


def test_raising_trigger_dead_letters_only_its_event(vb, fake, topic):
    vb.execute("""
        CREATE FUNCTION refuse_busy() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.data->>'hangup_reason' = 'busy' THEN
            RAISE EXCEPTION 'busy calls are not welcome here';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_busy BEFORE INSERT ON voipbin_events
          FOR EACH ROW EXECUTE FUNCTION refuse_busy();""")
    try:
        subscribe(vb, fake, topic + "call:call_")
        batch = [{"event_type": "call_hangup", "data": call(fake, "hangup", hangup_reason=r)}
                 for r in ["normal", "normal", "busy", "normal"]]
        fake.publish(events=batch)
        wait_until(lambda: count(vb) == 3 and count(vb, "voipbin_dead_letters") == 1,
                   what="3 stored, 1 dead letter")
        err = vb.query_one("SELECT error, convert_from(raw, 'UTF8')::jsonb->>'hangup_reason'"
                           " FROM voipbin_dead_letters")
        assert err == ("busy calls are not welcome here", "busy")
    finally:
        vb.execute("DROP TRIGGER refuse_busy ON voipbin_events; DROP FUNCTION refuse_busy()")


def test_slow_trigger_loses_nothing(vb, fake, topic):
    vb.execute("""
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$;
        CREATE TRIGGER slow BEFORE INSERT ON voipbin_events FOR EACH ROW EXECUTE FUNCTION slow();""")
    try:
        subscribe(vb, fake, topic + "transcript:transcript_")
        fake.publish(events=[{"event_type": "transcript_created", "data": transcript(fake, "line %d" % i)}
                             for i in range(300)])
        wait_until(lambda: count(vb) == 300, timeout=30, what="300 events through a slow trigger")
    finally:
        vb.execute("DROP TRIGGER slow ON voipbin_events; DROP FUNCTION slow()")


def test_topic_the_server_drops_is_rejected(cluster, fake, secret_dir, topic):
    # an agent's JWT: voipbin_subscribe cannot tell another agent's id (an
    # access key's agent_id topics it refuses), VoIPBIN can
    point_at(cluster, fake, secret_dir, credential=fake.jwt)
    fake.wait_connections(1, timeout=15)
    cluster.wait_status(lambda s: s["state"] == "connected", what="state connected")
    try:
        topic_the_server_drops_is_rejected(cluster, fake, topic)
    finally:
        reset_cluster(cluster)


def topic_the_server_drops_is_rejected(vb, fake, topic):
    good = subscribe(vb, fake, topic + "call:call_")
    wait_until(lambda: vb.query_one("SELECT status FROM voipbin_subscriptions")[0] == "active",
               what="good topic active")
    # syntactically fine, but another agent's: the server drops the connection
    bad = "agent_id:%s:call:" % uuid.uuid4()
    vb.query_one("SELECT voipbin_subscribe(%s)", (bad,))
    wait_until(lambda: vb.query_one("SELECT status FROM voipbin_subscriptions WHERE topic = %s",
                                    (bad,))[0] == "rejected", timeout=30, what="rejected")
    err = vb.query_one("SELECT last_error FROM voipbin_subscriptions WHERE topic = %s", (bad,))[0]
    assert "dropped the connection" in err
    fake.wait_state(lambda s: s["connections"] and s["connections"][0]["topics"] == [good]
                    and time.time() - s["connections"][0]["connected_at"] > 2.5,
                    timeout=15, what="good topic live, bad one no longer sent")
    assert sum(1 for c in fake.state()["closed"] if c["close_reason"] == "invalid_topic") == 2
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: count(vb) == 1, what="events keep flowing")
    # subscribing it again gives it one more try
    vb.query_one("SELECT voipbin_subscribe(%s)", (bad,))
    wait_until(lambda: vb.query_one("SELECT status FROM voipbin_subscriptions WHERE topic = %s",
                                    (bad,))[0] == "rejected", timeout=30, what="rejected again")
    assert sum(1 for c in fake.state()["closed"] if c["close_reason"] == "invalid_topic") == 3


def test_topics_sent_together_find_the_culprit(vb, fake, topic):
    # a reconnect sends every topic at once; after a drop they go one at a time
    good1 = subscribe(vb, fake, topic + "call:call_")
    bad = "agent_id:%s:" % uuid.uuid4()
    vb.execute("INSERT INTO voipbin_subscriptions (topic) VALUES (%s)", (bad,))
    good2 = vb.query_one("SELECT voipbin_subscribe(%s)", (topic + "transcript:",))[0]
    wait_until(lambda: vb.query("SELECT topic, status FROM voipbin_subscriptions ORDER BY topic")
               == sorted([(good1, "active"), (bad, "rejected"), (good2, "active")]),
               timeout=40, what="culprit rejected, the others active")


def test_survives_sigkill(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    os.kill(pid, signal.SIGKILL)        # the postmaster restarts every backend
    wait_until(lambda: try_query(lambda: vb.worker_pid() not in (None, pid)), timeout=30,
               what="worker back after crash restart")
    fake.wait_state(lambda s: s["connections"] and s["connections"][-1]["topics"], timeout=20,
                    what="resubscribed")
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: try_query(lambda: count(vb) == 1), what="event stored")



def test_survives_pg_ctl_restart(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    vb.restart()
    fake.wait_state(lambda s: s["connections"] and s["connections"][-1]["topics"], timeout=20,
                    what="resubscribed after restart")
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: count(vb) == 1, what="event stored after restart")


def test_drop_and_create_extension_while_running(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    vb.execute("DROP EXTENSION voipbin")
    try:
        fake.wait_state(lambda s: s["connections"] and not s["connections"][0]["topics"],
                        what="unsubscribed when the extension went away")
    finally:
        vb.execute("CREATE EXTENSION voipbin")
    assert vb.worker_pid() == pid
    subscribe(vb, fake, topic + "call:call_")
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: count(vb) == 1, what="stored into the new tables")
    assert vb.worker_pid() == pid


def test_frames_wait_while_extension_is_absent(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    # the topic stays on the live connection until the worker re-reads the table,
    # so frames can arrive while the extension is gone
    vb.execute("BEGIN; DROP EXTENSION voipbin; CREATE EXTENSION voipbin;"
               " INSERT INTO voipbin_subscriptions (topic) VALUES (%s); COMMIT", (topic + "call:call_",))
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: count(vb) == 1, what="stored")
    assert vb.worker_pid() == pid


def test_drop_database_of_another_database(vb, fake, topic):
    vb.execute("CREATE DATABASE scratch", dbname="postgres")
    pid = vb.worker_pid()
    start = time.monotonic()
    vb.execute("DROP DATABASE scratch", dbname="postgres")
    assert time.monotonic() - start < 5
    assert vb.worker_pid() == pid
    subscribe(vb, fake, topic + "call:call_")
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: count(vb) == 1, what="still storing")


LOCK_SECONDS = float(os.environ.get("VOIPBIN_LOCK_SECONDS", "60"))


def test_locked_table_never_stops_reading(vb, fake, topic):
    """The table locked for a minute under a steady stream: nothing lost, the
    worker's memory within voipbin.buffer_limit, the journal emptied afterwards."""
    vb.set_conf(voipbin__buffer_limit="1MB")
    subscribe(vb, fake, topic + "transcript:transcript_")
    pid = vb.worker_pid()
    base_rss = rss_anon_kb(pid)
    spool = os.path.join(vb.data, "voipbin_journal")

    locker = vb.connect(autocommit=False)
    locker.cursor().execute("LOCK TABLE voipbin_events IN ACCESS EXCLUSIVE MODE")
    try:
        sent, peak_rss = _stream_while_locked(vb, fake, pid, base_rss, spool)
    finally:
        locker.rollback()
        locker.close()

    wait_until(lambda: count(vb) == sent, timeout=120, what="all %d events stored" % sent)

    vb.wait_status(lambda s: s["buffered_bytes"] == 0, what="nothing buffered")
    # stored segments are recycled: what is left is a sixteenth of one at most
    assert journal_bytes(spool) <= 1024 * 1024
    # arrival order kept: the ids follow the sequence numbers in the messages
    nums = [int(r[0].split()[0]) for r in vb.query(
        "SELECT data->>'message' FROM voipbin_events ORDER BY id")]
    assert nums == list(range(sent))
    growth_mb = (peak_rss - base_rss) / 1024
    assert growth_mb < 1 + 16, "worker grew by %.1f MB for %.1f MB of events" % (
        growth_mb, sent * 1.0 / 1024)
    vb.set_conf(voipbin__buffer_limit=None)


def _stream_while_locked(vb, fake, pid, base_rss, spool):
    sent = 0
    peak_rss = base_rss
    deadline = time.monotonic() + LOCK_SECONDS
    pad = "y" * 900
    while time.monotonic() < deadline:
        batch = [{"event_type": "transcript_created", "data": transcript(fake, "%d %s" % (sent + i, pad))}
                 for i in range(50)]
        r = fake.publish(events=batch, flush=True)
        assert r["dropped"] == 0, "the worker stopped reading: VoIPBIN would drop events"
        sent += 50
        peak_rss = max(peak_rss, rss_anon_kb(pid))
        time.sleep(0.05)    # a steady stream of several hundred events a second
    assert journal_bytes(spool) > 1024 * 1024, "past the limit, events wait in the journal's files"
    vb.wait_status(lambda s: s["buffered_bytes"] >= sent * 900, what="everything buffered")
    return sent, peak_rss


def test_spool_replayed_after_worker_restart(vb, fake, topic):
    vb.set_conf(voipbin__buffer_limit="1MB")
    subscribe(vb, fake, topic + "transcript:transcript_")
    pid = vb.worker_pid()
    locker = vb.connect(autocommit=False)
    locker.cursor().execute("LOCK TABLE voipbin_events IN ACCESS EXCLUSIVE MODE")
    try:
        pad = "z" * 900
        for k in range(10):
            fake.publish(events=[{"event_type": "transcript_created",
                                  "data": transcript(fake, "%d %s" % (k * 200 + i, pad))} for i in range(200)],
                         flush=True)
        vb.wait_status(lambda s: s["buffered_bytes"] >= 2000 * 900, what="all buffered")
        vb.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: vb.worker_pid() not in (None, pid), timeout=15, what="new worker")
    finally:
        locker.rollback()
        locker.close()
    wait_until(lambda: count(vb) == 2000, timeout=60, what="spooled events replayed")
    vb.set_conf(voipbin__buffer_limit=None)


def test_retention_deletes_old_rows(vb):
    vb.execute("""
        INSERT INTO voipbin_events (received_at, event_type, data)
        SELECT now() - interval '2 hours', 'call_updated', jsonb_build_object('n', g)
        FROM generate_series(1, 2500) g;
        INSERT INTO voipbin_events (event_type, data) VALUES ('call_updated', '{"fresh": true}');
        INSERT INTO voipbin_dead_letters (received_at, raw, error)
        VALUES (now() - interval '2 hours', 'old', 'x'), (now(), 'new', 'y');""")
    vb.set_conf(voipbin__event_retention="1h")
    wait_until(lambda: count(vb) == 1 and count(vb, "voipbin_dead_letters") == 1, timeout=20,
               what="old rows pruned")
    assert vb.query_one("SELECT data FROM voipbin_events")[0] == {"fresh": True}


def test_retention_zero_keeps_everything(vb):
    vb.execute("INSERT INTO voipbin_events (received_at, event_type, data)"
               " VALUES (now() - interval '3650 days', 'call_updated', '{}')")
    vb.set_conf(voipbin__event_retention="0")
    # a reload prunes at once when retention is on; give the worker a round trip
    vb.execute("SELECT voipbin_reconnect()")
    vb.wait_status(lambda s: s["state"] == "connected")
    assert count(vb) == 1


@pytest.mark.parametrize("state", ["connected", "connecting", "backoff"])
def test_fast_shutdown_within_a_second(cluster, fake, secret_dir, state):
    point_at(cluster, fake, secret_dir)
    if state == "connecting":
        fake.config(ws_hang=True)
        cluster.execute("SELECT voipbin_reconnect()")
    elif state == "backoff":
        cluster.set_conf(voipbin__reconnect_min_delay="30s", voipbin__reconnect_max_delay="60s")
        fake.config(ws_reject_status=500)
        cluster.execute("SELECT voipbin_reconnect()")
    cluster.wait_status(lambda s: s["state"] == state, what=state)
    start = time.monotonic()
    cluster.stop("fast")
    took = time.monotonic() - start
    cluster.start()
    if state == "backoff":
        cluster.set_conf(voipbin__reconnect_min_delay=None, voipbin__reconnect_max_delay=None)
    fake.reset()
    reset_cluster(cluster)
    assert took < 1.0, "fast shutdown took %.2f s in state %s" % (took, state)


def test_handshake_never_answered_gives_up_after_10s(cluster, fake, secret_dir):
    fake.config(ws_hang=True)
    point_at(cluster, fake, secret_dir)
    cluster.wait_status(lambda s: s["state"] == "connecting", what="connecting")
    # backoff lasts 100-150 ms before the next attempt: the failure count is what stays
    s = cluster.wait_status(lambda s: s["failures"] >= 1, timeout=15, what="gave up")
    assert s["last_error"] == "the WebSocket handshake was not answered within 10 s", s
    fake.config(ws_hang=False)
    cluster.wait_status(lambda s: s["state"] == "connected", timeout=15, what="connected")
    reset_cluster(cluster)


def test_backoff_grows_between_failures(cluster, fake, secret_dir):
    cluster.set_conf(voipbin__reconnect_min_delay="200ms", voipbin__reconnect_max_delay="2s")
    fake.config(ws_reject_status=503)
    point_at(cluster, fake, secret_dir)
    fake.wait_state(lambda s: len(s["handshakes"]) >= 5, timeout=20, what="five attempts")
    at = [h["at"] for h in fake.state()["handshakes"]]
    gaps = [b - a for a, b in zip(at, at[1:])]
    assert gaps[0] >= 0.15 and gaps[-1] > gaps[0] * 2 and max(gaps) <= 2.5, gaps
    # between two attempts, or in the next one's handshake
    s = cluster.status()
    assert s["state"] in ("backoff", "connecting") and s["failures"] >= 5, s
    fake.reset()
    cluster.set_conf(voipbin__reconnect_min_delay=None, voipbin__reconnect_max_delay=None)
    reset_cluster(cluster)


def test_notify_payload_truncated_past_7900_bytes(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    listener = Listener(vb, "call_ringing")
    data = call(fake, "ringing", metadata={"note": "n" * 8000})
    fake.publish("call_ringing", data)
    _, payload, _ = listener.wait_for(1)[0]
    p = json.loads(payload)
    assert p["truncated"] is True and "data" not in p and p["resource_id"] == data["id"]
    assert vb.query_one("SELECT data FROM voipbin_events WHERE id = %s", (p["id"],))[0] == data
    listener.close()


def test_pg_dump_and_restore_keep_everything(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    for _ in range(3):
        fake.publish("call_ringing", call(fake))
    wait_until(lambda: count(vb) == 3, what="three events")
    vb.execute("INSERT INTO voipbin_dead_letters (raw, error) VALUES ('\\xdeadbeef', 'x')")
    max_id = vb.query_one("SELECT max(id) FROM voipbin_events")[0]
    dump = os.path.join(vb.dir, "dump.sql")
    vb.run_as_postgres("pg_dump", "-h", vb.sock, "-p", str(vb.port), "-f", dump, vb.dbname)
    vb.execute("CREATE DATABASE restored", dbname="postgres")
    try:
        vb.run_as_postgres("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", vb.sock,
                           "-p", str(vb.port), "-f", dump, "restored")
        assert vb.query("SELECT id, event_type, data FROM voipbin_events ORDER BY id", dbname="restored") \
            == vb.query("SELECT id, event_type, data FROM voipbin_events ORDER BY id")
        assert vb.query("SELECT topic FROM voipbin_subscriptions", dbname="restored") == [(topic + "call:call_",)]
        assert vb.query("SELECT raw FROM voipbin_dead_letters", dbname="restored")[0][0].tobytes() == b"\xde\xad\xbe\xef"
        new_id = vb.query("INSERT INTO voipbin_events (event_type, data) VALUES ('x', '{}') RETURNING id",
                          dbname="restored")[0][0]
        assert new_id > max_id, "ids continue after the restore"
    finally:
        vb.execute("DROP DATABASE restored", dbname="postgres")


def test_hot_standby_waits_then_takes_over_after_promotion(vb, fake, topic, secret_dir):
    subscribe(vb, fake, topic + "call:call_")
    replica = vb.make_replica()
    try:
        replica.start()
        replica.wait_status(lambda s: s["state"] == "standby", what="standby")
        assert len(fake.state()["connections"]) == 1, "the standby opens no connection"
        vb.stop("fast")
        replica.execute("SELECT pg_promote()")
        fake.wait_state(lambda s: s["connections"] and s["connections"][-1]["topics"] == [topic + "call:call_"],
                        timeout=30, what="the promoted server subscribed")
        replica.wait_status(lambda s: s["state"] == "connected")
        fake.publish("call_ringing", call(fake))
        wait_until(lambda: count(replica) == 1, what="stored on the promoted server")
    finally:
        replica.destroy()
        vb.start()


def test_worker_writes_reach_the_statistics(vb, fake, topic):
    subscribe(vb, fake, topic + "transcript:transcript_")
    # the partitions of voipbin_events hold the rows and their counters
    inserts = ("SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables"
               " WHERE relid IN (SELECT relid FROM pg_partition_tree('voipbin_events'))")
    before = vb.query_one(inserts)[0]
    fake.publish(events=[{"event_type": "transcript_created", "data": transcript(fake)} for _ in range(20)])
    wait_until(lambda: count(vb) == 20, what="stored")
    # autovacuum decides from these counters; the worker flushes them even when it goes idle
    wait_until(lambda: vb.query_one(inserts)[0] >= before + 20,
               timeout=15, what="inserts counted in pg_stat_user_tables")
