#include "control/state_file.hpp"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "unit_expect.hpp"

namespace vp::control {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using unit::fails_with;
using unit::succeeded;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vp-state-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const char* name) const { return (path_ / name).string(); }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

net::Mac mac(const char* text) {
  auto m = net::parse_mac(text);
  EXPECT_TRUE(succeeded(m)) << text;
  return m ? *m : net::Mac{};
}

State sample_state() {
  EndpointConfig a;
  a.name = "vp0";
  a.mac = mac("02:00:00:00:00:01");
  a.bind = "/run/vpd/vp0.sock";
  a.bridge = "br0";
  a.up = true;
  auto addr = net::parse_address("192.168.1.1/24");
  if (addr) a.addresses.push_back(addr->address);

  EndpointConfig b;
  b.name = "vp1";
  b.mac = mac("02:00:00:00:00:02");
  b.transport = Transport::kStream;
  b.peer = "/run/qemu/g1.sock";
  b.peerfeats = 0;
  b.legacy = true;
  b.priority = 20;
  b.mtu = 9000;
  b.toggles = net::toggle::kAll & ~net::toggle::kTso6;

  State s;
  s.endpoints.push_back({a, "vp0 bind=/run/vpd/vp0.sock bridge=br0 192.168.1.1/24 up"});
  s.endpoints.push_back({b, ""});
  return s;
}

json sample_json() { return json::parse(encode_state(sample_state())); }

// ---- encode / decode ---------------------------------------------------------------------

TEST(StateText, round_trips_with_declared_strings) {
  const State s = sample_state();
  auto back = decode_state(encode_state(s));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, s);
  ASSERT_EQ(back->endpoints.size(), 2u);
  EXPECT_EQ(back->endpoints[0].declared, "vp0 bind=/run/vpd/vp0.sock bridge=br0 192.168.1.1/24 up");
  EXPECT_EQ(back->endpoints[1].declared, "");
}

TEST(StateText, empty_state_round_trips) {
  auto back = decode_state(encode_state(State{}));
  ASSERT_TRUE(succeeded(back));
  EXPECT_TRUE(back->endpoints.empty());
}

TEST(StateText, encoding_has_version_and_endpoint_list) {
  const json j = sample_json();
  EXPECT_EQ(j.at("version"), 1);
  ASSERT_TRUE(j.at("endpoints").is_array());
  EXPECT_EQ(j.at("endpoints").size(), 2u);
  EXPECT_EQ(j.at("endpoints")[0].at("name"), "vp0");
  EXPECT_EQ(j.at("endpoints")[0].at("declared"),
            "vp0 bind=/run/vpd/vp0.sock bridge=br0 192.168.1.1/24 up");
}

TEST(StateText, missing_declared_is_empty) {
  json j = sample_json();
  j["endpoints"][0].erase("declared");
  auto back = decode_state(j.dump());
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(back->endpoints[0].declared, "");
}

TEST(DecodeState, garbage_is_corrupt) {
  EXPECT_TRUE(fails_with(decode_state("\x7f"
                                      "ELF garbage"),
                         "state-corrupt", {"JSON object"}));
  EXPECT_TRUE(fails_with(decode_state(""), "state-corrupt"));
  EXPECT_TRUE(fails_with(decode_state("{\"version\":1,\"endpoints\":["), "state-corrupt"));
}

TEST(DecodeState, array_is_corrupt) {
  EXPECT_TRUE(fails_with(decode_state("[]"), "state-corrupt", {"JSON object"}));
}

TEST(DecodeState, wrong_version_is_corrupt) {
  json j = sample_json();
  j["version"] = 2;
  EXPECT_TRUE(fails_with(decode_state(j.dump()), "state-corrupt", {"version"}));
  j["version"] = "1";
  EXPECT_TRUE(fails_with(decode_state(j.dump()), "state-corrupt", {"version"}));
  j.erase("version");
  EXPECT_TRUE(fails_with(decode_state(j.dump()), "state-corrupt", {"version"}));
}

TEST(DecodeState, missing_endpoint_list_is_corrupt) {
  EXPECT_TRUE(fails_with(decode_state(R"({"version":1})"), "state-corrupt", {"endpoint list"}));
  EXPECT_TRUE(fails_with(decode_state(R"({"version":1,"endpoints":{}})"), "state-corrupt",
                         {"endpoint list"}));
}

TEST(DecodeState, duplicate_endpoint_is_corrupt) {
  json j = sample_json();
  j["endpoints"][1]["name"] = "vp0";
  EXPECT_TRUE(fails_with(decode_state(j.dump()), "state-corrupt", {"vp0", "twice"}));
}

TEST(DecodeState, bad_endpoint_is_corrupt) {
  json j = sample_json();
  j["endpoints"][1]["mac"] = "zz";
  EXPECT_TRUE(fails_with(decode_state(j.dump()), "state-corrupt", {"mac=zz"}));
}

TEST(DecodeState, endpoint_with_missing_field_is_corrupt) {
  json j = sample_json();
  j["endpoints"][0].erase("mtu");
  EXPECT_TRUE(fails_with(decode_state(j.dump()), "state-corrupt", {"'mtu'"}));
}

