#pragma once

// The vhost-user protocol engine, device side, kept apart from device policy: the engine owns
// the message loop and the device supplies only features, config and queue handlers. Backend owns
// one front-end connection: it reads and validates every message (request_table.hpp) before a
// handler runs, keeps the negotiation state, maps guest memory, holds the virtqueues and their
// eventfds, and decides when a ring starts and stops. A Device supplies only policy: the features
// it offers, its config space, and what to do when a ring starts or stops. Nothing here runs per
// packet.
//
// Threading: a Backend and its Device callbacks run on one thread (the worker that owns the
// endpoint). The data plane may run elsewhere only if the Device pauses it synchronously in
// on_queue_stopped(): when that call returns, nothing may touch the ring, its fds or guest
// memory until the matching on_queue_started().
//
// SPEC: QEMU docs/interop/vhost-user.rst; "Starting and stopping rings" is implemented as:
//  - a ring is *enabled* by SET_VRING_ENABLE 1 when VHOST_USER_F_PROTOCOL_FEATURES was acked
//    in SET_FEATURES, and otherwise as soon as it has a kick fd (and all rings when
//    SET_FEATURES acks without that bit), as libvhost-user and DPDK do;
//  - a ring is *started* (handed to the Device) once it has a size, addresses
//    that lie in guest memory, a kick eventfd, and has had its SET_VRING_CALL (an eventfd,
//    or NOFD for a polling driver). vpd starts it when the last of these arrives rather than
//    at the first kick, like libvhost-user and DPDK: the data plane polls the kick fd anyway.
//    Waiting for the call as DPDK does means a ring never runs without its notification fd:
//    QEMU sends KICK before CALL, and a ring started in between would swallow interrupts
//    (or, restarted at CALL, bounce once). A kick with the NOFD bit (polling) is refused:
//    vpd needs the eventfd;
//  - GET_VRING_BASE stops the ring and closes its kick and call fds; the front-end sends
//    them again before restarting it. Any change to a started ring (SET_VRING_*) stops it,
//    applies the change and starts it again, so the Device sees a consistent ring each time.
//  - a ring may be started and disabled: the spec asks a net device to supply no RX there and
//    to process and discard TX. The Device reads Vring::enabled in on_queue_started();
//    SET_VRING_ENABLE that changes it stops the ring and starts it again, so the Device
//    sees each state whole.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "sys/error.hpp"
#include "sys/fd.hpp"
#include "vhost/codec.hpp"
#include "vhost/messages.hpp"
#include "vhost/request_table.hpp"
#include "virtio/dirty_log.hpp"
#include "virtio/guest_memory.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/queue.hpp"
#include "virtio/split_queue.hpp"

namespace vp::vhost {

/// Error codes of refusals decided by the engine's handlers (the request was well-formed);
/// they extend the validate() codes in request_table.hpp.
namespace error {
inline constexpr std::string_view kBadFeatures = "vhost-bad-features";
inline constexpr std::string_view kBadMemory = "vhost-bad-memory";
inline constexpr std::string_view kBadRing = "vhost-bad-ring";
inline constexpr std::string_view kBadValue = "vhost-bad-value";
inline constexpr std::string_view kRefused = "vhost-refused";
/// The session ended because a request that waits for an answer could not be answered.
inline constexpr std::string_view kProtocol = "vhost-protocol";
}  // namespace error

/// Memory slots vpd offers with CONFIGURE_MEM_SLOTS (GET_MAX_MEM_SLOTS); QEMU asks for at
/// least as many as the guest has RAM blocks.
inline constexpr uint32_t kMaxMemSlots = 32;
/// A queue index travels in 8 bits in SET_VRING_KICK/CALL/ERR, so no more queues than this.
inline constexpr uint32_t kMaxQueues = 256;

/// Protocol features the engine implements; the Device's offer is intersected with this.
inline constexpr uint64_t kImplementedProtocolFeatures =
    bit(ProtocolFeature::kMq) | bit(ProtocolFeature::kLogShmfd) | bit(ProtocolFeature::kRarp) |
    bit(ProtocolFeature::kReplyAck) | bit(ProtocolFeature::kNetMtu) |
    bit(ProtocolFeature::kConfig) | bit(ProtocolFeature::kResetDevice) |
    bit(ProtocolFeature::kConfigureMemSlots) | bit(ProtocolFeature::kStatus);

/// Device feature bits the engine cannot honour and so never offers, whatever the Device
/// says: VIRTIO_F_ACCESS_PLATFORM (no IOTLB). VHOST_F_LOG_ALL passes when the Device offers
/// it: the engine keeps the log (SET_LOG_BASE, LOG_SHMFD) and hands it to the queues, which
/// mark their ring writes, but only the Device's data plane knows which buffers it fills
/// (it marks them with the queue's log_written()), so a Device offers LOG_ALL only if it
/// does that.
inline constexpr uint64_t kFeatureAccessPlatform = uint64_t{1} << 33;
inline constexpr uint64_t kEngineWithheldFeatures = kFeatureAccessPlatform;

/// Device policy. Every callback runs on the session's thread, from inside
/// Backend::on_readable()/on_writable()/close()/~Backend(); none may call back into the
/// Backend's message handling (reading vring() is fine).
class Device {
 public:
  virtual ~Device() = default;

