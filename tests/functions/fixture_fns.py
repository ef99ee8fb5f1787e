"""Python named-function equivalents of the JavaScript functions in the CouchDB 3.4.3 transcripts
(tests/adapter/testdata/couchdb-3.4.3-js), and of the functions of CouchDB's own query-server
spec (test/view_server/query_server_spec.rb).

Each function's docstring quotes the JavaScript it replaces. The adapter tests map every
JavaScript source in a transcript to the name of its equivalent here.
"""

import json
import time

from couch_named_python import (Forbidden, NotFound, Unauthorized, emit, get_row, log, send,
                                start, version)


class Boom(Exception):
    """What `throw({boom: doc._id})` throws."""


# ---- map.txt, list.txt -------------------------------------------------------------------------

@version(1)
def town_n(doc):
    """function(doc){ if (doc.town) emit(doc.town, doc.n); }"""
    if doc.get("town"):
        yield doc["town"], doc.get("n")


def slow_town(doc):
    """Not from a transcript: town_n after `seconds` of work, a command that runs a while. With
    `started`, a path, the file is created first: a test's sign that the command is running."""
    if doc.get("started"):
        open(doc["started"], "w").close()
    time.sleep(doc.get("seconds", 0))
    yield from town_n(doc)


def slow_count(keys, values, rereduce):
    """Not from a transcript: counts the values after as many seconds as the largest says."""
    time.sleep(max(values))
    return len(values)


# ---- map_error.txt -----------------------------------------------------------------------------

def map_error(doc):
    """function(doc){ if (doc.n % 5 == 0) throw({boom: doc._id}); if (doc.n % 7 == 0)
    { doc.nope.x = 1; } log('mapping ' + doc._id); emit(doc.n, null); }"""
    if doc["n"] % 5 == 0:
        raise Boom(doc["_id"])
    if doc["n"] % 7 == 0:
        doc["nope"]["x"] = 1
    log("mapping " + doc["_id"])
    emit(doc["n"], None)


# ---- reduce.txt --------------------------------------------------------------------------------

def town_mod3(doc):
    """function(doc){ if (doc.town) emit([doc.town, doc.n % 3], doc.n); }"""
    if doc.get("town"):
        yield [doc["town"], doc["n"] % 3], doc["n"]


@version(2)
def count_total(keys, values, rereduce):
    """function(keys, values, rereduce){ if (rereduce) { ... sum counts and totals ... }
    return {count: values.length, total: sum(values)}; }"""
    if rereduce:
        return {"count": sum(v["count"] for v in values),
                "total": sum(v["total"] for v in values)}
    return {"count": len(values), "total": sum(values)}


# ---- reduce_builtin.txt ------------------------------------------------------------------------

def town_n_always(doc):
    """function(doc){ emit(doc.town, doc.n); }"""
    yield doc.get("town"), doc.get("n")


# ---- filter.txt, filter_view.txt ---------------------------------------------------------------

def by_town(doc, req):
    """function(doc, req){ return doc.town === req.query.town; }"""
    return doc.get("town") == req.get("query", {}).get("town")


def oslo(doc):
    """function(doc){ if (doc.town === 'Oslo') emit(doc._id, null); }"""
    if doc.get("town") == "Oslo":
        yield doc["_id"], None


# ---- show.txt ----------------------------------------------------------------------------------

def hello(doc, req):
    """function(doc, req){ return {body: 'Hello ' + (doc ? doc.town : 'nobody') + ' x=' +
    req.query.x, headers: {'Content-Type': 'text/plain', 'X-Acc': 'yes'}}; }"""
    town = doc["town"] if doc else "nobody"
    return {"body": f"Hello {town} x={req['query']['x']}",
            "headers": {"Content-Type": "text/plain", "X-Acc": "yes"}}


def show_json(doc, req):
    """function(doc, req){ return {json: {id: doc && doc._id, method: req.method, q: req.query},
    code: 202}; }"""
    return {"json": {"id": doc and doc["_id"], "method": req["method"], "q": req["query"]},
            "code": 202}


