#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "control/grammar.hpp"
#include "sys/error.hpp"

namespace vp::control {

/// One declared endpoint: a line of vpd.conf or a peer= group of vpd's command line.
struct ConfigEntry {
  std::string origin;  // "/etc/vpd/vpd.conf:3" or "command line"
  std::string name;    // "" = the next free PREFIX-N
  std::vector<std::string> tokens;
  Change change;

  /// The declaration as one line; the state file remembers the last one applied, so an
  /// unchanged declaration does not undo run-time changes on restart.
  std::string spec() const;
};

/// Parses vpd.conf text: one endpoint per line, `[NAME] key=value ... [flags]`, `#`
/// comments. Errors keep their code and start with "FILE:LINE: ".
Result<std::vector<ConfigEntry>> parse_config(std::string_view text, std::string_view filename);

/// Reads and parses a config file; a missing file declares nothing.
Result<std::vector<ConfigEntry>> read_config_file(const std::string& path);

/// io-pkt style: `peer=A,bind=B,mac=M,peer=C,...` (possibly over several arguments);
/// every peer= starts a new endpoint.
Result<std::vector<ConfigEntry>> parse_command_line_specs(std::span<const std::string> args);

}  // namespace vp::control
