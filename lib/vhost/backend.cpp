#include "vhost/backend.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <type_traits>
#include <utility>

#include "sys/log.hpp"
#include "sys/str.hpp"
#include "virtio/ring_parts.hpp"

namespace vp::vhost {
namespace {

std::unexpected<Error> refuse(std::string_view code, std::string message) {
  return fail(std::string(code), std::move(message));
}

// The kick/call/err eventfds are written and read by the data plane; a front-end could hand
// over a blocking pipe instead, so never let one block a worker.
Result<void> make_nonblocking(const Fd& fd, std::string_view what) {
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return sys_fail(str("fcntl(F_GETFL) on the ", what, " fd"), errno);
  if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return sys_fail(str("fcntl(F_SETFL, O_NONBLOCK) on the ", what, " fd"), errno);
  }
  return {};
}

}  // namespace

Backend::Backend(Device& device, Fd socket, std::string name)
    : device_(device), socket_(std::move(socket)), name_(std::move(name)) {
  vrings_.resize(std::min(device_.num_queues(), kMaxQueues));
  offered_features_ = (device_.features() & ~kEngineWithheldFeatures) | kFeatureProtocolFeatures;
  offered_protocol_features_ = device_.protocol_features() & kImplementedProtocolFeatures;
  if (socket_) {
    if (auto ok = make_nonblocking(socket_, "vhost-user socket"); !ok) {
      log::warning(name_, ": ", ok.error().message);
    }
  }
}

Backend::~Backend() { close(); }

void Backend::close() noexcept {
  if (closed_) return;
  stop_all();
  closed_ = true;
  writer_.reset();
  reader_.reset();
}

Result<Backend::Status> Backend::on_readable() { return process(); }

Result<Backend::Status> Backend::on_writable() { return process(); }

Result<Backend::Status> Backend::process() {
  if (closed_) return Status::kClosed;
  for (;;) {
    // One reply at a time: while one waits for EPOLLOUT, no further request is read, so a
    // front-end that never reads its answers fills its own socket, not our memory.
    if (writer_.pending()) {
      auto flushed = writer_.flush(socket_.get());
      if (!flushed) {
        close();
        return std::unexpected(std::move(flushed.error()));
      }
      if (*flushed == WriteStatus::kWouldBlock) return Status::kOpen;
    }
    auto read = reader_.read(socket_.get());
    if (!read) {
      log::warning(name_, ": closing the vhost-user connection: ", read.error().message);
      close();
      return std::unexpected(std::move(read.error()));
    }
    switch (*read) {
      case ReadStatus::kWouldBlock:
        return Status::kOpen;
      case ReadStatus::kClosed:
        log::info(name_, ": the vhost-user front-end closed the connection");
        close();
        return Status::kClosed;
      case ReadStatus::kMessage:
        break;
    }
    auto done = dispatch(reader_.message());
    reader_.message().clear();  // closes the fds no handler took
    if (!done) {
      log::warning(name_, ": closing the vhost-user connection: ", done.error().message);
      close();
      return std::unexpected(std::move(done.error()));
    }
  }
}

void Backend::count_refusal(std::string_view code) noexcept {
  ++counters_.requests_refused;
  if (code == error::kUnknownRequest) {
    ++counters_.unknown_request;
  } else if (code == error::kUnsupportedRequest) {
    ++counters_.unsupported_request;
  } else if (code == error::kBadFlags) {
    ++counters_.bad_flags;
  } else if (code == error::kBadSize) {
    ++counters_.bad_size;
  } else if (code == error::kBadPayload) {
    ++counters_.bad_payload;
  } else if (code == error::kBadFds) {
    ++counters_.bad_fds;
  } else if (code == error::kBadQueue) {
    ++counters_.bad_queue;
  } else if (code == error::kNotNegotiated) {
    ++counters_.not_negotiated;
  } else {
    ++counters_.refused_by_handler;
  }
}

