#pragma once

// A vhost-user front-end for tests and benchmarks: it plays QEMU and the guest driver at once.
// Guest RAM lives in memfds mapped here (their addresses here are the "front-end virtual
// addresses" of the protocol), virtqueues are laid out in that RAM the way a virtio driver
// lays them out, and every message is a real vhost-user message on the socket (built with
// vpd's own codec, which has its own tests).
//
// Waiting: the socket is non-blocking and every wait (for a reply, for socket space, for a
// used-buffer notification) polls with a deadline, so a test fails instead of hanging. A test
// that runs the back-end on its own thread sets a pump (set_pump), which is called before
// each poll: the pump lets the back-end handle what the front-end sent.
//
// No GoogleTest here: the benchmark uses the same class. Everything fallible returns a
// Result whose message says which step failed.

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sys/error.hpp"
#include "sys/fd.hpp"
#include "vhost/codec.hpp"
#include "vhost/messages.hpp"

namespace vp::test {

/// One guest RAM region: where the guest sees it.
struct GuestRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

/// One element of a descriptor chain the test lays out itself.
struct Segment {
  uint64_t gpa = 0;
  uint32_t len = 0;
  bool writable = false;  ///< device-writable (RX); otherwise device-readable (TX)
};

/// A used entry as the driver reads it.
struct UsedBuffer {
  uint16_t id = 0;   ///< split: head descriptor index; packed: buffer id
  uint32_t len = 0;  ///< bytes the device wrote
};

/// A reply from the back-end.
struct ReplyMessage {
  vhost::Header header;
  std::vector<std::byte> payload;
  /// The payload as a u64 (zero-extended if shorter).
  uint64_t u64() const noexcept;
};

class VhostFrontend {
 public:
  struct Options {
    /// Guest RAM: two regions by default, the second above 4 GiB, so rings and buffers can
    /// be put on either side of a gap.
    std::vector<GuestRegion> regions = {{0x40000000, 16 << 20}, {0x100000000, 4 << 20}};
    /// Bytes of packet buffer per descriptor (post_tx/post_rx).
    uint32_t buffer_size = 4096;
    /// Region that holds the packet buffers of setup_queue(); rings always go in region 0.
    uint32_t buffer_region = 0;
    /// Longest wait for anything.
    std::chrono::milliseconds timeout{5000};
    /// Packed rings: SET_VRING_BASE carries the available half only (bits 16-31 zero), as
    /// DPDK virtio-user sends it (0x00008000 for a new ring); otherwise both halves, as QEMU.
    bool avail_half_base = false;
  };

  /// Maps the guest RAM (memfds) and takes `socket` (made non-blocking).
  static Result<std::unique_ptr<VhostFrontend>> create(Fd socket, Options options);
  static Result<std::unique_ptr<VhostFrontend>> create(Fd socket) {
    return create(std::move(socket), Options{});
  }
  /// Connects to a back-end listening at `path` (vpd's bind=PATH).
  static Result<std::unique_ptr<VhostFrontend>> connect(const std::string& path, Options options);

  ~VhostFrontend();
  VhostFrontend(const VhostFrontend&) = delete;
  VhostFrontend& operator=(const VhostFrontend&) = delete;

  /// Called before every wait; for a back-end running on the same thread.
  void set_pump(std::function<void()> pump) { pump_ = std::move(pump); }

  // --- Messages -------------------------------------------------------------------------

  /// Sends one message as is (hostile tests: any header, any fds). Waits for socket space.
  Result<void> send_raw(const vhost::Header& header, std::span<const std::byte> payload = {},
                        std::span<const int> fds = {});
  /// Sends a request: version 1 plus `extra_flags`, size from the payload.
  Result<void> send(vhost::Request request, std::span<const std::byte> payload = {},
                    std::span<const int> fds = {}, uint32_t extra_flags = 0);
  /// Waits for the reply to `request` (REPLY flag and the same code, else an error).
  Result<ReplyMessage> wait_reply(vhost::Request request);
  /// Sends a request that has a reply body and returns the body as a u64.
  Result<uint64_t> get_u64(vhost::Request request);
  /// Sends a request without a reply body. When REPLY_ACK is negotiated it asks for the
  /// ack (NEED_REPLY) and fails with code "vhost-nack" if the back-end refused; otherwise it
  /// returns once the message is sent.
  Result<void> request(vhost::Request request, std::span<const std::byte> payload = {},
                       std::span<const int> fds = {});
  Result<void> request_u64(vhost::Request request, uint64_t value);
  /// Whether a reply (any) is waiting on the socket, without waiting.
  bool reply_ready();
  /// A GET_FEATURES round trip: everything sent before has been handled (QEMU's barrier when
  /// REPLY_ACK is not negotiated).
  Result<void> sync();

