"""The REST functions against the fake VoIPBIN: voipbin_customer(),
voipbin_set_webhook(), voipbin_clear_webhook(), and the topic checks of
voipbin_subscribe() that need the own customer id."""
import socket
import threading
import time
import uuid

import psycopg2
import pytest

from helpers import point_at, reset_cluster, write_token_file
from fakeserver_fixture import ACCESSKEY, JWT
from fake_voipbin import DEFAULT_AGENT_ID
from pgcluster import wait_until

OTHER_CUSTOMER = "0b5f2a3c-1d4e-4f60-8a7b-9c0d1e2f3a4b"
FIELDS = ("name", "detail", "email", "phone_number", "address", "webhook_method", "webhook_uri")


def aim(cluster, fake, secret_dir, credential=None, ca_file=None, api_url=None):
    """point_at, then wait until new backends see the settings: pg_reload_conf()
    only signals the postmaster."""
    point_at(cluster, fake, secret_dir, credential=credential, ca_file=ca_file)
    if api_url:
        cluster.set_conf(voipbin__api_url=api_url)
    want = (api_url or fake.api_url, ca_file or fake.ca_file)
    wait_until(lambda: cluster.query_one("SELECT current_setting('voipbin.api_url'),"
                                         " current_setting('voipbin.ca_file')") == want,
               what="settings reloaded")


@pytest.fixture
def rest(cluster, fake, secret_dir):
    aim(cluster, fake, secret_dir)
    yield cluster
    reset_cluster(cluster)


def one(cluster, sql, params=None, user="postgres"):
    return cluster.query(sql, params, user=user)[0][0]


def error_of(cluster, sql, params=None, user="postgres", setup=()):
    """The psycopg2 error sql raises, and how long it took."""
    conn = cluster.connect(user=user)
    try:
        with conn.cursor() as cur:
            for s in setup:
                cur.execute(s)
            start = time.monotonic()
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(sql, params)
            elapsed = time.monotonic() - start
    finally:
        conn.close()
    return info.value, elapsed


def texts(err):
    d = err.diag
    return " | ".join(x for x in (d.message_primary, d.message_detail, d.message_hint) if x)


def assert_no_secret(err):
    t = texts(err)
    assert ACCESSKEY not in t and JWT not in t and "accesskey=" not in t, t


def requests(fake):
    return fake.state()["rest_requests"]


# ---- customer --------------------------------------------------------------

def test_customer_masks_the_webhook_secret(rest, fake):
    c = one(rest, "SELECT voipbin_customer()")
    assert c["id"] == fake.customer_id
    assert c["webhook_secret"] == "***"
    assert c["name"] == "Fake Customer" and c["webhook_uri"] == "https://webhooks.example.com/voipbin"
    assert fake.state()["customer"]["webhook_secret"] not in str(c)
    [r] = requests(fake)
    assert (r["method"], r["path"], r["status"]) == ("GET", "/v1.0/customer", 200)
    assert (r["auth"], r["auth_source"]) == ("accesskey", "query:accesskey")
    assert r["content_type"] == "application/json"


def test_jwt_travels_as_bearer(cluster, fake, secret_dir):
    aim(cluster, fake, secret_dir, credential=fake.jwt)
    assert one(cluster, "SELECT voipbin_customer()->>'id'") == fake.customer_id
    [r] = requests(fake)
    assert (r["auth"], r["auth_source"]) == ("jwt", "header:bearer")
    reset_cluster(cluster)


# ---- webhook: read-modify-write --------------------------------------------

def test_set_webhook_keeps_every_other_field(rest, fake):
    mine = {"name": "Acme Ünïcode GmbH", "detail": "keep \"me\" \\ intact",
            "email": "ops@acme.example", "phone_number": "+4930123456",
            "address": "Straße 1, 10115 Berlin"}
    fake.set_customer(**mine)
    c = one(rest, "SELECT voipbin_set_webhook(%s, %s)", ("https://hooks.acme.example/vb?k=1", "put"))
    st = fake.state()
    assert st["puts"] == [dict(mine, webhook_method="PUT",
                               webhook_uri="https://hooks.acme.example/vb?k=1")]
    assert [(r["method"], r["path"]) for r in st["rest_requests"]] == \
        [("GET", "/v1.0/customer"), ("PUT", "/v1.0/customer")]
    assert st["rest_requests"][1]["content_type"] == "application/json"
    for k, v in mine.items():
        assert st["customer"][k] == v and c[k] == v
    assert c["webhook_uri"] == "https://hooks.acme.example/vb?k=1" and c["webhook_method"] == "PUT"
    assert c.get("webhook_secret", "***") == "***"


