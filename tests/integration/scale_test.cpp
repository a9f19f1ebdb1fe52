// Many endpoints in one vpd: a few hundred created one call after the other survive kill -9
// (every create was saved before vpctl got its answer) and all serve again after a restart;
// vpd raises its open-file limit at start and says so when the hard limit is too low.

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "integration/vpd_fixture.hpp"

namespace vp::test {
namespace {

constexpr int kEndpoints = 200;

bool accepts(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

/// "Max open files" of process `pid`: {soft, hard}, "unlimited" as RLIM_INFINITY.
std::pair<rlim_t, rlim_t> nofile_limits(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream fields(line.substr(std::string("Max open files").size()));
    std::string soft, hard;
    fields >> soft >> hard;
    auto number = [](const std::string& f) {
      return f == "unlimited" ? RLIM_INFINITY : static_cast<rlim_t>(std::stoull(f));
    };
    return {number(soft), number(hard)};
  }
  return {0, 0};
}

/// Sets this process's open-file limit (which a vpd started now inherits) and puts the
/// old one back when it goes; root may raise the hard limit again.
class NofileLimit {
 public:
  NofileLimit(rlim_t soft, rlim_t hard) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    const rlimit lowered{soft, hard};
    ok_ = ::setrlimit(RLIMIT_NOFILE, &lowered) == 0;
  }
  ~NofileLimit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  NofileLimit(const NofileLimit&) = delete;
  NofileLimit& operator=(const NofileLimit&) = delete;
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

class Scale : public VpdFixture {
 protected:
  std::string bind_of(int i) { return vpd().runtime_dir() + "/vp" + std::to_string(i) + ".sock"; }

  void create(int count) {
    for (int i = 0; i < count; ++i) {
      const Output r = vpd().ctl({"vp" + std::to_string(i), "create", "up"});
      ASSERT_EQ(r.status, 0) << "vpctl vp" << i << " create up: " << r.out << r.err;
    }
  }
};

TEST_F(Scale, two_hundred_endpoints_all_serve_again_after_kill9) {
  ASSERT_EQ(vpd().start(), "");
  ASSERT_NO_FATAL_FAILURE(create(kEndpoints));
  const json before = vpd().ctl_json({"list"});
  ASSERT_TRUE(before.is_array()) << before.dump();
  ASSERT_EQ(before.size(), static_cast<size_t>(kEndpoints));

  vpd().kill9();
  ASSERT_EQ(vpd().start(), "");

  // Each bind socket is tried until it accepts; the deadline only ends a failing run.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int i = 0; i < kEndpoints; ++i) {
    while (!accepts(bind_of(i)) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_TRUE(accepts(bind_of(i))) << bind_of(i) << " does not accept after the restart";
  }

  const json after = vpd().ctl_json({"list"});
  ASSERT_TRUE(after.is_array()) << after.dump();
  ASSERT_EQ(after.size(), static_cast<size_t>(kEndpoints));
  std::set<std::string> names;
  std::set<std::string> macs;
  for (const json& e : after) {
    const std::string name = e.value("name", "");
    names.insert(name);
    macs.insert(e.value("mac", ""));
    EXPECT_EQ(e["status"]["problems"], json::array()) << name << ": " << e["status"].dump();
    EXPECT_EQ(e.value("bind", ""), vpd().runtime_dir() + "/" + name + ".sock");
    EXPECT_EQ(e.value("up", false), true) << name;
  }
  for (int i = 0; i < kEndpoints; ++i) {
    EXPECT_TRUE(names.count("vp" + std::to_string(i))) << "vp" << i << " is missing";
  }
  EXPECT_EQ(macs.size(), static_cast<size_t>(kEndpoints)) << "every endpoint has its own MAC";
  EXPECT_EQ(link_names().size(), static_cast<size_t>(kEndpoints) + 1) << "the TAPs and lo";
}

TEST_F(Scale, soft_fd_limit_below_the_hard_one_is_raised_at_start) {
  rlimit now{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &now), 0);
  ASSERT_GT(now.rlim_max, 256u) << "this test needs a hard NOFILE limit above 256";
  NofileLimit lowered(256, now.rlim_max);
  ASSERT_TRUE(lowered.ok());
  ASSERT_EQ(vpd().start(), "");
  const auto [soft, hard] = nofile_limits(vpd().pid());
  EXPECT_EQ(hard, now.rlim_max);
  EXPECT_EQ(soft, hard) << "vpd kept the soft limit it was started with";
  EXPECT_FALSE(contains(vpd().log(), "open-file limit")) << vpd().log();
}

TEST_F(Scale, hard_fd_limit_too_low_for_the_saved_endpoints_is_warned_about) {
  constexpr int kSaved = 30;  // about 8 fds each plus 64 is more than the 200 allowed below
  ASSERT_EQ(vpd().start(), "");
  ASSERT_NO_FATAL_FAILURE(create(kSaved));
  EXPECT_EQ(vpd().stop(), 0);
  {
    NofileLimit lowered(100, 200);
    ASSERT_TRUE(lowered.ok());
    ASSERT_EQ(vpd().start(), "");
  }
  const auto [soft, hard] = nofile_limits(vpd().pid());
  EXPECT_EQ(hard, 200u);
  EXPECT_EQ(soft, 200u);
  const std::string log = vpd().log();
  EXPECT_TRUE(contains(log, "the open-file limit is 200")) << log;
  EXPECT_TRUE(contains(log, "raise LimitNOFILE=")) << log;
  // The warning is all: the endpoints are served as before.
  const json shown = vpd().ctl_json({"list"});
  ASSERT_TRUE(shown.is_array()) << shown.dump();
  EXPECT_EQ(shown.size(), static_cast<size_t>(kSaved));
  for (const json& e : shown) {
    EXPECT_EQ(e["status"]["problems"], json::array()) << e.value("name", "");
  }
  EXPECT_TRUE(accepts(bind_of(kSaved - 1)));
}

}  // namespace
}  // namespace vp::test
