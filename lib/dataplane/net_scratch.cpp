#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "dataplane/forward.hpp"
#include "dataplane/forward_internal.hpp"

namespace vp::dataplane {

NetScratch::NetScratch(std::size_t iovecs)
    : iovecs_(std::max<std::size_t>(iovecs, 2)),
      iov_(std::make_unique<iovec[]>(iovecs_)),
      rx_(std::make_unique<RxBuffer[]>(iovecs_)),
      tx_flat_(std::make_unique<std::byte[]>(kTxFlatSize)) {}

bool consume_kick(int kick_fd, NetCounters& c) noexcept {
  eventfd_t value = 0;
  ssize_t n;
  do {
    n = ::read(kick_fd, &value, sizeof value);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof value)) return false;
  ++c.kicks;
  return true;
}

namespace detail {

bool signal_eventfd(int fd) noexcept {
  if (fd < 0) return false;
  const eventfd_t one = 1;
  ssize_t n;
  do {
    n = ::write(fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof one);
}

}  // namespace detail
}  // namespace vp::dataplane
