"""Security: hostile settings never crash anything, LISTEN leaks no data
with notify_payload = 'id', the credential reads back only as a mask, http:// is
refused off this machine, the access key is percent-encoded, last_error is for
pg_monitor, and the worker runs as a non-superuser role with docs/security.md's grants."""
import json
import os
import re
import shutil
import stat
import tempfile

import psycopg2
import pytest

from helpers import FAST, point_at, reset_cluster, write_token_file
from fakeserver_fixture import start_fake
from pgcluster import Cluster, Listener, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "docs", "security.md")
MASK = "********"


def checkpointer_pid(cluster):
    # any crash restart of the cluster replaces every process, this one included
    return cluster.query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")[0]


def call(fake, status="ringing", **extra):
    import uuid
    data = {
        "id": str(uuid.uuid4()), "customer_id": fake.customer_id,
        "source": {"type": "tel", "target": "+15550001"},
        "destination": {"type": "tel", "target": "+15550002", "target_name": "Alice Secret"},
        "status": status, "direction": "incoming",
        "tm_create": "2026-02-21T10:05:10.1Z", "tm_update": "2026-02-21T10:05:11.2Z",
    }
    data.update(extra)
    return data


def write_file(path, content, mode=0o600, owner="postgres"):
    with open(path, "wb") as f:
        f.write(content)
    shutil.chown(path, owner, owner)
    os.chmod(path, mode)
    return path


# ---------------------------------------------------------------------------
# 1. hostile settings, applied by reload
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def baseline(cluster):
    """The checkpointer's PID before the first hostile setting."""
    return checkpointer_pid(cluster)


def settle(cluster, state, error_re=None, what=""):
    """Waits for the worker to report state (and a last_error matching error_re)."""
    def ok(s):
        if s["state"] != state:
            return False
        if error_re is None:
            return True
        return s["last_error"] is not None and re.search(error_re, s["last_error"])
    return cluster.wait_status(ok, timeout=20, what="%s: state %s, last_error ~ %r"
                               % (what, state, error_re))


def test_blanks_around_credential_survive_every_reload(cluster, fake, secret_dir, baseline):
    """The 1.0 crash: a trimmed credential was freed by a pointer into its middle."""
    log_start = len(cluster.read_log())
    point_at(cluster, fake, secret_dir)
    path = write_file(os.path.join(secret_dir, "token"), b"   " + fake.accesskey.encode() + b"  \n")
    cluster.set_conf(voipbin__token_file=path)
    fake.wait_connections(1, timeout=15)
    settle(cluster, "connected", what="blanks around the key")
    worker = cluster.worker_pid()
    for i in range(3):
        # each reload frees the credential of the one before
        write_file(path, b"\t " + fake.accesskey.encode() + b" \r\n" + b" " * i)
        cluster.set_conf(voipbin__token_file=path, voipbin__idle_timeout="%ds" % (3 + i))
        wait_until(lambda: cluster.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'voipbin'")[0] == 1,
            what="worker alive")
        settle(cluster, "connected", what="reload %d" % i)
    assert cluster.worker_pid() == worker
    assert checkpointer_pid(cluster) == baseline
    assert "was terminated by signal" not in cluster.read_log()[log_start:]
    reset_cluster(cluster)


def _special(kind, secret_dir):
    """A token_file path that is not a plain readable file."""
    if kind == "directory":
        d = os.path.join(secret_dir, "a-directory")
        os.makedirs(d, exist_ok=True)
        return d
    if kind == "unreadable":
        # root's, mode 000: the postgres OS user cannot open it
        return write_file(os.path.join(secret_dir, "unreadable"), b"vb_x\n", mode=0, owner="root")
    if kind == "vanished":
        path = write_file(os.path.join(secret_dir, "vanishing"), b"vb_x\n")
        os.unlink(path)
        return path
    if kind == "fifo":
        path = os.path.join(secret_dir, "a-fifo")
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
            shutil.chown(path, "postgres", "postgres")
        return path
    if kind == "device":
        return "/dev/zero"
    raise ValueError(kind)


