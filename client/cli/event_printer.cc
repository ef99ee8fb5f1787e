#include "client/cli/event_printer.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/couchdb/couch_url.h"
#include "common/printable_text.h"

namespace cnp::cli {
namespace {

// Every text printed here may come from CouchDB (database names, ids, fields of stored design
// documents, revisions) or from a registry anyone with write access fills: it is escaped, so
// it can neither forge a line nor send the terminal an escape sequence.
std::string P(absl::string_view text) { return Printable(text); }

std::string Where(const v1::SourceLocation& at) {
  if (at.file().empty()) return "";
  if (at.line() <= 0) return absl::StrCat(P(at.file()), ": ");
  if (at.column() <= 0) return absl::StrCat(P(at.file()), ":", at.line(), ": ");
  return absl::StrCat(P(at.file()), ":", at.line(), ":", at.column(), ": ");
}

std::string Target(const v1::DesignDocOutcome& o) {
  return P(o.database().empty() ? o.id() : absl::StrCat(o.database(), "/", o.id()));
}

const char* Verb(v1::DesignDocOutcome::Action action) {
  switch (action) {
    case v1::DesignDocOutcome::CREATED: return "created";
    case v1::DesignDocOutcome::UPDATED: return "updated";
    case v1::DesignDocOutcome::UNCHANGED: return "unchanged";
    case v1::DesignDocOutcome::WOULD_CREATE: return "would create";
    case v1::DesignDocOutcome::WOULD_UPDATE: return "would update";
    case v1::DesignDocOutcome::CHECKED: return "ok";
    case v1::DesignDocOutcome::REMOVED: return "removed";
    case v1::DesignDocOutcome::WOULD_REMOVE: return "would remove";
    default: return "?";
  }
}

void Count(v1::DesignDocOutcome::Action action, UploadTally& tally) {
  switch (action) {
    case v1::DesignDocOutcome::CREATED: ++tally.created; break;
    case v1::DesignDocOutcome::UPDATED: ++tally.updated; break;
    case v1::DesignDocOutcome::UNCHANGED: ++tally.unchanged; break;
    case v1::DesignDocOutcome::REMOVED: ++tally.removed; break;
    case v1::DesignDocOutcome::WOULD_CREATE:
    case v1::DesignDocOutcome::WOULD_UPDATE:
    case v1::DesignDocOutcome::WOULD_REMOVE: ++tally.would_change; break;
    case v1::DesignDocOutcome::CHECKED: ++tally.checked; break;
    default: break;
  }
}

void PrintOutcome(const v1::DesignDocOutcome& o, const PrintOptions& options, bool built_ahead,
                  std::ostream& out) {
  out << Where(o.location()) << Verb(o.action()) << " " << Target(o);
  if (!o.rev().empty() && o.action() != v1::DesignDocOutcome::UNCHANGED) {
    out << " (rev " << P(o.rev()) << ")";
  }
  if (o.conflict_retries() > 0) {
    out << " after " << o.conflict_retries() << " concurrent edit"
        << (o.conflict_retries() == 1 ? "" : "s");
  }
  out << "\n";
  bool is_update = o.action() == v1::DesignDocOutcome::UPDATED ||
                   o.action() == v1::DesignDocOutcome::WOULD_UPDATE;
  if (is_update) {
    for (const v1::FieldChange& c : o.changes()) {
      if (c.old_json().empty()) {
        out << "    + " << P(c.path()) << ": " << P(c.new_json()) << "\n";
      } else if (c.new_json().empty()) {
        out << "    - " << P(c.path()) << ": " << P(c.old_json()) << "\n";
      } else {
        out << "    ~ " << P(c.path()) << ": " << P(c.old_json()) << " -> " << P(c.new_json()) << "\n";
      }
    }
  }
  if (o.index_rebuild() && o.action() != v1::DesignDocOutcome::CHECKED) {
    std::string views = P(absl::StrJoin(o.rebuilt_views(), ", "));
    if (built_ahead) {
      // --staged: the build happened before the write, under the staging document; whether
      // the live document took it over is reported after this line.
      out << "    index: built before the write, under " << P(o.id()) << "__staging: " << views
          << "\n";
    } else if (options.staged && (o.action() == v1::DesignDocOutcome::WOULD_UPDATE ||
                                  o.action() == v1::DesignDocOutcome::WOULD_CREATE)) {
      out << "    index: would be built before the write, under " << P(o.id())
          << "__staging: " << views << "\n";
    } else {
      out << "    index: " << (is_update ? "rebuilt on the next" : "built on the first")
          << " query of any view: " << views << "\n";
    }
  }
  for (const std::string& field : o.kept_fields()) {
    out << "    kept " << P(field) << " (in CouchDB but not in " << options.compared_with
        << "; --drop-unknown-fields removes it)\n";
  }
  for (const std::string& field : o.dropped_fields()) {
    out << "    dropped " << P(field) << " (in CouchDB but not in " << options.compared_with
        << ")\n";
  }
  if (options.show_documents || o.action() == v1::DesignDocOutcome::WOULD_CREATE ||
      o.action() == v1::DesignDocOutcome::CHECKED) {
    out << "    " << P(o.document_json()) << "\n";
  }
}

void PrintProgress(const v1::IndexBuildProgress& p, std::ostream& out) {
  out << "staged " << P(p.database()) << "/" << P(p.id()) << ": ";
  if (p.phase() == "building") {
    out << "building index";
    if (p.total_changes() > 0) {
      out << " " << p.changes_done() << "/" << p.total_changes() << " changes ("
          << (100 * p.changes_done() / p.total_changes()) << "%)";
    }
  } else if (p.phase() == "staged") {
    out << "written; starting its index build";
  } else if (p.phase() == "built") {
    out << "index built; writing the live design document";
  } else if (p.phase() == "settling") {
    out << "waiting for the live index to catch up (update_seq " << p.changes_done() << " of "
        << p.total_changes() << ") before removing it";
  } else if (p.phase() == "committing") {
    out << "the live index is caught up (update_seq " << p.changes_done() << " of "
        << p.total_changes() << "); waiting for CouchDB to commit it (\"waiting_commit\": true) "
        << "before removing it";
  } else if (p.phase() == "settled") {
    out << "the live index is committed at update_seq " << p.changes_done();
  } else if (p.phase() == "cleaned") {
    // Also after a warning that the live document's index is another one: say no more.
    out << "removed";
  } else {
    out << P(p.phase());
  }
  out << "\n";
}

}  // namespace

void PrintEvent(const v1::UploadEvent& event, const PrintOptions& options, std::ostream& out,
                std::ostream& err, UploadTally& tally) {
  if (event.has_problem()) {
    const v1::UploadProblem& p = event.problem();
    bool error = p.severity() != v1::UploadProblem::WARNING;
    ++(error ? tally.errors : tally.warnings);
    err << Where(p.location()) << (error ? "error: " : "warning: ");
    // [database/_design/name], or [database] for the database (a registry) as a whole.
    if (!p.database().empty()) {
      err << "[" << P(p.database()) << (p.design_doc().empty() ? "" : "/") << P(p.design_doc())
          << "] ";
    }
    // The service redacts too; an older one may not have.
    err << P(cnp::couchdb::RedactCredentials(p.message())) << "\n";
  } else if (event.has_outcome()) {
    const v1::DesignDocOutcome& o = event.outcome();
    Count(o.action(), tally);
    const bool built_ahead = tally.built_ahead.erase(absl::StrCat(o.database(), "/", o.id())) > 0;
    PrintOutcome(o, options, built_ahead, out);
  } else if (event.has_progress()) {
    const v1::IndexBuildProgress& p = event.progress();
    absl::string_view live = p.id();
    if (p.phase() == "built" && absl::ConsumeSuffix(&live, "__staging")) {
      tally.built_ahead.insert(absl::StrCat(p.database(), "/", live));
    }
    PrintProgress(p, out);
  }
  out.flush();
}

void PrintSummary(const UploadTally& tally, bool failed, std::ostream& out) {
  std::vector<std::string> parts;
  auto add = [&](int n, const char* what) {
    if (n > 0) parts.push_back(absl::StrCat(n, " ", what));
  };
  add(tally.created, "created");
  add(tally.updated, "updated");
  add(tally.removed, "removed");
  add(tally.unchanged, "unchanged");
  add(tally.would_change, "would change");
  add(tally.checked, "checked");
  add(tally.unmatched_entries, tally.unmatched_entries == 1
                                   ? "registered design document matched no database"
                                   : "registered design documents matched no database");
  add(tally.errors, tally.errors == 1 ? "error" : "errors");
  add(tally.warnings, tally.warnings == 1 ? "warning" : "warnings");
  if (parts.empty() && failed) return;
  // Only warnings (every target matched no database): exit status 0, and nothing was written,
  // which the warnings' count alone did not say.
  const int done = tally.created + tally.updated + tally.removed + tally.unchanged +
                   tally.would_change + tally.checked;
  if (done == 0 && !failed && !tally.checks_only && tally.errors == 0 && tally.warnings > 0) {
    parts.insert(parts.begin(), "nothing written");
  }
  out << (parts.empty() ? "no design documents" : absl::StrJoin(parts, ", ")) << "\n";
}

}  // namespace cnp::cli
