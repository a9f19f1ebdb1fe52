#include "control/journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <expected>
#include <nlohmann/json.hpp>

#include "sys/fd.hpp"
#include "sys/str.hpp"

namespace vp::control {

using nlohmann::json;

namespace {

std::string directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Result<void> apply_record(State& state, const json& record) {
  auto corrupt = [](std::string_view why) {
    return fail("state-corrupt", str("journal record ", why));
  };
  if (!record.is_object() || record.size() != 1) return corrupt("is not {\"put\"|\"remove\": ...}");
  if (auto put = record.find("put"); put != record.end()) {
    auto config = endpoint_from_json(*put);
    if (!config) return corrupt(config.error().message);
    SavedEndpoint saved{std::move(*config), ""};
    if (auto d = put->find("declared"); d != put->end() && d->is_string()) {
      saved.declared = d->get<std::string>();
    }
    for (auto& e : state.endpoints) {
      if (e.config.name == saved.config.name) {
        e = std::move(saved);
        return {};
      }
    }
    state.endpoints.push_back(std::move(saved));
    return {};
  }
  if (auto remove = record.find("remove"); remove != record.end() && remove->is_string()) {
    const std::string name = remove->get<std::string>();
    std::erase_if(state.endpoints, [&](const SavedEndpoint& e) { return e.config.name == name; });
    return {};
  }
  return corrupt("is not {\"put\"|\"remove\": ...}");
}

/// The length of the journal without a record cut short at its end (a crash in
/// mid-append), which is cut off: appended after, it would no longer be the last record.
/// Fails with errno.
std::expected<off_t, int> cut_torn_tail(int fd, off_t size) {
  if (size == 0) return size;
  char last = 0;
  if (::pread(fd, &last, 1, size - 1) != 1) return std::unexpected(errno);
  if (last == '\n') return size;
  // A record is one endpoint: a tail of 1 MB holds the start of the torn one.
  const off_t from = std::max<off_t>(0, size - (off_t{1} << 20));
  std::string tail(static_cast<size_t>(size - from), '\0');
  if (::pread(fd, tail.data(), tail.size(), from) != static_cast<ssize_t>(tail.size())) {
    return std::unexpected(errno ? errno : EIO);
  }
  const size_t newline = tail.rfind('\n');
  const off_t whole = newline == std::string::npos ? from : from + static_cast<off_t>(newline) + 1;
  if (::ftruncate(fd, whole) != 0) return std::unexpected(errno);
  return whole;
}

}  // namespace

std::string journal_path(const std::string& state_path) { return state_path + ".journal"; }

std::string encode_put(const SavedEndpoint& endpoint) {
  json j = to_json(endpoint.config);
  j["declared"] = endpoint.declared;
  return json{{"put", std::move(j)}}.dump() + "\n";
}

std::string encode_remove(std::string_view name) {
  return json{{"remove", std::string(name)}}.dump() + "\n";
}

Result<void> replay_journal(State& state, std::string_view text, size_t* records) {
  size_t applied = 0;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = text.find('\n', at);
    if (end == std::string_view::npos) break;  // torn: the append never finished
    const std::string_view line = text.substr(at, end - at);
    const bool last = end + 1 >= text.size();
    json record = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded()) {
      if (last) break;  // torn in the middle: what the disk kept of the last append
      return fail("state-corrupt", str("journal record ", applied + 1, " is not JSON"));
    }
    if (auto ok = apply_record(state, record); !ok) return ok;
    ++applied;
    at = end + 1;
  }
  if (records) *records = applied;
  return {};
}

Result<void> append_journal(const std::string& state_path, std::string_view record) {
  const std::string path = journal_path(state_path);
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!fd) return sys_fail(str("open ", path), errno);
  off_t was = ::lseek(fd.get(), 0, SEEK_END);
  if (was < 0) return sys_fail(str("seek ", path), errno);
  if (auto whole = cut_torn_tail(fd.get(), was); whole) {
    was = *whole;
  } else {
    return sys_fail(str("repair ", path), whole.error());
  }
  auto undo = [&](std::string_view step, int err) {
    (void)!::ftruncate(fd.get(), was);
    return sys_fail(str(step, " ", path), err);
  };
  size_t done = 0;
  while (done < record.size()) {
    const ssize_t n = ::write(fd.get(), record.data() + done, record.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return undo("write", errno);
    }
    done += static_cast<size_t>(n);
  }
  if (::fdatasync(fd.get()) != 0) return undo("fdatasync", errno);
  if (was == 0) {
    // The journal may be new: its name must survive a crash as well as its bytes.
    Fd dir(::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir) ::fsync(dir.get());
  }
  return {};
}

Result<void> compact_state(const std::string& state_path, const State& state) {
  if (auto ok = save_state(state_path, state); !ok) return ok;
  const std::string path = journal_path(state_path);
  Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return {};
    return sys_fail(str("open ", path), errno);
  }
  if (::ftruncate(fd.get(), 0) != 0) return sys_fail(str("truncate ", path), errno);
  if (::fsync(fd.get()) != 0) return sys_fail(str("fsync ", path), errno);
  return {};
}

}  // namespace vp::control
