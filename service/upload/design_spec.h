// A design document as the YAML describes it, before and after its functions' versions are
// resolved, together with where each part came from.
#pragma once

#include <string>
#include <vector>

#include "cnp/v1/upload.pb.h"
#include "rapidjson/document.h"

namespace cnp::upload {

// A function named in the YAML: the string at `path` in the design document.
struct FunctionRef {
  std::vector<std::string> path;  // member names from the document's root to the string
  std::string name;               // as written, without |version
  v1::SourceLocation location;
};

// One entry of a design document's `databases:`: a database name or a glob pattern.
struct DatabasePattern {
  std::string pattern;
  v1::SourceLocation location;
};

struct DesignDocSpec {
  std::string name;  // without "_design/"
  v1::SourceLocation location;
  // Where the document belongs; empty means the database given with the request.
  std::vector<DatabasePattern> databases;
  // The design document with "_id" and "language", without "_rev". Function names are as
  // written until ApplyResolvedVersions rewrites them.
  rapidjson::Document body;
  std::vector<FunctionRef> functions;

  std::string id() const { return "_design/" + name; }
};

}  // namespace cnp::upload
