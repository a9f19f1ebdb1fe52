// The key=value grammar and the config file parser (lib/control/grammar, config_file): the
// text an operator (or a local user with vpctl) writes. Every input must parse or be
// refused with an error; an accepted declaration must survive ConfigEntry::spec() (what the
// state file remembers) unchanged, and apply_change() must never crash on what parsed.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "control/config_file.hpp"
#include "control/endpoint.hpp"
#include "control/grammar.hpp"
#include "fuzz_check.hpp"

using namespace vp::control;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // The config file: several lines, comments, names.
  auto entries = parse_config(text, "fuzz.conf");
  if (entries) {
    for (const ConfigEntry& entry : *entries) {
      EndpointConfig config;
      config.name = entry.name.empty() ? "vp0" : entry.name;
      auto applied = apply_change(config, entry.change);
      if (applied) (void)to_tokens(*applied);
      // The remembered declaration parses back to the same entry.
      auto again = parse_config(entry.spec(), "fuzz.conf");
      FUZZ_CHECK(again.has_value());
      FUZZ_CHECK(again->size() == 1);
      FUZZ_CHECK((*again)[0].spec() == entry.spec());
    }
  }

  // vpctl / control protocol tokens: split at white space, as a shell would.
  std::vector<std::string> tokens;
  std::string word;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\t') {
      if (!word.empty()) tokens.push_back(std::move(word));
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) tokens.push_back(std::move(word));
  auto change = parse_change(tokens);
  if (change) {
    (void)change->sets_nothing();
    EndpointConfig config;
    config.name = "vp0";
    auto applied = apply_change(config, *change);
    if (applied) FUZZ_CHECK(validate(*applied).has_value());
  }
  for (const std::string& t : tokens) {
    (void)is_keyword(t);
    (void)looks_like_address(t);
  }

  // io-pkt style command line: peer=A,bind=B,... over the same words.
  (void)parse_command_line_specs(tokens);
  return 0;
}
