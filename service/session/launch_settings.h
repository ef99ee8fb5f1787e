// The settings an adapter starts cnp-server with (--python-path, --allow-module, --workers), as
// one canonical line. Adapters send it with every direct-session hello; a server started by an
// adapter remembers the line it was started with (--adapter-settings), so an adapter whose
// settings changed (CouchDB's configuration was edited and CouchDB restarted) notices and
// replaces that server instead of silently using the old settings.
#pragma once

#include <string>
#include <vector>

namespace cnp::session {

// "python-path=/a,/b allow-module=x workers=default". Order is kept: it matters for imports.
std::string LaunchSettingsText(const std::vector<std::string>& python_paths,
                               const std::vector<std::string>& allowed_modules, int workers);

}  // namespace cnp::session
