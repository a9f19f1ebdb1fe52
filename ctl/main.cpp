// vpctl: configures vpd endpoints with the QNX vpctl syntax.

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/grammar.hpp"
#include "control/keys.hpp"
#include "control/protocol.hpp"
#include "ctl/client.hpp"
#include "ctl/http_scrape.hpp"
#include "ctl/libvirt_xml.hpp"
#include "ctl/metrics.hpp"
#include "ctl/monitor.hpp"
#include "ctl/output.hpp"
#include "ctl/stats_watch.hpp"
#include "net/ifname.hpp"
#include "net/offloads.hpp"
#include "sys/str.hpp"
#include "sys/unix_socket.hpp"
#include "vp/version.hpp"

namespace {

using vp::str;
namespace control = vp::control;

using vp::ctl::call;
using vp::ctl::kDone;
using vp::ctl::kRefused;
using vp::ctl::kUnreachable;
using vp::ctl::kUsage;
using vp::ctl::Reply;
using vp::ctl::usage_error;

constexpr const char* kHelpCommands =
    "Usage: vpctl [--socket PATH] [--json] COMMAND\n"
    "\n"
    "Commands:\n"
    "  vpctl list                      all endpoints, one per line (and who is attached)\n"
    "  vpctl metrics                   every endpoint's counters and state, Prometheus format\n"
    "  vpctl metrics --http            the same as the answer to one HTTP request on stdin\n"
    "  vpctl version                   versions of vpctl and vpd\n"
    "  vpctl monitor [NAME] [--count N] [--timeout S]\n"
    "                                  events as they happen (of NAME only), until Ctrl-C,\n"
    "                                  N events or S seconds; --json: one JSON line each\n"
    "  vpctl create [SETTING...]       create the next free vpN (name=PREFIX for another prefix)\n"
    "  vpctl NAME create [SETTING...]  create endpoint NAME\n"
    "  vpctl NAME                      show one endpoint (also: vpctl show NAME)\n"
    "  vpctl NAME SETTING...           change it; also up, down (also: vpctl NAME set ...)\n"
    "  vpctl NAME destroy              remove it and its TAP device\n"
    "  vpctl NAME qemu-args            VMM options that attach a guest to it\n"
    "  vpctl NAME libvirt-xml          the libvirt <interface> (and <memoryBacking>) for it\n"
    "  vpctl NAME stats                its data path's counters (drops by reason, kicks...)\n"
    "  vpctl NAME stats -i SECONDS [-c COUNT]\n"
    "                                  what moves every SECONDS (rates), until interrupted\n";

constexpr const char* kHelpTail =
    "\n"
    "The control socket is --socket PATH, else $VPD_SOCKET, else /run/vpd/control.sock.\n"
    "Without permission for control.sock, list, metrics, version, monitor, show, qemu-args,\n"
    "libvirt-xml and stats use control-ro.sock beside it (read-only; group vpd-ro).\n"
    "Exit status: 0 done, 1 refused by vpd, 2 usage error, 3 vpd not reachable.\n";

// Appends `word` to `out`, breaking lines before column 80 under an indent of two.
void wrap(std::string& out, size_t& column, std::string_view word) {
  if (column + 1 + word.size() > 80) {
    out += "\n  ";
    column = 2;
  } else if (column > 0) {
    out += ' ';
    ++column;
  }
  out += word;
  column += word.size();
}

// The help text. Its settings come from the table of endpoint keys, so every key is there.
std::string help_text() {
  std::string out = kHelpCommands;
  out += "\n";
  size_t column = 0;
  wrap(out, column, "Settings:");
  for (const control::KeyRow& row : control::endpoint_keys()) {
    wrap(out, column, control::key_usage(row) + (row.create_only ? " (create)" : ""));
  }
  wrap(out, column, "up down. To remove one:");
  std::vector<std::string> removals;
  for (const control::KeyRow& row : control::endpoint_keys()) {
    if (row.clear) removals.push_back(str("-", row.name));
    if (row.remove) removals.push_back(str("-", row.name, "=", row.value));
  }
  removals.back() += ".";
  for (const auto& word : removals) wrap(out, column, word);
  wrap(out, column, "Offload toggles:");
  for (const auto& t : control::split_commas(vp::net::toggle_names(vp::net::toggle::kAll))) {
    wrap(out, column, t);
  }
  wrap(out, column, "(prefix - to disable).");
  out += "\n";
  out += kHelpTail;
  return out;
}

// `vpctl --words KIND` (for the shell completion, which so follows the table): keys
// (key= of an endpoint), create (key= only create takes), flags, removals, toggles.
int print_words(std::string_view kind) {
  std::string out;
  auto add = [&](std::string_view word) {
    if (!out.empty()) out += ' ';
    out += word;
  };
  for (const control::KeyRow& row : control::endpoint_keys()) {
    const bool valued = !row.value.empty();
    if (kind == "keys" && valued && !row.create_only) add(str(row.name, "="));
    if (kind == "create" && valued && row.create_only) add(str(row.name, "="));
    if (kind == "flags" && !valued) add(row.name);
    if (kind == "removals" && row.clear) add(str("-", row.name));
    if (kind == "removals" && row.remove) add(str("-", row.name, "="));
  }
  if (kind == "toggles") {
    for (const auto& t : control::split_commas(vp::net::toggle_names(vp::net::toggle::kAll))) {
      add(t);
    }
  } else if (kind != "keys" && kind != "create" && kind != "flags" && kind != "removals") {
    std::fprintf(stderr, "vpctl: --words takes keys, create, flags, removals or toggles\n");
    return kUsage;
  }
  std::printf("%s\n", out.c_str());
  return kDone;
}

// `stats -i SECONDS [-c COUNT]`: the interval (0.1 s to a day) and how many lines (0: until
// interrupted). Returns a usage error's sentence, or "".
std::string parse_stats_options(const std::vector<std::string>& words, double& interval,
                                long& lines) {
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    const bool is_interval = w == "-i" || w == "--interval";
    const bool is_count = w == "-c" || w == "--count";
    if (!is_interval && !is_count) {
      return str("stats takes -i SECONDS and -c COUNT, not '", w, "'");
    }
    if (i + 1 >= words.size())
      return str("stats ", w, " needs a number, e.g. `vpctl vp0 stats -i 1`");
    const std::string& v = words[++i];
    char* end = nullptr;
    errno = 0;
    if (is_interval) {
      interval = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || errno != 0 || !std::isfinite(interval) || interval < 0.1 ||
          interval > 86400) {
        return str("stats -i takes seconds from 0.1 to 86400, not '", v, "'");
      }
    } else {
      lines = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || errno != 0 || lines < 1) {
        return str("stats -c takes a count of lines of at least 1, not '", v, "'");
      }
    }
  }
  if (lines != 0 && interval == 0) interval = 1;
  return "";
}

