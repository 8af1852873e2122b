"""The webhook receiver end to end: test/webhook_sender.py plays VoIPBIN's
webhook sender against a live cluster; the fake VoIPBIN serves GET /customer
(the secret) and the WebSocket."""
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

from helpers import call, point_at, reset_cluster, subscribe, transcript, try_query
from pgcluster import Listener, free_port, wait_until
from webhook_sender import Sender, envelope, sign

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "FakeWebhookSecret_0123456789abcd"  # fake_voipbin.py's customer webhook_secret
PATH = "/voipbin/events"


def reset_webhook(cluster):
    cluster.set_conf(voipbin__webhook_port=None, voipbin__webhook_listen_addresses=None,
                     voipbin__webhook_path=None, voipbin__webhook_secret=None,
                     voipbin__max_frame_size=None)


def listening(cluster, port):
    return cluster.wait_status(
        lambda s: s["webhook_state"].startswith("listening on") and (":%d" % port) in s["webhook_state"]
        and "secret" not in s["webhook_state"],
        what="webhook receiver listening with a secret")


@pytest.fixture
def hook(vb, fake):
    """The receiver on a free loopback port, the secret fetched from the fake."""
    port = free_port()
    vb.set_conf(voipbin__webhook_port=port)
    listening(vb, port)
    s = Sender("127.0.0.1", port, PATH, SECRET)
    s.port_ = port
    yield s
    s.close()
    reset_webhook(vb)
    vb.wait_status(lambda st: st["webhook_state"] == "off", what="receiver off")


def rows(cluster):
    return cluster.query("SELECT source, event_type, resource_id::text, data FROM voipbin_events ORDER BY id")


def stored(cluster, n_rows, n_dead=None):
    """Waits until the webhook rows (and dead letters) number what is
    expected: a 200 says the body is in the journal on disk, and the row
    follows it (docs/webhooks.md)."""
    wait_until(lambda: len(rows(cluster)) == n_rows and (n_dead is None or len(dead(cluster)) == n_dead),
               what="%d rows%s" % (n_rows, "" if n_dead is None else " and %d dead letters" % n_dead))


def dead(cluster):
    return cluster.query("SELECT source, convert_from(raw, 'UTF8'), error FROM voipbin_dead_letters ORDER BY id")


def answer_and_close(port, data, limit=5.0):
    """Sends raw bytes: everything the server answers, and whether it hung
    up (rather than went quiet for limit s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True


def raw_request(port, data, read_timeout=5.0):
    """Sends raw bytes, returns everything the server answers until it closes or goes quiet."""
    return answer_and_close(port, data, read_timeout)[0]


def test_off_by_default(cluster):
    reset_webhook(cluster)
    s = cluster.wait_status(lambda st: st["webhook_state"] == "off", what="receiver off")
    assert s["webhook_received"] == 0 or s["webhook_received"] is not None
    assert cluster.query_one("SHOW voipbin.webhook_port")[0] == "0"
    assert cluster.query_one("SHOW voipbin.webhook_listen_addresses")[0] == "localhost"


def test_signed_post_stored_and_notified(hook, vb, fake):
    data = call(fake, "ringing")
    listener = Listener(vb, "voipbin_events", "call_ringing")
    try:
        status, text = hook.send(envelope("call_ringing", data))
        assert status == 200, text
        # 200 says the body is on disk in the journal (docs/webhooks.md); the row follows it
        wait_until(lambda: len(rows(vb)) == 1, what="the webhook's row")
        got = rows(vb)
        assert [(r[0], r[1], r[2]) for r in got] == [("webhook", "call_ringing", data["id"])]
        assert got[0][3] == data
        notes = listener.wait_for(2)
        assert {n[0] for n in notes} == {"voipbin_events", "call_ringing"}
        assert json.loads(notes[0][1])["resource_id"] == data["id"]
    finally:
        listener.close()
    s = vb.status()
    assert s["webhook_received"] >= 1


def test_duplicates_across_retries_and_websocket(hook, vb, fake, topic):
    subscribe(vb, fake, topic)
    data = transcript(fake, "same event three ways")
    body = envelope("transcript_created", data)
    assert hook.send(body)[0] == 200
    assert hook.send(body)[0] == 200          # VoIPBIN's retry
    before = vb.status()["duplicates"]
    fake.publish("transcript_created", data)  # the bare resource over the WebSocket
    vb.wait_status(lambda s: s["duplicates"] >= before + 1, what="the WebSocket copy counted as a duplicate")
    got = rows(vb)
    assert len(got) == 1 and got[0][0] == "webhook" and got[0][1] == "transcript_created"


def test_handler_runs_once_for_a_webhook_event(hook, vb, fake):
    """A webhook body runs the event's handlers as a WebSocket frame would,
    once: VoIPBIN's retry of the same body is a duplicate and runs nothing."""
    vb.execute("""
        CREATE TABLE wh_runs (source text, resource_id text);
        CREATE FUNCTION wh_h(e voipbin_events) RETURNS void LANGUAGE sql
            AS $$ INSERT INTO wh_runs VALUES (e.source, e.resource_id::text) $$;
        SELECT voipbin_on('call_ringing', 'wh_h(voipbin_events)');""")
    try:
        data = call(fake, "ringing")
        body = envelope("call_ringing", data)
        before = vb.status()["duplicates"]
        assert hook.send(body)[0] == 200
        assert hook.send(body)[0] == 200          # VoIPBIN's retry
        # 200 means journaled; the handler runs in the transaction that stores it
        wait_until(lambda: vb.query("SELECT source, resource_id FROM wh_runs") == [("webhook", data["id"])],
                   what="the handler's one run")
        vb.wait_status(lambda st: st["duplicates"] >= before + 1, what="the retry counted as a duplicate")
        assert vb.query("SELECT source, resource_id FROM wh_runs") == [("webhook", data["id"])]
    finally:
        vb.execute("""
            SELECT voipbin_off('call_ringing', 'wh_h(voipbin_events)');
            DROP FUNCTION wh_h(voipbin_events); DROP TABLE wh_runs;""")


