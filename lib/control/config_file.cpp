#include "control/config_file.hpp"

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>

#include "control/keys.hpp"
#include "net/ifname.hpp"
#include "sys/str.hpp"

namespace vp::control {
namespace {

std::vector<std::string> split_words(std::string_view line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
    if (j > i) words.emplace_back(line.substr(i, j - i));
    i = j;
  }
  return words;
}

Result<ConfigEntry> make_entry(std::string origin, std::vector<std::string> words) {
  ConfigEntry entry;
  entry.origin = std::move(origin);
  auto where = [&](const Error& e) { return fail(e.code, str(entry.origin, ": ", e.message)); };
  if (!words.empty() && words.front().find('=') == std::string::npos &&
      !words.front().starts_with('-') && !is_keyword(words.front()) &&
      !looks_like_address(words.front())) {
    if (auto ok = net::validate_ifname(words.front()); !ok) return where(ok.error());
    entry.name = words.front();
    words.erase(words.begin());
  }
  auto change = parse_change(words);
  if (!change) return where(change.error());
  if (change->create || change->destroy) {
    return fail("bad-value", str(entry.origin,
                                 ": a declaration cannot say create or destroy; a line "
                                 "declares an endpoint, and deleting the line removes it"));
  }
  if (!entry.name.empty() && change->prefix) {
    return fail("conflicting-settings",
                str(entry.origin, ": give either an endpoint name or name=PREFIX, not both"));
  }
  entry.tokens = std::move(words);
  entry.change = std::move(*change);
  return entry;
}

Result<void> check_unique_names(const std::vector<ConfigEntry>& entries) {
  std::set<std::string> seen;
  for (const auto& e : entries) {
    if (e.name.empty()) continue;
    if (!seen.insert(e.name).second) {
      return fail("conflicting-settings",
                  str(e.origin, ": endpoint ", e.name, " is declared a second time"));
    }
  }
  return {};
}

}  // namespace

std::string ConfigEntry::spec() const {
  std::string out = name;
  for (const auto& t : tokens) {
    if (!out.empty()) out += ' ';
    out += t;
  }
  return out;
}

Result<std::vector<ConfigEntry>> parse_config(std::string_view text, std::string_view filename) {
  std::vector<ConfigEntry> entries;
  int number = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++number;
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    auto words = split_words(line);
    if (words.empty()) continue;
    auto entry = make_entry(str(filename, ":", number), std::move(words));
    if (!entry) return std::unexpected(entry.error());
    entries.push_back(std::move(*entry));
  }
  if (auto ok = check_unique_names(entries); !ok) return std::unexpected(ok.error());
  return entries;
}

Result<std::vector<ConfigEntry>> read_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return std::vector<ConfigEntry>{};
    return sys_fail(str("read ", path), errno);
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path);
}

Result<std::vector<ConfigEntry>> parse_command_line_specs(std::span<const std::string> args) {
  std::vector<std::vector<std::string>> groups;
  for (const auto& arg : args) {
    for (auto& token : split_commas(arg)) {
      // A key that starts endpoints (peer=, bind=) which the current group already has
      // starts the next endpoint.
      auto repeats = [&] {
        return std::any_of(endpoint_keys().begin(), endpoint_keys().end(), [&](const KeyRow& row) {
          const std::string key = str(row.name, "=");
          return row.starts_endpoint && token.starts_with(key) &&
                 std::any_of(groups.back().begin(), groups.back().end(),
                             [&](const auto& t) { return t.starts_with(key); });
        });
      };
      if (groups.empty() || repeats()) groups.emplace_back();
      groups.back().push_back(std::move(token));
    }
  }
  std::vector<ConfigEntry> entries;
  for (size_t i = 0; i < groups.size(); ++i) {
    auto entry = make_entry(str("command line endpoint ", i + 1), std::move(groups[i]));
    if (!entry) return std::unexpected(entry.error());
    entries.push_back(std::move(*entry));
  }
  if (auto ok = check_unique_names(entries); !ok) return std::unexpected(ok.error());
  return entries;
}

}  // namespace vp::control
