#pragma once

// One transport=stream endpoint on its worker: QEMU's `-netdev stream` framing (4-byte
// big-endian length + raw Ethernet frame) on one Unix socket, forwarded to and from the
// endpoint's TAP queue by stream::from_peer()/to_peer(). The TAP has no offloads
// (TUNSETOFFLOAD 0), so the kernel hands complete frames; its vnet header is read and
// dropped towards the frontend and written as zeros towards the TAP.
//
// Backpressure: when the TAP says EAGAIN vpd stops reading the socket; when the frontend
// does not read, vpd stops reading the TAP. Either way the other side's kernel queue holds
// the rest and the worker goes on serving its other endpoints.

#include <memory>

#include "daemon/port.hpp"
#include "net/tap.hpp"
#include "stream/codec.hpp"
#include "stream/forward.hpp"

namespace vp::daemon {

class StreamPort final : public Port {
 public:
  StreamPort(Worker& worker, uint32_t id, control::EndpointConfig config, net::Tap tap, Fd listener,
             std::shared_ptr<PortStatus> status);
  ~StreamPort() override;

 private:
  bool session_open() const override { return conn_.valid(); }
  void start_session(Fd conn) override;
  void close_session(std::string_view why) override;
  void on_connection(uint32_t events) override;
  void on_tap(uint16_t pair, uint32_t events) override;
  void continue_pending() override;
  bool fill_view(SessionView& v) const override;

  /// Socket: readable unless the TAP is full, writable while a frame waits for room; it
  /// stays registered with an empty mask too, for EPOLLHUP. TAP: readable unless the
  /// frontend is full, writable while a frame waits for room.
  void update_interest();
  /// Frontend → TAP, then reacts to what stopped it.
  void from_peer();
  /// TAP → frontend, then reacts to what stopped it.
  void to_peer();
  /// Sends the rest of a blocked frame. False when the session ended.
  bool flush_out();
  /// The session ends because of `r` (kClosed).
  void closed(const stream::ForwardResult& r);
  bool peer_blocked() const { return out_->blocked; }

  net::Tap tap_;
  Fd conn_;
  Interest conn_interest_;
  Interest tap_interest_;
  std::unique_ptr<stream::Reassembler> in_;  // sized once, for the largest legal frame
  std::unique_ptr<stream::OutBuffer> out_;
  stream::StreamSession session_;
  bool tap_blocked_ = false;  // the TAP said EAGAIN: the socket is not read until EPOLLOUT
  bool from_peer_pending_ = false;
  bool to_peer_pending_ = false;
};

}  // namespace vp::daemon
