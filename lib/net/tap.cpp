#include "net/tap.hpp"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include "net/ifname.hpp"
#include "net/offloads.hpp"
#include "sys/str.hpp"

namespace vp::net {
namespace {

Result<Fd> open_tun() {
  Fd fd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return sys_fail("open /dev/net/tun", errno);
  return fd;
}

Result<unsigned> get_features(int fd) {
  unsigned features = 0;
  if (::ioctl(fd, TUNGETFEATURES, &features) < 0) return sys_fail("TUNGETFEATURES", errno);
  return features;
}

/// TUNSETIFF on `fd`; returns 0 or the errno. On success `actual` is the name the kernel used.
int set_iff(int fd, std::string_view name, bool multi_queue, std::string& actual) {
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min<size_t>(name.size(), IFNAMSIZ - 1));
  int flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (multi_queue) flags |= IFF_MULTI_QUEUE;
  ifr.ifr_flags = static_cast<short>(flags);
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) return errno;
  actual.assign(ifr.ifr_name, ::strnlen(ifr.ifr_name, IFNAMSIZ));
  return 0;
}

}  // namespace

Result<Tap> Tap::duplicate() const {
  Tap copy;
  copy.fd_.reset(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!copy.fd_) return sys_fail(str("dup TAP queue of ", name_), errno);
  copy.name_ = name_;
  copy.multi_queue_ = multi_queue_;
  return copy;
}

Result<Tap> Tap::open(std::string_view name, bool multi_queue) {
  if (auto valid = validate_ifname(name); !valid) return std::unexpected(std::move(valid.error()));
  auto fd = open_tun();
  if (!fd) return std::unexpected(std::move(fd.error()));
  auto features = get_features(fd->get());
  if (!features) return std::unexpected(std::move(features.error()));
  const bool mq_supported = (*features & IFF_MULTI_QUEUE) != 0;

  Tap tap;
  tap.multi_queue_ = multi_queue && mq_supported;
  int err = set_iff(fd->get(), name, tap.multi_queue_, tap.name_);
  // An existing TAP keeps the queue mode it was created with and the kernel refuses (EINVAL)
  // an attach that asks for the other one. Re-adopting a TAP made by hand (`ip tuntap`) or by
  // another vpd build should still work, so try the other mode once; multi_queue() tells.
  if (err == EINVAL && (tap.multi_queue_ || mq_supported)) {
    const int retry = set_iff(fd->get(), name, !tap.multi_queue_, tap.name_);
    if (retry == 0) tap.multi_queue_ = !tap.multi_queue_;
    if (retry != EINVAL) err = retry;  // 0, or the real reason (EBUSY: held elsewhere)
  }
  if (err != 0) {
    auto failure = sys_fail(str("TUNSETIFF ", name), err);
    if (err == EBUSY) {
      failure.error().message += " (this single-queue TAP is already open elsewhere)";
    } else if (err == EINVAL && ::if_nametoindex(std::string(name).c_str()) != 0) {
      failure.error().message += " (an interface of that name exists and is not a TAP)";
    }
    return failure;
  }
  tap.fd_ = std::move(*fd);
  return tap;
}

Result<void> Tap::set_persist(bool persist) {
  if (::ioctl(fd_.get(), TUNSETPERSIST, persist ? 1UL : 0UL) < 0) {
    return sys_fail(str("TUNSETPERSIST ", name_), errno);
  }
  return {};
}

Result<void> Tap::set_vnet_hdr_size(int size) {
  if (::ioctl(fd_.get(), TUNSETVNETHDRSZ, &size) < 0) {
    return sys_fail(str("TUNSETVNETHDRSZ ", name_), errno);
  }
  return {};
}

Result<unsigned> Tap::set_offload(unsigned flags) {
  // The kernel answers EINVAL to any flag it does not know, so an older kernel refuses the
  // whole request for USO (Linux 6.2; it also wants USO4 and USO6 together) or UFO (refused
  // by some 4.x kernels). Drop those one step at a time and report what was accepted.
  const unsigned attempts[] = {
      flags,
      flags & ~(tun::kUso4 | tun::kUso6),
      flags & ~(tun::kUso4 | tun::kUso6 | tun::kUfo),
  };
  int err = 0;
  for (size_t i = 0; i < std::size(attempts); ++i) {
    if (i > 0 && attempts[i] == attempts[i - 1]) continue;
    if (::ioctl(fd_.get(), TUNSETOFFLOAD, static_cast<unsigned long>(attempts[i])) == 0) {
      return attempts[i];
    }
    err = errno;
    if (err != EINVAL) break;
  }
  return sys_fail(str("TUNSETOFFLOAD ", name_), err);
}

Result<void> Tap::set_owner(uid_t uid, gid_t gid) {
  // The kernel refuses (uid_t)-1 (an invalid id): -1 means "leave as it is".
  if (uid != static_cast<uid_t>(-1) &&
      ::ioctl(fd_.get(), TUNSETOWNER, static_cast<unsigned long>(uid)) < 0) {
    return sys_fail(str("TUNSETOWNER ", name_), errno);
  }
  if (gid != static_cast<gid_t>(-1) &&
      ::ioctl(fd_.get(), TUNSETGROUP, static_cast<unsigned long>(gid)) < 0) {
    return sys_fail(str("TUNSETGROUP ", name_), errno);
  }
  return {};
}

Result<void> Tap::set_carrier(bool on) {
  int carrier = on ? 1 : 0;
  if (::ioctl(fd_.get(), TUNSETCARRIER, &carrier) < 0) {
    return sys_fail(str("TUNSETCARRIER ", name_), errno);
  }
  return {};
}

Result<unsigned> tun_features() {
  auto fd = open_tun();
  if (!fd) return std::unexpected(std::move(fd.error()));
  return get_features(fd->get());
}

}  // namespace vp::net