void Backend::log_refusal(uint32_t request, const Error& e) {
  if (refusals_logged_ >= kLoggedRefusals) return;
  ++refusals_logged_;
  log::warning(name_, ": refused vhost-user request ", request_name(request), " (", request,
               "): ", e.message, " [", e.code, "]");
  if (refusals_logged_ == kLoggedRefusals) {
    log::warning(name_, ": further refused requests are counted but not logged");
  }
}

Result<void> Backend::reply(const Header& request, std::span<const std::byte> payload) {
  return writer_.start_reply(request, payload);
}

Result<void> Backend::dispatch(Message& message) {
  const Header header = message.header();
  // REPLY_ACK as it stood when the request was sent.
  const bool reply_ack = (acked_protocol_features_ & bit(ProtocolFeature::kReplyAck)) != 0;

  auto valid = validate(header, message.payload(), message.fds(), num_queues());
  if (valid) {
    if (auto gate = check_negotiated(*valid->rule, acked_protocol_features_); !gate) {
      valid = std::unexpected(std::move(gate.error()));
    }
  }
  Result<void> outcome;
  if (valid) {
    outcome = handle(*valid, message);
  } else {
    outcome = std::unexpected(std::move(valid.error()));
  }

  const RequestRule* rule = find_rule(header.request);
  if (outcome) {
    ++counters_.requests_handled;
    // Requests with a reply body answered in their handler.
    if (rule->reply == Reply::kOnAck && expects_reply(header, reply_ack)) {
      ++counters_.acks_sent;
      return reply_with(header, uint64_t{0});
    }
    return {};
  }

  count_refusal(outcome.error().code);
  log_refusal(header.request, outcome.error());
  if (rule != nullptr && rule->reply == Reply::kAlways) {
    // The front-end blocks until this answer comes, and no answer would be true: an empty or
    // made-up body would be taken as data (a ring base, features). Closing tells it at once.
    ++counters_.closed_on_refusal;
    return refuse(error::kProtocol,
                  str(rule->name, " was refused and the front-end waits for its answer (",
                      outcome.error().message, ")"));
  }
  if (expects_reply(header, reply_ack)) {
    ++counters_.nacks_sent;
    return reply_with(header, uint64_t{1});
  }
  return {};
}

