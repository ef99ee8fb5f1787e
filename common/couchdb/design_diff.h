// What writing a design document would change: the document to write (the YAML's, plus what
// the stored one has that the YAML does not mention), the field-by-field diff against the
// stored one, and whether CouchDB will rebuild the index.
#pragma once

#include <string>
#include <vector>

#include "cnp/v1/upload.pb.h"
#include "rapidjson/document.h"

namespace cnp::couchdb {

struct DesignDocPlan {
  rapidjson::Document document;  // to write; no "_rev"
  std::vector<v1::FieldChange> changes;  // empty: identical to the stored one
  std::vector<std::string> kept_fields;
  std::vector<std::string> dropped_fields;
  bool index_rebuild = false;
  std::vector<std::string> rebuilt_views;
};

// `stored` is the document CouchDB has (its "_rev" is ignored), or nullptr when there is none.
// Fields of `stored` missing from `desired` (top-level ones, and entries of views, filters,
// shows, lists, updates) are kept unless `drop_unknown_fields`.
DesignDocPlan PlanDesignDoc(const rapidjson::Value& desired, const rapidjson::Value* stored,
                            bool drop_unknown_fields);

// What `plan` would do, in an outcome as upload and cnp sync report it: the changes, the index
// rebuild and its views, the kept and dropped fields and the document to write. The caller
// fills in where it goes (database, id, location) and what happened (action, rev).
void DescribePlan(const DesignDocPlan& plan, v1::DesignDocOutcome& outcome);

// CouchDB rebuilds a design document's index when any of these differ: every view's
// map/reduce/options (views.lib included), the "options" field and "language", compared as
// written (member order and the spelling of numbers count). Two documents with the same index
// inputs share the index, which is what a staged deploy relies on. PlanDesignDoc writes an
// input whose content is unchanged as it is stored, so that reordering a YAML file does not
// rebuild an index.
bool SameIndexInputs(const rapidjson::Value& a, const rapidjson::Value& b);

// The view names of a design document, views.lib excluded.
std::vector<std::string> ViewNames(const rapidjson::Value& doc);

}  // namespace cnp::couchdb
