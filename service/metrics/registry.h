// A small metrics registry: counters, gauges and histograms with labels, rendered in the
// Prometheus text exposition format (version 0.0.4). Updates are relaxed atomics on a series
// the caller looked up once and kept, so that counting costs nothing measurable on the hot
// paths; looking a series up takes a lock and is meant for start-up or for rare events.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace cnp::metrics {

class Counter {
 public:
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void Add(int64_t n) { value_.fetch_add(n, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, ascending; +Inf is implied.
  explicit Histogram(const std::vector<double>& bounds);
  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Not cumulative: bucket i counts observations in (bounds[i-1], bounds[i]]; the last is +Inf.
  uint64_t bucket(size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0};
};

// Seconds from 0.5 ms to 60 s: a call's latency, a task's wait in the queue.
std::vector<double> LatencyBuckets();

// One series in the text format; `labels` is "{a="x"" without its closing brace, or empty.
void RenderOne(const std::string& name, const std::string& labels, const Counter& c,
               std::string& out);
void RenderOne(const std::string& name, const std::string& labels, const Gauge& g,
               std::string& out);
void RenderOne(const std::string& name, const std::string& labels, const Histogram& h,
               std::string& out);

class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, std::vector<std::string> label_names,
             size_t max_series);
  // Leaves the registry (again: Family's destructor has): a family that goes away (a test's)
  // must not be rendered after it.
  virtual ~FamilyBase();
  void Render(std::string& out) const;

 protected:
  virtual const char* type() const = 0;
  virtual void RenderSeries(const std::string& labels, const void* series,
                            std::string& out) const = 0;
  // The series of `values`, made on first use. Past max_series distinct series, new label
  // values all land on one series whose values are "other": an unbounded set of names (functions
  // come from requests) must not grow the server's memory or the scrape without bound. The
  // first time that happens is logged.
  void* Find(const std::vector<std::string>& values);
  virtual std::unique_ptr<void, void (*)(void*)> Make() const = 0;

  const std::string name_;

 private:
  const std::string help_;
  const std::vector<std::string> label_names_;
  const size_t max_series_;
  mutable absl::Mutex mutex_;
  std::map<std::vector<std::string>, std::unique_ptr<void, void (*)(void*)>> series_
      ABSL_GUARDED_BY(mutex_);
  bool overflowed_ ABSL_GUARDED_BY(mutex_) = false;
};

template <class Metric>
class Family final : public FamilyBase {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds = {}, size_t max_series = 1000)
      : FamilyBase(std::move(name), std::move(help), std::move(label_names), max_series),
        bounds_(std::move(bounds)) {}
  // Leaves the registry before its own part goes: a scrape on another thread renders through
  // the overrides below, which must not run on a family half destroyed.
  ~Family() override;

  // The series stays valid as long as the family: keep the reference.
  Metric& Get(const std::vector<std::string>& values) {
    return *static_cast<Metric*>(Find(values));
  }

 private:
  const char* type() const override {
    if constexpr (std::is_same_v<Metric, Counter>) return "counter";
    if constexpr (std::is_same_v<Metric, Gauge>) return "gauge";
    return "histogram";
  }
  void RenderSeries(const std::string& labels, const void* series,
                    std::string& out) const override {
    RenderOne(name_, labels, *static_cast<const Metric*>(series), out);
  }
  std::unique_ptr<void, void (*)(void*)> Make() const override {
    void (*destroy)(void*) = [](void* p) { delete static_cast<Metric*>(p); };
    if constexpr (std::is_same_v<Metric, Histogram>) return {new Histogram(bounds_), destroy};
    else return {new Metric, destroy};
  }

  const std::vector<double> bounds_;
};

// Every family of the process, in the order they were made.
class Registry {
 public:
  static Registry& Default();
  void Add(FamilyBase* family);
  void Remove(const FamilyBase* family);
  std::string Render() const;

 private:
  mutable absl::Mutex mutex_;
  std::vector<FamilyBase*> families_ ABSL_GUARDED_BY(mutex_);
};

template <class Metric>
Family<Metric>::~Family() {
  Registry::Default().Remove(this);
}

}  // namespace cnp::metrics
