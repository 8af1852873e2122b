"""The outbox of requests end to end: a row queued in the caller's
transaction, sent by the worker after commit to the fake VoIPBIN, which
answers as VoIPBIN's write endpoints do (and as told to fail).  What a user
checks: a rollback sends nothing; a committed request is sent once and its
outcome is in voipbin_requests and on channel voipbin_requests; a request
VoIPBIN may already have acted on is never sent again; pacing."""
import json
import os
import signal
import uuid

import psycopg2
import pytest

from helpers import point_at, reset_cluster
from pgcluster import Listener, wait_until

FINAL = ("done", "failed", "unknown", "canceled")
SOURCE = {"type": "tel", "target": "+15551230001"}
CALLEE = {"type": "tel", "target": "+15551230002"}


@pytest.fixture
def rq(cluster, fake, secret_dir):
    """The worker pointed at this test's fake, requests paced fast enough for tests."""
    point_at(cluster, fake, secret_dir)
    cluster.set_conf(voipbin__request_rate=17)
    wait_until(lambda: cluster.query_one("SELECT current_setting('voipbin.api_url')")[0] == fake.api_url,
               what="settings reloaded")
    yield cluster
    cluster.set_conf(voipbin__request_rate=None, voipbin__request_retry_timeout=None,
                     voipbin__request_retention=None)
    reset_cluster(cluster)


def new_call(vb, fake, status="progressing"):
    """A call the fake knows (progressing: talk, transcription and recording work on it)."""
    return fake.add_call(status=status)["id"]


def quiet(f):
    """f(), or None while the server restarts."""
    try:
        return f()
    except psycopg2.Error:
        return None


def row(vb, rid):
    return vb.query_one("SELECT state, attempts, status, response, error, request_id"
                        " FROM voipbin_requests WHERE id = %s", (rid,))


def wait_final(vb, rid, timeout=30):
    def final():
        r = row(vb, rid)
        return r if r and r[0] in FINAL else None
    return wait_until(final, timeout, what="request %d final" % rid)


def queue(vb, sql, params=None):
    return vb.query_one(sql, params)[0]


def writes(fake, method, path):
    return fake.writes(method=method, path=path)


# ------------------------------------------------------------------ basics

def test_rollback_sends_nothing_commit_sends_once(rq, fake):
    call_id = new_call(rq, fake)
    conn = rq.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SELECT voipbin_hangup(%s)", (call_id,))
    conn.rollback()
    conn.close()
    listener = Listener(rq, "voipbin_requests")
    try:
        rid = queue(rq, "SELECT voipbin_hangup(%s)", (call_id,))
        state, attempts, status, response, error, request_id = wait_final(rq, rid)
        assert (state, attempts, status) == ("done", 1, 200)
        assert response["id"] == call_id
        assert request_id, "VoIPBIN's request id is kept"
        (channel, payload, _), = listener.wait_for(1)
        assert json.loads(payload) == {"id": rid, "state": "done", "status": 200}
    finally:
        listener.close()
    # the rolled-back one never left: one hangup reached VoIPBIN
    assert len(writes(fake, "POST", "/calls/%s/hangup" % call_id)) == 1
    assert rq.status()["requests_done"] >= 1


def test_unknown_call_is_failed_with_reason(rq, fake):
    listener = Listener(rq, "voipbin_requests")
    try:
        rid = queue(rq, "SELECT voipbin_hangup(%s)", (str(uuid.uuid4()),))
        state, attempts, status, response, error, _ = wait_final(rq, rid)
        assert (state, attempts, status) == ("failed", 1, 404)
        assert "CALL_NOT_FOUND" in error
        (_, payload, _), = listener.wait_for(1)
        assert json.loads(payload) == {"id": rid, "state": "failed", "status": 404}
    finally:
        listener.close()


