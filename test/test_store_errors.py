"""Errors while storing: errors of the moment are retried until they pass (or
until voipbin.store_retry_timeout), errors of the data dead-letter exactly the
frames at fault, found by bisecting at the cost of a few dozen statements."""
import json
import re
import time
import uuid

import psycopg2
import psycopg2.errors
import pytest

from pgcluster import Listener, wait_until
from helpers import call, count, subscribe



@pytest.fixture
def fault(vb):
    """A statement trigger on voipbin_events raising whatever SQLSTATE store_fault holds."""
    vb.execute("""
        CREATE TABLE store_fault (code text, sleep_s float8);
        INSERT INTO store_fault VALUES (NULL, NULL);
        CREATE FUNCTION store_fault() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE f store_fault;
        BEGIN
          SELECT * INTO f FROM store_fault;
          IF f.sleep_s IS NOT NULL THEN PERFORM pg_sleep(f.sleep_s); END IF;
          IF f.code IS NOT NULL THEN
            RAISE EXCEPTION 'injected fault %', f.code USING ERRCODE = f.code;
          END IF;
          RETURN NULL;
        END $$;
        CREATE TRIGGER store_fault BEFORE INSERT ON voipbin_events
          FOR EACH STATEMENT EXECUTE FUNCTION store_fault();""")

    def set_fault(code=None, sleep_s=None):
        vb.execute("UPDATE store_fault SET code = %s, sleep_s = %s", (code, sleep_s))
    yield set_fault
    vb.execute("DROP TRIGGER store_fault ON voipbin_events; DROP FUNCTION store_fault();"
               " DROP TABLE store_fault")
    vb.set_conf(voipbin__store_retry_timeout=None)


def publish_calls(fake, n, **extra):
    fake.publish(events=[{"event_type": "call_hangup", "data": call(fake, "hangup", **extra)}
                         for _ in range(n)])


def test_errors_of_the_moment_are_retried_until_they_pass(vb, fake, topic, fault):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    # the counter is the worker's since it started: earlier tests may have made some
    dead_before = vb.status()["dead_letters"]
    published = 0
    # lock_not_available, deadlock, serialization failure, disk full, out of memory
    for code in ["55P03", "40P01", "40001", "53100", "53200"]:
        fault(code)
        publish_calls(fake, 8)
        published += 8
        s = vb.wait_status(lambda s: s["state"] == "retrying" and code in (s["last_error"] or ""),
                           what="state retrying with %s" % code)
        assert "injected fault %s" % code in s["last_error"]
        assert count(vb, "voipbin_dead_letters") == 0
    assert count(vb) == 0
    fault(None)
    wait_until(lambda: count(vb) == published, timeout=20, what="%d events stored" % published)
    s = vb.wait_status(lambda s: s["state"] == "connected", what="state connected again")
    assert s["last_error"] is None
    assert count(vb, "voipbin_dead_letters") == 0
    assert s["dead_letters"] == dead_before
    assert vb.worker_pid() == pid
    # in arrival order, and from the WebSocket
    assert vb.query_one("SELECT count(DISTINCT source), min(source) FROM voipbin_events") == (1, "websocket")
    ids = [r[0] for r in vb.query("SELECT id FROM voipbin_events ORDER BY received_at, id")]
    assert ids == sorted(ids)


def test_cancel_of_the_worker_mid_batch_is_retried(vb, fake, topic, fault):
    subscribe(vb, fake, topic + "call:call_")
    pid = vb.worker_pid()
    fault(sleep_s=60)
    publish_calls(fake, 5)
    wait_until(lambda: vb.query_one("SELECT count(*) FROM pg_stat_activity"
                                    " WHERE backend_type = 'voipbin' AND wait_event = 'PgSleep'")[0] == 1,
               what="the worker inside a batch")
    fault(None)
    assert vb.query_one("SELECT pg_cancel_backend(%s)", (pid,))[0]
    wait_until(lambda: count(vb) == 5, timeout=20, what="5 events stored after the cancel")
    assert count(vb, "voipbin_dead_letters") == 0
    assert vb.worker_pid() == pid
    assert "SQLSTATE 57014" in vb.read_log()


