#!/usr/bin/python3
"""A fake VoIPBIN API server for the extension's tests.

It imitates what docs/voipbin.md (read from VoIPBIN's server code)
says the real api-manager does, including the unfriendly parts a client has to
survive: an invalid topic drops the TCP connection without a close frame,
only a Pong extends the 60 s read deadline, there are no acks, 2/3-part
subscriptions get every event twice, and PUT /customer blanks omitted fields.

Two listeners on 127.0.0.1, both on ephemeral ports (--api-port and
--control-port choose fixed ones, as demo/fake-voipbin does):
  * the API (TLS with --cert/--key), base path /v1.0: GET/PUT /customer,
    GET /me and the WebSocket GET /ws;
  * a plain-HTTP control port (/control/...) through which a test publishes
    events, sends hand-made frames, drops or freezes connections, injects
    failures and reads back everything the client did.
Once both listen, one line `{"api_port": N, "control_port": M}` goes to stdout.

Control API (JSON in, JSON out; POST unless noted):
  /control/publish {"event_type", "data", "shape": raw|wrapped|event_type,
                    "count", "topics"?, "frame"?, "extra"?, "flush"?}
                   or {"events": [{...}, ...], "flush"?}
                   -> {"delivered": frames queued, "dropped": over the 2000 buffer}
  /control/send    {"text"} | {"b64", "binary"} | {"fragments": [str]} |
                   {"fragments_b64": [b64]} | {"close_code", "close_reason", "graceful"?},
                   optional "conn", "fragment_delay", "flush"   -> {"sent": n}
  /control/drop    {"conn"?}                       -> {"sent": n}
  /control/freeze  {"on": bool}                    -> {"frozen": bool}
  /control/config  {any DEFAULT_CONFIG key}        -> {"config": {...}}
  /control/reset   {"drop"?: false, "clear"?: true} -> {"config": {...}}
  /control/customer {fields to overwrite}          -> {"customer": {...}}
  /control/state   (GET or POST)                   -> see c_state()
  /control/objects {"calls"|"transcribes"|"transcripts"|"recordings": [obj],
                    "delete": {"calls"|"recordings": [id]}}  -> counts per kind
                   (a publish with "store": true also leaves its object here)
  /control/spend   {"n"}: the customer's own users spend the rate limiter's tokens
  /control/call    {"id", "fields": {...}, "event"?}  -> {"call": the new version}
  /control/plan    {"method", "path": regex, "answers": [answer, ...]} -> {"plans": [...]}
  /control/writes  {"method"?, "path"?}            -> {"writes": [...]}
  /control/spoken  {"call_id"?}                    -> {"spoken": [...]}

REST reads of gap repair (docs/voipbin.md, "The REST reads gap repair uses"), with their quirks: GET /calls (newest-created
first, a token on every non-empty page, only an empty page ends), /calls/{id}
(404 unknown, 409 deleted, 403 another customer's), /transcribes?reference_type=
&reference_id=, /transcripts?transcribe_id= (the newest 100; page_token ignored,
so its token loops), /recordings/{id} (404 when deleted), /timelines/calls/{id}/
events (token omitted on the last page); config rate_limit = {"rate", "burst"}
turns on the per-customer limiter (429 + Retry-After).  Every REST request is in
state()["rest_requests"] with its query (credentials left out), status and, for
a 429, its retry_after.

REST writes (docs/requests.md), after VoIPBIN's api-manager and managers:
POST /calls (new calls every time, call_created), /calls/{id}/hangup (an ended
call: 200), /calls/{id}/talk (200 empty; text is SSML, ill-formed -> 500;
what was played is in /control/spoken), /calls/{id}/recording_start|_stop,
POST|DELETE /calls/{id}/hold|mute|moh|silence, POST /transcribes (409 when one
already progresses), /transcribes/{id}/stop, /messages; any other write is a
404 ROUTE_NOT_FOUND.  They share the REST gate (auth, injected failures, the
limiter).  Every write request is recorded ({"method", "path", "query", "body",
"at", "request_id", "status" (null: no answer), "performed", "planned"}), and a
plan replaces the next answers of an endpoint, one per request, each a dict of
  status, reason, message   answer this (an envelope as VoIPBIN's);
  perform                   act first (default: only for a 2xx or no status);
  bare                      a proxy's plain-text answer, no envelope;
  retry_after               the Retry-After of a 429;
  hold: s | "forever"       hold the answer back (forever: until the client goes);
  close                     close the connection without an answer;
  body, content_type        answer this raw body.

Access keys: --accesskey's only, unless --any-accesskey (any key starting
with vb_, for trying the extension locally); the JWT: --jwt's only.

Credentials are never logged: log lines carry the path without query string
and the kind of credential only.

Run: /usr/bin/python3 test/fake_voipbin.py --cert server.pem --key server.key
Needs only the stdlib and aiohttp 3.8 (Debian's python3-aiohttp).
"""
import argparse
import asyncio
import base64
import json
import re
import secrets
import signal
import ssl
import struct
import sys
import time
import uuid
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timedelta, timezone
import math

from aiohttp import WSMsgType, hdrs, web

NIL_UUID = "00000000-0000-0000-0000-000000000000"
DEFAULT_CUSTOMER_ID = "7d2f3c1a-5b6e-4f80-9a1b-2c3d4e5f6a7b"
# The JWT identity is treated as a CustomerAdmin agent; agent_id:<this> topics
# are the only agent_id topics it may use.
DEFAULT_AGENT_ID = "a6d1e3b0-4c2f-4e7a-8b9c-0d1e2f3a4b5c"
DEFAULT_ACCESSKEY = "vb_FakeAccessKey0123456789abcdef-_X"
# A real-looking HS256 agent token (claims: agent, expire, type); only string
# equality matters here.
DEFAULT_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJhZ2VudCI6eyJpZCI6ImE2ZDFlM2IwLTRjMmYtNGU3YS04YjljLTBkMWUyZjNhNGI1YyIs"
    "ImN1c3RvbWVyX2lkIjoiN2QyZjNjMWEtNWI2ZS00ZjgwLTlhMWItMmMzZDRlNWY2YTdiIiwi"
    "dXNlcm5hbWUiOiJmYWtlLWFkbWluQGV4YW1wbGUuY29tIiwicGVybWlzc2lvbiI6MzJ9LCJl"
    "eHBpcmUiOiIyMDk5LTAxLTAxVDAwOjAwOjAwLjAwMDAwMFoiLCJ0eXBlIjoiYWdlbnQifQ."
    "-i6cH8H1LCyBsz8tJ4Ck4PY88VQy3iaEW6ZstPJXZFo"
)
DEFAULT_WEBHOOK_SECRET = "FakeWebhookSecret_0123456789abcd"

# The real server buffers this many messages per connection and silently
# drops the overflow (pubsubhandler subscriberBufferSize).
SUBSCRIBER_BUFFER = 2000
HISTORY_CAP = 10000

# The 7 fields PUT /customer always overwrites, and the omitempty ones of GET.
PUT_FIELDS = ("name", "detail", "email", "phone_number", "address",
              "webhook_method", "webhook_uri")
OMITEMPTY = PUT_FIELDS + ("webhook_secret",)

JSON_CT = "application/json; charset=utf-8"

# The resources the REST reads of gap repair return, by event prefix.
REST_KINDS = ("calls", "transcribes", "transcripts", "recordings")
RESOURCE_KINDS = {"call": "calls", "transcribe": "transcribes", "transcript": "transcripts",
                  "recording": "recordings"}

# HTTP status -> (envelope status, default reason, message), after
# bin-common-handler HTTPStatusFor and the server's error_translate.go.
ERRORS = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "The request is invalid."),
    401: ("UNAUTHENTICATED", "INVALID_CREDENTIALS", "The provided credentials are invalid."),
    402: ("PAYMENT_REQUIRED", "PAYMENT_REQUIRED", "Payment is required."),
    403: ("PERMISSION_DENIED", "PERMISSION_DENIED", "Permission denied."),
    404: ("NOT_FOUND", "RESOURCE_NOT_FOUND", "The resource was not found."),
    409: ("FAILED_PRECONDITION", "FAILED_PRECONDITION", "The request conflicts with the current state."),
    429: ("RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED", "Too many requests. Retry later."),
    500: ("INTERNAL", "INTERNAL_ERROR", "An internal error occurred."),
    503: ("UNAVAILABLE", "SERVICE_UNAVAILABLE", "The service is unavailable."),
}
MESSAGES = {
    "AUTHENTICATION_REQUIRED": "Authentication is required.",
    "INVALID_CREDENTIALS": "The provided credentials are invalid.",
    "ACCOUNT_FROZEN": "This account is frozen. Contact support.",
    "INVALID_JSON_BODY": "The request body is not valid JSON.",
    "ROUTE_NOT_FOUND": "The requested endpoint does not exist.",
    "AGENT_AUTH_REQUIRED": "This endpoint requires an agent login.",
    "CALL_NOT_FOUND": "The call was not found.",
    "STATE_INVALID": "The operation is invalid for the current resource state.",
    "RECORDING_NOT_FOUND": "The recording was not found.",
    "TRANSCRIBE_NOT_FOUND": "The transcribe was not found.",
    "INVALID_ID": "The provided id is not a valid UUID.",
    "INVALID_REFERENCE_FILTER": "reference_type and reference_id must be given together.",
    "MISSING_REQUEST_PARAMETER": "A required request parameter is missing.",
    "INVALID_REQUEST_PARAMETER": "A request parameter is invalid.",
    "REQUEST_TIMEOUT": "The request timed out.",
    "REQUEST_CANCELED": "The request was canceled.",
    "IDENTITY_VERIFICATION_REQUIRED": "Identity verification is required.",
    "TRANSCRIBE_ALREADY_PROGRESSING": (
        "A live transcribe is already progressing for this reference and language. Stop the "
        "existing transcribe first, or start with a different language."),
}
# Reasons whose envelope status is not the one of their HTTP status.
REASON_STATUS = {"TRANSCRIBE_ALREADY_PROGRESSING": "ALREADY_EXISTS"}

