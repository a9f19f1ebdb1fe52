#include "sys/error.hpp"

#include <cstring>

namespace vp {

std::unexpected<Error> sys_fail(std::string_view step, int err) {
  std::string message(step);
  message += ": ";
  message += std::strerror(err);
  return fail("system", std::move(message));
}

}  // namespace vp