def test_retry_timeout_makes_dead_letters_with_the_last_error(vb, fake, topic, fault):
    subscribe(vb, fake, topic + "call:call_")
    vb.set_conf(voipbin__store_retry_timeout="1500ms")
    fault("55P03")
    started = time.monotonic()
    publish_calls(fake, 3)
    vb.wait_status(lambda s: s["state"] == "retrying", what="state retrying")
    fault("40P01")
    wait_until(lambda: count(vb, "voipbin_dead_letters") == 3, timeout=20,
               what="3 dead letters after the timeout")
    assert time.monotonic() - started >= 1.5
    assert count(vb) == 0
    rows = vb.query("SELECT error, source, convert_from(raw, 'UTF8')::jsonb->>'status'"
                    " FROM voipbin_dead_letters ORDER BY id")
    assert rows == [("injected fault 40P01", "websocket", "hangup")] * 3
    s = vb.wait_status(lambda s: s["state"] == "connected", what="no longer retrying")
    assert re.search(r"(1 frame became a dead letter|\d+ frames became dead letters)", s["last_error"]) and "40P01" in s["last_error"]
    assert s["dead_letters"] >= 3
    # the database works again: what comes next is stored
    fault(None)
    publish_calls(fake, 2)
    wait_until(lambda: count(vb) == 2, what="later events stored")


def test_errors_of_the_data_dead_letter_only_their_frames(vb, fake, topic):
    vb.execute("""
        CREATE TABLE handled (call_id text);
        CREATE FUNCTION on_hangup(e voipbin_events) RETURNS void
          LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
          IF e.data->>'hangup_reason' = 'busy' THEN
            RAISE EXCEPTION 'busy calls are refused by the handler';
          END IF;
          INSERT INTO public.handled VALUES (e.data->>'id');
        END $$;
        SELECT voipbin_on('call_hangup', 'on_hangup(voipbin_events)');
        CREATE FUNCTION check_n() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM (NEW.data->>'n')::int; RETURN NEW; END $$;
        CREATE TRIGGER check_n BEFORE INSERT ON voipbin_events
          FOR EACH ROW EXECUTE FUNCTION check_n();""")
    try:
        subscribe(vb, fake, topic + "call:call_")
        batch = []
        for i in range(40):
            reason = "busy" if i == 7 else "normal"
            n = "seventeen" if i == 23 else str(i)
            batch.append({"event_type": "call_hangup",
                          "data": call(fake, "hangup", hangup_reason=reason, n=n)})
        fake.publish(events=batch)
        wait_until(lambda: count(vb) == 38 and count(vb, "voipbin_dead_letters") == 2,
                   timeout=20, what="38 stored, 2 dead letters")
        dead = vb.query("SELECT error, convert_from(raw, 'UTF8')::jsonb->>'n'"
                        " FROM voipbin_dead_letters ORDER BY id")
        assert dead[0] == ("busy calls are refused by the handler", "7")
        assert dead[1][1] == "seventeen" and "invalid input syntax for type integer" in dead[1][0]
        stored = [r[0] for r in vb.query("SELECT data->>'n' FROM voipbin_events ORDER BY id")]
        assert stored == [str(i) for i in range(40) if i not in (7, 23)]
        # the handler ran once for each stored event: the probes left nothing behind
        assert vb.query_one("SELECT count(*), count(DISTINCT call_id) FROM handled") == (38, 38)
        assert vb.status()["state"] == "connected"
    finally:
        vb.execute("""
            DROP TRIGGER check_n ON voipbin_events; DROP FUNCTION check_n();
            SELECT voipbin_off('call_hangup', 'on_hangup(voipbin_events)');
            DROP FUNCTION on_hangup(voipbin_events); DROP TABLE handled;""")