def test_dedupe_key_sends_once(rq, fake):
    call_id = new_call(rq, fake)
    a = queue(rq, "SELECT voipbin_request('POST', %s, '{}', 'bye:1')", ("/calls/%s/hangup" % call_id,))
    b = queue(rq, "SELECT voipbin_request('POST', %s, '{}', 'bye:1')", ("/calls/%s/hangup" % call_id,))
    assert a == b
    wait_final(rq, a)
    assert len(writes(fake, "POST", "/calls/%s/hangup" % call_id)) == 1


def test_cancel_before_commit_sends_nothing(rq, fake):
    call_id = new_call(rq, fake)
    conn = rq.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SELECT voipbin_hangup(%s)", (call_id,))
        rid = cur.fetchone()[0]
        cur.execute("SELECT voipbin_cancel_request(%s)", (rid,))
        assert cur.fetchone()[0] is True
    conn.commit()
    conn.close()
    # a request queued after it is done: the canceled one was passed over
    marker = queue(rq, "SELECT voipbin_request('GET', %s)", ("/calls/%s" % call_id,))
    wait_final(rq, marker)
    assert row(rq, rid)[0] == "canceled"
    assert writes(fake, "POST", "/calls/%s/hangup" % call_id) == []


def test_talk_is_spoken_as_written(rq, fake):
    call_id = new_call(rq, fake)
    rid = queue(rq, "SELECT voipbin_talk(%s, %s)", (call_id, "AT&T <rocks> \"yes\""))
    assert wait_final(rq, rid)[:3] == ("done", 1, 200)
    (w,) = writes(fake, "POST", "/calls/%s/talk" % call_id)
    assert w["body"]["text"] == "AT&amp;T &lt;rocks&gt; &quot;yes&quot;"
    assert w["body"]["language"] == "en-US"


def test_second_transcription_start_counts_as_done(rq, fake):
    call_id = new_call(rq, fake)
    first = queue(rq, "SELECT voipbin_transcribe_start(%s)", (call_id,))
    assert wait_final(rq, first)[:3] == ("done", 1, 200)
    second = queue(rq, "SELECT voipbin_transcribe_start(%s)", (call_id,))
    state, attempts, status, response, error, _ = wait_final(rq, second)
    assert (state, attempts, status) == ("done", 1, 409)
    assert response["error"]["reason"] == "TRANSCRIBE_ALREADY_PROGRESSING"


# ------------------------------------------------------------ retry rules

def test_safe_request_goes_through_two_503s(rq, fake):
    call_id = new_call(rq, fake)
    path = "/calls/%s/hangup" % call_id
    fake.plan_writes("POST", "^%s$" % path, [{"status": 503, "reason": "REQUEST_TIMEOUT", "perform": True},
                                             {"status": 503, "reason": "REQUEST_TIMEOUT", "perform": True}])
    rid = queue(rq, "SELECT voipbin_hangup(%s)", (call_id,))
    assert wait_final(rq, rid)[:3] == ("done", 3, 200)
    assert len(writes(fake, "POST", path)) == 3


def test_call_answered_request_timeout_is_unknown_and_never_sent_again(rq, fake):
    fake.plan_writes("POST", "^/calls$", [{"status": 503, "reason": "REQUEST_TIMEOUT", "perform": True}])
    listener = Listener(rq, "voipbin_requests")
    try:
        rid = queue(rq, "SELECT voipbin_call(%s, %s)", (json.dumps(SOURCE), json.dumps([CALLEE])))
        state, attempts, status, response, error, _ = wait_final(rq, rid)
        assert (state, attempts, status) == ("unknown", 1, 503)
        assert "REQUEST_TIMEOUT" in error
        (_, payload, _), = listener.wait_for(1)
        assert json.loads(payload) == {"id": rid, "state": "unknown", "status": 503}
    finally:
        listener.close()
    # a request queued after it goes out and ends: the worker has moved on
    marker = queue(rq, "SELECT voipbin_request('GET', '/calls')")
    wait_final(rq, marker)
    assert len(writes(fake, "POST", "/calls")) == 1
    assert rq.status()["requests_unknown"] >= 1


