#include "support/testpmd.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace vp::test {

using Clock = std::chrono::steady_clock;

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  const std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t at = 0;
  while (at <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', at), dirs.size());
    const std::string candidate = dirs.substr(at, end - at) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    at = end + 1;
  }
  return "";
}

Testpmd::~Testpmd() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (!prefix_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all("/var/run/dpdk/" + prefix_, ignored);
  }
}

std::string Testpmd::start(const std::string& lcores, const std::vector<std::string>& vdevs,
                           const std::vector<std::string>& args, const std::string& log_path,
                           std::string_view tag) {
  const std::string binary = find_in_path("dpdk-testpmd");
  if (binary.empty()) return "dpdk-testpmd is not installed (Debian 12: apt-get install dpdk-dev)";
  const std::string stdbuf = find_in_path("stdbuf");
  if (stdbuf.empty()) return "stdbuf (coreutils) is not installed";
  static int runs = 0;
  prefix_ = std::string(tag) + "-" + std::to_string(::getpid()) + "-" + std::to_string(++runs);
  log_path_ = log_path;
  std::vector<std::string> argv = {stdbuf,
                                   "-o0",
                                   binary,
                                   "--lcores",
                                   lcores,
                                   "--no-huge",
                                   "-m",
                                   "512",
                                   "--no-pci",
                                   "--single-file-segments",
                                   "--file-prefix=" + prefix_};
  for (const auto& v : vdevs) argv.insert(argv.end(), {"--vdev", v});
  argv.insert(argv.end(), {"--", "-i", "--burst=32", "--total-num-mbufs=16384"});
  argv.insert(argv.end(), args.begin(), args.end());
  // A previous run's output at the same path must not answer a wait for the prompt.
  ::unlink(log_path.c_str());
  int in[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return "pipe2 failed";
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(in[0]);
    ::close(in[1]);
    return "fork failed";
  }
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(126);
    const int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0 || ::dup2(in[0], 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) ::_exit(126);
    std::vector<char*> a;
    for (auto& x : argv) a.push_back(x.data());
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  ::close(in[0]);
  stdin_ = Fd(in[1]);
  pid_ = pid;
  exited_ = false;
  return "";
}

bool Testpmd::command(const std::string& line) {
  const std::string text = line + "\n";
  return ::write(stdin_.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

std::string Testpmd::log() const {
  std::ifstream f(log_path_);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

size_t Testpmd::count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

bool Testpmd::wait_output(const std::string& needle, size_t n, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (count(log(), needle) < n) {
    if (Clock::now() >= deadline) return false;
    int status = 0;
    if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exited_ = true;
      return count(log(), needle) >= n;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int Testpmd::quit(std::chrono::milliseconds timeout, const std::string& lines) {
  if (pid_ <= 0) return -1;
  (void)!::write(stdin_.get(), lines.data(), lines.size());
  stdin_.reset();
  int status = 0;
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return 128 + SIGKILL;
}

}  // namespace vp::test
