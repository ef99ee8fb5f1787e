// The deterministic ids of derived documents: the same source document, key and place always
// give the same id, so a re-run finds (and leaves alone) what it wrote before, and a source
// document's rows share a prefix by which they are found when it changes or goes away.
//   map row     "<source>:<sha256(source id), 32 hex>:<sha256(key JSON), 16 hex>:<n>"
//   reduce row  "<map target>:<sha256(key JSON), 32 hex>"
// Database names hold no ':', so one source's prefix never covers another's.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace cnp::derive {

// The first `hex_chars` hex digits of SHA-256(text).
std::string ShaHex(absl::string_view text, size_t hex_chars);

std::string MapRowPrefix(absl::string_view source, absl::string_view source_id);
std::string MapRowId(absl::string_view source, absl::string_view source_id,
                     absl::string_view key_json, size_t index);
std::string ReduceRowId(absl::string_view map_target, absl::string_view key_json);

}  // namespace cnp::derive
