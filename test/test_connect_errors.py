"""Every failed connection attempt of the worker names its cause.

For each way an attempt fails — the host name, the TCP connection, the
certificate, the handshake's HTTP answer, a close by the server, a frozen
peer — voipbin_status() says why in last_error, with next_attempt_at and
failures, and the server log says the same in one LOG line; the same failure
repeated is not logged again until its cause changes (then with its count)."""
import os
import re
import socket
import uuid

import pytest

from helpers import cluster_with_a_silent_resolver, point_at, reset_cluster, write_token_file
from fakeserver_fixture import make_refused_leaves, start_fake
from pgcluster import wait_until

REQUEST_ID = r"request_id: req_[0-9a-zA-Z]+"


class Log:
    """What the server log says from the moment this is made."""

    def __init__(self, cluster):
        self.path = cluster.log
        self.start = os.path.getsize(cluster.log)

    def lines(self, pattern):
        with open(self.path, errors="replace") as f:
            f.seek(self.start)
            return [l for l in f.read().splitlines() if re.search(pattern, l)]

    def wait(self, pattern, count=1, timeout=15):
        return wait_until(lambda: (lambda got: got if len(got) >= count else None)(self.lines(pattern)),
                          timeout, what="%d log line(s) matching %r" % (count, pattern))


def status_now(cluster):
    """voipbin_status() with the database's clock, to judge next_attempt_at by."""
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT *, clock_timestamp() AS now FROM voipbin_status()")
            names = [d[0] for d in cur.description]
            return dict(zip(names, cur.fetchone()))
    finally:
        conn.close()


def wait_failing(cluster, pattern, state="backoff", failures=1, timeout=20):
    """Waits until the worker reports a failure whose last_error matches pattern."""
    holder = {}

    def ok():
        s = holder["s"] = status_now(cluster)
        return (s["state"] == state and s["failures"] >= failures
                and re.search(pattern, s["last_error"] or ""))
    try:
        wait_until(ok, timeout, what="state %s, failures >= %d, last_error ~ %r"
                   % (state, failures, pattern))
    except AssertionError as e:
        raise AssertionError("%s; status: %r" % (e, holder.get("s")))
    return holder["s"]


def assert_next_attempt(s, at_most_s, at_least_s=-1.0):
    """next_attempt_at is set, and as far ahead as the backoff says."""
    assert s["next_attempt_at"] is not None, s
    ahead = (s["next_attempt_at"] - s["now"]).total_seconds()
    assert at_least_s <= ahead <= at_most_s, (ahead, s)


def point_url(cluster, secret_dir, url, ca_file, credential):
    reset_cluster(cluster)
    cluster.set_conf(voipbin__api_url=url, voipbin__ca_file=ca_file,
                     voipbin__token_file=write_token_file(secret_dir, credential))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def refused_certs(certs):
    """The session's CA, plus a certificate of it for another host name and an expired one."""
    return make_refused_leaves(dict(certs))


@pytest.fixture(autouse=True)
def steady_backoff(cluster):
    """1.5 s between attempts: long enough to read the state between two (FAST's
    100 ms is not, on a loaded machine)."""
    cluster.set_conf(voipbin__reconnect_min_delay="1500ms", voipbin__reconnect_max_delay="1500ms")
    yield
    cluster.set_conf(voipbin__reconnect_min_delay=None, voipbin__reconnect_max_delay=None)


@pytest.fixture
def slow_backoff(cluster, steady_backoff):
    """Backoff long enough to read the state between two attempts."""
    cluster.set_conf(voipbin__reconnect_min_delay="4s", voipbin__reconnect_max_delay="5s")
    yield
    cluster.set_conf(voipbin__reconnect_min_delay=None, voipbin__reconnect_max_delay=None)


def back_to_normal(cluster, fake, secret_dir):
    """The worker connects to the fake again: the failure was the cause's, not the worker's."""
    fake.reset()
    point_at(cluster, fake, secret_dir)
    s = cluster.wait_status(lambda s: s["state"] == "connected", timeout=20, what="connected again")
    assert s["failures"] == 0 and s["next_attempt_at"] is None, s
    reset_cluster(cluster)


# ---------------------------------------------------------------------------
# before any HTTP: DNS, TCP, TLS
# ---------------------------------------------------------------------------