Result<void> Backend::handle(const ValidRequest& request, Message& message) {
  const Header& header = message.header();
  const RequestRule& rule = *request.rule;
  // validate() checked the payload size and, where the request names one, the queue index.
  const uint32_t index = request.queue_index.value_or(0);
  switch (rule.request) {
    case Request::kGetFeatures:
      return reply_with(header, offered_features_);
    case Request::kSetFeatures:
      return set_features(message.payload_as<uint64_t>());
    case Request::kSetOwner:
      owned_ = true;
      return {};
    case Request::kResetOwner:
      reset_device(false);
      return {};
    case Request::kResetDevice:
      reset_device(true);
      return {};
    case Request::kSetMemTable:
      return set_mem_table(message);
    case Request::kAddMemReg:
      return add_mem_reg(message);
    case Request::kRemMemReg:
      return rem_mem_reg(message);
    case Request::kGetMaxMemSlots:
      return reply_with(header, uint64_t{kMaxMemSlots});
    case Request::kSetVringNum:
      return set_vring_num(index, message.payload_as<VringState>().num);
    case Request::kSetVringAddr:
      return set_vring_addr(index, message.payload_as<VringAddr>());
    case Request::kSetVringBase:
      return set_vring_base(index, message.payload_as<VringState>().num);
    case Request::kGetVringBase:
      return reply_with(header, get_vring_base(index));
    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr:
      return set_vring_fd(rule.request, index, message.payload_as<uint64_t>(), message);
    case Request::kSetVringEnable:
      return set_vring_enable(index, message.payload_as<VringState>().num);
    case Request::kGetProtocolFeatures:
      return reply_with(header, offered_protocol_features_);
    case Request::kSetProtocolFeatures:
      return set_protocol_features(message.payload_as<uint64_t>());
    case Request::kGetQueueNum:
      // SPEC: "how many queues the back-end supports": virtqueues, as libvhost-user and the
      // rust-vmm back-ends answer (cloud-hypervisor compares it with its virtqueue count;
      // QEMU compares its queue pairs with it, which this never undercuts).
      return reply_with(header, uint64_t{num_queues()});
    case Request::kSendRarp: {
      uint8_t mac[6];
      std::memcpy(mac, message.payload().data(), sizeof mac);  // first 6 of the 8 bytes
      device_.on_rarp(mac);
      return {};
    }
    case Request::kNetSetMtu: {
      // GUEST: from the front-end; virtio_net_config.mtu is 16 bits and IPv4 needs 68.
      const auto mtu = message.payload_as<uint64_t>();
      if (mtu < 68 || mtu > 65535) {
        return refuse(error::kBadValue, str("NET_SET_MTU: MTU ", mtu, " is not in [68, 65535]"));
      }
      return device_.on_mtu(static_cast<uint32_t>(mtu));
    }
    case Request::kGetConfig: {
      const Config config = get_config(message);
      return reply(header, wire_bytes(config).first(kConfigHeadSize + config.head.size));
    }
    case Request::kSetConfig:
      return refuse(error::kRefused,
                    "SET_CONFIG: the virtio-net config space is read-only for the front-end");
    case Request::kSetStatus: {
      // GUEST: the virtio device status is one byte.
      const auto value = message.payload_as<uint64_t>();
      if (value > 0xff) {
        return refuse(error::kBadValue,
                      str("SET_STATUS: ", hex(value), " is not a one-byte device status"));
      }
      status_ = static_cast<uint8_t>(value);
      device_.on_status(status_);
      return {};
    }
    case Request::kGetStatus:
      return reply_with(header, uint64_t{status_});
    case Request::kSetLogBase:
      if (auto ok = set_log_base(message); !ok) return ok;
      // SPEC: vhost-user.rst "Communication": with LOG_SHMFD the back-end answers
      // SET_LOG_BASE; the body is a u64 0 (success), as libvhost-user sends. QEMU waits for
      // the answer and reads whatever body it has.
      return reply_with(header, uint64_t{0});
    case Request::kSetLogFd:
      // SPEC: vhost-user.rst "Migration": an optional eventfd to tell the front-end the log
      // changed. Kept, not signalled: QEMU syncs the log itself.
      log_.notify = message.take_fd(0);  // validate(): exactly one fd
      return {};
    default:
      // In the table, allowed by negotiation, but this engine does not implement it (a gate
      // it never offers, e.g. INFLIGHT_SHMFD or BACKEND_REQ).
      return refuse(error::kUnsupportedRequest, str(rule.name, " is not implemented by vpd"));
  }
}

Result<void> Backend::set_features(uint64_t features) {
  // GUEST: the front-end may ack only what was offered.
  if (const uint64_t extra = features & ~offered_features_; extra != 0) {
    return refuse(error::kBadFeatures,
                  str("SET_FEATURES: ", hex(features), " acks bits ", hex(extra),
                      " that were not offered (offer ", hex(offered_features_), ")"));
  }
  // QEMU sends SET_FEATURES once per queue pair, while earlier pairs already run: the same
  // value again changes nothing and must not disturb them.
  if (features_set_ && features == acked_features_) return {};
  // Ring format, EVENT_IDX and INDIRECT_DESC are read at configure time, and the data plane
  // may derive its header length from the features: rings stop before the device hears of
  // them and restart after.
  stop_all();
  if (auto ok = device_.on_features(features & ~kFeatureProtocolFeatures); !ok) {
    start_all();
    return refuse(error::kBadFeatures, str("SET_FEATURES: ", ok.error().message));
  }
  acked_features_ = features;
  features_set_ = true;
  for (Vring& vring : vrings_) {
    match_format(vring);
    // SPEC: without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled from the start.
    if (!protocol_features_acked()) vring.enabled = true;
  }
  log::info(name_, ": vhost-user features acked: ", hex(features));
  start_all();
  return {};
}

