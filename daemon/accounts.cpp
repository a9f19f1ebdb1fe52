#include "daemon/accounts.hpp"

#include <grp.h>
#include <pwd.h>

namespace vp::daemon {

template <typename Lookup>
std::optional<uint32_t> Accounts::cached(std::map<std::string, Answer>& answers,
                                         const std::string& name, Lookup lookup) {
  const auto now = std::chrono::steady_clock::now();
  auto it = answers.find(name);
  if (it != answers.end() && now < it->second.expires) return it->second.id;
  // Drop what has expired, so that names once asked for do not pile up.
  std::erase_if(answers, [&](const auto& entry) { return entry.second.expires <= now; });
  const std::optional<uint32_t> id = lookup(name);
  answers[name] = Answer{id, now + kValidity};
  return id;
}

std::optional<uid_t> Accounts::user(const std::string& name) {
  return cached(users_, name, [](const std::string& n) -> std::optional<uint32_t> {
    if (const passwd* pw = ::getpwnam(n.c_str())) return pw->pw_uid;
    return std::nullopt;
  });
}

std::optional<gid_t> Accounts::group(const std::string& name) {
  return cached(groups_, name, [](const std::string& n) -> std::optional<uint32_t> {
    if (const struct group* gr = ::getgrnam(n.c_str())) return gr->gr_gid;
    return std::nullopt;
  });
}

}  // namespace vp::daemon