def test_unresolvable_host(cluster, fake, secret_dir):
    log = Log(cluster)
    point_url(cluster, secret_dir, "https://no-such-host.invalid/v1.0", fake.ca_file, fake.accesskey)
    s = wait_failing(cluster, r'^could not resolve host "no-such-host\.invalid": ', failures=2)
    assert_next_attempt(s, at_most_s=1.6)
    assert log.wait(r'LOG:  voipbin: reconnect in [0-9.]+ s because could not resolve host "no-such-host\.invalid": ')
    back_to_normal(cluster, fake, secret_dir)


def test_closed_port(cluster, fake, secret_dir):
    log = Log(cluster)
    port = free_port()
    point_url(cluster, secret_dir, "https://127.0.0.1:%d/v1.0" % port, fake.ca_file, fake.accesskey)
    s = wait_failing(cluster, r"^connection to 127\.0\.0\.1:%d refused$" % port, failures=2)
    assert_next_attempt(s, at_most_s=1.6)
    assert log.wait(r"LOG:  voipbin: reconnect in [0-9.]+ s because connection to 127\.0\.0\.1:%d refused$" % port)
    back_to_normal(cluster, fake, secret_dir)


def test_connect_timeout(cluster, fake, secret_dir):
    # a listener whose accept queue is full drops further SYNs: connect() hangs
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    try:
        log = Log(cluster)
        point_url(cluster, secret_dir, "https://127.0.0.1:%d/v1.0" % port, fake.ca_file, fake.accesskey)
        s = wait_failing(cluster, r"^connection to 127\.0\.0\.1:%d timed out after 10 s$" % port, timeout=30)
        assert s["failures"] >= 1
        assert log.wait(r"because connection to 127\.0\.0\.1:%d timed out after 10 s" % port)
    finally:
        for c in fillers:
            c.close()
        lsock.close()
    back_to_normal(cluster, fake, secret_dir)


def test_resolver_that_never_answers(secret_dir):
    """The network thread stuck in getaddrinfo(): the worker gives up after 12 s
    and says what the attempt was still doing."""
    c, dns = cluster_with_a_silent_resolver(secret_dir, "127.83.0.54")
    try:
        c.execute("CREATE EXTENSION voipbin")
        s = c.wait_status(lambda s: s["state"] == "backoff", timeout=30, what="given up")
        assert s["last_error"] == "the connection was not established within 12 s (still resolving the host name)", s
        assert s["failures"] >= 1 and s["next_attempt_at"] is not None, s
        assert any("LOG:  voipbin: reconnect in" in l and "still resolving the host name" in l
                   for l in c.read_log().splitlines())
    finally:
        dns.close()
        c.destroy()


def test_certificate_from_an_unknown_ca(cluster, fake, certs, secret_dir):
    log = Log(cluster)
    point_at(cluster, fake, secret_dir, ca_file=certs["other_ca"])
    words = (r"^TLS with 127\.0\.0\.1:%d: certificate verify failed: unable to get local issuer certificate"
             r' \(trusted: the system\'s CAs and voipbin.ca_file "%s"\)$' % (fake.api_port, re.escape(certs["other_ca"])))
    s = wait_failing(cluster, words, failures=2)
    assert_next_attempt(s, at_most_s=1.6)
    assert fake.state()["connections_total"] == 0
    assert log.wait(r"LOG:  voipbin: reconnect in [0-9.]+ s because TLS with 127\.0\.0\.1:%d: "
                    r"certificate verify failed: unable to get local issuer certificate" % fake.api_port)
    back_to_normal(cluster, fake, secret_dir)


@pytest.mark.parametrize("which,words", [
    ("wrong_host", r"hostname mismatch \(the certificate is not for \"localhost\"\)"),
    ("expired", r"certificate has expired"),
])
def test_certificate_refused(cluster, fake, refused_certs, secret_dir, tmp_path, which, words):
    """A certificate of the trusted CA, but for another host name, or expired."""
    certs = refused_certs
    other = start_fake(str(tmp_path / which), certs=certs, cert=certs[which],
                       key=certs[which + "_key"])
    try:
        log = Log(cluster)
        url = "https://localhost:%d/v1.0" % other.api_port
        point_url(cluster, secret_dir, url, certs["ca"], other.accesskey)
        said = r"TLS with 127\.0\.0\.1:%d: certificate verify failed: %s" % (other.api_port, words)
        # where /etc/hosts also gives localhost ::1 (Debian 13 on), that
        # address is tried first and refused: the fake listens on 127.0.0.1
        ipv6_first = r"(connection to \[::1\]:%d refused; )?" % other.api_port
        s = wait_failing(cluster, "^" + ipv6_first + said, failures=2)
        assert s["last_error"].endswith('(trusted: the system\'s CAs and voipbin.ca_file "%s")' % certs["ca"]), s
        assert other.state()["connections_total"] == 0
        assert log.wait(r"LOG:  voipbin: reconnect in [0-9.]+ s because " + ipv6_first + said)
    finally:
        other.stop()
    back_to_normal(cluster, fake, secret_dir)


