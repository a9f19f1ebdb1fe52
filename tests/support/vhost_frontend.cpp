#include "vhost_frontend.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "sys/str.hpp"
#include "sys/unix_socket.hpp"
#include "vhost/request_table.hpp"
#include "virtio/packed_queue.hpp"
#include "virtio/queue.hpp"

namespace vp::test {
namespace {

using vhost::Request;

// SPEC: virtio 1.2 §2.7.6 / §2.7.8 split ring offsets.
constexpr uint64_t kAvailIdx = 2;
constexpr uint64_t kAvailRing = 4;
constexpr uint64_t kUsedIdx = 2;
constexpr uint64_t kUsedRing = 4;
// SPEC: virtio 1.2 §2.8.13 packed descriptor: le64 addr, le32 len, le16 id, le16 flags.
constexpr uint64_t kPackedId = 12;
constexpr uint64_t kPackedFlags = 14;
// SPEC: virtio 1.2 §2.1 device status FEATURES_OK.
constexpr uint64_t kStatusFeaturesOk = 8;

// Driver-side accesses to ring fields the device reads or writes concurrently; the rings
// are little-endian and so is every host these tests run on.
template <class T>
T load(const std::byte* p, std::memory_order order = std::memory_order_relaxed) {
  return std::atomic_ref<T>(*reinterpret_cast<T*>(const_cast<std::byte*>(p))).load(order);
}
template <class T>
void store(std::byte* p, T value, std::memory_order order = std::memory_order_relaxed) {
  std::atomic_ref<T>(*reinterpret_cast<T*>(p)).store(value, order);
}

std::unexpected<Error> frontend_fail(std::string message) {
  return fail("vhost-frontend", std::move(message));
}

template <vhost::WireType T>
std::span<const std::byte> bytes(const T& value) {
  return vhost::wire_bytes(value);
}

}  // namespace

uint64_t ReplyMessage::u64() const noexcept {
  uint64_t value = 0;
  std::memcpy(&value, payload.data(), std::min(sizeof value, payload.size()));
  return value;
}

// The driver's state of one ring. Buffer id `i` owns the packet buffer at buffers + i *
// buffer_size; for split rings the id is the head descriptor index.
struct VhostFrontend::Ring {
  RingLayout layout;
  Fd kick;
  Fd call;
  uint32_t base = 0;  // SET_VRING_BASE at the next setup
  bool event_idx = false;
  uint32_t outstanding = 0;
  uint16_t added = 0;  // avail entries (split) or ring slots (packed) since the last kick
  std::vector<uint16_t> chain_len;  // per id: descriptors (split) or ring slots (packed)
  // Split.
  std::vector<uint16_t> free_desc;
  uint16_t avail_idx = 0;
  uint16_t last_used = 0;
  // Packed. SPEC: virtio 1.2 §2.8.1: both wrap counters start at 1.
  std::vector<uint16_t> free_ids;
  uint32_t free_slots = 0;
  uint16_t next_avail = 0;
  bool avail_wrap = true;
  uint16_t next_used = 0;
  bool used_wrap = true;
};

VhostFrontend::VhostFrontend(Fd socket, Options options)
    : socket_(std::move(socket)), options_(std::move(options)) {}

VhostFrontend::~VhostFrontend() {
  for (Region& region : regions_) {
    if (region.host != nullptr) ::munmap(region.host, region.spec.size);
  }
  if (log_ != nullptr) ::munmap(log_, log_map_bytes_);
}

Result<std::unique_ptr<VhostFrontend>> VhostFrontend::create(Fd socket, Options options) {
  if (!socket) return frontend_fail("no socket");
  const int flags = ::fcntl(socket.get(), F_GETFL);
  if (flags < 0 || ::fcntl(socket.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return sys_fail("fcntl O_NONBLOCK on the front-end socket", errno);
  }
  std::unique_ptr<VhostFrontend> frontend(new VhostFrontend(std::move(socket), std::move(options)));
  if (auto ok = frontend->map_regions(); !ok) return std::unexpected(std::move(ok.error()));
  return frontend;
}

Result<std::unique_ptr<VhostFrontend>> VhostFrontend::connect(const std::string& path,
                                                              Options options) {
  auto socket = connect_unix(path);
  if (!socket) return std::unexpected(std::move(socket.error()));
  return create(std::move(*socket), std::move(options));
}

Result<void> VhostFrontend::map_regions() {
  for (const GuestRegion& spec : options_.regions) {
    Region region{spec, Fd(::memfd_create("vhost-frontend-ram", MFD_CLOEXEC)), nullptr, 0};
    if (!region.fd) return sys_fail("memfd_create", errno);
    if (::ftruncate(region.fd.get(), static_cast<off_t>(spec.size)) != 0) {
      return sys_fail("ftruncate guest RAM", errno);
    }
    void* host = ::mmap(nullptr, spec.size, PROT_READ | PROT_WRITE, MAP_SHARED, region.fd.get(), 0);
    if (host == MAP_FAILED) return sys_fail("mmap guest RAM", errno);
    region.host = static_cast<std::byte*>(host);
    regions_.push_back(std::move(region));
  }
  return {};
}

// --- Messages ------------------------------------------------------------------------------

Result<void> VhostFrontend::wait_for(int fd, short events,
                                     std::chrono::steady_clock::time_point deadline,
                                     std::string_view what) {
  if (pump_) pump_();
  const auto now = std::chrono::steady_clock::now();
  if (now >= deadline) return fail("timeout", str("timed out waiting for ", what));
  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
  // With a pump the back-end runs only when we call it: poll briefly, then pump again.
  if (pump_) remaining = std::min<decltype(remaining)>(remaining, 1);
  pollfd p{fd, events, 0};
  const int n = ::poll(&p, 1, static_cast<int>(remaining));
  if (n < 0 && errno != EINTR) return sys_fail("poll", errno);
  return {};
}

Result<void> VhostFrontend::send_raw(const vhost::Header& header,
                                     std::span<const std::byte> payload, std::span<const int> fds) {
  vhost::MessageWriter writer;
  if (auto ok = writer.start(header, payload, fds); !ok) return ok;
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  for (;;) {
    auto status = writer.flush(socket_.get());
    if (!status) return std::unexpected(std::move(status.error()));
    if (*status == vhost::WriteStatus::kDone) return {};
    if (auto ok = wait_for(socket_.get(), POLLOUT, deadline,
                           str("room on the socket for ", vhost::request_name(header.request)));
        !ok) {
      return ok;
    }
  }
}

Result<void> VhostFrontend::send(Request request, std::span<const std::byte> payload,
                                 std::span<const int> fds, uint32_t extra_flags) {
  const vhost::Header header{vhost::code(request), vhost::kVersion | extra_flags,
                             static_cast<uint32_t>(payload.size())};
  return send_raw(header, payload, fds);
}

Result<ReplyMessage> VhostFrontend::wait_reply(Request request) {
  const std::string_view name = vhost::request_name(vhost::code(request));
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  for (;;) {
    auto status = reader_.read(socket_.get());
    if (!status) return std::unexpected(std::move(status.error()));
    if (*status == vhost::ReadStatus::kClosed) {
      return fail("vhost-closed",
                  str("the back-end closed the connection; no reply to ", name, " came"));
    }
    if (*status == vhost::ReadStatus::kMessage) {
      const vhost::Message& message = reader_.message();
      if ((message.header().flags & vhost::kFlagReply) == 0 ||
          message.request() != vhost::code(request)) {
        return fail("vhost-bad-reply",
                    str("expected the reply to ", name, ", got request ", message.request(),
                        " with flags ", message.header().flags));
      }
      ReplyMessage reply{message.header(), {}};
      reply.payload.assign(message.payload().begin(), message.payload().end());
      return reply;
    }
    if (auto ok = wait_for(socket_.get(), POLLIN, deadline, str("the reply to ", name)); !ok) {
      return std::unexpected(std::move(ok.error()));
    }
  }
}

Result<void> VhostFrontend::sync() {
  auto features = get_u64(Request::kGetFeatures);
  if (!features) return std::unexpected(std::move(features.error()));
  return {};
}

bool VhostFrontend::reply_ready() {
  pollfd p{socket_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

Result<uint64_t> VhostFrontend::get_u64(Request request) {
  if (auto ok = send(request); !ok) return std::unexpected(std::move(ok.error()));
  auto reply = wait_reply(request);
  if (!reply) return std::unexpected(std::move(reply.error()));
  if (reply->payload.size() != sizeof(uint64_t)) {
    return fail("vhost-bad-reply", str("the reply to ", vhost::request_name(vhost::code(request)),
                                       " has ", reply->payload.size(), " bytes, not 8"));
  }
  return reply->u64();
}

Result<void> VhostFrontend::request(Request request, std::span<const std::byte> payload,
                                    std::span<const int> fds) {
  const bool ack = (acked_protocol_features_ & bit(vhost::ProtocolFeature::kReplyAck)) != 0;
  if (auto ok = send(request, payload, fds, ack ? vhost::kFlagNeedReply : 0); !ok) return ok;
  if (!ack) return {};
  auto reply = wait_reply(request);
  if (!reply) return std::unexpected(std::move(reply.error()));
  if (reply->payload.size() != sizeof(uint64_t) || reply->u64() != 0) {
    return fail("vhost-nack",
                str(vhost::request_name(vhost::code(request)), " was refused by the back-end"));
  }
  return {};
}

Result<void> VhostFrontend::request_u64(Request request, uint64_t value) {
  return this->request(request, bytes(value));
}

// --- Negotiation ---------------------------------------------------------------------------

Result<void> VhostFrontend::negotiate(uint64_t features, uint64_t protocol_features) {
  auto offered = get_u64(Request::kGetFeatures);
  if (!offered) return std::unexpected(std::move(offered.error()));
  uint64_t ack = *offered & features & ~vhost::kFeatureProtocolFeatures;
  if ((*offered & features & vhost::kFeatureProtocolFeatures) != 0) {
    auto protocol = get_u64(Request::kGetProtocolFeatures);
    if (!protocol) return std::unexpected(std::move(protocol.error()));
    const uint64_t protocol_ack = *protocol & protocol_features;
    // QEMU sends it without NEED_REPLY; REPLY_ACK applies from the next request on.
    if (auto ok = send(Request::kSetProtocolFeatures, bytes(protocol_ack)); !ok) return ok;
    acked_protocol_features_ = protocol_ack;
    if ((protocol_ack & bit(vhost::ProtocolFeature::kMq)) != 0) {
      auto n = get_u64(Request::kGetQueueNum);
      if (!n) return std::unexpected(std::move(n.error()));
      queue_num_ = *n;
    }
    if ((protocol_ack & bit(vhost::ProtocolFeature::kConfigureMemSlots)) != 0) {
      auto n = get_u64(Request::kGetMaxMemSlots);
      if (!n) return std::unexpected(std::move(n.error()));
      max_mem_slots_ = *n;
    }
    ack |= vhost::kFeatureProtocolFeatures;
  }
  if (auto ok = request(Request::kSetOwner); !ok) return ok;
  if (auto ok = request_u64(Request::kSetFeatures, ack); !ok) return ok;
  acked_features_ = ack;
  // QEMU 7.2 with STATUS: vhost_user_add_status(FEATURES_OK) after SET_FEATURES.
  if ((acked_protocol_features_ & bit(vhost::ProtocolFeature::kStatus)) != 0) {
    auto status = get_u64(Request::kGetStatus);
    if (!status) return std::unexpected(std::move(status.error()));
    if (auto ok = request_u64(Request::kSetStatus, *status | kStatusFeaturesOk); !ok) return ok;
  }
  return {};
}

vhost::MemoryRegion VhostFrontend::wire_region(uint32_t i) const {
  const Region& r = regions_[i];
  return vhost::MemoryRegion{r.spec.gpa, r.spec.size, reinterpret_cast<uint64_t>(r.host), 0};
}

Result<void> VhostFrontend::set_mem_table() {
  vhost::MemoryTable table;
  std::vector<int> fds;
  for (uint32_t i = 0; i < regions_.size() && i < vhost::kMaxMemoryRegions; ++i) {
    table.regions[i] = wire_region(i);
    fds.push_back(regions_[i].fd.get());
    table.nregions = i + 1;
  }
  const size_t size = vhost::kMemoryTableHeaderSize + table.nregions * sizeof(vhost::MemoryRegion);
  return request(Request::kSetMemTable, bytes(table).first(size), fds);
}

Result<void> VhostFrontend::add_mem_reg(uint32_t region) {
  const vhost::SingleMemoryRegion single{0, wire_region(region)};
  const int fd = regions_[region].fd.get();
  return request(Request::kAddMemReg, bytes(single), std::span<const int>(&fd, 1));
}

Result<void> VhostFrontend::rem_mem_reg(uint32_t region) {
  const vhost::SingleMemoryRegion single{0, wire_region(region)};
  return request(Request::kRemMemReg, bytes(single));
}

// --- Rings ---------------------------------------------------------------------------------

VhostFrontend::Ring* VhostFrontend::ring(uint32_t index) const {
  return index < rings_.size() ? rings_[index].get() : nullptr;
}

std::optional<VhostFrontend::RingLayout> VhostFrontend::layout(uint32_t index) const {
  const Ring* r = ring(index);
  if (r == nullptr) return std::nullopt;
  return r->layout;
}

uint32_t VhostFrontend::base_after_reset(const Ring& r) const {
  // SPEC: vhost-user.rst: packed base = avail index + wrap (bit 15), used index + wrap (31).
  return r.layout.packed ? (1u << 15) | (1u << 31) : 0u;
}

Result<void> VhostFrontend::setup_queue(uint32_t index, uint16_t size, bool enable) {
  const bool packed = (acked_features_ & virtio::kFeatureRingPacked) != 0;
  if (size == 0) return frontend_fail("a ring needs at least one entry");
  if (rings_.size() <= index) rings_.resize(index + 1);
  std::unique_ptr<Ring>& slot = rings_[index];
  if (!slot || slot->layout.size != size || slot->layout.packed != packed) {
    auto r = std::make_unique<Ring>();
    r->layout.packed = packed;
    r->layout.size = size;
    const uint64_t n = size;
    // SPEC: virtio 1.2 §2.7 / §2.8.10.1 alignment and size of each part.
    const auto desc = allocate(0, virtio::kDescSize * n, 16);
    const auto driver = allocate(0, packed ? 4 : 6 + 2 * n, 4);
    const auto device = allocate(0, packed ? 4 : 6 + 8 * n, 4);
    const auto buffers = allocate(options_.buffer_region, n * options_.buffer_size, 64);
    if (!desc || !driver || !device || !buffers) {
      return frontend_fail(str("guest RAM is too small for ring ", index, " of ", size,
                               " entries with ", options_.buffer_size, "-byte buffers"));
    }
    r->layout.desc = *desc;
    r->layout.driver = *driver;
    r->layout.device = *device;
    r->layout.buffers = *buffers;
    r->chain_len.assign(n, 0);
    if (packed) {
      for (uint32_t i = size; i-- > 0;) r->free_ids.push_back(static_cast<uint16_t>(i));
      r->free_slots = size;
    } else {
      for (uint32_t i = size; i-- > 0;) r->free_desc.push_back(static_cast<uint16_t>(i));
    }
    r->base = base_after_reset(*r);
    slot = std::move(r);
  }
  Ring& r = *slot;
  r.event_idx = (acked_features_ & virtio::kFeatureEventIdx) != 0;
  if (!r.kick) r.kick = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!r.call) r.call = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!r.kick || !r.call) return sys_fail("eventfd", errno);

  // The order QEMU's vhost_virtqueue_start() uses.
  if (auto ok = request(Request::kSetVringNum, bytes(vhost::VringState{index, size})); !ok) {
    return ok;
  }
  const uint32_t base = r.layout.packed && options_.avail_half_base ? r.base & 0xffffu : r.base;
  if (auto ok = request(Request::kSetVringBase, bytes(vhost::VringState{index, base})); !ok) {
    return ok;
  }
  vhost::VringAddr addr;
  addr.index = index;
  addr.desc_user_addr = uva(r.layout.desc);
  addr.avail_user_addr = uva(r.layout.driver);
  addr.used_user_addr = uva(r.layout.device);
  if (logging_) {
    addr.flags = vhost::kVringFlagLog;
    addr.log_guest_addr = r.layout.device;
  }
  if (auto ok = request(Request::kSetVringAddr, bytes(addr)); !ok) return ok;
  const int kick_fd = r.kick.get();
  if (auto ok = request(Request::kSetVringKick, bytes(uint64_t{index}),
                        std::span<const int>(&kick_fd, 1));
      !ok) {
    return ok;
  }
  const int call_fd = r.call.get();
  if (auto ok = request(Request::kSetVringCall, bytes(uint64_t{index}),
                        std::span<const int>(&call_fd, 1));
      !ok) {
    return ok;
  }
  if (enable && (acked_features_ & vhost::kFeatureProtocolFeatures) != 0) {
    return set_vring_enable(index, true);
  }
  return {};
}

Result<void> VhostFrontend::set_log_base(uint64_t bytes_wanted, uint64_t offset) {
  Fd fd(::memfd_create("vhost-frontend-log", MFD_CLOEXEC));
  if (!fd) return sys_fail("memfd_create", errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(offset + bytes_wanted)) != 0) {
    return sys_fail("ftruncate dirty log", errno);
  }
  const uint64_t map_bytes = offset + bytes_wanted;
  void* host = ::mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (host == MAP_FAILED) return sys_fail("mmap dirty log", errno);
  if (log_ != nullptr) ::munmap(log_, log_map_bytes_);
  log_ = static_cast<std::byte*>(host) + offset;
  log_bytes_ = bytes_wanted;
  log_map_bytes_ = map_bytes;
  log_fd_ = std::move(fd);
  const vhost::LogDescription desc{bytes_wanted, offset};
  const int log_fd = log_fd_.get();
  if (auto ok = send(Request::kSetLogBase, bytes(desc), std::span<const int>(&log_fd, 1)); !ok) {
    return ok;
  }
  auto reply = wait_reply(Request::kSetLogBase);
  if (!reply) return std::unexpected(std::move(reply.error()));
  return {};
}

uint64_t VhostFrontend::log_bytes_needed() const noexcept {
  uint64_t end = 0;
  for (const Region& r : regions_) end = std::max(end, r.spec.gpa + r.spec.size);
  // QEMU sizes it in u64 chunks of 64 pages.
  const uint64_t chunk = 64 * 4096;
  return (end + chunk - 1) / chunk * 8;
}

Result<void> VhostFrontend::set_logging(bool on) {
  // SPEC: vhost-user.rst "Migration": logging starts and stops with SET_FEATURES (LOG_ALL)
  // and SET_VRING_ADDR (VHOST_VRING_F_LOG), in the order QEMU's vhost_dev_set_log() uses.
  const uint64_t features =
      on ? acked_features_ | vhost::kFeatureLogAll : acked_features_ & ~vhost::kFeatureLogAll;
  if (auto ok = request_u64(Request::kSetFeatures, features); !ok) return ok;
  acked_features_ = features;
  logging_ = on;
  for (uint32_t index = 0; index < rings_.size(); ++index) {
    const Ring* r = rings_[index].get();
    if (r == nullptr) continue;
    vhost::VringAddr addr;
    addr.index = index;
    addr.desc_user_addr = uva(r->layout.desc);
    addr.avail_user_addr = uva(r->layout.driver);
    addr.used_user_addr = uva(r->layout.device);
    if (on) {
      addr.flags = vhost::kVringFlagLog;
      addr.log_guest_addr = r->layout.device;
    }
    if (auto ok = request(Request::kSetVringAddr, bytes(addr)); !ok) return ok;
  }
  return sync();
}

std::vector<uint64_t> VhostFrontend::dirty_pages() const {
  std::vector<uint64_t> pages;
  for (uint64_t i = 0; i < log_bytes_; ++i) {
    const auto byte = std::atomic_ref<uint8_t>(*reinterpret_cast<uint8_t*>(log_ + i)).load();
    for (uint32_t b = 0; b < 8; ++b) {
      if ((byte >> b & 1) != 0) pages.push_back(i * 8 + b);
    }
  }
  return pages;
}

void VhostFrontend::clear_dirty_log() {
  for (uint64_t i = 0; i < log_bytes_; ++i) {
    std::atomic_ref<uint8_t>(*reinterpret_cast<uint8_t*>(log_ + i)).exchange(0);
  }
}

Result<uint32_t> VhostFrontend::get_vring_base(uint32_t index) {
  if (auto ok = send(Request::kGetVringBase, bytes(vhost::VringState{index, 0})); !ok) {
    return std::unexpected(std::move(ok.error()));
  }
  auto reply = wait_reply(Request::kGetVringBase);
  if (!reply) return std::unexpected(std::move(reply.error()));
  vhost::VringState state;
  if (reply->payload.size() != sizeof state) {
    return fail("vhost-bad-reply", str("GET_VRING_BASE reply has ", reply->payload.size(),
                                       " bytes, not ", sizeof state));
  }
  std::memcpy(&state, reply->payload.data(), sizeof state);
  if (state.index != index) {
    return fail("vhost-bad-reply",
                str("GET_VRING_BASE for ring ", index, " answered for ring ", state.index));
  }
  if (Ring* r = ring(index)) r->base = state.num;
  return state.num;
}

Result<void> VhostFrontend::set_vring_enable(uint32_t index, bool enable) {
  return request(Request::kSetVringEnable, bytes(vhost::VringState{index, enable ? 1u : 0u}));
}

Result<void> VhostFrontend::kick(uint32_t index) {
  Ring* r = ring(index);
  if (r == nullptr) return frontend_fail(str("ring ", index, " is not set up"));
  const uint64_t one = 1;
  if (::write(r->kick.get(), &one, sizeof one) != sizeof one) return sys_fail("kick", errno);
  return {};
}

Result<bool> VhostFrontend::kick_if_needed(uint32_t index) {
  Ring* r = ring(index);
  if (r == nullptr) return frontend_fail(str("ring ", index, " is not set up"));
  const uint16_t size = r->layout.size;
  // SPEC: virtio 1.2 §2.7.13.4 / §2.8.21.3: the avail update must be visible before the
  // suppression fields are read.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool needed = true;
  if (r->layout.packed) {
    const std::byte* event = host(r->layout.device, 4);
    const uint16_t flags = load<uint16_t>(event + 2) & 3u;
    if (flags == virtio::kRingEventFlagsDisable) {
      needed = false;
    } else if (flags == virtio::kRingEventFlagsDesc && r->event_idx) {
      // SPEC: §2.8.10: notify if the descriptor at (offset, wrap) was made available now.
      const uint16_t off_wrap = load<uint16_t>(event);
      int event_idx = off_wrap & 0x7fff;
      if (((off_wrap >> 15) != 0) != r->avail_wrap) event_idx -= size;
      const auto new_idx = static_cast<uint16_t>(r->next_avail);
      const auto old_idx = static_cast<uint16_t>(r->next_avail - r->added);
      needed = virtio::need_event(static_cast<uint16_t>(event_idx), new_idx, old_idx);
    }
  } else {
    const std::byte* used = host(r->layout.device, 6 + 8 * uint64_t{size});
    const uint16_t old_idx = static_cast<uint16_t>(r->avail_idx - r->added);
    if (r->event_idx) {
      // SPEC: §2.7.10: avail_event sits after the used ring.
      const uint16_t avail_event = load<uint16_t>(used + kUsedRing + 8 * uint64_t{size});
      needed = virtio::need_event(avail_event, r->avail_idx, old_idx);
    } else {
      needed = (load<uint16_t>(used) & 1u) == 0;  // SPEC: §2.7.8 VIRTQ_USED_F_NO_NOTIFY
    }
  }
  r->added = 0;
  if (!needed) return false;
  if (auto ok = kick(index); !ok) return std::unexpected(std::move(ok.error()));
  return true;
}

bool VhostFrontend::take_call(uint32_t index) {
  Ring* r = ring(index);
  if (r == nullptr) return false;
  uint64_t value = 0;
  return ::read(r->call.get(), &value, sizeof value) == sizeof value && value != 0;
}

Result<void> VhostFrontend::wait_call(uint32_t index) {
  Ring* r = ring(index);
  if (r == nullptr) return frontend_fail(str("ring ", index, " is not set up"));
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  while (!take_call(index)) {
    if (auto ok = wait_for(r->call.get(), POLLIN, deadline, str("a call on ring ", index)); !ok) {
      return ok;
    }
  }
  return {};
}

// --- Driver side ---------------------------------------------------------------------------

Result<uint16_t> VhostFrontend::post(Ring& r, std::span<const Segment> segments) {
  const size_t n = segments.size();
  const uint16_t size = r.layout.size;
  if (n == 0 || n > size) return frontend_fail(str("a chain of ", n, " descriptors"));
  std::byte* desc = host(r.layout.desc, virtio::kDescSize * size);
  if (r.layout.packed) {
    if (r.free_ids.empty() || r.free_slots < n) return frontend_fail("the packed ring is full");
    const uint16_t id = r.free_ids.back();
    r.free_ids.pop_back();
    const uint16_t first = r.next_avail;
    uint16_t first_flags = 0;
    for (size_t i = 0; i < n; ++i) {
      // SPEC: virtio 1.2 §2.8.1: available = AVAIL equal to, USED unlike, the wrap counter.
      uint16_t flags = r.avail_wrap ? virtio::kPackedDescFAvail : virtio::kPackedDescFUsed;
      if (segments[i].writable) flags |= virtio::kDescFWrite;
      if (i + 1 < n) flags |= virtio::kDescFNext;
      std::byte* d = desc + virtio::kDescSize * r.next_avail;
      store<uint64_t>(d, segments[i].gpa);
      store<uint32_t>(d + 8, segments[i].len);
      store<uint16_t>(d + kPackedId, id);
      if (i == 0) {
        first_flags = flags;  // SPEC: §2.8.21.1: the first descriptor's flags go last
      } else {
        store<uint16_t>(d + kPackedFlags, flags);
      }
      if (++r.next_avail == size) {
        r.next_avail = 0;
        r.avail_wrap = !r.avail_wrap;
      }
    }
    store<uint16_t>(desc + virtio::kDescSize * first + kPackedFlags, first_flags,
                    std::memory_order_release);
    r.chain_len[id] = static_cast<uint16_t>(n);
    r.free_slots -= static_cast<uint32_t>(n);
    r.added = static_cast<uint16_t>(r.added + n);
    ++r.outstanding;
    return id;
  }

  if (r.free_desc.size() < n) return frontend_fail("the split ring has no free descriptors");
  std::vector<uint16_t> chain(n);
  for (size_t i = 0; i < n; ++i) {
    chain[i] = r.free_desc.back();
    r.free_desc.pop_back();
  }
  for (size_t i = 0; i < n; ++i) {
    std::byte* d = desc + virtio::kDescSize * chain[i];
    uint16_t flags = segments[i].writable ? virtio::kDescFWrite : 0;
    if (i + 1 < n) flags |= virtio::kDescFNext;
    store<uint64_t>(d, segments[i].gpa);
    store<uint32_t>(d + 8, segments[i].len);
    store<uint16_t>(d + 12, flags);
    store<uint16_t>(d + 14, i + 1 < n ? chain[i + 1] : uint16_t{0});
  }
  const uint16_t head = chain[0];
  std::byte* avail = host(r.layout.driver, 6 + 2 * uint64_t{size});
  store<uint16_t>(avail + kAvailRing + 2 * (r.avail_idx % size), head);
  ++r.avail_idx;
  // SPEC: virtio 1.2 §2.7.13: the ring entry before the index that publishes it.
  store<uint16_t>(avail + kAvailIdx, r.avail_idx, std::memory_order_release);
  r.chain_len[head] = static_cast<uint16_t>(n);
  ++r.added;
  ++r.outstanding;
  return head;
}

Result<uint16_t> VhostFrontend::post_chain(uint32_t index, std::span<const Segment> segments) {
  Ring* r = ring(index);
  if (r == nullptr) return frontend_fail(str("ring ", index, " is not set up"));
  return post(*r, segments);
}

namespace {
// The buffer id a single-buffer post will get: the next free id (packed) or head (split).
uint16_t next_id(const std::vector<uint16_t>& free_list) { return free_list.back(); }
}  // namespace

Result<uint16_t> VhostFrontend::post_tx(uint32_t index, std::span<const std::byte> frame) {
  Ring* r = ring(index);
  if (r == nullptr) return frontend_fail(str("ring ", index, " is not set up"));
  if (frame.size() > options_.buffer_size) {
    return frontend_fail(
        str("a ", frame.size(), "-byte frame exceeds the ", options_.buffer_size, "-byte buffers"));
  }
  const auto& free_list = r->layout.packed ? r->free_ids : r->free_desc;
  if (free_list.empty()) return frontend_fail(str("ring ", index, " is full"));
  const uint16_t id = next_id(free_list);
  const uint64_t gpa = r->layout.buffers + uint64_t{id} * options_.buffer_size;
  std::memcpy(host(gpa, frame.size()), frame.data(), frame.size());
  const Segment segment{gpa, static_cast<uint32_t>(frame.size()), false};
  return post(*r, std::span<const Segment>(&segment, 1));
}

Result<uint16_t> VhostFrontend::post_rx(uint32_t index, uint32_t len) {
  Ring* r = ring(index);
  if (r == nullptr) return frontend_fail(str("ring ", index, " is not set up"));
  if (len == 0) len = options_.buffer_size;
  if (len > options_.buffer_size) {
    return frontend_fail(str(len, " bytes exceed the ", options_.buffer_size, "-byte buffers"));
  }
  const auto& free_list = r->layout.packed ? r->free_ids : r->free_desc;
  if (free_list.empty()) return frontend_fail(str("ring ", index, " is full"));
  const uint16_t id = next_id(free_list);
  const Segment segment{r->layout.buffers + uint64_t{id} * options_.buffer_size, len, true};
  return post(*r, std::span<const Segment>(&segment, 1));
}

std::optional<UsedBuffer> VhostFrontend::next_used(uint32_t index) {
  Ring* r = ring(index);
  if (r == nullptr) return std::nullopt;
  const uint16_t size = r->layout.size;
  std::byte* desc = host(r->layout.desc, virtio::kDescSize * size);
  if (r->layout.packed) {
    std::byte* d = desc + virtio::kDescSize * r->next_used;
    const uint16_t flags = load<uint16_t>(d + kPackedFlags, std::memory_order_acquire);
    // SPEC: virtio 1.2 §2.8.1: used = AVAIL and USED both equal to the used wrap counter.
    const bool avail = (flags & virtio::kPackedDescFAvail) != 0;
    const bool used = (flags & virtio::kPackedDescFUsed) != 0;
    if (avail != used || used != r->used_wrap) return std::nullopt;
    UsedBuffer out{load<uint16_t>(d + kPackedId), load<uint32_t>(d + 8)};
    const uint16_t slots = out.id < size ? r->chain_len[out.id] : 1;
    if (out.id < size && slots != 0) {
      r->chain_len[out.id] = 0;
      r->free_ids.push_back(out.id);
      r->free_slots += slots;
      --r->outstanding;
    }
    r->next_used = static_cast<uint16_t>(r->next_used + std::max<uint16_t>(slots, 1));
    if (r->next_used >= size) {
      r->next_used = static_cast<uint16_t>(r->next_used - size);
      r->used_wrap = !r->used_wrap;
    }
    return out;
  }

  std::byte* used = host(r->layout.device, 6 + 8 * uint64_t{size});
  const uint16_t used_idx = load<uint16_t>(used + kUsedIdx, std::memory_order_acquire);
  if (used_idx == r->last_used) return std::nullopt;
  const std::byte* elem = used + kUsedRing + 8 * (r->last_used % size);
  const uint32_t id = load<uint32_t>(elem);
  UsedBuffer out{static_cast<uint16_t>(id), load<uint32_t>(elem + 4)};
  ++r->last_used;
  if (r->event_idx) {
    // SPEC: virtio 1.2 §2.7.10: used_event (after the avail ring): notify past this index.
    std::byte* avail = host(r->layout.driver, 6 + 2 * uint64_t{size});
    store<uint16_t>(avail + kAvailRing + 2 * uint64_t{size}, r->last_used);
  }
  if (id < size && r->chain_len[id] != 0) {
    uint16_t d = static_cast<uint16_t>(id);
    for (uint16_t k = r->chain_len[id]; k > 0; --k) {
      r->free_desc.push_back(d);
      d = load<uint16_t>(desc + virtio::kDescSize * d + 14);
    }
    r->chain_len[id] = 0;
    --r->outstanding;
  }
  return out;
}

std::span<std::byte> VhostFrontend::buffer(uint32_t index, uint16_t id) {
  Ring* r = ring(index);
  if (r == nullptr || id >= r->layout.size) return {};
  const uint64_t gpa = r->layout.buffers + uint64_t{id} * options_.buffer_size;
  return {host(gpa, options_.buffer_size), options_.buffer_size};
}

uint32_t VhostFrontend::outstanding(uint32_t index) const {
  const Ring* r = ring(index);
  return r == nullptr ? 0 : r->outstanding;
}

// --- Guest memory --------------------------------------------------------------------------

std::byte* VhostFrontend::host(uint64_t gpa, uint64_t len) const noexcept {
  for (const Region& r : regions_) {
    if (gpa >= r.spec.gpa && gpa - r.spec.gpa < r.spec.size &&
        len <= r.spec.size - (gpa - r.spec.gpa)) {
      return r.host + (gpa - r.spec.gpa);
    }
  }
  return nullptr;
}

uint64_t VhostFrontend::uva(uint64_t gpa) const noexcept {
  std::byte* p = host(gpa, 0);
  return p == nullptr ? 0 : reinterpret_cast<uint64_t>(p);
}

std::optional<uint64_t> VhostFrontend::allocate(uint32_t region, uint64_t bytes, uint64_t align) {
  if (region >= regions_.size() || align == 0) return std::nullopt;
  Region& r = regions_[region];
  const uint64_t start = (r.used + align - 1) / align * align;
  if (start > r.spec.size || bytes > r.spec.size - start) return std::nullopt;
  r.used = start + bytes;
  return r.spec.gpa + start;
}

Result<std::unique_ptr<VhostFrontend>> attach_like_qemu(const std::string& path,
                                                        uint16_t queue_size) {
  auto fe = VhostFrontend::connect(path, VhostFrontend::Options{});
  if (!fe) return fe;
  VhostFrontend& f = **fe;
  Result<void> ok = f.negotiate(~virtio::kFeatureRingPacked, ~0ull);
  if (ok) ok = f.set_mem_table();
  if (ok) ok = f.setup_queue(0, queue_size);  // receiveq
  if (ok) ok = f.setup_queue(1, queue_size);  // transmitq
  if (!ok) return std::unexpected(ok.error());
  return fe;
}

}  // namespace vp::test
