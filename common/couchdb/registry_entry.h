// A design document registered for cnp sync (`cnp upload --register REGISTRY_DB`): Kazoo's
// lesson that in a multi-node deployment design documents belong in one registry database,
// from which every database that should have them gets them, including ones created later.
//
// One registry entry per design document per target rule, a plain document (not a design
// document, so the registry itself builds no index):
//
//   {"_id": "towns@classification:account",         (or "towns@database:<name or glob>")
//    "type": "cnp_design_document",
//    "name": "towns",
//    "target": {"classification": "account", "databases": ["account/*"]},
//    "design_document": {"_id": "_design/towns", "language": "python", "views": {...}}}
//
// The design document's function names carry their |version, resolved by the service where
// the functions run, so whoever puts it in place needs no Python.
#pragma once

namespace cnp::couchdb {

inline constexpr char kRegistryEntryType[] = "cnp_design_document";

}  // namespace cnp::couchdb