Result<void> Backend::set_log_base(Message& message) {
  const auto desc = message.payload_as<LogDescription>();
  const Fd& fd = message.fds()[0];  // validate(): exactly one fd
  // GUEST: size and offset come from the front-end; the log must be non-empty, end inside
  // the 64-bit space and inside the file, and be a memory file.
  if (desc.mmap_size == 0) return refuse(error::kBadValue, "SET_LOG_BASE: the log size is 0");
  uint64_t end = 0;
  if (__builtin_add_overflow(desc.mmap_offset, desc.mmap_size, &end)) {
    return refuse(error::kBadValue, str("SET_LOG_BASE: offset ", hex(desc.mmap_offset), " + size ",
                                        hex(desc.mmap_size), " wraps past the end of the file"));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_fail("fstat of the SET_LOG_BASE fd", errno);
  if (!S_ISREG(st.st_mode)) {
    return refuse(error::kBadValue,
                  "SET_LOG_BASE: the fd is not a memory file (memfd or shared memory)");
  }
  if (static_cast<uint64_t>(st.st_size) < end) {
    return refuse(error::kBadValue,
                  str("SET_LOG_BASE: the file holds ", st.st_size, " bytes, the log needs ",
                      desc.mmap_size, " bytes at offset ", desc.mmap_offset));
  }
  // SPEC: vhost-user.rst "Migration": the log covers guest-physical 0 to the end of the
  // highest region. Marks past its end are still bounds-checked (and counted), but a log
  // too small for the memory the rings write into would lose pages from the start.
  uint64_t memory_end = 0;
  for (const virtio::MemoryRegion& r : memory_.table.regions()) {
    memory_end = std::max(memory_end, r.guest_phys_addr + r.size);  // cannot wrap: add()
  }
  if (const uint64_t needed = virtio::DirtyLog::bytes_for(memory_end); desc.mmap_size < needed) {
    return refuse(error::kBadValue, str("SET_LOG_BASE: a log of ", desc.mmap_size, " bytes covers ",
                                        desc.mmap_size * 8 * virtio::kLogPageSize >> 20,
                                        " MiB of guest memory; its regions end at ",
                                        hex(memory_end), " (", needed, " bytes of log)"));
  }
  auto mapped = virtio::MappedRegion::map(fd, desc.mmap_size, desc.mmap_offset);
  if (!mapped) return refuse(error::kBadValue, str("SET_LOG_BASE: ", mapped.error().message));
  // The queues hold a pointer to the view: rings stop around the change (the old mapping is
  // unmapped only once no ring marks through it) and restart with the new log.
  stop_all();
  log_.mapping = std::move(*mapped);
  log_.view = virtio::DirtyLog(log_.mapping.data(), log_.mapping.size());
  ++counters_.log_bases_set;
  log::info(name_, ": dirty log set: ", desc.mmap_size, " bytes",
            (acked_features_ & kFeatureLogAll) != 0 ? ", logging" : "");
  start_all();
  return {};
}

virtio::RingLog Backend::ring_log(const Vring& vring) const noexcept {
  if (!logging()) return {};
  const bool used = (vring.addr.flags & kVringFlagLog) != 0;
  return virtio::RingLog{&log_.view, used, used ? vring.addr.log_guest_addr : 0};
}

Result<void> Backend::set_protocol_features(uint64_t features) {
  if (const uint64_t extra = features & ~offered_protocol_features_; extra != 0) {
    return refuse(error::kBadFeatures,
                  str("SET_PROTOCOL_FEATURES: ", hex(features), " acks bits ", hex(extra),
                      " that were not offered (offer ", hex(offered_protocol_features_), ")"));
  }
  acked_protocol_features_ = features;
  return {};
}

Result<Backend::Slot> Backend::map_region(const MemoryRegion& region, const Fd& fd,
                                          std::string_view what) const {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_fail(str("fstat of the ", what, " fd"), errno);
  // GUEST: mapping a pipe or socket fails, but mapping a character device might not; only
  // files (memfd, /dev/shm, hugetlbfs) are guest RAM.
  if (!S_ISREG(st.st_mode)) {
    return refuse(error::kBadMemory, str(what,
                                         ": the fd is not a memory file (memfd, shared "
                                         "memory or hugetlbfs file)"));
  }
  // GUEST: a mapping past the end of the file maps, but touching it raises SIGBUS; refuse a
  // region the file cannot back (offset + size cannot wrap: validate() checked).
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < region.mmap_offset || file_size - region.mmap_offset < region.memory_size) {
    return refuse(error::kBadMemory,
                  str(what, ": the file holds ", file_size, " bytes, the region needs ",
                      region.memory_size, " bytes at offset ", region.mmap_offset));
  }
  auto mapped = virtio::MappedRegion::map(fd, region.memory_size, region.mmap_offset);
  if (!mapped) {
    return refuse(error::kBadMemory, str(what, ": ", mapped.error().message));
  }
  return Slot{region, std::move(*mapped)};
}

