"""Start and drive test/fake_voipbin.py from tests (stdlib only).

    from fakeserver_fixture import start_fake, fake_server

    with fake_server(tmpdir, ping_interval=0.3, pong_timeout=1) as fake:
        fake.api_url          # https://127.0.0.1:<port>/v1.0  (trust fake.ca_file)
        fake.publish("call_created", {"id": ..., "customer_id": fake.customer_id})
        fake.wait_state(lambda s: s["connections"])

Plain functions and a context manager, so that any test module (or a
conftest.py owned by someone else) can wrap them in fixtures of any scope.
The server always runs under /usr/bin/python3, where aiohttp is installed.
"""
import contextlib
import importlib.util
import json
import os
import select
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "fake_voipbin.py")
PYTHON = "/usr/bin/python3"

# Passed explicitly on every start, so tests never depend on the server's defaults.
NIL_UUID = "00000000-0000-0000-0000-000000000000"
CUSTOMER_ID = "7d2f3c1a-5b6e-4f80-9a1b-2c3d4e5f6a7b"
ACCESSKEY = "vb_FakeAccessKey0123456789abcdef-_X"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJhZ2VudCI6eyJpZCI6ImE2ZDFlM2IwLTRjMmYtNGU3YS04YjljLTBkMWUyZjNhNGI1YyIs"
    "ImN1c3RvbWVyX2lkIjoiN2QyZjNjMWEtNWI2ZS00ZjgwLTlhMWItMmMzZDRlNWY2YTdiIiwi"
    "dXNlcm5hbWUiOiJmYWtlLWFkbWluQGV4YW1wbGUuY29tIiwicGVybWlzc2lvbiI6MzJ9LCJl"
    "eHBpcmUiOiIyMDk5LTAxLTAxVDAwOjAwOjAwLjAwMDAwMFoiLCJ0eXBlIjoiYWdlbnQifQ."
    "-i6cH8H1LCyBsz8tJ4Ck4PY88VQy3iaEW6ZstPJXZFo"
)


