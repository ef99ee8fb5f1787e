// Small pieces of JSON text for the query-server protocol: escaped strings, CouchDB's control
// lines, and the raw elements of an array line.
//
// The protocol forwards documents, keys and values untouched, so lines are taken apart as text
// (slices of the line) rather than parsed into a tree and written out again.
#pragma once

#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cnp::couchdb {

// Appends `text` as a quoted JSON string. Control characters (DEL included, which JSON allows
// raw but a terminal reading a log does not) are escaped; other bytes, including UTF-8
// sequences, are copied as they are. The one escaper of the service: CouchDB's lines, the
// adapter's and the JSON log (service/common/log.cc) all write strings with it.
void AppendJsonString(std::string& out, std::string_view text);

// ["log","<message>"]
std::string LogLine(std::string_view message);

// ["error","<id>","<reason>"]: CouchDB rethrows it as {id, reason} and keeps the process (map,
// reduce) or stops it (any ddoc call).
std::string ErrorLine(std::string_view id, std::string_view reason);

// ["fatal","<id>","<reason>"]: CouchDB stops the process.
std::string FatalLine(std::string_view id, std::string_view reason);

// The reason a query server gives on stderr (CouchDB's log) when the protocol ended its session
// with `last_line` (a fatal line, an unknown command's error), on either session path: "the
// protocol ended the session with ["fatal",...]", the line cut to its first 1,024 bytes.
std::string ProtocolEndedReason(std::string_view last_line);

// `text` quoted in a message, cut to its first `limit` bytes (at a character's start) with how
// long it was: an unknown command's name, or a line CouchDB sent, may be many megabytes, and
// was echoed whole to CouchDB and into its log.
std::string Excerpt(std::string_view text, size_t limit);
// Added to the reason for a line dropped as too long in the middle of a list: its row is lost.
inline constexpr std::string_view kListRowLost = " (a list row: the list cannot go on)";

// The raw text of each element of the JSON array `text` (surrounding whitespace removed), in
// order. Structure only: strings and nesting are followed so that commas inside them do not
// split, but scalars are not checked. INVALID_ARGUMENT when `text` is not an array or is cut
// short. Only the first `max_kept` elements are kept (the rest are walked all the same), so
// that an array of millions of tiny elements costs a caller that reads a few no more than its
// bytes.
absl::StatusOr<std::vector<std::string_view>> SplitJsonArray(
    std::string_view text, size_t max_kept = std::numeric_limits<size_t>::max());

// Strips the spaces, tabs and carriage returns CouchDB never sends but a hand-typed line may
// carry at either end.
std::string_view TrimJsonText(std::string_view text);

}  // namespace cnp::couchdb