def show_str(doc, req):
    """function(doc, req){ return 'just a string for ' + (doc ? doc._id : 'null'); }"""
    return "just a string for " + (doc["_id"] if doc else "null")


def show_err(doc, req):
    """function(doc, req){ throw(['error', 'not_found', 'custom missing']); }"""
    raise NotFound("custom missing")


# ---- list.txt ----------------------------------------------------------------------------------

def list_rows(head, req):
    """function(head, req){ start({headers: {'Content-Type': 'text/plain'}}); send('total_rows='
    + head.total_rows + ' offset=' + head.offset + '\\n'); var row; while ((row = getRow())) {
    send(row.id + ' ' + row.key + ' ' + row.value + '\\n'); } return 'END\\n'; }"""
    start({"headers": {"Content-Type": "text/plain"}})
    send(f"total_rows={head['total_rows']} offset={head['offset']}\n")
    while (row := get_row()):
        send(f"{row['id']} {row['key']} {row['value']}\n")
    return "END\n"


def list_json(head, req):
    """function(head, req){ provides('json', function(){ var out = []; var row; while ((row =
    getRow())) out.push(row.key); send(JSON.stringify(out)); }); }"""
    start({"headers": {"Content-Type": "application/json"}})
    keys = []
    while (row := get_row()):
        keys.append(row["key"])
    send(json.dumps(keys, separators=(",", ":")))


# ---- update.txt --------------------------------------------------------------------------------

def bump(doc, req):
    """function(doc, req){ if (!doc) { return [{_id: req.id || req.uuid, town: 'New', n: 0,
    created: true}, 'created\\n']; } doc.n = (doc.n || 0) + 1; return [doc, {json: {ok: true,
    n: doc.n, body: req.body}}]; }"""
    if not doc:
        return ({"_id": req.get("id") or req["uuid"], "town": "New", "n": 0, "created": True},
                "created\n")
    doc["n"] = (doc.get("n") or 0) + 1
    return doc, {"json": {"ok": True, "n": doc["n"], "body": req["body"]}}


def noop(doc, req):
    """function(doc, req){ return [null, {code: 200, body: 'nothing to do for ' + (doc ?
    doc._id : 'null')}]; }"""
    return None, {"code": 200, "body": "nothing to do for " + (doc["_id"] if doc else "null")}


# ---- validate.txt ------------------------------------------------------------------------------

@version(3)
def validate(new_doc, old_doc, user_ctx, sec_obj):
    """function(newDoc, oldDoc, userCtx, secObj) { if (newDoc._id.indexOf('_design/') === 0)
    return; if (newDoc.forbid) throw({forbidden: 'doc ' + newDoc._id + ' has forbid flag'});
    if (newDoc.needs_admin && userCtx.roles.indexOf('_admin') === -1) throw({unauthorized:
    'only admins may write needs_admin docs'}); if (newDoc.crash) { var x = null; x.boom(); }
    if (!newDoc._deleted && !newDoc.type) throw({forbidden: 'type is required'}); }"""
    if new_doc["_id"].startswith("_design/"):
        return
    if new_doc.get("forbid"):
        raise Forbidden(f"doc {new_doc['_id']} has forbid flag")
    if new_doc.get("needs_admin") and "_admin" not in user_ctx["roles"]:
        raise Unauthorized("only admins may write needs_admin docs")
    if new_doc.get("crash"):
        crash = None
        crash.boom()
    if not new_doc.get("_deleted") and not new_doc.get("type"):
        raise Forbidden("type is required")


# ---- CouchDB's query_server_spec.rb ------------------------------------------------------------

def emit_twice(doc):
    """function(doc){emit("foo",doc.a); emit("bar",doc.a)}"""
    emit("foo", doc["a"])
    emit("bar", doc["a"])


def emit_once(doc):
    """function(doc){emit("baz",doc.a)}"""
    yield "baz", doc["a"]


def reduce_values_length(keys, values, rereduce):
    """function(keys, values, rereduce) { return values.length; }"""
    return len(values)


def reduce_values_sum(keys, values, rereduce):
    """function(keys, values, rereduce) { return sum(values); }"""
    return sum(values)


