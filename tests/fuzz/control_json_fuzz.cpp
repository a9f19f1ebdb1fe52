// Control protocol requests and responses (lib/control/protocol) and the state file
// (lib/control/state_file): JSON from a local client or from disk. Anything must decode or
// be refused; what decodes must encode and decode back to the same value.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "control/protocol.hpp"
#include "control/state_file.hpp"
#include "fuzz_check.hpp"

using namespace vp::control;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  if (auto request = decode_request(text)) {
    const std::string line = encode(*request);
    FUZZ_CHECK(!line.empty() && line.back() == '\n');
    auto again = decode_request(line);
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(*again == *request);
  }

  if (auto response = decode_response(text)) {
    auto again = decode_response(encode(*response));
    FUZZ_CHECK(again.has_value());
  }

  if (auto state = decode_state(text)) {
    auto again = decode_state(encode_state(*state));
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(*again == *state);
  }
  return 0;
}
