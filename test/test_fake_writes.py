"""Self-tests of the fake VoIPBIN's write endpoints and their fault knobs
(test/fake_voipbin.py): the answers VoIPBIN gives to the writes the outbox
sends (docs/requests.md), the record of every write, and the planned answers
the outbox's tests inject (a 503 that acted anyway, a bare 502 from a proxy,
a held answer, a closed connection...).

Run: /usr/bin/python3 -m pytest -q -p no:cacheprovider test/test_fake_writes.py
"""
import asyncio
import http.client
import json
import os
import ssl
import sys
import time
import uuid

import aiohttp
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fakeserver_fixture import FakeServerError, make_certs, start_fake  # noqa: E402
from pgcluster import wait_until  # noqa: E402

NIL = "00000000-0000-0000-0000-000000000000"
# What a dropped connection looks like to http.client over TLS.
GONE = (ConnectionError, ssl.SSLError, http.client.RemoteDisconnected,
        http.client.IncompleteRead)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    fake = start_fake(tmp_path_factory.mktemp("fake"), certs=certs)
    yield fake
    assert fake.stop() == 0


@pytest.fixture
def fake(server):
    server.reset(drop=True)
    return server


# ----------------------------------------------------------------- helpers

class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def error(self):
        return self.json()["error"]

    def __repr__(self):
        return "Reply(%d, %r)" % (self.status, self.body[:300])


def api(fake, method, path, body=b"{}", headers=None, timeout=5, auth=True):
    """One request on its own connection (closed after, so that a client that
    gave up is gone for the server too). body: bytes, None, or a JSON value."""
    ctx = ssl.create_default_context(cafile=fake.ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", fake.api_port, context=ctx, timeout=timeout)
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    try:
        url = "/v1.0" + path + ("?accesskey=" + fake.accesskey if auth else "")
        conn.request(method, url, body=body, headers=headers or {})
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def assert_error(reply, status, env_status, reason, message=None):
    assert reply.status == status, reply
    err = reply.error()
    assert (err["status"], err["reason"]) == (env_status, reason), err
    if message is not None:
        assert err["message"] == message
    assert err["request_id"] == reply.headers["X-Request-Id"]


def get_call(fake, call_id):
    return api(fake, "GET", "/calls/" + call_id, body=None).json()


TEL = {"type": "tel", "target": "+15551230002"}


# ----------------------------------------------------------------- POST /calls

def test_post_calls_places_new_calls_every_time(fake):
    body = {"source": {"type": "tel", "target": "+15551230001"},
            "destinations": [TEL, {"type": "sip", "target": "bob@example.com"},
                             {"type": "fax", "target": "x"}]}
    first, second = api(fake, "POST", "/calls", body), api(fake, "POST", "/calls", body)
    assert first.status == second.status == 200
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"
    calls = first.json()["calls"] + second.json()["calls"]
    assert first.json()["groupcalls"] == [] and len(calls) == 4    # the fax is skipped
    assert len({c["id"] for c in calls}) == 4
    for c in calls:
        assert (c["status"], c["direction"], c["customer_id"]) == ("dialing", "outgoing",
                                                                   fake.customer_id)
        assert get_call(fake, c["id"]) == c
    assert [c["destination"] for c in first.json()["calls"]] == body["destinations"][:2]
    writes = fake.writes("POST", "/calls")
    assert [(w["status"], w["performed"], w["body"]) for w in writes] == [(200, True, body)] * 2


@pytest.mark.parametrize("body", [{}, {"destinations": []}, {"destinations": [
    {"type": "tel", "target": "5551230002"}]}])
def test_post_calls_with_no_callable_destination_is_500(fake, body):
    reply = api(fake, "POST", "/calls", body)
    assert_error(reply, 500, "INTERNAL", "INTERNAL_ERROR", "An internal error occurred.")
    assert fake.writes()[-1]["performed"] is False


def test_post_calls_body_must_be_json(fake):
    for raw in (b"", b"{nope", b"[]", b'{"destinations": {}}'):
        reply = api(fake, "POST", "/calls", raw)
        assert_error(reply, 400, "INVALID_ARGUMENT", "INVALID_JSON_BODY")
    # trailing bytes after the first value are ignored, as by Go's json.Decoder
    assert api(fake, "POST", "/calls", b'{"destinations": [{"type": "tel", '
                                       b'"target": "+15551230002"}]} trailing').status == 200


def test_post_calls_emits_call_created(fake):
    async def body():
        ctx = ssl.create_default_context(cafile=fake.ca_file)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            ws = await s.ws_connect(fake.ws_url + "?accesskey=" + fake.accesskey)
            topic = "customer_id:%s:call:call_" % fake.customer_id
            await ws.send_json({"type": "subscribe", "topics": [topic]})
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, fake.wait_topics, [topic])
            reply = await loop.run_in_executor(
                None, lambda: api(fake, "POST", "/calls", {"destinations": [TEL]}))
            [call] = reply.json()["calls"]
            assert json.loads(await ws.receive_str(timeout=5)) == call
            await ws.close()
    asyncio.run(asyncio.wait_for(body(), 15))


