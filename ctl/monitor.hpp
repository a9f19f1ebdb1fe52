#pragma once

#include <string>
#include <vector>

namespace vp::ctl {

/// `vpctl monitor [NAME] [--count N] [--timeout S]`: subscribes and prints every event (of
/// NAME only) as it arrives, one line each (`json`: the event as one JSON line), flushed at
/// once; stops after N events, after S seconds, or when interrupted. Says on stderr once the
/// subscription runs, so a script can wait for that line before it acts. Returns vpctl's
/// exit code.
int monitor(std::string socket_path, const std::vector<std::string>& args, bool json);

}  // namespace vp::ctl