void Backend::install_memory(MemoryState&& memory) {
  stop_all();
  memory_ = std::move(memory);  // unmaps the regions it replaces
  start_all();
}

Result<void> Backend::set_mem_table(const Message& message) {
  const auto table = message.payload_as<MemoryTable>();
  // Build the whole new table first: a refusal leaves the old one, and running rings, alone.
  MemoryState next;
  uint64_t total = 0;
  // GUEST: nregions <= kMaxMemoryRegions and one fd per region, checked by validate().
  for (uint32_t i = 0; i < table.nregions; ++i) {
    const MemoryRegion& region = table.regions[i];
    const std::string what = str("SET_MEM_TABLE region ", i);
    auto slot = map_region(region, message.fds()[i], what);
    if (!slot) return std::unexpected(std::move(slot.error()));
    next.slots[i] = std::move(*slot);
    next.count = i + 1;
    auto added = next.table.add({region.guest_phys_addr, region.memory_size, region.userspace_addr,
                                 next.slots[i].mapping.data()});
    if (!added) return refuse(error::kBadMemory, str(what, ": ", added.error().message));
    total += region.memory_size;
  }
  install_memory(std::move(next));
  log::info(name_, ": guest memory: ", table.nregions, " regions, ", total >> 20, " MiB");
  return {};
}

Result<void> Backend::add_mem_reg(Message& message) {
  const MemoryRegion region = message.payload_as<SingleMemoryRegion>().region;
  if (memory_.count == kMaxMemSlots) {
    return refuse(error::kBadMemory,
                  str("ADD_MEM_REG: all ", kMaxMemSlots, " memory slots are in use"));
  }
  auto slot = map_region(region, message.fds()[0], "ADD_MEM_REG region");
  if (!slot) return std::unexpected(std::move(slot.error()));
  virtio::GuestMemory table = memory_.table;
  auto added = table.add(
      {region.guest_phys_addr, region.memory_size, region.userspace_addr, slot->mapping.data()});
  if (!added) return refuse(error::kBadMemory, str("ADD_MEM_REG: ", added.error().message));
  // The table changes under the data plane's lookups: rings pause around it.
  stop_all();
  memory_.slots[memory_.count++] = std::move(*slot);
  memory_.table = table;
  start_all();
  return {};
}

