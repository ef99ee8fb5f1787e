#include "service/config/server_flags.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"

ABSL_FLAG(std::string, config, "", "YAML file with any of these flags but this one as keys "
          "(lists for the repeatable ones); flags on the command line win. Read once, at "
          "start: a change takes a restart (systemctl restart cnp-server); SIGHUP does not "
          "read it again");
ABSL_FLAG(std::vector<std::string>, listen, {},
          "where to listen: unix:/path or host:port; repeatable; a relative unix path is "
          "bound in the working directory (default: $CNP_TARGET, else "
          "unix:/tmp/cnp-<uid>/cnp.sock, or, when another user owns /tmp/cnp-<uid>, "
          "cnp/cnp.sock under $XDG_RUNTIME_DIR or .cnp/cnp.sock under $HOME, as the clients "
          "look for it)");
ABSL_FLAG(int, workers, 0,
          "worker processes, each with its own Python (default: CPU cores); at most 256");
ABSL_FLAG(int, grpc_threads, 0,
          "gRPC threads, each running its own completion queue as the event loop of its calls' "
          "coroutines (default: CPU cores, at most 4); at most 256");
ABSL_FLAG(std::string, worker_binary, "",
          "path of cnp-worker (default: next to cnp-server)");
ABSL_FLAG(std::vector<std::string>, python_path, {},
          "directory holding the users' Python modules; repeatable. PYTHONPATH is honoured too. "
          "It and the directories above it must be writable by no other user");
ABSL_FLAG(std::string, virtualenv, "",
          "a virtualenv whose site-packages holds libraries the modules import; its packages "
          "are callable only when --allow-module names them");
ABSL_FLAG(std::vector<std::string>, allow_module, {},
          "module prefix whose functions may be called (e.g. myviews); repeatable. Without it, "
          "any module found in --python-path or PYTHONPATH is allowed (not in a site-packages "
          "or dist-packages directory), never the standard library or pip, setuptools and "
          "other installers");
ABSL_FLAG(std::vector<std::string>, preload_module, {},
          "module each worker imports when it starts, before it serves anything (e.g. "
          "myviews.towns); repeatable. For a module whose import takes longer than CouchDB's "
          "os_process_timeout, which a first call would run into (the worker is then killed "
          "mid-import, and the next one starts over). A module that fails to import is logged "
          "and imported when first called");
ABSL_FLAG(absl::Duration, worker_start_timeout, absl::Seconds(30),
          "longest a worker may take to start, its --preload-module imports included; one "
          "that takes longer is killed and started again after a backoff");
ABSL_FLAG(absl::Duration, call_timeout, absl::Seconds(60),
          "longest a call may take, counted from its arrival, its wait for a free worker "
          "included (a call whose time passes while it waits never runs); a call still "
          "running then has its worker killed and replaced");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(30),
          "on SIGTERM, how long calls in flight may take to finish");
ABSL_FLAG(absl::Duration, drain_delay, absl::ZeroDuration(),
          "on SIGTERM, how long to keep serving while the health service already reports "
          "NOT_SERVING, so that load balancers stop sending first; a second SIGTERM ends it "
          "early. Then calls in flight get --shutdown-grace");
ABSL_FLAG(int, max_queue, 256, "calls that may wait for a busy worker; more are refused with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_docs_per_call, 1000000,
          "the most documents one Map call (or MapStream message) may carry; more are refused "
          "with RESOURCE_EXHAUSTED");
// 64 MiB of payload and room for a message's framing, so that a line of cnp-adapter's largest
// default (--max-line-bytes, 64 MiB) fits in one Session message.
ABSL_FLAG(int64_t, max_call_bytes, (int64_t{64} << 20) + (int64_t{64} << 10),
          "the largest request or response of one call, in bytes; larger ones are refused with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_grpc_memory, 0,
          "memory in bytes gRPC may hold for all calls together (requests being received, "
          "answers being sent; not all that connections cost, which the connection limits "
          "bound); past it streams are cancelled with RESOURCE_EXHAUSTED. The same figure bounds, "
          "counted separately, what unary calls hold outside gRPC (requests from admission, "
          "answers until sent): a call past it is refused with RESOURCE_EXHAUSTED (default 0: "
          "the larger of 256 MiB and 4 x --max-call-bytes)");
ABSL_FLAG(int64_t, max_session_design_memory, int64_t{256} << 20,
          "bytes of design documents (their function names) all Session streams together may "
          "hold, each stream at most 64 MiB; past it a stream's own least recently used ones "
          "make room first, then the design document is refused (CouchDB fails that request)");
ABSL_FLAG(int, max_connections_per_peer, 1024,
          "TCP connections one peer address may have open at once; more are closed as they "
          "connect (0: no limit). Behind nginx on this host every call in flight is a "
          "connection from nginx's address: keep it above nginx's calls in flight at peak plus "
          "its idle connections (keepalive x worker_processes)");
ABSL_FLAG(absl::Duration, first_call_timeout, absl::ZeroDuration(),
          "a TCP connection that has made no call (with the token, when there is one) this "
          "soon after connecting is closed (0: never, the default). Health checks are not "
          "calls here: do not set it on a listener that balancers health-check over "
          "connections of their own");
ABSL_FLAG(absl::Duration, max_connection_idle, absl::Minutes(5),
          "a connection with no call open for this long is closed (its client reconnects at "
          "its next call; 0: never)");
ABSL_FLAG(int64_t, max_calls_per_worker, 0, "replace a worker after this many calls (0: never)");
ABSL_FLAG(int64_t, worker_memory_mb, 2048,
          "memory cap per worker in MiB: allocations above it raise MemoryError in the function "
          "and the worker is replaced (0: no cap; else at least 64)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(std::string, log_format, "text",
          "text (one readable line per event) or json (one JSON object per line, for a log "
          "collector)");
