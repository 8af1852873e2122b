"""The worker end to end: a real cluster, the fake VoIPBIN over TLS, a LISTEN client."""
import json
import os
import signal
import time
import uuid

import pytest

from helpers import call, events, point_at, reset_cluster, subscribe, transcript, write_token_file
from journal_files import unstored
from pgcluster import Cluster, Listener, wait_until






def test_connects_with_access_key_in_query(vb, fake):
    conn = fake.state()["connections"][0]
    assert conn["auth"] == "accesskey"
    assert conn["auth_source"] == "query:accesskey"
    s = vb.status()
    assert s["state"] == "connected" and s["connected_since"] is not None
    assert s["worker_pid"] == vb.worker_pid()
    row = vb.query_one("SELECT backend_type, query FROM pg_stat_activity WHERE backend_type = 'voipbin'")
    assert row[0] == "voipbin" and "connected" in row[1]


def test_jwt_travels_as_bearer(cluster, fake, secret_dir):
    point_at(cluster, fake, secret_dir, credential=fake.jwt)
    fake.wait_connections(1, timeout=15)
    conn = fake.state()["connections"][0]
    assert (conn["auth"], conn["auth_source"]) == ("jwt", "header:bearer")
    reset_cluster(cluster)


def test_events_stored_and_notified(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    listener = Listener(vb, "call_ringing", "voipbin_events")
    data = call(fake, "ringing")
    fake.publish("call_ringing", data)
    got = listener.wait_for(2)
    channels = sorted(ch for ch, _, _ in got)
    assert channels == ["call_ringing", "voipbin_events"]
    payload = json.loads(got[0][1])
    row = vb.query_one("SELECT id, event_type, resource, resource_id::text, customer_id::text, data,"
                       " source, received_at <= now() FROM voipbin_events")
    assert row[1:5] == ("call_ringing", "call", data["id"], fake.customer_id)
    assert row[5] == data and row[6] == "websocket" and row[7]
    assert payload == {"id": row[0], "event_type": "call_ringing", "resource_id": data["id"],
                       "data": data}
    s = vb.status()
    assert s["frames_received"] >= 1 and s["events_stored"] >= 1 and s["last_frame_at"]
    listener.close()


def test_three_shapes_give_the_same_row(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    for i, shape in enumerate(["raw", "wrapped", "event_type"]):
        fake.publish("call_hangup", call(fake, "hangup", call_id="00000000-0000-4000-8000-00000000000%d" % i),
                     shape=shape)
    wait_until(lambda: len(events(vb)) == 3, what="three events")
    rows = events(vb)
    assert {r[0] for r in rows} == {"call_hangup"}
    assert [r[2][-1] for r in rows] == ["0", "1", "2"]
    assert all(r[4]["status"] == "hangup" and "type" in r[4] for r in rows)


def shaped_frames(fake, ids):
    """One call_hangup per shape as exact text, none of it jsonb's canonical
    form (spacing, key order, an escape, 1.50, "data" keys nested inside),
    and the bytes the payload's "data" must be: a slice of the frame."""
    def body(rid):
        return ('{ "id":"%s","customer_id" : "%s", "status":"hangup",'
                ' "source":{"type":"tel","target":"+15550001"},"destination":{"type":"tel","target":"+15550002"},'
                ' "tm_create":"2026-02-21T10:05:10.1Z","tm_update":"2026-02-21T10:05:11.2Z",'
                ' "note":"caf\\u00e9 \\"q\\"", "n": 1.50, "data": {"data": [ ]} }' % (rid, fake.customer_id))
    raw, wrapped, quick = body(ids[0]), body(ids[1]), body(ids[2])
    return [
        ("raw", raw, raw),
        ("wrapped", '{"type" :"call_hangup",\n  "data":  %s  }' % wrapped, wrapped),
        ("quick-start", '{"event_type":"call_hangup","data":%s ,"extra":[1,{"data":0}],"topic":"t"}' % quick,
         quick),
    ]


def payload_text(row_id, rid, data_text):
    return '{"id": %d, "event_type": "call_hangup", "resource_id": "%s", "data": %s}' % (row_id, rid, data_text)


def test_notify_payload_is_the_frames_own_data_text_in_every_shape(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    listener = Listener(vb, "call_hangup", "voipbin_events")
    ids = [str(uuid.uuid4()) for _ in range(6)]
    # three frames at once (one multi-row statement), then each alone (the single-row plan)
    batch = shaped_frames(fake, ids[:3])
    fake.publish(events=[{"event_type": "call_hangup", "data": json.loads(text), "frame": frame}
                         for _, frame, text in batch])
    singles = shaped_frames(fake, ids[3:])
    for _, frame, text in singles:
        fake.publish("call_hangup", json.loads(text), frame=frame)
    got = listener.wait_for(12)
    rows = dict(vb.query("SELECT resource_id::text, id FROM voipbin_events"))
    assert len(rows) == 6
    for rid, (shape, _, text) in zip(ids, batch + singles):
        want = payload_text(rows[rid], rid, text)
        heard = sorted(ch for ch, p, _ in got if p == want)
        assert heard == ["call_hangup", "voipbin_events"], (shape, want, [p for _, p, _ in got])
        assert json.loads(want)["data"] == vb.query_one(
            "SELECT data FROM voipbin_events WHERE id = %s", (rows[rid],))[0]
    listener.close()


def test_notify_payload_id_carries_no_data_in_any_shape(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    listener = Listener(vb, "voipbin_events")
    vb.set_conf(voipbin__notify_payload="id")
    try:
        def heard(frames):
            rids = {json.loads(text)["id"] for _, _, text in frames}
            for _, frame, text in frames:
                fake.publish("call_hangup", json.loads(text), frame=frame)

            def three():
                ps = [json.loads(p) for _, p, _ in listener.poll()]
                ps = [p for p in ps if p["resource_id"] in rids]
                return ps if len(ps) == 3 else None
            return wait_until(three, what="three notifications")

        def fresh():
            return shaped_frames(fake, [str(uuid.uuid4()) for _ in range(3)])
        # a reload reaches the worker asynchronously: poll until it has
        wait_until(lambda: all("data" not in p for p in heard(fresh())), timeout=15,
                   what="notify_payload = id in effect")
        payloads = heard(fresh())
        for p in payloads:
            assert set(p) == {"id", "event_type", "resource_id"}, p
            assert p["event_type"] == "call_hangup"
    finally:
        vb.set_conf(voipbin__notify_payload=None)
        listener.close()


def one_batch(cluster, fake, frames):
    """The frames [(event_type, data)] stored by one statement: published while
    voipbin_events is locked, so the worker holds them all when it can store."""
    locker = cluster.connect(autocommit=False)
    try:
        locker.cursor().execute("LOCK TABLE voipbin_events IN ACCESS EXCLUSIVE MODE")
        fake.publish(events=[{"event_type": et, "data": d} for et, d in frames])
        wait_until(lambda: len(unstored(cluster)) >= len(frames),
                   what="%d frames in the journal" % len(frames))
    finally:
        locker.rollback()
        locker.close()


def heard_rows(listener, cluster, n):
    """The n payloads on voipbin_events, each with the row its id names."""
    got = [json.loads(p) for ch, p, _ in listener.wait_for(n, channel="voipbin_events")
           if ch == "voipbin_events"]
    assert len(got) == n, got
    rows = dict((r[0], r[1:]) for r in cluster.query(
        "SELECT id, event_type, resource_id::text, data FROM voipbin_events"))
    return [(p, rows.get(p["id"])) for p in got]


def test_a_batch_with_copies_notifies_each_stored_row_by_its_own_id(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    first = call(fake, "ringing")
    fake.publish("call_ringing", first)
    vb.wait_status(lambda s: s["events_stored"] >= 1, what="the first event stored")
    listener = Listener(vb, "voipbin_events")
    calls = [call(fake, "ringing") for _ in range(4)]
    # copies within the batch, and of the row stored before it
    frames = [("call_ringing", calls[0]), ("call_ringing", calls[1]), ("call_ringing", calls[0]),
              ("call_ringing", first), ("call_ringing", calls[2]), ("call_ringing", calls[1]),
              ("call_ringing", calls[3])]
    before = vb.status()
    one_batch(vb, fake, frames)
    heard = heard_rows(listener, vb, 4)
    assert sorted(p["resource_id"] for p, _ in heard) == sorted(c["id"] for c in calls)
    for p, row in heard:
        assert row is not None, p
        assert (p["event_type"], p["resource_id"], p["data"]) == row
    vb.wait_status(lambda s: s["events_stored"] - before["events_stored"] == 4
                   and s["duplicates"] - before["duplicates"] == 3, what="4 stored, 3 copies")
    # nothing more comes: a copy is never notified.  A marker event's payload
    # comes after anything of the batch's (notifications go out in commit order)
    marker = call(fake, "ringing")
    fake.publish("call_ringing", marker)
    got = listener.wait_for(5, channel="voipbin_events")
    assert [json.loads(p)["resource_id"] for ch, p, _ in got if ch == "voipbin_events"][4] == marker["id"]
    assert len([1 for ch, _, _ in listener.poll() if ch == "voipbin_events"]) == 5
    listener.close()


def test_a_before_trigger_s_changes_reach_the_payload(vb, fake, topic):
    """A BEFORE INSERT trigger, here on the partition the rows go to only,
    changes the rows: the payloads carry the rows as stored, the single
    event's and the batch's alike; once it is dropped, the frames' own text."""
    subscribe(vb, fake, topic + "call:call_")
    part = vb.query_one("SELECT voipbin_partition_for(now(), current_setting('voipbin.partition_interval')::interval)::text")[0]
    vb.execute("""CREATE FUNCTION mark() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN NEW.data := NEW.data || '{"marked": true}'; NEW.id := NEW.id + 1000000;
                  RETURN NEW; END $$""")
    vb.execute("CREATE TRIGGER mark BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION mark()" % part)
    listener = Listener(vb, "voipbin_events")
    try:
        single = call(fake, "ringing")
        fake.publish("call_ringing", single)
        (p, row), = heard_rows(listener, vb, 1)
        assert row is not None and p["data"] == row[2] == dict(single, marked=True)
        listener.received.clear()
        batch = [call(fake, "ringing") for _ in range(3)]
        one_batch(vb, fake, [("call_ringing", c) for c in batch])
        heard = heard_rows(listener, vb, 3)
        assert sorted(p["resource_id"] for p, _ in heard) == sorted(c["id"] for c in batch)
        for p, row in heard:
            assert row is not None and p["data"] == row[2] and p["data"]["marked"] is True
    finally:
        vb.execute("DROP TRIGGER mark ON %s" % part)
        vb.execute("DROP FUNCTION mark()")
    listener.received.clear()
    batch = [call(fake, "ringing") for _ in range(3)]
    one_batch(vb, fake, [("call_ringing", c) for c in batch])
    heard = heard_rows(listener, vb, 3)
    for p, row in heard:
        assert row is not None and p["data"] == row[2] and "marked" not in p["data"]
    listener.close()


def test_duplicates_dropped_and_counted(vb, fake, topic):
    # a 2-part prefix matches both topics VoIPBIN publishes: every event arrives twice
    subscribe(vb, fake, "customer_id:%s" % fake.customer_id)
    before = vb.status()
    t = transcript(fake)
    fake.publish("transcript_created", t)
    fake.publish("transcript_created", t, shape="wrapped")
    vb.wait_status(lambda s: s["frames_received"] - before["frames_received"] >= 4,
                   what="four frames")
    vb.wait_status(lambda s: s["events_stored"] - before["events_stored"] == 1
                   and s["duplicates"] - before["duplicates"] == 3, what="one stored, three duplicates")
    rows = events(vb)
    assert len(rows) == 1 and rows[0][0] == "transcript_created" and rows[0][4] == t


def test_live_subscribe_and_unsubscribe(vb, fake, topic):
    t1 = subscribe(vb, fake, topic + "call:call_")
    t2 = subscribe(vb, fake, topic + "transcript:")
    assert fake.state()["connections"][0]["topics"] == [t1, t2]
    assert vb.query_one("SELECT voipbin_unsubscribe(%s)", (t1,))[0] is True
    fake.wait_state(lambda s: s["connections"][0]["topics"] == [t2], what="unsubscribed")
    fake.publish("call_ringing", call(fake))
    fake.publish("transcript_created", transcript(fake))
    wait_until(lambda: len(events(vb)) == 1, what="transcript stored")
    # one frame per topic, so the culprit of a drop is known
    frames = [json.loads(f) for f in fake.state()["connections"][0]["frames_from_client"]]
    assert frames == [{"type": "subscribe", "topics": [t1]}, {"type": "subscribe", "topics": [t2]},
                      {"type": "unsubscribe", "topics": [t1]}]
    assert [r[0] for r in events(vb)] == ["transcript_created"]


def test_subscribe_reaches_server_within_100ms_of_commit(vb, fake, topic):
    delays = []
    for i in range(5):
        t = topic + "call:%d" % i
        conn = vb.connect()
        with conn.cursor() as cur:
            cur.execute("SELECT voipbin_subscribe(%s)", (t,))
        start = time.monotonic()
        fake.wait_state(lambda s: t in s["connections"][0]["topics"], interval=0.002,
                        what="topic live")
        delays.append(time.monotonic() - start)
        conn.close()
    delays.sort()
    assert delays[len(delays) // 2] < 0.1, delays


def test_topic_becomes_active_after_two_seconds(vb, fake, topic):
    t = subscribe(vb, fake, topic + "call:")
    assert vb.query_one("SELECT status FROM voipbin_subscriptions WHERE topic = %s", (t,))[0] == "pending"
    wait_until(lambda: vb.query_one("SELECT status FROM voipbin_subscriptions WHERE topic = %s",
                                    (t,))[0] == "active", timeout=5, what="active")


def test_reconnects_and_resubscribes_after_drop(vb, fake, topic):
    t1 = subscribe(vb, fake, topic + "call:call_")
    t2 = subscribe(vb, fake, topic + "transcript:")
    before = vb.status()["reconnects"]
    fake.drop()
    fake.wait_state(lambda s: s["connections_total"] >= 2 and s["connections"]
                    and sorted(s["connections"][0]["topics"]) == sorted([t1, t2]),
                    timeout=10, what="reconnected and resubscribed")
    vb.wait_status(lambda s: s["state"] == "connected" and s["reconnects"] == before + 1)
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: len(events(vb)) == 1, what="event after reconnect")


def test_frozen_peer_detected(vb, fake, topic):
    # idle_timeout is 3 s here: the worker pings, gets no pong, and hangs up
    subscribe(vb, fake, topic + "call:call_")
    fake.freeze(True)
    vb.wait_status(lambda s: s["state"] != "connected", timeout=10, what="dead connection noticed")
    assert "idle" in (vb.status()["last_error"] or "")
    fake.freeze(False)
    fake.wait_state(lambda s: s["connections_total"] >= 2 and s["connections"], timeout=10,
                    what="reconnected")
    vb.wait_status(lambda s: s["state"] == "connected")


def test_unauthorized_then_fixed_by_reload(cluster, fake, secret_dir):
    point_at(cluster, fake, secret_dir, credential="vb_wrongwrongwrongwrongwrongwrongwr")
    s = cluster.wait_status(lambda s: s["state"] == "unauthorized", what="unauthorized")
    assert "401" in s["last_error"]
    assert "vb_wrong" not in s["last_error"]
    # a new credential in the file takes effect on reload
    write_token_file(secret_dir, fake.accesskey)
    cluster.execute("SELECT pg_reload_conf()")
    cluster.wait_status(lambda s: s["state"] == "connected", what="connected after reload")
    reset_cluster(cluster)


def test_token_setting_works_too(cluster, fake):
    reset_cluster(cluster)
    cluster.set_conf(voipbin__api_url=fake.api_url, voipbin__ca_file=fake.ca_file,
                     voipbin__token=fake.accesskey)
    fake.wait_connections(1, timeout=15)
    reset_cluster(cluster)


def test_unknown_ca_refused(cluster, fake, certs, secret_dir):
    point_at(cluster, fake, secret_dir, ca_file=certs["other_ca"])
    s = cluster.wait_status(lambda s: s["state"] == "backoff" and s["last_error"], what="TLS refusal")
    assert fake.state()["connections_total"] == 0
    reset_cluster(cluster)


def test_no_credential_is_disabled(cluster):
    reset_cluster(cluster)
    s = cluster.wait_status(lambda s: s["state"] == "disabled", what="disabled")
    assert "credential" in s["last_error"]


def test_garbage_goes_to_dead_letters(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    fake.publish("call_ringing", call(fake))
    fake.send(text="this is not json")
    fake.send(text="[1, 2, 3]")
    fake.send(b64="3q2+7w==", binary=True)
    fake.send(fragments=['{"id": "11111111-1111-1111-1111-111111111111", ', '"source": {}, "destination": {}, ',
                         '"status": "ringing", "tm_create": "2026-01-01T00:00:00Z"}'])
    fake.publish("call_hangup", call(fake, "hangup"))
    wait_until(lambda: len(events(vb)) == 3, what="valid events stored")
    dead = vb.query("SELECT raw, error FROM voipbin_dead_letters ORDER BY id")
    assert [bytes(r[0]) for r in dead] == [b"this is not json", b"[1, 2, 3]", b"\xde\xad\xbe\xef"]
    assert all(r[1] for r in dead)
    assert [r[0] for r in events(vb)] == ["call_ringing", "call_created", "call_hangup"]
    assert vb.worker_pid() == pid
    assert vb.status()["dead_letters"] >= 3


def test_worker_restarted_after_terminate(vb, fake, topic):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    vb.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: vb.worker_pid() not in (None, pid), timeout=15, what="new worker")
    fake.wait_state(lambda s: len(s["connections"]) == 1 and s["connections"][0]["topics"],
                    timeout=15, what="resubscribed by the new worker")
    fake.publish("call_ringing", call(fake))
    wait_until(lambda: len(events(vb)) == 1, what="event stored by the new worker")


def test_refuses_to_load_without_shared_preload_libraries():
    import psycopg2
    c = Cluster({"shared_preload_libraries": "''"})
    try:
        c.start()
        with pytest.raises(psycopg2.Error) as e:
            c.execute("CREATE EXTENSION voipbin")
        assert e.value.pgcode == "55000"
        assert "shared_preload_libraries" in e.value.pgerror
        assert "HINT" in e.value.pgerror
    finally:
        c.destroy()