def test_one_bad_frame_in_a_big_batch_costs_few_statements(vb, fake, topic):
    n = 1500
    bad = 700
    vb.execute("""
        CREATE SEQUENCE insert_statements;
        CREATE TABLE stored_statements (rows bigint, lo int, hi int);
        CREATE FUNCTION count_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM nextval('insert_statements'); RETURN NULL; END $$;
        CREATE TRIGGER count_statement BEFORE INSERT ON voipbin_events
          FOR EACH STATEMENT EXECUTE FUNCTION count_statement();
        CREATE FUNCTION stored_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          INSERT INTO stored_statements
          SELECT count(*), min((data->>'n')::int), max((data->>'n')::int) FROM new_rows;
          RETURN NULL;
        END $$;
        CREATE TRIGGER stored_statement AFTER INSERT ON voipbin_events
          REFERENCING NEW TABLE AS new_rows
          FOR EACH STATEMENT EXECUTE FUNCTION stored_statement();
        CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.data->>'n' = '%d' THEN RAISE EXCEPTION 'frame %d is refused'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_one BEFORE INSERT ON voipbin_events
          FOR EACH ROW EXECUTE FUNCTION refuse_one();""" % (bad, bad))
    locker = vb.connect(autocommit=False)
    try:
        subscribe(vb, fake, topic + "call:call_")
        xid_before = vb.query_one("SELECT txid_current()")[0]
        # a batch that big forms behind a lock, as after any stall of the database
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE voipbin_events IN SHARE MODE")
        batch = [{"event_type": "call_hangup", "data": call(fake, "hangup", n=str(i))}
                 for i in range(n)]
        fake.publish(events=batch)
        size = sum(len(json.dumps(e["data"], separators=(",", ":"))) for e in batch)
        vb.wait_status(lambda s: s["buffered_bytes"] >= 0.9 * size, timeout=30,
                       what="all frames read, waiting for the database")
        locker.rollback()
        wait_until(lambda: count(vb) == n - 1, timeout=60, what="%d stored" % (n - 1))
        assert vb.query("SELECT error FROM voipbin_dead_letters") == [("frame %d is refused" % bad,)]
        rows, lo, hi = vb.query_one("SELECT rows, lo, hi FROM stored_statements"
                                    " WHERE lo < %s AND hi > %s", (bad, bad))
        assert rows >= 1000, "the bad frame's batch was small: %r" % ((rows, lo, hi),)
        statements = vb.query_one("SELECT last_value FROM insert_statements")[0]
        # about 2·log2(batch) probes plus a handful of batches, not one per frame
        assert statements <= 50, statements
        xids = vb.query_one("SELECT txid_current()")[0] - xid_before
        assert xids <= 60, xids
        print("bisect of %d frames: %d statements, %d xids" % (rows + 1, statements, xids))
    finally:
        locker.close()
        vb.execute("""
            DROP TRIGGER refuse_one ON voipbin_events; DROP FUNCTION refuse_one();
            DROP TRIGGER stored_statement ON voipbin_events; DROP FUNCTION stored_statement();
            DROP TRIGGER count_statement ON voipbin_events; DROP FUNCTION count_statement();
            DROP TABLE stored_statements; DROP SEQUENCE insert_statements;""")


@pytest.fixture
def breakable_handler(vb):
    """A handler on call_hangup that fails while handler_broken says so, and logs its runs."""
    vb.execute("""
        CREATE TABLE handler_broken (broken boolean);
        INSERT INTO handler_broken VALUES (true);
        CREATE TABLE handled (call_id text, source text);
        CREATE FUNCTION on_hangup(e voipbin_events) RETURNS void
          LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
          IF (SELECT broken FROM public.handler_broken) OR e.data->>'hangup_reason' = 'busy' THEN
            RAISE EXCEPTION 'the handler is broken for %', e.data->>'hangup_reason';
          END IF;
          INSERT INTO public.handled VALUES (e.data->>'id', e.source);
        END $$;
        SELECT voipbin_on('call_hangup', 'on_hangup(voipbin_events)');""")

    def fix(fixed=True):
        vb.execute("UPDATE handler_broken SET broken = %s", (not fixed,))
    yield fix
    vb.execute("""
        SELECT voipbin_off('call_hangup', 'on_hangup(voipbin_events)');
        DROP FUNCTION on_hangup(voipbin_events); DROP TABLE handled, handler_broken;""")


