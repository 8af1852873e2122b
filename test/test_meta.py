"""The release's metadata agrees with itself: META.json (PGXN meta-spec
1.0.0), voipbin.control, the Makefile, debian/changelog, and `make dist`."""
import json
import os
import re
import subprocess
import tempfile
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
# meta-spec 1.0.0, "license": the names PGXN knows
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd",
            "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1",
            "lgpl_3_0", "mit", "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5",
            "postgresql", "qpl_1_0", "ssleay", "sun", "zlib", "open_source",
            "restricted", "unrestricted", "unknown"}


def read(name):
    with open(os.path.join(REPO, name)) as f:
        return f.read()


def control():
    out = {}
    for line in read("voipbin.control").splitlines():
        m = re.match(r"^\s*(\w+)\s*=\s*'?(.*?)'?\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def makefile_var(name):
    m = re.search(r"^%s\s*=\s*(.*(?:\\\n.*)*)$" % name, read("Makefile"), re.M)
    assert m, "Makefile sets no %s" % name
    return m.group(1).replace("\\\n", " ").split()


@pytest.fixture(scope="module")
def meta():
    return json.loads(read("META.json"))


def semver_of(extversion):
    """1.1 -> 1.1.0: PGXN wants SemVer, PostgreSQL extension versions are free text."""
    parts = extversion.split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def test_required_fields(meta):
    for key in ("name", "abstract", "maintainer", "license", "provides", "meta-spec", "version"):
        assert meta.get(key), "META.json lacks %s" % key
    assert meta["meta-spec"]["version"] == "1.0.0"
    assert meta["name"] == "voipbin"
    assert SEMVER.match(meta["version"]), meta["version"]
    assert meta["license"] in LICENSES
    assert meta["description"] and meta["tags"] and meta["resources"]
    assert all(isinstance(t, str) and t for t in meta["tags"])
    maint = meta["maintainer"] if isinstance(meta["maintainer"], list) else [meta["maintainer"]]
    assert all(re.search(r"<[^@>]+@[^>]+>", m) for m in maint)


def test_versions_agree(meta):
    default = control()["default_version"]
    assert makefile_var("EXTVERSION") == [default]
    assert meta["version"] == semver_of(default)
    ext = meta["provides"]["voipbin"]
    assert ext["version"] == meta["version"]
    assert os.path.isfile(os.path.join(REPO, ext["file"]))
    assert meta["abstract"] == control()["comment"]
    changelog = read("debian/changelog").splitlines()[0]
    assert re.match(r"^voipbin \(%s-\d+\) " % re.escape(meta["version"]), changelog), changelog


def test_prereqs_postgresql_15(meta):
    for phase in ("configure", "runtime"):
        assert meta["prereqs"][phase]["requires"]["PostgreSQL"] == "15.0.0"
    assert read("debian/pgversions").split() == ["15", "17", "18"]


def test_license_file(meta):
    text = read("LICENSE")
    assert meta["license"] == "postgresql"
    assert "Permission to use, copy, modify, and distribute this software" in text


def test_scripts_reach_default_version():
    """Every SQL script is installed, and they chain from 1.0 to default_version."""
    data = makefile_var("DATA")
    scripts = sorted(f for f in os.listdir(REPO) if re.match(r"^voipbin--.*\.sql$", f))
    assert sorted(data) == scripts, "Makefile DATA must list every voipbin--*.sql"
    steps = dict(re.match(r"^voipbin--(.+)--(.+)\.sql$", f).groups()
                 for f in scripts if f.count("--") == 2)
    version = "1.0"
    assert "voipbin--1.0.sql" in scripts
    while version in steps:
        version = steps[version]
    assert version == control()["default_version"]


def test_make_dist(meta):
    if subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("make dist archives the git HEAD: no git checkout here")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "dist.zip")
        subprocess.run(["make", "-s", "-C", REPO, "dist", "DISTFILE=" + out], check=True,
                       stdout=subprocess.PIPE)
        prefix = "voipbin-%s/" % meta["version"]
        names = zipfile.ZipFile(out).namelist()
    tracked = subprocess.run(["git", "-C", REPO, "ls-tree", "-r", "--name-only", "HEAD"],
                             check=True, capture_output=True, text=True).stdout.split()
    assert all(n.startswith(prefix) for n in names)
    assert sorted(n[len(prefix):] for n in names if not n.endswith("/")) == sorted(tracked)
    for f in ["META.json", "LICENSE", "voipbin.control", "Makefile"] + makefile_var("DATA"):
        assert prefix + f in names