  // --- Negotiation, as QEMU 7.2 does it ----------------------------------------------------

  /// GET_FEATURES; GET/SET_PROTOCOL_FEATURES if offered; GET_QUEUE_NUM with MQ;
  /// GET_MAX_MEM_SLOTS with CONFIGURE_MEM_SLOTS; SET_OWNER; SET_FEATURES (with
  /// VHOST_USER_F_PROTOCOL_FEATURES when offered); GET/SET_STATUS FEATURES_OK with STATUS.
  /// Acks the intersection of the offers with `features` / `protocol_features`; the protocol
  /// feature steps happen only if `features` and the offer both have
  /// VHOST_USER_F_PROTOCOL_FEATURES (bit 30).
  Result<void> negotiate(uint64_t features, uint64_t protocol_features);
  /// SET_MEM_TABLE with every region.
  Result<void> set_mem_table();
  /// ADD_MEM_REG / REM_MEM_REG of region `region`.
  Result<void> add_mem_reg(uint32_t region);
  Result<void> rem_mem_reg(uint32_t region);

  // --- Live migration: the dirty log, as QEMU's vhost_migration_log() drives it ------------

  /// Creates a log of `bytes` bytes (a memfd, zeroed) and sends SET_LOG_BASE with it
  /// (LOG_SHMFD: the 16-byte description and the fd), then waits for the back-end's answer.
  /// `offset` is the log's offset in the file (the file holds offset + bytes).
  Result<void> set_log_base(uint64_t bytes, uint64_t offset = 0);
  /// Bytes a log needs to cover every region (QEMU's vhost_get_log_size, in bytes).
  uint64_t log_bytes_needed() const noexcept;
  /// Turns logging on or off as QEMU does: SET_FEATURES with or without VHOST_F_LOG_ALL,
  /// then SET_VRING_ADDR of every ring set up, with VHOST_VRING_F_LOG and log_guest_addr =
  /// the used ring's (split) or device area's (packed) guest address, or without them.
  /// Rings set up later carry the flag too while logging is on.
  Result<void> set_logging(bool on);
  /// Guest pages (guest-physical address / 4096) whose bit is set in the log, ascending.
  std::vector<uint64_t> dirty_pages() const;
  /// Clears the log (what QEMU does when it syncs it).
  void clear_dirty_log();

  /// Lays out ring `index` with `size` entries (split or packed, per the acked features) in
  /// region 0, plus one buffer per entry, and sends SET_VRING_NUM, _BASE, _ADDR, _KICK,
  /// _CALL, then (if `enable`) SET_VRING_ENABLE 1 when VHOST_USER_F_PROTOCOL_FEATURES was
  /// acked. Calling it again for a ring re-sends the messages (a restart after
  /// get_vring_base()); the ring keeps its memory and the base sent is the one
  /// get_vring_base() returned.
  Result<void> setup_queue(uint32_t index, uint16_t size, bool enable = true);
  /// GET_VRING_BASE (stops the ring on the back-end).
  Result<uint32_t> get_vring_base(uint32_t index);
  Result<void> set_vring_enable(uint32_t index, bool enable);

  /// Signals the ring's kick eventfd.
  Result<void> kick(uint32_t index);
  /// Signals it only if the device asked for a notification for what was made available
  /// since the last kick (split: used flags NO_NOTIFY, or avail_event with EVENT_IDX;
  /// packed: the device event suppression area), as a guest driver does. True if it kicked.
  Result<bool> kick_if_needed(uint32_t index);
  /// Waits for (and clears) a used-buffer notification on the ring's call eventfd.
  Result<void> wait_call(uint32_t index);
  /// Clears a pending call notification; true if there was one.
  bool take_call(uint32_t index);

  // --- Driver side of the rings ----------------------------------------------------------