double monotonic_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// `vpctl NAME stats -i SECONDS`: one view now, then one every SECONDS (on a fixed schedule, so
// lines do not drift), each line what moved since the one before, divided by the time that
// really passed between the two views.
int watch_stats(const std::string& socket_path, const control::Request& request, bool json_output,
                double interval, long lines) {
  auto view = [&](Reply& reply) {
    reply = call(socket_path, request);
    if (reply.status == kDone) return true;
    if (reply.status == kRefused) {
      std::fprintf(stderr, "vpctl: %s (%s)\n", reply.response.error.message.c_str(),
                   reply.response.error.code.c_str());
    }
    return false;
  };
  Reply before;
  if (!view(before)) return before.status;
  const nlohmann::json* status = &before.response.result;
  auto s = status->find("status");
  if (s == status->end() || !s->contains("counters")) {
    std::fprintf(stderr,
                 "vpctl: %s has no data path counters (transport=%s: the kernel moves its frames; "
                 "`ip -s link show %s` counts them)\n",
                 request.endpoint.c_str(), status->value("transport", std::string("?")).c_str(),
                 request.endpoint.c_str());
    return kRefused;
  }
  if (!json_output) {
    std::fputs(vp::ctl::format_stats_interval_header(request.endpoint, interval).c_str(), stdout);
  }
  std::fflush(stdout);
  double taken = monotonic_seconds();
  timespec next{};
  ::clock_gettime(CLOCK_MONOTONIC, &next);
  const auto step_ns = static_cast<long long>(interval * 1e9);
  for (long done = 0; lines == 0 || done < lines; ++done) {
    long long ns = next.tv_nsec + step_ns;
    next.tv_sec += static_cast<time_t>(ns / 1'000'000'000);
    next.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr) == EINTR) {
    }
    Reply after;
    if (!view(after)) return after.status;
    const double now = monotonic_seconds();
    const nlohmann::json line = vp::ctl::stats_interval_json(
        before.response.result, after.response.result, now - taken, std::time(nullptr));
    if (json_output) {
      std::printf("%s\n", line.dump().c_str());
    } else {
      std::fputs(vp::ctl::format_stats_interval(line).c_str(), stdout);
    }
    std::fflush(stdout);
    before = std::move(after);
    taken = now;
  }
  return kDone;
}