# (name, token_file content or special kind, expected state, last_error pattern)
TOKEN_FILES = [
    ("crlf", lambda k: k + b"\r\n", "connected", None),
    ("bom", lambda k: b"\xef\xbb\xbf" + k + b"\n", "connected", None),
    ("no-newline", lambda k: k, "connected", None),
    ("second-line-ignored", lambda k: k + b"\n\x00\xff binary\n", "connected", None),
    ("nul", lambda k: k[:5] + b"\x00" + k[5:] + b"\n", "disabled", r"a NUL at byte 6"),
    ("empty", lambda k: b"", "disabled", r"its first line is empty"),
    ("blank-line", lambda k: b" \t \r\n" + k, "disabled", r"its first line is empty"),
    ("1MB-line", lambda k: k + b"a" * (1 << 20) + b"\n", "disabled", r"longer than 8192 bytes"),
    ("binary", lambda k: bytes(range(1, 256)) * 64, "disabled", r"a control character at byte 1\b"),
    ("non-ascii", lambda k: k + "ключ".encode() + b"\n", "disabled", r"a non-ASCII byte"),
    ("inner-blank", lambda k: k + b" " + k + b"\n", "disabled", r"a blank at byte"),
    ("directory", "directory", "disabled", r"is a directory, not a regular file"),
    ("unreadable", "unreadable", "disabled", r"could not open voipbin.token_file .*Permission denied"),
    ("vanished", "vanished", "disabled", r"could not open voipbin.token_file .*No such file"),
    ("fifo", "fifo", "disabled", r"is a device, FIFO or socket"),
    ("device", "device", "disabled", r'"/dev/zero" is a device, FIFO or socket'),
]


@pytest.mark.parametrize("name,content,state,error_re", TOKEN_FILES, ids=[t[0] for t in TOKEN_FILES])
def test_hostile_token_file(cluster, fake, secret_dir, baseline, name, content, state, error_re):
    point_at(cluster, fake, secret_dir)
    fake.wait_connections(1, timeout=15)
    settle(cluster, "connected", what="the good key first")
    # from a known other state, so what is seen next is this case's doing
    cluster.set_conf(voipbin__token_file=write_file(os.path.join(secret_dir, "token"), b""))
    settle(cluster, "disabled", r"its first line is empty", what="empty first")
    worker = cluster.worker_pid()
    if callable(content):
        path = write_file(os.path.join(secret_dir, "hostile-" + name), content(fake.accesskey.encode()))
    else:
        path = _special(content, secret_dir)
    cluster.set_conf(voipbin__token_file=path)
    if state == "connected":
        wait_until(lambda: any(c["auth"] == "accesskey" for c in fake.state()["connections"]),
                   timeout=15, what="connection with the key")
    s = settle(cluster, state, error_re, what=name)
    if state == "disabled":
        assert fake.accesskey not in (s["last_error"] or "")
    assert cluster.worker_pid() == worker, "the worker exited"
    assert checkpointer_pid(cluster) == baseline, "the cluster restarted after a crash"
    reset_cluster(cluster)


TOKENS = [
    ("blanks", lambda k: "  %s \t" % k, "connected", None),
    ("tab-inside", lambda k: k[:4] + "\t" + k[4:], "disabled", r"voipbin.token: the credential has a control character at byte 5"),
    ("100kB", lambda k: k + "x" * 100000, "disabled", r"voipbin.token: the credential is longer than 8192 bytes"),
]


@pytest.mark.parametrize("name,value,state,error_re", TOKENS, ids=[t[0] for t in TOKENS])
def test_hostile_token_setting(cluster, fake, secret_dir, baseline, name, value, state, error_re):
    reset_cluster(cluster)
    cluster.set_conf(voipbin__api_url=fake.api_url, voipbin__ca_file=fake.ca_file)
    settle(cluster, "disabled", r"no credential", what="no credential first")
    worker = cluster.worker_pid()
    cluster.set_conf(voipbin__token=value(fake.accesskey))
    s = settle(cluster, state, error_re, what=name)
    if state == "disabled":
        assert fake.accesskey not in (s["last_error"] or "")
    assert cluster.worker_pid() == worker
    assert checkpointer_pid(cluster) == baseline
    reset_cluster(cluster)