ABSL_FLAG(int64_t, log_max_bytes, int64_t{64} << 20,
          "when stderr is a file (as for a server cnp-adapter starts): once it is larger than "
          "this, it is copied to FILE.1 and emptied, checked every 5 s (0: never)");
ABSL_FLAG(std::string, metrics_listen, "",
          "host:port to serve Prometheus metrics on at GET /metrics, e.g. 127.0.0.1:9464 "
          "(default: off; an address other than loopback needs --metrics-public)");
ABSL_FLAG(bool, metrics_public, false,
          "allow --metrics-listen on an address other than loopback, and nothing else: anyone "
          "who can reach it reads the metrics (function names, their calls and errors, the "
          "workers' memory), which have no TLS and no token");
ABSL_FLAG(int, ready_fd, -1,
          "write \"ready\\n\" to this file descriptor and close it once every address is "
          "listening (for supervisors and tests that start the server)");
ABSL_FLAG(int, launch_lock_fd, -1,
          "a file descriptor holding cnp-adapter's launch lock, closed with --ready-fd once "
          "every address is listening (or when the server exits): adapters starting at the "
          "same moment wait for this server instead of starting another (set by cnp-adapter)");
ABSL_FLAG(int, max_sessions, 64,
          "direct CouchDB sessions served at once, each by its own worker (an adapter on this "
          "host hands CouchDB's pipes to it); more use the gRPC Session stream. 0: none; at "
          "most 256");
ABSL_FLAG(int, spare_session_workers, 1,
          "started workers kept ready so a new direct session does not wait for Python (none "
          "without a unix --listen: direct sessions come only through one); at most --max-sessions");
ABSL_FLAG(std::vector<std::string>, allow_uid, {},
          "user (uid or name) whose processes may use this server's unix sockets besides its own "
          "user and root, checked with SO_PEERCRED on every connection; repeatable");
ABSL_FLAG(std::string, adapter_settings, "",
          "set by cnp-adapter when it starts the server: the settings it started it with, so "
          "an adapter with other settings replaces it (operators leave this empty)");

ABSL_FLAG(std::vector<std::string>, couchdb_allow, {},
          "URL prefix of a CouchDB that Upload may write to, e.g. https://couch:6984; "
          "repeatable; * allows any http(s) URL (default: CouchDB on this host only: "
          "localhost, 127.0.0.0/8, [::1], [::ffff:127.x.x.x]); credentials go over http:// "
          "to another host only under a prefix naming that http:// URL, never by *");
ABSL_FLAG(int, max_waiting_uploads, 8,
          "Upload: calls that may wait while every upload thread is busy (a staged build may "
          "hold one for hours); more are refused with RESOURCE_EXHAUSTED; at most 1000000");
ABSL_FLAG(int64_t, max_yaml_bytes, int64_t{4} << 20,
          "Upload: the largest YAML file accepted, in bytes");
ABSL_FLAG(int64_t, max_yaml_nodes, 100000,
          "Upload: YAML nodes one request may expand to, each use of an alias counted anew "
          "(stops alias bombs); each node accepted is built, about 520 bytes, for each of the "
          "upload threads");
ABSL_FLAG(int64_t, max_design_bytes, int64_t{64} << 20,
          "Upload: bytes of JSON one request's YAML may expand to");
ABSL_FLAG(int64_t, max_couchdb_response_bytes, int64_t{64} << 20,
          "Upload: the longest answer read from CouchDB, in bytes; an answer may also hold "
          "at most one JSON value per 16 bytes of it (dense JSON takes many times its size "
          "once parsed)");

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate (chain) for TCP listeners: with --tls-key, every TCP address speaks "
          "TLS. SIGHUP, and a check every minute, read it and the key again: a renewed pair "
          "serves new connections without a restart");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert (mode 0600, owned by this user)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM certificate authorities: TCP clients must present a certificate one of them "
          "signed (mutual TLS); needs --tls-cert. Read again as --tls-cert is");
ABSL_FLAG(std::string, auth_token_file, "",
          "file holding a bearer token (mode as for --tls-key): calls over TCP must send "
          "'authorization: Bearer <token>'. It may list several, one per line, any of them "
          "accepted; SIGHUP reads it again (to rotate a token: add the new one, SIGHUP, move "
          "the clients over, remove the old one, SIGHUP)");
ABSL_FLAG(bool, insecure, false,
          "allow, on an address other than loopback (each refused without it), a TCP listener "
          "in plaintext or with TLS but neither --auth-token-file nor --tls-client-ca (anyone "
          "who can reach it may call), and --metrics-listen (which --metrics-public allows "
          "alone)");
ABSL_FLAG(std::string, socket_group, "",
          "group given the unix sockets, so that its members may open them: sockets are created "
          "0660 and their directory 0750 with this group (default: 0600 and 0700, the server's "
          "user only). Opening is not enough: each user must also be named with --allow-uid");
ABSL_FLAG(bool, reflection, false,
          "serve gRPC reflection (grpcurl without .proto files). Off by default: it runs on "
          "gRPC's own threads, at most 4 streams at once, and needs the token where there is one");
ABSL_FLAG(std::string, access_log, "",
          "file the access log (refused connections and calls, every Upload, with the peer) is "
          "appended to (default: the server's log on stderr); SIGHUP reopens it, for logrotate");

namespace cnp::config {

bool IsServerFlagsFile(absl::string_view file) { return file == __FILE__; }

}  // namespace cnp::config
