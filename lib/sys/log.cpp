#include "sys/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace vp::log {
namespace {

std::atomic<int> g_threshold{static_cast<int>(Level::kInfo)};

bool under_journald() {
  static const bool journald = std::getenv("JOURNAL_STREAM") != nullptr;
  return journald;
}

}  // namespace

void set_threshold(Level level) noexcept { g_threshold = static_cast<int>(level); }

void write(Level level, std::string_view line) noexcept {
  if (static_cast<int>(level) > g_threshold) return;
  try {
    std::string out;
    out.reserve(line.size() + 16);
    if (under_journald()) {
      out += '<';
      out += static_cast<char>('0' + static_cast<int>(level));
      out += '>';
    } else if (level == Level::kError) {
      out += "error: ";
    } else if (level == Level::kWarning) {
      out += "warning: ";
    }
    out += line;
    out += '\n';
    // One write() per line so that lines from several threads do not interleave.
    (void)!::write(STDERR_FILENO, out.data(), out.size());
  } catch (...) {
  }
}

}  // namespace vp::log