URLS = [
    ("empty", "", r"must start with http:// or https://"),
    ("ftp", "ftp://example.com/v1.0", r"must start with http:// or https://"),
    ("no-host", "https:///v1.0", r"has no host"),
    ("bad-port", "https://127.0.0.1:99999/v1.0", r"invalid port"),
    ("port-junk", "https://127.0.0.1:44x3/v1.0", r"invalid port"),
    ("ipv6-open", "https://[::1/v1.0", r"unterminated IPv6"),
    ("blank", "https://exa mple.com/v1.0", r"a blank, a control character or a non-ASCII byte"),
    # ALTER SYSTEM refuses a newline itself; a CR or tab gets through to us
    ("cr-injection", "https://example.com/v1.0\rX-Injected:1", r"a blank, a control character"),
    ("tab", "https://example.com\t/v1.0", r"a blank, a control character"),
    ("non-ascii", "https://exämple.com/v1.0", r"a blank, a control character or a non-ASCII byte"),
    ("host-junk", "https://user@example.com/v1.0", r"neither a name nor an IP address"),
    ("query", "https://example.com/v1.0?x=1", r"must not have a query or fragment"),
    ("huge", "https://" + "a" * 5000 + ".example.com/v1.0", r"longer than 2048 bytes"),
    ("http-remote", "http://example.com/v1.0", r"http:// to a host that is not this machine"),
    ("http-lookalike", "http://127.0.0.1.example.com/v1.0", r"http:// to a host that is not this machine"),
]


@pytest.mark.parametrize("name,url,error_re", URLS, ids=[u[0] for u in URLS])
def test_hostile_api_url(cluster, fake, secret_dir, baseline, name, url, error_re):
    point_at(cluster, fake, secret_dir)
    fake.wait_connections(1, timeout=15)
    settle(cluster, "connected", what="connected first")
    worker = cluster.worker_pid()
    cluster.set_conf(voipbin__api_url=url)
    settle(cluster, "disabled", error_re, what=name)
    assert cluster.worker_pid() == worker
    assert checkpointer_pid(cluster) == baseline
    # the REST functions refuse it the same way, with an error rather than a request
    with pytest.raises(psycopg2.Error) as exc:
        cluster.query("SELECT voipbin_customer()")
    assert exc.value.pgcode == "F0000" and "invalid voipbin.api_url" in exc.value.pgerror
    # and a good URL brings it back
    cluster.set_conf(voipbin__api_url=fake.api_url)
    settle(cluster, "connected", what="back to the good URL")
    reset_cluster(cluster)


@pytest.mark.parametrize("name", ["missing", "directory", "garbage"])
def test_hostile_ca_file(cluster, fake, secret_dir, baseline, name):
    point_at(cluster, fake, secret_dir)
    fake.wait_connections(1, timeout=15)
    settle(cluster, "connected", what="connected first")
    worker = cluster.worker_pid()
    if name == "missing":
        path = os.path.join(secret_dir, "no-such-ca.pem")
    elif name == "directory":
        path = secret_dir
    else:
        path = write_file(os.path.join(secret_dir, "garbage.pem"), os.urandom(4096), mode=0o644)
    cluster.set_conf(voipbin__ca_file=path)
    settle(cluster, "backoff", r"CA file", what="CA file " + name)
    assert cluster.worker_pid() == worker
    assert checkpointer_pid(cluster) == baseline
    cluster.set_conf(voipbin__ca_file=fake.ca_file)
    settle(cluster, "connected", what="back to the good CA")
    reset_cluster(cluster)


# ---------------------------------------------------------------------------
# 5. transport
# ---------------------------------------------------------------------------

def test_http_to_loopback_is_allowed(cluster, fake, secret_dir):
    """Only the scheme is refused off this machine; a local plain-text proxy is fine."""
    point_at(cluster, fake, secret_dir)
    port = fake.api_url.split(":")[2].split("/")[0]
    for host in ("127.0.0.1", "localhost", "[::1]"):
        cluster.set_conf(voipbin__api_url="http://%s:%s/v1.0" % (host, port))
        # the fake speaks TLS only, so the plain connection fails: but it is tried
        s = cluster.wait_status(lambda s: s["state"] in ("connecting", "backoff")
                                and "http://" not in (s["last_error"] or ""),
                                what="http://%s tried" % host)
        assert s["state"] != "disabled"
    reset_cluster(cluster)


