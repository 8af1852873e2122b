"""The SQL side of requests to VoIPBIN's REST API, as a user checks it:
voipbin_request() and its queue row, dedupe keys (also across sessions),
the argument checks, the typed helpers (voipbin_hangup, voipbin_talk, ...),
voipbin_cancel_request(), the privileges, voipbin_api() against the fake, a
pg_dump and restore of queued rows, and voipbin_status()'s request columns.

Nothing here depends on the worker sending: the module's worker has no
credential and an api_url nothing listens on, so what it queues stays queued;
most rows are read in the caller's own transaction, before any worker sees
them, and every test leaves the queue empty."""
import json
import os
import threading
import uuid

import psycopg2
import psycopg2.errors
import psycopg2.extras
import pytest

from fakeserver_fixture import ACCESSKEY, JWT
from helpers import call, point_at, reset_cluster
from pgcluster import wait_until

CALLER = "vb_rq_caller"      # EXECUTE on voipbin_request, the helpers and voipbin_cancel_request
STRANGER = "vb_rq_stranger"  # no grant at all
NOWHERE = "https://127.0.0.1:1/v1.0"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
NIL = "00000000-0000-0000-0000-000000000000"
ROW = ("id, created_at, created_by::text, method, path, body, dedupe_key, state, attempts,"
       " next_attempt_at, sent_at, finished_at, status, response, error, request_id")

# every function a caller needs EXECUTE on, with arguments it accepts
HELPERS = {
    "voipbin_hangup(uuid)": "SELECT voipbin_hangup(gen_random_uuid())",
    "voipbin_talk(uuid, text, text)": "SELECT voipbin_talk(gen_random_uuid(), 'hello')",
    "voipbin_call(jsonb, jsonb, jsonb, uuid)":
        """SELECT voipbin_call('{"type": "tel", "target": "+15551230001"}',
                               '[{"type": "tel", "target": "+15551230002"}]')""",
    "voipbin_send_message(jsonb, jsonb, text)":
        """SELECT voipbin_send_message('{"type": "tel", "target": "+15551230001"}',
                                       '[{"type": "tel", "target": "+15551230002"}]', 'hi')""",
    "voipbin_transcribe_start(uuid, text)": "SELECT voipbin_transcribe_start(gen_random_uuid())",
    "voipbin_transcribe_stop(uuid)": "SELECT voipbin_transcribe_stop(gen_random_uuid())",
    "voipbin_recording_start(uuid)": "SELECT voipbin_recording_start(gen_random_uuid())",
    "voipbin_recording_stop(uuid)": "SELECT voipbin_recording_stop(gen_random_uuid())",
}
ENTRY_POINTS = dict(HELPERS, **{
    "voipbin_request(text, text, jsonb, text)": "SELECT voipbin_request('POST', '/calls/x/hangup')",
    "voipbin_cancel_request(bigint)": "SELECT voipbin_cancel_request(1)",
    "voipbin_api(text, text, jsonb)": "SELECT voipbin_api('GET', '/calls')",
})


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def db(cluster):
    """The session's cluster, its worker unable to send (no credential, an
    api_url nothing listens on), with a granted role and a bare one."""
    reset_cluster(cluster)
    cluster.set_conf(voipbin__api_url=NOWHERE)
    settled(cluster, NOWHERE)
    for role in (CALLER, STRANGER):
        cluster.execute("DROP ROLE IF EXISTS %s" % role)
        cluster.execute("CREATE ROLE %s LOGIN" % role)
    cluster.execute("GRANT EXECUTE ON FUNCTION voipbin_request(text, text, jsonb, text),"
                    " voipbin_cancel_request(bigint), %s TO %s" % (", ".join(HELPERS), CALLER))
    yield cluster
    cluster.execute("DELETE FROM voipbin_requests")
    for role in (CALLER, STRANGER):
        cluster.execute("DROP OWNED BY %s" % role)
        cluster.execute("DROP ROLE %s" % role)
    reset_cluster(cluster)


@pytest.fixture(autouse=True)
def empty_queue(request):
    """Every test leaves no request behind for a worker to send."""
    yield
    if "db" in request.fixturenames:
        request.getfixturevalue("db").execute("DELETE FROM voipbin_requests")