# ----------------------------------------------------------------- hangup

def test_hangup_answers_terminating_then_the_call_is_hungup(fake):
    call = fake.add_call()
    reply = api(fake, "POST", "/calls/%s/hangup" % call["id"], body=None)
    assert reply.status == 200 and reply.json()["status"] == "terminating"
    ended = get_call(fake, call["id"])
    assert (ended["status"], ended["hangup_reason"]) == ("hangup", "normal")
    # an ended call: 200 with the call as it is, no new event
    published = fake.state()["published"]
    again = api(fake, "POST", "/calls/%s/hangup" % call["id"], body=None)
    assert again.status == 200 and again.json() == ended
    assert fake.state()["published"] == published


def test_hangup_of_an_outgoing_call_not_answered_cancels(fake):
    [call] = api(fake, "POST", "/calls", {"destinations": [TEL]}).json()["calls"]
    assert api(fake, "POST", "/calls/%s/hangup" % call["id"]).json()["status"] == "canceling"
    assert get_call(fake, call["id"])["hangup_reason"] == "cancel"


def test_hangup_errors(fake):
    assert_error(api(fake, "POST", "/calls/%s/hangup" % uuid.uuid4()),
                 404, "NOT_FOUND", "CALL_NOT_FOUND", "The call was not found.")
    for bad in (NIL, "not-a-uuid"):
        assert_error(api(fake, "POST", "/calls/%s/hangup" % bad), 400, "INVALID_ARGUMENT",
                     "INVALID_ID", "The provided id is not a valid UUID.")
    call = fake.add_call()
    fake.control("objects", {"delete": {"calls": [call["id"]]}})
    assert_error(api(fake, "POST", "/calls/%s/hangup" % call["id"]),
                 409, "FAILED_PRECONDITION", "STATE_INVALID")


def test_hangup_ends_the_calls_transcribes(fake):
    call = fake.add_call()
    tr = api(fake, "POST", "/transcribes", {"reference_type": "call",
                                            "reference_id": call["id"]}).json()
    api(fake, "POST", "/calls/%s/hangup" % call["id"])
    assert api(fake, "POST", "/transcribes/%s/stop" % tr["id"]).json()["status"] == "done"


# ----------------------------------------------------------------- talk

def test_talk_answers_empty_and_records_what_was_spoken(fake):
    call = fake.add_call()
    for text in ("Hello", "Hello", "AT&amp;T", "<speak>Hi <break time='1s'/></speak>"):
        reply = api(fake, "POST", "/calls/%s/talk" % call["id"],
                    {"text": text, "language": "en-US"})
        assert (reply.status, reply.body) == (200, b"")
        assert "Content-Type" not in reply.headers
    spoken = fake.spoken(call["id"])
    assert [t["text"] for t in spoken] == ["Hello", "Hello", "AT&amp;T",
                                           "<speak>Hi <break time='1s'/></speak>"]
    assert {t["language"] for t in spoken} == {"en-US"}
    assert fake.spoken(uuid.uuid4()) == []


@pytest.mark.parametrize("text", ["AT&T", "1 < 2", "<speak>unclosed"])
def test_talk_of_ill_formed_ssml_is_500(fake, text):
    call = fake.add_call()
    assert_error(api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": text}),
                 500, "INTERNAL", "INTERNAL_ERROR")
    assert fake.spoken() == []


def test_talk_needs_a_json_body_and_a_live_call(fake):
    call = fake.add_call()
    reply = api(fake, "POST", "/calls/%s/talk" % call["id"], b"")
    assert_error(reply, 400, "INVALID_ARGUMENT", "INVALID_JSON_BODY")
    assert reply.headers["Content-Type"].startswith("text/plain")   # sniffed, as gin's
    assert api(fake, "POST", "/calls/%s/talk" % call["id"], b"{}").status == 200
    fake.set_call(call["id"], status="hangup")
    assert_error(api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"}),
                 500, "INTERNAL", "INTERNAL_ERROR")
    assert len(fake.spoken()) == 1


# ----------------------------------------------------------------- recording

