#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>

namespace vp::daemon {

/// User and group names looked up through NSS (getpwnam/getgrnam), each answer kept for
/// kValidity. One look-up can cost a millisecond (nss-systemd asks userdb over several
/// files and sockets), and every create with a bind socket needs the default group vpd
/// twice, so a script creating 1000 endpoints would spend seconds on the same question.
/// An account added, removed or renumbered is seen within kValidity. A missing account is
/// kept too: on a host without a group vpd that is the common answer.
/// Used by the control thread only (no lock).
class Accounts {
 public:
  static constexpr std::chrono::milliseconds kValidity{1000};

  /// The uid of user `name`, or nullopt when there is no such user.
  std::optional<uid_t> user(const std::string& name);
  /// The gid of group `name`, or nullopt when there is no such group.
  std::optional<gid_t> group(const std::string& name);

 private:
  struct Answer {
    std::optional<uint32_t> id;
    std::chrono::steady_clock::time_point expires;
  };
  template <typename Lookup>
  std::optional<uint32_t> cached(std::map<std::string, Answer>& answers, const std::string& name,
                                 Lookup lookup);

  std::map<std::string, Answer> users_;
  std::map<std::string, Answer> groups_;
};

}  // namespace vp::daemon
