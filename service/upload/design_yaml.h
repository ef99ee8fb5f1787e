// Reads the YAML format of cnp-upload into design documents.
//
//   <design doc name>:
//     databases: [name, "glob*"]      # optional; not stored in the document
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
#pragma once

#include <vector>

#include "absl/strings/string_view.h"
#include "cnp/v1/upload.pb.h"
#include "service/upload/design_spec.h"
#include "service/upload/problem_list.h"

namespace cnp::upload {

std::vector<DesignDocSpec> ParseDesignYaml(const v1::UploadFile& file,
                                           absl::string_view default_language,
                                           ProblemList& problems);

}  // namespace cnp::upload
