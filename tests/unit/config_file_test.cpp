#include "control/config_file.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "unit_expect.hpp"

namespace vp::control {
namespace {

using unit::fails_with;
using unit::succeeded;
using Words = std::vector<std::string>;

// A private directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vp-config-test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const char* name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// ---- parse_config ------------------------------------------------------------------------

TEST(ParseConfig, empty_text_declares_nothing) {
  auto entries = parse_config("", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  EXPECT_TRUE(entries->empty());
}

TEST(ParseConfig, comments_and_blank_lines_declare_nothing) {
  auto entries = parse_config("# vpd endpoints\n\n   \t\n  # indented comment\n\n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  EXPECT_TRUE(entries->empty());
}

TEST(ParseConfig, named_line) {
  auto entries =
      parse_config("vp0 peer=/run/p.sock bind=/run/b.sock mac=02:00:00:00:00:01 up\n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 1u);
  const ConfigEntry& e = (*entries)[0];
  EXPECT_EQ(e.origin, "vpd.conf:1");
  EXPECT_EQ(e.name, "vp0");
  EXPECT_EQ(e.tokens,
            (Words{"peer=/run/p.sock", "bind=/run/b.sock", "mac=02:00:00:00:00:01", "up"}));
  EXPECT_EQ(e.change.peer, "/run/p.sock");
  EXPECT_EQ(e.change.bind, "/run/b.sock");
  EXPECT_TRUE(e.change.mac.has_value());
  EXPECT_EQ(e.change.up, true);
  EXPECT_EQ(e.spec(), "vp0 peer=/run/p.sock bind=/run/b.sock mac=02:00:00:00:00:01 up");
}

TEST(ParseConfig, unnamed_line) {
  auto entries = parse_config("name=gw bind=/run/gw.sock mtu=9000\n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 1u);
  const ConfigEntry& e = (*entries)[0];
  EXPECT_EQ(e.name, "");
  EXPECT_EQ(e.change.prefix, "gw");
  EXPECT_EQ(e.change.mtu, 9000u);
  EXPECT_EQ(e.spec(), "name=gw bind=/run/gw.sock mtu=9000");
}

TEST(ParseConfig, name_alone_on_a_line) {
  auto entries = parse_config("vp4\n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].name, "vp4");
  EXPECT_TRUE((*entries)[0].tokens.empty());
  EXPECT_EQ((*entries)[0].spec(), "vp4");
}

TEST(ParseConfig, first_word_that_is_a_keyword_or_address_is_not_a_name) {
  auto entries =
      parse_config("up bind=/run/a.sock\n10.0.0.1/8 bind=/run/b.sock\n-tso4\n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 3u);
  for (const auto& e : *entries) EXPECT_EQ(e.name, "") << e.origin;
  EXPECT_EQ((*entries)[0].change.up, true);
  EXPECT_EQ((*entries)[1].change.add_addresses.size(), 1u);
  EXPECT_NE((*entries)[2].change.toggles_off, 0u);
}

TEST(ParseConfig, line_numbers_count_comments_and_blank_lines) {
  const char* text =
      "# header\n"
      "\n"
      "vp0 bind=/run/a.sock   # trailing comment\n"
      "\n"
      "vp1 bind=/run/b.sock\n";
  auto entries = parse_config(text, "/etc/vpd/vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].origin, "/etc/vpd/vpd.conf:3");
  EXPECT_EQ((*entries)[0].tokens, Words{"bind=/run/a.sock"});
  EXPECT_EQ((*entries)[1].origin, "/etc/vpd/vpd.conf:5");
  EXPECT_EQ((*entries)[1].name, "vp1");
}

TEST(ParseConfig, crlf_line_ends) {
  auto entries = parse_config("# c\r\nvp0 mtu=9000\r\n\r\nvp1 up\r\n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, "vp0");
  EXPECT_EQ((*entries)[0].tokens, Words{"mtu=9000"});
  EXPECT_EQ((*entries)[0].change.mtu, 9000u);
  EXPECT_EQ((*entries)[1].origin, "vpd.conf:4");
  EXPECT_EQ((*entries)[1].tokens, Words{"up"});
}

TEST(ParseConfig, tabs_and_runs_of_spaces_separate_words) {
  auto entries = parse_config("\tvp0\t\tmtu=9000    up  \n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].name, "vp0");
  EXPECT_EQ((*entries)[0].tokens, (Words{"mtu=9000", "up"}));
  EXPECT_EQ((*entries)[0].spec(), "vp0 mtu=9000 up");
}

TEST(ParseConfig, last_line_without_newline) {
  auto entries = parse_config("vp0 up\nvp1 down", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[1].name, "vp1");
  EXPECT_EQ((*entries)[1].change.up, false);
}

TEST(ParseConfig, bad_value_carries_file_and_line) {
  const char* text =
      "vp0 up\n"
      "\n"
      "vp1 mac=zz\n";
  auto entries = parse_config(text, "vpd.conf");
  EXPECT_TRUE(fails_with(entries, "invalid-mac", {"vpd.conf:3: mac=zz "}));
  ASSERT_FALSE(entries);
  EXPECT_EQ(entries.error().message.rfind("vpd.conf:3: ", 0), 0u) << entries.error().message;
}

TEST(ParseConfig, unknown_key_carries_file_and_line) {
  auto entries = parse_config("vp0 up\nvp1 colour=red\n", "vpd.conf");
  EXPECT_TRUE(fails_with(entries, "unknown-key", {"vpd.conf:2: ", "'colour=red'"}));
}

TEST(ParseConfig, bad_name_carries_file_and_line) {
  auto entries = parse_config("vp/0 up\n", "vpd.conf");
  EXPECT_TRUE(fails_with(entries, "invalid-name", {"vpd.conf:1: "}));
  auto long_name = parse_config("\nabcdefghijklmnop up\n", "vpd.conf");
  EXPECT_TRUE(fails_with(long_name, "name-too-long", {"vpd.conf:2: "}));
}

TEST(ParseConfig, duplicate_name_names_the_second_line) {
  const char* text =
      "vp0 bind=/run/a.sock\n"
      "vp1 bind=/run/b.sock\n"
      "# again\n"
      "vp0 bind=/run/c.sock\n";
  EXPECT_TRUE(fails_with(parse_config(text, "vpd.conf"), "conflicting-settings",
                         {"vpd.conf:4: ", "vp0", "second time"}));
}

TEST(ParseConfig, unnamed_lines_may_repeat) {
  auto entries = parse_config("name=vp bind=/run/a.sock\nname=vp bind=/run/b.sock\n", "vpd.conf");
  ASSERT_TRUE(succeeded(entries));
  EXPECT_EQ(entries->size(), 2u);
}

TEST(ParseConfig, create_in_a_line_is_refused) {
  EXPECT_TRUE(fails_with(parse_config("vp0 create bind=/run/a.sock\n", "vpd.conf"), "bad-value",
                         {"vpd.conf:1: ", "create or destroy"}));
}

TEST(ParseConfig, destroy_in_a_line_is_refused) {
  EXPECT_TRUE(fails_with(parse_config("# x\nvp0 destroy\n", "vpd.conf"), "bad-value",
                         {"vpd.conf:2: ", "create or destroy"}));
}

TEST(ParseConfig, name_and_name_prefix_together_are_refused) {
  EXPECT_TRUE(fails_with(parse_config("vp0 name=gw\n", "vpd.conf"), "conflicting-settings",
                         {"vpd.conf:1: ", "name=PREFIX"}));
}

// A first word that looks like an address but is one vpd refuses (loopback, multicast)
// falls through to the name check and becomes an endpoint called "127.0.0.1": the line
// should be refused as an address instead.
TEST(ParseConfig, refused_address_as_first_word_is_not_taken_as_a_name) {
  auto entries = parse_config("127.0.0.1 bind=/run/a.sock\n", "vpd.conf");
  EXPECT_TRUE(fails_with(entries, "invalid-address", {"vpd.conf:1: "}))
      << (entries && !entries->empty() ? "declared endpoint named " + (*entries)[0].name : "");
}

// ---- read_config_file --------------------------------------------------------------------

TEST(ReadConfigFile, missing_file_declares_nothing) {
  TempDir dir;
  auto entries = read_config_file(dir.file("absent.conf"));
  ASSERT_TRUE(succeeded(entries));
  EXPECT_TRUE(entries->empty());
}

TEST(ReadConfigFile, real_file_is_parsed_with_its_path_as_origin) {
  TempDir dir;
  const std::string path = dir.file("vpd.conf");
  write_file(path, "# test\nvp0 bind=/run/a.sock mtu=9000\nname=gw up\n");
  auto entries = read_config_file(path);
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].origin, path + ":2");
  EXPECT_EQ((*entries)[0].name, "vp0");
  EXPECT_EQ((*entries)[0].change.mtu, 9000u);
  EXPECT_EQ((*entries)[1].origin, path + ":3");
  EXPECT_EQ((*entries)[1].change.prefix, "gw");
}

TEST(ReadConfigFile, error_names_the_real_path) {
  TempDir dir;
  const std::string path = dir.file("vpd.conf");
  write_file(path, "vp0 mtu=1\n");
  EXPECT_TRUE(fails_with(read_config_file(path), "bad-value", {path + ":1: mtu=1"}));
}

// ---- parse_command_line_specs ------------------------------------------------------------

TEST(CommandLineSpecs, every_peer_starts_an_endpoint) {
  const Words args{"peer=/a,bind=/b,mac=02:00:00:00:00:01,peer=/c,bind=/d"};
  auto entries = parse_command_line_specs(args);
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].tokens, (Words{"peer=/a", "bind=/b", "mac=02:00:00:00:00:01"}));
  EXPECT_EQ((*entries)[0].change.peer, "/a");
  EXPECT_EQ((*entries)[0].change.bind, "/b");
  EXPECT_TRUE((*entries)[0].change.mac.has_value());
  EXPECT_EQ((*entries)[1].tokens, (Words{"peer=/c", "bind=/d"}));
  EXPECT_EQ((*entries)[1].change.peer, "/c");
  EXPECT_FALSE((*entries)[1].change.mac.has_value());
  EXPECT_EQ((*entries)[0].name, "");
  EXPECT_EQ((*entries)[0].origin, "command line endpoint 1");
  EXPECT_EQ((*entries)[1].origin, "command line endpoint 2");
}

TEST(CommandLineSpecs, specs_split_over_several_arguments) {
  const Words args{"peer=/a,bind=/b", "mac=02:00:00:00:00:01,peer=/c", "bind=/d"};
  auto entries = parse_command_line_specs(args);
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].tokens, (Words{"peer=/a", "bind=/b", "mac=02:00:00:00:00:01"}));
  EXPECT_EQ((*entries)[1].tokens, (Words{"peer=/c", "bind=/d"}));
}

TEST(CommandLineSpecs, tokens_before_the_first_peer_go_to_the_first_group) {
  const Words args{"mtu=9000,bind=/b,peer=/a,peer=/c"};
  auto entries = parse_command_line_specs(args);
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].tokens, (Words{"mtu=9000", "bind=/b", "peer=/a"}));
  EXPECT_EQ((*entries)[0].change.mtu, 9000u);
  EXPECT_EQ((*entries)[1].tokens, Words{"peer=/c"});
  EXPECT_FALSE((*entries)[1].change.mtu.has_value());
}

TEST(CommandLineSpecs, no_arguments_declare_nothing) {
  auto entries = parse_command_line_specs(Words{});
  ASSERT_TRUE(succeeded(entries));
  EXPECT_TRUE(entries->empty());
}

TEST(CommandLineSpecs, empty_parts_between_commas_are_skipped) {
  const Words args{",peer=/a,,bind=/b,", ""};
  auto entries = parse_command_line_specs(args);
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].tokens, (Words{"peer=/a", "bind=/b"}));
}

TEST(CommandLineSpecs, error_names_the_group) {
  const Words args{"peer=/a,bind=/b,peer=/c,mac=zz"};
  EXPECT_TRUE(fails_with(parse_command_line_specs(args), "invalid-mac",
                         {"command line endpoint 2: mac=zz"}));
}

TEST(CommandLineSpecs, create_is_refused) {
  const Words args{"peer=/a,create"};
  EXPECT_TRUE(fails_with(parse_command_line_specs(args), "bad-value", {"create or destroy"}));
}

TEST(CommandLineSpecs, leading_name_names_the_endpoint) {
  const Words args{"vp5,peer=/a,bind=/b"};
  auto entries = parse_command_line_specs(args);
  ASSERT_TRUE(succeeded(entries));
  ASSERT_EQ(entries->size(), 1u);
  EXPECT_EQ((*entries)[0].name, "vp5");
  EXPECT_EQ((*entries)[0].tokens, (Words{"peer=/a", "bind=/b"}));
  EXPECT_EQ((*entries)[0].spec(), "vp5 peer=/a bind=/b");
}

}  // namespace
}  // namespace vp::control
