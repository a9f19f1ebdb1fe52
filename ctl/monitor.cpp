#include "ctl/monitor.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "control/grammar.hpp"
#include "control/protocol.hpp"
#include "ctl/client.hpp"
#include "ctl/output.hpp"
#include "net/ifname.hpp"
#include "sys/str.hpp"

namespace vp::ctl {

namespace {

// Whole number in [min, max] for an option; nullopt when it is not one.
std::optional<long> option_number(std::string_view text, long min, long max) {
  long value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

int monitor(std::string socket_path, const std::vector<std::string>& args, bool json) {
  std::string only;
  long count = 0;  // 0: no limit
  long timeout_s = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--count" || a == "--timeout") {
      if (i + 1 >= args.size()) return usage_error(str(a, " needs a number"));
      const bool is_count = a == "--count";
      auto n = option_number(args[++i], 1, is_count ? 1'000'000'000 : 31'536'000);
      if (!n) {
        return usage_error(str(a, " takes a whole number ", is_count ? "of events" : "of seconds",
                               " from 1, not '", args[i], "'"));
      }
      (is_count ? count : timeout_s) = *n;
    } else if (a.starts_with("-")) {
      return usage_error(str("monitor takes --count N and --timeout S, not ", a));
    } else if (only.empty()) {
      if (auto ok = net::validate_ifname(a); !ok) return usage_error(ok.error().message);
      if (control::is_keyword(a)) {
        return usage_error(
            str("'", a, "' is a vpctl word, not an endpoint: `vpctl monitor [NAME]`"));
      }
      only = a;
    } else {
      return usage_error("monitor watches one endpoint or all: `vpctl monitor [NAME]`");
    }
  }
  auto fd = connect_control(socket_path, /*read_only=*/true);
  if (!fd) {
    print_unreachable(socket_path, fd.error().message);
    return kUnreachable;
  }
  control::Request request;
  request.op = control::op::kMonitor;
  const std::string line = control::encode(request);
  if (::send(fd->get(), line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size())) {
    std::fprintf(stderr, "vpctl: cannot reach vpd at %s: %s.\n", socket_path.c_str(),
                 std::strerror(errno));
    return kUnreachable;
  }
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  bool answered = false;
  long printed = 0;
  std::string in;
  char buf[65536];
  for (;;) {
    for (size_t nl; (nl = in.find('\n')) != std::string::npos;) {
      const std::string one = in.substr(0, nl);
      in.erase(0, nl + 1);
      if (!answered) {
        auto response = control::decode_response(one);
        if (!response) {
          std::fprintf(stderr, "vpctl: vpd's answer was not understood: %s\n",
                       response.error().message.c_str());
          return kUnreachable;
        }
        if (!response->ok) {
          std::fprintf(stderr, "vpctl: %s (%s)\n", response->error.message.c_str(),
                       response->error.code.c_str());
          return kRefused;
        }
        answered = true;
        std::fprintf(stderr, "vpctl: watching %s's events; Ctrl-C stops\n",
                     only.empty() ? "vpd" : only.c_str());
        continue;
      }
      // Ordered: the line keeps vpd's field order (time, endpoint, type, message first).
      auto j = nlohmann::ordered_json::parse(one, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object() || !j.contains("event") || !j["event"].is_object()) {
        continue;
      }
      const auto& event = j["event"];
      const std::string endpoint = event.value("endpoint", std::string());
      // "lost" events name no endpoint and concern every filter.
      if (!only.empty() && !endpoint.empty() && endpoint != only) continue;
      if (json) {
        std::printf("%s\n", event.dump().c_str());
      } else {
        std::fputs(format_event(nlohmann::json(event)).c_str(), stdout);
      }
      std::fflush(stdout);
      if (count > 0 && ++printed >= count) return kDone;
    }
    int wait_ms = -1;
    if (timeout_s > 0) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return kDone;
      wait_ms = static_cast<int>(std::min<long long>(left, 60'000));
    }
    pollfd p{fd->get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;  // the deadline check above ends it
    const ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      std::fprintf(stderr, "vpctl: vpd closed the connection%s\n",
                   answered ? " (it stopped or restarted)" : " without an answer");
      return kUnreachable;
    }
    in.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace vp::ctl