def test_empty_fields_stay_empty(rest, fake):
    # GET leaves empty fields out; they go back as "", not as something else
    fake.set_customer(detail="", address="")
    one(rest, "SELECT voipbin_set_webhook('http://hooks.example.org/x')")
    [put] = fake.state()["puts"]
    assert set(put) == set(FIELDS)
    assert put["detail"] == "" and put["address"] == "" and put["name"] == "Fake Customer"
    assert put["webhook_method"] == "POST"


def test_clear_webhook(rest, fake):
    c = one(rest, "SELECT voipbin_clear_webhook()")
    st = fake.state()
    [put] = st["puts"]
    assert put["webhook_uri"] == "" and put["name"] == "Fake Customer"
    assert put["email"] == "admin@example.com" and put["phone_number"] == "+15551234567"
    assert "webhook_uri" not in st["customer"] and st["customer"]["name"] == "Fake Customer"
    assert "webhook_uri" not in c and c["address"] == "1 Test Street, Testville"


@pytest.mark.parametrize("uri,method", [("ftp://example.com/x", "POST"), ("example.com/x", "POST"),
                                        ("https://", "POST"), ("https://example.com/x", "PATCH"),
                                        ("https://example.com/x", "post;")])
def test_bad_arguments_send_nothing(rest, fake, uri, method):
    err, _ = error_of(rest, "SELECT voipbin_set_webhook(%s, %s)", (uri, method))
    assert err.pgcode == "22023", texts(err)
    assert requests(fake) == []


# ---- errors ----------------------------------------------------------------

@pytest.mark.parametrize("status,reason,sqlstate", [
    (400, "INVALID_ARGUMENT", "22023"),
    (401, "INVALID_CREDENTIALS", "28000"),
    (403, "PERMISSION_DENIED", "42501"),
    (404, "ROUTE_NOT_FOUND", "42704"),
    (500, "INTERNAL_ERROR", "58000"),
    (503, "SERVICE_UNAVAILABLE", "58000"),
])
def test_error_status_to_sqlstate(rest, fake, status, reason, sqlstate):
    fake.config(rest_status=status, rest_reason=reason)
    err, _ = error_of(rest, "SELECT voipbin_customer()")
    assert err.pgcode == sqlstate, texts(err)
    [r] = requests(fake)
    assert r["status"] == status
    detail = err.diag.message_detail
    assert "reason: %s" % reason in detail
    assert "message: " in detail and "request_id: req_" in detail
    assert "%s/customer" % fake.api_url in err.diag.message_primary
    if status == 403:
        assert "admin-level token or access key" in err.diag.message_hint
    assert_no_secret(err)


def test_set_webhook_error_keeps_customer(rest, fake):
    fake.config(rest_status=401)
    err, _ = error_of(rest, "SELECT voipbin_set_webhook('https://hooks.example.org/x')")
    assert err.pgcode == "28000"
    assert fake.state()["puts"] == []
    assert fake.state()["customer"]["webhook_uri"] == "https://webhooks.example.com/voipbin"


def test_wrong_credential_is_28000_and_redacted(cluster, fake, secret_dir):
    wrong = "vb_NotTheKeyNotTheKeyNotTheKey012"
    aim(cluster, fake, secret_dir, credential=wrong)
    err, _ = error_of(cluster, "SELECT voipbin_customer()")
    assert err.pgcode == "28000" and "INVALID_CREDENTIALS" in err.diag.message_detail
    assert wrong not in texts(err)
    reset_cluster(cluster)


def test_429_waits_retry_after_once(rest, fake):
    fake.config(rest_status=429, rest_retry_after=1)
    err, elapsed = error_of(rest, "SELECT voipbin_customer()")
    assert err.pgcode == "53400", texts(err)
    reqs = requests(fake)
    assert len(reqs) == 2
    assert reqs[1]["at"] - reqs[0]["at"] >= 0.95
    assert 0.95 <= elapsed < 3
    assert "RATE_LIMIT_EXCEEDED" in err.diag.message_detail