def test_event_first_over_websocket_then_webhook(hook, vb, fake, topic):
    subscribe(vb, fake, topic)
    data = call(fake, "hangup")
    fake.publish("call_hangup", data)
    wait_until(lambda: len(rows(vb)) == 1, what="the WebSocket row")
    assert hook.send(envelope("call_hangup", data))[0] == 200
    got = rows(vb)
    assert len(got) == 1 and got[0][0] == "websocket"


@pytest.mark.parametrize("how", ["tampered", "no signature", "other key", "malformed", "upper prefix"])
def test_bad_signature_refused(hook, vb, fake, how):
    """401 on the first attempt, nothing stored: the first failure of a minute
    waits while the worker fetches the customer's secret again (see below),
    and then fails against the fresh key too."""
    body = envelope("call_ringing", call(fake))
    refused = vb.status()["webhook_refused"]
    if how == "tampered":
        status, text = hook.send(body.replace(b"ringing", b"hangup!"), signature=sign(SECRET, body))
    elif how == "no signature":
        status, text = hook.send(body, signature="")
    elif how == "other key":
        status, text = hook.send(body, sign_with="not the customer's secret")
    elif how == "malformed":
        status, text = hook.send(body, signature=sign(SECRET, body)[:-2])
    else:
        status, text = hook.send(body, signature=sign(SECRET, body).replace("sha256=", "SHA256="))
    assert status == 401, (status, text)
    assert rows(vb) == [] and dead(vb) == []
    vb.wait_status(lambda s: s["webhook_refused"] >= refused + 1, what="refusal counted")


def _customer_fetches(fake):
    return sum(1 for r in fake.state()["rest_requests"]
               if r["method"] == "GET" and r["path"].endswith("/customer"))


def test_rotated_secret_is_fetched_again(hook, vb, fake):
    """The customer's webhook_secret changes (a new customer behind the
    credential, a rotation): the first request that does not verify with the
    key in hand waits while the worker fetches the secret again, is checked
    against the fresh one and answered 200, stored once.  At most one refetch
    a minute: within it, another change is not seen and the old key no longer
    works."""
    before = _customer_fetches(fake)
    refused = vb.status()["webhook_refused"]
    new = "RotatedSecret_" + uuid.uuid4().hex
    fake.set_customer(webhook_secret=new)
    s = Sender("127.0.0.1", hook.port_, PATH, new)
    try:
        data = call(fake, "ringing")
        body = envelope("call_ringing", data)
        status, text = s.send(body)        # one attempt, no retry
        assert status == 200, (status, text)
        # 200 says the body is on disk in the journal; the row follows it
        wait_until(lambda: [(r[0], r[2]) for r in rows(vb)] == [("webhook", data["id"])],
                   what="the webhook's row")
        assert _customer_fetches(fake) == before + 1
        assert vb.status()["webhook_refused"] == refused
        assert "did not verify: fetching the customer's webhook_secret again" in vb.read_log()
        assert s.send(body)[0] == 200       # VoIPBIN's retry of it: still one row
        stored(vb, 1)

        # the old key is refused at once now, and costs no fetch
        started = time.monotonic()
        assert hook.send(envelope("call_ringing", call(fake)))[0] == 401
        assert time.monotonic() - started < 2
        # a second change within the minute: 401, no fetch (bad signatures
        # from anyone cannot make the worker hammer GET /customer)
        newer = "RotatedAgain_" + uuid.uuid4().hex
        fake.set_customer(webhook_secret=newer)
        other = Sender("127.0.0.1", hook.port_, PATH, newer)
        try:
            assert [other.send(envelope("call_ringing", call(fake)))[0] for _ in range(5)] == [401] * 5
        finally:
            other.close()
        assert _customer_fetches(fake) == before + 1
        assert s.send(envelope("call_ringing", call(fake)))[0] == 200   # the key in hand
        stored(vb, 2)
    finally:
        s.close()


