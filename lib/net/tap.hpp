#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "sys/error.hpp"
#include "sys/fd.hpp"

namespace vp::net {

/// One queue of a TAP device opened through /dev/net/tun with
/// IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, plus IFF_MULTI_QUEUE when the kernel offers it
/// (TUNGETFEATURES). Owns the queue fd; a persistent TAP outlives it.
class Tap {
 public:
  /// Attaches to the TAP `name`, creating it when absent. The name is validated before
  /// any syscall. The fd is O_NONBLOCK|O_CLOEXEC. Errors name the failing step
  /// ("open /dev/net/tun", "TUNSETIFF vp0").
  static Result<Tap> open(std::string_view name, bool multi_queue = true);

  Tap() = default;
  Tap(Tap&&) noexcept = default;
  Tap& operator=(Tap&&) noexcept = default;

  int fd() const noexcept { return fd_.get(); }
  const std::string& name() const noexcept { return name_; }
  /// Another handle (dup) on the same queue, e.g. for the data-path worker.
  Result<Tap> duplicate() const;
  bool multi_queue() const noexcept { return multi_queue_; }

  /// TUNSETPERSIST: a persistent TAP stays when the last queue closes. Clearing it and
  /// closing the last queue removes the device.
  Result<void> set_persist(bool persist);
  /// TUNSETVNETHDRSZ (10 or 12 for virtio-net).
  Result<void> set_vnet_hdr_size(int size);
  /// TUNSETOFFLOAD with `flags` (vp::net::tun::*). Where the kernel refuses USO (or
  /// UFO), retries without them; returns the flags actually set.
  Result<unsigned> set_offload(unsigned flags);
  /// TUNSETOWNER and TUNSETGROUP: who besides CAP_NET_ADMIN may attach to this TAP by name
  /// (transport=tap: the unprivileged VMM). -1 leaves that id as it is.
  Result<void> set_owner(uid_t uid, gid_t gid);
  /// TUNSETCARRIER: carrier on only while a guest's queues run.
  Result<void> set_carrier(bool on);
  /// Closes the queue fd now.
  void close() noexcept { fd_.reset(); }

 private:
  Fd fd_;
  std::string name_;
  bool multi_queue_ = false;
};

/// TUNGETFEATURES of /dev/net/tun (IFF_* flags the kernel supports), or an error.
Result<unsigned> tun_features();

}  // namespace vp::net