def _gen_certs():
    # Loaded by path: works whatever sys.path the calling test suite has.
    spec = importlib.util.spec_from_file_location("gen_certs", os.path.join(HERE, "gen_certs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_certs(dirpath):
    """gen_certs.make_ca_and_server(dirpath): ca/server/other_ca/rogue paths."""
    return _gen_certs().make_ca_and_server(dirpath)


def make_refused_leaves(paths):
    """gen_certs.make_refused_leaves(paths): adds wrong_host and expired, of the same CA."""
    return _gen_certs().make_refused_leaves(paths)


class FakeServerError(RuntimeError):
    pass


class FakeServer:
    """A running fake_voipbin.py process plus helpers for its control port."""

    def __init__(self, proc, api_port, control_port, certs, customer_id, accesskey,
                 jwt, log_file, host="127.0.0.1"):
        self.proc = proc
        self.pid = proc.pid
        self.host = host
        self.api_port = api_port
        self.control_port = control_port
        self.certs = certs
        self.ca_file = certs["ca"]
        self.customer_id = customer_id
        self.accesskey = accesskey
        self.jwt = jwt
        self.log_file = log_file
        self.api_url = "https://%s:%d/v1.0" % (host, api_port)
        self.ws_url = "wss://%s:%d/v1.0/ws" % (host, api_port)
        self.control_url = "http://%s:%d/control" % (host, control_port)

    # -- control port ---------------------------------------------------

    def control(self, name, body=None, method="POST", timeout=10):
        data = None if method == "GET" else json.dumps(body or {}).encode()
        req = urllib.request.Request("%s/%s" % (self.control_url, name), data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise FakeServerError("control %s -> %d: %s"
                                  % (name, exc.code, exc.read().decode(errors="replace")))

    def publish(self, event_type=None, data=None, shape="raw", count=1, events=None,
                flush=False, **extra):
        """One event (event_type, data) or many (events=[{event_type,data,shape}, ...]).
        extra: topics=[...] (override), frame="exact text", extra={...envelope keys}.
        flush=True: return only once the frames are written to the sockets.
        Returns {"delivered": frames queued, "dropped": frames over the 2000 buffer}."""
        if events is not None:
            return self.control("publish", {"events": events, "flush": flush})
        body = dict(event_type=event_type, data=data, shape=shape, count=count,
                    flush=flush, **extra)
        return self.control("publish", body)

    def send(self, text=None, b64=None, binary=False, fragments=None, conn=None, **extra):
        """A hand-made frame to every open connection (or conn=id): text, b64 (binary
        or, with binary=False, a text frame of raw bytes), fragments=[str, ...]
        (one message in continuation frames); extra: fragments_b64, fragment_delay,
        close_code/close_reason (graceful=True: FIN, not RST, after it), flush=True. Returns {"sent": connections}."""
        body = dict(extra, binary=binary)
        if text is not None:
            body["text"] = text
        if b64 is not None:
            body["b64"] = b64
        if fragments is not None:
            body["fragments"] = fragments
        if conn is not None:
            body["conn"] = conn
        return self.control("send", body)

    def drop(self, conn=None):
        return self.control("drop", {} if conn is None else {"conn": conn})

    def freeze(self, on=True):
        return self.control("freeze", {"on": bool(on)})

    def config(self, **kw):
        return self.control("config", kw)

    def reset(self, drop=False, clear=True):
        return self.control("reset", {"drop": drop, "clear": clear})

    def set_customer(self, **fields):
        return self.control("customer", fields)

    def state(self):
        return self.control("state", method="GET")

    # -- REST writes ------------------------------------------------------

    def writes(self, method=None, path=None):
        """The write requests received, oldest first, each {"method", "path",
        "query", "body" (parsed JSON or None), "at" (unix s), "request_id",
        "status" (None: not answered, e.g. held or closed), "performed",
        "planned" (the plan's answer used, or None)}; "client_gone" when the
        client left during a hold. path is compared exactly, without query;
        "/calls/<id>/hangup" and "/v1.0/calls/<id>/hangup" both work."""
        body = {}
        if method is not None:
            body["method"] = method
        if path is not None:
            body["path"] = path
        return self.control("writes", body)["writes"]

    def plan_writes(self, method, path_regex, answers):
        """The next answers of the writes `method` (None: any) to paths that
        fully match path_regex (with or without /v1.0): one per request, in
        order; once used up the endpoint answers as itself. A new plan for the
        same method and regex replaces the old; reset() drops them all.
        Each answer is a dict:
          {"status": 503, "reason": "REQUEST_TIMEOUT", "perform": True}  act, then 503
          {"status": 500}                      fail before acting (perform defaults to
                                               False for a non-2xx)
          {"status": 502, "bare": True}        a proxy's plain-text answer, no envelope
          {"status": 429, "retry_after": 2}    refused by the limiter
          {"hold": 30, "perform": True}        act, answer normally 30 s later;
                                               "hold": "forever": never (until the client
                                               goes or reset()); perform False: hold first,
                                               act only if the client is still there
          {"close": True, "perform": bool}     close the connection without an answer
          {"status": 404, "reason": "CALL_NOT_FOUND"}   any status/reason
        Also "message" (the envelope's), "body"/"content_type" (a raw answer).
        Acting runs the endpoint's own checks first: an unknown call still
        gets its 404 and the answer is used up. Returns the plans left."""
        return self.control("plan", {"method": method, "path": path_regex,
                                     "answers": list(answers)})["plans"]

    def spoken(self, call_id=None):
        """What POST /calls/{id}/talk played, oldest first: {"call_id", "text",
        "language", "at"}; a talk that failed (ended call, bad SSML) is not here."""
        body = {} if call_id is None else {"call_id": str(call_id)}
        return self.control("spoken", body)["spoken"]

    def set_call(self, call_id, event=None, **fields):
        """Change a stored call's fields (e.g. status="progressing"); with
        event="call_progressing" that event is published with the new version
        (and lands in the call's timeline). Returns the new version."""
        body = {"id": str(call_id), "fields": fields}
        if event is not None:
            body["event"] = event
        return self.control("call", body)["call"]

    def add_call(self, **fields):
        """Store a call of this customer for the REST reads and writes
        (incoming, progressing unless fields say otherwise); returns it."""
        call = {"id": str(uuid.uuid4()), "customer_id": self.customer_id, "owner_type": "",
                "owner_id": NIL_UUID, "flow_id": str(uuid.uuid4()),
                "activeflow_id": str(uuid.uuid4()), "type": "flow", "master_call_id": NIL_UUID,
                "recording_id": NIL_UUID, "groupcall_id": NIL_UUID,
                "source": {"type": "tel", "target": "+15550001"},
                "destination": {"type": "tel", "target": "+15550002"},
                "status": "progressing", "direction": "incoming",
                "tm_create": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        call.update(fields)
        self.control("objects", {"calls": [call]})
        return call

    def wait_state(self, predicate, timeout=5.0, interval=0.02, what="condition"):
        """Poll state() until predicate(state) is truthy; return that state."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state()
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError("fake server: %s not reached within %.1fs; state: %s"
                                   % (what, timeout, json.dumps(st)[:2000]))
            time.sleep(interval)

    def wait_connections(self, n=1, timeout=5.0):
        """Wait for at least n open connections; return their list."""
        return self.wait_state(lambda s: len(s["connections"]) >= n, timeout,
                               what="%d open connection(s)" % n)["connections"]

    def wait_topics(self, topics, timeout=5.0):
        """Wait until some open connection has subscribed all of `topics`."""
        want = set(topics)
        st = self.wait_state(lambda s: any(want <= set(c["topics"]) for c in s["connections"]),
                             timeout, what="subscription to %s" % sorted(want))
        return next(c for c in st["connections"] if want <= set(c["topics"]))

    def read_log(self):
        with open(self.log_file, errors="replace") as f:
            return f.read()

    # -- lifecycle --------------------------------------------------------

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=5.0):
        """SIGTERM by PID, wait; SIGKILL if it does not exit. Returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _read_line(proc, timeout):
    """First stdout line of proc, within timeout (never blocks past it)."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no port line from fake server within %.1fs" % timeout)
        ready, _, _ = select.select([fd], [], [], min(left, 0.1))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise FakeServerError("fake server exited (rc=%s) before listening"
                                      % proc.poll())
            buf += chunk
        elif proc.poll() is not None:
            raise FakeServerError("fake server exited (rc=%s) before listening"
                                  % proc.returncode)
    return buf.split(b"\n", 1)[0].decode()


def start_fake(tmpdir, *, certs=None, cert=None, key=None, customer_id=CUSTOMER_ID,
               accesskey=ACCESSKEY, jwt=JWT, ping_interval=10.0, pong_timeout=60.0,
               log_file=None, startup_timeout=10.0, extra_args=()):
    """Start fake_voipbin.py; returns a FakeServer once both ports listen.

    certs: a dict from make_certs(); made in tmpdir when omitted.  cert/key:
    serve another certificate (e.g. certs["rogue"], certs["rogue_key"]).
    The server's stderr and log go to log_file (default tmpdir/fake_voipbin.log).
    """
    tmpdir = str(tmpdir)
    os.makedirs(tmpdir, exist_ok=True)
    if certs is None:
        certs = make_certs(os.path.join(tmpdir, "certs"))
    log_file = log_file or os.path.join(tmpdir, "fake_voipbin.log")
    args = [PYTHON, SERVER,
            "--cert", cert or certs["server"], "--key", key or certs["server_key"],
            "--customer-id", customer_id, "--accesskey", accesskey, "--jwt", jwt,
            "--ping-interval", str(ping_interval), "--pong-timeout", str(pong_timeout),
            "--log", log_file] + list(extra_args)
    with open(log_file, "ab") as errf:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errf, close_fds=True)
    try:
        ports = json.loads(_read_line(proc, startup_timeout))
    except BaseException:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        raise
    return FakeServer(proc, ports["api_port"], ports["control_port"], certs,
                      customer_id, accesskey, jwt, log_file)


@contextlib.contextmanager
def fake_server(tmpdir, **opts):
    """start_fake(...) as a context manager that always stops the process."""
    fake = start_fake(tmpdir, **opts)
    try:
        yield fake
    finally:
        fake.stop()
