// A design document as the YAML describes it, before and after its functions' versions are
// resolved, together with where each part came from.
#pragma once

#include <map>
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

// One entry of a design document's `databases:`: a database name or a glob pattern; or one
// pattern of a classification it names.
struct DatabasePattern {
  std::string pattern;
  v1::SourceLocation location;
  std::string classification;  // the classification it came from; empty for `databases:`
};

// A name the design document's `classification:` gives, resolved against the `classifications:`
// of the request's files once they are all read.
struct ClassificationRef {
  std::string name;
  v1::SourceLocation location;
};

// A file's top-level `classifications:` entry: a name for a set of database patterns, e.g.
// `account: "account/*"` (Kazoo's database classifications).
struct Classification {
  std::vector<std::string> patterns;
  v1::SourceLocation location;
};

struct DesignDocSpec {
  std::string name;  // without "_design/"
  v1::SourceLocation location;
  // Where the document belongs; empty means the database given with the request.
  std::vector<DatabasePattern> databases;
  std::vector<ClassificationRef> classifications;
  // The design document with "_id" and "language", without "_rev". Function names are as
  // written until ApplyResolvedVersions rewrites them.
  rapidjson::Document body;
  std::vector<FunctionRef> functions;

  std::string id() const { return "_design/" + name; }
};

using Classifications = std::map<std::string, Classification>;

}  // namespace cnp::upload