def test_retry_dead_letters_after_fixing_a_handler(vb, fake, topic, breakable_handler):
    subscribe(vb, fake, topic + "call:call_")
    reasons = ["normal", "normal", "busy", "normal"]
    fake.publish(events=[{"event_type": "call_hangup",
                          "data": call(fake, "hangup", hangup_reason=r, n=str(i))}
                         for i, r in enumerate(reasons)])
    wait_until(lambda: count(vb, "voipbin_dead_letters") == 4, what="4 dead letters")
    assert count(vb) == 0
    # one that came from a webhook a day ago, and one that is no JSON at all
    webhook = call(fake, "hangup", hangup_reason="normal", n="webhook")
    vb.execute("""
        INSERT INTO voipbin_dead_letters (received_at, source, raw, error) VALUES
          ('2026-01-02 03:04:05.678901+00', 'webhook', convert_to(%s, 'UTF8'), 'old error'),
          (now(), 'rest', 'not json', 'old error')""", (json.dumps(webhook),))
    breakable_handler(fixed=True)

    listener = Listener(vb, "voipbin_events", "call_hangup")
    try:
        assert vb.query_one("SELECT voipbin_retry_dead_letters()")[0] == 4
        got = listener.wait_for(4, channel="voipbin_events")
        # stored once each, handler run once each, in the dead letters' order
        rows = vb.query("SELECT id, source, received_at::text, data->>'n' FROM voipbin_events ORDER BY id")
        assert [r[3] for r in rows] == ["0", "1", "3", "webhook"]
        assert [r[1] for r in rows] == ["websocket"] * 3 + ["webhook"]
        assert rows[3][2] == "2026-01-02 03:04:05.678901+00"
        assert [json.loads(g[1])["id"] for g in got] == [r[0] for r in rows]
        assert vb.query("SELECT source FROM handled ORDER BY source") == \
            [("webhook",)] + [("websocket",)] * 3
        listener.wait_for(4, channel="call_hangup")
        # the others stay, with the error of this attempt
        left = vb.query("SELECT source, convert_from(raw, 'UTF8'), error FROM voipbin_dead_letters ORDER BY id")
        assert len(left) == 2
        assert json.loads(left[0][1])["hangup_reason"] == "busy"
        assert left[0][2] == "the handler is broken for busy"
        assert left[1][:2] == ("rest", "not json") and "invalid input syntax" in left[1][2]
        # again: nothing more is stored, nothing runs twice
        assert vb.query_one("SELECT voipbin_retry_dead_letters()")[0] == 0
        assert count(vb) == 4 and count(vb, "handled") == 4
        assert len(listener.poll()) == 8
    finally:
        listener.close()