def test_access_key_is_percent_encoded_in_websocket_url(cluster, certs, secret_dir, tmp_path):
    key = "vb_a+b/c=d&e%f?g#h"
    fake = start_fake(str(tmp_path), certs=certs, accesskey=key, ping_interval=1, pong_timeout=10)
    try:
        point_at(cluster, fake, secret_dir, credential=key)
        conn = fake.wait_connections(1, timeout=15)[0]
        assert (conn["auth"], conn["auth_source"]) == ("accesskey", "query:accesskey")
        cluster.wait_status(lambda s: s["state"] == "connected", what="connected with the key")
        # REST encodes it the same way
        assert cluster.query_one("SELECT voipbin_customer()->>'id'")[0] == fake.customer_id
    finally:
        reset_cluster(cluster)
        fake.stop()


# ---------------------------------------------------------------------------
# 3. the credential reads back only as a mask
# ---------------------------------------------------------------------------

def test_credential_reads_back_as_a_mask(cluster, fake, secret_dir):
    reset_cluster(cluster)
    cluster.set_conf(voipbin__api_url=fake.api_url, voipbin__ca_file=fake.ca_file,
                     voipbin__token=fake.accesskey)
    cluster.execute("DROP ROLE IF EXISTS sec_reader; DROP ROLE IF EXISTS sec_plain;"
                    " CREATE ROLE sec_reader LOGIN IN ROLE pg_read_all_settings, pg_monitor;"
                    " CREATE ROLE sec_plain LOGIN")
    try:
        # the worker and the REST functions read the value itself
        fake.wait_connections(1, timeout=15)
        cluster.wait_status(lambda s: s["state"] == "connected", what="connected with voipbin.token")
        assert cluster.query_one("SELECT voipbin_customer()->>'id'")[0] == fake.customer_id

        for user in ("postgres", "sec_reader"):
            conn = cluster.connect(user=user)
            with conn.cursor() as cur:
                cur.execute("SHOW voipbin.token")
                assert cur.fetchone()[0] == MASK, user
                cur.execute("SELECT current_setting('voipbin.token'), current_setting('voipbin.token', true)")
                assert cur.fetchone() == (MASK, MASK), user
                cur.execute("SELECT setting FROM pg_settings WHERE name = 'voipbin.token'")
                assert cur.fetchall() in ([], [(MASK,)]), user
                cur.execute("SHOW ALL")
                assert fake.accesskey not in repr(cur.fetchall()), user
                cur.execute("SELECT s::text FROM pg_show_all_settings() s")
                assert fake.accesskey not in repr(cur.fetchall()), user
                cur.execute("SELECT s::text FROM pg_settings s")
                assert fake.accesskey not in repr(cur.fetchall()), user
            conn.close()
        # pg_file_settings (the config files' raw text) stays superuser-only
        with pytest.raises(psycopg2.Error) as exc:
            cluster.query("SELECT * FROM pg_file_settings", user="sec_reader")
        assert exc.value.pgcode == "42501"
        with pytest.raises(psycopg2.Error) as exc:
            cluster.query("SHOW voipbin.token", user="sec_plain")
        assert exc.value.pgcode == "42501"
    finally:
        cluster.execute("DROP ROLE sec_reader; DROP ROLE sec_plain")
        reset_cluster(cluster)


def test_unset_credential_shows_empty(cluster):
    reset_cluster(cluster)
    assert cluster.query_one("SHOW voipbin.token")[0] == ""
    assert cluster.query_one("SHOW voipbin.webhook_secret")[0] == ""


# ---------------------------------------------------------------------------
# 2. notify_payload = 'id': LISTEN hears no data
# ---------------------------------------------------------------------------