DEFAULT_CONFIG = {
    "ws_reject_status": None,   # answer every WS handshake with this error
    "ws_reject_reason": None,   # override the envelope reason of ws_reject_status
    "ws_retry_after": None,     # Retry-After of a 429 handshake (else rest_retry_after, else 1)
    "ws_reject_one_write": False,  # send that refusal's status line, headers and body in ONE
                                # write, as aiohttp 3.9+ and most servers do (3.8 writes the
                                # body apart), then close the connection
    "ws_hang": False,           # accept TCP+TLS, never answer the upgrade request
    "ws_delay": 0,              # seconds before answering the upgrade request
    "rest_status": None,        # every REST endpoint answers this error
    "rest_reason": None,
    "rest_retry_after": None,   # Retry-After of a 429 ("" = leave the header out)
    "rest_hang": False,         # REST requests never get an answer
    "rest_delay": 0,            # seconds before any REST answer
    "rest_body": None,          # REST answers 200 with this raw body
    "rest_content_type": JSON_CT,
    "rate_limit": None,         # {"rate": 17, "burst": 33, "others"?, "tokens"?}: the per-customer
                                # limiter (docs/voipbin.md, "Rate limit"); others: req/s the customer's own users take;
                                # tokens: what is left in the bucket now
    "ping_interval": 10.0,      # set from the CLI; apply to new connections
    "pong_timeout": 60.0,
}

_UUID36 = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID32 = re.compile(r"[0-9a-fA-F]{32}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

LOG = sys.stderr


def log(msg):
    LOG.write("%s fake_voipbin: %s\n" % (
        datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), msg))
    LOG.flush()


def now_rfc3339():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_TS = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]00:00)?")


def parse_ts(text):
    """A VoIPBIN time (RFC 3339, trimmed fraction, or the old space form), or None."""
    m = _TS.fullmatch(text or "")
    if not m:
        return None
    base = datetime.strptime(m.group(1) + "T" + m.group(2), "%Y-%m-%dT%H:%M:%S")
    micros = int((m.group(3) or "0")[:6].ljust(6, "0"))
    return base.replace(tzinfo=timezone.utc) + timedelta(microseconds=micros)


def cursor_of(text):
    """A list cursor: always 6 fractional digits, unlike the items' own times."""
    return parse_ts(text).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def compact(obj):
    # Go's json.Marshal output: no spaces.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def go_uuid(text):
    """uuid.FromStringOrNil of gofrs: canonical, 32-hex, or either in braces."""
    s = text
    if len(s) in (34, 38) and s[0] == "{" and s[-1] == "}":
        s = s[1:-1]
    if _UUID36.fullmatch(s) or _UUID32.fullmatch(s):
        return uuid.UUID(s)
    return None


def go_field(obj, name):
    """encoding/json matches struct fields case-insensitively; the last key wins."""
    val = None
    for k, v in obj.items():
        if k.lower() == name:
            val = v
    return val


# ------------------------------------------------------------ helpers of the writes

# A call in these states is ending or ended: hangup leaves it alone, talk 500s,
# hold/mute/moh/silence 400.
ENDING = ("terminating", "canceling", "hangup")

# recording_stop with no recording: call-manager answers null, api-manager
# turns it into the zero value of its call struct.
ZERO_CALL = {"id": NIL_UUID, "customer_id": NIL_UUID, "owner_type": "", "owner_id": NIL_UUID,
             "flow_id": NIL_UUID, "activeflow_id": NIL_UUID, "master_call_id": NIL_UUID,
             "recording_id": NIL_UUID, "groupcall_id": NIL_UUID, "source": {},
             "destination": {}, "action": {"id": NIL_UUID, "next_id": NIL_UUID,
                                           "tm_execute": None}}

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_BCP47 = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")
WRITE_ANSWER_KEYS = {"status", "reason", "message", "perform", "bare", "retry_after", "hold",
                     "close", "body", "content_type"}


class EmptyResponse(web.Response):
    """A status with no body and no Content-Type, as gin's c.Status() answers
    (aiohttp would add application/octet-stream)."""

    async def _prepare_headers(self):
        await super()._prepare_headers()
        self.headers.popall(hdrs.CONTENT_TYPE, None)


def parse_json_or_none(raw):
    try:
        return json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None


def dest_callable(dest):
    """A destination call-manager places a call to: a tel number in E.164 (its
    other checks, balance and routes, always pass here) or a sip address."""
    target = dest.get("target")
    if not isinstance(target, str):
        return False
    if dest.get("type") == "tel":
        return bool(_E164.fullmatch(target))
    return dest.get("type") == "sip" and bool(target)


def ssml_ok(text):
    """tts-manager takes text as SSML: well-formed XML as it is, or once
    wrapped in <speak>...</speak>. A bare & or < fails both."""
    for doc in (text, "<speak>" + text + "</speak>"):
        try:
            ElementTree.fromstring(doc)
            return True
        except ElementTree.ParseError:
            pass
    return False


def bcp47(lang):
    """language.BCP47.Make, for the simple tags: en-us -> en-US; empty or
    unparsable -> en-US."""
    m = _BCP47.fullmatch(lang or "")
    if not m:
        return "en-US"
    out = m.group(1).lower()
    if m.group(2):
        out += "-" + m.group(2).title()
    if m.group(3):
        out += "-" + m.group(3).upper()
    return out


def mute_after(current, direction, on):
    """mute_direction after a mute on/off: a partial unmute of both leaves the other leg."""
    legs = {"both": {"in", "out"}, "in": {"in"}, "out": {"out"}}
    cur = legs.get(current or "", set())
    change = legs.get(direction or "", legs["both"])   # {} or "" means both
    now = cur | change if on else cur - change
    return "both" if now == legs["both"] else (next(iter(now)) if now else "")


def ws_frame(opcode, payload, fin=True):
    """One unmasked (server-side) WebSocket frame."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


PING_FRAME = ws_frame(0x9, b"")


class Conn:
    """One accepted WebSocket connection and everything recorded about it."""

    def __init__(self, cid, ws, request, auth, source, query_keys, cfg):
        self.id = cid
        self.ws = ws
        self.transport = request.transport
        self.auth = auth
        self.auth_source = source
        self.query_keys = query_keys
        self.topics = []
        self.frames_from_client = []
        self.pongs = 0
        self.pings_sent = 0
        self.frames_sent = 0
        self.dropped = 0
        self.pending = 0            # queued or being written
        self.connected_at = time.time()
        self.closed_at = None
        self.close_reason = None
        self.ping_interval = float(cfg["ping_interval"])
        self.pong_timeout = float(cfg["pong_timeout"])
        # gorilla: SetReadDeadline(now+pongWait) once; only the pong handler moves it.
        self.deadline = time.monotonic() + self.pong_timeout
        self.queue = asyncio.Queue(maxsize=SUBSCRIBER_BUFFER)
        self.tasks = []

    def kill(self, reason):
        """Close the TCP connection without a close frame, as gorilla's ws.Close() does."""
        if self.close_reason is None:
            self.close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def write_raw(self, data):
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def enqueue(self, item):
        try:
            self.queue.put_nowait(item)
            self.pending += 1
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            return False

    def to_json(self):
        return {
            "id": self.id, "auth": self.auth, "auth_source": self.auth_source,
            "query_keys": self.query_keys, "topics": list(self.topics),
            "frames_from_client": list(self.frames_from_client),
            "pongs": self.pongs, "pings_sent": self.pings_sent,
            "frames_sent": self.frames_sent, "queued": self.pending,
            "dropped": self.dropped, "connected_at": self.connected_at,
            "closed_at": self.closed_at, "close_reason": self.close_reason,
        }


