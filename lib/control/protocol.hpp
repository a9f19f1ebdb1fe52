#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "sys/error.hpp"

namespace vp::control {

/// Largest request line vpd reads; a longer one is refused and the connection closed.
inline constexpr size_t kMaxRequestBytes = 64 * 1024;

/// Operations of the control protocol (docs/protocol.md).
namespace op {
inline constexpr std::string_view kHello = "hello";
inline constexpr std::string_view kList = "list";
inline constexpr std::string_view kShow = "show";
inline constexpr std::string_view kCreate = "create";
inline constexpr std::string_view kSet = "set";
inline constexpr std::string_view kDestroy = "destroy";
/// Turns the connection into a subscription: one response, then one event line each.
inline constexpr std::string_view kMonitor = "monitor";

/// True for the ops that change nothing (hello, list, show, monitor): the only ones a
/// read-only control socket answers. An op not known here counts as a change, so a new op
/// is refused on a read-only socket until it is added.
bool is_read_only(std::string_view name);
}  // namespace op

/// The file name of the read-only control socket, beside control.sock in the runtime
/// directory.
inline constexpr std::string_view kReadOnlySocketName = "control-ro.sock";
/// The file name of the control socket.
inline constexpr std::string_view kSocketName = "control.sock";

/// One request: a JSON object on one line.
///   {"version":1,"op":"set","endpoint":"vp0","args":["mtu=9000","up"]}
struct Request {
  int version = 1;
  std::string op;
  std::string endpoint;           // "" when the op takes none (or create picks one)
  std::vector<std::string> args;  // vpctl tokens, parsed by vpd with parse_change()

  bool operator==(const Request&) const = default;
};

/// One response line:
///   {"version":1,"ok":true,"result":{...},"warnings":[...]}
///   {"version":1,"ok":false,"error":{"code":"invalid-mac","message":"..."}}
struct Response {
  bool ok = true;
  nlohmann::json result;  // null when there is nothing to return
  Error error;
  std::vector<std::string> warnings;

  bool operator==(const Response&) const = default;
};

/// The request as one line of JSON, newline included.
std::string encode(const Request& request);
/// Codes: bad-request (not JSON, not an object, wrong field types, unknown op),
/// unsupported-version. (A request refused by a read-only socket has code "permission".)
Result<Request> decode_request(std::string_view line);

std::string encode(const Response& response);
Result<Response> decode_response(std::string_view line);

Response error_response(Error error);

}  // namespace vp::control