def test_429_then_success(rest, fake):
    fake.config(rest_status=429, rest_retry_after=2)
    result = {}

    def run():
        try:
            result["id"] = one(rest, "SELECT voipbin_customer()->>'id'")
        except Exception as e:  # reported by the assertion below
            result["error"] = e
    t = threading.Thread(target=run)
    start = time.monotonic()
    t.start()
    wait_until(lambda: len(requests(fake)) == 1, what="the first request")
    fake.config(rest_status=None)
    t.join(10)
    assert not t.is_alive()
    assert result.get("id") == fake.customer_id, result
    assert time.monotonic() - start >= 1.9
    assert [r["status"] for r in requests(fake)] == [429, 200]


def test_429_retry_after_past_the_timeout_fails_at_once(rest, fake):
    fake.config(rest_status=429, rest_retry_after=30)
    err, elapsed = error_of(rest, "SELECT voipbin_customer()")
    assert err.pgcode == "53400"
    assert elapsed < 1.0
    assert len(requests(fake)) == 1
    assert "does not fit" in err.diag.message_hint


def test_statement_timeout_stops_the_retry_after_wait(rest, fake):
    fake.config(rest_status=429, rest_retry_after=5)
    err, elapsed = error_of(rest, "SELECT voipbin_customer()",
                            setup=["SET statement_timeout = '300ms'"])
    assert err.pgcode == "57014", texts(err)
    assert elapsed < 1.0, elapsed
    assert len(requests(fake)) == 1


def test_429_without_retry_after(rest, fake):
    fake.config(rest_status=429, rest_retry_after="")
    err, elapsed = error_of(rest, "SELECT voipbin_customer()")
    assert err.pgcode == "53400" and elapsed < 1.0
    assert len(requests(fake)) == 1


def test_statement_timeout_stops_a_hanging_call(rest, fake):
    fake.config(rest_hang=True)
    err, elapsed = error_of(rest, "SELECT voipbin_customer()",
                            setup=["SET statement_timeout = '200ms'"])
    assert err.pgcode == "57014", texts(err)
    assert 0.15 <= elapsed < 1.0, elapsed
    assert requests(fake)[0].get("hung")


def test_cancel_stops_a_hanging_call(rest, fake):
    fake.config(rest_hang=True)
    conn = rest.connect()
    try:
        timer = threading.Timer(0.3, conn.cancel)
        start = time.monotonic()
        timer.start()
        with pytest.raises(psycopg2.Error) as info:
            with conn.cursor() as cur:
                cur.execute("SELECT voipbin_set_webhook('https://hooks.example.org/x')")
        elapsed = time.monotonic() - start
        timer.join()
        assert info.value.pgcode == "57014"
        assert elapsed < 1.0, elapsed
        # the backend is fine afterwards
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()
    assert fake.state()["puts"] == []


def test_http_timeout(rest, fake):
    fake.config(rest_hang=True)
    err, elapsed = error_of(rest, "SELECT voipbin_customer()",
                            setup=["SET voipbin.http_timeout = '300ms'"])
    assert err.pgcode == "08006", texts(err)
    assert "timed out" in err.diag.message_primary
    assert 0.25 <= elapsed < 1.5, elapsed


@pytest.mark.parametrize("which", ["other_ca", "system_store_only"])
def test_unknown_ca_refused(cluster, fake, certs, secret_dir, which):
    if which == "other_ca":
        aim(cluster, fake, secret_dir, ca_file=certs["other_ca"])
    else:
        aim(cluster, fake, secret_dir)
        cluster.set_conf(voipbin__ca_file=None)
        wait_until(lambda: one(cluster, "SELECT current_setting('voipbin.ca_file')") == "",
                   what="ca_file reset")
    err, _ = error_of(cluster, "SELECT voipbin_customer()")
    assert err.pgcode == "08006", texts(err)
    assert "TLS" in err.diag.message_primary
    assert requests(fake) == []
    assert_no_secret(err)
    reset_cluster(cluster)


def test_unreadable_ca_file(cluster, fake, secret_dir):
    aim(cluster, fake, secret_dir, ca_file="/nonexistent/voipbin-ca.pem")
    err, _ = error_of(cluster, "SELECT voipbin_customer()")
    assert err.pgcode == "08006"
    assert "voipbin.ca_file" in err.diag.message_primary
    reset_cluster(cluster)