def test_request_waiting_for_the_refetch_blocks_no_one(hook, vb, fake):
    """While a request waits for GET /customer (slow here: 2 s), another
    connection signed with the key in hand is answered at once."""
    new = "RotatedSecret_" + uuid.uuid4().hex
    fake.set_customer(webhook_secret=new)
    fake.control("config", {"rest_delay": 2})
    waiting = {}
    data = call(fake, "ringing")

    def rotated():
        s = Sender("127.0.0.1", hook.port_, PATH, new)
        started = time.monotonic()
        try:
            waiting["status"] = s.send(envelope("call_ringing", data))[0]
        finally:
            waiting["took"] = time.monotonic() - started
            s.close()
    t = threading.Thread(target=rotated)
    before = _customer_fetches(fake)
    try:
        t.start()
        wait_until(lambda: _customer_fetches(fake) > before, what="the refetch under way")
        started = time.monotonic()
        assert hook.send(envelope("call_ringing", call(fake)))[0] == 200   # the old key, still in hand
        assert time.monotonic() - started < 1.5 and "status" not in waiting
        t.join(15)
        assert waiting["status"] == 200 and 1.5 <= waiting["took"] < 5, waiting
        stored(vb, 2)
        assert data["id"] in [r[2] for r in rows(vb)]
    finally:
        t.join(15)
        fake.control("config", {"rest_delay": 0})


@pytest.mark.parametrize("how", ["GET /customer fails", "too slow"])
def test_failed_refetch_keeps_the_old_key_and_answers_401(hook, vb, fake, how):
    """The refetch fails (HTTP 500) or takes longer than the request may wait
    (5 s): the key in hand is kept, and the request that did not verify with
    it gets 401, not 503 (503 is only for no key at all)."""
    fake.set_customer(webhook_secret="RotatedSecret_" + uuid.uuid4().hex)
    fake.control("config", {"rest_status": 500} if how == "GET /customer fails" else {"rest_delay": 8})
    try:
        started = time.monotonic()
        status, text = hook.send(envelope("call_ringing", call(fake)), sign_with="RotatedSecret_x")
        took = time.monotonic() - started
        assert status == 401, (status, text)
        if how == "too slow":
            assert 4.5 <= took < 7, took
        else:
            assert took < 5, took
        assert rows(vb) == []
        if how == "GET /customer fails":
            # the old key is kept, and still works
            assert hook.send(envelope("call_ringing", call(fake)))[0] == 200
    finally:
        fake.control("config", {"rest_status": None, "rest_delay": 0})


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
def test_other_methods_accepted(hook, vb, fake, method):
    data = call(fake, "progressing")
    status, _ = hook.send(envelope("call_progressing", data), method=method)
    assert status == 200
    # 200 says the body is on disk in the journal; the row follows it
    wait_until(lambda: [(r[0], r[2]) for r in rows(vb)] == [("webhook", data["id"])],
               what="the webhook's row")


def test_other_path_and_method_refused(hook, vb, fake):
    body = envelope("call_ringing", call(fake))
    assert hook.send(body, path="/voipbin/other")[0] == 404
    assert hook.send(body, path=PATH + "/")[0] == 404
    assert hook.send(body, method="PATCH")[0] == 405
    # the query string is not part of the path
    assert hook.send(body, path=PATH + "?from=voipbin")[0] == 200
    stored(vb, 1)


def test_keep_alive(hook, vb, fake):
    for i in range(5):
        assert hook.send(envelope("call_ringing", call(fake)))[0] == 200
    stored(vb, 5)
    sock = hook.conn.sock
    assert sock is not None           # the same connection served all five
    assert hook.send(envelope("call_ringing", call(fake)))[0] == 200
    assert hook.conn.sock is sock


def test_huge_body_refused_without_reading_it(hook, vb, fake):
    port = hook.port_
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "X-VoIPBIN-Signature: sha256=%s\r\nContent-Length: %d\r\n\r\n"
            % (PATH, "0" * 64, 20 * 1024 * 1024)).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"{" * 65536)
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        # and it hangs up rather than read the other 20 MB
        s.settimeout(10)
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
    # a chunked 20 MB body has no length up front: cut off once it is too big
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % PATH).encode())
        chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b"x" * (1024 * 1024))
        got = b""
        try:
            for _ in range(20):
                s.sendall(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
        try:
            got = s.recv(4096)
        except ConnectionResetError:
            got = b""
        assert got == b"" or got.startswith(b"HTTP/1.1 413"), got
    # the receiver is fine afterwards
    assert hook.send(envelope("call_ringing", call(fake)))[0] == 200
    stored(vb, 1, 0)


def test_max_frame_size_applies(hook, vb, fake):
    vb.set_conf(voipbin__max_frame_size=2048)
    wait_until(lambda: vb.query_one("SELECT setting FROM pg_settings WHERE name = 'voipbin.max_frame_size'")[0] == "2048")
    big = envelope("call_ringing", call(fake, extra="x" * 4000))
    wait_until(lambda: hook.send(big)[0] == 413, what="413 for a body over max_frame_size")
    assert hook.send(envelope("call_ringing", call(fake)))[0] == 200


def test_non_json_body_is_a_dead_letter(hook, vb, fake):
    status, _ = hook.send(b"this is not JSON")
    assert status == 200
    stored(vb, 0, 1)
    assert dead(vb) == [("webhook", "this is not JSON", dead(vb)[0][2])]
    assert rows(vb) == []


def test_ambiguous_framing_refused(hook, vb, fake):
    body = envelope("call_ringing", call(fake))
    req = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n"
           "X-VoIPBIN-Signature: %s\r\n\r\n" % (PATH, len(body), sign(SECRET, body))).encode() + body
    answer = raw_request(hook.port_, req)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    # two lengths: which one a proxy used is anyone's guess
    req = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: %d\r\n"
           "X-VoIPBIN-Signature: %s\r\n\r\n" % (PATH, len(body), len(body) - 1, sign(SECRET, body))).encode() + body
    assert raw_request(hook.port_, req).startswith(b"HTTP/1.1 400")
    assert raw_request(hook.port_, b"POST %s HTTP/1.1\r\nBad Header Line\r\n\r\n" % PATH.encode()).startswith(b"HTTP/1.1 400")
    assert rows(vb) == []


