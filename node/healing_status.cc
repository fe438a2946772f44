// The self-healing paths in /_/status and /_/metrics: hint policy, lost-copy repair and
// the scrub. Kept apart from server.cc, which owns the rest of both documents.
#include "node/metrics.h"
#include "node/server.h"

namespace node {

nlohmann::json Server::healing_policy_json() {
  const HintConfig& c = hint_policy_->config();
  const HintCounters& n = hint_policy_->counters();
  return {{"window_ms", c.window_ms}, {"per_target_max", c.per_target_max},
          {"total_max", c.total_max}, {"deliveries_per_s", c.deliveries_per_s},
          {"dropped_cap", n.dropped_cap}, {"dropped_window", n.dropped_window}};
}

nlohmann::json Server::scrub_json() {
  const blobstore::Scrubber* s = store_->scrubber();
  if (s == nullptr) return {{"enabled", false}};
  blobstore::ScrubStats st = s->stats();
  return {{"enabled", true}, {"bytes_per_s", s->config().bytes_per_s},
          {"files_per_s", s->config().files_per_s}, {"files_verified", st.files_verified},
          {"bytes_verified", st.bytes_verified}, {"damaged", st.damaged}, {"passes", st.passes},
          {"read_errors", st.read_errors}, {"position", st.position}};
}

void Server::healing_metrics(std::string& out) {
  auto line = [&out](const char* name, const char* type, const char* help, double v) {
    metric_header(out, name, type, help);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += std::string(name) + " " + buf + "\n";
  };
  const HintCounters& h = hint_policy_->counters();
  metric_header(out, "ringstore_hints_dropped_total", "counter",
                "Hints not stored, by reason (left to anti-entropy).");
  out += "ringstore_hints_dropped_total{reason=\"cap\"} " + std::to_string(h.dropped_cap) + "\n";
  out += "ringstore_hints_dropped_total{reason=\"window\"} " + std::to_string(h.dropped_window) + "\n";
  metric_header(out, "ringstore_hints_pending_by_target", "gauge", "Hints waiting, per target.");
  for (const auto& t : hint_policy_->targets_json(*cluster_, clock_->wall_ms())) {
    out += "ringstore_hints_pending_by_target{target=\"" + t["id"].get<std::string>() + "\"} " +
           std::to_string(t["count"].get<std::uint64_t>()) + "\n";
  }
  const RepairCounters& r = repairer_->counters();
  metric_header(out, "ringstore_repair_total", "counter", "Lost copies handled, by outcome.");
  out += "ringstore_repair_total{outcome=\"fetched\"} " + std::to_string(r.fetched) + "\n";
  out += "ringstore_repair_total{outcome=\"rewritten\"} " + std::to_string(r.rewritten) + "\n";
  out += "ringstore_repair_total{outcome=\"already_good\"} " + std::to_string(r.already_good) + "\n";
  out += "ringstore_repair_total{outcome=\"unrecoverable\"} " + std::to_string(r.unrecoverable) + "\n";
  out += "ringstore_repair_total{outcome=\"error\"} " + std::to_string(r.errors) + "\n";
  out += "ringstore_repair_total{outcome=\"dropped\"} " + std::to_string(r.dropped) + "\n";
  line("ringstore_repair_pending", "gauge", "Lost copies waiting to be fetched.",
       static_cast<double>(repairer_->pending()));
  blobstore::ScrubStats st;
  if (const blobstore::Scrubber* s = store_->scrubber()) st = s->stats();
  line("ringstore_scrub_verified_files_total", "counter", "Blob files the scrub verified.",
       static_cast<double>(st.files_verified));
  line("ringstore_scrub_verified_bytes_total", "counter", "Blob bytes the scrub verified.",
       static_cast<double>(st.bytes_verified));
  line("ringstore_scrub_damaged_total", "counter", "Blob files the scrub found damaged.",
       static_cast<double>(st.damaged));
  line("ringstore_scrub_passes_total", "counter", "Full passes the scrub finished.",
       static_cast<double>(st.passes));
}

}  // namespace node
