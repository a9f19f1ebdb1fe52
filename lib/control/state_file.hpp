#pragma once

#include <string>
#include <vector>

#include "control/endpoint.hpp"
#include "sys/error.hpp"

namespace vp::control {

struct SavedEndpoint {
  EndpointConfig config;
  /// The declaration (ConfigEntry::spec) last applied from vpd.conf or the command
  /// line; "" for endpoints created at run time.
  std::string declared;

  bool operator==(const SavedEndpoint&) const = default;
};

struct State {
  std::vector<SavedEndpoint> endpoints;

  bool operator==(const State&) const = default;
};

std::string encode_state(const State& state);
/// Code "state-corrupt" when the text is not a state file this vpd can read.
Result<State> decode_state(std::string_view text);

/// Reads the saved state: the state file (the snapshot; a missing file is an empty state)
/// with the changes in its journal (PATH.journal, see control/journal.hpp) applied.
Result<State> load_state(const std::string& path);

/// Writes atomically: a temporary file in the same directory, fsync, rename, fsync of
/// the directory. On failure the old file is untouched.
Result<void> save_state(const std::string& path, const State& state);

/// Renames a corrupt state file to PATH.corrupt-YYYYmmdd-HHMMSS (never overwriting
/// another), and a non-empty journal with it to that name + ".journal"; returns the new path.
Result<std::string> set_aside(const std::string& path);

}  // namespace vp::control
