// Reads the YAML format of cnp-upload into design documents.
//
//   classifications:                  # optional: names for sets of databases
//     account: "account/*"            # a pattern, or a list of them
//     modb: ["account/*-??????"]
//   <design doc name>:
//     databases: [name, "glob*"]      # optional; not stored in the document
//     classification: account         # optional, or a list; not stored either
//     language: python                # optional; defaults to the request's language
//     views:
//       <view>: module.map_fn         # shorthand for {map: module.map_fn}
//       <view>: {map: module.fn, reduce: module.fn | _sum | _count | ..., options: {...}}
//     validate_doc_update: module.fn
//     filters|shows|lists|updates: {<name>: module.fn}
//     rewrites: module.fn | [rules...]
//     options: {...}
//     autoupdate: true|false
//
// Every problem is collected with its file:line, so one run reports them all.
//
// YAML aliases let a few hundred bytes name the same node billions of times (an "alias bomb"),
// and yaml-cpp hands every use out as the shared node, so the cost appears when the tree is
// walked. Every node visited, each use of an alias counted anew, is charged to a budget shared by
// all the files of one request, and so is every byte of JSON produced; an exhausted budget is an
// error naming the limit and cnp-server's flag. A file's nodes and JSON bytes are first counted the
// same way from the parser's events, which stops where they pass what is left of the budget:
// yaml-cpp's tree of a 4 MB list was 1 GB, and the copies of a 3 MB string used 20 times 60 MB,
// before the walk could refuse them. Once the budget is spent, the
// request's further files are not parsed.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "cnp/v1/upload.pb.h"
#include "service/upload/design_spec.h"
#include "service/upload/problem_list.h"

namespace cnp::upload {

struct YamlLimits {
  int64_t max_file_bytes = int64_t{4} << 20;   // one YAML file's text (--max-yaml-bytes)
  // Nodes visited (--max-yaml-nodes, whose default this is). Each node accepted is built, a
  // yaml-cpp node of about 520 bytes: 100,000 hold about 52 MB per upload thread.
  int64_t max_nodes = 100'000;
  int64_t max_json_bytes = int64_t{64} << 20;  // JSON text produced (--max-design-bytes)
  int max_depth = 1000;                        // nesting, aliases included (a cycle ends here)
};

// What one request has spent of its YamlLimits so far, across all its files.
struct YamlBudget {
  int64_t nodes = 0;
  int64_t json_bytes = 0;
};

std::vector<DesignDocSpec> ParseDesignYaml(const v1::UploadFile& file,
                                           absl::string_view default_language,
                                           const YamlLimits& limits, YamlBudget& budget,
                                           ProblemList& problems);

// The same, also collecting the file's `classifications:` into `classifications` (a name given
// in two files is an error unless both give the same patterns).
std::vector<DesignDocSpec> ParseDesignYaml(const v1::UploadFile& file,
                                           absl::string_view default_language,
                                           const YamlLimits& limits, YamlBudget& budget,
                                           ProblemList& problems,
                                           Classifications& classifications);

// Adds the patterns of every classification a spec names to its `databases`; an undefined
// name is an error at the line that names it.
void ResolveClassifications(const Classifications& classifications,
                            std::vector<DesignDocSpec>& specs, ProblemList& problems);

// With the default limits and a budget of its own.
std::vector<DesignDocSpec> ParseDesignYaml(const v1::UploadFile& file,
                                           absl::string_view default_language,
                                           ProblemList& problems);

}  // namespace cnp::upload