def _client_hello():
    """The first bytes a TLS client sends: what reaches the plain port when
    someone points https at it."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(inc, out, server_hostname="hooks.example.com")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


MALFORMED = [
    b"GARBAGE\r\n\r\n",                                   # no space at all
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",           # a TLS record's start, no line end
    "client hello",
    b"SSH-2.0-OpenSSH_9.2\r\n",
    b"\x00\x01\x02",
    b"GET\r\n\r\n",
    b" /voipbin/events HTTP/1.1\r\nHost: x\r\n\r\n",        # empty method
    b"POST /voipbin/ev ents HTTP/1.1\r\nHost: x\r\n\r\n",   # a space inside the target
    b"POST  /voipbin/events HTTP/1.1\r\nHost: x\r\n\r\n",   # two spaces
    b"POST\t/voipbin/events\tHTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /voipbin/events\r\nHost: x\r\n\r\n",             # no version
    b"POST /voipbin/events HTTP/1\r\nHost: x\r\n\r\n",
    b"POST /voipbin/events http/1.1\r\nHost: x\r\n\r\n",
    b"POST /voipbin/events HTTP/1.1x\r\nHost: x\r\n\r\n",
    b"POST /voipbin/events HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"POST /voipbin/events HTTP/1.1\nHost: x\n\n",             # a bare LF
    b"POST /voipbin/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",  # not ASCII
    b"GET / HTTP/1.1",                                       # half a line, then the client shuts its side
    b"POST /voipbin/events HTTP/1.1\r\nBad Header Line\r\n\r\n",
    b"POST /voipbin/events HTTP/1.1\r\n folded\r\nHost: x\r\n\r\n",
    b"POST /voipbin/events HTTP/1.1\r\n\r\n",                 # HTTP/1.1 without Host:
]


def test_malformed_request_gets_400_and_is_counted(hook, vb, fake):
    """Malformed HTTP -> 400 Bad Request with Connection: close, counted in
    webhook_refused, nothing stored; whatever the bytes, even those that are
    no HTTP at all (a port scan, TLS or SSH spoken to the plain port) and
    those without a line end.  libmicrohttpd 0.9.75 alone hangs up on several
    of them without a word; the receiver checks the request line first."""
    for raw in MALFORMED:
        raw = _client_hello() if raw == "client hello" else raw
        refused = vb.status()["webhook_refused"]
        with socket.create_connection(("127.0.0.1", hook.port_), timeout=5) as s:
            s.sendall(raw)
            if raw == b"GET / HTTP/1.1":
                s.shutdown(socket.SHUT_WR)
            answer = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head = answer.split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head[0] == b"HTTP/1.1 400 Bad Request" and b"Connection: close" in head, (raw, answer)
        vb.wait_status(lambda st: st["webhook_refused"] == refused + 1, timeout=5,
                       what="the 400 to %r counted" % raw[:40])
    # another HTTP version: 505, counted too
    refused = vb.status()["webhook_refused"]
    for line in (b"POST /voipbin/events HTTP/2.0\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        answer, closed = answer_and_close(hook.port_, line)
        assert answer.startswith(b"HTTP/1.1 505 ") and closed, answer
    vb.wait_status(lambda st: st["webhook_refused"] == refused + 2, timeout=5, what="the 505s counted")
    assert rows(vb) == [] and dead(vb) == []
    # well-formed lines still pass: an empty line before the request is skipped, HTTP/1.0 spoken
    assert raw_request(hook.port_, b"\r\nPOST /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert raw_request(hook.port_, b"POST /elsewhere HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert hook.send(envelope("call_ringing", call(fake)))[0] == 200


def test_request_line_dripped_in_is_checked_as_it_comes(hook, vb, fake):
    """The request line in pieces: each piece waits for the next (another
    client is served meanwhile), and the byte that rules the line out gets
    the 400 at once, without waiting for a line end."""
    with socket.create_connection(("127.0.0.1", hook.port_), timeout=5) as s:
        s.sendall(b"POST /voip")
        assert hook.send(envelope("call_ringing", call(fake)))[0] == 200
        s.sendall(b"bin/events HTT")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)            # well-formed so far: no answer yet
        s.settimeout(5)
        s.sendall(b"P/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert s.recv(4096).startswith(b"HTTP/1.1 401"), "the whole request reached the receiver"
    with socket.create_connection(("127.0.0.1", hook.port_), timeout=5) as s:
        s.sendall(b"POST /voipbin/events")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.settimeout(5)
        s.sendall(b" HTTP/1.1\x00")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_request_line_longer_than_the_header_limit(hook, vb, fake):
    answer, closed = answer_and_close(hook.port_, b"POST /" + b"a" * 40000)
    assert answer.startswith(b"HTTP/1.1 414 ") and closed, answer[:200]


def test_malformed_second_request_on_a_kept_alive_connection(hook, vb, fake):
    """Only a connection's first request line passes the receiver's check;
    later ones are libmicrohttpd's alone.  A malformed header there is still
    400 and counted; a request line it cannot split closes the connection
    without an answer, and a bad version gets its own 400 uncounted
    (libmicrohttpd 0.9.75 calls no hook of the receiver first).  Asserted
    exactly, so a change is noticed; nothing is stored either way."""
    body = envelope("call_ringing", call(fake))
    good = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-VoIPBIN-Signature: %s\r\n\r\n"
            % (PATH, len(body), sign(SECRET, body))).encode() + body
    ok = b"HTTP/1.1 200 OK\r\n"
    refused = vb.status()["webhook_refused"]
    answer, closed = answer_and_close(hook.port_, good + b"POST /voipbin/events HTTP/1.1\r\nBad Header Line\r\n\r\n")
    assert answer.startswith(ok) and answer.count(b"HTTP/1.1 400 Bad Request\r\n") == 1 and closed, answer
    vb.wait_status(lambda st: st["webhook_refused"] == refused + 1, timeout=5, what="the 400 counted")
    answer, closed = answer_and_close(hook.port_, good + b"GARBAGE\r\n\r\n")
    assert answer.startswith(ok) and b"400" not in answer and closed, answer
    answer, closed = answer_and_close(hook.port_, good + b"POST /voipbin/events HTTP/1.1x\r\nHost: x\r\n\r\n")
    assert answer.startswith(ok) and answer.count(b"HTTP/1.1 400 Bad Request\r\n") == 1 and closed, answer
    assert vb.status()["webhook_refused"] == refused + 1
    stored(vb, 1)


def test_request_line_grammar(tmp_path):
    """src/net/webhook/request_line.c on its own (ctypes), byte by byte."""
    import ctypes
    so = str(tmp_path / "request_line.so")
    src = os.path.join(os.path.dirname(HERE), "src")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-I" + src, "-o", so,
                    os.path.join(src, "net", "webhook", "request_line.c")],
                   check=True, timeout=60)
    lib = ctypes.CDLL(so)
    end = ctypes.c_size_t()
    OK, PARTIAL, BAD, VERSION = range(4)

    def check(b):
        v = lib.request_line_check(ctypes.c_char_p(b), ctypes.c_size_t(len(b)), ctypes.byref(end))
        return v, end.value
    for line in (b"POST /voipbin/events HTTP/1.1\r\n", b"GET * HTTP/1.0\r\n", b"\r\n\r\nPUT /a?b=c%20d HTTP/1.9\r\n",
                 b"M-SEARCH!#$%&'*+.^_`|~ http://x.example/a;b HTTP/1.1\r\n"):
        assert check(line) == (OK, len(line)), line
        assert check(line + b"Host: x\r\n") == (OK, len(line))
        for i in range(len(line)):
            assert check(line[:i]) == (PARTIAL, i), (line, i)
    assert check(b"PRI * HTTP/2.0\r\n") == (VERSION, 16)
    assert check(b"GET / HTTP/0.9\r\n")[0] == VERSION
    for bad, at in ((b"GARBAGE\r\n", 7), (b"\x16\x03\x01", 0), (b" / HTTP/1.1\r\n", 0), (b"GET  /", 4),
                    (b"GET / HTTP/1.1 \r\n", 14), (b"GET / HTTP/1.1\n", 14), (b"GET / HTTP/11", 12),
                    (b"GET /\x7f", 5), (b"GET /\x80", 5), (b"\rGET", 1), (b"\n", 0), (b"GET / http/1.1", 6),
                    (b"GET / HTTP/1.1\r\r", 15)):
        assert check(bad) == (BAD, at), bad
    assert check(b"") == (PARTIAL, 0)
    assert check(b"\r\n\r\n") == (PARTIAL, 4)


def test_chunked_body_accepted(hook, vb, fake):
    data = call(fake)
    body = envelope("call_ringing", data)
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
    req = ("POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
           "X-VoIPBIN-Signature: %s\r\n\r\n" % (PATH, sign(SECRET, body))).encode() + chunks
    answer = raw_request(hook.port_, req)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    stored(vb, 1)
    assert [r[2] for r in rows(vb)] == [data["id"]]


def test_fifty_concurrent_posts(hook, vb, fake):
    results = []
    bodies = [envelope("call_ringing", call(fake)) for _ in range(50)]
    barrier = threading.Barrier(50)

    def one(body):
        s = Sender("127.0.0.1", hook.port_, PATH, SECRET)
        barrier.wait(timeout=30)
        try:
            results.append(s.send(body)[0])
        finally:
            s.close()
    threads = [threading.Thread(target=one, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [200] * 50
    # each 200 says its body is in the journal on disk; the rows follow
    wait_until(lambda: vb.query_one("SELECT count(*) FROM voipbin_events WHERE source = 'webhook'")[0] == 50,
               what="the fifty rows")


def test_slow_client_does_not_block_and_is_closed(hook, vb, fake):
    slow = socket.create_connection(("127.0.0.1", hook.port_), timeout=40)
    try:
        slow.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nContent-Len" % PATH).encode())
        started = time.monotonic()
        # another client is served meanwhile
        assert hook.send(envelope("call_ringing", call(fake)))[0] == 200
        assert time.monotonic() - started < 5
        # and the slow one is hung up on within 30 s
        got = slow.recv(4096)
        assert time.monotonic() - started <= 30
        assert got == b"" or b"408" in got or b"400" in got, got
    finally:
        slow.close()


def test_no_secret_known_is_503_then_recovers(cluster, fake, secret_dir):
    fake.control("config", {"rest_status": 500})
    point_at(cluster, fake, secret_dir)
    port = free_port()
    cluster.set_conf(voipbin__webhook_port=port)
    try:
        cluster.wait_status(lambda s: "no secret yet" in s["webhook_state"] and "HTTP 500" in s["webhook_state"],
                            what="the failed GET /customer in the state")
        s = Sender("127.0.0.1", port, PATH, SECRET)
        body = envelope("call_ringing", call(fake))
        status, _ = s.send(body)
        assert status == 503
        assert rows(cluster) == []
        fake.control("config", {"rest_status": None})
        # the receiver asks again by itself (1 s, 2 s, … apart)
        listening(cluster, port)
        assert s.send(body)[0] == 200
        s.close()
        assert len(rows(cluster)) == 1
    finally:
        fake.control("config", {"rest_status": None})
        reset_webhook(cluster)
        reset_cluster(cluster)


def test_secret_setting_overrides_the_customer(cluster, fake, secret_dir):
    point_at(cluster, fake, secret_dir)
    port = free_port()
    cluster.set_conf(voipbin__webhook_port=port, voipbin__webhook_secret="my own secret")
    try:
        listening(cluster, port)
        s = Sender("127.0.0.1", port, PATH, "my own secret")
        assert s.send(envelope("call_ringing", call(fake)))[0] == 200
        assert s.send(envelope("call_ringing", call(fake)), sign_with=SECRET)[0] == 401
        s.close()
        # the setting is the superuser's: no one else reads it
        assert "my own secret" not in json.dumps(cluster.query("SELECT * FROM voipbin_status()"), default=str)
    finally:
        reset_webhook(cluster)
        reset_cluster(cluster)


def test_reload_moves_and_stops_the_receiver(hook, vb, fake):
    old = hook.port_
    new = free_port()
    vb.set_conf(voipbin__webhook_port=new, voipbin__webhook_path="/hooks/vb")
    listening(vb, new)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", old), timeout=2).close()
    s = Sender("127.0.0.1", new, "/hooks/vb", SECRET)
    assert s.send(envelope("call_ringing", call(fake)))[0] == 200
    assert s.send(envelope("call_ringing", call(fake)), path=PATH)[0] == 404
    s.close()
    vb.set_conf(voipbin__webhook_port=0)
    vb.wait_status(lambda st: st["webhook_state"] == "off", what="receiver off")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", new), timeout=2).close()
    assert "webhook receiver stopped" in vb.read_log()


def test_bind_error_in_status(hook, vb, fake):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        vb.set_conf(voipbin__webhook_port=port, voipbin__webhook_listen_addresses="127.0.0.1")
        s = vb.wait_status(lambda st: "could not listen on 127.0.0.1:%d" % port in st["webhook_state"],
                           what="the bind error")
        assert "Address already in use" in s["webhook_state"]
    assert "webhook receiver not started" in vb.read_log()


def _outside_address():
    """An address of this machine that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))   # TEST-NET: nothing is sent
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_loopback_only_by_default(hook, vb):
    state = vb.status()["webhook_state"]
    listed = state[len("listening on "):].split(", ")
    assert all(a.startswith("127.") or a.startswith("[::1]") for a in listed), state
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no address besides loopback")
    with pytest.raises(OSError):
        socket.create_connection((outside, hook.port_), timeout=2).close()


