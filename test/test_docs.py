"""The documentation stays true: every setting the server knows has a row in
docs/settings.md, every function of the extension an entry in
docs/functions.md, every relative link of the docs resolves (to a file, and a
#anchor to a heading there), and the docs cite nothing outside the
repository."""
import glob
import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)


def _read(rel):
    with open(os.path.join(TOP, rel), encoding="utf-8") as f:
        return f.read()


def _doc_pages():
    """The pages whose links are checked: the README, docs/, and the
    READMEs of bench/ and test/."""
    pages = ["README.md", "bench/README.md", "test/README.md"]
    pages += sorted(os.path.relpath(p, TOP) for p in glob.glob(os.path.join(TOP, "docs", "*.md")))
    return [p for p in pages if os.path.exists(os.path.join(TOP, p))]


def _without_code(text):
    """Markdown text with fenced blocks and inline code spans blanked, so that
    a link or a heading inside code is not taken for one."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "``", text)


# ---------------------------------------------------------------------------
# (a) settings
# ---------------------------------------------------------------------------

def _settings_defined_in_src():
    """Settings the C code defines: pg_settings leaves out the ones marked
    GUC_NO_SHOW_ALL (the credential and the webhook secret), even for a
    superuser, so the source says which exist."""
    names = set()
    for path in glob.glob(os.path.join(TOP, "src", "**", "*.c"), recursive=True):
        with open(path, encoding="utf-8", errors="replace") as f:
            names.update(re.findall(r'DefineCustom\w+Variable\(\s*"(voipbin\.[a-z0-9_]+)"', f.read()))
    return names


def test_every_setting_has_a_row_in_settings_md(cluster):
    assert cluster.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(True,)]
    listed = {r[0] for r in cluster.query("SELECT name FROM pg_settings WHERE name LIKE 'voipbin.%'")}
    assert len(listed) >= 20, listed
    # pg_settings hides voipbin.token and voipbin.webhook_secret from everyone,
    # superusers included: take them from the source, and check that the
    # server knows each (a superuser reads a set one as a mask, an unset one
    # as '', a missing one as NULL)
    hidden = _settings_defined_in_src() - listed
    assert "voipbin.token" in hidden and "voipbin.webhook_secret" in hidden, hidden
    for name in sorted(hidden):
        assert cluster.query("SELECT current_setting(%s, true)", (name,)) != [(None,)], \
            "%s is defined in src/ but the server does not know it" % name
    rows = {m.group(1) for m in re.finditer(r"^\|\s*`(voipbin\.[a-z0-9_]+)`\s*\|", _read("docs/settings.md"), re.M)}
    missing = sorted((listed | hidden) - rows)
    assert not missing, "docs/settings.md has no table row for %s" % missing


# ---------------------------------------------------------------------------
# (b) functions
# ---------------------------------------------------------------------------

def test_every_function_has_an_entry_in_functions_md(cluster):
    functions = {r[0] for r in cluster.query("""
        SELECT p.proname
        FROM pg_proc p
        JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
        WHERE e.extname = 'voipbin'""")}
    assert "voipbin_subscribe" in functions and len(functions) >= 20, functions
    headings = [line for line in _without_code(_read("docs/functions.md")).splitlines()
                if line.startswith("### ")]
    missing = sorted(f for f in functions
                     if not any(re.search(r"(?<![\w])%s\(" % re.escape(f), h) for h in headings))
    assert not missing, "docs/functions.md has no ### entry for %s" % missing


# ---------------------------------------------------------------------------
# (c) links
# ---------------------------------------------------------------------------

def github_slug(heading):
    """The anchor GitHub gives a heading: its text as rendered (links become
    their text, emphasis and code marks go), lower-cased, every character
    but letters, digits, '-', '_' and spaces dropped, spaces made '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(rel):
    """Every anchor of a markdown file: its headings' slugs (code spans
    count: their text is in the slug), a repeated one numbered as GitHub
    numbers it (-1, -2, …)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", _read(rel), flags=re.S | re.M)
    seen = {}
    out = set()
    for line in text.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        out.add(slug if slug not in seen else "%s-%d" % (slug, seen[slug]))
        seen[slug] = seen.get(slug, 0) + 1
    return out


def _links(rel):
    """(target, line number) of every markdown link outside code."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$",
                  lambda m: "\n" * m.group(0).count("\n"), _read(rel), flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "``", text)
    for n, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            yield m.group(1), n


