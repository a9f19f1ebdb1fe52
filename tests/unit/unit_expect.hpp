#pragma once

// Small assertions shared by the unit tests: "this Result failed with this code and a
// sentence that says this", and "this text contains that".

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "sys/error.hpp"

namespace vp::unit {

inline ::testing::AssertionResult contains(std::string_view text, std::string_view part) {
  if (text.find(part) != std::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected to find \"" << part << "\" in \"" << text << "\"";
}

/// `result` failed with `code`, and its sentence contains every one of `parts`.
template <class T>
::testing::AssertionResult fails_with(const Result<T>& result, std::string_view code,
                                      std::initializer_list<std::string_view> parts = {}) {
  if (result) return ::testing::AssertionFailure() << "succeeded; expected error " << code;
  const Error& e = result.error();
  if (e.code != code) {
    return ::testing::AssertionFailure()
           << "error code is " << e.code << ", expected " << code << " (" << e.message << ")";
  }
  for (std::string_view part : parts) {
    if (e.message.find(part) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "error " << e.code << " message \"" << e.message << "\" lacks \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

/// `result` succeeded; otherwise shows its error.
template <class T>
::testing::AssertionResult succeeded(const Result<T>& result) {
  if (result) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "failed: " << result.error().code << ": " << result.error().message;
}

inline std::vector<std::string> words(std::initializer_list<const char*> list) {
  return std::vector<std::string>(list.begin(), list.end());
}

}  // namespace vp::unit