def test_recording_start_and_stop(fake):
    call = fake.add_call(status="ringing")
    path = "/calls/%s/recording_" % call["id"]
    assert api(fake, "POST", path + "start", {"format": "wav"}).status == 500  # not progressing
    fake.set_call(call["id"], status="progressing")
    started = api(fake, "POST", path + "start", {"format": "wav"})
    assert started.status == 200
    rid = started.json()["recording_id"]
    assert rid != NIL and get_call(fake, call["id"])["recording_id"] == rid
    assert api(fake, "GET", "/recordings/" + rid, body=None).json()["reference_id"] == call["id"]
    assert api(fake, "POST", path + "start", {"format": "wav"}).status == 500  # one is set
    assert api(fake, "POST", path + "start", b"").status == 400
    stopped = api(fake, "POST", path + "stop", body=None)
    assert stopped.status == 200 and stopped.json()["id"] == call["id"]
    assert stopped.json()["recording_id"] == NIL
    again = api(fake, "POST", path + "stop", body=None)     # nothing set: a zeroed call
    assert again.status == 200 and again.json()["id"] == NIL
    assert api(fake, "POST", path + "start", {}).status == 200


# ----------------------------------------------------------------- hold, mute, moh, silence

@pytest.mark.parametrize("what", ["hold", "moh", "silence", "mute"])
def test_media_on_off(fake, what):
    call = fake.add_call()
    path = "/calls/%s/%s" % (call["id"], what)
    for method in ("POST", "POST", "DELETE", "DELETE"):
        reply = api(fake, method, path, {})
        assert (reply.status, reply.body) == (200, b""), reply
    assert fake.state()["call_media"][call["id"]] == {what: False}
    fake.set_call(call["id"], status="hangup")
    assert_error(api(fake, "POST", path, {}), 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                 "The request contains invalid data.")


def test_mute_needs_a_body_even_to_unmute(fake):
    call = fake.add_call()
    path = "/calls/%s/mute" % call["id"]
    assert_error(api(fake, "DELETE", path, b""), 400, "INVALID_ARGUMENT", "INVALID_JSON_BODY")
    assert api(fake, "POST", path, {}).status == 200
    assert get_call(fake, call["id"])["mute_direction"] == "both"
    assert api(fake, "DELETE", path, {"direction": "in"}).status == 200
    assert get_call(fake, call["id"])["mute_direction"] == "out"


# ----------------------------------------------------------------- transcribes

def test_transcribe_start_dedupes_and_stop_repeats(fake):
    call = fake.add_call()
    body = {"reference_type": "call", "reference_id": call["id"], "language": "en-us",
            "direction": "sideways"}
    first = api(fake, "POST", "/transcribes", body)
    assert first.status == 200
    tr = first.json()
    assert (tr["status"], tr["language"], tr["direction"]) == ("progressing", "en-US", "both")
    assert_error(api(fake, "POST", "/transcribes", body), 409, "ALREADY_EXISTS",
                 "TRANSCRIBE_ALREADY_PROGRESSING")
    other = api(fake, "POST", "/transcribes", dict(body, language="de-DE"))
    assert other.status == 200 and other.json()["id"] != tr["id"]
    for _ in range(2):
        stop = api(fake, "POST", "/transcribes/%s/stop" % tr["id"], body=None)
        assert stop.status == 200 and stop.json()["status"] == "done"
    assert api(fake, "POST", "/transcribes", body).status == 200   # none progressing now
    assert_error(api(fake, "POST", "/transcribes/%s/stop" % uuid.uuid4()), 404, "NOT_FOUND",
                 "TRANSCRIBE_NOT_FOUND")


