#!/usr/bin/python3
"""VoIPBIN's webhook sender, as docs/voipbin.md ("Webhooks and their signature") reads it from
bin-webhook-manager: the body is the compact JSON envelope
{"type":"<event>","data":{...}}, the same bytes whatever the method, with
Content-Type: application/json, the Go client's User-Agent and
X-VoIPBIN-Signature: sha256=<lowercase hex HMAC-SHA256 of the body> keyed
with the customer's webhook_secret string; a 30 s timeout per attempt, and up
to 3 attempts 1 s apart, only on a transport error or a status >= 500.

Library use (stdlib only):
    s = Sender("127.0.0.1", port, "/voipbin/events", secret)
    status, text = s.send(envelope("call_created", data))      # one attempt
    status = s.deliver(body)                                     # with VoIPBIN's retries
A Sender keeps its connection open between requests (keep-alive), as Go's
http.Client does.

Command line: webhook_sender.py --url http://127.0.0.1:8080/voipbin/events
    --secret S [--method POST] [--type call_created] [--data '{...}'] [--count N]
"""
import argparse
import hashlib
import hmac
import http.client
import json
import sys
import time
import urllib.parse

USER_AGENT = "Go-http-client/1.1"
TIMEOUT = 30.0
ATTEMPTS = 3


def envelope(event_type, data):
    """The body VoIPBIN sends: json.Marshal of {Type, Data}, compact."""
    return json.dumps({"type": event_type, "data": data}, separators=(",", ":")).encode()


def sign(secret, body):
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class Sender:
    def __init__(self, host, port, path, secret, method="POST", timeout=TIMEOUT,
                 ssl_context=None):
        """ssl_context: speak https (as VoIPBIN does to a public webhook_uri)."""
        self.host, self.port, self.path = host, port, path
        self.secret = secret
        self.method = method
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.conn = None

    def _connection(self):
        if self.conn is None and self.ssl_context is not None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                    context=self.ssl_context)
        elif self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, body, method=None, path=None, signature=None, sign_with=None,
             headers=None):
        """One attempt. signature: the header's exact value ("" = leave it out);
        sign_with: another key. Returns (status, response text)."""
        h = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
             "Accept-Encoding": "gzip"}
        if signature is None:
            signature = sign(sign_with if sign_with is not None else self.secret, body)
        if signature != "":
            h["X-VoIPBIN-Signature"] = signature
        h.update(headers or {})
        conn = self._connection()
        try:
            conn.request(method or self.method, path or self.path, body=body, headers=h)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, text
        except Exception:
            self.close()
            raise

    def deliver(self, body, **kw):
        """As bin-webhook-manager's sendMessage: 3 attempts, 1 s apart, on a
        transport error or >= 500. Returns the last status (0: transport error)."""
        status = 0
        for attempt in range(ATTEMPTS):
            try:
                status, _ = self.send(body, **kw)
            except (OSError, http.client.HTTPException):
                status = 0
            if 0 < status < 500:
                return status
            if attempt < ATTEMPTS - 1:
                time.sleep(1)
        return status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--method", default="POST")
    ap.add_argument("--type", default="call_created")
    ap.add_argument("--data", default='{"id":"00000000-0000-4000-8000-000000000001"}')
    ap.add_argument("--count", type=int, default=1)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    s = Sender(u.hostname, u.port or 80, u.path or "/", a.secret, a.method)
    data = json.loads(a.data)
    for _ in range(a.count):
        print(s.deliver(envelope(a.type, data)))
    s.close()


if __name__ == "__main__":
    sys.exit(main())
