#include "daemon/stream_port.hpp"

#include <sys/epoll.h>

#include <cstring>

#include "sys/log.hpp"

namespace vp::daemon {

StreamPort::StreamPort(Worker& worker, uint32_t id, control::EndpointConfig config, net::Tap tap,
                       Fd listener, std::shared_ptr<PortStatus> status)
    : Port(worker, id, std::move(config), std::move(status), "stream frontend"),
      tap_(std::move(tap)),
      tap_interest_(epoll(), tap_.fd(), tag(EventKind::kTap)),
      in_(std::make_unique<stream::Reassembler>()),
      out_(std::make_unique<stream::OutBuffer>()) {
  session_.hdr_len = static_cast<size_t>(config_.vnet_hdr_len());
  session_.lock_mac = config_.lock_mac;
  session_.guest_mac = control::guest_mac_of(config_, net::read_machine_id()).bytes;
  session_.read_budget = kRoundsPerWake;
  session_.frame_budget = kRoundsPerWake * 16;
  // Whatever a previous transport left: the header size vpd reads and writes, no offloads
  // (there is no header on the wire to carry them), no carrier until a frontend connects.
  if (auto ok = tap_.set_vnet_hdr_size(config_.vnet_hdr_len()); !ok) {
    log::error(name(), ": ", ok.error().message);
  }
  if (auto ok = tap_.set_offload(0); !ok) log::error(name(), ": ", ok.error().message);
  (void)tap_.set_carrier(false);
  open_frontend(std::move(listener));
}

StreamPort::~StreamPort() { close_for_detach(); }

bool StreamPort::fill_view(SessionView& v) const {
  v.tun_offloads = 0;
  v.carrier = conn_.valid();  // carrier follows the stream session
  return false;               // no negotiation: the registry's settings stand
}

void StreamPort::start_session(Fd conn) {
  conn_ = std::move(conn);
  in_->clear();
  out_->clear();
  tap_blocked_ = false;
  from_peer_pending_ = to_peer_pending_ = false;
  conn_interest_ = Interest(epoll(), conn_.get(), tag(EventKind::kConnection),
                            /*registered_when_empty=*/true);
  (void)tap_.set_carrier(true);
  update_interest();
  to_peer();  // frames already queued in the TAP
}

void StreamPort::close_session(std::string_view why) {
  conn_interest_.clear();
  tap_interest_.clear();
  conn_.reset();
  from_peer_pending_ = to_peer_pending_ = false;
  forget_pending();
  (void)tap_.set_carrier(false);
  log::notice(name(), ": stream session ended (", why, ")");
}

void StreamPort::update_interest() {
  if (!conn_) return;
  conn_interest_.set((tap_blocked_ ? 0u : static_cast<uint32_t>(EPOLLIN)) |
                     (peer_blocked() ? static_cast<uint32_t>(EPOLLOUT) : 0u));
  tap_interest_.set((peer_blocked() ? 0u : static_cast<uint32_t>(EPOLLIN)) |
                    (tap_blocked_ ? static_cast<uint32_t>(EPOLLOUT) : 0u));
}

void StreamPort::on_connection(uint32_t events) {
  if (!conn_) return;
  if ((events & EPOLLOUT) && peer_blocked()) {
    if (!flush_out()) return;
    if (!peer_blocked()) to_peer();
    if (!conn_) return;
  }
  if (events & EPOLLIN) {
    from_peer();
    return;
  }
  if (events & (EPOLLHUP | EPOLLERR)) {
    // Gone while vpd was not reading (the TAP is full): what it sent cannot be delivered.
    if (in_->pending()) ++local_.stream_truncated;
    end_session("the frontend closed the connection");
  }
}

void StreamPort::on_tap(uint16_t, uint32_t events) {
  if (!conn_) return;
  if ((events & EPOLLOUT) && tap_blocked_) {
    tap_blocked_ = false;
    update_interest();
    from_peer();
    if (!conn_) return;
  }
  if (events & EPOLLIN) to_peer();
}

void StreamPort::continue_pending() {
  if (from_peer_pending_) from_peer();
  if (to_peer_pending_) to_peer();
}

void StreamPort::closed(const stream::ForwardResult& r) {
  end_session(r.error == 0 ? "the frontend closed the connection" : std::strerror(r.error));
}

void StreamPort::from_peer() {
  from_peer_pending_ = false;
  if (!conn_) return;
  const stream::ForwardResult r = stream::from_peer(conn_.get(), tap_.fd(), *in_, session_, local_);
  switch (r.status) {
    case stream::ForwardStatus::kDone:
    case stream::ForwardStatus::kPeerFull:
      break;
    case stream::ForwardStatus::kBudget:
      from_peer_pending_ = true;
      mark_pending();
      break;
    case stream::ForwardStatus::kTapFull:
      // Wait for EPOLLOUT on the TAP; the socket is not read meanwhile.
      tap_blocked_ = true;
      update_interest();
      break;
    case stream::ForwardStatus::kBadLength:
      log::warning(name(), ": the stream frontend sent a frame length of ", r.length,
                   " (allowed: 1-", stream::kMaxFrame, "); closing the connection");
      end_session("bad frame length");
      break;
    case stream::ForwardStatus::kClosed:
      closed(r);
      break;
  }
}

bool StreamPort::flush_out() {
  const stream::ForwardResult r = stream::flush_out(conn_.get(), *out_, local_);
  if (r.status == stream::ForwardStatus::kClosed) {
    closed(r);
    return false;
  }
  update_interest();
  return true;
}

void StreamPort::to_peer() {
  to_peer_pending_ = false;
  if (!conn_ || peer_blocked()) return;
  const stream::ForwardResult r = stream::to_peer(tap_.fd(), conn_.get(), *out_, session_, local_);
  switch (r.status) {
    case stream::ForwardStatus::kClosed:
      closed(r);
      return;
    case stream::ForwardStatus::kBudget:
      to_peer_pending_ = true;
      mark_pending();
      break;
    default:
      break;
  }
  update_interest();  // the frontend may be full now: stop reading the TAP
}

}  // namespace vp::daemon
