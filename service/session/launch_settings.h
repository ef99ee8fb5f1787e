// The settings an adapter starts cnp-server with (--python-path, --allow-module, --workers,
// --preload-module), as
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

namespace cnp::session {

// "python-path=/a,/b allow-module=x,y workers=default". Paths keep their order (it matters for
// imports), each canonical (CanonicalSettingsPath) and given once, at its first place; the
// allowed modules are sorted and given once (their order means nothing). Preloaded modules,
// when there are any, follow as " preload-module=m,n", in their order (it is the order of their
// imports), each given once: a line without them is the line of a server that preloads none.
std::string LaunchSettingsText(const std::vector<std::string>& python_paths,
                               const std::vector<std::string>& allowed_modules, int workers,
                               const std::vector<std::string>& preload_modules = {});

// `path` lexically, as far as that cannot change which directory it names: repeated and
// trailing slashes and "." components dropped ("/x//./py/" is "/x/py"). ".." is kept: after a
// symbolic link it is not the parent the text shows, and symbolic links are not resolved.
std::string CanonicalSettingsPath(std::string_view path);

}  // namespace cnp::session