def validate_forbidden(new_doc, old_doc, user_ctx, sec_obj):
    """function(newDoc, oldDoc, userCtx) { if(newDoc.bad) throw({forbidden:"bad doc"}); }"""
    if new_doc.get("bad"):
        raise Forbidden("bad doc")


def show_simple(doc, req):
    """function(doc, req) { log("ok"); return [doc.title, doc.body].join(' - '); }"""
    log("ok")
    return " - ".join([doc["title"], doc["body"]])


def show_headers(doc, req):
    """function(doc, req) { var resp = {"code":200, "headers":{"X-Plankton":"Rusty"}};
    resp.body = [doc.title, doc.body].join(' - '); return resp; }"""
    return {"code": 200, "headers": {"X-Plankton": "Rusty"},
            "body": " - ".join([doc["title"], doc["body"]])}


def show_sends(head, req):
    """function(head, req) { start({headers:{"Content-Type" : "text/plain"}});
    send("first chunk"); send('second "chunk"'); return "tail"; };"""
    start({"headers": {"Content-Type": "text/plain"}})
    send("first chunk")
    send('second "chunk"')
    return "tail"


def show_while_get_rows(head, req):
    """function(head, req) { send("first chunk"); send(req.q); var row; log("about to getRow " +
    typeof(getRow)); while(row = getRow()) { send(row.key); }; return "tail"; };"""
    send("first chunk")
    send(req["q"])
    log("about to get_row")
    while (row := get_row()):
        send(row["key"])
    return "tail"


def show_while_get_rows_multi_send(head, req):
    """function(head, req) { send("bacon"); var row; log("about to getRow " + typeof(getRow));
    while(row = getRow()) { send(row.key); send("eggs"); }; return "tail"; };"""
    send("bacon")
    while (row := get_row()):
        send(row["key"])
        send("eggs")
    return "tail"


def list_simple(head, req):
    """function(head, req) { send("first chunk"); send(req.q); var row; while(row = getRow()) {
    send(row.key); }; return "early"; };"""
    send("first chunk")
    send(req["q"])
    while (row := get_row()):
        send(row["key"])
    return "early"


def list_chunky(head, req):
    """function(head, req) { send("first chunk"); send(req.q); var row, i=0; while(row =
    getRow()) { send(row.key); i += 1; if (i > 2) { return('early tail'); } }; };"""
    send("first chunk")
    send(req["q"])
    count = 0
    while (row := get_row()):
        send(row["key"])
        count += 1
        if count > 2:
            return "early tail"


def list_capped(head, req):
    """function(head, req) { send("bacon"); var row, i = 0; while(row = getRow()) {
    send(row.key); i += 1; if (i > 2) { return('early'); } }; }"""
    send("bacon")
    count = 0
    while (row := get_row()):
        send(row["key"])
        count += 1
        if count > 2:
            return "early"


def list_raw(head, req):
    """function(head, req) { send("first chunk"); send(req.q); var row; while(row = getRow()) {
    send(row.key); }; return "tail"; };"""
    send("first chunk")
    send(req["q"])
    while (row := get_row()):
        send(row["key"])
    return "tail"


def filter_basic(doc, req):
    """function(doc, req) { if (doc.good) { return true; } }"""
    return bool(doc.get("good"))


def filter_v_is(doc, req):
    """No JavaScript's: whether doc.v is exactly the integer the query's "v" spells (a double
    would not tell 10**400 from 10**400 + 1)."""
    return doc.get("v") == int(req["query"]["v"])


def update_basic(doc, req):
    """function(doc, req) { doc.world = "hello"; var resp = [doc, "hello doc"]; return resp; }"""
    doc["world"] = "hello"
    return doc, "hello doc"


def rewrite_basic(req):
    """The JavaScript rewrite form: function(req) { return {path: "_all_docs", query:
    {limit: "1"}}; }"""
    return {"path": "_all_docs", "query": {"limit": "1"}}


def map_fails_for_the_test(doc):
    """A map function that raises for every document (used by the failure tests)."""
    raise ValueError("always")


