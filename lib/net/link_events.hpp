#pragma once

// Link changes as the kernel announces them (RTNLGRP_LINK multicast on a route netlink
// socket): whatever changed an interface, vpd or someone else.

#include <functional>
#include <string>

#include "sys/error.hpp"
#include "sys/fd.hpp"

namespace vp::net {

/// One RTM_NEWLINK or RTM_DELLINK.
struct LinkEvent {
  bool removed = false;  // RTM_DELLINK
  int ifindex = 0;
  std::string name;  // IFLA_IFNAME
  std::string kind;  // IFLA_INFO_KIND: "tun", "bridge"; "" when none
};

class LinkEvents {
 public:
  /// A non-blocking socket subscribed to link changes.
  static Result<LinkEvents> open();
  int fd() const noexcept { return fd_.get(); }

  /// Reads every queued message and calls `on_event` for each link event. Returns false
  /// when the kernel dropped some (the socket overflowed: ENOBUFS), so the caller must look
  /// at every interface it cares about again.
  bool drain(const std::function<void(const LinkEvent&)>& on_event);

 private:
  explicit LinkEvents(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

}  // namespace vp::net