# ---------------------------------------------------------------------------
# the handshake's HTTP answer, in VoIPBIN's words
# ---------------------------------------------------------------------------

HANDSHAKE = [
    (401, "unauthorized",
     r"^VoIPBIN refused the credential at the WebSocket handshake \(HTTP 401, reason: INVALID_CREDENTIALS, "
     r"message: The provided credentials are invalid\., " + REQUEST_ID + r"\); waiting for a reload or 1 s$"),
    (403, "backoff",
     r"^VoIPBIN denied the WebSocket handshake \(HTTP 403, reason: ACCOUNT_FROZEN, "
     r"message: This account is frozen\. Contact support\., " + REQUEST_ID + r"\)$"),
    (429, "backoff",
     r"^VoIPBIN's rate limit refused the WebSocket handshake \(HTTP 429, reason: RATE_LIMIT_EXCEEDED, "
     r"message: Too many requests\. Retry later\., " + REQUEST_ID + r"\); Retry-After: 4 s$"),
    (503, "backoff",
     r"^VoIPBIN failed the WebSocket handshake \(HTTP 503, reason: SERVICE_UNAVAILABLE, "
     r"message: The service is unavailable\., " + REQUEST_ID + r"\)$"),
]


@pytest.mark.parametrize("status,state,words", HANDSHAKE, ids=[str(h[0]) for h in HANDSHAKE])
def test_handshake_refused(cluster, fake, secret_dir, status, state, words):
    log = Log(cluster)
    fake.config(ws_reject_status=status, ws_retry_after=4)
    point_at(cluster, fake, secret_dir)
    s = wait_failing(cluster, words, state=state)
    if status == 429:
        # Retry-After is waited for, whatever the backoff (1.5 s here)
        assert_next_attempt(s, at_most_s=4.1, at_least_s=2.0)
        hs = fake.wait_state(lambda st: len(st["handshakes"]) >= 2, timeout=10,
                             what="the attempt after Retry-After")["handshakes"]
        assert hs[1]["at"] - hs[0]["at"] >= 3.9, hs
    else:
        assert_next_attempt(s, at_most_s=1.6)
    # logged once at LOG (the attempts after it at DEBUG1), with the request id of its answer
    logged = (r"LOG:  voipbin: reconnect in [0-9.]+ s because " if state == "backoff"
              else r"LOG:  voipbin: ") + words.lstrip("^")
    line = log.wait(logged)[0]
    fake.wait_state(lambda st: len(st["handshakes"]) >= 3, timeout=15, what="three attempts")
    assert len(log.lines(logged)) == 1, log.lines(logged)
    assert fake.accesskey not in s["last_error"] and fake.accesskey not in line
    back_to_normal(cluster, fake, secret_dir)


@pytest.mark.parametrize("status,state,words", [HANDSHAKE[0], HANDSHAKE[2]],
                         ids=[str(HANDSHAKE[0][0]), str(HANDSHAKE[2][0])])
def test_handshake_refused_in_one_write(cluster, fake, secret_dir, status, state, words):
    """Issue 21: a refusal whose headers and body come in one write (aiohttp
    3.9+, most servers) still names VoIPBIN's reason and message.
    libwebsockets has read the body along with the headers by the time it
    fails the attempt: it is taken from there, not from the socket."""
    fake.config(ws_reject_status=status, ws_retry_after=4, ws_reject_one_write=True)
    point_at(cluster, fake, secret_dir)
    s = wait_failing(cluster, words, state=state)
    assert fake.accesskey not in s["last_error"]
    back_to_normal(cluster, fake, secret_dir)


# ---------------------------------------------------------------------------
# an open connection that ends
# ---------------------------------------------------------------------------