def test_connect_only_role_hears_no_data_with_id(vb, fake):
    vb.execute("DROP ROLE IF EXISTS snoop; CREATE ROLE snoop LOGIN")
    topic = vb.query_one("SELECT voipbin_subscribe(%s)", ("customer_id:%s:" % fake.customer_id,))[0]
    fake.wait_topics([topic])
    snoop = Listener(vb, "voipbin_events", "call_ringing", user="snoop")

    def heard():
        return [(ch, json.loads(p)) for ch, p, _ in snoop.poll()]
    try:
        def last_payload_for(data):
            fake.publish("call_ringing", data)
            got = wait_until(lambda: [p for ch, p in heard() if ch == "voipbin_events"
                                      and p["resource_id"] == data["id"]],
                             what="notification of %s" % data["id"])
            return got[-1]

        # full (the default, as 1.0): every role that can connect hears the data
        assert "data" in last_payload_for(call(fake))

        vb.set_conf(voipbin__notify_payload="id")
        # a reload reaches the worker asynchronously: poll until it has
        wait_until(lambda: "data" not in last_payload_for(call(fake)), timeout=15,
                   what="notify_payload = id in effect")
        snoop.received.clear()
        secret = call(fake, "ringing")
        fake.publish("call_ringing", secret)
        def both():
            rs = [r for r in heard() if r[1]["resource_id"] == secret["id"]]
            return rs if len(rs) >= 2 else None
        got = wait_until(both, what="both notifications")
        assert sorted(ch for ch, _ in got) == ["call_ringing", "voipbin_events"]
        for ch, payload in got:
            assert set(payload) == {"id", "event_type", "resource_id"}, payload
            assert payload["event_type"] == "call_ringing"
        raw = repr(got)
        assert "Alice Secret" not in raw and "+15550002" not in raw
        # the row itself is guarded by the table's privileges
        with pytest.raises(psycopg2.Error) as exc:
            vb.query("SELECT data FROM voipbin_events WHERE id = %s", (got[0][1]["id"],), user="snoop")
        assert exc.value.pgcode == "42501"
        assert vb.query_one("SELECT data->'destination'->>'target_name' FROM voipbin_events"
                            " WHERE id = %s", (got[0][1]["id"],))[0] == "Alice Secret"

        vb.set_conf(voipbin__notify_payload=None)
        wait_until(lambda: "data" in last_payload_for(call(fake)), timeout=15,
                   what="back to full")
    finally:
        snoop.close()
        vb.set_conf(voipbin__notify_payload=None)
        vb.execute("DROP ROLE snoop")


# ---------------------------------------------------------------------------
# 6. last_error only for pg_monitor
# ---------------------------------------------------------------------------

def test_last_error_hidden_from_roles_without_pg_monitor(cluster):
    reset_cluster(cluster)
    cluster.wait_status(lambda s: s["state"] == "disabled" and s["last_error"], what="disabled")
    cluster.execute("DROP ROLE IF EXISTS sec_anyone; DROP ROLE IF EXISTS sec_monitor;"
                    " CREATE ROLE sec_anyone LOGIN; CREATE ROLE sec_monitor LOGIN IN ROLE pg_monitor")
    try:
        q = "SELECT state, last_error FROM voipbin_status()"
        assert cluster.query(q, user="sec_anyone") == [("disabled", None)]
        assert cluster.query(q, user="sec_monitor")[0][1] == cluster.query(q)[0][1]
        assert "no credential" in cluster.query(q)[0][1]
    finally:
        cluster.execute("DROP ROLE sec_anyone; DROP ROLE sec_monitor")


# ---------------------------------------------------------------------------
# 4. search_path: the extension's functions cannot be hijacked
# ---------------------------------------------------------------------------

def test_extension_functions_have_a_safe_search_path(cluster):
    unsafe = cluster.query("""
        SELECT p.oid::regprocedure::text
        FROM pg_proc p
        JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'voipbin'
        JOIN pg_language l ON l.oid = p.prolang
        WHERE l.lanname IN ('plpgsql', 'sql')
          AND p.prosqlbody IS NULL  -- a SQL-standard body is resolved once, at CREATE
          AND NOT coalesce(array_to_string(p.proconfig, ' ') ~ 'search_path=', false)
          AND p.proname <> 'voipbin_run_handlers'  -- names everything by schema, on purpose
        ORDER BY 1""")
    assert unsafe == []