/// `vpctl metrics --http`: one scrape on stdin/stdout (systemd/vpd-metrics.socket).
int serve_metrics_http(const std::string& socket_path) {
  control::Request request;
  request.op = control::op::kList;
  // A scraper that connects and sends nothing holds the process at most this long.
  constexpr int kRequestTimeoutMs = 10'000;
  return vp::ctl::serve_scrape(STDIN_FILENO, STDOUT_FILENO, kRequestTimeoutMs,
                               [&](std::string& body) {
                                 const Reply reply = call(socket_path, request);
                                 if (reply.status == kUnreachable) {
                                   body = "vpd is not reachable at " + socket_path + "\n";
                                   return false;
                                 }
                                 if (!reply.response.ok) {
                                   body = reply.response.error.message + "\n";
                                   return false;
                                 }
                                 body = vp::ctl::format_metrics(reply.response.result);
                                 return true;
                               });
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path = "/run/vpd/control.sock";
  if (const char* env = std::getenv("VPD_SOCKET"); env && *env) socket_path = env;
  bool json_output = false;
  std::vector<std::string> words;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (!words.empty()) {  // after the command, everything is a setting (e.g. -rxcsum)
      words.push_back(arg);
    } else if (arg == "--json") {
      json_output = true;
    } else if (arg == "--socket" || arg.starts_with("--socket=")) {
      if (arg == "--socket") {
        if (i + 1 >= argc) return usage_error("--socket needs a path");
        socket_path = argv[++i];
      } else {
        socket_path = arg.substr(9);
      }
      if (socket_path.empty()) return usage_error("--socket needs a path");
    } else if (arg == "--help" || arg == "-h" || arg == "help") {
      std::fputs(help_text().c_str(), stdout);
      return kDone;
    } else if (arg == "--words") {
      if (i + 1 >= argc) return usage_error("--words needs a kind");
      return print_words(argv[i + 1]);
    } else if (arg == "--version") {
      std::printf("vpctl %s\n", vp::kVersion);
      return kDone;
    } else if (arg.starts_with("-")) {
      return usage_error(str("unknown option ", arg));
    } else {
      words.push_back(arg);
    }
  }
  if (words.empty()) return usage_error("no command given");

  // `vpctl show vp0` is `vpctl vp0` (as `ip link show`, `ovs-vsctl show`).
  if (words.front() == "show") {
    if (words.size() != 2) return usage_error("show takes one endpoint name: `vpctl show vp0`");
    words.erase(words.begin());
  }

  if (words.front() == "monitor") {
    return vp::ctl::monitor(socket_path, std::vector<std::string>(words.begin() + 1, words.end()),
                            json_output);
  }

  control::Request request;
  bool vmm_args = false;
  bool libvirt = false;
  bool stats = false;
  bool metrics = false;
  const std::string& first = words.front();
  if (first == "metrics" && words.size() == 2 && words[1] == "--http") {
    if (json_output) return usage_error("metrics --http answers in the Prometheus text format");
    return serve_metrics_http(socket_path);
  }
  if (first == "list" || first == "version" || first == "metrics") {
    if (words.size() > 1) {
      return usage_error(first == "metrics" ? std::string("metrics takes no arguments but --http")
                                            : str("'", first, "' takes no arguments"));
    }
    if (first == "metrics" && json_output) {
      return usage_error(
          "metrics is the Prometheus text format, not JSON; `vpctl --json list` has the same "
          "figures as JSON");
    }
    metrics = first == "metrics";
    request.op = first == "version" ? control::op::kHello : control::op::kList;
  } else if (first == "create") {
    request.op = control::op::kCreate;
    request.args.assign(words.begin() + 1, words.end());
  } else {
    if (first.find('=') != std::string::npos || first.starts_with("-")) {
      return usage_error(str("'", first,
                             "' looks like a setting; name the endpoint first, e.g. "
                             "`vpctl vp0 ",
                             first, "`"));
    }
    if (auto ok = vp::net::validate_ifname(first); !ok) return usage_error(ok.error().message);
    if (control::is_keyword(first)) {
      return usage_error(str("'", first, "' is not a command; see `vpctl --help`"));
    }
    request.endpoint = first;
    std::vector<std::string> rest(words.begin() + 1, words.end());
    if (rest.empty() || (rest.size() == 1 && rest.front() == "show")) {
      request.op = control::op::kShow;
    } else if (rest.size() == 1 && rest.front() == "qemu-args") {
      request.op = control::op::kShow;
      vmm_args = true;
    } else if (rest.size() == 1 && rest.front() == "libvirt-xml") {
      request.op = control::op::kShow;
      libvirt = true;
    } else if (rest.front() == "stats") {
      request.op = control::op::kShow;
      stats = true;
      if (rest.size() > 1) {
        double interval = 0;
        long lines = 0;
        const std::vector<std::string> options(rest.begin() + 1, rest.end());
        if (auto why = parse_stats_options(options, interval, lines); !why.empty()) {
          return usage_error(why);
        }
        return watch_stats(socket_path, request, json_output, interval, lines);
      }
    } else if (rest.front() == "create") {
      request.op = control::op::kCreate;
      request.args.assign(rest.begin() + 1, rest.end());
    } else if (rest.front() == "destroy") {
      request.op = control::op::kDestroy;
      if (rest.size() > 1) return usage_error("destroy takes no other settings");
    } else if (rest.front() == "set") {
      // `vpctl vp0 set mtu=1400` is `vpctl vp0 mtu=1400` (as `ip link set`).
      if (rest.size() == 1)
        return usage_error("set needs a setting, e.g. `vpctl vp0 set mtu=1400`");
      request.op = control::op::kSet;
      request.args.assign(rest.begin() + 1, rest.end());
    } else {
      request.op = control::op::kSet;
      request.args = std::move(rest);
    }
  }

  Reply reply = call(socket_path, request);
  if (reply.status == kUnreachable) {
    if (request.op == control::op::kHello) std::printf("vpctl %s\n", vp::kVersion);
    return kUnreachable;
  }
  const control::Response& r = reply.response;
  for (const auto& w : r.warnings) std::fprintf(stderr, "vpctl: warning: %s\n", w.c_str());
  if (libvirt && r.ok) {
    auto xml = vp::ctl::libvirt_xml(r.result);
    if (!xml) {
      std::fprintf(stderr, "vpctl: %s (%s)\n", xml.error().message.c_str(),
                   xml.error().code.c_str());
      return kRefused;
    }
    if (json_output) {
      const nlohmann::json out{{"interface", xml->interface},
                               {"memory_backing", xml->memory_backing},
                               {"note", xml->note}};
      std::printf("%s\n", out.dump(2).c_str());
    } else {
      std::fputs(vp::ctl::format_libvirt_xml(*xml).c_str(), stdout);
    }
    return kDone;
  }
  if (json_output) {
    // stats and qemu-args have their own objects, not the endpoint's.
    nlohmann::json out =
        !r.ok   ? nlohmann::json{{"error", {{"code", r.error.code}, {"message", r.error.message}}}}
        : stats ? vp::ctl::stats_json(r.result)
        : vmm_args ? vp::ctl::vmm_args_json(r.result)
                   : r.result;
    std::printf("%s\n", out.dump(2).c_str());
  }
  if (!r.ok) {
    std::fprintf(stderr, "vpctl: %s (%s)\n", r.error.message.c_str(), r.error.code.c_str());
    return kRefused;
  }
  if (json_output) return kDone;
  if (request.op == control::op::kHello) {
    std::printf("vpctl %s\nvpd %s (control protocol %d, %d endpoints)\n", vp::kVersion,
                r.result.value("version", std::string("?")).c_str(), r.result.value("protocol", 0),
                r.result.value("endpoints", 0));
  } else if (metrics) {
    std::fputs(vp::ctl::format_metrics(r.result).c_str(), stdout);
  } else if (request.op == control::op::kList) {
    std::fputs(vp::ctl::format_list(r.result).c_str(), stdout);
  } else if (stats) {
    std::fputs(vp::ctl::format_stats(r.result).c_str(), stdout);
  } else if (vmm_args) {
    std::fputs(vp::ctl::format_vmm_args(r.result).c_str(), stdout);
  } else if (request.op == control::op::kDestroy || r.result.contains("destroyed")) {
    std::printf("%s destroyed\n", request.endpoint.c_str());
  } else {
    std::fputs(vp::ctl::format_show(r.result).c_str(), stdout);
  }
  return kDone;
}