def test_nothing_listening(cluster, fake, secret_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]     # closed again when the test connects
    url = "https://127.0.0.1:%d/v1.0" % port
    aim(cluster, fake, secret_dir, api_url=url)
    err, elapsed = error_of(cluster, "SELECT voipbin_customer()")
    assert err.pgcode == "08006"
    assert "could not connect" in err.diag.message_primary
    assert url + "/customer" in err.diag.message_primary
    assert_no_secret(err)
    reset_cluster(cluster)


def test_answer_that_is_not_json(rest, fake):
    fake.config(rest_body="<html>maintenance</html>", rest_content_type="text/html")
    err, _ = error_of(rest, "SELECT voipbin_customer()")
    assert err.pgcode == "08P01", texts(err)
    assert "not JSON" in err.diag.message_primary and "text/html" in err.diag.message_detail


def test_error_answer_that_is_not_json_keeps_its_status(rest, fake):
    # a 5xx error body from a proxy is HTML; the status still decides
    fake.config(rest_status=502)
    err, _ = error_of(rest, "SELECT voipbin_customer()")
    assert err.pgcode == "58000"


def test_answer_too_large(rest, fake):
    fake.config(rest_body="[" + "1," * 600000 + "1]")
    err, _ = error_of(rest, "SELECT voipbin_customer()")
    assert err.pgcode == "54000", texts(err)


# ---- privileges ------------------------------------------------------------

def test_non_superuser(rest, fake):
    rest.execute("DROP ROLE IF EXISTS voipbin_rest_tester")
    rest.execute("CREATE ROLE voipbin_rest_tester LOGIN")
    try:
        user = "voipbin_rest_tester"
        for sql in ("SELECT voipbin_customer()", "SELECT voipbin_clear_webhook()",
                    "SELECT voipbin_set_webhook('https://x.example/')",
                    "SELECT voipbin_resolve_topic('call')"):
            err, _ = error_of(rest, sql, user=user)
            assert err.pgcode == "42501", (sql, texts(err))
        for sql in ("SHOW voipbin.token", "SHOW voipbin.token_file",
                    "SELECT current_setting('voipbin.token')",
                    "SELECT current_setting('voipbin.token_file')"):
            err, _ = error_of(rest, sql, user=user)
            assert err.pgcode == "42501", (sql, texts(err))
        assert rest.query("SELECT name, setting FROM pg_settings WHERE name LIKE 'voipbin.token%%'",
                          user=user) == []
        assert requests(fake) == []

        # granted, the role gets the customer, never the secrets
        rest.execute("GRANT EXECUTE ON FUNCTION voipbin_customer() TO voipbin_rest_tester")
        c = one(rest, "SELECT voipbin_customer()", user=user)
        assert c["webhook_secret"] == "***"
        # voipbin_subscribe alone is enough to subscribe by a bare name
        rest.execute("GRANT EXECUTE ON FUNCTION voipbin_subscribe(text) TO voipbin_rest_tester")
        assert one(rest, "SELECT voipbin_subscribe('call')", user=user) == \
            "customer_id:%s:call:" % fake.customer_id
        fake.config(rest_status=401)
        err, _ = error_of(rest, "SELECT voipbin_customer()", user=user)
        assert err.pgcode == "28000"
        assert_no_secret(err)
    finally:
        rest.execute("REVOKE ALL ON FUNCTION voipbin_customer() FROM voipbin_rest_tester")
        rest.execute("REVOKE ALL ON FUNCTION voipbin_subscribe(text) FROM voipbin_rest_tester")
        rest.execute("DROP ROLE voipbin_rest_tester")


# ---- topics ----------------------------------------------------------------

def test_bare_resource_expands_to_own_customer(rest, fake):
    conn = rest.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT voipbin_subscribe('call')")
            call_topic = cur.fetchone()[0]
            cur.execute("SELECT voipbin_subscribe('Transcript')")
            transcript_topic = cur.fetchone()[0]
            cur.execute("SELECT voipbin_subscribe(%s)",
                        ("customer_id:%s:queuecall:" % fake.customer_id.upper(),))
            queue_topic = cur.fetchone()[0]
    finally:
        conn.close()
    assert call_topic == "customer_id:%s:call:" % fake.customer_id
    assert transcript_topic == "customer_id:%s:transcript:" % fake.customer_id
    assert queue_topic == "customer_id:%s:queuecall:" % fake.customer_id
    # the id was asked once for the backend
    assert [r["path"] for r in requests(fake)] == ["/v1.0/customer"]
    assert sorted(r[0] for r in rest.query("SELECT topic FROM voipbin_subscriptions")) == \
        sorted([call_topic, transcript_topic, queue_topic])
    fake.wait_topics([call_topic, transcript_topic, queue_topic], timeout=10)
    assert one(rest, "SELECT voipbin_unsubscribe('call')") is True
    assert one(rest, "SELECT count(*) FROM voipbin_subscriptions WHERE topic = %s",
               (call_topic,)) == 0


