#!/usr/bin/python3
"""Throwaway TLS material for the fake VoIPBIN server.

make_ca_and_server(dirpath) writes, using the `openssl` CLI:

  ca.pem / ca.key          a private test CA (give ca.pem to voipbin.ca_file)
  server.pem / server.key  a server cert for 127.0.0.1 and localhost, signed by that CA
  other_ca.pem / other_ca.key
                           a second, unrelated CA
  rogue.pem / rogue.key    a server cert for the same names, signed by the
                           unrelated CA: a client trusting only ca.pem must refuse it

make_refused_leaves(paths) adds, for the tests of refused certificates:

  wrong_host.pem / .key    a server cert signed by ca.pem for another host name
                           only (other.invalid): refused for 127.0.0.1 and localhost
  expired.pem / .key       a server cert signed by ca.pem for the usual names,
                           whose notAfter passed yesterday (`openssl ca` with explicit
                           dates: OpenSSL 3.4+ refuses `x509 -days -1`)

EC P-256 keys keep generation well under a second.  Everything is made
world-readable on purpose: the PostgreSQL server runs as another OS user and
has to read the CA file (these keys protect nothing).

CLI: /usr/bin/python3 test/gen_certs.py DIR   (prints the dict of paths as JSON)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone

# A private config file per call, so the system openssl.cnf (whose default
# extensions differ between distributions) never leaks into the certificates.
_CA_CONF = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = {cn}
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_REQ_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {cn}
"""

# Python >= 3.13 and recent OpenSSL verify strictly (VERIFY_X509_STRICT): the
# leaf then needs SAN, AKI and a non-CA basicConstraints, so include them all.
_LEAF_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(args, cwd):
    proc = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], proc.stderr.strip()))


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _make_ca(d, name, cn):
    conf = os.path.join(d, name + ".cnf")
    _write(conf, _CA_CONF.format(cn=cn))
    _run(["req", "-x509", "-config", conf] + _EC +
         ["-keyout", name + ".key", "-out", name + ".pem",
          "-days", "3650", "-sha256"], d)
    os.unlink(conf)


def _make_leaf(d, name, ca_name, cn, san="IP:127.0.0.1, DNS:localhost", days=825):
    conf = os.path.join(d, name + ".cnf")
    ext = os.path.join(d, name + ".ext")
    csr = name + ".csr"
    _write(conf, _REQ_CONF.format(cn=cn))
    _write(ext, _LEAF_EXT.format(san=san))
    _run(["req", "-new", "-config", conf] + _EC +
         ["-keyout", name + ".key", "-out", csr], d)
    if days < 0:
        _sign_expired(d, csr, ca_name, ext, name + ".pem", days)
    else:
        # -set_serial instead of -CAcreateserial: no stray .srl file, and two
        # runs never reuse a serial (clients cache by issuer+serial).
        serial = "0x" + os.urandom(8).hex()
        _run(["x509", "-req", "-in", csr, "-CA", ca_name + ".pem",
              "-CAkey", ca_name + ".key", "-set_serial", serial,
              "-days", str(days), "-sha256", "-extfile", ext, "-out", name + ".pem"], d)
    for p in (conf, ext, os.path.join(d, csr)):
        os.unlink(p)


# `openssl ca` takes explicit dates (-startdate, -enddate) in every OpenSSL
# version; `x509 -days` with a negative count, which OpenSSL 3.0 took for
# "expired already", is refused from 3.4 on.  Its database lives in a
# directory of its own, removed afterwards.
_CA_SIGN_CONF = """\
[ca]
default_ca = signer
[signer]
database = {work}/index.txt
new_certs_dir = {work}
serial = {work}/serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none
[any_name]
commonName = supplied
"""


def _sign_expired(d, csr, ca_name, ext, out, days):
    """Signs csr with ca_name for a validity that ended -days days ago (a day
    long, so notBefore < notAfter < now)."""
    now = datetime.now(timezone.utc)
    fmt = "%Y%m%d%H%M%SZ"
    end = (now + timedelta(days=days)).strftime(fmt)
    start = (now + timedelta(days=days - 1)).strftime(fmt)
    work = tempfile.mkdtemp(prefix="ca-", dir=d)
    try:
        _write(os.path.join(work, "index.txt"), "")
        _write(os.path.join(work, "serial"), os.urandom(8).hex() + "\n")
        conf = os.path.join(work, "ca.cnf")
        _write(conf, _CA_SIGN_CONF.format(work=work))
        _run(["ca", "-batch", "-config", conf, "-in", csr, "-cert", ca_name + ".pem",
              "-keyfile", ca_name + ".key", "-startdate", start, "-enddate", end,
              "-extfile", ext, "-notext", "-out", out], d)
    finally:
        shutil.rmtree(work)


def make_ca_and_server(dirpath):
    """Create the CA, server, other CA and rogue files in dirpath; return their paths."""
    d = os.path.abspath(dirpath)
    os.makedirs(d, exist_ok=True)
    _make_ca(d, "ca", "voipbin fake test CA")
    _make_leaf(d, "server", "ca", "localhost")
    _make_ca(d, "other_ca", "unrelated test CA")
    _make_leaf(d, "rogue", "other_ca", "localhost")

    paths = {}
    for name in ("ca", "server", "other_ca", "rogue"):
        for ext in ("pem", "key"):
            p = os.path.join(d, "%s.%s" % (name, ext))
            os.chmod(p, 0o644)
            paths["%s_%s" % (name, "cert" if ext == "pem" else "key")] = p
    # The directory itself must be traversable by the postgres OS user too
    # (its parents are the caller's business).
    os.chmod(d, os.stat(d).st_mode | 0o055)
    # Short aliases, matching the file names.
    paths.update({
        "ca": paths["ca_cert"], "server": paths["server_cert"],
        "other_ca": paths["other_ca_cert"], "rogue": paths["rogue_cert"],
        "dir": d,
    })
    return paths


def make_refused_leaves(paths):
    """wrong_host and expired, signed by the CA of make_ca_and_server(); adds their paths."""
    d = paths["dir"]
    _make_leaf(d, "wrong_host", "ca", "other.invalid", san="DNS:other.invalid")
    # valid for a day that ended yesterday
    _make_leaf(d, "expired", "ca", "localhost", days=-1)
    for name in ("wrong_host", "expired"):
        for ext, kind in (("pem", ""), ("key", "_key")):
            p = os.path.join(d, "%s.%s" % (name, ext))
            os.chmod(p, 0o644)
            paths[name + kind] = p
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: %s DIR" % sys.argv[0])
    print(json.dumps(make_ca_and_server(sys.argv[1]), indent=2, sort_keys=True))