def test_call_while_voipbin_is_unreachable_is_sent_once_when_back(rq, fake):
    rq.set_conf(voipbin__api_url="https://127.0.0.1:1/v1.0")
    wait_until(lambda: rq.query_one("SELECT current_setting('voipbin.api_url')")[0].endswith(":1/v1.0"),
               what="settings reloaded")
    rid = queue(rq, "SELECT voipbin_call(%s, %s)", (json.dumps(SOURCE), json.dumps([CALLEE])))
    # refused connections never reached VoIPBIN: tried again, still queued
    wait_until(lambda: row(rq, rid)[1] >= 2, timeout=20, what="a second attempt")
    state, attempts, status, response, error, _ = row(rq, rid)
    assert state in ("queued", "sending") and status is None and error
    rq.set_conf(voipbin__api_url=fake.api_url)
    state, attempts, status, response, error, _ = wait_final(rq, rid, timeout=90)
    assert (state, status) == ("done", 200)
    assert len(writes(fake, "POST", "/calls")) == 1
    assert len(response["calls"]) == 1


def test_429_waits_its_retry_after(rq, fake):
    fake.plan_writes("POST", "^/calls$", [{"status": 429, "retry_after": 2}])
    rid = queue(rq, "SELECT voipbin_call(%s, %s)", (json.dumps(SOURCE), json.dumps([CALLEE])))
    assert wait_final(rq, rid)[:3] == ("done", 2, 200)
    first, second = writes(fake, "POST", "/calls")
    assert second["at"] - first["at"] >= 1.9, "sent again before Retry-After"


def test_worker_killed_while_sending(rq, fake):
    """The safe request is sent again and ends done; the unsafe one may have
    happened, so it ends unknown and reaches VoIPBIN once."""
    call_id = new_call(rq, fake)
    hangup = "/calls/%s/hangup" % call_id
    fake.plan_writes("POST", "^%s$" % hangup, [{"hold": "forever", "perform": True}])
    fake.plan_writes("POST", "^/calls$", [{"hold": "forever", "perform": True}])
    safe = queue(rq, "SELECT voipbin_hangup(%s)", (call_id,))
    unsafe = queue(rq, "SELECT voipbin_call(%s, %s)", (json.dumps(SOURCE), json.dumps([CALLEE])))
    wait_until(lambda: writes(fake, "POST", hangup) and writes(fake, "POST", "/calls"),
               timeout=20, what="both requests at VoIPBIN")
    assert row(rq, safe)[0] == "sending" and row(rq, unsafe)[0] == "sending"
    pid = rq.status()["worker_pid"]
    # the postmaster restarts every process after a SIGKILL: the database recovers first
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: quiet(lambda: rq.status()["worker_pid"] not in (None, pid)), timeout=60,
               what="a new worker")
    assert wait_final(rq, safe, timeout=60)[:3] == ("done", 2, 200)
    state, attempts, status, response, error, _ = wait_final(rq, unsafe, timeout=60)
    assert (state, attempts, status) == ("unknown", 1, None)
    assert "stopped" in error
    assert len(writes(fake, "POST", "/calls")) == 1
    assert len(writes(fake, "POST", hangup)) == 2


# ------------------------------------------------------------------ pacing

def test_burst_drains_at_the_rate_in_queue_order(rq, fake):
    call_id = new_call(rq, fake)
    rq.set_conf(voipbin__request_rate=5)
    wait_until(lambda: rq.query_one("SELECT current_setting('voipbin.request_rate')")[0] == "5",
               what="settings reloaded")
    path = "/calls/%s/hangup" % call_id
    ids = rq.query_one("SELECT array_agg(voipbin_request('POST', %s, '{}', 'n' || i) ORDER BY i)"
                       " FROM generate_series(1, 40) i", (path,))[0]
    wait_until(lambda: rq.query_one("SELECT count(*) FROM voipbin_requests WHERE state = 'done'"
                                    " AND id = ANY(%s)", (ids,))[0] == 40,
               timeout=60, what="40 requests done")
    at = sorted(w["at"] for w in writes(fake, "POST", path))
    assert len(at) == 40
    worst = busiest_second(at)
    assert worst <= 5 + 5, "%d requests within one second at request_rate = 5" % worst
    assert at[-1] - at[0] >= (40 - 10) / 5.0 - 0.5
    sent = [r[0] for r in rq.query("SELECT id FROM voipbin_requests WHERE id = ANY(%s)"
                                   " ORDER BY sent_at, id", (ids,))]
    assert sent == sorted(ids), "sent out of queue order"