Result<void> Backend::rem_mem_reg(const Message& message) {
  const MemoryRegion region = message.payload_as<SingleMemoryRegion>().region;
  // SPEC: the region is named by its guest address, user address and size; the mmap
  // offset is ignored.
  const Slot* begin = memory_.slots.data();
  const Slot* end = begin + memory_.count;
  const Slot* found = std::find_if(begin, end, [&](const Slot& slot) {
    return slot.wire.guest_phys_addr == region.guest_phys_addr &&
           slot.wire.memory_size == region.memory_size &&
           slot.wire.userspace_addr == region.userspace_addr;
  });
  if (found == end) {
    return refuse(error::kBadMemory, str("REM_MEM_REG: no region at guest address ",
                                         hex(region.guest_phys_addr), " of ", region.memory_size,
                                         " bytes at user address ", hex(region.userspace_addr)));
  }
  const auto at = static_cast<size_t>(found - begin);
  stop_all();
  memory_.table.remove(region.guest_phys_addr, region.memory_size);
  std::swap(memory_.slots[at], memory_.slots[memory_.count - 1]);
  memory_.slots[--memory_.count] = Slot{};  // unmaps
  start_all();  // rings that lived in the removed region stay stopped (counted)
  return {};
}

Result<void> Backend::set_vring_num(uint32_t index, uint32_t num) {
  const bool packed = wants_packed();
  // GUEST: the ring size bounds every index into the ring. SPEC: virtio 1.2 §2.7 (split: a
  // power of 2) and §2.8 (packed: any size); both at most 32768.
  if (num == 0 || num > virtio::kMaxQueueSize || (!packed && (num & (num - 1)) != 0)) {
    return refuse(error::kBadRing,
                  str("SET_VRING_NUM: ring ", index, " size ", num,
                      packed ? " is not in [1, 32768]" : " is not a power of 2 in [1, 32768]"));
  }
  stop_ring(index);
  vrings_[index].num = num;
  try_start(index);
  return {};
}

Result<void> Backend::set_vring_addr(uint32_t index, const VringAddr& addr) {
  // GUEST: only VHOST_VRING_F_LOG is defined. It may arrive before LOG_ALL is acked (and
  // stay after it is dropped): the used ring is logged while both hold. log_guest_addr
  // needs no check here: every mark is bounds-checked against the log.
  if ((addr.flags & ~kVringFlagLog) != 0) {
    return refuse(error::kBadRing, str("SET_VRING_ADDR: ring ", index, " flags ", hex(addr.flags),
                                       " set undefined bits"));
  }
  Vring& vring = vrings_[index];
  Vring trial;
  trial.num = vring.num;
  trial.addr = addr;
  trial.has_addr = true;
  match_format(trial);
  // With memory and a size known, refuse addresses that cannot work now; otherwise the check
  // happens when the ring starts.
  if (!memory_.table.empty() && trial.num != 0) {
    std::visit([&](auto& q) { q.set_vring_base(vring.base()); }, trial.queue);
    if (auto config = ring_config(trial, index); !config) {
      return std::unexpected(std::move(config.error()));
    }
  }
  stop_ring(index);
  vring.addr = addr;
  vring.has_addr = true;
  try_start(index);
  return {};
}

Result<void> Backend::set_vring_base(uint32_t index, uint32_t num) {
  Vring& vring = vrings_[index];
  uint32_t base = num;
  if (vring.packed()) {
    // SPEC: vhost-user.rst: packed base is avail index (bits 0-14) + wrap (15), used index
    // (16-30) + wrap (31); DPDK virtio-user sends the avail half only (bits 16-31 zero), which
    // names a used position equal to the avail one (see packed_base_from_front_end).
    // GUEST: both indices must name ring entries.
    base = virtio::packed_base_from_front_end(num);
    if ((num >> 16) == 0 && (num & 0xffff) != 0 && (num & 0xffff) != 0x8000) {
      // Not a fresh ring: either DPDK resuming, or a full value whose used half really is
      // (0, wrap 0) with buffers in flight (see packed_base_from_front_end).
      log::info(name_, ": SET_VRING_BASE ring ", index, " ", hex(num),
                " has no used half; the used position is taken to be the available one");
    }
    const uint32_t avail = base & 0x7fff;
    const uint32_t used = (base >> 16) & 0x7fff;
    if (vring.num != 0 && (avail >= vring.num || used >= vring.num)) {
      return refuse(error::kBadRing,
                    str("SET_VRING_BASE: ring ", index, " base ", hex(num), " names entries ",
                        avail, "/", used, " past the ring size ", vring.num));
    }
  }
  stop_ring(index);  // parks the queue: set_vring_base() below is for a stopped ring
  // Split rings keep bits 0-15 (last_avail); the rest is reserved.
  std::visit([&](auto& q) { q.set_vring_base(base); }, vring.queue);
  try_start(index);
  return {};
}