  /// Virtio feature bits offered (GET_FEATURES). The engine adds
  /// VHOST_USER_F_PROTOCOL_FEATURES and withholds kEngineWithheldFeatures.
  virtual uint64_t features() const = 0;
  /// Protocol features offered; the engine offers the intersection with
  /// kImplementedProtocolFeatures.
  virtual uint64_t protocol_features() const = 0;
  /// Virtqueues (2 per queue pair, plus a control queue if offered); read once, at
  /// construction, and capped at kMaxQueues.
  virtual uint32_t num_queues() const = 0;
  /// The front-end acked `acked` (virtio bits only, a subset of features()). An error refuses
  /// SET_FEATURES: the previous features stay in force.
  virtual Result<void> on_features(uint64_t acked) = 0;
  /// The device config space (a virtio_net_config) for GET_CONFIG; bytes past its end read as
  /// zero. Must stay valid until the next call.
  virtual std::span<const std::byte> config() const = 0;
  /// Ring `index` is ready: Backend::vring(index) has a configured queue and a kick fd (the
  /// call fd may be absent: a polling driver). The data plane may use it until
  /// on_queue_stopped(index). A ring with `enabled` false must not carry traffic: a net
  /// device supplies no RX buffer there and discards what arrives on TX.
  virtual void on_queue_started(uint32_t index) = 0;
  /// Ring `index` must not be touched any more: when this returns, the data plane has put
  /// every chain it popped back on the used ring (published) and forgotten the ring's fds.
  /// Called before the engine reads the ring's base, changes the ring, the memory table or
  /// its fds, and on disconnect.
  virtual void on_queue_stopped(uint32_t index) = 0;
  /// NET_SET_MTU; an error refuses the value (answered when REPLY_ACK is in use).
  virtual Result<void> on_mtu(uint32_t mtu) = 0;
  /// SEND_RARP: the guest migrated; announce `mac` (a RARP broadcast) for it.
  virtual void on_rarp(const uint8_t (&mac)[6]) = 0;
  /// SET_STATUS: the driver's virtio device status byte (0 resets it).
  virtual void on_status(uint8_t status) = 0;
};

/// One virtqueue as the engine keeps it, exposed to the data plane. The data plane may use
/// `queue`, `kick`, `call` and `err` only while `started` (between on_queue_started and
/// on_queue_stopped); everything else belongs to the engine.
struct Vring {
  /// The ring format follows VIRTIO_F_RING_PACKED in the acked features.
  std::variant<virtio::SplitQueue, virtio::PackedQueue> queue;
  Fd kick;  ///< eventfd the driver signals (non-blocking); always valid while started
  Fd call;  ///< eventfd to signal the driver (non-blocking); may be invalid: driver polls
  Fd err;   ///< eventfd to report a broken ring; may be invalid
  bool call_set =
      false;         ///< SET_VRING_CALL arrived since the ring was last stopped by GET_VRING_BASE
  uint32_t num = 0;  ///< SET_VRING_NUM; 0 until set
  VringAddr addr;    ///< SET_VRING_ADDR as received (front-end virtual addresses)
  bool has_addr = false;  ///< addr was accepted
  /// Where the queue lives in guest-physical terms; filled in when the ring starts.
  virtio::QueueConfig config;
  bool enabled = false;  ///< see the header comment
  bool started = false;  ///< handed to the Device