def test_drop_right_after_subscribing(vb, fake, secret_dir, slow_backoff):
    log = Log(vb)
    # an agent_id topic with an access key: VoIPBIN drops the TCP connection
    # (voipbin_subscribe refuses it, so it goes into the table directly)
    bad = "agent_id:%s" % uuid.uuid4()
    vb.execute("INSERT INTO voipbin_subscriptions (topic) VALUES (%s)", (bad,))
    words = (r"^the server closed the connection without a close frame right after subscribing "
             r"\(the sign of a rejected topic\)$")
    s = wait_failing(vb, words)
    assert s["failures"] == 1, s
    assert_next_attempt(s, at_most_s=5.1, at_least_s=2.0)
    assert log.wait(r"LOG:  voipbin: reconnect in [0-9.]+ s because the server closed the connection "
                    r"without a close frame right after subscribing")


def test_close_frame_code_and_reason(vb, fake, slow_backoff):
    log = Log(vb)
    fake.send(close_code=4001, close_reason="maintenance\x01window", graceful=True)
    s = wait_failing(vb, r'^the server closed the connection with code 4001 \("maintenance\?window"\)$')
    assert s["failures"] == 1, s
    assert log.wait(r'because the server closed the connection with code 4001 \("maintenance\?window"\)')


def test_frozen_peer_misses_the_pong_deadline(vb, fake, slow_backoff):
    # idle_timeout is 3 s here: pings go unanswered, and the worker hangs up
    log = Log(vb)
    fake.freeze(True)
    try:
        s = wait_failing(vb, r"^no pong and no frame from the server for 3 s \(voipbin\.idle_timeout\): "
                         r"the connection is dead$", timeout=15)
        assert_next_attempt(s, at_most_s=5.1, at_least_s=2.0)
        assert log.wait(r"LOG:  voipbin: reconnect in [0-9.]+ s because no pong and no frame from the server for 3 s")
    finally:
        fake.freeze(False)
    vb.wait_status(lambda s: s["state"] == "connected", timeout=20, what="connected after the thaw")


# ---------------------------------------------------------------------------
# a long outage keeps the log short
# ---------------------------------------------------------------------------

def test_repeated_failure_logged_once_then_counted(cluster, fake, secret_dir):
    cluster.set_conf(voipbin__reconnect_min_delay="20ms", voipbin__reconnect_max_delay="40ms",
                     log_min_messages="debug1")
    try:
        log = Log(cluster)
        # the same refusal every time, each with a request id of its own
        fake.config(ws_reject_status=503)
        point_at(cluster, fake, secret_dir)
        failed = r"VoIPBIN failed the WebSocket handshake \(HTTP 503, reason: SERVICE_UNAVAILABLE, " \
                 r"message: The service is unavailable\."
        s = wait_failing(cluster, "^" + failed, failures=40, timeout=40)
        # one LOG line for the whole run; DEBUG1 keeps every attempt
        assert len(log.lines(r"LOG:  voipbin: reconnect in [0-9.]+ s because " + failed)) == 1
        assert len(log.lines(r"DEBUG:  voipbin: reconnect in [0-9.]+ s because " + failed)) >= s["failures"] - 2
        assert not log.lines(r"\(failed \d+ times since")

        # the cause changes (no reload): the run ends with its count, the new cause is logged
        fake.config(ws_reject_status=403)
        wait_failing(cluster, r"HTTP 403", failures=41)
        ended = log.wait(r"LOG:  voipbin: " + failed + r"\)" + r" \(failed (\d+) times since \d\d:\d\d\)$")
        assert len(ended) == 1, ended
        assert int(re.search(r"failed (\d+) times since", ended[0]).group(1)) >= 40, ended
        assert "request_id" not in ended[0], "the count is of the cause, whatever the request id"
        assert log.wait(r"LOG:  voipbin: reconnect in [0-9.]+ s because VoIPBIN denied the WebSocket handshake \(HTTP 403")

        # connected: the failures in a row are counted, then reset
        fake.config(ws_reject_status=None)
        cluster.wait_status(lambda s: s["state"] == "connected", timeout=20, what="connected")
        line = log.wait(r"LOG:  voipbin: connected after \d+ failed attempts\b")[0]
        assert int(re.search(r"after (\d+) failed", line).group(1)) >= 41, line
        s = status_now(cluster)
        assert s["failures"] == 0 and s["next_attempt_at"] is None, s
    finally:
        cluster.set_conf(voipbin__reconnect_min_delay=None, voipbin__reconnect_max_delay=None,
                         log_min_messages=None)
        fake.reset()
        reset_cluster(cluster)