def test_view_functions_ignore_a_hostile_search_path(cluster):
    """A role that may create in public shadows pg_catalog for whoever puts it first."""
    cluster.execute("""
        DROP ROLE IF EXISTS mallory;
        CREATE ROLE mallory;
        GRANT CREATE ON SCHEMA public TO mallory;
        SET ROLE mallory;
        CREATE FUNCTION public.regexp_match(text, text) RETURNS text[]
            LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked by %', current_user; END $$;
        CREATE FUNCTION public.make_timestamp(int, int, int, int, int, float8) RETURNS timestamp
            LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'hijacked by %', current_user; END $$;
        RESET ROLE;""")
    try:
        conn = cluster.connect()
        with conn.cursor() as cur:
            cur.execute("SET search_path = public, pg_catalog")
            cur.execute("SELECT voipbin_timestamp('2026-02-21T10:05:15.1Z') = '2026-02-21 10:05:15.1+00',"
                        " voipbin_offset('0001-01-01T00:00:08.5Z') = interval '8.5 s'")
            assert cur.fetchone() == (True, True)
        conn.close()
    finally:
        cluster.execute("DROP FUNCTION public.regexp_match(text, text);"
                        " DROP FUNCTION public.make_timestamp(int, int, int, int, int, float8);"
                        " REVOKE CREATE ON SCHEMA public FROM mallory; DROP ROLE mallory")


# ---------------------------------------------------------------------------
# 4. a worker that is not a superuser
# ---------------------------------------------------------------------------

def readme_worker_grants():
    """The SQL block of docs/security.md's "A worker that is not a superuser"."""
    with open(README) as f:
        text = f.read()
    m = re.search(r"<!-- worker-role-grants -->\s*```sql\n(.*?)```", text, re.S)
    assert m, "docs/security.md has no worker-role-grants block"
    return m.group(1)


@pytest.fixture
def role_cluster():
    conf = dict(FAST)
    conf["voipbin.worker_role"] = "'voipbin_worker'"
    c = Cluster(conf)
    try:
        c.start()
        yield c
    finally:
        c.destroy()


def test_worker_runs_as_a_non_superuser_role(role_cluster, fake, secret_dir):
    c = role_cluster
    try:
        _worker_as_role(c, fake, secret_dir)
    except BaseException:
        print("\n".join(c.read_log().splitlines()[-60:]))
        print(c.status(), c.query("SELECT id, event_type FROM voipbin_events"),
              c.query("SELECT id, error FROM voipbin_dead_letters"), fake.state()["connections"])
        raise