def test_oversized_headers_refused(hook, vb, fake):
    body = envelope("call_ringing", call(fake))
    req = ("POST %s HTTP/1.1\r\nHost: x\r\nX-Padding: %s\r\nContent-Length: %d\r\n"
           "X-VoIPBIN-Signature: %s\r\n\r\n" % (PATH, "a" * 40000, len(body), sign(SECRET, body))).encode() + body
    assert raw_request(hook.port_, req).startswith(b"HTTP/1.1 431")
    many = "".join("X-H%d: v\r\n" % i for i in range(5000))
    req = ("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n"
           "X-VoIPBIN-Signature: %s\r\n\r\n" % (PATH, many, len(body), sign(SECRET, body))).encode() + body
    assert raw_request(hook.port_, req).startswith(b"HTTP/1.1 431")
    assert rows(vb) == []


def test_connection_cap(hook, vb, fake):
    held = []
    try:
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", hook.port_), timeout=10)
            s.sendall(b"POST /voipbin/events HTTP/1.1\r\nHost: x\r\n")
            held.append(s)
        # one more is accepted and closed at once
        extra = socket.create_connection(("127.0.0.1", hook.port_), timeout=10)
        extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        try:
            got = extra.recv(4096)
        except ConnectionResetError:
            got = b""
        extra.close()
        assert got == b"" and time.monotonic() - started < 5, got
    finally:
        for s in held:
            s.close()
    # once they are gone, requests are served again
    body = envelope("call_ringing", call(fake))

    def served():
        try:
            return Sender("127.0.0.1", hook.port_, PATH, SECRET, timeout=5).send(body)[0] == 200
        except OSError:
            return False
    wait_until(served, timeout=15, interval=0.2, what="a request served after the cap")


