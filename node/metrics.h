// Metrics counts what the node does, for /_/metrics in the Prometheus text format.
// Thread: the loop thread (the committer's figures are read from its atomics).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace node {

// A cumulative histogram with fixed bounds (seconds).
class Histogram {
 public:
  static constexpr std::array<double, 12> bounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                    0.05,   0.1,   0.25,   0.5,   1.0,  5.0};
  void observe(double seconds);
  // Appends name_bucket{labels,le=...}, name_sum, name_count lines. `labels` is
  // empty or like `method="GET"`.
  void write(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::uint64_t, bounds.size()> counts_{};
  std::uint64_t count_ = 0;
  double sum_ = 0;
};

struct Metrics {
  std::map<std::pair<std::string, int>, std::uint64_t> requests;  // (method, status)
  std::map<std::string, Histogram> latency;                        // per method
  std::uint64_t bytes_in = 0, bytes_out = 0;
  void on_response(const std::string& method, int status, double seconds);
};

// Appends one metric family's HELP and TYPE lines.
void metric_header(std::string& out, const char* name, const char* type, const char* help);

}  // namespace node