@pytest.fixture
def api(db, fake, secret_dir):
    """The credential and api_url of the fake, seen by new sessions."""
    point_at(db, fake, secret_dir)
    settled(db, fake.api_url)
    yield db
    reset_cluster(db)
    db.set_conf(voipbin__api_url=NOWHERE)
    settled(db, NOWHERE)


def settled(cluster, api_url):
    """Waits until new sessions see api_url: pg_reload_conf() only signals the postmaster."""
    wait_until(lambda: cluster.query_one("SELECT current_setting('voipbin.api_url')") == (api_url,),
               what="voipbin.api_url reloaded")


# ------------------------------------------------------------------- helpers

def rows(cluster, where="true", params=None):
    with_names = cluster.connect()
    try:
        with with_names.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT %s FROM voipbin_requests WHERE %s ORDER BY id" % (ROW, where), params)
            return cur.fetchall()
    finally:
        with_names.close()


def count(cluster):
    return cluster.query_one("SELECT count(*) FROM voipbin_requests")[0]


def as_role_in_txn(cluster, role, sql, params=None, commit=False):
    """sql run as role (SET ROLE, in a transaction of postgres's), then the
    rows the transaction queued read back in it, before any worker can see
    them; rolled back unless commit.  Returns (sql's value, those rows)."""
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT coalesce(max(id), 0) AS m FROM voipbin_requests")
            before = cur.fetchone()["m"]
            cur.execute("SET LOCAL ROLE %s" % role)
            cur.execute(sql, params)
            value = list(cur.fetchone().values())[0]
            cur.execute("RESET ROLE")
            cur.execute("SELECT %s FROM voipbin_requests WHERE id > %%s ORDER BY id" % ROW, (before,))
            queued = cur.fetchall()
            cur.execute("SELECT now() AS now")
            now = cur.fetchone()["now"]
        conn.commit() if commit else conn.rollback()
    finally:
        conn.close()
    for r in queued:
        r["txn_now"] = now
    return value, queued


def error_of(cluster, sql, params=None, user="postgres", dbname=None):
    conn = cluster.connect(dbname, user=user)
    try:
        with conn.cursor() as cur:
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(sql, params)
    finally:
        conn.close()
    return info.value


def texts(err):
    d = err.diag
    return " | ".join(x for x in (d.message_primary, d.message_detail, d.message_hint) if x)


def id_sequence(cluster):
    """Where the ids' sequence is: it moves even for an insert rolled back,
    so an unmoved one shows that nothing was inserted before an error."""
    return cluster.query_one("SELECT last_value, is_called FROM voipbin_requests_id_seq")


def assert_refused(cluster, sql, params, sqlstate, user=CALLER, hint=True):
    """sql, run as user, fails with sqlstate (and a HINT) before inserting anything."""
    before = count(cluster), id_sequence(cluster)
    conn = cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL ROLE %s" % user)
            with pytest.raises(psycopg2.Error) as info:
                cur.execute(sql, params)
        conn.rollback()
    finally:
        conn.close()
    err = info.value
    assert err.pgcode == sqlstate, texts(err)
    assert err.diag.message_primary.startswith("voipbin: "), texts(err)
    if hint:
        assert err.diag.message_hint, "no HINT: " + texts(err)
    assert (count(cluster), id_sequence(cluster)) == before, "the checks come before the insert"
    return err


# ---------------------------------------------------------- voipbin_request

def test_request_queues_a_row_of_its_caller(db):
    call_id = str(uuid.uuid4())
    rid, [r] = as_role_in_txn(db, CALLER, "SELECT voipbin_request('post', %s, %s)",
                              ("/calls/%s/hangup" % call_id, json.dumps({"reason": "busy", "n": [1, 2]})),
                              commit=True)
    assert r["id"] == rid
    assert (r["created_by"], r["method"], r["path"]) == (CALLER, "POST", "/calls/%s/hangup" % call_id)
    assert r["body"] == {"reason": "busy", "n": [1, 2]}
    assert (r["state"], r["attempts"], r["dedupe_key"]) == ("queued", 0, None)
    assert r["next_attempt_at"] == r["created_at"] == r["txn_now"], "due at once"
    assert [r[k] for k in ("sent_at", "finished_at", "status", "response", "error", "request_id")] \
        == [None] * 6
    # committed: there for the worker, the same row
    [after] = rows(db, "id = %s", (rid,))
    for k in ("created_by", "method", "path", "body", "created_at"):
        assert after[k] == r[k]


