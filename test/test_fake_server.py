"""Self-tests of the fake VoIPBIN server (test/fake_voipbin.py).

They pin down the behaviours of the real server the extension has to cope
with (docs/voipbin.md), so that the integration tests that use the
fake test the extension against the right thing.

Run: cd /work/main && /usr/bin/python3 -m pytest -q test/test_fake_server.py
"""
import asyncio
import base64
import json
import os
import socket
import ssl
import sys
import time
import uuid

import aiohttp
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fakeserver_fixture import make_certs, start_fake  # noqa: E402

WS = aiohttp.WSMsgType
ABRUPT = (WS.CLOSED, WS.ERROR)      # what aiohttp reports for TCP gone without close frame
OTHER_CUSTOMER = "11111111-2222-4333-8444-555555555555"


# ----------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, certs):
    fake = start_fake(tmp_path_factory.mktemp("fake"), certs=certs)
    yield fake
    assert fake.stop() == 0


@pytest.fixture
def fake(server):
    server.reset(drop=True)
    return server


@pytest.fixture(scope="module")
def fast_fake(tmp_path_factory, certs):
    """A second server with gorilla's timers shrunk through the CLI."""
    fake = start_fake(tmp_path_factory.mktemp("fast"), certs=certs,
                      ping_interval=0.3, pong_timeout=1)
    yield fake
    assert fake.stop() == 0


# ----------------------------------------------------------------- helpers

def run(coro, timeout=15):
    """Every test body is bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def blocking(fn, *args):
    """Run a blocking control-port call without stalling the client's loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def session(fake, cookies=None):
    ctx = ssl.create_default_context(cafile=fake.ca_file)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), cookies=cookies)


def ws_url(fake, auth="accesskey"):
    if auth == "accesskey":
        return fake.ws_url + "?accesskey=" + fake.accesskey
    if auth == "token":
        return fake.ws_url + "?token=" + fake.jwt
    return fake.ws_url


async def connect(s, fake, auth="accesskey", **kw):
    headers = {"Authorization": "Bearer " + fake.jwt} if auth == "bearer" else None
    return await s.ws_connect(ws_url(fake, auth), headers=headers, **kw)


async def subscribe(ws, fake, *topics, kind="subscribe"):
    await ws.send_json({"type": kind, "topics": list(topics)})
    if kind == "subscribe":
        await blocking(fake.wait_topics, topics)


async def raw_handshake(fake, query="", headers=None, cookies=None):
    """An upgrade request whose answer is read as plain HTTP (for the error cases)."""
    hdrs = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    hdrs.update(headers or {})
    async with session(fake, cookies) as s:
        async with s.get(fake.ws_url.replace("wss://", "https://") + query,
                         headers=hdrs) as r:
            return r.status, r.headers, await r.json(content_type=None)


def call(fake, **extra):
    d = {"id": str(uuid.uuid4()), "customer_id": fake.customer_id, "owner_type": "",
         "owner_id": "00000000-0000-0000-0000-000000000000", "status": "ringing",
         "source": {"type": "tel", "target": "+15550001"},
         "destination": {"type": "tel", "target": "+15550002"}, "direction": "incoming"}
    d.update(extra)
    return d


def marker_topic(fake):
    # 4 parts ending in "marker_": matches only the new-format topic, once.
    return "customer_id:%s:marker:marker_" % fake.customer_id


async def publish_marker(fake):
    mid = str(uuid.uuid4())
    await blocking(lambda: fake.publish("marker_created",
                                        {"id": mid, "customer_id": fake.customer_id}))
    return mid


async def frames_until_marker(ws, mid, timeout=5):
    """Text frames received before the marker event; the fake keeps per-connection
    order, so this proves what did NOT arrive without sleeping."""
    got = []
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == WS.TEXT, msg
        if mid in msg.data:
            return got
        got.append(msg.data)


