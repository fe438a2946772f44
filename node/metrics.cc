#include "node/metrics.h"

#include <cstdio>

namespace node {

void Histogram::observe(double seconds) {
  for (std::size_t i = 0; i < bounds.size(); i++) {
    if (seconds <= bounds[i]) counts_[i]++;
  }
  count_++;
  sum_ += seconds;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& labels) const {
  std::string sep = labels.empty() ? "" : ",";
  char buf[64];
  for (std::size_t i = 0; i < bounds.size(); i++) {
    std::snprintf(buf, sizeof buf, "%g", bounds[i]);
    out += name + "_bucket{" + labels + sep + "le=\"" + buf + "\"} " + std::to_string(counts_[i]) + "\n";
  }
  out += name + "_bucket{" + labels + sep + "le=\"+Inf\"} " + std::to_string(count_) + "\n";
  std::snprintf(buf, sizeof buf, "%.9g", sum_);
  std::string l = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + l + " " + buf + "\n";
  out += name + "_count" + l + " " + std::to_string(count_) + "\n";
}

void Metrics::on_response(const std::string& method, int status, double seconds) {
  requests[{method, status}]++;
  latency[method].observe(seconds);
}

void metric_header(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace node
