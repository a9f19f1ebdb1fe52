#include "sys/fd.hpp"

#include <unistd.h>

namespace vp {

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

}  // namespace vp