def test_200_while_locked_survives_kill_9(hook, vb, fake):
    """A 200 means the body is on disk in the journal: it needs no commit, so
    it is answered while voipbin_events is locked, and a kill -9 of the worker
    right after the answer does not lose it."""
    locker = vb.connect(autocommit=False)
    data = call(fake, "ringing")
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK voipbin_events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        status, _ = hook.send(envelope("call_ringing", data))
        assert status == 200 and time.monotonic() - started < 5
        pid = vb.worker_pid()
        os.kill(pid, signal.SIGKILL)
    finally:
        try:
            locker.rollback()
            locker.close()
        except Exception:
            pass                  # the postmaster's crash restart may have ended it
    hook.close()
    wait_until(lambda: try_query(lambda: vb.worker_pid() not in (None, pid)), timeout=60, what="a new worker")
    wait_until(lambda: try_query(lambda: [(r[0], r[2]) for r in rows(vb)] == [("webhook", data["id"])]),
               timeout=60, what="the event stored once by the next worker")
    listening(vb, hook.port_)



def test_dripping_client_is_closed_within_30s(hook, vb, fake):
    """A byte every few seconds keeps a connection from ever being silent
    for 15 s: the request's own deadline closes it."""
    s = socket.create_connection(("127.0.0.1", hook.port_), timeout=5)
    started = time.monotonic()
    closed = False
    try:
        s.sendall(b"POST /voipbin/events HTTP/1.1\r\nHost: x\r\n")
        while time.monotonic() - started < 40:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
    finally:
        s.close()
    took = time.monotonic() - started
    assert closed and took <= 33, took
    assert hook.send(envelope("call_ringing", call(fake)))[0] == 200