def test_retry_dead_letters_by_id_in_the_callers_transaction(vb, breakable_handler):
    def letter(n, reason="normal"):
        return json.dumps({"id": str(uuid.uuid4()), "customer_id": str(uuid.uuid4()),
                           "source": {}, "destination": {}, "status": "hangup",
                           "hangup_reason": reason, "n": n,
                           "tm_create": "2026-01-01T00:00:00Z",
                           "tm_update": "2026-01-01T00:01:00Z"})
    ids = [vb.query_one("INSERT INTO voipbin_dead_letters (source, raw, error)"
                        " VALUES ('websocket', convert_to(%s, 'UTF8'), 'old') RETURNING id",
                        (letter(str(i)),))[0] for i in range(3)]
    # still broken: kept, with the new error
    assert vb.query_one("SELECT voipbin_retry_dead_letters(%s)", ([ids[0]],))[0] == 0
    assert vb.query("SELECT id, error FROM voipbin_dead_letters ORDER BY id") == \
        [(ids[0], "the handler is broken for normal"), (ids[1], "old"), (ids[2], "old")]
    breakable_handler(fixed=True)
    # rolled back with the caller's transaction: nothing happened
    conn = vb.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SELECT voipbin_retry_dead_letters(%s)", ([ids[1], ids[2]],))
        assert cur.fetchone()[0] == 2
    conn.rollback()
    conn.close()
    assert count(vb) == 0 and count(vb, "voipbin_dead_letters") == 3 and count(vb, "handled") == 0
    # only the ids asked for; a duplicate of a stored event is removed and counted too
    assert vb.query_one("SELECT voipbin_retry_dead_letters(%s)", ([ids[1]],))[0] == 1
    vb.execute("INSERT INTO voipbin_dead_letters (source, raw, error)"
               " SELECT source, raw, 'again' FROM voipbin_dead_letters WHERE id = %s", (ids[2],))
    vb.execute("INSERT INTO voipbin_dead_letters (source, raw, error)"
               " SELECT 'websocket', convert_to(data::text, 'UTF8'), 'dup' FROM voipbin_events")
    # ids[0], ids[2], its copy and the duplicate of ids[1]'s event
    assert vb.query_one("SELECT voipbin_retry_dead_letters(NULL)")[0] == 4
    assert count(vb) == 3 and count(vb, "voipbin_dead_letters") == 0 and count(vb, "handled") == 3
    assert vb.query_one("SELECT voipbin_retry_dead_letters('{}')")[0] == 0
    # a binary frame stays one: the worker refuses it, so does the retry
    binary_error = "binary frame: VoIPBIN sends events as text frames"
    vb.execute("INSERT INTO voipbin_dead_letters (raw, error) VALUES ('{\"binary\": true}', %s)",
               (binary_error,))
    assert vb.query_one("SELECT voipbin_retry_dead_letters()")[0] == 0
    assert vb.query("SELECT error FROM voipbin_dead_letters") == [(binary_error,)]
    # nor does the start of a message past voipbin.max_frame_size become an event
    vb.execute("DELETE FROM voipbin_dead_letters")
    cut_error = ("message of 3000000 bytes exceeds voipbin.max_frame_size (16 bytes);"
                 " its first 16 bytes are kept")
    vb.execute("INSERT INTO voipbin_dead_letters (raw, error) VALUES ('{\"id\": \"01234567', %s)",
               (cut_error,))
    assert vb.query_one("SELECT voipbin_retry_dead_letters()")[0] == 0
    assert vb.query("SELECT error FROM voipbin_dead_letters") == [(cut_error,)]


def test_retry_dead_letters_privileges(vb):
    vb.execute("INSERT INTO voipbin_dead_letters (raw, error) VALUES ('not json', 'old')")
    vb.execute("DROP ROLE IF EXISTS dl_user; CREATE ROLE dl_user LOGIN")
    try:
        assert vb.query_one("SELECT has_function_privilege('public',"
                            " 'voipbin_retry_dead_letters(bigint[])', 'EXECUTE')")[0] is False
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            vb.query("SELECT voipbin_retry_dead_letters()", user="dl_user")
        vb.execute("GRANT EXECUTE ON FUNCTION voipbin_retry_dead_letters(bigint[]) TO dl_user")
        # EXECUTE alone does not reach the tables: it runs with the caller's privileges
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            vb.query("SELECT voipbin_retry_dead_letters()", user="dl_user")
        assert vb.query("SELECT error FROM voipbin_dead_letters") == [("old",)]
        vb.execute("GRANT SELECT, UPDATE, DELETE ON voipbin_dead_letters TO dl_user;"
                   " GRANT INSERT ON voipbin_events TO dl_user;"
                   " GRANT EXECUTE ON FUNCTION voipbin_data_hash(jsonb) TO dl_user")
        assert vb.query("SELECT voipbin_retry_dead_letters()", user="dl_user") == [(0,)]
        assert "invalid input syntax" in vb.query_one("SELECT error FROM voipbin_dead_letters")[0]
    finally:
        vb.execute("DROP OWNED BY dl_user; DROP ROLE dl_user")


