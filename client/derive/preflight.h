// What cnp derive checks before it writes anything: a declaration whose handler names do not
// resolve, or whose map stage reads a database that does not exist, fails at once, instead of
// after the home database, the lease and the target databases have been created.
#pragma once

#include <optional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/derive/couch_db.h"
#include "client/derive/declaration.h"
#include "client/lib/cnp_client.h"

namespace cnp::derive {

// Every map stage's source database exists (NOT_FOUND naming it otherwise), and cnp-server
// resolves every handler: one Resolve call; a handler it cannot resolve is the error the run
// would have failed with, in the same words ("map handler NAME (SOURCE -> TARGET): why"). A
// Resolve call that fails as a whole (the server is down or restarting) is not held against
// the declaration: the run waits for the service as it always does (--service-wait).
absl::Status CheckBeforeWriting(const Declaration& declaration, CouchDb& couch,
                                const client::Client& cnp, std::optional<absl::Duration> timeout);

// Whether each handler named with its |version still has that @version in the code on disk:
// cnp-server's workers keep running the version a call names as long as they have it loaded,
// so a deployed @version(2) ran on as 1 until some worker imported the module anew (and then
// failed the run at a moment no one chose). A Resolve of the names without their version reads
// the disk. FAILED_PRECONDITION naming the handler, both versions and what to change, when one
// moved; OK when the service does not answer (the run waits for it as for any call) or the
// code no longer imports (the calls say why).
absl::Status CheckHandlerVersionsOnDisk(const Declaration& declaration, const client::Client& cnp,
                                        std::optional<absl::Duration> timeout);

}  // namespace cnp::derive