  /// The queue as a split or packed ring; call only with the right format.
  bool packed() const noexcept { return std::holds_alternative<virtio::PackedQueue>(queue); }
  /// vring_base() of whichever format the queue has.
  uint32_t base() const noexcept {
    return std::visit([](const auto& q) { return q.vring_base(); }, queue);
  }
};

/// Outcomes of the session, each counter named after what happened. Owned by the session's
/// thread.
struct BackendCounters {
  uint64_t requests_handled = 0;  ///< valid requests carried out
  uint64_t requests_refused = 0;  ///< the sum of the refusal counters below
  uint64_t unknown_request = 0;   ///< a code the spec does not define
  uint64_t unsupported_request = 0;
  uint64_t bad_flags = 0;
  uint64_t bad_size = 0;
  uint64_t bad_payload = 0;
  uint64_t bad_fds = 0;
  uint64_t bad_queue = 0;
  uint64_t not_negotiated = 0;
  /// Well-formed, refused by the handler: features not offered, memory that cannot be
  /// mapped, a ring outside memory, a bad size or value, an unsupported option.
  uint64_t refused_by_handler = 0;
  uint64_t acks_sent = 0;   ///< REPLY_ACK answers with 0
  uint64_t nacks_sent = 0;  ///< REPLY_ACK answers with 1
  /// Refused requests that wait for an answer vpd cannot give: the connection was closed.
  uint64_t closed_on_refusal = 0;
  uint64_t rings_started = 0;
  uint64_t rings_stopped = 0;
  /// A ring had everything it needs but its addresses did not configure (outside the
  /// current memory, misaligned, overlapping, bad base); it stays stopped.
  uint64_t ring_start_failures = 0;
  /// SET_LOG_BASE logs accepted (mapped) during the session.
  uint64_t log_bases_set = 0;
};

/// One vhost-user session: the front-end connection and all state it builds up.
class Backend {
 public:
  enum class Status { kOpen, kClosed };

  /// Takes ownership of `socket` (a connected AF_UNIX stream socket; made non-blocking
  /// here). `device` must outlive the Backend. `name` prefixes log lines ("vp0").
  Backend(Device& device, Fd socket, std::string name = "vhost-user");
  /// Stops started rings (on_queue_stopped) before guest memory is unmapped.
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  /// Reads and handles messages until the socket has no more (EAGAIN), the reply cannot be
  /// sent yet (then wants_write(): wait for EPOLLOUT and call on_writable()), or the
  /// connection ends. kClosed: the front-end closed it. An error (framing, socket failure,
  /// or an unanswerable request: error::kProtocol) means the session is over; either way all
  /// rings are stopped first and later calls return kClosed.
  Result<Status> on_readable();
  /// Sends the pending reply, then carries on reading (messages may have been left waiting
  /// behind it; with edge-triggered epoll no new EPOLLIN would come for them). Same results
  /// as on_readable().
  Result<Status> on_writable();
  /// A reply is queued and the socket was full.
  bool wants_write() const noexcept { return writer_.pending(); }
  /// Part of a message has arrived and the socket ran dry before the rest (see
  /// MessageReader::mid_message()); the owner bounds how long that may last.
  bool mid_message() const noexcept { return reader_.mid_message(); }
  /// Messages read whole so far (MessageReader::completed()).
  uint64_t messages_read() const noexcept { return reader_.completed(); }
  /// What has arrived of the incomplete message (MessageReader::describe_partial()).
  std::string describe_partial_message() const { return reader_.describe_partial(); }

  /// Stops every started ring and ends the session; later calls return kClosed. Idempotent.
  void close() noexcept;
  bool closed() const noexcept { return closed_; }

  int fd() const noexcept { return socket_.get(); }
  uint32_t num_queues() const noexcept { return static_cast<uint32_t>(vrings_.size()); }
  /// Ring `index` (< num_queues()).
  Vring& vring(uint32_t index) noexcept { return vrings_[index]; }
  const Vring& vring(uint32_t index) const noexcept { return vrings_[index]; }
  /// Guest memory as currently mapped; stable while any ring is started.
  const virtio::GuestMemory& memory() const noexcept { return memory_.table; }

  /// Acked by SET_FEATURES, VHOST_USER_F_PROTOCOL_FEATURES included.
  uint64_t acked_features() const noexcept { return acked_features_; }
  uint64_t acked_protocol_features() const noexcept { return acked_protocol_features_; }
  uint8_t status() const noexcept { return status_; }
  bool owned() const noexcept { return owned_; }
  const BackendCounters& counters() const noexcept { return counters_; }
  /// Dirty logging is on: LOG_ALL acked in SET_FEATURES and a log set by SET_LOG_BASE.
  /// Started rings then mark what they write (see virtio::RingLog).
  bool logging() const noexcept {
    return (acked_features_ & kFeatureLogAll) != 0 && log_.view.valid();
  }
  /// The log SET_LOG_BASE mapped (invalid if none); stable while any ring is started.
  const virtio::DirtyLog& dirty_log() const noexcept { return log_.view; }