def test_request_from_its_own_session_without_table_privileges(db):
    """A role with EXECUTE on voipbin_request only, connected as itself."""
    assert db.query("SELECT has_table_privilege(%s, 'voipbin_requests', 'INSERT'),"
                    " has_table_privilege(%s, 'voipbin_requests', 'SELECT')", (CALLER, CALLER)) \
        == [(False, False)]
    rid = db.query("SELECT voipbin_request('GET', '/calls')", user=CALLER)[0][0]
    [r] = rows(db, "id = %s", (rid,))
    assert (r["created_by"], r["method"], r["path"], r["body"]) == (CALLER, "GET", "/calls", {})
    err = error_of(db, "SELECT count(*) FROM voipbin_requests", user=CALLER)
    assert err.pgcode == "42501"


def test_body_defaults_to_an_empty_object_and_may_be_null_or_an_array(db):
    _, got = as_role_in_txn(db, CALLER, "SELECT voipbin_request('DELETE', '/calls/x'),"
                                        " voipbin_request('GET', '/calls', NULL),"
                                        " voipbin_request('PUT', '/calls/x', '[1, {\"a\": null}]')")
    assert [(r["method"], r["body"]) for r in got] == \
        [("DELETE", {}), ("GET", None), ("PUT", [1, {"a": None}])]


def test_rolled_back_request_leaves_no_row(db):
    rid, [r] = as_role_in_txn(db, CALLER, "SELECT voipbin_request('POST', '/calls/x/hangup')")
    assert r["id"] == rid
    assert rows(db, "id = %s", (rid,)) == []
    assert count(db) == 0


# ------------------------------------------------------------------- dedupe

def test_same_dedupe_key_gives_the_same_id(db):
    sql = "SELECT voipbin_request('POST', '/calls/x/hangup', '{}', 'hangup:ev1')"
    first = db.query(sql, user=CALLER)[0][0]
    again = db.query(sql, user=CALLER)[0][0]
    # a different request under the same key is the same request: the first stays
    other = db.query("SELECT voipbin_request('GET', '/calls', '{\"x\": 1}', 'hangup:ev1')", user=CALLER)[0][0]
    assert first == again == other
    [r] = rows(db)
    assert (r["id"], r["method"], r["path"], r["body"], r["dedupe_key"]) == \
        (first, "POST", "/calls/x/hangup", {}, "hangup:ev1")
    # twice in one transaction, and another key
    ids, got = as_role_in_txn(db, CALLER, "SELECT ARRAY[voipbin_request('GET', '/calls', '{}', 'k2'),"
                                          " voipbin_request('GET', '/calls', '{}', 'k2'),"
                                          " voipbin_request('GET', '/calls', '{}', 'hangup:ev1')]")
    assert ids[0] == ids[1] != ids[2] == first
    assert [r["dedupe_key"] for r in got] == ["k2"]


