"""The source tree keeps its shape (docs/architecture.md): one folder per flow,
a header per .c file declaring only that file's functions, dependencies that
point down between folders, and no circle of files that use each other.

A file "uses" another when it includes the header named for it: the headers
are the only way one file reaches another's functions (the test below that
every declaration sits in the header of the file defining it makes sure)."""
import os
import re

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

# Lowest first.  A file may use files of its own folder and of lower ranks;
# folders of the same rank do not use each other.
RANK = {
    "net": 0,
    "base": 1,
    "ingest": 2,
    "maintenance": 3,
    "repair": 3,
    "requests": 3,
    "worker": 4,
    "sql": 4,
    ".": 5,          # voipbin.c: loading the library
}
# Included by every PostgreSQL-side file: PostgreSQL's own and version differences.
PRELUDE = {"voipbin.h", "compat.h"}


def sources():
    out = []
    for d, _, files in os.walk(SRC):
        for f in files:
            if f.endswith((".c", ".h")):
                out.append(os.path.relpath(os.path.join(d, f), SRC))
    return sorted(out)


def strip_comments(text):
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def our_includes(path):
    with open(os.path.join(SRC, path)) as f:
        text = f.read()
    names = re.findall(r'^#include "([^"]+)"', text, flags=re.M)
    return [n for n in names if os.path.exists(os.path.join(SRC, n))]


def folder(path):
    parts = path.split(os.sep)
    return parts[0] if len(parts) > 1 else "."


def unit(path):
    """A .c file and its header are one unit: 'ingest/store'."""
    return os.path.splitext(path)[0]


def uses():
    """unit -> the units it uses (through their headers)."""
    graph = {}
    for p in sources():
        u = unit(p)
        graph.setdefault(u, set())
        for inc in our_includes(p):
            if inc in PRELUDE:
                continue
            v = unit(inc)
            if v != u:
                graph[u].add(v)
    return graph


def test_every_file_is_in_a_known_folder():
    for p in sources():
        top = folder(p)
        assert top in RANK, "%s: a folder the layout does not know (test_layout.RANK)" % p


def only_sql_callable(path):
    """A file whose every non-static function is SQL-callable (PG_FUNCTION_INFO_V1
    declares those, and only SQL reaches them) needs no header."""
    with open(os.path.join(SRC, path)) as f:
        body = strip_comments(f.read())
    defined = re.findall(r"^(?!static)\w[\w\s\*]*?\b(\w+)\s*\([^;]*?$", body, flags=re.M)
    sql = set(re.findall(r"PG_FUNCTION_INFO_V1\((\w+)\)", body))
    return all(n in sql for n in defined)


def test_every_c_file_has_its_header():
    missing = [p for p in sources()
               if p.endswith(".c") and not os.path.exists(os.path.join(SRC, p[:-2] + ".h"))
               and not only_sql_callable(p)]
    assert not missing, "no header of their name: %s" % ", ".join(missing)


def test_dependencies_point_down():
    bad = []
    for u, vs in uses().items():
        for v in vs:
            fu, fv = folder(u), folder(v)
            if fu == fv:
                continue
            if not RANK[fv] < RANK[fu]:
                bad.append("%s uses %s" % (u, v))
    assert not bad, "dependencies that do not point down:\n" + "\n".join(sorted(bad))


def test_no_circles():
    graph = uses()
    state = {}
    stack = []
    circles = []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == "open":
                circles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u)
    assert not circles, "files that use each other:\n" + "\n".join(circles)


def test_net_includes_nothing_of_postgresql():
    """src/net/ runs off the main thread: no PostgreSQL header, nor ours that has one."""
    pg = re.compile(r'^#include [<"](postgres|fmgr|utils/|access/|catalog/|executor/|storage/|'
                    r'miscadmin|nodes/|lib/|common/|port/|datatype/|mb/)', re.M)
    for p in sources():
        if folder(p) != "net":
            continue
        with open(os.path.join(SRC, p)) as f:
            text = f.read()
        assert not pg.search(text), "%s includes a PostgreSQL header" % p
        for inc in our_includes(p):
            assert folder(inc) == "net", "%s includes %s, outside net/" % (p, inc)


def declared_functions(header_text):
    text = strip_comments(header_text)
    return set(re.findall(r"^extern\s[^;()]*?\b(\w+)\s*\(", text, flags=re.M | re.S))


def test_headers_declare_their_own_file_s_functions():
    """x.h declares functions x.c defines, and no other file's."""
    bad = []
    for p in sources():
        if not p.endswith(".h") or p in PRELUDE:
            continue
        c = p[:-2] + ".c"
        if not os.path.exists(os.path.join(SRC, c)):
            continue
        with open(os.path.join(SRC, p)) as f:
            names = declared_functions(f.read())
        with open(os.path.join(SRC, c)) as f:
            body = strip_comments(f.read())
        for n in sorted(names):
            if not re.search(r"^\w[\w\s\*]*?\b%s\s*\(" % re.escape(n), body, flags=re.M):
                bad.append("%s declares %s, which %s does not define" % (p, n, c))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("prefix", ["store_", "repair_", "gaps_", "partitions_", "position_",
                                    "subs_", "journal_", "ws_", "webhook_", "db_", "time_",
                                    "http_", "backoff_"])
def test_a_function_s_prefix_names_its_file(prefix):
    """store_* lives in ingest/store*.c, db_* in base/db.c ...: a name says where to look."""
    bad = []
    for p in sources():
        if not p.endswith(".c"):
            continue
        with open(os.path.join(SRC, p)) as f:
            body = strip_comments(f.read())
        for n in re.findall(r"^(?!static)\w[\w\s\*]*?\b(%s\w+)\s*\(" % prefix, body, flags=re.M):
            if not os.path.basename(p).startswith(prefix.rstrip("_")):
                bad.append("%s defines %s" % (p, n))
    assert not bad, "\n".join(bad)


def test_net_files_stop_a_build_that_brings_postgresql_in():
    """Each src/net/ file includes net/no_postgres.h last: an #error if any
    header before it pulled PostgreSQL in."""
    for p in sources():
        if folder(p) != "net" or not p.endswith(".c"):
            continue
        incs = our_includes(p)
        assert incs and incs[-1] == "net/no_postgres.h", "%s: net/no_postgres.h is not its last include" % p