def test_standby_does_not_listen_until_promoted(hook, vb, fake):
    """A standby's journal is stored only if it is promoted: until then it
    must not answer 200 (the replica's copied settings name the same port)."""
    replica = vb.make_replica()
    try:
        replica.start()
        replica.wait_status(lambda s: s["state"] == "standby" and "standby" in s["webhook_state"],
                            what="the standby not listening")
        vb.stop("fast")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", hook.port_), timeout=2).close()
        replica.execute("SELECT pg_promote()")
        listening(replica, hook.port_)
        hook.close()
        data = call(fake)
        assert hook.send(envelope("call_ringing", data))[0] == 200
        wait_until(lambda: [(r[0], r[2]) for r in rows(replica)] == [("webhook", data["id"])],
                   what="stored on the promoted server")
    finally:
        hook.close()
        replica.destroy()
        vb.start()


# ---------------------------------------------------------------------------
# docs/webhooks.md's nginx snippet, run: a real nginx in front of the receiver
# ---------------------------------------------------------------------------

NGINX = "/usr/sbin/nginx"
README = os.path.join(os.path.dirname(HERE), "docs", "webhooks.md")


def readme_nginx_snippet():
    """The ```nginx block of docs/webhooks.md's "Receiving webhooks" section."""
    with open(README) as f:
        text = f.read()
    section = text[text.index("## Receiving webhooks"):]
    section = section[:section.index("\n## ", 1)]
    m = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert m, "no ```nginx block in docs/webhooks.md's Receiving webhooks"
    return m.group(1)


def _templated(snippet, replacements):
    """The snippet with each (old, new) replaced exactly once: a page that
    no longer has one of them fails here rather than testing something else."""
    for old, new in replacements:
        assert snippet.count(old) == 1, "docs/webhooks.md's nginx snippet has %d x %r" % (snippet.count(old), old)
        snippet = snippet.replace(old, new)
    return snippet


def _as_postgres():
    pw = pwd.getpwnam("postgres")
    os.setgid(pw.pw_gid)
    os.setgroups([])
    os.setuid(pw.pw_uid)


