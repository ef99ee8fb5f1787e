// The settings an adapter starts cnp-server with (--python-path, --allow-module, --workers,
// --preload-module, --call-timeout), as
// one canonical line. Adapters send it with every direct-session hello; a server started by an
// adapter remembers the line it was started with (--adapter-settings), so an adapter whose
// settings changed (CouchDB's configuration was edited and CouchDB restarted) notices and
// replaces that server instead of silently using the old settings.
//
// Canonical, so that two spellings of one configuration are one line: were they compared as
// written, `--python-path=/x/py/` and `/x/py`, or `--allow-module=a,b` and `b,a`, would each
// replace the other's server (found by a review).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace cnp::session {

// "python-path=/a,/b allow-module=x,y workers=default". Paths keep their order (it matters for
// imports), each canonical (CanonicalSettingsPath) and given once, at its first place; the
// allowed modules are sorted and given once (their order means nothing). Preloaded modules,
// when there are any, follow as " preload-module=m,n", in their order (it is the order of their
// imports), each given once: a line without them is the line of a server that preloads none.
//
// Then " call-timeout=D" (absl::FormatDuration), when `call_timeout` is not zero: the adapter
// always gives it (kAdapterCallTimeout unless its --call-timeout says otherwise), so that a
// server started before the adapter passed one on (it ran with cnp-server's 60 s) is replaced.
std::string LaunchSettingsText(const std::vector<std::string>& python_paths,
                               const std::vector<std::string>& allowed_modules, int workers,
                               const std::vector<std::string>& preload_modules = {},
                               absl::Duration call_timeout = absl::ZeroDuration());

// The --call-timeout an adapter gives the cnp-server it starts unless told otherwise. Longer
// than any os_process_timeout CouchDB is commonly given (5 s by default; a minute or a few for
// heavy views), so that CouchDB's own timeout, which a direct session and the Session stream
// both enforce, is the one that ends a command; cnp-server's own default (60 s) is meant for a
// shared server's gRPC clients and stopped every longer command whatever CouchDB allowed. Still
// a bound: a Session-stream list CouchDB left waiting holds a worker of the pool at most this
// long.
inline constexpr absl::Duration kAdapterCallTimeout = absl::Minutes(10);
// cnp-server's own ceiling for --call-timeout (a year).
inline constexpr absl::Duration kLongestCallTimeout = absl::Hours(24 * 365);

// `path` lexically, as far as that cannot change which directory it names: repeated and
// trailing slashes and "." components dropped ("/x//./py/" is "/x/py"). ".." is kept: after a
// symbolic link it is not the parent the text shows, and symbolic links are not resolved.
std::string CanonicalSettingsPath(std::string_view path);

}  // namespace cnp::session