def reduce_logs_and_fails(keys, values, rereduce):
    """Not from a transcript: logs, then raises (used by the failure tests)."""
    log("failing over %d values" % len(values))
    raise ValueError("not reduced")


def reduce_logs_count(keys, values, rereduce):
    """Not from a transcript: logs, then counts the values."""
    log("counting %d values" % len(values))
    return len(values)


def reduce_blowup(keys, values, rereduce):
    """A reduce whose output outgrows its input (CouchDB's reduce_limit must refuse it)."""
    return "x" * 6000


def show_raises(doc, req):
    """A show function that fails: a recoverable render_error."""
    raise ValueError("testing")


def show_needs_doc(doc, req):
    """function(doc, req) { return {body: doc.title}; }: fails when the document is missing."""
    return {"body": doc["title"]}


def show_forbidden(doc, req):
    """function(doc, req) { throw({forbidden: 'members only'}); }"""
    raise Forbidden("members only")


# ---- the service's own log (tests/adapter/function_log_test.py) --------------------------------

@version(2)
def validate_logs(new_doc, old_doc, user_ctx, sec_obj):
    """A validate_doc_update that logs, as CouchDB's `log` inside one: the line must reach the
    caller and, attributed, the service's log."""
    log("validating " + new_doc["_id"])
    if new_doc.get("bad"):
        raise Forbidden("bad doc")


# ---- functions with fewer parameters than CouchDB passes (query_server_spec_test) ---------------

def validate_without_secobj(new_doc, old_doc, user_ctx):
    """couch-named-python's validators took three: secobj came later."""
    if user_ctx.get("name") != "daniel":
        raise Forbidden(f"{new_doc['_id']}: only daniel, not {user_ctx.get('name')}")


def show_doc_only(doc):
    return f"just {doc['title']}"


def filter_doc_only(doc):
    return bool(doc.get("good"))


def update_doc_only(doc):
    doc["world"] = "hello"
    return doc, "no req needed"


def list_head_only(head):
    send(f"total_rows={head['total_rows']}")
    while (row := get_row()):
        send(row["key"])
    return "tail"


# ---- not from a transcript: a thread that outlives its call ------------------------------------

def leaky_thread(doc):
    """Starts a thread that outlives the call and keeps calling emit() and log(), as a function
    that starts a background thread does. Each attempt is written to the file doc["report"]
    ("emit accepted" or "emit refused: <message>", the same for log); the thread ends once the
    file doc["stop"] exists (or after a minute)."""
    import os
    import threading

    def keep_calling():
        with open(doc["report"], "a") as report:
            for i in range(6000):
                if os.path.exists(doc["stop"]):
                    return
                for name, call in (("emit", lambda: emit("LEAK-from-" + doc["_id"], i)),
                                   ("log", lambda: log(f"bg {i}"))):
                    try:
                        call()
                        report.write(f"{name} accepted\n")
                    except RuntimeError as error:
                        report.write(f"{name} refused: {error}\n")
                report.flush()
                time.sleep(0.01)

    threading.Thread(target=keep_calling, daemon=True).start()
    yield doc["_id"], None



def town_when_tried(doc):
    """town_n once the file doc["tried"] (leaky_thread's report) shows that a thread tried both
    emit() and log(), or after 20 s: a command that runs while another call's thread does."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(doc["tried"]) as report:
                tried = {line.split(" ", 1)[0] for line in report}
        except FileNotFoundError:
            tried = set()
        if {"emit", "log"} <= tried:
            break
        time.sleep(0.01)
    yield from town_n(doc)


# ---- not from a transcript: map functions that cannot be ----------------------------------------

async def async_map(doc):
    """An async def: calling it runs nothing of its body."""
    emit(doc["_id"], None)


async def async_generator_map(doc):
    """An async def with a yield: calling it runs nothing of its body."""
    yield doc["_id"], None


def filter_runs_out_of_memory(doc, req):
    """Not from a transcript: a filter that runs out of memory on a document marked "huge"."""
    if doc.get("huge"):
        raise MemoryError("the batch did not fit")
    return True
