#include "client/derive/derived_ids.h"

#include <openssl/sha.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace cnp::derive {

std::string ShaHex(absl::string_view text, size_t hex_chars) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  constexpr char kHex[] = "0123456789abcdef";
  hex_chars = std::min<size_t>(hex_chars, 2 * SHA256_DIGEST_LENGTH);
  std::string hex(hex_chars, '0');
  for (size_t i = 0; i < hex_chars; ++i) hex[i] = kHex[(digest[i / 2] >> (i % 2 ? 0 : 4)) & 0xF];
  return hex;
}

std::string MapRowPrefix(absl::string_view source, absl::string_view source_id) {
  return absl::StrCat(source, ":", ShaHex(source_id, 32), ":");
}

std::string MapRowId(absl::string_view source, absl::string_view source_id,
                     absl::string_view key_json, size_t index) {
  return absl::StrCat(MapRowPrefix(source, source_id), ShaHex(key_json, 16), ":", index);
}

std::string ReduceRowId(absl::string_view map_target, absl::string_view key_json) {
  return absl::StrCat(map_target, ":", ShaHex(key_json, 32));
}

}  // namespace cnp::derive