# -------------------------------------------------------------- retention

def test_finished_requests_are_deleted_after_retention(rq, fake):
    rid = queue(rq, "SELECT voipbin_request('GET', '/calls')")
    wait_final(rq, rid)
    rq.execute("UPDATE voipbin_requests SET finished_at = now() - interval '2 hours' WHERE id = %s", (rid,))
    keep = queue(rq, "SELECT voipbin_request('GET', '/calls')")
    wait_final(rq, keep)
    rq.set_conf(voipbin__request_retention="1h")
    wait_until(lambda: rq.query_one("SELECT count(*) FROM voipbin_requests WHERE id = %s", (rid,))[0] == 0,
               timeout=90, what="the old request deleted")
    assert rq.query_one("SELECT count(*) FROM voipbin_requests WHERE id = %s", (keep,))[0] == 1


def busiest_second(times):
    times = sorted(times)
    return max((sum(1 for t in times if s <= t < s + 1.0) for s in times), default=0)


def test_never_more_than_17_a_second_with_gap_repair(rq, fake, topic):
    """VoIPBIN allows a customer 17 requests a second: queued requests at the
    full rate and gap repair's reads, together, stay within it."""
    rq.set_conf(voipbin__request_rate=17, voipbin__repair_rate=17)
    wait_until(lambda: rq.query_one("SELECT current_setting('voipbin.repair_rate')")[0] == "17",
               what="settings reloaded")
    stored = rq.query_one("SELECT voipbin_subscribe(%s)", (topic,))[0]
    fake.wait_topics([stored])
    wait_until(lambda: rq.query_one("SELECT status FROM voipbin_subscriptions WHERE topic = %s",
                                    (stored,))[0] == "active", timeout=10, what="the topic active")
    # an outage during which 30 calls come and go: repair reads them back after it
    fake.config(ws_reject_status=503)
    fake.drop()
    rq.wait_status(lambda s: s["state"] != "connected", what="the outage noticed")
    for _ in range(30):
        c = fake.add_call(status="progressing")
        fake.set_call(c["id"], event="call_progressing", status="progressing")
    call_id = new_call(rq, fake)
    path = "/calls/%s/hangup" % call_id
    ids = rq.query_one("SELECT array_agg(voipbin_request('POST', %s, '{}', 'w' || i))"
                       " FROM generate_series(1, 60) i", (path,))[0]
    fake.config(ws_reject_status=None)
    wait_until(lambda: rq.query_one("SELECT count(*) FROM voipbin_requests WHERE state = 'done'"
                                    " AND id = ANY(%s)", (ids,))[0] == 60,
               timeout=60, what="60 requests done")
    wait_until(lambda: rq.query_one("SELECT count(*) FROM voipbin_gaps WHERE repaired_at IS NOT NULL")[0] >= 1,
               timeout=60, what="the gap repaired")
    rest = [r["at"] for r in fake.state()["rest_requests"] if r["path"] != "/v1.0/customer"]
    repair = len(rest) - 60
    assert repair > 0, "gap repair read nothing back"
    if busiest_second(rest) > 17:
        reqs = sorted((r["at"], r["method"], r["path"]) for r in fake.state()["rest_requests"])
        print("\n".join("%.3f %s %s" % r for r in reqs))
    assert busiest_second(rest) <= 17, "%d requests to VoIPBIN within one second" % busiest_second(rest)