VringState Backend::get_vring_base(uint32_t index) {
  // SPEC: vhost-user.rst: GET_VRING_BASE stops the ring.
  stop_ring(index);
  Vring& vring = vrings_[index];
  // SPEC: vhost-user.rst: packed rings answer the full encoding (both halves), which QEMU
  // reads whole. A stopped ring has nothing in flight, so its used half equals its avail half
  // and a front-end that reads bits 0-15 only (DPDK) resumes at the same place.
  const uint32_t base = vring.base();
  // The front-end sends both again before it restarts the ring (libvhost-user and DPDK
  // close them here too).
  vring.kick.reset();
  vring.call.reset();
  vring.call_set = false;
  return VringState{index, base};
}

Result<void> Backend::set_vring_fd(Request request, uint32_t index, uint64_t payload,
                                   Message& message) {
  const bool no_fd = (payload & kVringNoFdMask) != 0;
  std::string_view what = request == Request::kSetVringKick   ? "kick"
                          : request == Request::kSetVringCall ? "call"
                                                              : "err";
  if (no_fd && request == Request::kSetVringKick) {
    return refuse(error::kRefused, str("SET_VRING_KICK: ring ", index,
                                       " asks for polling (NOFD); vpd needs a kick eventfd"));
  }
  Fd fd = no_fd ? Fd() : message.take_fd(0);  // validate(): exactly one fd unless NOFD
  if (fd) {
    if (auto ok = make_nonblocking(fd, what); !ok) return ok;
  }
  stop_ring(index);
  Vring& vring = vrings_[index];
  switch (request) {
    case Request::kSetVringKick:
      vring.kick = std::move(fd);
      // SPEC: without VHOST_USER_F_PROTOCOL_FEATURES the ring starts enabled.
      if (!protocol_features_acked()) vring.enabled = true;
      break;
    case Request::kSetVringCall:
      vring.call = std::move(fd);
      vring.call_set = true;
      break;
    default:
      vring.err = std::move(fd);
      break;
  }
  try_start(index);
  return {};
}

Result<void> Backend::set_vring_enable(uint32_t index, uint32_t enable) {
  if (enable > 1) {
    return refuse(error::kBadValue,
                  str("SET_VRING_ENABLE: ring ", index, " state ", enable, " is neither 0 nor 1"));
  }
  Vring& vring = vrings_[index];
  if (vring.enabled == (enable == 1)) return {};
  // The Device sees a started ring in one state only: stop, change, start again.
  stop_ring(index);
  vring.enabled = enable == 1;
  try_start(index);
  return {};
}

Config Backend::get_config(const Message& message) const {
  // GUEST: offset + size <= kMaxConfigSize and size == the bytes sent, checked by validate().
  Config out;
  out.head = message.payload_as<ConfigHead>();
  const std::span<const std::byte> space = device_.config();
  for (uint32_t i = 0; i < out.head.size; ++i) {
    const size_t at = size_t{out.head.offset} + i;
    out.data[i] = at < space.size() ? std::to_integer<uint8_t>(space[at]) : uint8_t{0};
  }
  return out;
}

void Backend::reset_device(bool keep_owner) {
  stop_all();
  for (Vring& vring : vrings_) vring = Vring{};  // closes the ring fds
  acked_features_ = 0;
  features_set_ = false;
  status_ = 0;
  log_ = LogState{};  // unmaps the log: the front-end sends a new one when it migrates
  if (!keep_owner) owned_ = false;
  // Guest memory stays: QEMU with CONFIGURE_MEM_SLOTS sends only the regions that differ
  // from what it believes the back-end has, so dropping them would lose them for good. A new
  // SET_MEM_TABLE replaces them.
  log::info(name_, ": vhost-user device reset");
}