def test_relative_links_resolve():
    pages = _doc_pages()
    assert "README.md" in pages and "docs/settings.md" in pages, pages
    bad = []
    checked = 0
    for page in pages:
        for target, n in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue   # http:, https:, mailto: …
            checked += 1
            path, _, anchor = target.partition("#")
            rel = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if rel.startswith(".."):
                bad.append("%s:%d: %s points outside the repository" % (page, n, target))
                continue
            if not os.path.exists(os.path.join(TOP, rel)):
                bad.append("%s:%d: %s: no such file" % (page, n, target))
                continue
            if anchor:
                if not rel.endswith(".md") or os.path.isdir(os.path.join(TOP, rel)):
                    bad.append("%s:%d: %s: an anchor into a file that is not markdown" % (page, n, target))
                elif anchor not in anchors(rel):
                    bad.append("%s:%d: %s: no heading with that anchor in %s" % (page, n, target, rel))
    assert checked > 50, checked
    assert not bad, "\n".join(bad)


def test_github_slug():
    assert github_slug("What happens when things go wrong, tested") == "what-happens-when-things-go-wrong-tested"
    assert github_slug("The signature's key") == "the-signatures-key"
    assert github_slug("PUT /customer overwrites every field") == "put-customer-overwrites-every-field"
    assert github_slug("Who reads last_error") == "who-reads-last_error"
    assert github_slug("voipbin_on(event_type text, handler regprocedure) → void") \
        == "voipbin_onevent_type-text-handler-regprocedure--void"
    assert github_slug("`voipbin.token` and [links](x.md)") == "voipbintoken-and-links"


# ---------------------------------------------------------------------------
# (d) nothing outside the repository is cited
# ---------------------------------------------------------------------------

# Every file but the released, frozen scripts (voipbin--1.0.sql cites a
# protocol note of its time; it never changes again) and this test, which
# names what it looks for.
CHECKED = ("README.md", "docs/", "bench/", "test/", "examples/", "demo/", "src/", "sql/",
           "expected/", "debian/", "Makefile", "voipbin--1.1--1.2.sql")
FROZEN = ("voipbin--1.0.sql", "voipbin--1.0--1.1.sql", "test/test_docs.py")
OUTSIDE = ("SPEC.md", "SPEC's", "(SPEC)", "voipbin-protocol.md", "voipbin-actions.md", "protocol doc", "shared/docs")


def _repository_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=TOP,
                             capture_output=True, check=True).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [os.path.relpath(os.path.join(d, f), TOP)
                 for d, _, fs in os.walk(TOP) if "/.git" not in d for f in fs]
    return [f for f in files
            if f.startswith(CHECKED) and f not in FROZEN and os.path.isfile(os.path.join(TOP, f))]


def test_no_citation_of_files_outside_the_repository():
    files = _repository_files()
    assert "README.md" in files and "docs/voipbin.md" in files, files
    bad = []
    for rel in files:
        with open(os.path.join(TOP, rel), "rb") as f:
            data = f.read()
        if b"\0" in data:
            continue   # binary
        text = data.decode("utf-8", errors="replace")
        for name in OUTSIDE:
            for n, line in enumerate(text.splitlines(), 1):
                if name in line:
                    bad.append("%s:%d: mentions %s" % (rel, n, name))
    assert not bad, "\n".join(bad)


def test_the_docs_cite_no_section_signs_or_issue_numbers():
    """The pages are read without the notes and the issue tracker they once
    pointed at: no "§N", no "issue N"."""
    bad = []
    for page in _doc_pages():
        for n, line in enumerate(_read(page).splitlines(), 1):
            if "§" in line or re.search(r"\bissues? \d", line, re.I):
                bad.append("%s:%d: %s" % (page, n, line.strip()))
    assert not bad, "\n".join(bad)


def test_comments_cite_no_section_numbers_of_notes_outside():
    """Code comments point at the repository's docs by page and heading: a
    "§N" is only an RFC's, named with it."""
    bad = []
    for rel in _repository_files():
        if not rel.startswith(("src/", "test/", "bench/", "demo/")) or rel == "test/test_docs.py":
            continue
        with open(os.path.join(TOP, rel), "rb") as f:
            data = f.read()
        if b"\0" in data:
            continue
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            for m in re.finditer("§", line):
                if not re.search(r"RFC \d+ $", line[:m.start()]):
                    bad.append("%s:%d: %s" % (rel, n, line.strip()))
    assert not bad, "\n".join(bad)


def test_source_files_the_docs_name_exist():
    """A page that sends a contributor to worker/intake.c or src/net/ws/ws_client.c
    names a file that is there."""
    bad = []
    pattern = re.compile(r"\b(?:src/)?((?:base|net|ingest|maintenance|repair|worker|sql)/[a-z0-9_/]+\.[ch])\b")
    for page in _doc_pages():
        for n, line in enumerate(_read(page).splitlines(), 1):
            for m in pattern.finditer(line):
                if not os.path.exists(os.path.join(TOP, "src", m.group(1))):
                    bad.append("%s:%d: %s" % (page, n, m.group(0)))
    assert not bad, "\n".join(bad)