  /// Copies `frame` into a free buffer and makes it available, device-readable (TX).
  /// Returns the buffer id. Fails if the ring is full or the frame exceeds a buffer.
  Result<uint16_t> post_tx(uint32_t index, std::span<const std::byte> frame);
  /// Makes a free buffer of `len` bytes (default: all of it) available, device-writable (RX).
  Result<uint16_t> post_rx(uint32_t index, uint32_t len = 0);
  /// Makes the chain `segments` available as laid out by the caller (any guest address,
  /// valid or not). Returns its id.
  Result<uint16_t> post_chain(uint32_t index, std::span<const Segment> segments);
  /// The next used buffer, if the device has returned one; frees its descriptors.
  std::optional<UsedBuffer> next_used(uint32_t index);
  /// The packet buffer behind buffer id `id` (post_tx/post_rx), in this process's mapping.
  std::span<std::byte> buffer(uint32_t index, uint16_t id);
  /// Buffers made available and not yet returned.
  uint32_t outstanding(uint32_t index) const;

  // --- Guest memory ----------------------------------------------------------------------

  /// This process's view of [gpa, gpa + len), or nullptr if not inside one region.
  std::byte* host(uint64_t gpa, uint64_t len) const noexcept;
  /// The front-end virtual address of `gpa` (what ring addresses carry), or 0.
  uint64_t uva(uint64_t gpa) const noexcept;
  /// Carves `bytes` aligned to `align` out of region `region` (zeroed, never reused);
  /// nothing if it is full.
  std::optional<uint64_t> allocate(uint32_t region, uint64_t bytes, uint64_t align = 64);
  uint32_t region_count() const noexcept { return static_cast<uint32_t>(regions_.size()); }
  const GuestRegion& region(uint32_t i) const { return regions_[i].spec; }
  /// The memfd of region `i` (for hostile tests that describe it differently).
  int region_fd(uint32_t i) const { return regions_[i].fd.get(); }
  uint64_t region_uva(uint32_t i) const { return reinterpret_cast<uint64_t>(regions_[i].host); }

  int socket() const noexcept { return socket_.get(); }
  uint64_t acked_features() const noexcept { return acked_features_; }
  uint64_t acked_protocol_features() const noexcept { return acked_protocol_features_; }
  /// GET_QUEUE_NUM / GET_MAX_MEM_SLOTS answers from negotiate() (0 if not asked).
  uint64_t queue_num() const noexcept { return queue_num_; }
  uint64_t max_mem_slots() const noexcept { return max_mem_slots_; }
  const Options& options() const noexcept { return options_; }

  /// The guest addresses of ring `index` as set up (for tests that corrupt rings).
  struct RingLayout {
    bool packed = false;
    uint16_t size = 0;
    uint64_t desc = 0;
    uint64_t driver = 0;  ///< split: available ring; packed: driver event area
    uint64_t device = 0;  ///< split: used ring; packed: device event area
    uint64_t buffers = 0;
  };
  std::optional<RingLayout> layout(uint32_t index) const;

 private:
  struct Region {
    GuestRegion spec;
    Fd fd;
    std::byte* host = nullptr;
    uint64_t used = 0;  // bump allocator
  };
  struct Ring;

  VhostFrontend(Fd socket, Options options);
  Result<void> map_regions();
  Result<void> wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline,
                        std::string_view what);
  Ring* ring(uint32_t index) const;
  Result<uint16_t> post(Ring& ring, std::span<const Segment> segments);
  vhost::MemoryRegion wire_region(uint32_t i) const;
  uint32_t base_after_reset(const Ring& ring) const;

  Fd socket_;
  Options options_;
  std::vector<Region> regions_;
  std::vector<std::unique_ptr<Ring>> rings_;
  vhost::MessageReader reader_;
  std::function<void()> pump_;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_features_ = 0;
  uint64_t queue_num_ = 0;
  uint64_t max_mem_slots_ = 0;
  // The dirty log (set_log_base), mapped here.
  Fd log_fd_;
  std::byte* log_ = nullptr;
  uint64_t log_bytes_ = 0;
  uint64_t log_map_bytes_ = 0;
  bool logging_ = false;
};

/// Connects to the vhost-user socket `path` and attaches as QEMU does: negotiates every
/// feature but packed rings, sends the memory table and starts receiveq 0 and transmitq 1
/// with `queue_size` descriptors each. The error says which step failed.
Result<std::unique_ptr<VhostFrontend>> attach_like_qemu(const std::string& path,
                                                        uint16_t queue_size = 256);

}  // namespace vp::test