def test_a_failing_handler_is_logged_counted_and_one_dead_letter_per_event(vb, fake):
    """A handler that raises is named in a WARNING and in last_error; fifty
    more failures are a count, not fifty lines; the copy VoIPBIN sends on its
    second topic is a duplicate, not a second dead letter; once the handler
    is fixed, one retry stores each event once, and the next event stored of
    its type clears last_error."""
    vb.execute("""
        CREATE TABLE loud_broken (broken boolean);
        INSERT INTO loud_broken VALUES (true);
        CREATE FUNCTION loud_hangup(e voipbin_events) RETURNS void
          LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
          IF (SELECT broken FROM public.loud_broken) THEN
            RAISE EXCEPTION 'loud_hangup cannot take call %', e.data->>'n';
          END IF;
        END $$;
        SELECT voipbin_on('call_hangup', 'loud_hangup(voipbin_events)');""")
    log_from = len(vb.read_log())

    def lines(pattern):
        return [l for l in vb.read_log()[log_from:].splitlines() if re.search(pattern, l)]
    first = r"WARNING: .*an event of type call_hangup became a dead letter: handler public\.loud_hangup failed"
    try:
        # a 2-part prefix matches both of VoIPBIN's topics: every event arrives twice
        subscribe(vb, fake, "customer_id:%s" % fake.customer_id)
        before = vb.status()
        fake.publish("call_hangup", call(fake, "hangup", n="first"))
        wait_until(lambda: vb.status()["frames_received"] - before["frames_received"] >= 2,
                   what="both copies received")
        s = vb.wait_status(lambda s: s["dead_letters"] - before["dead_letters"] == 1
                           and s["duplicates"] - before["duplicates"] == 1,
                           what="one dead letter, one duplicate")
        assert count(vb, "voipbin_dead_letters") == 1
        assert vb.query_one("SELECT event_type, data_hash IS NOT NULL FROM voipbin_dead_letters") \
            == ("call_hangup", True)
        assert "public.loud_hangup" in s["last_error"], s
        assert "loud_hangup cannot take call first (SQLSTATE P0001)" in s["last_error"], s
        wait_until(lambda: len(lines(first)) == 1, interval=0.2, what="the WARNING naming the handler")

        # fifty more: fifty dead letters (each twice), no line each
        publish_calls(fake, 50, hangup_reason="more")
        wait_until(lambda: count(vb, "voipbin_dead_letters") == 51, timeout=30,
                   what="51 dead letters")
        s = vb.wait_status(lambda s: s["duplicates"] - before["duplicates"] == 51,
                           what="51 copies counted as duplicates")
        assert s["dead_letters"] - before["dead_letters"] == 51
        assert len(lines(first)) == 1, lines(r"WARNING: .*dead letter.*loud_hangup")
        # the count, once the minute since the first line is up
        counted = wait_until(lambda: lines(r"WARNING: .*(\d+) more events failed the same way in the"
                                           r" last minute and are dead letters: handler"
                                           r" public\.loud_hangup: loud_hangup cannot take call"),
                             timeout=80, interval=0.5, what="the count of the others")
        assert len(counted) == 1 and "50 more events" in counted[0], counted
        assert len(lines(r"WARNING: .*dead letter.*loud_hangup")) == 2, lines(r"WARNING: .*dead letter.*loud_hangup")

        # fixed: one retry stores each event once
        vb.execute("UPDATE loud_broken SET broken = false")
        assert vb.query_one("SELECT voipbin_retry_dead_letters()")[0] == 51
        assert count(vb, "voipbin_dead_letters") == 0
        assert count(vb, "voipbin_events", "event_type = 'call_hangup'") == 51
        # the next call_hangup stored says the handler works again
        fake.publish("call_hangup", call(fake, "hangup", n="after"))
        vb.wait_status(lambda s: s["last_error"] is None, what="last_error cleared")
        assert count(vb, "voipbin_events", "event_type = 'call_hangup'") == 52
    finally:
        vb.execute("""
            SELECT voipbin_off('call_hangup', 'loud_hangup(voipbin_events)');
            DROP FUNCTION loud_hangup(voipbin_events); DROP TABLE loud_broken;""")
