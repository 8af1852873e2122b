"""The worker sends voipbin_requests (a smoke test against the fake's REST
endpoints): an answer ends a row done or failed with its status, response,
error and request id, and a NOTIFY voipbin_requests; a rolled-back request is
never sent; a request that may be repeated is tried again until VoIPBIN
answers; one that may not becomes unknown after an ambiguous answer; a
worker that stopped while sending leaves each kind where the rules say."""
import json
import os
import time
import uuid

import pytest

from helpers import call, point_at, write_token_file
from pgcluster import Listener, wait_until


@pytest.fixture
def rq(vb, fake):
    vb.execute("TRUNCATE voipbin_requests")
    yield vb
    fake.reset()
    vb.execute("UPDATE voipbin_requests SET state = 'canceled' WHERE state = 'queued'")


def row(cluster, rid):
    r = cluster.query("SELECT state, status, response, error, request_id, attempts, finished_at"
                      " FROM voipbin_requests WHERE id = %s", (rid,))
    return r[0] if r else None


def wait_state(cluster, rid, states, timeout=15):
    return wait_until(lambda: (lambda r: r if r and r[0] in states else None)(row(cluster, rid)),
                      timeout=timeout, what="request %d %s" % (rid, "/".join(states)))


def sent(fake, path, method=None):
    return [e for e in fake.state()["rest_requests"]
            if e["path"] == "/v1.0" + path and (method is None or e["method"] == method)]


def queue(cluster, method, path, body=None):
    if body is None:
        return cluster.query_one("SELECT voipbin_request(%s, %s)", (method, path))[0]
    return cluster.query_one("SELECT voipbin_request(%s, %s, %s::jsonb)",
                             (method, path, json.dumps(body)))[0]


def test_a_get_ends_done_with_its_answer_and_a_notification(rq, fake):
    c = call(fake)
    fake.control("objects", {"calls": [c]})
    before = rq.status()["requests_done"]
    listener = Listener(rq, "voipbin_requests")
    try:
        rid = queue(rq, "GET", "/calls/" + c["id"])
        state, status, response, error, request_id, attempts, finished_at = wait_state(rq, rid, ["done"])
        assert status == 200 and response["id"] == c["id"] and error is None
        assert request_id and request_id.startswith("req_") and attempts == 1 and finished_at
        [(channel, payload, _)] = listener.wait_for(1)
        assert json.loads(payload) == {"id": rid, "state": "done", "status": 200}
    finally:
        listener.close()
    # the credential travels as ?accesskey=, never stored nor shown
    assert sent(fake, "/calls/" + c["id"], "GET")
    assert rq.status()["requests_done"] == before + 1


def test_a_refused_request_ends_failed_with_voipbin_s_reason(rq, fake):
    rid = queue(rq, "GET", "/calls/%s" % uuid.uuid4())
    state, status, response, error, _, attempts, _ = wait_state(rq, rid, ["failed"])
    assert status == 404 and attempts == 1
    assert response["error"]["reason"] == "CALL_NOT_FOUND"
    assert "CALL_NOT_FOUND" in error and fake.accesskey not in error


def test_a_rolled_back_request_is_never_sent(rq, fake):
    path = "/calls/%s" % uuid.uuid4()
    conn = rq.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT voipbin_request('GET', %s)", (path,))
        conn.rollback()
    finally:
        conn.close()
    # a committed one after it is sent: the worker looked, and passed the rolled-back one by
    c = call(fake)
    fake.control("objects", {"calls": [c]})
    wait_state(rq, queue(rq, "GET", "/calls/" + c["id"]), ["done"])
    assert not sent(fake, path)


def test_a_safe_request_is_tried_again_until_voipbin_answers(rq, fake):
    c = call(fake)
    fake.control("objects", {"calls": [c]})
    fake.config(rest_status=503)
    rid = queue(rq, "GET", "/calls/" + c["id"])
    wait_until(lambda: len(sent(fake, "/calls/" + c["id"])) >= 2, timeout=15, what="sent twice")
    state, status, _, error, _, attempts, finished_at = row(rq, rid)
    assert state in ("queued", "sending") and finished_at is None
    fake.config(rest_status=None)
    state, status, _, error, _, attempts, _ = wait_state(rq, rid, ["done"])
    assert status == 200 and attempts >= 3


def test_a_safe_request_is_tried_again_while_voipbin_is_unreachable(rq, fake, secret_dir):
    c = call(fake)
    fake.control("objects", {"calls": [c]})
    rq.set_conf(voipbin__api_url="https://127.0.0.1:1/v1.0")
    try:
        rid = queue(rq, "GET", "/calls/" + c["id"])
        wait_until(lambda: (row(rq, rid) or [None] * 6)[5] >= 2, timeout=15, what="two attempts")
        state, status, _, error, _, _, _ = row(rq, rid)
        assert state in ("queued", "sending") and status is None and error
    finally:
        rq.set_conf(voipbin__api_url=fake.api_url)
    state, status, *_ = wait_state(rq, rid, ["done"], timeout=20)
    assert status == 200


def test_an_unsafe_request_is_unknown_after_an_ambiguous_answer(rq, fake):
    # PUT /customer may not be repeated; VoIPBIN's 503 REQUEST_TIMEOUT leaves open whether it ran
    fake.config(rest_status=503, rest_reason="REQUEST_TIMEOUT")
    listener = Listener(rq, "voipbin_requests")
    try:
        rid = queue(rq, "PUT", "/customer", {"name": "x"})
        state, status, _, error, _, attempts, _ = wait_state(rq, rid, ["unknown"])
        assert status == 503 and attempts == 1 and "REQUEST_TIMEOUT" in error
        [(_, payload, _)] = listener.wait_for(1)
        assert json.loads(payload) == {"id": rid, "state": "unknown", "status": 503}
    finally:
        listener.close()
    assert len(sent(fake, "/customer", "PUT")) == 1