class Waiting:
    """voipbin_request with a dedupe key in a second session, on a thread:
    it waits for the first session's transaction."""

    def __init__(self, cluster, key):
        self.conn = cluster.connect(user=CALLER)
        self.pid = self.conn.get_backend_pid()
        self.result = {}

        def run():
            try:
                with self.conn.cursor() as cur:
                    cur.execute("SELECT voipbin_request('POST', '/calls/y/hangup', '{}', %s)", (key,))
                    self.result["id"] = cur.fetchone()[0]
            except Exception as e:   # noqa: BLE001 (reported by join)
                self.result["error"] = e
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_blocked(self, cluster):
        wait_until(lambda: cluster.query_one("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                             (self.pid,)) == ("Lock",),
                   what="the second session waiting on the first's row")

    def join(self):
        self.thread.join(15)
        assert not self.thread.is_alive(), "the second session never returned"
        self.conn.close()
        assert "error" not in self.result, self.result.get("error")
        return self.result["id"]


@pytest.mark.parametrize("first_ends", ["commit", "rollback"])
def test_dedupe_key_across_two_sessions(db, first_ends):
    key = "hangup:" + str(uuid.uuid4())
    first = db.connect(user=CALLER, autocommit=False)
    try:
        with first.cursor() as cur:
            cur.execute("SELECT voipbin_request('POST', '/calls/x/hangup', '{}', %s)", (key,))
            first_id = cur.fetchone()[0]
        second = Waiting(db, key)
        second.wait_blocked(db)
        first.commit() if first_ends == "commit" else first.rollback()
        second_id = second.join()
    finally:
        first.close()
    [r] = rows(db)
    if first_ends == "commit":
        assert second_id == first_id and r["path"] == "/calls/x/hangup"
    else:
        assert second_id != first_id and r["path"] == "/calls/y/hangup"
    assert (r["id"], r["dedupe_key"]) == (second_id, key)


# --------------------------------------------------------------- the checks

@pytest.mark.parametrize("args,sqlstate", [
    (("PUSH", "/calls"), "22023"),
    (("GET /calls", "/calls"), "22023"),
    (("", "/calls"), "22023"),
    (("post", "calls"), "22023"),
    (("POST", ""), "22023"),
    (("POST", "/v1.0/calls"), "22023"),
    (("POST", "/V1.0/calls"), "22023"),
    (("POST", "https://api.voipbin.net/v1.0/calls"), "22023"),
    (("POST", "//evil.example/calls"), "22023"),
    (("POST", "/calls/a b"), "22023"),
    (("POST", "/calls/a\tb"), "22023"),
    (("GET", "/calls?accesskey=vb_x"), "22023"),
    (("GET", "/calls?page_size=1&token=x"), "22023"),
    (("POST", "/calls/../customer"), "22023"),
    (("POST", "/calls/x/.."), "22023"),
    (("POST", "/calls/./x"), "22023"),
    (("POST", "/" + "a" * 2048), "22023"),
    ((None, "/calls"), "22004"),
    (("POST", None), "22004"),
])
def test_bad_method_or_path(db, args, sqlstate):
    err = assert_refused(db, "SELECT voipbin_request(%s, %s)", args, sqlstate)
    if (args[0] or "").upper() in METHODS and args[1] is not None:
        assert err.diag.message_detail, "the path's problem in DETAIL: " + texts(err)


@pytest.mark.parametrize("args", [(None, "/calls"), ("POST", None)])
def test_null_method_or_path_is_22004(db, args):
    assert_refused(db, "SELECT voipbin_request(%s, %s)", args, "22004", hint=False)


@pytest.mark.parametrize("body", ['"text"', "42", "true", "null"])
def test_scalar_body(db, body):
    assert_refused(db, "SELECT voipbin_request('POST', '/calls', %s::jsonb)", (body,), "22023")


def test_empty_dedupe_key(db):
    assert_refused(db, "SELECT voipbin_request('POST', '/calls', '{}', '')", None, "22023")


def test_a_good_path_with_a_query_is_taken(db):
    _, [r] = as_role_in_txn(db, CALLER, "SELECT voipbin_request('GET', '/calls?page_size=10&page_token=2026')")
    assert r["path"] == "/calls?page_size=10&page_token=2026"


# ----------------------------------------------------------- typed helpers

SRC = {"type": "tel", "target": "+15551230001"}
DST = [{"type": "tel", "target": "+15551230002"}, {"type": "sip", "target": "bob@example.com"}]
ACTIONS = [{"type": "talk", "option": {"text": "Hello", "language": "en-US"}}]
ID = "3f2b7f2e-8d1c-4b0a-9e55-0d6f3c1a2b4c"
FLOW = "7c1e0a52-55a1-4b8e-a7a6-1f0e9d2c3b4a"
J = json.dumps


@pytest.mark.parametrize("sql,params,method,path,body", [
    ("SELECT voipbin_hangup(%s)", (ID,), "POST", "/calls/%s/hangup" % ID, {}),
    ("SELECT voipbin_talk(%s, %s)", (ID, "AT&T <b> \"q\" 's"), "POST", "/calls/%s/talk" % ID,
     {"text": "AT&amp;T &lt;b&gt; &quot;q&quot; &apos;s", "language": "en-US"}),
    ("SELECT voipbin_talk(%s, %s, %s)", (ID, "Guten Tag", "de-DE"), "POST", "/calls/%s/talk" % ID,
     {"text": "Guten Tag", "language": "de-DE"}),
    ("SELECT voipbin_call(%s, %s, %s, %s)", (J(SRC), J(DST), J(ACTIONS), FLOW), "POST", "/calls",
     {"source": SRC, "destinations": DST, "actions": ACTIONS, "flow_id": FLOW}),
    ("SELECT voipbin_call(%s, %s)", (J(SRC), J(DST[:1])), "POST", "/calls",
     {"source": SRC, "destinations": DST[:1]}),
    ("SELECT voipbin_call(%s, %s, flow_id => %s)", (J(SRC), J(DST), FLOW), "POST", "/calls",
     {"source": SRC, "destinations": DST, "flow_id": FLOW}),
    ("SELECT voipbin_send_message(%s, %s, %s)", (J(SRC), J(DST), "Your code: 1234 & <ok>"), "POST",
     "/messages", {"source": SRC, "destinations": DST, "text": "Your code: 1234 & <ok>"}),
    ("SELECT voipbin_transcribe_start(%s, %s)", (ID, "ja-JP"), "POST", "/transcribes",
     {"reference_type": "call", "reference_id": ID, "language": "ja-JP", "direction": "both"}),
    ("SELECT voipbin_transcribe_start(%s)", (ID,), "POST", "/transcribes",
     {"reference_type": "call", "reference_id": ID, "language": "en-US", "direction": "both"}),
    ("SELECT voipbin_transcribe_stop(%s)", (ID,), "POST", "/transcribes/%s/stop" % ID, {}),
    ("SELECT voipbin_recording_start(%s)", (ID,), "POST", "/calls/%s/recording_start" % ID, {"format": "wav"}),
    ("SELECT voipbin_recording_stop(%s)", (ID,), "POST", "/calls/%s/recording_stop" % ID, {}),
    # an upper-case id reaches VoIPBIN as uuid's text, lower case
    ("SELECT voipbin_hangup(%s)", (ID.upper(),), "POST", "/calls/%s/hangup" % ID, {}),
], ids=lambda v: v.split("(")[0].replace("SELECT ", "") if isinstance(v, str) and v.startswith("SELECT") else None)
def test_helper_queues(db, sql, params, method, path, body):
    rid, [r] = as_role_in_txn(db, CALLER, sql, params)
    assert r["id"] == rid
    assert (r["method"], r["path"], r["body"]) == (method, path, body)
    assert (r["created_by"], r["state"], r["attempts"], r["dedupe_key"]) == (CALLER, "queued", 0, None)


def test_talk_escapes_ssml_once(db):
    # every SSML special character, & first: text that looks escaped is spoken as written too
    _, [r] = as_role_in_txn(db, CALLER, "SELECT voipbin_talk(%s, %s)", (ID, "&lt; & <&> \"'"))
    assert r["body"]["text"] == "&amp;lt; &amp; &lt;&amp;&gt; &quot;&apos;"


BAD_SRC = ['"tel"', '{"type": "tel"}', '{"target": "+1555"}', '{"type": "", "target": "+1555"}',
           '{"type": "tel", "target": 15551230001}', '[{"type": "tel", "target": "+1555"}]']
BAD_DST = ["[]", J(SRC), '"+15551230002"', '[{"type": "tel"}]', '[{"type": "tel", "target": "+1"}, 3]',
           '[{"type": "tel", "target": ""}]']


@pytest.mark.parametrize("sql,params", [
    ("SELECT voipbin_hangup(%s::uuid)", (NIL,)),
    ("SELECT voipbin_hangup(%s::uuid)", (None,)),
    ("SELECT voipbin_talk(%s::uuid, 'hi')", (NIL,)),
    ("SELECT voipbin_talk(%s::uuid, 'hi')", (None,)),
    ("SELECT voipbin_talk(%s, %s)", (ID, "")),
    ("SELECT voipbin_talk(%s, %s)", (ID, " \t\n ")),
    ("SELECT voipbin_talk(%s, %s)", (ID, "   ")),
    ("SELECT voipbin_talk(%s, %s::text)", (ID, None)),
    ("SELECT voipbin_talk(%s, 'hi', %s)", (ID, "english")),
    ("SELECT voipbin_talk(%s, 'hi', %s)", (ID, "en_US")),
    ("SELECT voipbin_talk(%s, 'hi', %s)", (ID, "e")),
    ("SELECT voipbin_talk(%s, 'hi', %s)", (ID, "en-US'; <x>")),
    ("SELECT voipbin_talk(%s, 'hi', %s::text)", (ID, None)),
    ("SELECT voipbin_transcribe_start(%s::uuid)", (NIL,)),
    ("SELECT voipbin_transcribe_start(%s::uuid)", (None,)),
    ("SELECT voipbin_transcribe_start(%s, %s)", (ID, "en US")),
    ("SELECT voipbin_transcribe_start(%s, %s::text)", (ID, None)),
    ("SELECT voipbin_transcribe_stop(%s::uuid)", (NIL,)),
    ("SELECT voipbin_transcribe_stop(%s::uuid)", (None,)),
    ("SELECT voipbin_recording_start(%s::uuid)", (NIL,)),
    ("SELECT voipbin_recording_start(%s::uuid)", (None,)),
    ("SELECT voipbin_recording_stop(%s::uuid)", (NIL,)),
    ("SELECT voipbin_recording_stop(%s::uuid)", (None,)),
] + [("SELECT voipbin_call(%s, %s)", (s, J(DST))) for s in BAD_SRC + [None]]
  + [("SELECT voipbin_call(%s, %s)", (J(SRC), d)) for d in BAD_DST + [None]]
  + [("SELECT voipbin_call(%s, %s, %s)", (J(SRC), J(DST), a)) for a in ['{}', J(ACTIONS[0]), '"talk"']]
  + [("SELECT voipbin_call(%s, %s, flow_id => %s::uuid)", (J(SRC), J(DST), NIL))]
  + [("SELECT voipbin_send_message(%s, %s, 'hi')", (s, J(DST))) for s in BAD_SRC[:2] + [None]]
  + [("SELECT voipbin_send_message(%s, %s, 'hi')", (J(SRC), d)) for d in BAD_DST[:4] + [None]]
  + [("SELECT voipbin_send_message(%s, %s, %s::text)", (J(SRC), J(DST), t)) for t in ["", None]])
def test_helper_refuses_bad_arguments(db, sql, params):
    assert_refused(db, sql, params, "22023")


# ----------------------------------------------------------------- cancel

def test_cancel_a_queued_request(db):
    rid = db.query("SELECT voipbin_request('POST', '/calls/x/hangup')", user=CALLER)[0][0]
    assert db.query("SELECT voipbin_cancel_request(%s)", (rid,), user=CALLER) == [(True,)]
    [r] = rows(db)
    assert r["state"] == "canceled" and r["finished_at"] is not None
    assert r["finished_at"] >= r["created_at"]
    assert (r["attempts"], r["sent_at"]) == (0, None)
    # a second time, and an id never queued: nothing to cancel
    assert db.query("SELECT voipbin_cancel_request(%s)", (rid,), user=CALLER) == [(False,)]
    assert db.query("SELECT voipbin_cancel_request(%s)", (rid + 1000,), user=CALLER) == [(False,)]
    assert db.query("SELECT voipbin_cancel_request(NULL)", user=CALLER) == [(False,)]
    assert rows(db)[0]["finished_at"] == r["finished_at"]


@pytest.mark.parametrize("state", ["sending", "done", "failed", "unknown"])
def test_cancel_refuses_a_request_no_longer_queued(db, state):
    conn = db.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT voipbin_request('POST', '/calls/x/hangup')")
            rid = cur.fetchone()[0]
            cur.execute("UPDATE voipbin_requests SET state = %s WHERE id = %s", (state, rid))
            cur.execute("SET LOCAL ROLE %s" % CALLER)
            cur.execute("SELECT voipbin_cancel_request(%s)", (rid,))
            assert cur.fetchone()[0] is False
            cur.execute("RESET ROLE")
            cur.execute("SELECT state, finished_at FROM voipbin_requests WHERE id = %s", (rid,))
            assert cur.fetchone() == (state, None)
    finally:
        conn.rollback()
        conn.close()


# ------------------------------------------------------------- privileges

@pytest.mark.parametrize("function", sorted(ENTRY_POINTS))
def test_no_grant_no_execute(db, function):
    err = error_of(db, ENTRY_POINTS[function], user=STRANGER)
    assert err.pgcode == "42501", texts(err)
    assert "permission denied for function " + function.split("(")[0] in err.diag.message_primary
    assert db.query_one("SELECT has_function_privilege('public', %s, 'EXECUTE')", (function,))[0] is False


def test_the_table_is_not_public(db):
    assert db.query_one("SELECT has_table_privilege('public', 'voipbin_requests', 'SELECT')")[0] is False
    for role in (STRANGER, CALLER):
        err = error_of(db, "SELECT * FROM voipbin_requests", user=role)
        assert err.pgcode == "42501", texts(err)
        err = error_of(db, "INSERT INTO voipbin_requests (created_by, method, path)"
                           " VALUES ('postgres', 'POST', '/calls')", user=role)
        assert err.pgcode == "42501", texts(err)


def test_caller_with_request_and_a_helper_only(db):
    """A role granted EXECUTE on voipbin_request and voipbin_hangup, nothing else."""
    role = "vb_rq_hangup_only"
    db.execute("DROP ROLE IF EXISTS %s" % role)
    db.execute("CREATE ROLE %s LOGIN" % role)
    try:
        db.execute("GRANT EXECUTE ON FUNCTION voipbin_request(text, text, jsonb, text),"
                   " voipbin_hangup(uuid) TO %s" % role)
        rid = db.query("SELECT voipbin_hangup(%s)", (ID,), user=role)[0][0]
        [r] = rows(db, "id = %s", (rid,))
        assert (r["created_by"], r["path"]) == (role, "/calls/%s/hangup" % ID)
    finally:
        db.execute("DELETE FROM voipbin_requests")
        db.execute("DROP OWNED BY %s" % role)
        db.execute("DROP ROLE %s" % role)


def test_helper_needs_execute_on_voipbin_request(db):
    """A helper is no way around voipbin_request's grant."""
    role = "vb_rq_helper_only"
    db.execute("DROP ROLE IF EXISTS %s" % role)
    db.execute("CREATE ROLE %s LOGIN" % role)
    try:
        db.execute("GRANT EXECUTE ON FUNCTION voipbin_hangup(uuid) TO %s" % role)
        err = error_of(db, "SELECT voipbin_hangup(%s)", (ID,), user=role)
        assert err.pgcode == "42501", texts(err)
        assert count(db) == 0
    finally:
        db.execute("DROP OWNED BY %s" % role)
        db.execute("DROP ROLE %s" % role)


def test_the_credential_is_nowhere_in_a_row(api, fake):
    _, got = as_role_in_txn(api, CALLER, "SELECT ARRAY[voipbin_hangup(%s), voipbin_request('GET', '/calls'),"
                                         " voipbin_talk(%s, 'hello')]", (ID, ID))
    assert len(got) == 3
    for r in got:
        text = repr(r)
        assert ACCESSKEY not in text and JWT not in text and "accesskey" not in text.lower(), text


# ------------------------------------------------------------- voipbin_api

def fake_requests(fake):
    return [(r["method"], r["path"], r["status"]) for r in fake.state()["rest_requests"]]


def test_api_returns_voipbins_answer(api, fake):
    data = call(fake, status="progressing")
    fake.control("objects", {"calls": [data]})
    api.execute("GRANT EXECUTE ON FUNCTION voipbin_api(text, text, jsonb) TO %s" % CALLER)
    try:
        got = api.query("SELECT voipbin_api('get', %s)", ("/calls/" + data["id"],), user=CALLER)[0][0]
    finally:
        api.execute("REVOKE EXECUTE ON FUNCTION voipbin_api(text, text, jsonb) FROM %s" % CALLER)
    assert got == data
    assert fake_requests(fake) == [("GET", "/v1.0/calls/" + data["id"], 200)]
    assert count(api) == 0, "voipbin_api queues nothing"


def test_api_404_is_42704_with_voipbins_reason(api, fake):
    missing = str(uuid.uuid4())
    err = error_of(api, "SELECT voipbin_api('GET', %s)", ("/calls/" + missing,))
    assert err.pgcode == "42704", texts(err)
    assert "CALL_NOT_FOUND" in err.diag.message_detail
    assert ACCESSKEY not in texts(err)
    assert fake_requests(fake) == [("GET", "/v1.0/calls/" + missing, 404)]
    assert count(api) == 0
    # an unknown id, not a wrong URL: the hint says so
    assert "check the id" in err.diag.message_hint


def test_api_409_is_55000(api, fake):
    call_id = fake.add_call(status="progressing")["id"]
    body = json.dumps({"reference_type": "call", "reference_id": call_id, "language": "en-US"})
    started = api.query_one("SELECT voipbin_api('POST', '/transcribes', %s)", (body,))[0]
    assert started["status"] == "progressing"
    # a second live transcription of the call: VoIPBIN's 409
    err = error_of(api, "SELECT voipbin_api('POST', '/transcribes', %s)", (body,))
    assert err.pgcode == "55000", texts(err)
    assert "TRANSCRIBE_ALREADY_PROGRESSING" in err.diag.message_detail


@pytest.mark.parametrize("args,sqlstate", [
    (("PUSH", "/calls", None), "22023"),
    (("GET", "/v1.0/calls", None), "22023"),
    (("GET", "/calls?accesskey=x", None), "22023"),
    (("POST", "/calls", '"x"'), "22023"),
    ((None, "/calls", None), "22004"),
])
def test_api_checks_before_sending(api, fake, args, sqlstate):
    err = error_of(api, "SELECT voipbin_api(%s, %s, %s::jsonb)", args)
    assert err.pgcode == sqlstate, texts(err)
    assert fake_requests(fake) == []


def test_api_without_a_credential_is_55000(db):
    err = error_of(db, "SELECT voipbin_api('GET', '/calls')")
    assert err.pgcode == "55000", texts(err)
    assert "credential" in err.diag.message_primary and "voipbin.token_file" in err.diag.message_hint
    assert count(db) == 0


# ------------------------------------------------------- dump and restore

RESTORED = "vb_rq_restored"


def test_queued_requests_survive_dump_and_restore(db):
    ids = [db.query("SELECT voipbin_request('POST', %s, %s, %s)",
                    ("/calls/%s/hangup" % uuid.uuid4(), '{"n": %d}' % i, "k%d" % i if i else None),
                    user=CALLER)[0][0] for i in range(3)]
    want = [(r["id"], r["created_by"], r["method"], r["path"], r["body"], r["dedupe_key"], r["state"])
            for r in rows(db)]
    assert [w[0] for w in want] == ids
    dump = os.path.join(db.dir, "requests.sql")
    db.run_as_postgres("pg_dump", "-h", db.sock, "-p", str(db.port), "-f", dump, db.dbname)
    db.execute("DROP DATABASE IF EXISTS %s" % RESTORED, dbname="postgres")
    db.execute("CREATE DATABASE %s" % RESTORED, dbname="postgres")
    try:
        out = db.run_as_postgres("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", db.sock,
                                 "-p", str(db.port), "-f", dump, RESTORED, check=False)
        assert out.returncode == 0, out.stdout
        got = db.query("SELECT id, created_by::text, method, path, body, dedupe_key, state"
                       " FROM voipbin_requests ORDER BY id", dbname=RESTORED)
        assert got == want
        # the dedupe keys still hold
        assert db.query("SELECT voipbin_request('GET', '/calls', '{}', 'k1')", dbname=RESTORED) \
            == [(ids[1],)]
        # a new request gets an id after the restored ones (the identity's sequence came along)
        conn = db.connect(RESTORED)
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute("SELECT voipbin_request('GET', '/calls')")
                except psycopg2.Error as e:
                    pytest.fail("a new request after the restore: %s %s" % (e.pgcode, texts(e)))
                new_id = cur.fetchone()[0]
            # the worker serves voipbin.database only, and says so
            assert any("no worker sends the requests" in n for n in conn.notices)
        finally:
            conn.close()
        assert new_id > max(ids), "new id %d after restored ids %r" % (new_id, ids)
    finally:
        db.execute("DROP DATABASE IF EXISTS %s" % RESTORED, dbname="postgres")


# ------------------------------------------------------------------ status

def test_status_has_the_request_counters(db):
    out = db.query("SELECT name, type FROM unnest("
                   " (SELECT proargnames FROM pg_proc WHERE proname = 'voipbin_status'),"
                   " (SELECT proallargtypes::regtype[]::text[] FROM pg_proc WHERE proname = 'voipbin_status'),"
                   " (SELECT proargmodes::text[] FROM pg_proc WHERE proname = 'voipbin_status'))"
                   " AS t(name, type, mode) WHERE mode = 'o'")
    names = [n for n, _ in out]
    assert names[-4:] == ["requests_queued", "requests_done", "requests_failed", "requests_unknown"]
    assert all(t == "bigint" for n, t in out if n.startswith("requests_"))
    conn = db.connect(user=STRANGER)   # voipbin_status() is PUBLIC's
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT requests_queued, requests_done, requests_failed, requests_unknown"
                        " FROM voipbin_status()")
            s = cur.fetchone()
    finally:
        conn.close()
    assert all(isinstance(v, int) and v >= 0 for v in s.values()), s
