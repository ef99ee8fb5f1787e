#include "client/derive/deriver.h"

#include <algorithm>
#include <random>
#include <set>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/derive/change_header.h"
#include "client/derive/deriver_parts.h"
#include "client/derive/lease.h"
#include "client/derive/preflight.h"
#include "common/couchdb/couch_client.h"
#include "common/couchdb/couch_url.h"
#include "common/couchdb/json.h"
#include "common/printable_text.h"

namespace cnp::derive {

using rapidjson::Document;
using rapidjson::Value;

Deriver::Deriver(Declaration declaration, CouchDb& couch, client::Client& cnp,
                 DeriverOptions options, std::ostream& log,
                 std::function<absl::StatusOr<bool>()> may_write, CouchDb* prefetch)
    : declaration_(std::move(declaration)),
      couch_(couch),
      cnp_(cnp),
      options_(options),
      log_(log),
      may_write_(std::move(may_write)),
      prefetch_(prefetch) {
  home_ = declaration_.stages.front().target;
  for (const Stage& s : declaration_.stages) home_ = std::min(home_, s.target);
  progress_.resize(declaration_.stages.size());
  checkpoints_.resize(declaration_.stages.size());
  last_report_.assign(declaration_.stages.size(), absl::InfinitePast());
  reported_processed_.assign(declaration_.stages.size(), 0);
  read_limits_.assign(declaration_.stages.size(), options_.batch_size);
  sources_read_.assign(declaration_.stages.size(), false);
  warned_dropped_.assign(declaration_.stages.size(), {});
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& map = declaration_.stages[i];
    if (map.reduce) continue;
    for (const Stage& r : declaration_.stages) {
      if (r.reduce && r.with_sources && r.source == map.target) sources_read_[i] = true;
    }
  }
}

Deriver::~Deriver() {
  for (auto& feed : feeds_) {
    if (feed) feed->RequestStop();  // all at once, then each joined
  }
  // However the run ends, the errors it left out of the log are said.
  LogErrorsLeftOut(/*final=*/true);
}

// Each source database holds a marker of its own, so that a checkpoint taken from one that was
// deleted and created again under its name (a new database, whose sequences start over) is
// not resumed from: CouchDB 3's GET /db answers no uuid, and instance_start_time is "0".
// _local documents are not in _changes or _all_docs, so the marker is no document of the
// source to its readers or to the map handlers.
constexpr char kSourceMarkerId[] = "cnp-derive-source";

absl::StatusOr<std::string> Deriver::SourceMarker(const std::string& source) {
  if (auto known = source_markers_.find(source); known != source_markers_.end()) return known->second.first;
  const std::string path = LocalDocPath(source, kSourceMarkerId);
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<std::optional<Document>> doc =
        couch_.GetIfExists(path, absl::StrCat("reading the marker _local/", kSourceMarkerId, " of ", source));
    if (!doc.ok()) return NoMarker(source, doc.status());
    if (doc->has_value()) {
      std::string id = Text(**doc, "id");
      source_markers_[source] = {id, false};
      return id;
    }
    std::random_device random;
    const std::string id = absl::StrFormat("%08x%08x%08x%08x", random(), random(), random(), random());
    Document marker(rapidjson::kObjectType);
    auto& a = marker.GetAllocator();
    marker.AddMember("id", couchdb::StringValue(id, a), a);
    marker.AddMember("created_at_ms", absl::ToUnixMillis(absl::Now()), a);
    absl::StatusOr<Document> written = FencedWrite("PUT", path, couchdb::ToJson(marker),
                                                   absl::StrCat("writing the marker _local/", kSourceMarkerId,
                                                                " of ", source));
    if (written.ok()) {
      source_markers_[source] = {id, true};
      return id;
    }
    // Another instance (of another name) wrote it first: its id is the one.
    if (absl::IsAborted(written.status()) && attempt == 0) continue;
    return NoMarker(source, written.status());
  }
}

namespace {

// The id of a target's _local document in which the first instance to derive a source into it
// records its name: this and the source's name.
constexpr absl::string_view kClaimPrefix = "cnp-derive-claim:";

std::string ClaimId(const Stage& s) { return absl::StrCat(kClaimPrefix, s.source); }

}  // namespace

absl::StatusOr<std::optional<std::string>> Deriver::ClaimHolder(const Stage& s) {
  const std::string id = ClaimId(s);
  absl::StatusOr<std::optional<Document>> doc = couch_.GetIfExists(
      LocalDocPath(s.target, id), absl::StrCat("reading the claim _local/", id, " of ", s.target));
  if (!doc.ok()) return doc.status();
  if (!doc->has_value()) return std::nullopt;
  return Text(**doc, "name");
}

absl::Status Deriver::RefuseClaimOf(const Stage& s, const std::string& holder) const {
  const std::string id = ClaimId(s);
  return absl::FailedPreconditionError(absl::StrCat(
      s.source, " -> ", s.target, ": the instance named ", Printable(holder), " derives ",
      s.source, " into ", s.target, " (its claim: _local/", id, " in ", s.target,
      "); two instances of different names would write the same derived documents and sweep "
      "each other's rows of another version. Derive it into another target, or give this "
      "declaration the name ",
      Printable(holder), "; if that instance is gone for good (renamed), delete the claim and "
      "run again"));
}