def test_an_unsafe_request_refused_for_the_rate_is_sent_again(rq, fake):
    fake.config(rest_status=429, rest_retry_after=1)
    rid = queue(rq, "PUT", "/customer", {"name": "again"})
    wait_until(lambda: sent(fake, "/customer", "PUT") or None, timeout=10, what="sent once")
    fake.config(rest_status=None)
    state, status, _, _, _, attempts, _ = wait_state(rq, rid, ["done"])
    assert status == 200 and attempts == 2


def test_a_worker_stopped_while_sending_leaves_each_kind_where_the_rules_say(rq, fake):
    c = call(fake)
    fake.control("objects", {"calls": [c]})
    ids = rq.query("INSERT INTO voipbin_requests (created_by, method, path, body, state, attempts)"
                   " VALUES ('postgres', 'GET', %s, NULL, 'sending', 1),"
                   "        ('postgres', 'PUT', '/customer', '{}', 'sending', 1)"
                   " RETURNING id", ("/calls/" + c["id"],))
    safe, unsafe = [r[0] for r in ids]
    pid = rq.worker_pid()
    rq.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: rq.worker_pid() not in (None, pid), timeout=15, what="a new worker")
    state, _, _, error, _, _, finished_at = wait_state(rq, unsafe, ["unknown"])
    assert error == "the worker stopped while sending it" and finished_at
    state, status, *_ = wait_state(rq, safe, ["done"])
    assert status == 200
    assert not sent(fake, "/customer", "PUT")


def test_without_a_credential_requests_stay_queued(rq, fake, secret_dir):
    said = rq.read_log().count("queued requests are not sent")
    rq.set_conf(voipbin__token_file=None, voipbin__token=None)
    try:
        wait_until(lambda: rq.read_log().count("queued requests are not sent") > said, timeout=10,
                   what="the worker saying why requests wait")
        c = call(fake)
        fake.control("objects", {"calls": [c]})
        rid = queue(rq, "GET", "/calls/" + c["id"])
        wait_until(lambda: rq.status()["requests_queued"] >= 1, timeout=10, what="counted queued")
        assert row(rq, rid)[0] == "queued" and not sent(fake, "/calls/" + c["id"])
    finally:
        # not point_at: it empties voipbin_requests
        rq.set_conf(voipbin__token_file=write_token_file(secret_dir, fake.accesskey))
    state, status, *_ = wait_state(rq, rid, ["done"], timeout=20)
    assert status == 200


def test_the_worker_idles_after_sending(rq, fake):
    """Nothing queued and nothing in flight: the step costs no CPU (no look at
    the table each pass, no busy wake on the engine's descriptor)."""
    c = call(fake)
    fake.control("objects", {"calls": [c]})
    wait_state(rq, queue(rq, "GET", "/calls/" + c["id"]), ["done"])
    wait_state(rq, queue(rq, "PUT", "/customer", {"name": "y"}), ["done"])
    pid = rq.worker_pid()
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    # the last outcome written and counted: nothing in flight, nothing queued
    wait_until(lambda: rq.status()["requests_queued"] == 0, what="the requests' outcomes written")
    before = cpu()
    time.sleep(3)       # the window measured, not a wait for anything
    assert cpu() - before < 0.2, "the worker spins while idle"


def test_finished_requests_are_deleted_after_the_retention(rq):
    ids = rq.query("INSERT INTO voipbin_requests (created_by, method, path, state, finished_at)"
                   " VALUES ('postgres', 'GET', '/calls', 'done', now() - interval '2 hours'),"
                   "        ('postgres', 'GET', '/calls', 'failed', now() - interval '1 minute'),"
                   "        ('postgres', 'GET', '/calls', 'canceled', now() - interval '3 hours')"
                   " RETURNING id")
    old, recent, canceled = [r[0] for r in ids]
    rq.set_conf(voipbin__request_retention="1h")
    try:
        wait_until(lambda: row(rq, old) is None and row(rq, canceled) is None, timeout=10,
                   what="the old finished rows deleted")
        assert row(rq, recent) is not None
    finally:
        rq.set_conf(voipbin__request_retention=None)


def test_requests_leave_at_the_request_rate_in_queue_order(rq, fake):
    c = call(fake)
    fake.control("objects", {"calls": [c]})
    rq.set_conf(voipbin__request_rate="4")
    try:
        ids = [r[0] for r in rq.query("SELECT voipbin_request('GET', '/calls/%s?n=' || n)"
                                      " FROM generate_series(1, 12) n" % c["id"])]
        wait_until(lambda: all(row(rq, i)[0] == "done" for i in ids), timeout=20, what="all done")
    finally:
        rq.set_conf(voipbin__request_rate=None)
    got = [e for e in fake.state()["rest_requests"] if e["path"] == "/v1.0/calls/" + c["id"]]
    order = [int(e["query"]["n"]) for e in got]
    # queue order, but up to 4 leave at once, on their own connections: they may arrive in any order
    assert sorted(order) == list(range(1, 13)) and all(abs(n - (i + 1)) < 4 for i, n in enumerate(order)), order
    times = [e["at"] for e in got]
    # a burst of 4, then 4 a second: 12 take at least 2 s
    assert times[-1] - times[0] >= 1.8, times
    for i in range(len(times)):
        within = [t for t in times if times[i] <= t < times[i] + 1.0]
        assert len(within) <= 4 + 4, (i, times)
