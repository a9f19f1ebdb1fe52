#pragma once

// DPDK's dpdk-testpmd as a second, independent vhost-user party, for the integration tier
// and the benchmark: one process in interactive mode, its commands written to its stdin,
// its output (unbuffered with stdbuf -o0: testpmd prints with stdio, which a file would
// buffer) in a file. No hugepages (--no-huge -m 512), no PCI scan, a --file-prefix of its
// own. Killed, and its EAL runtime directory removed, when it goes out of scope; it never
// outlives the process that started it (PR_SET_PDEATHSIG).

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "sys/fd.hpp"

namespace vp::test {

/// The first executable `name` on $PATH, or "".
std::string find_in_path(const std::string& name);

class Testpmd {
 public:
  Testpmd() = default;
  Testpmd(const Testpmd&) = delete;
  Testpmd& operator=(const Testpmd&) = delete;
  ~Testpmd();

  /// Starts `dpdk-testpmd --lcores LCORES … --vdev V (each of vdevs) -- -i --burst=32
  /// --total-num-mbufs=16384 ARGS`, its output in `log_path` (emptied first). `tag` names the
  /// --file-prefix. Returns "" or why it could not start; does not wait for the prompt.
  std::string start(const std::string& lcores, const std::vector<std::string>& vdevs,
                    const std::vector<std::string>& args, const std::string& log_path,
                    std::string_view tag);

  pid_t pid() const { return pid_; }
  /// Writes one command line to its prompt; false when it is gone.
  bool command(const std::string& line);
  std::string log() const;
  /// How often `needle` stands in `text`.
  static size_t count(const std::string& text, const std::string& needle);
  /// Waits until `needle` has appeared `n` times in its output. False on timeout, or at once
  /// when testpmd exited (exited() then says so).
  bool wait_output(const std::string& needle, size_t n, std::chrono::milliseconds timeout);
  bool exited() const { return exited_; }
  /// Sends `lines` (e.g. "stop\nquit\n"), then waits for the exit (SIGKILL after `timeout`).
  /// Its exit status, 128+signal when killed; -1 when it was not running.
  int quit(std::chrono::milliseconds timeout, const std::string& lines = "quit\n");

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  Fd stdin_;
  std::string prefix_;
  std::string log_path_;
};

}  // namespace vp::test