absl::Status Deriver::ClaimStages() {
  // Every claim is read before any is written: a run refused at its second stage left a claim
  // in its name on the first, which then refused the instance it had been told to become.
  std::vector<const Stage*> unclaimed;
  for (const Stage& s : declaration_.stages) {
    absl::StatusOr<std::optional<std::string>> holder = ClaimHolder(s);
    if (!holder.ok()) return holder.status();
    if (!holder->has_value()) {
      unclaimed.push_back(&s);
    } else if (**holder != declaration_.name) {
      return RefuseClaimOf(s, **holder);
    }
  }
  for (const Stage* s : unclaimed) {
    const std::string id = ClaimId(*s);
    Document claim(rapidjson::kObjectType);
    auto& a = claim.GetAllocator();
    claim.AddMember("name", couchdb::StringValue(declaration_.name, a), a);
    claim.AddMember("created_at_ms", absl::ToUnixMillis(absl::Now()), a);
    absl::StatusOr<Document> written =
        FencedWrite("PUT", LocalDocPath(s->target, id), couchdb::ToJson(claim),
                    absl::StrCat("writing the claim _local/", id, " of ", s->target));
    if (written.ok()) continue;
    if (!absl::IsAborted(written.status())) return written.status();
    // Another instance claimed it meanwhile: its name decides.
    absl::StatusOr<std::optional<std::string>> holder = ClaimHolder(*s);
    if (!holder.ok()) return holder.status();
    if (holder->has_value() && **holder != declaration_.name) return RefuseClaimOf(*s, **holder);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Deriver::NoMarker(const std::string& source, const absl::Status& why) {
  // Only a refusal (HTTP 4xx: 401 or 403 of read-only credentials, a proxy that refuses
  // _local) costs the marker, for the whole run; anything else is the run's own error: the
  // lease lost, CouchDB out of reach, or a 5xx that a later try may not meet. (A 5xx taken for
  // "no marker" fell back to the sequence, which on a cluster can read lower than a checkpoint
  // of the same database, and all derived rows were swept.)
  const std::optional<int> http = couchdb::HttpStatusOf(why);
  const bool refused = http.has_value() && *http >= 400 && *http < 500;
  if (!refused || IsLeaseLost(why)) return why;
  log_ << "cnp derive: " << source << ": warning: no marker _local/" << kSourceMarkerId << " in " << source << " ("
       << Printable(couchdb::RedactCredentials(why.message()))
       << "), so a deletion and re-creation of the database is noticed only by its sequence going back; "
          "give the credentials write access to "
       << source << " to have it noticed always\n";
  source_markers_[source] = {"", false};
  return std::string();
}

std::optional<std::string> Deriver::Recreated(size_t i, const Document& d, const std::string& marker,
                                              bool marker_written) {
  const Stage& s = declaration_.stages[i];
  const std::string recorded = Text(d, "source_id");
  if (!recorded.empty() && !marker.empty() && recorded != marker) {
    return absl::StrCat(marker_written ? absl::StrCat("its marker _local/", kSourceMarkerId, " is gone")
                                       : absl::StrCat("its marker _local/", kSourceMarkerId, " is another's"),
                        ": the checkpoint was taken from database ", recorded, ", not ", marker);
  }
  if (!recorded.empty() && !marker.empty()) return std::nullopt;  // the same database
  // No marker to go by (a checkpoint of an earlier release, or a source that cannot be
  // written): a sequence below the checkpoint's is a new database's.
  const Value* seq = Member(d, "seq");
  const int64_t checkpointed = seq ? SeqNumber(SeqText(*seq)) : -1;
  if (checkpointed <= 0) return std::nullopt;
  absl::StatusOr<Document> info = couch_.Get(DbPath(s.source), absl::StrCat("reading database ", s.source));
  if (!info.ok()) return std::nullopt;  // asked again by the reads to come, which fail then
  const Value* update_seq = Member(*info, "update_seq");
  const int64_t now = update_seq ? SeqNumber(SeqText(*update_seq)) : -1;
  if (now < 0 || now >= checkpointed) return std::nullopt;
  return absl::StrCat("its sequence ", now, " is below the checkpoint's ", checkpointed);
}

absl::Status Deriver::WarnUndeclaredRows(const std::string& target, const std::set<std::string>& sources) {
  // Derived ids are "<source>:<hex>..." and a database name starts with a lowercase letter:
  // from "a" (past _design/ documents), one prefix after another; a bounded look.
  std::string start = "a";
  for (int asked = 0; asked < 100; ++asked) {
    absl::StatusOr<Document> page =
        couch_.Get(absl::StrCat(DbPath(target), "/_all_docs?limit=1&startkey=", QueryString(start), "&include_docs=true"),
                   absl::StrCat("reading derived documents of ", target));
    if (!page.ok()) return page.status();
    const Value* rows = Member(*page, "rows");
    if (rows == nullptr || !rows->IsArray() || rows->Empty()) return absl::OkStatus();
    const Value& row = (*rows)[0];
    const std::string id = Text(row, "id");
    const size_t colon = id.find(':');
    if (colon == std::string::npos) {
      start = id;
      start.push_back('\0');
      continue;
    }
    const std::string prefix = id.substr(0, colon);
    start = absl::StrCat(prefix, ":\xef\xbf\xb0");
    const Value* doc = Member(row, "doc");
    // Only documents cnp derive wrote: their mr_source_type is the prefix.
    if (doc == nullptr || Text(*doc, "mr_source_type") != prefix || sources.count(prefix) > 0) continue;
    // Without this instance's checkpoint for it, the rows are another instance's (a target may
    // be shared), or of a name no longer run: not for this one to advise deleting.
    const std::string checkpoint = LocalDocPath(target, absl::StrCat("cnp-derive:", declaration_.name, ":source:", prefix));
    absl::StatusOr<std::optional<Document>> ours =
        couch_.GetIfExists(checkpoint, absl::StrCat("reading the checkpoints of ", target));
    if (!ours.ok()) return ours.status();
    if (!ours->has_value()) {
      log_ << "cnp derive: " << target << ": note: it holds documents derived from " << prefix
           << ", which this declaration (" << declaration_.name << ") does not name as a source of " << target
           << ": another instance's, or an earlier one's; a reduce or join over " << target
           << " counts them too\n";
      continue;
    }
    log_ << "cnp derive: " << target << ": warning: it holds documents derived from " << prefix
         << ", which the declaration no longer names as a source of " << target
         << ": they stay, and a reduce or join over " << target << " still counts them; to remove them, "
         << "delete the documents of " << target << " whose ids start with \"" << prefix
         << ":\" (and _local/cnp-derive:" << declaration_.name << ":source:" << prefix
         << " and the claim _local/" << kClaimPrefix << prefix
         << "), or declare the source again\n";
  }
  return absl::OkStatus();
}

absl::Status Deriver::Start() {
  std::set<std::string> targets, sources;
  for (const Stage& s : declaration_.stages) {
    targets.insert(s.target);
    if (!s.reduce) sources.insert(s.source);
  }
  for (const std::string& source : sources) {
    absl::StatusOr<std::optional<Document>> info =
        couch_.GetIfExists(DbPath(source), absl::StrCat("reading source database ", source));
    if (!info.ok()) return info.status();
    if (!info->has_value()) {
      return absl::NotFoundError(absl::StrCat("source database ", source, " does not exist at ",
                                              couch_.base_url()));
    }
  }
  for (const std::string& target : targets) {
    if (absl::Status s = couch_.EnsureDatabase(target); !s.ok()) return s;
    std::set<std::string> declared;
    for (const Stage& s : declaration_.stages) {
      if (s.target == target) declared.insert(s.source);
    }
    if (absl::Status s = WarnUndeclaredRows(target, declared); !s.ok()) return s;
  }
  if (absl::Status claimed = ClaimStages(); !claimed.ok()) return claimed;
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    if (s.reduce) {
      // Reduce stages read a key's rows of the map target with _find; CouchDB needs an index
      // on mr_key for that not to scan the whole database.
      absl::StatusOr<Document> index = couch_.Post(
          absl::StrCat(DbPath(s.source), "/_index"),
          R"({"index":{"fields":["mr_key"]},"ddoc":"cnp-derive-mr-key","name":"mr-key","type":"json"})",
          absl::StrCat("creating the mr_key index of ", s.source));
      if (!index.ok()) return index.status();
    }
    absl::StatusOr<std::optional<Document>> doc = couch_.GetIfExists(
        LocalDocPath(s.target, CheckpointId(declaration_.name, s)), "reading a checkpoint");
    if (!doc.ok()) return doc.status();
    StageProgress& p = progress_[i];
    Checkpoint& c = checkpoints_[i];
    absl::StatusOr<std::string> marker = SourceMarker(s.source);
    if (!marker.ok()) return marker.status();
    const bool marker_written = source_markers_[s.source].second;
    std::optional<std::string> old_id = OldCheckpointId(declaration_.name, s);
    if (!doc->has_value() && old_id.has_value()) {
      doc = couch_.GetIfExists(LocalDocPath(s.target, *old_id), "reading a checkpoint at its earlier id");
      if (!doc.ok()) return doc.status();
      if (doc->has_value()) {
        c.old_rev = Text(**doc, "_rev");
        log_ << "cnp derive: " << s.source << " -> " << s.target << ": resuming from the checkpoint _local/"
             << *old_id << " of an earlier release; it moves to _local/" << CheckpointId(declaration_.name, s)
             << "\n";
      }
    }
    if (!doc->has_value()) {
      p.seq = "0";
      // Derived documents left by an earlier run that lost its checkpoint are swept once
      // caught up; an empty prefix (the usual first run) needs no sweep.
      std::string prefix = absl::StrCat(s.source, ":");
      absl::StatusOr<Document> any = couch_.Get(
          absl::StrCat(DbPath(s.target), "/_all_docs?limit=1&", RangeQuery(prefix)),
          absl::StrCat("reading derived documents of ", s.target));
      if (!any.ok()) return any.status();
      const Value* rows = Member(*any, "rows");
      c.sweep = rows != nullptr && rows->IsArray() && !rows->Empty();
      c.fresh = !c.sweep;
    } else {
      const Document& d = **doc;
      if (c.old_rev.empty()) c.rev = Text(d, "_rev");  // the new id's is written without one
      c.source_id = Text(d, "source_id");
      const Value* version = Member(d, "version");
      const Value* seq = Member(d, "seq");
      const Value* sweep = Member(d, "sweep");
      int64_t old_version = version && version->IsInt64() ? version->GetInt64() : -1;
      if (std::optional<std::string> why = Recreated(i, d, *marker, marker_written); why.has_value()) {
        // What was derived from the earlier database is of documents it held: none of it is
        // known to hold now, and a new database's sequences start below the checkpoint. Its
        // rows go first (all versions; a reduce stage after it sees their keys go), then the
        // stage runs over the source from the start, as a first synchronization.
        log_ << "cnp derive: " << s.source << " -> " << s.target << ": " << s.source
             << " was deleted and created again since the checkpoint (" << *why << "): removing what was "
             << "derived from the earlier database and re-running over " << s.source << " from the start\n";
        if (absl::StatusOr<int64_t> refused = Sweep(i, /*every_version=*/true); !refused.ok()) {
          return refused.status();
        }
        // Rows whose removal the target refused stay, each recorded here: no later sweep looks
        // for rows of the earlier database.
        if (absl::Status st = FlushErrors(); !st.ok()) return st;
        p.seq = "0";
        p.rerun = true;
        c.sweep = false;
        c.fresh = true;
        if (!marker->empty()) c.source_id = *marker;
        if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
        p.seq_before = p.seq;
        continue;
      }
      if (old_version != s.version) {
        log_ << "cnp derive: " << s.source << " -> " << s.target << ": version " << old_version
             << " -> " << s.version << ", re-running over " << s.source
             << " from the start; documents of other versions will be removed\n";
        p.seq = "0";
        c.sweep = true;
        p.rerun = true;
        // Saved before a row is written, as for a re-created source: saved only with the first
        // batch's, a run stopped in between left rows of this version under a checkpoint of
        // the other, which a run of that version (taking turns in a rolling deploy) resumed
        // from, keeping them, or swept away once it had written its own.
        if (!marker->empty()) c.source_id = *marker;
        if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
        p.seq_before = p.seq;
        continue;
      } else {
        p.seq = seq ? SeqText(*seq) : "0";
        c.sweep = sweep && sweep->IsBool() && sweep->GetBool();
        // qvarn-mr's rule: the version, not the handler, says when to re-run. A handler or
        // type changed without a bump goes on from the checkpoint, so say what that leaves.
        const std::string old_handler = Text(d, "handler");
        const std::string old_type = Text(d, "type");
        const std::string type = s.reduce ? "reduce" : "map";
        const bool handler_changed = !old_handler.empty() && old_handler != s.handler;
        const bool type_changed = !old_type.empty() && old_type != type;
        if (handler_changed || type_changed) {
          log_ << "cnp derive: " << s.source << " -> " << s.target << ": warning: the "
               << (handler_changed ? absl::StrCat("handler changed (", Printable(old_handler), " -> ",
                                                  Printable(s.handler), ")")
                                   : "")
               << (handler_changed && type_changed ? " and the " : "")
               << (type_changed ? absl::StrCat("type changed (", old_type, " -> ", type, ")") : "")
               << " but the version is still " << s.version
               << ": going on from the checkpoint, so the documents derived so far stay as the "
                  "old handler made them; bump the version to re-run over "
               << s.source << " from the start\n";
        }
      }
    }
    const bool adopt = doc->has_value() && c.source_id.empty() && !marker->empty();
    if (!marker->empty()) c.source_id = *marker;
    p.seq_before = p.seq;
    // A checkpoint that names no source (an earlier release's) names it from now on, so that a
    // re-creation is noticed by the marker, not only by a sequence that went back.
    if (adopt) {
      if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Deriver::CatchUp() {
  int64_t total = 0;
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    // A stage fed by a continuous feed takes what is queued, not what keeps arriving: a source
    // that never stops changing must not starve the stages after it.
    const bool fed = i < feeds_.size() && feeds_[i] != nullptr;
    if (!fed && !declaration_.stages[i].reduce && prefetch_ != nullptr) {
      absl::StatusOr<int64_t> n = RunPipelined(i);
      if (!n.ok()) return n.status();
      total += *n;
    } else {
      for (int batches = 0; !fed || batches < 4; ++batches) {
        absl::StatusOr<int64_t> n = RunBatch(i);
        if (!n.ok()) return n.status();
        if (*n == 0) break;
        total += *n;
      }
    }
    Report(i, /*force=*/true);
  }
  return total;
}

absl::StatusOr<std::unique_ptr<Deriver::Batch>> Deriver::ReadBatch(size_t i, const std::string& since, int limit,
                                                                   CouchDb& couch) const {
  const Stage& s = declaration_.stages[i];
  auto batch = std::make_unique<Batch>();
  batch->limit = limit;
  batch->next_limit = limit;
  if (i < feeds_.size() && feeds_[i] != nullptr) {
    if (feeds_[i]->queued() == 0) {
      // What was queued before a refusal is handled first; then the refusal ends the run.
      if (absl::Status failure = feeds_[i]->failure(); !failure.ok()) return failure;
    }
    batch->limit = options_.batch_size;
    batch->changes = feeds_[i]->Take(static_cast<size_t>(options_.batch_size), kMaxCallBytes);
  } else {
    absl::StatusOr<ChangesAnswer> changes = ReadChanges(i, since, batch->next_limit, couch, batch->limit);
    if (!changes.ok()) return changes.status();
    batch->changes = *std::move(changes);
  }
  const Value* results = Member(batch->changes.json, "results");
  const Value* last_seq = Member(batch->changes.json, "last_seq");
  if (results == nullptr || !results->IsArray() || last_seq == nullptr) {
    return absl::UnknownError(absl::StrCat("the _changes answer of ", s.source, " has no results or last_seq"));
  }
  // Changes read from a position that they do not move on from would be read again from it,
  // and again (a run with --once never ended): CouchDB's last_seq is past every change it gives.
  const bool from_feed = i < feeds_.size() && feeds_[i] != nullptr;
  if (!from_feed && !results->Empty() && SeqText(*last_seq) == since) {
    return absl::UnknownError(absl::StrCat(
        "the _changes answer of ", s.source, " gave ", results->Size(),
        " change(s) but its last_seq is the position they were read from (",
        Printable(since.substr(0, 40)), "): reading on would read them again forever; is the "
        "URL a CouchDB?"));
  }
  if (const Value* pending = Member(batch->changes.json, "pending"); pending && pending->IsInt64()) {
    batch->pending = pending->GetInt64();
  }
  batch->size = results->Size();
  batch->last_seq = SeqText(*last_seq);
  // A document listed more than once (a continuous feed brings a create and an update of it
  // in one batch; a clustered CouchDB may list a document twice) counts once, as its last
  // change: the rows of an earlier version would be kept beside the last one's, and two writes
  // of one row with one _rev conflict.
  std::set<std::string> later;  // ids of changes after the one looked at
  std::vector<bool> superseded(results->Size(), false);
  for (rapidjson::SizeType r = results->Size(); r-- > 0;) {
    superseded[r] = !later.insert(Text((*results)[r], "id")).second;
  }
  for (rapidjson::SizeType r = 0; r < results->Size(); ++r) {
    const Value& change = (*results)[r];
    std::string id = Text(change, "id");
    if (IsDesign(id) || superseded[r]) continue;
    if (Member(change, kUnreadableMember) != nullptr) {
      // Read neither now nor ever (the same change would fail again): recorded and passed.
      batch->failures.push_back({id, kUnreadableType,
                                 absl::StrCat("cnp derive could not read this change, so its document was not "
                                              "passed to the handler: ", Text(change, kUnreadableMember))});
      batch->failed.insert(id);
      continue;
    }
    // Asked with include_docs=true, CouchDB gives every change that is not a deletion its
    // document. One without it (a proxy, a server that is not CouchDB) would be taken for a
    // deletion below, and the document's rows removed until it next changes.
    const Value* deleted = Member(change, "deleted");
    const Value* doc = Member(change, "doc");
    if (!(deleted && deleted->IsBool() && deleted->GetBool()) &&
        (doc == nullptr || !doc->IsObject())) {
      return absl::DataLossError(absl::StrCat(
          "the change of ", Printable(id), " in ", declaration_.stages[i].source,
          "/_changes has no document, though it is not a deletion and the feed was asked for "
          "documents (include_docs=true): nothing of this batch is written or checkpointed; "
          "is the URL a CouchDB, or a proxy that rewrites its answers?"));
    }
    batch->results.push_back(&change);
    batch->doc_texts.push_back(batch->changes.DocText(r));
  }
  return batch;
}

absl::StatusOr<ChangesAnswer> Deriver::ReadChanges(size_t i, const std::string& since, int& limit,
                                              CouchDb& couch, int& asked) const {
  const Stage& s = declaration_.stages[i];
  const std::string what = absl::StrCat("reading the changes of ", s.source);
  const size_t max_bytes = static_cast<size_t>(std::max<int64_t>(0, couch.max_response_bytes()));
  while (true) {
    asked = limit;
    absl::StatusOr<std::string> body = couch.GetBody(ChangesPath(i, since, limit), what);
    std::string why;
    if (body.ok()) {
      const size_t size = body->size();
      absl::StatusOr<ChangesAnswer> changes = ParseChanges(*body);
      if (changes.ok()) {
        // Back towards the full batch size once an answer is well within the limit: a few large
        // documents must not make every later batch small.
        if (limit < options_.batch_size && size <= max_bytes / 4) {
          limit = std::min(options_.batch_size, limit * 2);
        }
        return changes;
      }
      why = std::string(changes.status().message());
    } else if (absl::IsResourceExhausted(body.status())) {
      why = absl::StrCat("the change with its document is longer than ", max_bytes,
                         " bytes, or holds more JSON values than one per 16 of them "
                         "(--max-couchdb-response-bytes)");
    } else {
      return body.status();
    }
    if (limit > 1) {
      limit /= 2;
      continue;
    }
    // One change, and it cannot be read: where it is and whose it is come before its document.
    absl::StatusOr<std::string> start =
        body.ok() ? std::move(body) : couch.GetStart(ChangesPath(i, since, 1), kChangeStartBytes, what);
    if (!start.ok()) return start.status();
    if (!body.ok() && start->size() < kChangeStartBytes) {
      // The whole answer this time: the change moved on (its document changed again since the
      // first read), and what comes first now is another change, to be read, not passed.
      if (absl::StatusOr<ChangesAnswer> changes = ParseChanges(*start); changes.ok()) return changes;
    }
    std::optional<ChangeHeader> header = ScanChangeHeader(*start, ChangeText::kFirstResult);
    if (!header.has_value()) {
      return absl::UnknownError(absl::StrCat(what, " at ", couch.base_url(), ": the change after seq ", since,
                                             " cannot be read (", why, ") and its seq and id cannot be found"));
    }
    std::string alone =
        absl::StrCat("{\"results\":[", UnreadableChangeJson(*header, why), "],\"last_seq\":", header->seq_json, "}");
    absl::StatusOr<ChangesAnswer> changes = ParseChanges(alone);
    limit = std::min(options_.batch_size, 2);
    return changes;
  }
}

absl::StatusOr<bool> Deriver::CaughtUp(size_t i, const Batch& batch) {
  StageProgress& p = progress_[i];
  if (i < feeds_.size() && feeds_[i] != nullptr) {
    p.backlog = static_cast<int64_t>(feeds_[i]->queued());
  } else if (batch.pending >= 0) {
    p.backlog = batch.pending;
  }
  if (batch.size > 0) return false;
  p.backlog = 0;
  // A run over the whole source that derived nothing is most likely a handler that reads a
  // field the documents do not have (item("twn")): it printed "0 written" and exited 0, an
  // empty target looking like success (a CLI probe).
  const Stage& s = declaration_.stages[i];
  if (!s.reduce && !p.said_no_rows && p.seq_before == "0" && p.processed > 0 && p.rows == 0 &&
      p.errors == 0) {
    p.said_no_rows = true;
    log_ << "cnp derive: " << s.source << " -> " << s.target << ": warning: "
         << Printable(s.handler) << " yielded no row for any of the " << p.processed
         << " change(s) read from the start of " << s.source
         << ", so nothing was derived; if it should have, see what it yields for one document: "
            "cnp map '"
         << Printable(s.handler) << "' DOC.json\n";
  }
  // The initial synchronization is over: from now on a document at its first revision may
  // come after rows of it were written (a document listed twice), so rows are looked up.
  checkpoints_[i].fresh = false;
  Checkpoint& c = checkpoints_[i];
  const bool swept = c.sweep;
  if (swept) {
    absl::StatusOr<int64_t> refused = Sweep(i);
    if (!refused.ok()) return refused.status();
    c.sweep = false;
    // A row whose removal the target refused (its validate_doc_update, say) stays: its error is
    // recorded now (no batch may follow to do it), and the next run sweeps again.
    c.sweep_next_run = *refused > 0;
    if (absl::Status st = FlushErrors(); !st.ok()) return st;
  }
  // A checkpoint still at its earlier id moves now: a quiet source may bring no batch for long.
  if (swept || !c.old_rev.empty()) {
    if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
  }
  return true;
}

absl::Status Deriver::Complete(size_t i, const Batch& batch, int64_t written) {
  StageProgress& p = progress_[i];
  p.written += written;
  p.processed += static_cast<int64_t>(batch.size);
  for (const auto& [id, rows] : batch.desired) p.rows += static_cast<int64_t>(rows.size());
  p.seq = batch.last_seq;
  // The errors first: a checkpoint past a document whose error is not yet recorded would lose
  // it if the run stopped in between (recorded twice, if it stops after the errors, is better).
  if (absl::Status st = FlushErrors(); !st.ok()) return st;
  if (absl::Status st = SaveCheckpoint(i); !st.ok()) return st;
  if (options_.batch_done) options_.batch_done();
  Report(i, false);
  if (!options_.status_holder.empty() && absl::Now() - status_written_ >= options_.status_every) {
    if (absl::Status st = WriteStatus(options_.status_holder); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Deriver::RunBatch(size_t i) {
  const Stage& s = declaration_.stages[i];
  StageProgress& p = progress_[i];
  if (Stopping()) return StoppedStatus();
  absl::StatusOr<bool> allowed = may_write_();
  if (!allowed.ok()) return allowed.status();
  if (!*allowed) return LeaseLostError("the lease was lost");
  const absl::Time started = absl::Now();
  p.busy_since = started;
  absl::StatusOr<std::unique_ptr<Batch>> batch = ReadBatch(i, p.seq, read_limits_[i], couch_);
  // However the batch ends, its time is the stage's.
  absl::Cleanup busy = [&p, started] {
    p.busy += absl::Now() - started;
    p.busy_since = absl::InfinitePast();
  };
  if (!batch.ok()) return batch.status();
  read_limits_[i] = (*batch)->next_limit;
  absl::StatusOr<bool> done = CaughtUp(i, **batch);
  if (!done.ok()) return done.status();
  if (*done) return 0;
  absl::StatusOr<int64_t> written;
  if (s.reduce) {
    written = ReduceBatch(i, **batch);
  } else if (absl::Status mapped = MapRows(i, **batch); !mapped.ok()) {
    written = mapped;
  } else {
    written = WriteMapRows(i, **batch);
  }
  if (!written.ok()) return written.status();
  if (absl::Status st = Complete(i, **batch, *written); !st.ok()) return st;
  return static_cast<int64_t>((*batch)->size);
}

absl::StatusOr<int64_t> Deriver::RunPipelined(size_t i) {
  // Three things overlap: the next batch is read (on the second connection) and mapped by the
  // service on a helper thread while this one's rows are looked up, written and checkpointed
  // here. Writes stay in order: a batch is written only after the one before it, so a
  // document that changed again later is seen by its second batch as the first one left it.
  StageProgress& p = progress_[i];
  auto read_and_map = [this, i](std::string since, int limit, CouchDb* couch) -> absl::StatusOr<std::unique_ptr<Batch>> {
    absl::StatusOr<std::unique_ptr<Batch>> batch = ReadBatch(i, since, limit, *couch);
    if (batch.ok() && (*batch)->size > 0) {
      if (absl::Status mapped = MapRows(i, **batch); !mapped.ok()) return mapped;
    }
    return batch;
  };
  const absl::Time started = absl::Now();
  p.busy_since = started;
  int64_t total = 0;
  absl::StatusOr<std::unique_ptr<Batch>> current = read_and_map(p.seq, read_limits_[i], &couch_);
  absl::Status failed;
  while (true) {
    if (!current.ok()) {
      failed = current.status();
      break;
    }
    Batch& batch = **current;
    read_limits_[i] = batch.next_limit;
    absl::StatusOr<bool> done = CaughtUp(i, batch);
    if (!done.ok() || *done) {
      failed = done.status();
      break;
    }
    absl::StatusOr<bool> allowed = may_write_();
    if (!allowed.ok() || !*allowed) {
      failed = allowed.ok() ? LeaseLostError("the lease was lost") : allowed.status();
      break;
    }
    // Asked to stop: this batch is written, no next one begun.
    bool stopping = Stopping();
    std::future<absl::StatusOr<std::unique_ptr<Batch>>> next;
    if (!stopping && batch.size >= static_cast<size_t>(batch.limit)) {
      next = std::async(std::launch::async, read_and_map, batch.last_seq, batch.next_limit, prefetch_);
    }
    absl::StatusOr<int64_t> written = WriteMapRows(i, batch);
    absl::Status completed = written.ok() ? Complete(i, batch, *written) : written.status();
    if (!completed.ok()) {
      if (next.valid()) next.wait();  // it uses this object; let it finish first
      failed = completed;
      break;
    }
    total += static_cast<int64_t>(batch.size);
    if (stopping || Stopping()) {
      if (next.valid()) next.wait();  // it uses this object; its batch is the next run's
      failed = StoppedStatus();
      break;
    }
    current = next.valid() ? next.get() : read_and_map(p.seq, read_limits_[i], &couch_);
  }
  p.busy += absl::Now() - started;
  p.busy_since = absl::InfinitePast();
  if (!failed.ok()) return failed;
  return total;
}

bool Deriver::Stopping() const { return options_.stopping && options_.stopping(); }

absl::Status Deriver::StoppedStatus() {
  return absl::CancelledError("stopped: the batches begun were written and checkpointed");
}

std::string Deriver::ChangesPath(size_t i, const std::string& since, int limit) const {
  // seq_interval as the limit: a change read alone (one that cannot be read in a batch) comes
  // with its own seq, which is where the stage goes on after it.
  return absl::StrCat(DbPath(declaration_.stages[i].source), "/_changes?since=",
                      couchdb::CouchClient::EscapeSegment(since), "&limit=", limit,
                      "&include_docs=true&seq_interval=", limit, "&style=all_docs");
}

void Deriver::Report(size_t i, bool force) {
  absl::Time now = absl::Now();
  StageProgress& p = progress_[i];
  if (p.processed == reported_processed_[i]) return;
  if (!force && now - last_report_[i] < absl::Seconds(1)) return;
  last_report_[i] = now;
  reported_processed_[i] = p.processed;
  const Stage& s = declaration_.stages[i];
  if (p.backlog != 0) {
    absl::StatusOr<Document> info = couch_.Get(DbPath(s.source), "reading a source's update_seq");
    if (info.ok()) {
      if (const Value* update_seq = Member(*info, "update_seq")) {
        int64_t end = SeqNumber(SeqText(*update_seq)), at = SeqNumber(p.seq);
        p.source_end = end;
        if (end >= 0 && at >= 0) p.backlog = std::max<int64_t>(0, end - at);
      }
    }
  }
  double seconds = absl::ToDoubleSeconds(p.BusyAt(now));
  log_ << absl::StrFormat("cnp derive: %s -> %s: seq %s, %d change(s) (%.0f/s), %d written, backlog %s%s\n",
                          s.source, s.target, Printable(p.seq.substr(0, 24)), p.processed,
                          seconds > 0 ? p.processed / seconds : 0.0, p.written,
                          p.backlog < 0 ? "unknown" : absl::StrCat(p.backlog),
                          p.errors > 0 ? absl::StrCat(", ", p.errors, " document error(s)") : "");
  log_.flush();
}

absl::Status Deriver::WriteStatus(const std::string& holder) {
  std::string path = LocalDocPath(home_, absl::StrCat("cnp-derive:", declaration_.name, ":status"));
  Document doc(rapidjson::kObjectType);
  auto& a = doc.GetAllocator();
  if (status_rev_.empty()) {
    absl::StatusOr<std::optional<Document>> current = couch_.GetIfExists(path, "reading the status document");
    if (!current.ok()) return current.status();
    if (current->has_value()) status_rev_ = Text(**current, "_rev");
  }
  if (!status_rev_.empty()) doc.AddMember("_rev", couchdb::StringValue(status_rev_, a), a);
  doc.AddMember("holder", couchdb::StringValue(holder, a), a);
  doc.AddMember("updated_at_ms", absl::ToUnixMillis(absl::Now()), a);
  Value stages(rapidjson::kArrayType);
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    const StageProgress& p = progress_[i];
    // The backlog as of the sequence reached, not as of the last report (up to a second and
    // many batches ago: written at a stop, it added up to more changes than the source had).
    // The source's end is the one last read; no request is made here, a stop's included. The
    // progress keeps its own (a report reads the end again while it is not 0).
    int64_t backlog = p.backlog;
    if (const int64_t at = SeqNumber(p.seq); backlog > 0 && p.source_end >= 0 && at >= 0) {
      backlog = std::max<int64_t>(0, p.source_end - at);
    }
    double seconds = absl::ToDoubleSeconds(p.BusyAt(absl::Now()));
    Value st(rapidjson::kObjectType);
    st.AddMember("target", couchdb::StringValue(s.target, a), a);
    st.AddMember("source", couchdb::StringValue(s.source, a), a);
    st.AddMember("type", rapidjson::StringRef(s.reduce ? "reduce" : "map"), a);
    st.AddMember("version", s.version, a);
    st.AddMember("seq", couchdb::StringValue(p.seq, a), a);
    st.AddMember("backlog", backlog, a);
    st.AddMember("processed", p.processed, a);
    st.AddMember("written", p.written, a);
    st.AddMember("errors", p.errors, a);
    st.AddMember("docs_per_s", seconds > 0 ? p.processed / seconds : 0.0, a);
    if (i < feeds_.size() && feeds_[i] != nullptr) {
      // A count that keeps growing says the feed is unstable (a proxy's timeout, a flaky link).
      st.AddMember("feed_reconnections", feeds_[i]->reconnections(), a);
    }
    stages.PushBack(st, a);
  }
  doc.AddMember("stages", stages, a);
  absl::StatusOr<Document> answer = FencedWrite("PUT", path, couchdb::ToJson(doc), "writing the status document");
  if (absl::IsAborted(answer.status())) {
    status_rev_.clear();  // another instance wrote it; next time we read its revision
    return absl::OkStatus();
  }
  if (!answer.ok()) return answer.status();
  status_rev_ = Text(*answer, "rev");
  status_written_ = absl::Now();
  return absl::OkStatus();
}

void Deriver::StartFeeds() {
  feeds_.resize(declaration_.stages.size());
  ChangesFeed::Options options;
  options.heartbeat = options_.heartbeat;
  // Two batches' worth: one being taken while the next arrives.
  options.max_queued = static_cast<size_t>(options_.batch_size) * 2;
  options.max_line_bytes = static_cast<size_t>(std::max<int64_t>(1, options_.continuous_feed->max_response_bytes));
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    // Reduce stages read their map target, which changes only through this instance's map
    // stages: the batch reads after those are enough.
    if (s.reduce) continue;
    feeds_[i] = std::make_unique<ChangesFeed>(*options_.continuous_feed, s.source, progress_[i].seq,
                                              options, feed_signal_);
    log_ << "cnp derive: " << s.source << " -> " << s.target << ": following the changes from seq "
         << Printable(progress_[i].seq.substr(0, 24)) << " (feed=continuous, heartbeat "
         << absl::FormatDuration(options_.heartbeat) << ")\n";
  }
  log_.flush();
}

void Deriver::PrintFeedNotes() {
  for (auto& feed : feeds_) {
    if (!feed) continue;
    for (const std::string& note : feed->TakeNotes()) {
      log_ << "cnp derive: " << Printable(note) << "\n";
    }
  }
  log_.flush();
}

absl::Status Deriver::CheckSourcesIfDue() {
  if (absl::Now() - sources_checked_ < options_.source_check_every) return absl::OkStatus();
  sources_checked_ = absl::Now();
  // A handler's code deployed with another @version ends the run now, not when some worker
  // happens to import it anew.
  if (absl::Status versions = CheckHandlerVersionsOnDisk(declaration_, cnp_, options_.rpc_timeout);
      !versions.ok()) {
    return versions;
  }
  std::set<std::string> sources;
  for (const Stage& s : declaration_.stages) {
    if (!s.reduce) sources.insert(s.source);
  }
  for (const std::string& source : sources) {
    absl::StatusOr<std::optional<Document>> info =
        couch_.GetIfExists(DbPath(source), absl::StrCat("reading database ", source));
    if (!info.ok()) return info.status();  // CouchDB away: waited out as for any read
    // Missing at two checks in a row: a database reset by a DELETE and a PUT is missing for a
    // moment, and then is one created again.
    if (!info->has_value()) {
      if (sources_missing_.insert(source).second) continue;
      return absl::NotFoundError(absl::StrCat(
          "source database ", source, " no longer exists (deleted while it was followed)"));
    }
    sources_missing_.erase(source);
    const auto known = source_markers_.find(source);
    // No marker (the credentials could not write it): a re-creation is found by its sequence
    // at the start of the next run, as Start does.
    if (known == source_markers_.end() || known->second.first.empty()) continue;
    const std::string path = LocalDocPath(source, kSourceMarkerId);
    absl::StatusOr<std::optional<Document>> marker =
        couch_.GetIfExists(path, absl::StrCat("reading the marker _local/", kSourceMarkerId, " of ", source));
    if (!marker.ok()) return marker.status();
    if (!marker->has_value()) {
      // Gone with its database, deleted since the GET above? Told at the next check then.
      absl::StatusOr<std::optional<Document>> again =
          couch_.GetIfExists(DbPath(source), absl::StrCat("reading database ", source));
      if (!again.ok()) return again.status();
      if (!again->has_value()) {
        sources_missing_.insert(source);
        continue;
      }
    }
    const std::string now = marker->has_value() ? Text(**marker, "id") : std::string();
    if (now != known->second.first) {
      return SourceRecreatedError(absl::StrCat(
          "source database ", source, " was deleted and created again while it was followed (its marker _local/",
          kSourceMarkerId, " is ", now.empty() ? "gone" : "another's", "): starting over from the checkpoints"));
    }
  }
  return absl::OkStatus();
}

absl::Status Deriver::WaitForChanges(absl::Duration max_wait) {
  if (!options_.continuous_feed.has_value()) return WaitOnLongpolls(max_wait);
  if (feeds_.empty()) StartFeeds();
  // A feed the server refused for good ends the run once what it queued has been handled.
  auto refused = [this]() -> absl::Status {
    for (auto& feed : feeds_) {
      if (feed && feed->queued() == 0) {
        if (absl::Status failure = feed->failure(); !failure.ok()) return failure;
      }
    }
    return absl::OkStatus();
  };
  const int64_t seen = feed_signal_.count();
  PrintFeedNotes();
  for (auto& feed : feeds_) {
    if (feed && feed->queued() > 0) return absl::OkStatus();
  }
  if (absl::Status st = refused(); !st.ok()) return st;
  feed_signal_.WaitPast(seen, max_wait);
  PrintFeedNotes();
  return refused();
}

absl::Status Deriver::WaitOnLongpolls(absl::Duration max_wait) {
  // One longpoll per source database. Reduce stages are left out: their map targets change
  // only through this instance's own map stages, which the next CatchUp runs first.
  std::vector<size_t> stages;
  std::set<std::string> sources;
  for (size_t i = 0; i < declaration_.stages.size(); ++i) {
    const Stage& s = declaration_.stages[i];
    if (!s.reduce && sources.insert(s.source).second) stages.push_back(i);
  }
  absl::Duration each = max_wait / std::max<size_t>(1, stages.size());
  for (size_t i : stages) {
    const Stage& s = declaration_.stages[i];
    const absl::Time asked = absl::Now();
    // A longpoll that ends at once with nothing (a proxy that answers for CouchDB, a server
    // that resets the connection) is followed by a pause, up to a second, not by the next
    // request at once: a follower must not turn a broken server into a busy loop.
    const auto pause_if_quick = [&] {
      const absl::Duration left = std::min(each, absl::Seconds(1)) - (absl::Now() - asked);
      if (left > absl::ZeroDuration()) absl::SleepFor(left);
    };
    absl::StatusOr<std::optional<Document>> answer = couch_.GetOrTimeOut(
        absl::StrCat(DbPath(s.source), "/_changes?feed=longpoll&limit=1&since=",
                     couchdb::CouchClient::EscapeSegment(progress_[i].seq),
                     "&timeout=", absl::ToInt64Milliseconds(each)),
        each + absl::Milliseconds(250));
    if (!answer.ok()) return answer.status();
    const Value* results = answer->has_value() ? Member(**answer, "results") : nullptr;
    if (results && results->IsArray() && !results->Empty()) return absl::OkStatus();
    pause_if_quick();
  }
  return absl::OkStatus();
}

}  // namespace cnp::derive