def test_foreign_customer_refused(rest, fake):
    fake.wait_connections(1, timeout=15)
    topic = "customer_id:%s:call:" % OTHER_CUSTOMER
    err, _ = error_of(rest, "SELECT voipbin_subscribe(%s)", (topic,))
    assert err.pgcode == "22023", texts(err)
    assert "another customer" in err.diag.message_primary
    assert one(rest, "SELECT count(*) FROM voipbin_subscriptions") == 0
    assert all(topic not in c["topics"] for c in fake.state()["connections"])
    # what is stored can still be removed, with no check
    assert one(rest, "SELECT voipbin_unsubscribe(%s)", (topic,)) is False


def test_cache_follows_the_credential(rest, fake, secret_dir):
    conn = rest.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT voipbin_subscribe('call')")
            write_token_file(secret_dir, fake.jwt)    # read again by every call
            cur.execute("SELECT voipbin_subscribe('recording')")
            assert cur.fetchone()[0] == "customer_id:%s:recording:" % fake.customer_id
    finally:
        conn.close()
    assert [r["auth_source"] for r in requests(fake)] == ["query:accesskey", "header:bearer"]


def test_topic_check_when_voipbin_cannot_be_asked(rest, fake, secret_dir):
    # never learnt: a bare name fails with the REST error and a hint to use the
    # full form; a full topic is stored, its owner unchecked, with a WARNING
    fake.config(rest_status=503)
    err, _ = error_of(rest, "SELECT voipbin_subscribe('call')")
    assert err.pgcode == "58000", texts(err)
    assert "use the full form customer_id:<your customer id>:call:" in err.diag.message_hint
    assert one(rest, "SELECT count(*) FROM voipbin_subscriptions") == 0
    t = "customer_id:%s:call:" % fake.customer_id
    stored, notices = with_notices(rest, "SELECT voipbin_subscribe(%s)", (t,))
    assert stored == t
    [w] = notices
    assert w.startswith("WARNING:  topic \"%s\" is stored without checking that it names your own customer" % t), w
    assert "HTTP 503" in w and ACCESSKEY not in w
    # agent_id topics need no customer id (here with a JWT: an access key has no agent)
    write_token_file(secret_dir, fake.jwt)
    t = "agent_id:%s:call:" % uuid.uuid4()
    assert one(rest, "SELECT voipbin_resolve_topic(%s)", (t,)) == t


def test_full_topic_without_credential_needs_no_request(cluster, fake):
    reset_cluster(cluster)
    wait_until(lambda: one(cluster, "SELECT current_setting('voipbin.token_file')") == "",
               what="credential removed")
    t = "customer_id:%s:call:" % OTHER_CUSTOMER
    assert one(cluster, "SELECT voipbin_subscribe(%s)", (t,)) == t
    err, _ = error_of(cluster, "SELECT voipbin_subscribe('call')")
    assert err.pgcode == "22023" and "customer_id:<your customer id>:call:" in err.diag.message_hint
    assert requests(fake) == []
    reset_cluster(cluster)


# ---- typos, agent topics, outages, webhook hosts ---------------------------

def with_notices(cluster, sql, params=None):
    """sql's one value, and the WARNINGs and NOTICEs it raised (DETAIL and HINT included)."""
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET client_min_messages = notice")
            del conn.notices[:]
            cur.execute(sql, params)
            value = cur.fetchone()[0]
        return value, list(conn.notices)
    finally:
        conn.close()