 private:
  // A mapped region and how the front-end described it.
  struct Slot {
    MemoryRegion wire;
    virtio::MappedRegion mapping;
  };
  // Guest memory: the regions mapped here and the translation table built from them.
  struct MemoryState {
    std::array<Slot, kMaxMemSlots> slots;
    uint32_t count = 0;
    virtio::GuestMemory table;
  };

  Result<Status> process();
  // Validates and handles one message; queues its answer. An error ends the session.
  Result<void> dispatch(Message& message);
  Result<void> handle(const ValidRequest& request, Message& message);
  void count_refusal(std::string_view code) noexcept;
  void log_refusal(uint32_t request, const Error& error);
  Result<void> reply(const Header& request, std::span<const std::byte> payload);
  template <WireType T>
  Result<void> reply_with(const Header& request, const T& value) {
    return reply(request, wire_bytes(value));
  }

  Result<void> set_features(uint64_t features);
  Result<void> set_protocol_features(uint64_t features);
  Result<void> set_mem_table(const Message& message);
  Result<void> add_mem_reg(Message& message);
  Result<void> rem_mem_reg(const Message& message);
  Result<void> set_vring_num(uint32_t index, uint32_t num);
  Result<void> set_vring_addr(uint32_t index, const VringAddr& addr);
  Result<void> set_vring_base(uint32_t index, uint32_t base);
  VringState get_vring_base(uint32_t index);
  Result<void> set_vring_fd(Request request, uint32_t index, uint64_t payload, Message& message);
  Result<void> set_vring_enable(uint32_t index, uint32_t enable);
  Config get_config(const Message& message) const;
  void reset_device(bool keep_owner);

  // Ring life cycle.
  bool protocol_features_acked() const noexcept {
    return (acked_features_ & kFeatureProtocolFeatures) != 0;
  }
  bool wants_packed() const noexcept { return (acked_features_ & virtio::kFeatureRingPacked) != 0; }
  void stop_ring(uint32_t index) noexcept;
  void try_start(uint32_t index);
  void stop_all() noexcept;
  // Starts every ring that is ready to start (after a change that stopped them all).
  void start_all();
  // Emplaces the queue format the acked features ask for (stopped rings only); a change
  // forgets the ring position.
  void match_format(Vring& vring) noexcept;
  // Guest-physical ring addresses for `vring` in the current memory, all parts checked by a
  // trial configure of the right format.
  Result<virtio::QueueConfig> ring_config(const Vring& vring, uint32_t index) const;
  // Maps one region described by the front-end.
  Result<Slot> map_region(const MemoryRegion& region, const Fd& fd, std::string_view what) const;
  // Replaces the memory table: stops started rings, swaps, restarts them.
  void install_memory(MemoryState&& memory);
  // Logs a refused request (the first few per session; the rest are only counted).
  static constexpr uint32_t kLoggedRefusals = 32;

  // The dirty log: SET_LOG_BASE's mapping, the view the queues mark through, and the
  // SET_LOG_FD eventfd (kept for the session; vpd does not signal it: that would be a
  // syscall per write batch, and QEMU reads the log on its own schedule).
  struct LogState {
    virtio::MappedRegion mapping;
    virtio::DirtyLog view;
    Fd notify;
  };
  Result<void> set_log_base(Message& message);
  // The ring log a started ring gets: the session's log while logging(), its F_LOG address.
  virtio::RingLog ring_log(const Vring& vring) const noexcept;

  Device& device_;
  Fd socket_;
  std::string name_;
  MessageReader reader_;
  MessageWriter writer_;
  std::vector<Vring> vrings_;  // sized once, at construction: references stay valid
  MemoryState memory_;
  LogState log_;

  uint64_t offered_features_ = 0;
  uint64_t offered_protocol_features_ = 0;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_features_ = 0;
  bool features_set_ = false;
  bool owned_ = false;
  uint8_t status_ = 0;
  bool closed_ = false;
  uint32_t refusals_logged_ = 0;
  BackendCounters counters_;
};

}  // namespace vp::vhost