void Backend::match_format(Vring& vring) noexcept {
  const bool packed = wants_packed();
  if (packed == vring.packed()) return;
  if (packed) {
    vring.queue.emplace<virtio::PackedQueue>();
  } else {
    vring.queue.emplace<virtio::SplitQueue>();
  }
}

Result<virtio::QueueConfig> Backend::ring_config(const Vring& vring, uint32_t index) const {
  const virtio::RingParts parts = virtio::ring_parts(vring.num, vring.packed());
  // For packed rings the avail/used fields carry the driver/device event areas.
  const uint64_t uva[3] = {vring.addr.desc_user_addr, vring.addr.avail_user_addr,
                           vring.addr.used_user_addr};
  uint64_t gpa[3] = {};
  for (size_t i = 0; i < parts.size(); ++i) {
    // GUEST: ring addresses are front-end virtual addresses; the whole part must lie in one
    // region.
    const auto translated = memory_.table.uva_to_gpa(uva[i], parts[i].bytes);
    if (!translated) {
      return refuse(error::kBadRing,
                    str("ring ", index, ": ", parts[i].name, " at front-end address ", hex(uva[i]),
                        " (", parts[i].bytes, " bytes) is not inside guest memory"));
    }
    gpa[i] = *translated;
  }
  const virtio::QueueConfig config{vring.num, gpa[0], gpa[1], gpa[2], acked_features_};
  // A trial configure on a scratch queue applies every check of the queue itself (alignment,
  // overlap, packed base inside the ring) without touching the ring.
  auto checked = std::visit(
      [&](const auto& q) {
        std::decay_t<decltype(q)> scratch;
        scratch.set_vring_base(q.vring_base());
        return scratch.configure(memory_.table, config);
      },
      vring.queue);
  if (!checked) return refuse(error::kBadRing, str("ring ", index, ": ", checked.error().message));
  return config;
}

void Backend::stop_ring(uint32_t index) noexcept {
  Vring& vring = vrings_[index];
  if (!vring.started) return;
  device_.on_queue_stopped(index);
  vring.started = false;
  ++counters_.rings_stopped;
  // Park the queue: unconfigured (no pointers into memory that may go away), position kept.
  std::visit(
      [](auto& q) {
        const uint32_t base = q.vring_base();
        q.reset();
        q.set_vring_base(base);
      },
      vring.queue);
}

void Backend::try_start(uint32_t index) {
  Vring& vring = vrings_[index];
  if (closed_ || vring.started) return;
  if (!vring.kick || !vring.call_set || vring.num == 0 || !vring.has_addr ||
      memory_.table.empty()) {
    return;
  }
  auto config = ring_config(vring, index);
  Result<void> configured;
  if (config) {
    configured =
        std::visit([&](auto& q) { return q.configure(memory_.table, *config); }, vring.queue);
  } else {
    configured = std::unexpected(std::move(config.error()));
  }
  if (!configured) {
    ++counters_.ring_start_failures;
    log::warning(name_, ": ring ", index, " cannot start: ", configured.error().message);
    return;
  }
  std::visit([&](auto& q) { q.set_log(ring_log(vring)); }, vring.queue);
  vring.config = *config;
  vring.started = true;
  ++counters_.rings_started;
  log::write(log::Level::kDebug,
             str(name_, ": ring ", index, vring.enabled ? " started" : " started, disabled"));
  device_.on_queue_started(index);
}

void Backend::stop_all() noexcept {
  for (uint32_t i = 0; i < num_queues(); ++i) stop_ring(i);
}

void Backend::start_all() {
  for (uint32_t i = 0; i < num_queues(); ++i) try_start(i);
}

}  // namespace vp::vhost