async def assert_dropped(ws, timeout=5):
    msg = await ws.receive(timeout=timeout)
    while msg.type in (WS.PING, WS.PONG):
        msg = await ws.receive(timeout=timeout)
    assert msg.type in ABRUPT, "expected the TCP connection to vanish, got %r" % (msg,)


# ----------------------------------------------------------------- certificates

def test_gen_certs_fast_and_readable(tmp_path):
    t0 = time.monotonic()
    paths = make_certs(tmp_path / "c")
    assert time.monotonic() - t0 < 2
    for key in ("ca", "ca_key", "server", "server_key", "other_ca", "rogue", "rogue_key"):
        assert os.stat(paths[key]).st_mode & 0o004, key
    assert os.stat(paths["dir"]).st_mode & 0o005 == 0o005


def _tls_connect(fake, cafile, hostname):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", fake.api_port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=hostname) as tls:
            return tls.version()


def test_tls_trusts_own_ca_only(tmp_path, certs, server):
    assert _tls_connect(server, certs["ca"], "127.0.0.1")
    assert _tls_connect(server, certs["ca"], "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_connect(server, certs["other_ca"], "127.0.0.1")
    with start_fake(tmp_path, certs=certs, cert=certs["rogue"], key=certs["rogue_key"]) as rogue:
        with pytest.raises(ssl.SSLCertVerificationError):
            _tls_connect(rogue, certs["ca"], "127.0.0.1")
        assert _tls_connect(rogue, certs["other_ca"], "127.0.0.1")


# ----------------------------------------------------------------- authentication

@pytest.mark.parametrize("case", ["none", "wrong_key", "key_as_bearer", "key_as_token",
                                  "wrong_jwt", "empty_bearer"])
def test_ws_auth_rejected_before_upgrade(fake, case):
    query, headers, reason = "", None, "INVALID_CREDENTIALS"
    if case == "none":
        reason = "AUTHENTICATION_REQUIRED"
    elif case == "wrong_key":
        query = "?accesskey=vb_" + "A" * 32
    elif case == "key_as_bearer":
        headers = {"Authorization": "Bearer " + fake.accesskey}
    elif case == "key_as_token":
        query = "?token=" + fake.accesskey
    elif case == "wrong_jwt":
        headers = {"Authorization": "Bearer " + fake.jwt + "x"}
    elif case == "empty_bearer":
        headers, reason = {"Authorization": "Bearer "}, "AUTHENTICATION_REQUIRED"
    status, hdrs, body = run(raw_handshake(fake, query, headers))
    assert status == 401
    err = body["error"]
    assert err["status"] == "UNAUTHENTICATED" and err["reason"] == reason
    assert err["request_id"] == hdrs["X-Request-Id"]
    st = fake.state()
    assert not st["connections"]
    assert st["handshakes"][-1]["status"] == 401


@pytest.mark.parametrize("auth,kind,source", [
    ("accesskey", "accesskey", "query:accesskey"), ("bearer", "jwt", "header:bearer"),
    ("token", "jwt", "query:token"), ("cookie", "accesskey", "cookie:accesskey")])
def test_ws_auth_accepted(fake, auth, kind, source):
    async def body():
        cookies = {"accesskey": fake.accesskey} if auth == "cookie" else None
        async with session(fake, cookies) as s:
            ws = await connect(s, fake, auth)
            conns = await blocking(fake.wait_connections, 1)
            assert conns[0]["auth"] == kind and conns[0]["auth_source"] == source
            assert "X-Request-Id" in ws._response.headers
            await ws.close()
    run(body())


# ----------------------------------------------------------------- topics and delivery

def test_publish_raw_duplicates_per_topic(fake):
    """3-part prefix: old+new topic -> twice; ':call:call_' -> once; ':call:*' -> never."""
    async def body():
        c = fake.customer_id
        async with session(fake) as s:
            wss = [await connect(s, fake) for _ in range(3)]
            for ws, t in zip(wss, ["customer_id:%s:call" % c, "customer_id:%s:call:call_" % c,
                                   "customer_id:%s:call:*" % c]):
                await subscribe(ws, fake, t, marker_topic(fake))
            ev = call(fake)
            res = await blocking(lambda: fake.publish("call_created", ev))
            assert res["delivered"] == 3
            mid = await publish_marker(fake)
            counts = []
            for ws in wss:
                frames = await frames_until_marker(ws, mid)
                assert all(json.loads(f) == ev for f in frames)
                counts.append(len(frames))
            assert counts == [2, 1, 0]
    run(body())


def test_frame_shapes(fake):
    async def body():
        async with session(fake) as s:
            ws = await connect(s, fake)
            await subscribe(ws, fake, "customer_id:%s:call:call_" % fake.customer_id)
            ev = call(fake, status="hangup")
            for shape in ("raw", "wrapped", "event_type"):
                await blocking(lambda: fake.publish("call_hangup", ev, shape=shape))
            raw, wrapped, et = [await ws.receive_str(timeout=5) for _ in range(3)]
            assert json.loads(raw) == ev
            assert wrapped == json.dumps({"type": "call_hangup", "data": ev}, separators=(",", ":"))
            assert json.loads(et) == {"event_type": "call_hangup", "data": ev}
    run(body())


def test_transcript_topic_and_agent_scope(fake):
    async def body():
        c = fake.customer_id
        st = await blocking(fake.state)
        agent = st["agent_id"]
        async with session(fake) as s:
            ws_tr = await connect(s, fake)
            ws_tb = await connect(s, fake)
            ws_ag = await connect(s, fake, "bearer")    # the JWT is an agent
            await subscribe(ws_tr, fake, "customer_id:%s:transcript" % c, marker_topic(fake))
            await subscribe(ws_tb, fake, "customer_id:%s:transcribe" % c, marker_topic(fake))
            await subscribe(ws_ag, fake, "agent_id:%s" % agent, marker_topic(fake))
            tr = {"id": str(uuid.uuid4()), "customer_id": c, "transcribe_id": str(uuid.uuid4()),
                  "direction": "in", "message": "hello", "tm_transcript": "0001-01-01T00:00:01Z",
                  "tm_create": "2026-02-21T10:05:15.1Z"}
            await blocking(lambda: fake.publish("transcript_created", tr))
            await blocking(lambda: fake.publish("call_created", call(fake, owner_id=agent)))
            mid = await publish_marker(fake)
            assert len(await frames_until_marker(ws_tr, mid)) == 2
            assert len(await frames_until_marker(ws_tb, mid)) == 0
            assert len(await frames_until_marker(ws_ag, mid)) == 2   # agent old + new topics
    run(body())


def test_unsubscribe_invalid_json_and_unknown_type_keep_connection(fake):
    async def body():
        t = "customer_id:%s:call" % fake.customer_id
        async with session(fake) as s:
            ws = await connect(s, fake)
            await subscribe(ws, fake, t, t, marker_topic(fake))     # re-subscribe is a no-op
            await ws.send_str("this is not json")
            await ws.send_str('{"type": "ping", "topics": []}')
            await ws.send_str('{"type": 5, "topics": ["garbage"]}')  # not a hook: ignored
            await subscribe(ws, fake, t, kind="unsubscribe")
            st = await blocking(fake.wait_state,
                                lambda st: st["connections"] and t not in st["connections"][0]["topics"])
            assert st["connections"][0]["topics"] == [marker_topic(fake)]
            assert "this is not json" in st["connections"][0]["frames_from_client"]
            await blocking(lambda: fake.publish("call_created", call(fake)))
            mid = await publish_marker(fake)
            assert await frames_until_marker(ws, mid) == []
    run(body())


def test_uppercase_customer_id_is_valid_but_never_matches(fake):
    async def body():
        async with session(fake) as s:
            ws = await connect(s, fake)
            await subscribe(ws, fake, "customer_id:%s" % fake.customer_id.upper(),
                            marker_topic(fake))
            await blocking(lambda: fake.publish("call_created", call(fake)))
            mid = await publish_marker(fake)
            assert await frames_until_marker(ws, mid) == []
    run(body())


@pytest.mark.parametrize("topic", [
    "customer_id:" + OTHER_CUSTOMER,
    "customer_id:%s:call" % OTHER_CUSTOMER,
    "customer_id:00000000-0000-0000-0000-000000000000",
    "customer_id:not-a-uuid:call",
    "call",
    "queue_id:{cust}:call",
    "agent_id:{agent}",            # an access key has no agent id
])
def test_invalid_topic_drops_connection_without_close_frame(fake, topic):
    async def body():
        st = await blocking(fake.state)
        bad = topic.format(cust=fake.customer_id, agent=st["agent_id"])
        good = "customer_id:%s:call" % fake.customer_id
        async with session(fake) as s:
            ws = await connect(s, fake)
            await ws.send_json({"type": "subscribe", "topics": [good, bad]})
            await assert_dropped(ws)
            st = await blocking(fake.wait_state, lambda st: st["closed"])
            closed = st["closed"][-1]
            assert closed["close_reason"] == "invalid_topic"
            assert closed["topics"] == []       # the whole batch is rejected
    run(body())


def test_client_binary_frame_drops_connection(fake):
    async def body():
        async with session(fake) as s:
            ws = await connect(s, fake)
            await ws.send_bytes(b'{"type":"subscribe","topics":[]}')
            await assert_dropped(ws)
        st = await blocking(fake.wait_state, lambda st: st["closed"])
        assert st["closed"][-1]["close_reason"] == "binary"
    run(body())


# ----------------------------------------------------------------- keepalive

def test_ping_then_pong_timeout(fast_fake):
    """Server pings every 0.3 s; without pongs it drops the connection after 1 s,
    even though the client keeps pinging (client pings get pongs, nothing more)."""
    fast_fake.reset(drop=True)

    async def body():
        async with session(fast_fake) as s:
            ws = await connect(s, fast_fake, autoping=False)
            t0 = time.monotonic()
            msg = await ws.receive(timeout=2)
            assert msg.type == WS.PING and time.monotonic() - t0 < 0.3 + 0.4
            await ws.ping(b"hi")
            pongs = 0
            while True:
                msg = await ws.receive(timeout=3)
                if msg.type == WS.PONG:
                    pongs += 1
                    await ws.ping(b"again")
                elif msg.type != WS.PING:
                    break
            elapsed = time.monotonic() - t0
            assert msg.type in ABRUPT, msg
            assert pongs >= 1 and 0.8 < elapsed < 2.5, (pongs, elapsed)
        st = await blocking(fast_fake.wait_state, lambda st: st["closed"])
        assert st["closed"][-1]["close_reason"] == "pong_timeout"
        assert st["closed"][-1]["pongs"] == 0
    run(body())


def test_pongs_keep_connection_alive(fast_fake):
    fast_fake.reset(drop=True)

    async def body():
        async with session(fast_fake) as s:
            ws = await connect(s, fast_fake)          # aiohttp answers pings itself
            # > 2x pong_timeout and nothing happens. (An outer wait_for: aiohttp's
            # receive(timeout=) restarts its timer on every auto-answered ping.)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.receive(), 2.2)
            st = await blocking(fast_fake.state)
            assert len(st["connections"]) == 1 and st["connections"][0]["pongs"] >= 4
    run(body())


def test_freeze_stops_pings_reads_and_delivery(fast_fake):
    fast_fake.reset(drop=True)

    async def body():
        async with session(fast_fake) as s:
            ws = await connect(s, fast_fake, autoping=False)
            await subscribe(ws, fast_fake, "customer_id:%s:call:call_" % fast_fake.customer_id)
            await blocking(fast_fake.freeze, True)
            await ws.ping(b"frozen?")
            await blocking(lambda: fast_fake.publish("call_created", call(fast_fake)))
            with pytest.raises(asyncio.TimeoutError):   # no ping, no pong, no event
                await ws.receive(timeout=1.5)           # (and no pong_timeout either)
            await blocking(fast_fake.freeze, False)
            types = set()
            while not {WS.PONG, WS.TEXT, WS.PING} <= types:
                msg = await ws.receive(timeout=2)
                assert msg.type in (WS.PONG, WS.TEXT, WS.PING), msg
                types.add(msg.type)
    run(body())


# ----------------------------------------------------------------- hand-made frames

def test_send_fragments_text_binary(fake):
    async def body():
        async with session(fake) as s:
            ws = await connect(s, fake)
            await blocking(fake.wait_connections, 1)
            r = await blocking(lambda: fake.send(fragments=['{"id":', '"x",', '"n":1}']))
            assert r == {"sent": 1}
            assert await ws.receive_str(timeout=5) == '{"id":"x","n":1}'
            await blocking(lambda: fake.send(text="plain"))
            assert await ws.receive_str(timeout=5) == "plain"
            await blocking(lambda: fake.send(b64=base64.b64encode(b"\x00\xff").decode(),
                                             binary=True))
            assert await ws.receive_bytes(timeout=5) == b"\x00\xff"
    run(body())


def test_drop_all_connections(fake):
    async def body():
        async with session(fake) as s:
            wss = [await connect(s, fake) for _ in range(2)]
            await blocking(fake.wait_connections, 2)
            assert (await blocking(fake.drop))["sent"] == 2
            for ws in wss:
                await assert_dropped(ws)
        st = await blocking(fake.wait_state, lambda st: len(st["closed"]) == 2)
        assert {c["close_reason"] for c in st["closed"]} == {"dropped"}
        assert st["connections_total"] >= 2
    run(body())


def test_publish_flush_then_drop(fake):
    """flush=True returns once the frame is on the socket, so a drop right
    after cannot swallow it."""
    async def body():
        async with session(fake) as s:
            ws = await connect(s, fake)
            await subscribe(ws, fake, "customer_id:%s:call:call_" % fake.customer_id)
            ev = call(fake)
            res = await blocking(lambda: fake.publish("call_created", ev, flush=True))
            assert res["delivered"] == 1
            st = await blocking(fake.state)
            assert st["connections"][0]["frames_sent"] == 1
            assert st["connections"][0]["queued"] == 0
            await blocking(fake.drop)
            assert await ws.receive_json(timeout=5) == ev
            await assert_dropped(ws)
    run(body())


def test_bulk_publish_in_order(fake):
    async def body():
        n = 5000
        async with session(fake) as s:
            ws = await connect(s, fake)
            await subscribe(ws, fake, "customer_id:%s:call:call_" % fake.customer_id)
            ids = [str(uuid.uuid4()) for _ in range(n)]
            events = [{"event_type": "call_updated", "data": call(fake, id=i)} for i in ids]
            t0 = time.monotonic()
            task = asyncio.ensure_future(blocking(lambda: fake.publish(events=events)))
            got = []
            while len(got) < n:
                got.append((await ws.receive_json(timeout=5))["id"])
            res = await task
            assert res == {"delivered": n, "dropped": 0}
            assert got == ids
            assert time.monotonic() - t0 < 10
    run(body(), timeout=30)


# ----------------------------------------------------------------- injected failures

@pytest.mark.parametrize("status,reason", [(401, "INVALID_CREDENTIALS"), (403, "ACCOUNT_FROZEN"),
                                           (429, "RATE_LIMIT_EXCEEDED"), (500, "INTERNAL_ERROR")])
def test_ws_reject_status(fake, status, reason):
    fake.config(ws_reject_status=status, rest_retry_after=7)
    code, hdrs, body = run(raw_handshake(fake, "?accesskey=" + fake.accesskey))
    assert code == status and body["error"]["reason"] == reason
    assert (hdrs.get("Retry-After") == "7") == (status == 429)


def test_ws_hang(fake):
    fake.config(ws_hang=True)

    async def body():
        async with session(fake) as s:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(connect(s, fake), 1.0)
    run(body())
    assert fake.state()["handshakes"][-1].get("hung")


def test_rest_injected_failures(fake):
    async def get(timeout=5):
        async with session(fake) as s:
            async with s.get(fake.api_url + "/customer?accesskey=" + fake.accesskey,
                             timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                return r.status, r.headers, await r.text()

    fake.config(rest_status=503)
    status, _, text = run(get())
    assert status == 503 and '"SERVICE_UNAVAILABLE"' in text
    fake.config(rest_status=429, rest_retry_after=2)
    status, hdrs, _ = run(get())
    assert status == 429 and hdrs["Retry-After"] == "2"
    fake.reset()
    fake.config(rest_body="<html>oops</html>")
    assert run(get())[0::2] == (200, "<html>oops</html>")
    fake.reset()
    fake.config(rest_hang=True)
    with pytest.raises(asyncio.TimeoutError):
        run(get(timeout=0.5))
    fake.reset()
    assert run(get())[0] == 200


# ----------------------------------------------------------------- REST

def test_customer_put_overwrites_all_fields(fake):
    async def body():
        async with session(fake) as s:
            url = fake.api_url + "/customer?accesskey=" + fake.accesskey
            async with s.get(url, headers={"X-Request-Id": "my-id_1"}) as r:
                assert r.headers["X-Request-Id"] == "my-id_1"
                before = await r.json()
            assert before["id"] == fake.customer_id and before["webhook_secret"]
            assert before["name"] and before["email"]
            put = {"webhook_method": "POST", "webhook_uri": "https://hooks.example.org/x"}
            async with s.put(url, json=put) as r:
                assert r.status == 200
                after_put = await r.json()
            assert "webhook_secret" not in after_put
            async with s.get(url) as r:
                after = await r.json()
            for f in ("name", "detail", "email", "phone_number", "address"):
                assert f not in after, f          # blanked, and omitempty hides ""
            assert after["webhook_uri"] == put["webhook_uri"]
            assert after["webhook_secret"] == before["webhook_secret"]
            async with s.put(url, data=b"{not json", headers={"X-Request-Id": "bad id!"}) as r:
                err = (await r.json())["error"]
                assert r.status == 400 and err["reason"] == "INVALID_JSON_BODY"
                assert err["request_id"].startswith("req_")
                assert r.headers["X-Request-Id"] == err["request_id"]
            # restore, the read-modify-write way
            full = {k: before[k] for k in ("name", "detail", "email", "phone_number",
                                           "address", "webhook_method", "webhook_uri")}
            async with s.put(url, json=full) as r:
                assert r.status == 200
        st = await blocking(fake.state)
        assert st["puts"] == [put, full]
        assert st["customer"]["name"] == before["name"]
    run(body())


def test_log_never_contains_credentials(fake):
    async def body():
        async with session(fake) as s:
            async with s.get(fake.api_url + "/customer?accesskey=" + fake.accesskey) as r:
                assert r.status == 200
            async with s.get(fake.api_url + "/customer",
                             headers={"Authorization": "Bearer " + fake.jwt}) as r:
                assert r.status == 200
            ws = await connect(s, fake)
            await ws.close()
    run(body())
    log = fake.read_log()
    assert "/v1.0/customer" in log
    assert fake.accesskey not in log and fake.jwt not in log


def test_sigterm_stops_promptly(tmp_path, certs):
    fake = start_fake(tmp_path, certs=certs)

    async def body():
        async with session(fake) as s:
            ws = await connect(s, fake)
            await blocking(fake.wait_connections, 1)
            t0 = time.monotonic()
            rc = await blocking(fake.stop)
            assert rc == 0 and time.monotonic() - t0 < 3
            await assert_dropped(ws)
    run(body())
