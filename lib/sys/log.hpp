#pragma once

#include <string_view>

#include "sys/str.hpp"

namespace vp::log {

/// syslog priorities, as journald reads them from a "<N>" line prefix.
enum class Level { kError = 3, kWarning = 4, kNotice = 5, kInfo = 6, kDebug = 7 };

/// Writes one line to stderr. Under journald (JOURNAL_STREAM set) the line carries the
/// "<N>" priority prefix; otherwise errors and warnings carry a word. Never for the packet path.
void write(Level level, std::string_view line) noexcept;

/// Hides lines below `level` (default: kInfo).
void set_threshold(Level level) noexcept;

template <class... Args>
void error(const Args&... args) {
  write(Level::kError, str(args...));
}
template <class... Args>
void warning(const Args&... args) {
  write(Level::kWarning, str(args...));
}
template <class... Args>
void notice(const Args&... args) {
  write(Level::kNotice, str(args...));
}
template <class... Args>
void info(const Args&... args) {
  write(Level::kInfo, str(args...));
}

}  // namespace vp::log
