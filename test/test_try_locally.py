"""Trying the extension locally works as documented: demo/fake-voipbin prints
the postgresql.conf lines, the worker connects with them, and demo/publish
call_hangup arrives in voipbin_events and as a NOTIFY."""
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.request

import pytest

from helpers import reset_cluster
from pgcluster import Listener, free_port, wait_until

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demo")


def read_until(proc, out, done, timeout=30):
    """Reads proc's stdout into out (a list of lines) until done(out)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while not done(out):
        left = deadline - time.monotonic()
        assert left > 0, "demo/fake-voipbin printed only:\n" + "\n".join(out)
        if select.select([proc.stdout], [], [], min(left, 0.1))[0]:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, "demo/fake-voipbin exited (%s):\n%s" % (proc.wait(5), "\n".join(out))
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out.extend(line.decode() for line in lines)
    return out


def conf_lines(out):
    """The printed postgresql.conf lines, as {name: value}."""
    conf = {}
    for line in out:
        name, eq, value = line.partition(" = ")
        if eq and name.startswith("voipbin.") and value.startswith("'") and value.endswith("'"):
            conf[name] = value[1:-1]
    return conf


@pytest.fixture
def demo_fake():
    """demo/fake-voipbin on free ports, its certificates in a fresh directory
    (the default /tmp/voipbin-fake is left to whoever tries it by hand)."""
    parent = tempfile.mkdtemp(prefix="voipbin-try-")
    os.chmod(parent, 0o755)
    port, control_port = free_port(), free_port()
    cert_dir = os.path.join(parent, "voipbin-fake")
    log = open(os.path.join(parent, "fake.log"), "w")
    # a session of its own: Ctrl-C is a SIGINT to the terminal's process group
    proc = subprocess.Popen([os.path.join(DEMO, "fake-voipbin"), "--port", str(port),
                             "--control-port", str(control_port), "--dir", cert_dir],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=log,
                            start_new_session=True)
    try:
        out = read_until(proc, [], lambda out: any("Ctrl-C" in line for line in out))
        yield proc, out, port, control_port, cert_dir
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            proc.stdout.close()
            log.close()
            shutil.rmtree(parent, ignore_errors=True)


def fake_state(control_port):
    with urllib.request.urlopen("http://127.0.0.1:%d/control/state" % control_port,
                                timeout=5) as r:
        return json.loads(r.read())


def publish(*args):
    return subprocess.run([os.path.join(DEMO, "publish")] + list(args),
                          capture_output=True, text=True, timeout=30)


def test_fake_voipbin_and_publish_as_documented(cluster, demo_fake):
    proc, out, port, control_port, cert_dir = demo_fake
    conf = conf_lines(out)
    assert conf == {"voipbin.api_url": "https://127.0.0.1:%d/v1.0" % port,
                    "voipbin.token": "vb_local",
                    "voipbin.ca_file": os.path.join(cert_dir, "ca.pem")}, out
    # readable by the postgres OS user: the directory and the public parts
    assert stat.S_IMODE(os.stat(cert_dir).st_mode) == 0o755
    for name in ("ca.pem", "server.pem"):
        assert stat.S_IMODE(os.stat(os.path.join(cert_dir, name)).st_mode) == 0o644
    reset_cluster(cluster)
    listener = None
    try:
        cluster.set_conf(**{k.replace(".", "__"): v for k, v in conf.items()})
        cluster.wait_status(lambda s: s["state"] == "connected", timeout=20,
                            what="connected to demo/fake-voipbin")
        topic = cluster.query_one("SELECT voipbin_subscribe('call')")[0]
        customer = fake_state(control_port)["customer_id"]
        assert topic == "customer_id:%s:call:" % customer
        wait_until(lambda: any(topic in c["topics"] for c in fake_state(control_port)["connections"]),
                   timeout=10, what="the topic subscribed at the fake")
        listener = Listener(cluster, "call_hangup", "voipbin_events")

        done = publish("--control-port", str(control_port), "call_hangup")
        assert done.returncode == 0, done.stdout + done.stderr
        sent = json.loads(done.stdout.split("published call_hangup: ", 1)[1].split("\n", 1)[0])
        answer = json.loads(done.stdout.split("the fake answered: ", 1)[1].split("\n", 1)[0])
        assert answer["delivered"] >= 1, done.stdout

        got = listener.wait_for(2, timeout=15)
        assert sorted(ch for ch, _, _ in got) == ["call_hangup", "voipbin_events"]
        assert got[0][1] == got[1][1]
        payload = json.loads(got[0][1])
        assert (payload["event_type"], payload["resource_id"]) == ("call_hangup", sent["id"])
        row = cluster.query_one("SELECT event_type, resource_id::text, customer_id::text, data"
                                " FROM voipbin_events WHERE id = %s", (payload["id"],))
        assert row == ("call_hangup", sent["id"], customer, sent)
        assert sent["status"] == "hangup"
    finally:
        if listener:
            listener.close()
        reset_cluster(cluster)
    # Ctrl-C stops it
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(15) == 0


def test_publish_says_when_the_fake_is_not_running():
    done = publish("--control-port", str(free_port()), "call_hangup")
    assert done.returncode != 0
    assert "no fake VoIPBIN on control port" in done.stderr
    assert "demo/fake-voipbin" in done.stderr
