#include "net/link_events.hpp"

#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "sys/str.hpp"

namespace vp::net {

namespace {

std::string attr_string(const rtattr* a) {
  const auto* p = static_cast<const char*>(RTA_DATA(a));
  const size_t n = RTA_PAYLOAD(a);
  return std::string(p, strnlen(p, n));
}

void parse_link(const nlmsghdr* h, LinkEvent& ev) {
  const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
  ev.ifindex = ifi->ifi_index;
  int len = static_cast<int>(h->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof *ifi));
  for (const rtattr* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    if (a->rta_type == IFLA_IFNAME) {
      ev.name = attr_string(a);
    } else if (a->rta_type == IFLA_LINKINFO) {
      int inner = static_cast<int>(RTA_PAYLOAD(a));
      for (const auto* i = static_cast<const rtattr*>(RTA_DATA(a)); RTA_OK(i, inner);
           i = RTA_NEXT(i, inner)) {
        if (i->rta_type == IFLA_INFO_KIND) ev.kind = attr_string(i);
      }
    }
  }
}

}  // namespace

Result<LinkEvents> LinkEvents::open() {
  Fd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return fail("system", str("netlink socket: ", std::strerror(errno)));
  // Room for a burst (a bridge deleted under hundreds of ports); an overflow is survivable.
  const int size = 1 << 20;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  sockaddr_nl where{};
  where.nl_family = AF_NETLINK;
  where.nl_groups = RTMGRP_LINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&where), sizeof where) != 0) {
    return fail("system", str("subscribe to link changes: ", std::strerror(errno)));
  }
  return LinkEvents(std::move(fd));
}

bool LinkEvents::drain(const std::function<void(const LinkEvent&)>& on_event) {
  bool complete = true;
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        complete = false;
        continue;
      }
      return complete;  // EAGAIN: all read
    }
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buf); NLMSG_OK(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type != RTM_NEWLINK && h->nlmsg_type != RTM_DELLINK) continue;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) continue;
      LinkEvent ev;
      ev.removed = h->nlmsg_type == RTM_DELLINK;
      parse_link(h, ev);
      on_event(ev);
    }
  }
}

}  // namespace vp::net
