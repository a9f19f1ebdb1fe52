#include "ctl/stats_watch.hpp"

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace vp::ctl {

using nlohmann::json;

namespace {

const json& counters_of(const json& endpoint) {
  static const json kNone = json::object();
  auto s = endpoint.find("status");
  if (s == endpoint.end() || !s->is_object()) return kNone;
  auto c = s->find("counters");
  return c != s->end() && c->is_object() ? *c : kNone;
}

uint64_t count(const json& counters, const std::string& key) {
  auto it = counters.find(key);
  return it != counters.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// Counters that say a frame was lost (each names why).
bool is_drop(std::string_view key) {
  return key.find("dropped") != std::string_view::npos ||
         key.find("_fails") != std::string_view::npos;
}

bool is_column(std::string_view key) {
  return key == "tx_packets" || key == "tx_bytes" || key == "rx_packets" || key == "rx_bytes";
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string right(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

}  // namespace

json stats_interval_json(const json& before, const json& after, double seconds, std::time_t now) {
  const json& was = counters_of(before);
  const json& is = counters_of(after);
  bool restarted = false;
  for (const auto& [key, value] : is.items()) {
    if (value.is_number_unsigned() && value.get<uint64_t>() < count(was, key)) restarted = true;
  }
  json delta = json::object();
  json rate = json::object();
  for (const auto& [key, value] : is.items()) {
    if (!value.is_number_unsigned()) continue;
    const uint64_t d = restarted ? value.get<uint64_t>() : value.get<uint64_t>() - count(was, key);
    delta[key] = d;
    rate[key] = seconds > 0 ? static_cast<double>(d) / seconds : 0.0;
  }
  char at[32] = "";
  std::tm tm{};
  if (gmtime_r(&now, &tm)) std::strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
  auto name = after.find("name");
  return json{{"endpoint", name != after.end() && name->is_string() ? *name : json("")},
              {"time", at},
              {"seconds", seconds},
              {"restarted", restarted},
              {"delta", delta},
              {"per_second", rate},
              {"counters", is}};
}

std::string format_stats_interval_header(const std::string& endpoint, double interval) {
  return endpoint + " every " +
         fixed(interval, interval == static_cast<int64_t>(interval) ? 0 : 1) +
         " s until interrupted; tx is guest→host, rx is host→guest; time in UTC\n" +
         "time      tx pkt/s  tx Mbit/s   rx pkt/s  rx Mbit/s  drops/s  other counters\n";
}

std::string format_stats_interval(const json& interval) {
  const json& delta = interval.at("delta");
  const double seconds = interval.value("seconds", 1.0);
  auto per_second = [&](const std::string& key) {
    return seconds > 0 ? static_cast<double>(count(delta, key)) / seconds : 0.0;
  };
  auto mbit = [&](const std::string& key) { return per_second(key) * 8 / 1e6; };
  uint64_t drops = 0;
  std::string other;
  for (const auto& [key, value] : delta.items()) {
    const uint64_t d = value.get<uint64_t>();
    if (is_drop(key)) drops += d;
    if (d != 0 && !is_column(key)) other += " " + key + " +" + std::to_string(d);
  }
  const std::string time = interval.value("time", std::string());
  std::string line = time.size() >= 19 ? time.substr(11, 8) : right(time, 8);
  line += "  " + right(fixed(per_second("tx_packets"), 0), 8);
  line += "  " + right(fixed(mbit("tx_bytes"), 2), 9);
  line += "  " + right(fixed(per_second("rx_packets"), 0), 9);
  line += "  " + right(fixed(mbit("rx_bytes"), 2), 9);
  line += "  " + right(fixed(seconds > 0 ? static_cast<double>(drops) / seconds : 0.0, 0), 7);
  line += " ";
  line += other.empty() ? " -" : other;
  if (interval.value("restarted", false)) line += " (counters restarted: a new session)";
  return line + "\n";
}

}  // namespace vp::ctl
