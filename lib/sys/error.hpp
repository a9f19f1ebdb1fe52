#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace vp {

/// A refused request or a failed step. `code` is stable (it is part of the control
/// protocol, docs/protocol.md); `message` is a sentence for a person, saying what is
/// wrong and, where possible, what to do about it.
struct Error {
  std::string code;
  std::string message;

  bool operator==(const Error&) const = default;
};

template <class T>
using Result = std::expected<T, Error>;

/// Builds the unexpected value of a Result.
inline std::unexpected<Error> fail(std::string code, std::string message) {
  return std::unexpected(Error{std::move(code), std::move(message)});
}

/// A failed system call: code "system", message "<step>: <strerror(err)>".
std::unexpected<Error> sys_fail(std::string_view step, int err);

}  // namespace vp
