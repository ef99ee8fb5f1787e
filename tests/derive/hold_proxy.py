"""A proxy in front of a CouchDB for tests of cnp derive against requests that stall and answers
that lie.

Holding (lease tests): while the file FILE exists, it holds the requests whose path contains
PART (not passing them on), and prints "held METHOD PATH" for each. Once FILE is gone, a held
request whose client still waits is passed on ("forwarded METHOD PATH"); one whose client has
given up is dropped ("dropped METHOD PATH"), as a proxy that has not yet sent it on drops it.
Either way "ended METHOD PATH" follows, once the answer has been passed back.

Lying, as no CouchDB answers: `fake:PART=STATUS:BODY` answers the requests whose path contains
PART (or whose "METHOD PATH" does, for PART "PUT /db/...") with STATUS and BODY without passing them on ("faked METHOD PATH"); `nodoc:PART` passes
them on and takes "doc" out of every result of the answer's "results" ("stripped METHOD PATH").
`maxdoc:BYTES` refuses a _bulk_docs request holding a document longer than BYTES (as JSON) with
HTTP 413, whole, as CouchDB 3 does past its max_document_size ("refused METHOD PATH").

Behind, as a cluster's copy that has not had the latest writes: `stalefind:N` takes the first
document out of the first N `_find` answers that hold any ("staled METHOD PATH").

Away, as a CouchDB restarting: `down:FILE` answers every request with HTTP 503 while FILE holds
"503", and closes the connection without an answer while it holds "drop" ("down METHOD PATH").

Usage: hold_proxy.py UPSTREAM_PORT RULE...   (prints "listening on PORT")
"""

import http.client
import http.server
import json
import os
import select
import socket
import socketserver
import sys
import time

UPSTREAM = ("127.0.0.1", int(sys.argv[1]))
RULES, FAKES, NODOCS = [], [], []
MAX_DOC = DOWN = None
STALE_FINDS = [0]  # answers still to make stale
for arg in sys.argv[2:]:
    if arg.startswith("stalefind:"):
        STALE_FINDS[0] = int(arg[len("stalefind:"):])
    elif arg.startswith("down:"):
        DOWN = arg[len("down:"):]
    elif arg.startswith("maxdoc:"):
        MAX_DOC = int(arg[len("maxdoc:"):])
    elif arg.startswith("fake:"):
        part, answer = arg[len("fake:"):].split("=", 1)
        status, body = answer.split(":", 1)
        FAKES.append((part, int(status), body.encode()))
    elif arg.startswith("nodoc:"):
        NODOCS.append(arg[len("nodoc:"):])
    else:
        RULES.append(arg.split("=", 1))


def say(text):
    print(text, flush=True)


def gone(sock):
    """Whether the client hung up: readable with nothing to read."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        what = f"{self.command} {self.path}"
        try:
            with open(DOWN) if DOWN else open(os.devnull) as f:
                down = f.read().strip()
        except FileNotFoundError:
            down = ""
        if down:
            say(f"down {what}")
            if down == "drop":
                self.close_connection = True
                return
            self.answer(503, [("Content-Type", "application/json")],
                        b'{"error":"service_unavailable","reason":"restarting"}')
            return
        fake = next(((status, data) for part, status, data in FAKES if part in what), None)
        if fake is not None:
            say(f"faked {what}")
            self.answer(fake[0], [("Content-Type", "application/json")], fake[1])
            return
        if MAX_DOC is not None and self.command == "POST" and "/_bulk_docs" in self.path:
            large = [doc for doc in json.loads(body)["docs"]
                     if len(json.dumps(doc, separators=(",", ":"))) > MAX_DOC]
            if large:
                say(f"refused {what}")
                reason = json.dumps({"error": "document_too_large", "reason": large[0].get("_id", "")})
                self.answer(413, [("Content-Type", "application/json")], reason.encode())
                return
        hold = next((f for f, part in RULES if part in self.path and os.path.exists(f)), None)
        if hold is not None:
            say(f"held {what}")
            while os.path.exists(hold):
                time.sleep(0.02)
            if gone(self.connection):
                say(f"dropped {what}")
                say(f"ended {what}")
                self.close_connection = True
                return
            say(f"forwarded {what}")
        upstream = http.client.HTTPConnection(*UPSTREAM, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request(self.command, self.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        if any(part in self.path for part in NODOCS) and answer.status == 200:
            parsed = json.loads(data)
            for result in parsed.get("results", []):
                result.pop("doc", None)
            data = json.dumps(parsed).encode()
            say(f"stripped {what}")
        if "/_find" in self.path and answer.status == 200 and STALE_FINDS[0] > 0:
            parsed = json.loads(data)
            if parsed.get("docs"):
                STALE_FINDS[0] -= 1
                parsed["docs"].pop(0)
                data = json.dumps(parsed).encode()
                say(f"staled {what}")
        self.answer(answer.status, answer.getheaders(), data)
        if hold is not None:
            say(f"ended {what}")

    def answer(self, status, headers, data):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = relay


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
say(f"listening on {server.server_address[1]}")
server.serve_forever()