def test_typos_warn_with_the_nearest_word(rest, fake):
    own = fake.customer_id
    cases = [
        ("SELECT voipbin_subscribe('calls')", "customer_id:%s:calls:" % own,
         'VoIPBIN publishes no topics for resource "calls"', 'Did you mean "call"?'),
        ("SELECT voipbin_subscribe('customer_id:%s:calls:call_hangup')" % own.upper(),
         "customer_id:%s:calls:call_hangup" % own,
         'VoIPBIN publishes no topics for resource "calls"', 'Did you mean "call"?'),
        ("SELECT voipbin_subscribe('queue')", "customer_id:%s:queue:" % own,
         'VoIPBIN publishes no topics for resource "queue"', 'Did you mean "queuecall"?'),
    ]
    for sql, stored, msg, hint in cases:
        value, notices = with_notices(rest, sql)
        assert value == stored
        [w] = notices
        assert w.startswith("WARNING:  " + msg), w
        assert "HINT:  " + hint in w, w
    # stored anyway, and sent: VoIPBIN adds resources now and then
    assert one(rest, "SELECT count(*) FROM voipbin_subscriptions") == 3
    # real words say nothing
    for topic in ("call", "transcript", "customer_id:%s:call:call_" % own, "customer_id:%s:conf" % own):
        _, notices = with_notices(rest, "SELECT voipbin_subscribe(%s)", (topic,))
        assert notices == [], (topic, notices)
    # unsubscribing a typo says nothing either
    _, notices = with_notices(rest, "SELECT voipbin_unsubscribe('calls')")
    assert notices == []

    rest.execute("CREATE FUNCTION typo_handler(e voipbin_events) RETURNS void LANGUAGE sql AS 'SELECT'")
    try:
        _, notices = with_notices(rest, "SELECT voipbin_on('transcript_creatd', 'typo_handler(voipbin_events)')::text")
        [w] = notices
        assert w.startswith('WARNING:  VoIPBIN sends no event type "transcript_creatd"'), w
        assert 'HINT:  Did you mean "transcript_created"?' in w
        for good in ("transcript_created", "call_hangup", "recording_updated"):
            _, notices = with_notices(rest, "SELECT voipbin_on(%s, 'typo_handler(voipbin_events)')::text", (good,))
            assert notices == [], (good, notices)
        assert sorted(r[0] for r in rest.query("SELECT event_type FROM voipbin_handlers")) == \
            sorted(["call_hangup", "recording_updated", "transcript_created", "transcript_creatd"])
    finally:
        rest.execute("DELETE FROM voipbin_handlers; DROP FUNCTION typo_handler(voipbin_events)")


def test_agent_topic_refused_with_an_access_key(rest, fake, secret_dir):
    t = "agent_id:%s:call:" % uuid.uuid4()
    err, _ = error_of(rest, "SELECT voipbin_subscribe(%s)", (t,))
    assert err.pgcode == "22023", texts(err)
    assert "access key, which has no agent" in err.diag.message_primary
    assert "JWT" in err.diag.message_hint and "customer_id" in err.diag.message_hint
    assert_no_secret(err)
    assert one(rest, "SELECT count(*) FROM voipbin_subscriptions") == 0
    assert requests(fake) == []                     # refused before anything was sent
    # what is stored can still be removed
    assert one(rest, "SELECT voipbin_unsubscribe(%s)", (t,)) is False
    # an agent's JWT may have agent_id topics
    write_token_file(secret_dir, fake.jwt)
    t = "agent_id:%s:call:" % DEFAULT_AGENT_ID
    assert one(rest, "SELECT voipbin_subscribe(%s)", (t,)) == t


def test_the_kept_customer_id_serves_during_an_outage(rest, fake, cluster):
    own = fake.customer_id
    assert one(rest, "SELECT voipbin_customer()->>'id'") == own
    # kept per api_url, nothing of the credential with it
    rows = rest.query("SELECT api_url, customer_id::text, learnt_at IS NOT NULL FROM voipbin_customer_cache")
    assert rows == [(fake.api_url.rstrip("/"), own, True)]
    assert ACCESSKEY not in str(rows) and JWT not in str(rows)
    before = len(requests(fake))

    # a full topic is checked against the kept id: no request at all
    fake.config(rest_status=503)
    cluster.restart()
    t = "customer_id:%s:call:" % own
    stored, notices = with_notices(rest, "SELECT voipbin_subscribe(%s)", (t,))
    assert stored == t and notices == []
    assert len(requests(fake)) == before
    # a bare name asks, and takes the kept id when VoIPBIN fails, with a NOTICE
    stored, notices = with_notices(rest, "SELECT voipbin_subscribe('transcript')")
    assert stored == "customer_id:%s:transcript:" % own
    [n] = notices
    assert n.startswith("NOTICE:  VoIPBIN cannot be asked for the customer id") and "learnt at" in n, n
    # another customer's topic is refused: VoIPBIN is asked again first, in
    # case the credential changed customers, and cannot be
    err, _ = error_of(rest, "SELECT voipbin_subscribe(%s)", ("customer_id:%s:call:" % OTHER_CUSTOMER,))
    assert err.pgcode == "22023" and "another customer" in err.diag.message_primary
    assert own in err.diag.message_hint and "cannot be asked again" in err.diag.message_hint
    assert sorted(r[0] for r in rest.query("SELECT topic FROM voipbin_subscriptions")) == \
        sorted([t, "customer_id:%s:transcript:" % own])
    fake.config(rest_status=None)
    fake.wait_topics([t, "customer_id:%s:transcript:" % own], timeout=15)


