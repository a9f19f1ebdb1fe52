// The table of endpoint keys, one loop per property: a new row is tested without a new test.

#include "control/keys.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "control/config_file.hpp"
#include "control/endpoint.hpp"
#include "control/grammar.hpp"
#include "unit_expect.hpp"

namespace vp::control {
namespace {

using nlohmann::json;
using unit::succeeded;

EndpointConfig base() {
  EndpointConfig c;
  c.name = "vp0";
  c.mac = *net::parse_mac("02:00:00:00:00:01");
  return c;
}

// The configuration that one key's example token makes of base().
EndpointConfig with_example(const KeyRow& row) {
  const std::vector<std::string> tokens{std::string(row.example)};
  auto change = parse_change(tokens);
  EXPECT_TRUE(succeeded(change)) << row.example;
  auto c = apply_change(base(), change ? *change : Change{});
  EXPECT_TRUE(succeeded(c)) << row.example;
  return c ? *c : base();
}

// The endpoint as the state file loads it: JSON text and back.
Result<EndpointConfig> through_json(const EndpointConfig& c) {
  return endpoint_from_json(json::parse(to_json(c).dump()));
}

// The endpoint as its tokens (a config file line, the log) parse back.
Result<EndpointConfig> through_tokens(const std::vector<std::string>& tokens,
                                      const std::string& name) {
  auto change = parse_change(tokens);
  if (!change) return std::unexpected(change.error());
  EndpointConfig start;
  start.name = name;
  return apply_change(start, *change);
}

// A row that keeps a setting of its own (name= only picks a name; rate= sets other rows').
bool is_setting(const KeyRow& row) { return !row.create_only && !row.shorthand; }

TEST(EndpointKeys, names_are_unique_and_every_row_parses) {
  std::set<std::string_view> names;
  for (const KeyRow& row : endpoint_keys()) {
    EXPECT_TRUE(names.insert(row.name).second) << row.name;
    EXPECT_NE(row.parse, nullptr) << row.name;
    EXPECT_EQ(find_key(row.name), &row) << row.name;
    EXPECT_TRUE(is_keyword(row.name)) << row.name << " could name an endpoint";
    EXPECT_EQ(row.clearable, row.clear != nullptr) << row.name;
    if (is_setting(row)) {
      EXPECT_NE(row.apply, nullptr) << row.name;
      EXPECT_NE(row.get, nullptr) << row.name;
      EXPECT_NE(row.json_kind, JsonKind::kNone) << row.name;
      EXPECT_FALSE(row.json_field.empty()) << row.name;
    }
    EXPECT_EQ(row.remove != nullptr, row.repeatable) << row.name << ": -key=VALUE";
  }
}

TEST(EndpointKeys, every_example_changes_the_endpoint) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!is_setting(row)) continue;
    EXPECT_NE(with_example(row), base()) << row.example << " has no apply step";
  }
}

TEST(EndpointKeys, every_key_round_trips_through_json) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!is_setting(row)) continue;
    const EndpointConfig c = with_example(row);
    auto back = through_json(c);
    ASSERT_TRUE(succeeded(back)) << row.example;
    EXPECT_EQ(*back, c) << row.example;
    EXPECT_EQ(to_json(c).at(std::string(row.json_field)), row.get(c)) << row.example;
  }
}

TEST(EndpointKeys, every_key_round_trips_through_tokens) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!is_setting(row)) continue;
    const EndpointConfig c = with_example(row);
    auto back = through_tokens(to_tokens(c), c.name);
    ASSERT_TRUE(succeeded(back)) << row.example;
    EXPECT_EQ(*back, c) << row.example;
  }
}

TEST(EndpointKeys, every_key_round_trips_through_a_config_file_line) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!is_setting(row)) continue;
    const EndpointConfig c = with_example(row);
    std::string line = c.name;
    for (const auto& t : to_tokens(c)) line += " " + t;
    auto entries = parse_config(line + "\n", "vpd.conf");
    ASSERT_TRUE(succeeded(entries)) << line;
    ASSERT_EQ(entries->size(), 1u) << line;
    EndpointConfig start;
    start.name = entries->front().name;
    auto back = apply_change(start, entries->front().change);
    ASSERT_TRUE(succeeded(back)) << line;
    EXPECT_EQ(*back, c) << line;
  }
}