class Fake:
    def __init__(self, args):
        self.customer_id = args.customer_id.lower()
        self.customer_uuid = uuid.UUID(self.customer_id)
        self.agent_id = DEFAULT_AGENT_ID
        self.agent_uuid = uuid.UUID(self.agent_id)
        self.accesskey = args.accesskey
        self.any_accesskey = args.any_accesskey
        self.jwt = args.jwt
        self.base_config = dict(DEFAULT_CONFIG, ping_interval=args.ping_interval,
                                pong_timeout=args.pong_timeout)
        self.config = dict(self.base_config)
        created = now_rfc3339()
        self.customer = {
            "id": self.customer_id,
            "name": "Fake Customer", "detail": "fake VoIPBIN customer for tests",
            "email": "admin@example.com", "phone_number": "+15551234567",
            "address": "1 Test Street, Testville",
            "webhook_method": "POST", "webhook_uri": "https://webhooks.example.com/voipbin",
            "billing_account_id": "1b7c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d",
            "metadata": {"rtp_debug": False}, "email_verified": True,
            "status": "active", "identity_verification_status": "verified",
            "tm_deletion_scheduled": None, "tm_create": created, "tm_update": created,
            "tm_delete": None, "webhook_secret": DEFAULT_WEBHOOK_SECRET,
        }
        self.conns = {}            # id -> Conn, open connections
        self.closed = []
        self.next_conn_id = 1
        self.handshakes = []
        self.puts = []
        self.rest_requests = []
        self.published = 0
        # What the REST reads return, by kind and id; deleted ids; per-call timelines
        self.objects = {k: {} for k in REST_KINDS}
        self.deleted = {k: set() for k in REST_KINDS}
        self.timelines = {}
        self.bucket = None          # [tokens, monotonic time of the last refill]
        self.writes = []            # every write request (handle_write)
        self.spoken = []            # every talk that was played
        self.plans = []             # [{"method", "path", "regex", "answers"}], c_plan
        self.call_media = {}        # call id -> {"hold"|"mute"|"moh"|"silence": bool}
        self.unknown_handler = None
        self.write_paths = []       # (method, regex) of the write routes, for the 307
        self.not_frozen = asyncio.Event()
        self.not_frozen.set()
        # Hanging requests wait on this; reset/shutdown releases them.
        self.release = asyncio.Event()

    @property
    def frozen(self):
        return not self.not_frozen.is_set()

    # ------------------------------------------------------------ helpers

    def customer_view(self, with_secret=True):
        out = {}
        for k, v in self.customer.items():
            if k in OMITEMPTY and v in ("", None):
                continue
            if k == "webhook_secret" and not with_secret:
                continue
            out[k] = v
        return out

    @staticmethod
    def record(lst, item):
        lst.append(item)
        del lst[:-HISTORY_CAP]

    def authenticate(self, request):
        """Return (kind, source, error_reason); order as middleware/authenticate.go."""
        token, source = None, None
        if request.cookies.get("token"):
            token, source = request.cookies["token"], "cookie:token"
        elif request.query.get("token"):
            token, source = request.query["token"], "query:token"
        else:
            # Go: strings.Split(h, "Bearer ")[1]; an empty value counts as absent.
            parts = request.headers.get("Authorization", "").split("Bearer ")
            if len(parts) >= 2 and parts[1]:
                token, source = parts[1], "header:bearer"
        if token is not None:
            # Anything in a token slot is parsed as a JWT, so an access key
            # there is simply an invalid token.
            return "jwt", source, None if token == self.jwt else "INVALID_CREDENTIALS"
        key, source = None, None
        if request.cookies.get("accesskey"):
            key, source = request.cookies["accesskey"], "cookie:accesskey"
        elif request.query.get("accesskey"):
            key, source = request.query["accesskey"], "query:accesskey"
        if key is not None:
            good = key == self.accesskey or (self.any_accesskey and key.startswith("vb_"))
            return "accesskey", source, None if good else "INVALID_CREDENTIALS"
        return None, None, "AUTHENTICATION_REQUIRED"

    def error_response(self, request, status, reason=None, retry_after=None, ws=False,
                       message_override=None):
        env_status, default_reason, message = ERRORS.get(
            status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT",
                     "HTTP_%d" % status, "Error %d." % status))
        if ws and status == 403 and reason is None:
            reason = "ACCOUNT_FROZEN"   # the 403 a WS handshake can really get
        reason = reason or default_reason
        env_status = REASON_STATUS.get(reason, env_status)
        err = {"status": env_status, "reason": reason, "domain": "api-manager",
               "message": message_override or MESSAGES.get(reason, message),
               "request_id": request["request_id"]}
        headers = {}
        if status == 429:
            err["details"] = [{"limited_by": "customer"}]
            ra = "1" if retry_after is None else str(retry_after)
            if ra:
                headers["Retry-After"] = ra
        elif reason == "ACCOUNT_FROZEN":
            err["details"] = [{"deletion_scheduled_at": None, "deletion_effective_at": None,
                               "recovery_endpoint": "DELETE /auth/unregister"}]
        return web.Response(status=status, text=compact({"error": err}),
                            content_type="application/json", charset="utf-8",
                            headers=headers)

    @staticmethod
    def write_at_once(request, resp):
        """Sends resp, not prepared yet, in one transport write (status line,
        headers and body together, so they reach the client in one read), then
        closes the connection after it."""
        body = resp.body or b""
        headers = [(k, v) for k, v in resp.headers.items()
                   if k.lower() not in ("content-length", "x-request-id")]
        headers += [("X-Request-Id", request["request_id"]), ("Content-Length", str(len(body))),
                    ("Connection", "close")]
        head = "HTTP/1.1 %d %s\r\n" % (resp.status, resp.reason)
        head += "".join("%s: %s\r\n" % kv for kv in headers) + "\r\n"
        request.transport.write(head.encode("latin-1") + body)
        request.transport.close()     # after what was written has gone out
        return web.Response(status=204)     # goes nowhere: the transport is closing

    async def hang(self, request):
        """Never answer; once released, drop the connection without a response."""
        request["no_answer"] = True
        await self.release.wait()
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)     # goes nowhere: the transport is gone

    # ------------------------------------------------------------ topics

    def topic_valid(self, topic, auth):
        """validateTopics of pkg/websockhandler/etc.go for an admin-level identity."""
        parts = topic.split(":")
        if len(parts) < 2:
            return False
        sid = go_uuid(parts[1])
        if sid is None or sid.int == 0:
            return False
        if parts[0] == "customer_id":
            return sid == self.customer_uuid
        if parts[0] == "agent_id":
            # An access key has no agent id; the JWT is our one agent.
            return auth == "jwt" and sid == self.agent_uuid
        return False

    def event_topics(self, event_type, data):
        """createTopics of subscribehandler/webhookmanager.go: old then new format."""
        resource = event_type.split("_", 1)[0]
        cust = str(data.get("customer_id") or self.customer_id)
        rid = str(data.get("id") or NIL_UUID)
        owner = data.get("owner_id")
        owner = str(owner) if owner and owner != NIL_UUID else None
        if resource == "aimessage":
            old = ["customer_id:%s:aicall:%s" % (cust, data.get("aicall_id") or NIL_UUID)]
        elif resource in ("chat", "chatmessage", "chatparticipant"):
            chat = data.get("chat_id") or rid
            old = ["customer_id:%s:chat:%s" % (cust, chat)]
            if owner:
                old.append("agent_id:%s:chat:%s" % (owner, chat))
        elif event_type in ("webchat_message_created", "webchat_session_ended"):
            old = ["customer_id:%s:webchat_session:%s" % (cust, data.get("session_id") or rid)]
        else:
            old = ["customer_id:%s:%s:%s" % (cust, resource, rid)]
            if owner:
                old.append("agent_id:%s:%s:%s" % (owner, resource, rid))
        new = ["customer_id:%s:%s:%s:%s" % (cust, resource, event_type, rid)]
        if owner:
            new.append("agent_id:%s:%s:%s:%s" % (owner, resource, event_type, rid))
        return old + new

    async def publish_one(self, ev, stalled):
        event_type = ev.get("event_type")
        data = ev.get("data")
        shape = ev.get("shape", "raw")
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("event_type must be a non-empty string")
        if not isinstance(data, dict):
            raise ValueError("data must be an object")
        if "frame" in ev:
            body = ev["frame"]          # exact text, e.g. to vary formatting
        elif shape == "raw":
            body = compact(data)
        elif shape == "wrapped":
            body = compact(dict({"type": event_type, "data": data}, **ev.get("extra", {})))
        elif shape == "event_type":
            body = compact(dict({"event_type": event_type, "data": data}, **ev.get("extra", {})))
        else:
            raise ValueError("shape must be raw, wrapped or event_type")
        if ev.get("store"):
            self.store_object(event_type, data)
        topics = ev.get("topics") or self.event_topics(event_type, data)
        delivered = dropped = 0
        for _ in range(int(ev.get("count", 1))):
            self.published += 1
            # One copy per published topic that matches any prefix of the
            # connection, as the server publishes each topic separately.
            for topic in topics:
                for conn in list(self.conns.values()):
                    if not any(topic.startswith(p) for p in conn.topics):
                        continue
                    if conn.queue.full() and conn.id not in stalled:
                        if not await self.make_room(conn):
                            stalled.add(conn.id)
                    if conn.enqueue(("text", body)):
                        delivered += 1
                    else:
                        dropped += 1
        log("publish %s shape=%s topics=%d delivered=%d dropped=%d"
            % (event_type, shape, len(topics), delivered, dropped))
        return delivered, dropped

    async def flush(self, timeout):
        """Wait until every open connection has written all it has queued, so
        that a test can e.g. drop the connection right after a publish."""
        deadline = time.monotonic() + timeout
        while any(c.pending and c.close_reason is None for c in self.conns.values()):
            if time.monotonic() > deadline or self.frozen:
                return False
            await asyncio.sleep(0.005)
        return True

    async def make_room(self, conn, stall=1.0):
        """Wait while a full buffer still drains (a bulk publish reaches a client
        that reads as fast as it can); give up after `stall` s without progress,
        so a client that does not read loses the overflow, like on the real server."""
        last, since = conn.queue.qsize(), time.monotonic()
        while conn.queue.full() and conn.close_reason is None:
            await asyncio.sleep(0.005)
            if conn.queue.qsize() < last:
                last, since = conn.queue.qsize(), time.monotonic()
            elif time.monotonic() - since > stall:
                return False
        return True

    # ------------------------------------------------------------ WebSocket

    async def handle_ws(self, request):
        auth, source, err = self.authenticate(request)
        hs = {"at": time.time(), "status": None, "auth": auth, "auth_source": source,
              "reason": None, "conn": None}
        self.record(self.handshakes, hs)
        cfg = self.config
        if cfg["ws_delay"]:
            await asyncio.sleep(float(cfg["ws_delay"]))
        if cfg["ws_hang"]:
            hs["hung"] = True
            log("ws handshake hangs (auth=%s)" % auth)
            return await self.hang(request)
        if self.frozen:
            # A partition: no handshake completes before it heals.  A
            # connection opened then, its subscribe unread, would miss what is
            # published meanwhile with nothing to tell the client so (test/chaos
            # met it: a worker restarted during a freeze lost 2.6 s of events).
            hs["frozen"] = True
            log("ws handshake waits for the thaw (auth=%s)" % auth)
            await self.not_frozen.wait()
        if cfg["ws_reject_status"]:
            status = int(cfg["ws_reject_status"])
            retry = cfg["ws_retry_after"] if cfg["ws_retry_after"] is not None else cfg["rest_retry_after"]
            resp = self.error_response(request, status, cfg["ws_reject_reason"], retry, ws=True)
            hs["status"], hs["reason"] = status, "configured"
            log("ws handshake -> %d (configured%s) auth=%s"
                % (status, ", one write" if cfg["ws_reject_one_write"] else "", auth))
            if cfg["ws_reject_one_write"]:
                return self.write_at_once(request, resp)
            return resp
        if err:
            hs["status"], hs["reason"] = 401, err
            log("ws handshake -> 401 %s auth=%s" % (err, auth))
            return self.error_response(request, 401, err)

        # autoping=False: pongs must reach us (they move the deadline) and
        # aiohttp's own ping handling must not. compress=False: no
        # permessage-deflate, like the real upgrader. No read limit either.
        ws = web.WebSocketResponse(autoping=False, autoclose=True, compress=False,
                                   max_msg_size=0)
        ws.headers["X-Request-Id"] = request["request_id"]
        if not ws.can_prepare(request).ok:
            # gorilla's Upgrade() answers a non-WebSocket GET like this.
            hs["status"], hs["reason"] = 400, "not_websocket"
            return web.Response(status=400, text="Bad Request\n",
                                headers={"Sec-Websocket-Version": "13"})
        await ws.prepare(request)
        conn = Conn(self.next_conn_id, ws, request, auth, source,
                    sorted(request.query.keys()), cfg)
        self.next_conn_id += 1
        self.conns[conn.id] = conn
        hs["status"], hs["conn"] = 101, conn.id
        log("ws conn %d open auth=%s via %s" % (conn.id, auth, source))
        if self.frozen:
            conn.transport.pause_reading()
        conn.tasks = [asyncio.ensure_future(self.keepalive(conn)),
                      asyncio.ensure_future(self.writer(conn))]
        try:
            await self.read_loop(conn)
        finally:
            for t in conn.tasks:
                t.cancel()
            conn.kill(conn.close_reason or "connection_lost")
            conn.closed_at = time.time()
            self.conns.pop(conn.id, None)
            self.record(self.closed, conn)
            log("ws conn %d closed: %s" % (conn.id, conn.close_reason))
        return ws

    async def read_loop(self, conn):
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                return                  # transport gone (or killed by us)
            # Frames already buffered when a freeze started wait for the thaw too.
            await self.not_frozen.wait()
            if conn.close_reason is not None:
                return
            if msg.type == WSMsgType.TEXT:
                self.record(conn.frames_from_client, msg.data)
                self.handle_client_text(conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                conn.kill("binary")     # receive.go: "wrong message type"
            elif msg.type == WSMsgType.PING:
                # gorilla's default ping handler answers, without touching the deadline.
                conn.write_raw(ws_frame(0xA, msg.data or b""))
            elif msg.type == WSMsgType.PONG:
                conn.pongs += 1
                conn.deadline = time.monotonic() + conn.pong_timeout
            elif msg.type == WSMsgType.CLOSE:
                conn.close_reason = conn.close_reason or "client_closed"
                return

    def handle_client_text(self, conn, text):
        try:
            obj = json.loads(text)
        except ValueError:
            log("ws conn %d: invalid JSON ignored" % conn.id)
            return
        # json.Unmarshal into hook.Hook{Type string; Topics []string}; any
        # type mismatch makes the server log and ignore the whole message.
        if obj is None:
            obj = {}
        typ = go_field(obj, "type") if isinstance(obj, dict) else 0
        topics = go_field(obj, "topics") if isinstance(obj, dict) else 0
        if (not isinstance(obj, dict) or not isinstance(typ, (str, type(None)))
                or not isinstance(topics, (list, type(None)))
                or not all(isinstance(t, (str, type(None))) for t in topics or [])):
            log("ws conn %d: message not a hook, ignored" % conn.id)
            return
        typ = typ or ""
        topics = [t or "" for t in topics or []]
        # All topics are validated before the type is even looked at.
        if not all(self.topic_valid(t, conn.auth) for t in topics):
            log("ws conn %d: invalid topic in %s, dropping" % (conn.id, topics))
            conn.kill("invalid_topic")
            return
        if typ == "subscribe":
            for t in topics:
                if t not in conn.topics:
                    conn.topics.append(t)
            log("ws conn %d subscribe %s" % (conn.id, topics))
        elif typ == "unsubscribe":
            for t in topics:
                if t in conn.topics:
                    conn.topics.remove(t)
            log("ws conn %d unsubscribe %s" % (conn.id, topics))
        else:
            log("ws conn %d: type %r ignored" % (conn.id, typ))

    async def keepalive(self, conn):
        """gorilla pinger plus read deadline: ping every interval, abort past the deadline."""
        next_ping = time.monotonic() + conn.ping_interval
        while conn.close_reason is None:
            wake = min(next_ping, conn.deadline)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if self.frozen:
                await self.not_frozen.wait()
                next_ping = time.monotonic() + conn.ping_interval
                continue
            now = time.monotonic()
            if now >= conn.deadline:
                log("ws conn %d: no pong within %.1fs" % (conn.id, conn.pong_timeout))
                conn.kill("pong_timeout")
                return
            if now >= next_ping:
                if conn.write_raw(PING_FRAME):
                    conn.pings_sent += 1
                next_ping = now + conn.ping_interval

    async def writer(self, conn):
        """Per-connection sender: keeps frames in order and holds them while frozen."""
        try:
            while True:
                kind, payload = await conn.queue.get()
                await self.not_frozen.wait()
                if conn.close_reason is not None or conn.transport.is_closing():
                    return
                if kind == "text":
                    await conn.ws.send_str(payload)
                else:                   # ("raw", [(frame_bytes, delay_after), ...])
                    for frame, delay in payload:
                        if not conn.write_raw(frame):
                            return
                        if delay:
                            await asyncio.sleep(delay)
                conn.frames_sent += 1
                conn.pending -= 1
        except (ConnectionError, RuntimeError):
            conn.kill("write_error")

    def set_frozen(self, on):
        if on == self.frozen:
            return
        if on:
            self.not_frozen.clear()
            for c in self.conns.values():
                if not c.transport.is_closing():
                    c.transport.pause_reading()
        else:
            now = time.monotonic()
            for c in self.conns.values():
                # Time spent frozen must not count against the client.
                c.deadline = max(c.deadline, now + c.pong_timeout)
                if not c.transport.is_closing():
                    c.transport.resume_reading()
            self.not_frozen.set()
        log("freeze %s" % ("on" if on else "off"))

    def targets(self, body):
        if body.get("conn") is not None:
            c = self.conns.get(int(body["conn"]))
            return [c] if c else []
        return list(self.conns.values())

    # ------------------------------------------------------------ REST

    async def rest_gate(self, request):
        """Configured failures and authentication; returns (auth, error response)."""
        auth, source, err = self.authenticate(request)
        entry = {"at": time.time(), "method": request.method, "path": request.path,
                 "auth": auth, "auth_source": source,
                 "content_type": request.headers.get("Content-Type"), "status": None,
                 "query": {k: v for k, v in request.query.items()
                           if k not in ("accesskey", "token")}}
        request["entry"] = entry
        self.record(self.rest_requests, entry)
        cfg = self.config
        if cfg["rest_delay"]:
            await asyncio.sleep(float(cfg["rest_delay"]))
        if cfg["rest_hang"]:
            entry["hung"] = True
            return auth, await self.hang(request)
        if cfg["rest_status"]:
            return auth, self.error_response(request, int(cfg["rest_status"]),
                                             cfg["rest_reason"], cfg["rest_retry_after"])
        if cfg["rest_body"] is not None:
            return auth, web.Response(status=200, body=str(cfg["rest_body"]).encode(),
                                      headers={"Content-Type": cfg["rest_content_type"]})
        if err:
            return auth, self.error_response(request, 401, err)
        retry = self.rate_limited()
        if retry is not None:
            entry["retry_after"] = retry
            return auth, self.error_response(request, 429, retry_after=retry)
        return auth, None

    async def get_customer(self, request):
        _, resp = await self.rest_gate(request)
        # (aiohttp responses are mappings, hence falsy: compare with None)
        return resp if resp is not None else self.json(self.customer_view())

    async def put_customer(self, request):
        _, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        raw = await request.read()
        try:
            body = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            return self.error_response(request, 400, "INVALID_JSON_BODY")
        if body is None:
            body = {}
        if not isinstance(body, dict) or not all(
                isinstance(go_field(body, f), (str, type(None))) for f in PUT_FIELDS):
            return self.error_response(request, 400, "INVALID_JSON_BODY")
        self.record(self.puts, body)
        # UpdateBasicInfo writes all 7 columns: what is omitted becomes "".
        for f in PUT_FIELDS:
            self.customer[f] = go_field(body, f) or ""
        self.customer["tm_update"] = now_rfc3339()
        log("customer updated (%d fields given)" % sum(1 for f in PUT_FIELDS if go_field(body, f)))
        return self.json(self.customer_view(with_secret=False))

    async def get_me(self, request):
        auth, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        if auth != "jwt":
            return self.error_response(request, 403, "AGENT_AUTH_REQUIRED")
        return self.json({"id": self.agent_id, "customer_id": self.customer_id,
                          "username": "fake-admin@example.com", "permission": 32})

    @staticmethod
    def json(obj, status=200):
        return web.Response(status=status, text=compact(obj),
                            content_type="application/json", charset="utf-8")

    @web.middleware
    async def api_middleware(self, request, handler):
        rid = request.headers.get("X-Request-Id", "")
        if not _REQUEST_ID.fullmatch(rid):
            rid = "req_" + secrets.token_hex(12)
        request["request_id"] = rid
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            # gin has no 405: an unknown method+path is a 404 route error.
            resp = self.error_response(request, 404, "ROUTE_NOT_FOUND") \
                if exc.status in (404, 405) else self.error_response(request, exc.status)
        if not resp.prepared and not request.get("bare"):
            resp.headers["X-Request-Id"] = rid
        if "entry" in request:
            request["entry"]["status"] = None if request.get("no_answer") else resp.status
        if "entry" in request:   # REST only; the WS handler logs its own lines
            log("%s %s -> %s auth=%s" % (request.method, request.path,
                                         request["entry"]["status"] or "no answer",
                                         request["entry"]["auth"]))
        elif request.path != "/v1.0/ws":
            log("%s %s -> %d" % (request.method, request.path, resp.status))
        return resp

    # ------------------------------------------------------------ REST reads (gap repair)

    def store_object(self, event_type, data):
        """What a published event leaves behind for the REST reads: the resource's
        current state (and, for a call, a timeline entry)."""
        kind = RESOURCE_KINDS.get(event_type.split("_", 1)[0])
        if kind is None or not data.get("id"):
            return
        oid = str(data["id"]).lower()
        self.objects[kind][oid] = data
        if kind == "calls":
            self.timelines.setdefault(oid, []).append(
                {"timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                 "event_type": event_type, "data": data})
            if event_type == "call_deleted":
                self.deleted["calls"].add(oid)

    def rate_limited(self):
        """The per-customer GCRA (docs/voipbin.md, "Rate limit") as a token bucket; None, or the Retry-After."""
        lim = self.config["rate_limit"]
        if not lim:
            return None
        rate, burst = float(lim["rate"]), float(lim["burst"])
        # "others": requests/s the customer's own users take from the same bucket
        refill = max(0.0, rate - float(lim.get("others", 0)))
        now = time.monotonic()
        if self.bucket is None:
            self.bucket = [burst, now]
        tokens = min(burst, self.bucket[0] + (now - self.bucket[1]) * refill)
        self.bucket[1] = now
        if tokens >= 1:
            self.bucket[0] = tokens - 1
            return None
        self.bucket[0] = tokens
        return max(1, math.ceil((1 - tokens) / rate))   # the limiter's own delay, as VoIPBIN

    def page_size(self, request, cap):
        raw = request.query.get("page_size")
        if raw is None:
            return 100
        try:
            n = int(raw)
        except ValueError:
            return None
        return 100 if n <= 0 or n > cap else n

    def list_page(self, request, items):
        """tm_create < page_token (now when empty), newest first; every non-empty
        page has a token, only an empty page ends the walk."""
        size = self.page_size(request, 100)
        if size is None:
            return self.error_response(request, 400, "INVALID_REQUEST_PARAMETER")
        token = request.query.get("page_token", "")
        cursor = parse_ts(token) if token else datetime.now(timezone.utc)
        if cursor is None:
            return self.error_response(request, 400, "INVALID_REQUEST_PARAMETER")
        rows = sorted((o for o in items if parse_ts(o["tm_create"]) < cursor),
                      key=lambda o: parse_ts(o["tm_create"]), reverse=True)[:size]
        return self.json({"result": rows,
                          "next_page_token": cursor_of(rows[-1]["tm_create"]) if rows else ""})

    def own(self, obj):
        return str(obj.get("customer_id", "")).lower() == self.customer_id

    def call_or_error(self, request, raw_id):
        """callGet's order: 400 bad id, 404 unknown, 409 deleted, then 403."""
        uid = go_uuid(raw_id)
        if uid is None or uid.int == 0:
            return None, self.error_response(request, 400, "INVALID_ID")
        return self.call_lookup(request, uid)

    async def get_calls(self, request):
        _, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        # no filter but the customer and not deleted; unknown params are ignored
        return self.list_page(request, [o for k, o in self.objects["calls"].items()
                                        if self.own(o) and k not in self.deleted["calls"]])

    async def get_call(self, request):
        _, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        obj, resp = self.call_or_error(request, request.match_info["id"])
        return resp if resp is not None else self.json(obj)

    async def get_transcribes(self, request):
        _, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        rtype, rid = request.query.get("reference_type"), request.query.get("reference_id")
        if (rtype is None) != (rid is None):
            return self.error_response(request, 400, "INVALID_REFERENCE_FILTER")
        items = [o for o in self.objects["transcribes"].values() if self.own(o)]
        if rtype is not None:
            ref = go_uuid(rid)
            items = [o for o in items if o.get("reference_type") == rtype
                     and ref is not None and str(o.get("reference_id", "")).lower() == str(ref)]
        return self.list_page(request, items)

    async def get_transcripts(self, request):
        """The newest 100, whatever page_size and page_token say, and still a
        token that brings the same page back."""
        _, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        raw = request.query.get("transcribe_id")
        if raw is None:
            return self.error_response(request, 400, "MISSING_REQUEST_PARAMETER")
        tid = go_uuid(raw)
        tr = self.objects["transcribes"].get(str(tid)) if tid is not None else None
        if tr is None:
            return self.error_response(request, 404, "TRANSCRIBE_NOT_FOUND")
        if not self.own(tr):
            return self.error_response(request, 403, "PERMISSION_DENIED")
        rows = sorted((o for o in self.objects["transcripts"].values()
                       if str(o.get("transcribe_id", "")).lower() == str(tid)),
                      key=lambda o: parse_ts(o["tm_create"]), reverse=True)[:100]
        return self.json({"result": rows,
                          "next_page_token": cursor_of(rows[-1]["tm_create"]) if rows else ""})

    async def get_recording(self, request):
        _, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        uid = go_uuid(request.match_info["id"])
        if uid is None or uid.int == 0:
            return self.error_response(request, 400, "INVALID_ID")
        obj = self.objects["recordings"].get(str(uid))
        if obj is None:
            return self.error_response(request, 404, "RECORDING_NOT_FOUND")
        if str(uid) in self.deleted["recordings"]:
            return self.error_response(request, 404, "RESOURCE_NOT_FOUND")   # not 409, unlike calls
        if not self.own(obj):
            return self.error_response(request, 403, "PERMISSION_DENIED")
        return self.json(obj)

    async def get_timeline(self, request):
        """Newest first; the token is omitted on the last page (look-ahead), unlike GET /calls."""
        _, resp = await self.rest_gate(request)
        if resp is not None:
            return resp
        if request.match_info["rtype"] != "calls":
            return self.error_response(request, 400, "INVALID_ARGUMENT")
        _, resp = self.call_or_error(request, request.match_info["id"])
        if resp is not None:
            return resp
        size = self.page_size(request, 1000)
        if size is None:
            return self.error_response(request, 400, "INVALID_REQUEST_PARAMETER")
        token = request.query.get("page_token", "")
        cursor = parse_ts(token) if token else datetime.now(timezone.utc) + timedelta(seconds=1)
        rows = sorted((e for e in self.timelines.get(str(go_uuid(request.match_info["id"])), [])
                       if parse_ts(e["timestamp"]) < cursor),
                      key=lambda e: parse_ts(e["timestamp"]), reverse=True)[:size + 1]
        out = {"result": rows[:size]}
        if len(rows) > size:
            out["next_page_token"] = cursor_of(rows[size - 1]["timestamp"])
        return self.json(out)

    # ------------------------------------------------------------ REST writes (actions)
    #
    # What the outbox of requests sends (docs/requests.md), answered as
    # VoIPBIN's api-manager and managers do. Every write request is recorded in
    # self.writes; a plan (c_plan) can replace the next answers of an endpoint.

    def write_route(self, action, gate=True):
        async def handler(request):
            return await self.handle_write(request, action, gate)
        return handler

    async def handle_write(self, request, action, gate=True):
        """Record, pass the shared gate (auth, injected failures, the limiter),
        then the planned answer or the endpoint's own."""
        entry = {"method": request.method, "path": request.path,
                 "query": {k: v for k, v in request.query.items()
                           if k not in ("accesskey", "token")},
                 "body": None, "at": time.time(), "request_id": request["request_id"],
                 "status": None, "performed": False, "planned": None}
        self.record(self.writes, entry)
        request["write"] = entry
        # a reset from now on releases this request, whatever it waits for then
        request["release"] = self.release
        request["raw_body"] = await request.read()
        entry["body"] = parse_json_or_none(request["raw_body"])
        resp = (await self.rest_gate(request))[1] if gate else None
        if resp is None:
            answer = self.next_answer(request)
            entry["planned"] = answer
            if answer is None:
                resp = await self.perform(request, action)
            else:
                resp = await self.planned(request, action, answer)
        if not request.get("no_answer"):
            entry["status"] = resp.status
        return resp

    async def perform(self, request, action):
        """The endpoint's own answer; performed = it acted (a 2xx)."""
        resp = await action(request)
        if 200 <= resp.status < 300:
            request["write"]["performed"] = True
        return resp

    # -- plans

    def next_answer(self, request):
        """Pop the next answer of the first plan that matches, or None."""
        short = request.path[len("/v1.0"):] if request.path.startswith("/v1.0/") else request.path
        for plan in self.plans:
            if plan["method"] not in (None, "*", request.method):
                continue
            if not (plan["regex"].fullmatch(request.path) or plan["regex"].fullmatch(short)):
                continue
            if plan["answers"]:
                return plan["answers"].pop(0)
        return None

    @staticmethod
    def performs(answer):
        """An answer's "perform", defaulting to: it acts when its answer is
        a success (or the endpoint's own), not when it closes or fails."""
        if "perform" in answer:
            return bool(answer["perform"])
        if answer.get("close"):
            return False
        status = answer.get("status")
        return status is None or 200 <= int(status) < 300

    async def planned(self, request, action, answer):
        perform = self.performs(answer)
        if answer.get("close") and not perform:
            return self.close_unanswered(request)
        resp = None
        if perform:
            resp = await self.perform(request, action)
            if not request["write"]["performed"]:
                # its own checks (bad id, unknown call...) come before the
                # manager's RPC, which is what a planned failure stands for
                return resp
        if "hold" in answer and not await self.hold(request, answer["hold"]):
            return self.close_unanswered(request)
        if answer.get("close"):
            return self.close_unanswered(request)
        if "status" in answer:
            return self.planned_response(request, answer)
        if resp is None:           # a hold before acting: the client stayed, act now
            resp = await self.perform(request, action)
        return resp

    def planned_response(self, request, answer):
        status = int(answer["status"])
        if answer.get("bare"):
            # a proxy's own page: plain text, no envelope, no X-Request-Id
            request["bare"] = True
            text = answer.get("body", "error code: %d" % status)
            return web.Response(status=status, text=text, content_type="text/plain")
        if "body" in answer:
            return web.Response(status=status, body=str(answer["body"]).encode(),
                                headers={"Content-Type": answer.get("content_type", JSON_CT)})
        if 200 <= status < 300:
            return EmptyResponse(status=status)
        return self.error_response(request, status, answer.get("reason"),
                                   retry_after=answer.get("retry_after"),
                                   message_override=answer.get("message"))

    async def hold(self, request, seconds):
        """Keep the answer back for `seconds` ("forever": until the client goes);
        False when the client went away or a reset released it."""
        deadline = None if seconds == "forever" else time.monotonic() + float(seconds)
        release = request["release"]
        while deadline is None or time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                request["write"]["client_gone"] = True
                return False
            if release.is_set():
                return False
            # aiohttp 3.8 does not cancel a handler whose client left: poll
            try:
                await asyncio.wait_for(release.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        return True

    def close_unanswered(self, request):
        """Close the connection without any HTTP answer."""
        request["no_answer"] = True
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)     # goes nowhere: the transport is gone

    # -- body and call helpers

    def json_body(self, request):
        """gin's BindJSON: (object, None) or (None, 400 INVALID_JSON_BODY). The
        first JSON value counts (trailing bytes ignored); null binds as {}; an
        empty body is an error. Its Content-Type is net/http's sniff, since gin
        froze the headers before the envelope was written."""
        raw = request["raw_body"].decode("utf-8", "replace").lstrip(" \t\r\n")
        try:
            obj, _ = json.JSONDecoder().raw_decode(raw)
        except ValueError:
            obj = 0
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            resp = self.error_response(request, 400, "INVALID_JSON_BODY")
            resp.content_type = "text/plain"
            return None, resp
        return obj, None

    def bad_body(self, request):
        resp = self.error_response(request, 400, "INVALID_JSON_BODY")
        resp.content_type = "text/plain"
        return resp

    def call_lookup(self, request, uid):
        """callGet after the id's parse: 404 unknown, 409 deleted, 403 another customer's."""
        obj = self.objects["calls"].get(str(uid)) if uid is not None else None
        if obj is None:
            return None, self.error_response(request, 404, "CALL_NOT_FOUND")
        if str(uid) in self.deleted["calls"]:
            return None, self.error_response(request, 409, "STATE_INVALID")
        if not self.own(obj):
            return None, self.error_response(request, 403, "PERMISSION_DENIED")
        return obj, None

    def call_and_body(self, request, needs_body):
        """The order of an action handler: INVALID_ID, INVALID_JSON_BODY, then callGet."""
        uid = go_uuid(request.match_info["id"])
        if uid is None or uid.int == 0:
            return None, None, self.error_response(request, 400, "INVALID_ID")
        body = {}
        if needs_body:
            body, resp = self.json_body(request)
            if resp is not None:
                return None, None, resp
        call, resp = self.call_lookup(request, uid)
        return call, body, resp

    async def change(self, kind, obj, event_type=None, **fields):
        """A new version of a stored object (versions are never changed in place:
        events already published and timelines hold the old ones), published
        as event_type when given."""
        new = dict(obj, **fields)
        new["tm_update"] = now_rfc3339()
        if event_type:
            await self.publish_one({"event_type": event_type, "data": new, "store": True}, set())
        self.objects[kind][str(new["id"]).lower()] = new
        return new

    async def create(self, kind, obj, event_type):
        await self.publish_one({"event_type": event_type, "data": obj, "store": True}, set())
        self.objects[kind][str(obj["id"]).lower()] = obj
        return obj

    def manager_error(self, request):
        """A manager's plain Go error: 500 INTERNAL with no detail."""
        return self.error_response(request, 500)

    # -- calls

    async def post_calls(self, request):
        """New calls every time, one per tel/sip destination (a groupcall per
        agent/extension one); a destination that fails is skipped, and none
        left is a 500 whatever the cause."""
        body, resp = self.json_body(request)
        if resp is not None:
            return resp
        dests = go_field(body, "destinations")
        source = go_field(body, "source")
        if not isinstance(dests, (list, type(None))) or not all(
                isinstance(d, dict) for d in dests or []) or not isinstance(source, (dict, type(None))):
            return self.bad_body(request)
        dests = dests or []
        if any(d.get("type") == "tel" for d in dests) and \
                self.customer.get("identity_verification_status") != "verified":
            return self.error_response(request, 403, "IDENTITY_VERIFICATION_REQUIRED")
        source = source or {"type": "tel", "target": self.customer.get("phone_number", "")}
        flow = go_uuid(str(go_field(body, "flow_id") or ""))
        flow_id = str(flow) if flow is not None and flow.int else str(uuid.uuid4())
        calls, groupcalls = [], []
        for dest in dests:
            if dest_callable(dest):
                calls.append(await self.create("calls", self.new_outgoing_call(
                    source, dest, flow_id), "call_created"))
            elif dest.get("type") in ("agent", "extension"):
                groupcalls.append({"id": str(uuid.uuid4()), "customer_id": self.customer_id,
                                   "source": source, "destinations": [dest],
                                   "status": "progressing", "tm_create": now_rfc3339()})
            else:
                log("POST /calls: destination type %r skipped" % dest.get("type"))
        if not calls and not groupcalls:
            return self.manager_error(request)   # "all destinations failed"
        return self.json({"calls": calls, "groupcalls": groupcalls})

    def new_outgoing_call(self, source, dest, flow_id):
        return {"id": str(uuid.uuid4()), "customer_id": self.customer_id, "owner_type": "",
                "owner_id": NIL_UUID, "flow_id": flow_id, "activeflow_id": str(uuid.uuid4()),
                "type": "flow", "master_call_id": NIL_UUID, "recording_id": NIL_UUID,
                "groupcall_id": NIL_UUID, "source": source, "destination": dest,
                "status": "dialing",
                "action": {"id": "00000000-0000-0000-0000-000000000001",
                           "next_id": NIL_UUID, "tm_execute": None},
                "direction": "outgoing", "tm_create": now_rfc3339()}

    async def post_hangup(self, request):
        """200 with the call: terminating (canceling for an outgoing call not yet
        answered). The channel is gone at once here, so call_hangup follows
        before the answer and the stored call is already `hangup`. An ending or
        ended call: 200 unchanged, no event."""
        call, _, resp = self.call_and_body(request, needs_body=False)
        if resp is not None:
            return resp
        if call.get("status") in ENDING:
            return self.json(call)
        ending = ("canceling" if call.get("direction") == "outgoing"
                  and call.get("status") in ("dialing", "ringing") else "terminating")
        answer = await self.change("calls", call, "call_" + ending, status=ending)
        await self.change("calls", answer, "call_hangup", status="hangup", hangup_by="local",
                          hangup_reason="cancel" if ending == "canceling" else "normal",
                          tm_hangup=now_rfc3339())
        await self.end_transcribes(call["id"])
        return self.json(answer)

    async def end_transcribes(self, call_id):
        """A hangup ends the call's transcribes."""
        for tr in list(self.objects["transcribes"].values()):
            if tr.get("reference_id") == call_id and tr.get("status") == "progressing":
                await self.change("transcribes", tr, "transcribe_done", status="done")

    async def post_talk(self, request):
        """200, empty. The text is SSML: not well-formed even inside <speak> is a
        500, as is an ended call (its channel cannot be answered)."""
        call, body, resp = self.call_and_body(request, needs_body=True)
        if resp is not None:
            return resp
        text, language = go_field(body, "text"), go_field(body, "language")
        if not all(isinstance(v, (str, type(None))) for v in (text, language)):
            return self.bad_body(request)
        if call.get("status") in ENDING or not ssml_ok(text or ""):
            return self.manager_error(request)
        self.record(self.spoken, {"call_id": call["id"], "text": text, "language": language,
                                  "at": time.time()})
        return EmptyResponse(status=200)

    async def post_recording_start(self, request):
        """The call with a new recording_id; a 500 while one is set or when the
        call is not progressing (no RECORDING_ALREADY_ACTIVE)."""
        call, body, resp = self.call_and_body(request, needs_body=True)
        if resp is not None:
            return resp
        if call.get("recording_id", NIL_UUID) != NIL_UUID or call.get("status") != "progressing":
            return self.manager_error(request)
        rec = {"id": str(uuid.uuid4()), "customer_id": call["customer_id"],
               "owner_type": "", "owner_id": NIL_UUID, "activeflow_id": NIL_UUID,
               "reference_type": "call", "reference_id": call["id"], "status": "recording",
               "format": go_field(body, "format") or "wav", "tm_start": now_rfc3339(),
               "tm_end": None, "tm_create": now_rfc3339()}
        await self.create("recordings", rec, "recording_started")
        # no call event for the recording_id change
        new = await self.change("calls", call, recording_id=rec["id"],
                                recording_ids=list(call.get("recording_ids") or []) + [rec["id"]])
        return self.json(new)

    async def post_recording_stop(self, request):
        """The call with recording_id nil. With none set, the zero-valued call
        object (call-manager's nil error answers null); set on an ended call: 500."""
        call, _, resp = self.call_and_body(request, needs_body=False)
        if resp is not None:
            return resp
        rid = call.get("recording_id", NIL_UUID) or NIL_UUID
        if rid == NIL_UUID:
            return self.json(ZERO_CALL)
        if call.get("status") != "progressing":
            return self.manager_error(request)
        new = await self.change("calls", call, recording_id=NIL_UUID)
        rec = self.objects["recordings"].get(rid)
        if rec is not None:
            await self.change("recordings", rec, "recording_finished", status="ended",
                              tm_end=now_rfc3339())
        return self.json(new)

    def media_route(self, what, on):
        """hold, mute, moh, silence on (POST) or off (DELETE): 200 empty,
        repeatable; on an ended call call-manager's (nil, err) = 400."""
        async def action(request):
            call, body, resp = self.call_and_body(request, needs_body=(what == "mute"))
            if resp is not None:
                return resp
            if call.get("status") in ENDING:
                return self.error_response(request, 400, "INVALID_ARGUMENT",
                                           message_override="The request contains invalid data.")
            self.call_media.setdefault(call["id"], {})[what] = on
            if what == "mute":
                direction = go_field(body, "direction")
                if not isinstance(direction, (str, type(None))):
                    return self.bad_body(request)
                now = mute_after(call.get("mute_direction", ""), direction, on)
                await self.change("calls", call, "call_updated", mute_direction=now)
            return EmptyResponse(status=200)
        return action

    # -- transcribes

    async def post_transcribes(self, request):
        """200 with a transcribe created `progressing`; 409 when one already
        progresses for the same reference and language; an ended call: 500."""
        body, resp = self.json_body(request)
        if resp is not None:
            return resp
        rtype = go_field(body, "reference_type")
        fields = [rtype] + [go_field(body, f) for f in ("reference_id", "language", "direction",
                                                         "provider")]
        if not all(isinstance(v, (str, type(None))) for v in fields):
            return self.bad_body(request)
        if rtype not in ("call", "conference", "recording"):
            return self.error_response(request, 400, "INVALID_ARGUMENT")
        ref = go_uuid(go_field(body, "reference_id") or "")
        if rtype == "call":
            call, resp = self.call_lookup(request, ref if ref is not None and ref.int else None)
            if resp is not None:
                return resp
            if call.get("status") not in ("dialing", "ringing", "progressing"):
                return self.manager_error(request)
        elif ref is None or str(ref) not in self.objects["recordings"] or rtype == "conference":
            # the fake knows no conferences; an unknown reference panics there
            return EmptyResponse(status=500)
        language = bcp47(go_field(body, "language"))
        for tr in self.objects["transcribes"].values():
            if (tr.get("status") == "progressing" and tr.get("reference_id") == str(ref)
                    and tr.get("language") == language and self.own(tr)):
                return self.error_response(request, 409, "TRANSCRIBE_ALREADY_PROGRESSING")
        direction = go_field(body, "direction")
        tr = {"id": str(uuid.uuid4()), "customer_id": self.customer_id,
              "activeflow_id": NIL_UUID, "on_end_flow_id": NIL_UUID,
              "reference_type": rtype, "reference_id": str(ref), "status": "progressing",
              "language": language,
              "direction": direction if direction in ("both", "in", "out") else "both",
              "provider": go_field(body, "provider") or "", "tm_create": now_rfc3339(),
              "tm_update": None, "tm_delete": None}
        return self.json(await self.create("transcribes", tr, "transcribe_created"))

    async def post_transcribe_stop(self, request):
        """200 with the transcribe `done`; already done: 200 again, no event."""
        uid = go_uuid(request.match_info["id"])
        if uid is None or uid.int == 0:
            return self.error_response(request, 400, "INVALID_ID")
        tr = self.objects["transcribes"].get(str(uid))
        if tr is None:
            return self.error_response(request, 404, "TRANSCRIBE_NOT_FOUND")
        if not self.own(tr):
            return self.error_response(request, 403, "PERMISSION_DENIED")
        if tr.get("status") != "done":
            tr = await self.change("transcribes", tr, "transcribe_done", status="done")
        return self.json(tr)

    # -- messages

    async def post_messages(self, request):
        """A new message every time, its targets `queued`; no destination: 400."""
        body, resp = self.json_body(request)
        if resp is not None:
            return resp
        dests, source, text = (go_field(body, f) for f in ("destinations", "source", "text"))
        if (not isinstance(dests, (list, type(None)))
                or not all(isinstance(d, dict) for d in dests or [])
                or not isinstance(source, (dict, type(None)))
                or not isinstance(text, (str, type(None)))):
            return self.bad_body(request)
        if not dests:
            return self.error_response(request, 400, "INVALID_ARGUMENT")
        msg = {"id": str(uuid.uuid4()), "customer_id": self.customer_id, "type": "sms",
               "source": source or {},
               "targets": [{"destination": d, "status": "queued", "parts": 0, "tm_update": None}
                           for d in dests],
               "text": text or "", "direction": "outbound", "tm_create": now_rfc3339(),
               "tm_update": None, "tm_delete": None}
        await self.publish_one({"event_type": "message_created", "data": msg}, set())
        return self.json(msg)

    async def unknown_write(self, request):
        """gin's NoRoute (before authentication), with RedirectTrailingSlash's 307."""
        target = request.path.rstrip("/")
        if target != request.path and any(
                m == request.method and rx.fullmatch(target) for m, rx in self.write_paths):
            return web.Response(status=307, headers={"Location": target})
        return self.error_response(request, 404, "ROUTE_NOT_FOUND")


    # ------------------------------------------------------------ control

    async def c_publish(self, body):
        events = body["events"] if "events" in body else [body]
        delivered = dropped = 0
        stalled = set()
        for i, ev in enumerate(events):
            d, x = await self.publish_one(ev, stalled)
            delivered += d
            dropped += x
            if i % 64 == 63:
                await asyncio.sleep(0)      # let the writers run during bulk publishes
        if body.get("flush"):
            await self.flush(float(body.get("flush_timeout", 5)))
        return {"delivered": delivered, "dropped": dropped}

    async def c_send(self, body):
        binary = bool(body.get("binary"))
        opcode = 0x2 if binary else 0x1
        delay = float(body.get("fragment_delay", 0))
        if "fragments" in body or "fragments_b64" in body:
            parts = ([p.encode() for p in body["fragments"]] if "fragments" in body
                     else [base64.b64decode(p) for p in body["fragments_b64"]])
            if not parts:
                raise ValueError("no fragments")
            # First frame carries the opcode, the rest are continuations (0x0);
            # only the last has FIN. aiohttp cannot write these itself.
            frames = [(ws_frame(opcode if i == 0 else 0x0, p, fin=(i == len(parts) - 1)),
                       delay if i < len(parts) - 1 else 0) for i, p in enumerate(parts)]
        elif "b64" in body:
            frames = [(ws_frame(opcode, base64.b64decode(body["b64"])), 0)]
        elif "text" in body:
            frames = [(ws_frame(opcode, body["text"].encode()), 0)]
        elif "close_code" in body:
            # What a proxy might do; VoIPBIN itself never sends a close frame.
            payload = struct.pack("!H", int(body["close_code"])) + body.get("close_reason", "").encode()
            sent = 0
            for c in self.targets(body):
                if c.write_raw(ws_frame(0x8, payload)):
                    sent += 1
                if body.get("graceful"):
                    # FIN after the frame is written: an abort (RST) can make
                    # the peer's kernel discard the frame before it is read
                    c.close_reason = c.close_reason or "server_close"
                    c.transport.close()
                else:
                    c.kill("server_close")
            return {"sent": sent}
        else:
            raise ValueError("need text, b64, fragments, fragments_b64 or close_code")
        sent = sum(1 for c in self.targets(body) if c.enqueue(("raw", frames)))
        log("send %d frame(s) to %d connection(s)" % (len(frames), sent))
        if body.get("flush"):
            await self.flush(float(body.get("flush_timeout", 5)))
        return {"sent": sent}

    async def c_drop(self, body):
        targets = self.targets(body)
        for c in targets:
            c.kill("dropped")
        log("drop %d connection(s)" % len(targets))
        return {"sent": len(targets)}

    async def c_freeze(self, body):
        self.set_frozen(bool(body.get("on", True)))
        return {"frozen": self.frozen}

    async def c_config(self, body):
        unknown = sorted(set(body) - set(DEFAULT_CONFIG))
        if unknown:
            raise ValueError("unknown config keys: %s" % ", ".join(unknown))
        self.config.update(body)
        if "rate_limit" in body:
            # "tokens": what the customer's own users left of the bucket
            lim = body["rate_limit"] or {}
            self.bucket = [float(lim["tokens"]), time.monotonic()] if "tokens" in lim else None
        log("config %s" % sorted(body))
        return {"config": self.config}

    async def c_reset(self, body):
        """Defaults back, thaw, release hangs; history cleared unless clear=false."""
        self.config = dict(self.base_config)
        self.bucket = None
        self.plans = []
        self.set_frozen(False)
        self.release.set()
        self.release = asyncio.Event()
        if body.get("drop"):
            for c in list(self.conns.values()):
                c.kill("dropped")
        if body.get("clear", True):
            self.handshakes.clear()
            self.puts.clear()
            self.rest_requests.clear()
            self.closed.clear()
            self.writes.clear()
            self.spoken.clear()
        log("reset")
        return {"config": self.config}

    async def c_objects(self, body):
        """Upsert what the REST reads return: {"calls": [...], "transcribes": [...],
        "transcripts": [...], "recordings": [...], "delete": {"calls": [ids], ...}}."""
        for kind in REST_KINDS:
            for obj in body.get(kind, []):
                self.objects[kind][str(obj["id"]).lower()] = obj
        for kind, ids in body.get("delete", {}).items():
            self.deleted[kind].update(str(i).lower() for i in ids)
        return {kind: len(self.objects[kind]) for kind in REST_KINDS}

    async def c_spend(self, body):
        """The customer's own users spend n requests of the shared bucket."""
        for _ in range(int(body.get("n", 1))):
            if self.rate_limited() is not None:
                break
        return {"tokens": self.bucket[0] if self.bucket else None}

    async def c_plan(self, body):
        """The next answers of writes whose method and path (with or without
        /v1.0, a full match of the regex) match: one answer per request, in
        order; then the endpoint's own again. Replaces the plan of the same
        method and path; no answers removes it."""
        method = body.get("method")
        method = method.upper() if isinstance(method, str) else None
        path = body["path"]
        answers = body.get("answers") or []
        if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
            raise ValueError("answers must be a list of objects")
        for a in answers:
            unknown = sorted(set(a) - WRITE_ANSWER_KEYS)
            if unknown:
                raise ValueError("unknown answer keys: %s" % ", ".join(unknown))
            if "status" not in a and not ("hold" in a or a.get("close")):
                raise ValueError("an answer needs status, hold or close: %r" % (a,))
            if "hold" in a and a["hold"] != "forever":
                float(a["hold"])
        self.plans = [p for p in self.plans if (p["method"], p["path"]) != (method, path)]
        if answers:
            self.plans.append({"method": method, "path": path, "regex": re.compile(path),
                               "answers": [dict(a) for a in answers]})
        return {"plans": self.plans_view()}

    def plans_view(self):
        return [{"method": p["method"], "path": p["path"], "left": len(p["answers"])}
                for p in self.plans]

    async def c_writes(self, body):
        """The write requests received, oldest first; method and path (exact,
        without query; /v1.0 may be left out) filter."""
        method, path = body.get("method"), body.get("path")
        if path is not None and not path.startswith("/v1.0/"):
            path = "/v1.0" + path
        return {"writes": [w for w in self.writes
                           if (method is None or w["method"] == method.upper())
                           and (path is None or w["path"] == path)]}

    async def c_spoken(self, body):
        """What talk played, oldest first (of one call with "call_id")."""
        cid = body.get("call_id")
        return {"spoken": [t for t in self.spoken if cid is None or t["call_id"] == str(cid).lower()]}

    async def c_call(self, body):
        """Change a stored call: {"id", "fields": {...}, "event"?: "call_progressing"}
        (the event is published with the new version, as publish does)."""
        cid = str(body["id"]).lower()
        call = self.objects["calls"][cid]
        new = await self.change("calls", call, body.get("event"), **body.get("fields", {}))
        return {"call": new}

    async def c_customer(self, body):
        self.customer.update(body)
        return {"customer": self.customer_view()}

    async def c_state(self, body):
        return {
            "customer_id": self.customer_id, "agent_id": self.agent_id,
            "frozen": self.frozen, "config": self.config,
            "connections": [c.to_json() for c in self.conns.values()],
            "closed": [c.to_json() for c in self.closed],
            "connections_total": self.next_conn_id - 1,
            "handshakes": self.handshakes, "puts": self.puts,
            "rest_requests": self.rest_requests, "published": self.published,
            "plans": self.plans_view(), "call_media": self.call_media,
            "customer": self.customer_view(),
        }

    @web.middleware
    async def control_middleware(self, request, handler):
        # Unknown control paths/methods answer JSON too.
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return web.json_response({"error": exc.reason}, status=exc.status)

    def control_route(self, fn):
        async def handler(request):
            try:
                body = await request.json() if request.can_read_body else {}
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                return web.json_response(await fn(body))
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"error": "%s: %s" % (type(exc).__name__, exc)},
                                         status=400)
        return handler

    def add_write(self, app, method, path, action):
        app.router.add_route(method, path, self.write_route(action))
        self.write_paths.append((method, re.compile(re.sub(r"\{\w+\}", "[^/]+", path))))

    def apps(self):
        api = web.Application(middlewares=[self.api_middleware])
        api.router.add_get("/v1.0/ws", self.handle_ws)
        api.router.add_get("/v1.0/customer", self.get_customer)
        api.router.add_put("/v1.0/customer", self.put_customer)
        api.router.add_get("/v1.0/me", self.get_me)
        api.router.add_get("/v1.0/calls", self.get_calls)
        api.router.add_get("/v1.0/calls/{id}", self.get_call)
        api.router.add_get("/v1.0/transcribes", self.get_transcribes)
        api.router.add_get("/v1.0/transcripts", self.get_transcripts)
        api.router.add_get("/v1.0/recordings/{id}", self.get_recording)
        api.router.add_get("/v1.0/timelines/{rtype}/{id}/events", self.get_timeline)
        for path, fn in (("/calls", self.post_calls), ("/calls/{id}/hangup", self.post_hangup),
                         ("/calls/{id}/talk", self.post_talk),
                         ("/calls/{id}/recording_start", self.post_recording_start),
                         ("/calls/{id}/recording_stop", self.post_recording_stop),
                         ("/transcribes", self.post_transcribes),
                         ("/transcribes/{id}/stop", self.post_transcribe_stop),
                         ("/messages", self.post_messages)):
            self.add_write(api, "POST", "/v1.0" + path, fn)
        for what in ("hold", "mute", "moh", "silence"):
            path = "/v1.0/calls/{id}/" + what
            self.add_write(api, "POST", path, self.media_route(what, True))
            self.add_write(api, "DELETE", path, self.media_route(what, False))
        # Any other write: recorded, then gin's NoRoute (before authentication)
        self.unknown_handler = self.write_route(self.unknown_write, gate=False)
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            api.router.add_route(method, "/{tail:.*}", self.unknown_handler)
        ctl = web.Application(client_max_size=512 * 1024 * 1024,   # bulk publishes
                              middlewares=[self.control_middleware])
        for name, fn in (("publish", self.c_publish), ("send", self.c_send),
                         ("drop", self.c_drop), ("freeze", self.c_freeze),
                         ("config", self.c_config), ("reset", self.c_reset),
                         ("customer", self.c_customer), ("state", self.c_state),
                         ("objects", self.c_objects), ("spend", self.c_spend),
                         ("plan", self.c_plan), ("writes", self.c_writes),
                         ("spoken", self.c_spoken), ("call", self.c_call)):
            ctl.router.add_post("/control/" + name, self.control_route(fn))
        ctl.router.add_get("/control/state", self.control_route(self.c_state))
        return api, ctl


async def main(args):
    fake = Fake(args)
    sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sslctx.minimum_version = ssl.TLSVersion.TLSv1_2
    sslctx.load_cert_chain(args.cert, args.key)
    sslctx.set_alpn_protocols(["http/1.1"])
    api_app, ctl_app = fake.apps()
    # access_log=None: aiohttp's access log would print query strings, i.e. credentials.
    api_runner = web.AppRunner(api_app, access_log=None, handle_signals=False)
    ctl_runner = web.AppRunner(ctl_app, access_log=None, handle_signals=False)
    await api_runner.setup()
    await ctl_runner.setup()
    api_site = web.TCPSite(api_runner, args.host, args.api_port, ssl_context=sslctx,
                           shutdown_timeout=1.0)
    ctl_site = web.TCPSite(ctl_runner, args.host, args.control_port, shutdown_timeout=1.0)
    await api_site.start()
    await ctl_site.start()
    ports = {"api_port": api_runner.addresses[0][1], "control_port": ctl_runner.addresses[0][1]}
    log("listening api=%d (TLS) control=%d" % (ports["api_port"], ports["control_port"]))
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log("stopping")
    for c in list(fake.conns.values()):
        c.kill("server_shutdown")
    fake.release.set()
    fake.set_frozen(False)
    await ctl_runner.cleanup()
    await api_runner.cleanup()
    log("stopped")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cert", required=True, help="server certificate (PEM)")
    p.add_argument("--key", required=True, help="server key (PEM)")
    p.add_argument("--customer-id", default=DEFAULT_CUSTOMER_ID)
    p.add_argument("--accesskey", default=DEFAULT_ACCESSKEY)
    p.add_argument("--any-accesskey", action="store_true",
                   help="accept every access key that starts with vb_ too (demo/fake-voipbin)")
    p.add_argument("--jwt", default=DEFAULT_JWT)
    p.add_argument("--ping-interval", type=float, default=10.0)
    p.add_argument("--pong-timeout", type=float, default=60.0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--log", help="append log lines here (default: stderr)")
    args = p.parse_args(argv)
    uuid.UUID(args.customer_id)     # fail early on a typo
    return args


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.log:
        LOG = open(ARGS.log, "a", buffering=1)
    try:
        asyncio.run(main(ARGS))
    except KeyboardInterrupt:
        pass