def test_a_changed_customer_replaces_the_kept_id(rest, fake):
    stale = "11111111-2222-4333-8444-555555555555"
    rest.execute("INSERT INTO voipbin_customer_cache (api_url, customer_id) VALUES (%s, %s)",
                 (fake.api_url.rstrip("/"), stale))
    # the stale id refuses the own topic only after VoIPBIN was asked again
    t = "customer_id:%s:call:" % fake.customer_id
    assert one(rest, "SELECT voipbin_subscribe(%s)", (t,)) == t
    assert [r["path"] for r in requests(fake)] == ["/v1.0/customer"]
    assert one(rest, "SELECT customer_id::text FROM voipbin_customer_cache") == fake.customer_id


def test_never_learnt_and_unreachable(cluster, fake, secret_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]     # closed again when the test connects
    aim(cluster, fake, secret_dir, api_url="https://127.0.0.1:%d/v1.0" % port)
    try:
        err, _ = error_of(cluster, "SELECT voipbin_subscribe('call')")
        assert err.pgcode == "08006", texts(err)
        assert "until VoIPBIN answers once, use the full form customer_id:<your customer id>:call:" \
            in err.diag.message_hint
        t = "customer_id:%s:call:" % fake.customer_id
        stored, notices = with_notices(cluster, "SELECT voipbin_subscribe(%s)", (t,))
        assert stored == t
        [w] = notices
        assert "stored without checking" in w and "could not connect" in w, w
        assert one(cluster, "SELECT count(*) FROM voipbin_customer_cache") == 0
        assert requests(fake) == []
    finally:
        reset_cluster(cluster)


@pytest.mark.parametrize("uri,why", [
    ("https://localhost/voipbin", "this machine (localhost)"),
    ("https://hooks.localhost/voipbin", "a name under localhost"),
    ("http://127.0.0.1:8089/voipbin", "a loopback address"),
    ("http://[::1]:8089/voipbin", "a loopback address"),
    ("http://10.0.0.1:8089/voipbin?k=proxy-token", "a private address (RFC 1918)"),
    ("http://192.168.7.1/voipbin", "a private address (RFC 1918)"),
    ("http://[fd00::5]/voipbin", "a private address (unique local, fc00::/7)"),
    ("http://169.254.10.10/voipbin", "a link-local address"),
    ("http://[fe80::1]/voipbin", "a link-local address"),
    ("http://0.0.0.0/voipbin", "the unspecified address"),
    ("http://[::]/voipbin", "the unspecified address"),
    ("http://100.64.1.1/voipbin", "a shared address of carrier-grade NAT (100.64.0.0/10)"),
    ("https://receiver/voipbin", "a name without a dot, which public DNS does not resolve"),
    ("https://hooks.example.com/voipbin", None),
])
def test_set_webhook_warns_on_a_host_voipbin_cannot_reach(rest, fake, uri, why):
    c, notices = with_notices(rest, "SELECT voipbin_set_webhook(%s)", (uri,))
    assert c["webhook_uri"] == uri                      # set anyway
    assert fake.state()["puts"][-1]["webhook_uri"] == uri
    if why is None:
        assert notices == []
        return
    [w] = notices
    assert w.startswith("WARNING:  the webhook's host ") and w.splitlines()[0].endswith(" is " + why), w
    assert "VoIPBIN delivers webhooks only to public addresses" in w
    assert "proxy-token" not in w                       # the host only, never the query
