#include "support/guest.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace vp::test {

std::string guest_image_dir() {
  const char* dir = std::getenv("VPD_E2E_IMAGE_DIR");
  return dir ? dir : "";
}

Guest::~Guest() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

std::string Guest::start(const GuestOptions& o) {
  std::string append =
      "console=ttyS0 quiet panic=-1 vp.ip=" + o.ip + " vp.peer=" + o.peer +
      " vp.count=" + std::to_string(o.count) + " VP_LINGER=" + std::to_string(o.linger) +
      " VP_PINGLOOP=" + std::to_string(o.pingloop) + " VP_STREAM=" + std::to_string(o.stream_port);
  std::vector<std::string> args{"qemu-system-x86_64",
                                "-accel",
                                "tcg",
                                "-m",
                                "256M",
                                "-nographic",
                                "-no-reboot",
                                "-nodefaults",
                                "-serial",
                                "file:" + console_path_,
                                "-display",
                                "none",
                                "-kernel",
                                o.image_dir + "/vmlinuz",
                                "-initrd",
                                o.image_dir + "/initramfs.cpio.gz",
                                "-append",
                                append};
  if (o.shared_memory) {
    for (const char* a : {"-object", "memory-backend-memfd,id=mem,size=256M,share=on", "-numa",
                          "node,memdev=mem"}) {
      args.emplace_back(a);
    }
  }
  args.insert(args.end(), o.nic.begin(), o.nic.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  const std::string log = console_path_ + ".qemu";
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const int rc = ::posix_spawnp(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    return std::string("spawn qemu-system-x86_64: ") + std::strerror(rc);
  }
  return "";
}

std::string Guest::console() const {
  std::string out;
  for (const std::string& path : {console_path_, console_path_ + ".qemu"}) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    out += s.str();
  }
  return out;
}

std::string Guest::serial() const {
  std::ifstream in(console_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Guest::wait_for(const std::string& needle, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (console().find(needle) != std::string::npos) return true;
    if (pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return console().find(needle) != std::string::npos;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

int Guest::wait_exit(std::chrono::seconds timeout) {
  if (pid_ <= 0) return 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return 128 + SIGKILL;
}

}  // namespace vp::test
