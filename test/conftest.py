"""Fixtures for the integration tests: one cluster for the session, a fresh fake
VoIPBIN server for each test, and the worker pointed at it."""
import os
import shutil
import socket
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fakeserver_fixture import start_fake, make_certs  # noqa: E402
from pgcluster import Cluster, wait_until  # noqa: E402

# Short timers keep the failure tests quick; each test may change them.
FAST = {
    "voipbin.reconnect_min_delay": "'100ms'",
    "voipbin.reconnect_max_delay": "'1s'",
    "voipbin.idle_timeout": "'3s'",
}


@pytest.fixture(scope="session")
def certs():
    # readable by the postgres OS user, unlike pytest's own tmp directories
    d = tempfile.mkdtemp(prefix="voipbin-certs-")
    os.chmod(d, 0o755)
    paths = make_certs(d)
    yield paths
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster():
    c = Cluster(FAST)
    c.start()
    c.execute("CREATE EXTENSION voipbin")
    yield c
    c.destroy()


@pytest.fixture(scope="session")
def secret_dir():
    d = tempfile.mkdtemp(prefix="voipbin-secret-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_token_file(secret_dir, credential):
    """The recommended way to give the worker its credential: never in a log line."""
    path = os.path.join(secret_dir, "token")
    with open(path, "w") as f:
        f.write(credential + "\n")
    shutil.chown(path, "postgres", "postgres")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def fake(certs, tmp_path):
    server = start_fake(str(tmp_path), certs=certs, ping_interval=1, pong_timeout=10)
    yield server
    server.stop()


def reset_cluster(cluster):
    cluster.set_conf(voipbin__token=None, voipbin__token_file=None, voipbin__api_url=None,
                     voipbin__ca_file=None, voipbin__idle_timeout=None,
                     voipbin__event_retention=None)
    cluster.execute("DELETE FROM voipbin_subscriptions")
    cluster.execute("TRUNCATE voipbin_events, voipbin_dead_letters")


def point_at(cluster, fake, secret_dir, credential=None, ca_file=None):
    """Points the worker at this test's fake server."""
    reset_cluster(cluster)
    cluster.set_conf(voipbin__api_url=fake.api_url, voipbin__ca_file=ca_file or fake.ca_file,
                     voipbin__token_file=write_token_file(secret_dir, credential or fake.accesskey))


def cluster_with_a_silent_resolver(secret_dir, nameserver):
    """A cluster started with a resolv.conf of its own naming `nameserver`, a
    UDP socket bound here that never answers; returns it and that socket."""
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind((nameserver, 53))
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


@pytest.fixture
def vb(cluster, fake, secret_dir):
    """The worker connected to this test's fake server with the access key."""
    point_at(cluster, fake, secret_dir)
    fake.wait_connections(1, timeout=15)
    cluster.wait_status(lambda s: s["state"] == "connected", what="state connected")
    yield cluster
    reset_cluster(cluster)


@pytest.fixture
def topic(fake):
    """Every call and transcript event of the fake's customer, each once per topic."""
    return "customer_id:%s:" % fake.customer_id