def _worker_as_role(c, fake, secret_dir):
    # before the role exists the worker cannot start, and says so
    c.execute("CREATE EXTENSION voipbin")
    c.wait_status(lambda s: 'voipbin.worker_role "voipbin_worker"' in (s["last_error"] or ""),
                  what="worker refused for a missing role")
    c.execute(readme_worker_grants())
    wait_until(lambda: c.query_one("SELECT usename FROM pg_stat_activity WHERE backend_type = 'voipbin'")
               == ("voipbin_worker",), timeout=20, what="worker connected as voipbin_worker")
    assert c.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'voipbin_worker'") == (False,)
    worker = c.worker_pid()

    # handlers: the worker's own (no SECURITY DEFINER needed), an app's SECURITY DEFINER one,
    # one that raises; an app's plain function is refused
    c.execute("""
        CREATE ROLE app;
        CREATE TABLE app_log (event_id bigint, run_as name, kind text);
        ALTER TABLE app_log OWNER TO app;
        GRANT INSERT ON app_log TO voipbin_worker;
        CREATE FUNCTION h_own(e voipbin_events) RETURNS void LANGUAGE sql
            AS $$ INSERT INTO public.app_log VALUES (e.id, current_user, 'own') $$;
        ALTER FUNCTION h_own(voipbin_events) OWNER TO voipbin_worker;
        CREATE FUNCTION h_definer(e voipbin_events) RETURNS void LANGUAGE sql SECURITY DEFINER
            SET search_path = pg_catalog
            AS $$ INSERT INTO public.app_log VALUES (e.id, current_user, 'definer') $$;
        ALTER FUNCTION h_definer(voipbin_events) OWNER TO app;
        CREATE FUNCTION h_raise(e voipbin_events) RETURNS void LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'handler refused %', e.resource_id; END $$;
        ALTER FUNCTION h_raise(voipbin_events) OWNER TO voipbin_worker;
        CREATE FUNCTION h_plain(e voipbin_events) RETURNS void LANGUAGE sql AS $$ SELECT $$;
        ALTER FUNCTION h_plain(voipbin_events) OWNER TO app;
        SELECT voipbin_on('call_hangup', 'h_own(voipbin_events)');
        SELECT voipbin_on('call_hangup', 'h_definer(voipbin_events)');
        SELECT voipbin_on('call_ringing', 'h_raise(voipbin_events)');""")
    with pytest.raises(psycopg2.Error) as exc:
        c.execute("SELECT voipbin_on('call_hangup', 'h_plain(voipbin_events)')")
    assert exc.value.pgcode == "42501"
    assert "as role voipbin_worker" in exc.value.pgerror

    # ingest and subscriptions
    point_at(c, fake, secret_dir)
    fake.wait_connections(1, timeout=15)
    c.wait_status(lambda s: s["state"] == "connected", what="connected as voipbin_worker")
    topic = c.query_one("SELECT voipbin_subscribe(%s)", ("customer_id:%s:" % fake.customer_id,))[0]
    fake.wait_topics([topic])
    wait_until(lambda: c.query_one("SELECT status FROM voipbin_subscriptions") == ("active",),
               timeout=15, what="topic marked active by the worker")

    hangup = call(fake, "hangup")
    ringing = call(fake, "ringing")
    fake.publish("call_hangup", hangup)
    fake.publish("call_ringing", ringing)
    fake.send(text="not json at all")
    # (the fake sends each event on every topic it matches: duplicates are normal)
    dead = "SELECT count(*) FROM voipbin_dead_letters WHERE error ~ %s"
    wait_until(lambda: c.query_one(dead, ("handler refused",))[0] >= 1
               and c.query_one(dead, ("invalid input syntax",))[0] == 1,
               timeout=15, what="dead letters of the handler's error and of the bad frame")
    wait_until(lambda: c.query_one("SELECT count(*) FROM app_log")[0] == 2, what="handlers ran")
    eid = c.query_one("SELECT id FROM voipbin_events WHERE resource_id = %s", (hangup["id"],))[0]
    assert sorted(c.query("SELECT event_id, run_as::text, kind FROM app_log")) == \
        [(eid, "app", "definer"), (eid, "voipbin_worker", "own")]
    errors = [r[0] for r in c.query("SELECT error FROM voipbin_dead_letters ORDER BY id")]
    assert any("handler refused %s" % ringing["id"] in e for e in errors), errors

    # a handler whose owner no longer has the worker's privileges fails its events
    c.execute("ALTER FUNCTION h_own(voipbin_events) OWNER TO app")
    late = call(fake, "hangup")
    fake.publish("call_hangup", late)
    wait_until(lambda: c.query_one(dead, ("does not have the privileges of role voipbin_worker",))[0] >= 1,
               timeout=15, what="the untrusted handler's event dead-lettered")

    # retention, as the worker
    c.execute("""
        INSERT INTO voipbin_events (received_at, event_type, data)
        VALUES (now() - interval '2 hours', 'call_updated', '{"old": true}');
        INSERT INTO voipbin_dead_letters (received_at, raw, error)
        VALUES (now() - interval '2 hours', 'old', 'x');""")
    c.set_conf(voipbin__event_retention="1h")
    wait_until(lambda: c.query_one("SELECT count(*) FROM voipbin_events WHERE data ? 'old'")[0] == 0
               and c.query_one("SELECT count(*) FROM voipbin_dead_letters WHERE error = 'x'")[0] == 0,
               timeout=20, what="old rows pruned by the worker")

    assert c.worker_pid() == worker
    assert "permission denied" not in c.read_log()