TEST(DecodeState, endpoint_that_is_not_an_object_is_corrupt) {
  EXPECT_TRUE(fails_with(decode_state(R"({"version":1,"endpoints":["vp0"]})"), "state-corrupt"));
}

// ---- files -------------------------------------------------------------------------------

TEST(StateFile, save_then_load_gives_the_same_state) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  ASSERT_TRUE(succeeded(save_state(path, sample_state())));
  auto back = load_state(path);
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, sample_state());
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"state.json"});  // no state.json.tmp
  EXPECT_EQ(read_file(path), encode_state(sample_state()));
}

TEST(StateFile, saved_file_is_private) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  ASSERT_TRUE(succeeded(save_state(path, sample_state())));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(StateFile, save_replaces_the_old_state) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  ASSERT_TRUE(succeeded(save_state(path, sample_state())));
  ASSERT_TRUE(succeeded(save_state(path, State{})));
  auto back = load_state(path);
  ASSERT_TRUE(succeeded(back));
  EXPECT_TRUE(back->endpoints.empty());
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"state.json"});
}

TEST(StateFile, load_of_missing_file_is_empty) {
  TempDir dir;
  auto state = load_state(dir.file("state.json"));
  ASSERT_TRUE(succeeded(state));
  EXPECT_TRUE(state->endpoints.empty());
}

TEST(StateFile, load_of_corrupt_file_names_the_path) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  write_file(path, "{ not json");
  EXPECT_TRUE(fails_with(load_state(path), "state-corrupt", {path + ": "}));
}

TEST(StateFile, save_into_missing_directory_fails) {
  TempDir dir;
  const std::string path = dir.file("no-such-dir/state.json");
  EXPECT_TRUE(fails_with(save_state(path, sample_state()), "system", {"no-such-dir"}));
  EXPECT_TRUE(dir.entries().empty());
}

TEST(StateFile, failed_save_leaves_the_existing_file_intact) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  ASSERT_TRUE(succeeded(save_state(path, sample_state())));
  const std::string before = read_file(path);
  // A directory where the temporary file must go: open() fails even for root.
  fs::create_directory(path + ".tmp");
  EXPECT_TRUE(fails_with(save_state(path, State{}), "system", {"state.json.tmp"}));
  EXPECT_EQ(read_file(path), before);
  auto back = load_state(path);
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, sample_state());
}

TEST(StateFile, save_into_read_only_directory_fails_and_keeps_the_file) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  ASSERT_TRUE(succeeded(save_state(path, sample_state())));
  const std::string before = read_file(path);
  const fs::path parent = fs::path(path).parent_path();
  // r-x for everyone: nobody but root may create the temporary file. Root ignores
  // permissions, so the save runs in a child that has dropped to an unprivileged uid.
  fs::permissions(parent, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                              fs::perms::group_exec | fs::perms::others_read |
                              fs::perms::others_exec);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(3);
    auto saved = save_state(path, State{});
    ::_exit(!saved && saved.error().code == "system" ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  fs::permissions(parent, fs::perms::owner_all);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "save_state into a read-only directory did not fail";
  EXPECT_EQ(read_file(path), before);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(SetAside, renames_to_a_dated_corrupt_name) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  write_file(path, "garbage one");
  auto target = set_aside(path);
  ASSERT_TRUE(succeeded(target));
  const std::string prefix = path + ".corrupt-";
  ASSERT_EQ(target->rfind(prefix, 0), 0u) << *target;
  EXPECT_TRUE(std::regex_match(target->substr(prefix.size()), std::regex(R"(\d{8}-\d{6})")))
      << *target;
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(read_file(*target), "garbage one");
}

TEST(SetAside, second_set_aside_does_not_overwrite_the_first) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  write_file(path, "garbage one");
  auto first = set_aside(path);
  ASSERT_TRUE(succeeded(first));
  write_file(path, "garbage two");
  auto second = set_aside(path);
  ASSERT_TRUE(succeeded(second));
  EXPECT_NE(*first, *second);
  EXPECT_EQ(read_file(*first), "garbage one");
  EXPECT_EQ(read_file(*second), "garbage two");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(dir.entries().size(), 2u);
}

TEST(SetAside, many_in_one_second_all_survive) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  std::vector<std::string> targets;
  for (int i = 0; i < 5; ++i) {
    write_file(path, "garbage " + std::to_string(i));
    auto t = set_aside(path);
    ASSERT_TRUE(succeeded(t)) << i;
    targets.push_back(*t);
  }
  for (size_t i = 0; i < targets.size(); ++i) {
    EXPECT_EQ(read_file(targets[i]), "garbage " + std::to_string(i));
  }
  EXPECT_EQ(dir.entries().size(), 5u);
}

TEST(SetAside, missing_file_fails) {
  TempDir dir;
  EXPECT_TRUE(fails_with(set_aside(dir.file("state.json")), "system", {"rename"}));
}

}  // namespace
}  // namespace vp::control
