#include "control/state_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "control/journal.hpp"
#include "sys/fd.hpp"
#include "sys/str.hpp"

namespace vp::control {

using nlohmann::json;

namespace {
constexpr int kStateVersion = 1;

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
}  // namespace

std::string encode_state(const State& state) {
  json endpoints = json::array();
  for (const auto& e : state.endpoints) {
    json j = to_json(e.config);
    j["declared"] = e.declared;
    endpoints.push_back(std::move(j));
  }
  return json{{"version", kStateVersion}, {"endpoints", endpoints}}.dump(2) + "\n";
}

Result<State> decode_state(std::string_view text) {
  auto corrupt = [](std::string_view why) { return fail("state-corrupt", std::string(why)); };
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return corrupt("it is not a JSON object");
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer() ||
      version->get<int64_t>() != kStateVersion) {
    return corrupt(str("its version is not ", kStateVersion));
  }
  auto endpoints = j.find("endpoints");
  if (endpoints == j.end() || !endpoints->is_array()) return corrupt("it has no endpoint list");
  State state;
  for (const auto& e : *endpoints) {
    auto config = endpoint_from_json(e);
    if (!config) return corrupt(config.error().message);
    SavedEndpoint saved{std::move(*config), ""};
    if (auto d = e.find("declared"); d != e.end() && d->is_string()) {
      saved.declared = d->get<std::string>();
    }
    for (const auto& other : state.endpoints) {
      if (other.config.name == saved.config.name) {
        return corrupt(str("endpoint ", saved.config.name, " appears twice"));
      }
    }
    state.endpoints.push_back(std::move(saved));
  }
  return state;
}

Result<State> load_state(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  if (in) {
    text << in.rdbuf();
  } else if (errno == ENOENT) {
    text << encode_state(State{});  // no snapshot yet: the journal alone
  } else {
    return sys_fail(str("read ", path), errno);
  }
  auto state = decode_state(text.str());
  if (!state) return fail("state-corrupt", str(path, ": ", state.error().message));
  const std::string journal = journal_path(path);
  std::ifstream changes(journal);
  if (!changes) {
    if (errno == ENOENT) return state;
    return sys_fail(str("read ", journal), errno);
  }
  std::stringstream records;
  records << changes.rdbuf();
  if (auto ok = replay_journal(*state, records.str()); !ok) {
    return fail("state-corrupt", str(journal, ": ", ok.error().message));
  }
  return state;
}

Result<void> save_state(const std::string& path, const State& state) {
  const std::string text = encode_state(state);
  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return sys_fail(str("create ", tmp), errno);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::unlink(tmp.c_str());
      return sys_fail(str("write ", tmp), err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return sys_fail(str("fsync ", tmp), err);
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return sys_fail(str("rename ", tmp, " to ", path), err);
  }
  Fd dir(::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) ::fsync(dir.get());
  return {};
}

Result<std::string> set_aside(const std::string& path) {
  char stamp[32] = {};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  for (int i = 0; i < 100; ++i) {
    std::string target = str(path, ".corrupt-", stamp);
    if (i) target += str(".", i);
    struct stat st {};
    if (::lstat(target.c_str(), &st) == 0) continue;
    if (::rename(path.c_str(), target.c_str()) != 0) {
      return sys_fail(str("rename ", path, " to ", target), errno);
    }
    // The journal's changes apply to the corrupt snapshot: they go aside with it.
    const std::string journal = journal_path(path);
    if (::lstat(journal.c_str(), &st) == 0 && st.st_size > 0) {
      (void)::rename(journal.c_str(), journal_path(target).c_str());
    }
    return target;
  }
  return fail("system", str("cannot find a free name to set ", path, " aside"));
}

}  // namespace vp::control
