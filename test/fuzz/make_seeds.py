#!/usr/bin/python3
"""Writes the seed corpora of test/fuzz/<target>/ from the test fixtures:
every frame literal of sql/classify.sql and the fake server's frames, the
topics of sql/topics.sql, and api_url/token pairs.  Seeds are named by the
SHA-1 of their bytes, as libFuzzer names what it finds, so rerunning this
adds nothing twice.  Regression inputs (regress-*) are kept by hand."""
import hashlib
import json
import os
import re
import sys

here = os.path.dirname(os.path.abspath(__file__))
top = os.path.dirname(os.path.dirname(here))


def literals(path):
    """The SQL string literals of a file, '' unescaped."""
    with open(os.path.join(top, path)) as f:
        text = "\n".join(l for l in f.read().split("\n") if not l.lstrip().startswith("--"))
    return [m.group(1).replace("''", "'") for m in re.finditer(r"'((?:[^']|'')*)'", text)]


def write(target, items):
    d = os.path.join(here, target)
    os.makedirs(d, exist_ok=True)
    for data in items:
        if isinstance(data, str):
            data = data.encode()
        name = hashlib.sha1(data).hexdigest()
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


frames = [s for s in literals("sql/classify.sql") if s.startswith("{")]
call = {"id": "593555d2-787e-4b06-862f-407bb2e43be1",
        "customer_id": "5e4a0680-804e-11ec-8477-2fea5968d85b",
        "source": {"type": "tel", "target": "+15550001"},
        "destination": {"type": "tel", "target": "+15550002"},
        "status": "hangup", "tm_create": "2026-02-21T10:05:10.1Z",
        "tm_update": "2026-02-21T10:05:58.4Z", "tm_delete": "9999-01-01 00:00:00.000000"}
frames += [json.dumps(call, separators=(",", ":")),
           json.dumps({"type": "call_hangup", "data": call}, separators=(",", ":")),
           '{"transcribe_id":"11111111-1111-1111-1111-111111111111","message":"hi","tm_transcript":"0001-01-01"}',
           "[1,2]", '"x"', "{}", '{"a":"\\u00e9\\ud83d\\ude00"}']
write("frame", frames)

topics = [s for s in literals("sql/topics.sql")
          if re.fullmatch(r"[\x21-\x7e]{1,200}", s) and not re.fullmatch(r"[0-9a-f-]{36}", s)]
# first byte: odd = the customer id is known
write("topic", [b"\x01" + t.encode() for t in topics] + [b"\x00" + t.encode() for t in topics])

write("endpoint", [
    "https://api.voipbin.net/v1.0\nvb_0123456789abcdef",
    "http://127.0.0.1:8443/v1.0/\n  vb_key \r\n",
    "https://[::1]:443\neyJhbGciOiJIUzI1NiJ9.e30.x",
    "HTTPS://host:65535/a/b//\n\t",
    "https://h:0\n",
    "ftp://x\nvb_",
    "https://user@host/p?q#f\n vb_abcd",
])