@pytest.fixture
def nginx(hook, certs):
    """nginx, as the postgres OS user (not root), on a free loopback port,
    running docs/webhooks.md's snippet with this test's receiver port and
    certificate; stopped by its PID."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed (test/install-deps.sh installs nginx-light)")
    prefix = tempfile.mkdtemp(prefix="voipbin-nginx-")
    os.chmod(prefix, 0o755)
    port = free_port()
    pw = pwd.getpwnam("postgres")
    for d in ("logs", "tmp"):
        os.mkdir(os.path.join(prefix, d))
        os.chown(os.path.join(prefix, d), pw.pw_uid, pw.pw_gid)
    server = _templated(readme_nginx_snippet(), [
        ("server 127.0.0.1:8089;", "server 127.0.0.1:%d;" % hook.port_),
        ("listen 443 ssl;", "listen 127.0.0.1:%d ssl;" % port),
        ("/etc/letsencrypt/live/hooks.example.com/fullchain.pem", certs["server_cert"]),
        ("/etc/letsencrypt/live/hooks.example.com/privkey.pem", certs["server_key"]),
    ])
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write("daemon off;\nmaster_process on;\nworker_processes 1;\n"
                "pid {p}/logs/nginx.pid;\nerror_log {p}/logs/error.log info;\n"
                "events {{ worker_connections 64; }}\n"
                "http {{\n"
                "    access_log {p}/logs/access.log;\n"
                "    client_body_temp_path {p}/tmp/body;\n    proxy_temp_path {p}/tmp/proxy;\n"
                "    fastcgi_temp_path {p}/tmp/fastcgi;\n    uwsgi_temp_path {p}/tmp/uwsgi;\n"
                "    scgi_temp_path {p}/tmp/scgi;\n"
                "{server}}}\n".format(p=prefix, server=server))
    errlog = os.path.join(prefix, "logs", "error.log")
    check = subprocess.run([NGINX, "-t", "-p", prefix, "-c", conf, "-e", errlog],
                           preexec_fn=_as_postgres, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout
    proc = subprocess.Popen([NGINX, "-p", prefix, "-c", conf, "-e", errlog],
                            preexec_fn=_as_postgres, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            assert proc.poll() is None, "nginx exited: " + open(errlog).read()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(up, timeout=15, what="nginx listening")
        ctx = ssl.create_default_context(cafile=certs["ca"])
        # VoIPBIN's side: https to the public name, here the test certificate's
        s = Sender("localhost", port, PATH, SECRET, ssl_context=ctx)
        s.nginx_pid = proc.pid
        s.nginx_log = errlog
        yield s
        s.close()
    finally:
        proc.terminate()          # SIGTERM to the master: a fast shutdown
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(prefix, ignore_errors=True)


def test_readme_nginx_snippet_delivers(nginx, hook, vb, fake):
    """VoIPBIN's signed webhook over https through docs/webhooks.md's nginx
    configuration, as written there, into voipbin_events."""
    assert pwd.getpwuid(os.stat("/proc/%d" % nginx.nginx_pid).st_uid).pw_name == "postgres"
    data = call(fake, "ringing")
    body = envelope("call_ringing", data)
    status, text = nginx.send(body)
    assert status == 200, (text, open(nginx.nginx_log).read()[-2000:])
    # 200 says the body is on disk in the journal; the row follows it
    wait_until(lambda: [(r[0], r[1], r[2]) for r in rows(vb)]
               == [("webhook", "call_ringing", data["id"])], what="the webhook's row")
    assert rows(vb)[0][3] == data
    sock = nginx.conn.sock
    # VoIPBIN's retry through the proxy: one row; PUT, its other method
    assert nginx.send(body)[0] == 200
    other = call(fake, "progressing")
    assert nginx.send(envelope("call_progressing", other), method="PUT")[0] == 200
    stored(vb, 2)
    assert [r[2] for r in rows(vb)] == [data["id"], other["id"]]
    assert nginx.conn.sock is sock            # keep-alive through the proxy
    # the signature reaches the receiver unchanged: a tampered body is refused
    assert nginx.deliver(body.replace(b"ringing", b"hangup!"), signature=sign(SECRET, body)) == 401
    # only the receiver's path is proxied
    assert nginx.send(body, path="/voipbin/other")[0] == 404
    assert nginx.send(body, path="/")[0] == 404
    # client_max_body_size 16m: nginx refuses a bigger body itself
    assert nginx.send(b"{" + b" " * (17 * 1024 * 1024) + b"}")[0] == 413
    stored(vb, 2, 0)
    assert nginx.send(envelope("call_ringing", call(fake)))[0] == 200
    stored(vb, 3)


def _post_as_soon_as_it_listens(port, body, secret, within=10.0):
    """Connects every few ms until the port takes the connection, and sends
    the signed POST on it at once: (status, seconds from connected to answer)."""
    deadline = time.monotonic() + within
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=0.05)
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
    connected = time.monotonic()
    try:
        sock.settimeout(15)
        sock.sendall(("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                      "X-VoIPBIN-Signature: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                      % (PATH, port, sign(secret, body), len(body))).encode() + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return int(answer.split(b" ")[1]), time.monotonic() - connected
    finally:
        sock.close()


def test_a_request_as_the_receiver_starts_waits_for_its_key(vb, fake):
    """The receiver starts without its key (a stopped receiver forgets a fetched
    one): a signed POST that arrives at once, while GET /customer is slow
    (1 s), waits for the fetch and is stored, 200, not 503 — five times."""
    fake.config(rest_delay=1)
    try:
        for i in range(5):
            port = free_port()
            fetches = _customer_fetches(fake)
            vb.set_conf(voipbin__webhook_port=port)
            body = envelope("call_ringing", call(fake, n=str(i)))
            status, took = _post_as_soon_as_it_listens(port, body, SECRET)
            assert status == 200, (i, status)
            # it did wait for the fetch the receiver's start began
            assert took > 0.5, (i, took)
            assert _customer_fetches(fake) == fetches + 1
            wait_until(lambda: len(rows(vb)) == i + 1, what="%d rows" % (i + 1))
            vb.set_conf(voipbin__webhook_port=0)
            vb.wait_status(lambda st: st["webhook_state"] == "off", what="receiver off")
    finally:
        fake.config(rest_delay=0)
        reset_webhook(vb)
    assert [r[0] for r in rows(vb)] == ["webhook"] * 5
