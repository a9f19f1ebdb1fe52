#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "sys/error.hpp"

namespace vp::daemon {

/// How long one vhost-user message may stay incomplete (part of its header, or a header
/// without all the payload it announces) before the session is ended: a front-end that stalls
/// mid-message would otherwise hold the endpoint, and every other front-end would be refused
/// as a second one (--message-timeout).
inline constexpr std::chrono::seconds kDefaultMessageTimeout{10};
/// How long a control request line may stay without its newline, however slowly its bytes
/// come: a client trickling a byte now and then is never idle, yet must not hold a connection
/// (--request-timeout).
inline constexpr std::chrono::seconds kDefaultRequestTimeout{30};
/// The largest value either timeout takes.
inline constexpr std::chrono::seconds kMaxTimeout{3600};

struct Options {
  std::string config = "/etc/vpd/vpd.conf";
  std::string runtime_dir = "/run/vpd";
  std::string state_dir = "/var/lib/vpd";
  bool check_config = false;
  bool version = false;
  bool help = false;
  bool verbose = false;
  unsigned workers = 0;  // --workers N (1..64); 0: one per core, at most 4
  bool io_uring = true;  // --no-io-uring: guest->host writes use writev only
  std::chrono::seconds message_timeout = kDefaultMessageTimeout;  // --message-timeout
  std::chrono::seconds request_timeout = kDefaultRequestTimeout;  // --request-timeout
  std::vector<std::string> endpoint_specs;                        // io-pkt style peer=...,bind=...
};

/// Parses vpd's command line. Code "usage" with a sentence on errors.
Result<Options> parse_options(int argc, char** argv);

extern const char* const kUsage;

}  // namespace vp::daemon