// A key left out of the JSON or the tokens would lose the setting on the next restart.
TEST(EndpointKeys, a_key_missing_from_the_json_loses_its_setting) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!is_setting(row)) continue;
    const EndpointConfig c = with_example(row);
    json j = to_json(c);
    ASSERT_TRUE(j.contains(std::string(row.json_field))) << row.example;
    j.erase(std::string(row.json_field));
    auto back = endpoint_from_json(j);
    if (row.json_required) {
      EXPECT_FALSE(back.has_value()) << row.example << ": a required field may not be missing";
    } else {
      ASSERT_TRUE(succeeded(back)) << row.example << ": older state files lack it";
      EXPECT_NE(*back, c) << row.example << ": the JSON field is what carries it";
    }
  }
}

TEST(EndpointKeys, a_key_missing_from_the_tokens_loses_its_setting) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!is_setting(row)) continue;
    const EndpointConfig c = with_example(row);
    std::vector<std::string> tokens = to_tokens(c);
    const std::string prefix = std::string(row.name) + (row.value.empty() ? "" : "=");
    const size_t before = tokens.size();
    std::erase_if(tokens, [&](const std::string& t) {
      return row.value.empty() ? t == prefix : t.starts_with(prefix);
    });
    ASSERT_LT(tokens.size(), before) << row.example << " is not in to_tokens()";
    auto back = through_tokens(tokens, c.name);
    // Without it the endpoint either does not load (mac=) or loads changed.
    EXPECT_TRUE(!back || *back != c) << row.example;
  }
}

TEST(EndpointKeys, clearable_keys_clear) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!row.clearable) continue;
    const std::vector<std::string> clear{"-" + std::string(row.name)};
    auto cleared = apply_change(with_example(row), *parse_change(clear));
    ASSERT_TRUE(succeeded(cleared)) << row.name;
    EXPECT_EQ(*cleared, base()) << "-" << row.name;
  }
}

TEST(EndpointKeys, repeatable_keys_remove_one_value) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!row.remove) continue;
    const std::string_view value = row.example.substr(row.example.find('=') + 1);
    const std::vector<std::string> remove{"-" + std::string(row.name) + "=" + std::string(value)};
    auto change = parse_change(remove);
    ASSERT_TRUE(succeeded(change)) << remove[0];
    auto c = apply_change(with_example(row), *change);
    ASSERT_TRUE(succeeded(c)) << remove[0];
    EXPECT_EQ(*c, base()) << remove[0];
  }
}

TEST(EndpointKeys, keys_that_cannot_be_cleared_refuse_minus) {
  for (const KeyRow& row : endpoint_keys()) {
    if (row.clearable) continue;
    const std::vector<std::string> tokens{"-" + std::string(row.name)};
    EXPECT_TRUE(unit::fails_with(parse_change(tokens), "unknown-key")) << row.name;
  }
}

TEST(EndpointKeys, flags_take_no_value_and_valued_keys_need_one) {
  for (const KeyRow& row : endpoint_keys()) {
    const std::vector<std::string> wrong{row.value.empty() ? std::string(row.name) + "=1"
                                                           : std::string(row.name)};
    EXPECT_FALSE(parse_change(wrong).has_value()) << wrong[0];
  }
}

TEST(EndpointKeys, guest_sees_exactly_the_marked_keys) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!is_setting(row)) continue;
    EXPECT_EQ(guest_sees_change(base(), with_example(row)), row.guest_sees) << row.example;
  }
  EndpointConfig off = base();
  off.toggles &= ~net::toggle::kTso4;
  EXPECT_TRUE(guest_sees_change(base(), off)) << "offload toggles reach the guest";
  EndpointConfig up = base();
  up.up = true;
  EXPECT_FALSE(guest_sees_change(base(), up)) << "link state is the host's";
}

TEST(EndpointKeys, create_only_keys_set_nothing) {
  for (const KeyRow& row : endpoint_keys()) {
    if (!row.create_only) continue;
    const std::vector<std::string> tokens{std::string(row.example)};
    auto change = parse_change(tokens);
    ASSERT_TRUE(succeeded(change)) << row.example;
    EXPECT_TRUE(change->sets_nothing()) << row.example;
    EXPECT_EQ(*apply_change(base(), *change), base()) << row.example;
  }
}

TEST(EndpointKeys, unknown_key_message_lists_every_key) {
  const std::vector<std::string> tokens{"-colour"};
  auto change = parse_change(tokens);
  ASSERT_FALSE(change.has_value());
  for (const KeyRow& row : endpoint_keys()) {
    const std::string word = std::string(row.name) + (row.value.empty() ? "" : "=");
    EXPECT_NE(change.error().message.find(word), std::string::npos) << word;
    if (row.clearable) {
      EXPECT_NE(change.error().message.find("-" + std::string(row.name)), std::string::npos)
          << row.name;
    }
  }
}

}  // namespace
}  // namespace vp::control
