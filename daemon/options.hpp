#pragma once

#include <string>
#include <vector>

#include "sys/error.hpp"

namespace vp::daemon {

struct Options {
  std::string config = "/etc/vpd/vpd.conf";
  std::string runtime_dir = "/run/vpd";
  std::string state_dir = "/var/lib/vpd";
  bool check_config = false;
  bool version = false;
  bool help = false;
  bool verbose = false;
  unsigned workers = 0;                     // --workers N (1..64); 0: one per core, at most 4
  bool io_uring = true;                     // --no-io-uring: guest->host writes use writev only
  std::vector<std::string> endpoint_specs;  // io-pkt style peer=...,bind=...
};

/// Parses vpd's command line. Code "usage" with a sentence on errors.
Result<Options> parse_options(int argc, char** argv);

extern const char* const kUsage;

}  // namespace vp::daemon
