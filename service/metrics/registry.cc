#include "service/metrics/registry.h"

#include <algorithm>
#include <charconv>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/common/log.h"

namespace cnp::metrics {
namespace {

// Label values may hold anything a request carried: escape as the text format requires.
void AppendEscaped(absl::string_view value, std::string& out) {
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

// The shortest text that reads back as `v`: "0.1", not "0.10000000000000001".
std::string Number(double v) {
  char buffer[32];
  const std::to_chars_result r = std::to_chars(buffer, buffer + sizeof buffer, v);
  return std::string(buffer, r.ptr);
}

// "{a="x",b="y"" without the closing brace, so that a histogram can add "le".
std::string OpenLabels(const std::vector<std::string>& names,
                       const std::vector<std::string>& values) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "{" : ",", names[i], "=\"");
    AppendEscaped(values[i], out);
    out += '"';
  }
  return out;
}

std::string Closed(const std::string& open) { return open.empty() ? "" : open + "}"; }

}  // namespace

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), buckets_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // A duration or a size: a negative one (a clock stepped back) would take the sum down, which
  // Prometheus reads as a reset, and a NaN would make it NaN for good.
  if (!(value >= 0)) value = 0;
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

FamilyBase::FamilyBase(std::string name, std::string help, std::vector<std::string> label_names,
                       size_t max_series)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)),
      max_series_(std::max<size_t>(max_series, 1)) {
  Registry::Default().Add(this);
}

FamilyBase::~FamilyBase() { Registry::Default().Remove(this); }

void* FamilyBase::Find(const std::vector<std::string>& values) {
  bool first_overflow = false;
  void* series = nullptr;
  {
    absl::MutexLock lock(&mutex_);
    auto it = series_.find(values);
    if (it != series_.end()) return it->second.get();
    std::vector<std::string> key = values;
    if (series_.size() >= max_series_) {
      key.assign(values.size(), "other");
      first_overflow = !overflowed_;
      overflowed_ = true;
    }
    it = series_.find(key);
    if (it == series_.end()) it = series_.emplace(key, Make()).first;
    series = it->second.get();
  }
  // Once, so that an operator whose dashboard stops showing new names learns why from the log.
  if (first_overflow) {
    LogWarning("metric ", name_, " has ", max_series_,
               " series, its most: what new label values count from now on is counted under "
               "\"other\" (first one: ",
               absl::StrJoin(values, ","), ")");
  }
  return series;
}

void FamilyBase::Render(std::string& out) const {
  absl::StrAppend(&out, "# HELP ", name_, " ", help_, "\n# TYPE ", name_, " ", type(), "\n");
  absl::MutexLock lock(&mutex_);
  for (const auto& [values, series] : series_) {
    RenderSeries(OpenLabels(label_names_, values), series.get(), out);
  }
}

void RenderOne(const std::string& name, const std::string& labels, const Counter& c,
               std::string& out) {
  absl::StrAppend(&out, name, Closed(labels), " ", c.value(), "\n");
}

void RenderOne(const std::string& name, const std::string& labels, const Gauge& g,
               std::string& out) {
  absl::StrAppend(&out, name, Closed(labels), " ", g.value(), "\n");
}

void RenderOne(const std::string& name, const std::string& labels, const Histogram& h,
               std::string& out) {
  const std::string open = labels.empty() ? "{" : labels + ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= h.bounds().size(); ++i) {
    cumulative += h.bucket(i);
    const std::string le = i < h.bounds().size() ? Number(h.bounds()[i]) : "+Inf";
    absl::StrAppend(&out, name, "_bucket", open, "le=\"", le, "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&out, name, "_sum", Closed(labels), " ", Number(h.sum()), "\n");
  absl::StrAppend(&out, name, "_count", Closed(labels), " ", cumulative, "\n");
}

Registry& Registry::Default() {
  static Registry* registry = new Registry;
  return *registry;
}

void Registry::Add(FamilyBase* family) {
  absl::MutexLock lock(&mutex_);
  families_.push_back(family);
}

void Registry::Remove(const FamilyBase* family) {
  absl::MutexLock lock(&mutex_);
  families_.erase(std::remove(families_.begin(), families_.end(), family), families_.end());
}

std::string Registry::Render() const {
  std::string out;
  absl::MutexLock lock(&mutex_);
  for (const FamilyBase* family : families_) family->Render(out);
  return out;
}

}  // namespace cnp::metrics
