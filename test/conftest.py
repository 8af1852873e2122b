"""Fixtures for the integration tests: one cluster for the session, a fresh fake
VoIPBIN server for each test, and the worker pointed at it; and the session's
check that no server log of any cluster shows the fake's credentials.  The
helpers test modules share are in helpers.py."""
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fakeserver_fixture import start_fake, make_certs  # noqa: E402
from helpers import FAST, credential_lines, point_at, reset_cluster  # noqa: E402
from pgcluster import Cluster  # noqa: E402


class CredentialWatch:
    """Every cluster's server log, read for the credentials just before
    destroy() removes it, and at the end of the session for the clusters left.
    Whatever order the tests run in (or xdist worker they run on), a line that
    shows a credential fails the session."""

    def __init__(self):
        self.leaked = {}        # log path -> lines showing a credential

    def scan(self, cluster):
        lines = credential_lines(cluster.read_log())
        if lines:
            self.leaked[cluster.log] = lines

    def scan_all(self):
        """Every cluster made so far whose files are still there; returns
        every leaked line found in this session, "path: line"."""
        for c in Cluster.every:
            if os.path.exists(c.log):
                self.scan(c)
        return ["%s: %s" % (path, line) for path, lines in sorted(self.leaked.items())
                for line in lines]


CREDENTIAL_WATCH = CredentialWatch()
Cluster.before_destroy.append(CREDENTIAL_WATCH.scan)


@pytest.fixture(scope="session", autouse=True)
def no_credential_in_any_server_log():
    """Set up before any other session fixture, so torn down after all of
    them (the session's cluster destroyed, its log read): an error at the
    session's end if any server log showed a credential."""
    yield CREDENTIAL_WATCH
    leaked = CREDENTIAL_WATCH.scan_all()
    assert not leaked, "a credential in a server log:\n" + "\n".join(leaked)


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


@pytest.fixture
def fake(certs, tmp_path):
    server = start_fake(str(tmp_path), certs=certs, ping_interval=1, pong_timeout=10)
    yield server
    server.stop()


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