def test_transcribe_start_errors(fake):
    call = fake.add_call()
    for rtype in ("confbridge", "", None):
        assert_error(api(fake, "POST", "/transcribes", {"reference_type": rtype,
                                                        "reference_id": call["id"]}),
                     400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert_error(api(fake, "POST", "/transcribes", {"reference_type": "call",
                                                    "reference_id": "junk"}),
                 404, "NOT_FOUND", "CALL_NOT_FOUND")
    fake.set_call(call["id"], status="hangup")
    assert_error(api(fake, "POST", "/transcribes", {"reference_type": "call",
                                                    "reference_id": call["id"]}),
                 500, "INTERNAL", "INTERNAL_ERROR")


# ----------------------------------------------------------------- messages

def test_messages_send_every_time(fake):
    body = {"source": {"type": "tel", "target": "+15551230001"},
            "destinations": [TEL], "text": "Your summary is ready."}
    a, b = api(fake, "POST", "/messages", body), api(fake, "POST", "/messages", body)
    assert a.status == b.status == 200 and a.json()["id"] != b.json()["id"]
    assert [t["status"] for t in a.json()["targets"]] == ["queued"]
    assert a.json()["text"] == body["text"]
    assert_error(api(fake, "POST", "/messages", dict(body, destinations=[])),
                 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")


# ----------------------------------------------------------------- routes, recording of writes

def test_unknown_write_routes(fake):
    # NoRoute answers before authentication
    dashed = "/calls/%s/recording-start" % uuid.uuid4()
    assert_error(api(fake, "POST", dashed, auth=False),
                 404, "NOT_FOUND", "ROUTE_NOT_FOUND", "The requested endpoint does not exist.")
    assert_error(api(fake, "GET", "/calls/%s/hangup" % uuid.uuid4(), body=None),
                 404, "NOT_FOUND", "ROUTE_NOT_FOUND")
    moved = api(fake, "POST", "/calls/", {"destinations": [TEL]})
    assert moved.status == 307 and moved.headers["Location"] == "/v1.0/calls"
    assert [(w["path"], w["status"]) for w in fake.writes()] == [
        ("/v1.0" + dashed, 404), ("/v1.0/calls/", 307)]     # the GET is no write


def test_writes_record_what_was_asked(fake):
    call = fake.add_call()
    t0 = time.time()
    reply = api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"},
                headers={"X-Request-Id": "outbox-17"})
    assert reply.headers["X-Request-Id"] == "outbox-17"
    api(fake, "POST", "/calls/%s/hangup" % call["id"], body=None, auth=False)
    talk, hangup = fake.writes()
    assert talk == {"method": "POST", "path": "/v1.0/calls/%s/talk" % call["id"], "query": {},
                    "body": {"text": "hi"}, "at": talk["at"], "request_id": "outbox-17",
                    "status": 200, "performed": True, "planned": None}
    assert t0 <= talk["at"] <= time.time()
    assert (hangup["status"], hangup["performed"], hangup["body"]) == (401, False, None)
    assert fake.writes("POST", "/calls/%s/talk" % call["id"]) == [talk]
    assert fake.writes(path="/v1.0/calls/%s/hangup" % call["id"]) == [hangup]
    assert fake.writes("DELETE") == []
    fake.reset()
    assert fake.writes() == []


def test_writes_share_the_readers_rate_limit(fake):
    fake.config(rate_limit={"rate": 1, "burst": 2, "tokens": 1})
    call = fake.add_call()
    assert api(fake, "GET", "/calls/" + call["id"], body=None).status == 200
    reply = api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"})
    assert_error(reply, 429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED")
    assert reply.headers["Retry-After"] == "1"
    assert fake.writes()[-1]["performed"] is False and fake.spoken() == []


def test_set_call_publishes_when_asked(fake):
    call = fake.add_call(status="ringing")
    published = fake.state()["published"]
    new = fake.set_call(call["id"], event="call_progressing", status="progressing")
    assert new["status"] == "progressing" == get_call(fake, call["id"])["status"]
    assert fake.state()["published"] == published + 1
    with pytest.raises(FakeServerError):
        fake.set_call(uuid.uuid4(), status="hangup")


# ----------------------------------------------------------------- planned answers

def test_plan_503_request_timeout_acts_anyway(fake):
    call = fake.add_call()
    fake.plan_writes("POST", r"/calls/[^/]+/hangup",
                     [{"status": 503, "reason": "REQUEST_TIMEOUT", "perform": True}])
    reply = api(fake, "POST", "/calls/%s/hangup" % call["id"])
    assert_error(reply, 503, "UNAVAILABLE", "REQUEST_TIMEOUT", "The request timed out.")
    assert get_call(fake, call["id"])["status"] == "hangup"
    [w] = fake.writes()
    assert (w["status"], w["performed"], w["planned"]["status"]) == (503, True, 503)
    assert api(fake, "POST", "/calls/%s/hangup" % call["id"]).status == 200   # used up
    assert fake.state()["plans"] == [{"method": "POST", "path": r"/calls/[^/]+/hangup",
                                      "left": 0}]


def test_plan_500_fails_before_acting(fake):
    published = fake.state()["published"]
    fake.plan_writes("POST", "/calls", [{"status": 500}, {"status": 404,
                                                          "reason": "CALL_NOT_FOUND"}])
    assert_error(api(fake, "POST", "/calls", {"destinations": [TEL]}),
                 500, "INTERNAL", "INTERNAL_ERROR", "An internal error occurred.")
    assert_error(api(fake, "POST", "/calls", {"destinations": [TEL]}),
                 404, "NOT_FOUND", "CALL_NOT_FOUND")
    assert fake.state()["published"] == published     # no call_created: no call
    assert api(fake, "POST", "/calls", {"destinations": [TEL]}).status == 200
    assert [w["performed"] for w in fake.writes()] == [False, False, True]


def test_plan_bare_502_is_plain_text(fake):
    fake.plan_writes(None, "/v1.0/messages", [{"status": 502, "bare": True, "perform": False}])
    reply = api(fake, "POST", "/messages", {"destinations": [TEL], "text": "x"})
    assert (reply.status, reply.body) == (502, b"error code: 502")
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "X-Request-Id" not in reply.headers
    assert fake.writes()[0]["performed"] is False


def test_plan_429_with_retry_after(fake):
    call = fake.add_call()
    fake.plan_writes("POST", r"/calls/.*/talk", [{"status": 429, "retry_after": 2}])
    reply = api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"})
    assert_error(reply, 429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED")
    assert reply.headers["Retry-After"] == "2"
    assert fake.spoken() == []


def test_plan_hold_answers_late(fake):
    call = fake.add_call()
    fake.plan_writes("POST", r"/calls/.*/talk", [{"hold": 0.4, "perform": True}])
    t0 = time.monotonic()
    reply = api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"})
    assert reply.status == 200 and time.monotonic() - t0 >= 0.4
    assert len(fake.spoken()) == 1


@pytest.mark.parametrize("hold", [30, "forever"])
def test_plan_hold_then_the_client_goes(fake, hold):
    call = fake.add_call()
    fake.plan_writes("POST", r"/calls/.*/talk", [{"hold": hold, "perform": True}])
    with pytest.raises(TimeoutError):
        api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"}, timeout=0.3)
    [w] = wait_until(lambda: [w for w in fake.writes() if w.get("client_gone")],
                   what="the server noticing the client left")
    assert (w["status"], w["performed"]) == (None, True)
    assert len(fake.spoken()) == 1


def test_plan_hold_before_acting_acts_only_if_the_client_stays(fake):
    call = fake.add_call()
    fake.plan_writes("POST", r"/calls/.*/talk", [{"hold": 30, "perform": False}])
    with pytest.raises(TimeoutError):
        api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"}, timeout=0.3)
    wait_until(lambda: fake.writes()[0].get("client_gone"), what="client gone")
    assert fake.spoken() == [] and fake.writes()[0]["performed"] is False


def test_reset_releases_a_held_answer(fake):
    call = fake.add_call()
    fake.plan_writes("POST", r"/calls/.*/talk", [{"hold": "forever"}])

    async def body():
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, lambda: api(fake, "POST", "/calls/%s/talk" % call["id"],
                                                     {"text": "hi"}, timeout=5))
        await loop.run_in_executor(None, lambda: wait_until(fake.writes, what="the request"))
        await loop.run_in_executor(None, fake.reset)
        with pytest.raises(GONE):
            await fut
    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(body(), 10))
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("perform", [True, False])
def test_plan_close_without_an_answer(fake, perform):
    call = fake.add_call()
    fake.plan_writes("POST", r"/calls/.*/talk", [{"close": True, "perform": perform}])
    with pytest.raises(GONE):
        api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"})
    [w] = fake.writes()
    assert (w["status"], w["performed"]) == (None, perform)
    assert len(fake.spoken()) == (1 if perform else 0)
    assert api(fake, "POST", "/calls/%s/talk" % call["id"], {"text": "hi"}).status == 200


def test_plan_performing_keeps_the_endpoints_own_checks(fake):
    fake.plan_writes("POST", r"/calls/.*/hangup",
                     [{"status": 503, "reason": "REQUEST_TIMEOUT", "perform": True}])
    assert_error(api(fake, "POST", "/calls/%s/hangup" % uuid.uuid4()),
                 404, "NOT_FOUND", "CALL_NOT_FOUND")
    assert fake.state()["plans"][0]["left"] == 0


def test_plan_checks_its_answers_and_reset_drops_it(fake):
    with pytest.raises(FakeServerError):
        fake.plan_writes("POST", "/calls", [{"status": 500, "preform": True}])
    with pytest.raises(FakeServerError):
        fake.plan_writes("POST", "/calls", [{"perform": True}])
    fake.plan_writes("POST", "/calls", [{"status": 500}])
    assert fake.plan_writes("POST", "/calls", [{"status": 503}, {"status": 500}]) == [
        {"method": "POST", "path": "/calls", "left": 2}]
    fake.reset()
    assert fake.state()["plans"] == []
    assert api(fake, "POST", "/calls", {"destinations": [TEL]}).status == 200
