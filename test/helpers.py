"""What the integration tests share: pointing the session's cluster at a fake
server, the events a test publishes, and small queries.  Test modules import
from here (and from pgcluster, fakeserver_fixture, journal_files), never from
one another; conftest.py holds only fixtures and session hooks."""
import errno
import os
import random
import shutil
import socket
import uuid

import psycopg2

from fakeserver_fixture import ACCESSKEY, JWT
from pgcluster import Cluster

# Short timers keep the failure tests quick; each test may change them.
FAST = {
    "voipbin.reconnect_min_delay": "'100ms'",
    "voipbin.reconnect_max_delay": "'1s'",
    "voipbin.idle_timeout": "'3s'",
}


# ------------------------------------------------------- the worker's settings

def write_token_file(secret_dir, credential):
    """The recommended way to give the worker its credential: never in a log line."""
    path = os.path.join(secret_dir, "token")
    with open(path, "w") as f:
        f.write(credential + "\n")
    shutil.chown(path, "postgres", "postgres")
    os.chmod(path, 0o600)
    return path


def reset_cluster(cluster):
    cluster.set_conf(voipbin__token=None, voipbin__token_file=None, voipbin__api_url=None,
                     voipbin__ca_file=None, voipbin__idle_timeout=None,
                     voipbin__event_retention=None)
    # a test that failed while the extension was dropped must not take the
    # session's cluster, and every later test, with it
    cluster.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension"
                    " WHERE extname = 'voipbin') THEN CREATE EXTENSION voipbin; END IF; END $$")
    cluster.execute("DELETE FROM voipbin_subscriptions")
    cluster.execute("TRUNCATE voipbin_events, voipbin_dead_letters")
    # 1.2: the own customer id learnt per api_url (a database at 1.0 or 1.1 has none)
    cluster.execute("DO $$ BEGIN IF to_regclass('voipbin_customer_cache') IS NOT NULL THEN "
                    "DELETE FROM voipbin_customer_cache; END IF; END $$")
    # 1.2: requests an earlier test left queued would be sent to this one's fake
    cluster.execute("DO $$ BEGIN IF to_regclass('voipbin_requests') IS NOT NULL THEN "
                    "DELETE FROM voipbin_requests; END IF; END $$")


def point_at(cluster, fake, secret_dir, credential=None, ca_file=None):
    """Points the worker at this test's fake server."""
    reset_cluster(cluster)
    cluster.set_conf(voipbin__api_url=fake.api_url, voipbin__ca_file=ca_file or fake.ca_file,
                     voipbin__token_file=write_token_file(secret_dir, credential or fake.accesskey))


def _bind_udp_53(preferred):
    """A UDP socket on port 53 of `preferred`, or of another loopback address
    when that one is taken (another PostgreSQL major's suite may run side by
    side, in the same network namespace); returns it and its address."""
    rng = random.Random()
    candidates = [preferred] + ["127.83.%d.%d" % (rng.randint(1, 254), rng.randint(1, 254))
                                for _ in range(50)]
    for addr in candidates:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((addr, 53))
            return s, addr
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRINUSE:
                raise
    raise AssertionError("no free loopback address for a resolver on port 53")


def cluster_with_a_silent_resolver(secret_dir, nameserver):
    """A cluster started with a resolv.conf of its own naming `nameserver`, a
    UDP socket bound here that never answers; returns it and that socket."""
    dns, nameserver = _bind_udp_53(nameserver)
    c = Cluster(dict(FAST, **{
        "voipbin.api_url": "'https://voipbin-dns-test.example/v1.0'",
        "voipbin.token_file": "'%s'" % write_token_file(secret_dir, "vb_DnsTestKey0123456789"),
    }))
    resolv = os.path.join(c.dir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver %s\noptions timeout:30 attempts:5\n" % nameserver)
    try:
        c.start_with_resolv_conf(resolv)
    except BaseException:
        dns.close()
        c.destroy()
        raise
    return c, dns


# ------------------------------------------------- events and subscriptions

def call(fake, status="ringing", call_id=None, **extra):
    data = {
        "id": call_id or str(uuid.uuid4()),
        "customer_id": fake.customer_id,
        "owner_type": "agent",
        "owner_id": "00000000-0000-0000-0000-000000000000",
        "type": "flow",
        "source": {"type": "tel", "target": "+15550001", "target_name": "", "name": "", "detail": ""},
        "destination": {"type": "tel", "target": "+15550002", "target_name": "", "name": "", "detail": ""},
        "status": status,
        "direction": "incoming",
        "tm_create": "2026-02-21T10:05:10.1Z",
        "tm_update": "2026-02-21T10:05:11.2Z",
    }
    data.update(extra)
    return data


def transcript(fake, message="hello"):
    return {
        "id": str(uuid.uuid4()),
        "customer_id": fake.customer_id,
        "transcribe_id": str(uuid.uuid4()),
        "direction": "in",
        "message": message,
        "tm_transcript": "0001-01-01T00:00:08.99184Z",
        "tm_create": "2026-02-21T10:05:15.1Z",
    }


def subscribe(cluster, fake, topic):
    stored = cluster.query_one("SELECT voipbin_subscribe(%s)", (topic,))[0]
    fake.wait_topics([stored])
    return stored


# ------------------------------------------------------------------ queries

def events(cluster):
    return cluster.query("SELECT event_type, resource, resource_id::text, customer_id::text, data"
                         " FROM voipbin_events ORDER BY id")


def count(cluster, table="voipbin_events", where="true", db=None):
    """The rows of table (in db, else the cluster's database) that match where."""
    return cluster.query_one("SELECT count(*) FROM %s WHERE %s" % (table, where), dbname=db)[0]


def try_query(f):
    """f(), or None while the server cannot answer (restarting, in recovery):
    for wait_until across a crash or a restart."""
    try:
        return f()
    except psycopg2.Error:
        return None


# -------------------------------------------------------- secrets in logs

CREDENTIALS = (ACCESSKEY, JWT)
# Postgres's own line on a reload of voipbin.token, which no extension can
# prevent (docs/settings.md: rotate credentials through voipbin.token_file instead).
TOKEN_CHANGED = 'parameter "voipbin.token" changed to'


def credential_lines(log_text, credentials=CREDENTIALS):
    """The lines of a server log that show one of the credentials, but
    Postgres's own line on a reload of voipbin.token."""
    return [line for line in log_text.splitlines()
            if TOKEN_CHANGED not in line and any(c in line for c in credentials)]


def default_version():
    """voipbin.control's default_version: what CREATE EXTENSION and UPDATE reach."""
    control = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "voipbin.control")
    with open(control) as f:
        for line in f:
            if line.startswith("default_version"):
                return line.split("=", 1)[1].strip().strip("'")
    raise AssertionError("voipbin.control has no default_version")
