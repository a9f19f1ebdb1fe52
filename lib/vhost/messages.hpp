#pragma once

// vhost-user wire format: the message header, the request codes a front-end sends, the
// protocol feature bits, and the payload layouts vpd reads or writes.
//
// SPEC: QEMU docs/interop/vhost-user.rst, "Message Specification" and "Front-end message
// types". All numbers travel in the host's native byte order. Every struct below is the
// exact byte image of a payload: the static_asserts pin each size and offset the wire
// fixes, and has_unique_object_representations proves the compiler added no padding of
// its own (the padding the wire has is spelled out as a named field). Payloads are
// copied in and out with memcpy (see wire_bytes() and Message::payload_as()), never
// reinterpreted in place.

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

namespace vp::vhost {

/// Front-end request codes (front-end → back-end). The header carries a raw u32, so any
/// value may arrive; look codes up with find_rule() (request_table.hpp) rather than
/// casting blindly.
enum class Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,  // formerly SET_SLAVE_REQ_FD
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kCreateCryptoSession = 26,
  kCloseCryptoSession = 27,
  kPostcopyAdvise = 28,
  kPostcopyListen = 29,
  kPostcopyEnd = 30,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kGpuSetSocket = 33,
  kResetDevice = 34,
  kVringKick = 35,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
  kGetSharedObject = 41,
  kSetDeviceStateFd = 42,
  kCheckDeviceState = 43,
};

/// One past the highest front-end request code the spec defines.
inline constexpr uint32_t kRequestLimit = 44;

constexpr uint32_t code(Request r) noexcept { return static_cast<uint32_t>(r); }

// Header flags. Bits 0-1 are the protocol version, bit 2 marks a reply (back-end → front-end),
// bit 3 asks for a REPLY_ACK answer. The spec defines no other bit.
inline constexpr uint32_t kFlagVersionMask = 0x3;
inline constexpr uint32_t kVersion = 0x1;
inline constexpr uint32_t kFlagReply = 0x4;
inline constexpr uint32_t kFlagNeedReply = 0x8;
inline constexpr uint32_t kFlagsDefined = kFlagVersionMask | kFlagReply | kFlagNeedReply;

/// Protocol feature bit numbers (GET/SET_PROTOCOL_FEATURES).
enum class ProtocolFeature : uint32_t {
  kMq = 0,
  kLogShmfd = 1,
  kRarp = 2,
  kReplyAck = 3,
  kNetMtu = 4,
  kBackendReq = 5,  // formerly SLAVE_REQ
  kCrossEndian = 6,
  kCryptoSession = 7,
  kPagefault = 8,
  kConfig = 9,
  kBackendSendFd = 10,  // formerly SLAVE_SEND_FD
  kHostNotifier = 11,
  kInflightShmfd = 12,
  kResetDevice = 13,
  kInbandNotifications = 14,
  kConfigureMemSlots = 15,
  kStatus = 16,
  kXenMmap = 17,
  kSharedObject = 18,
  kDeviceState = 19,
};

/// The mask of one protocol feature.
constexpr uint64_t bit(ProtocolFeature f) noexcept {
  return uint64_t{1} << static_cast<uint32_t>(f);
}

/// Device feature bits (GET/SET_FEATURES) that belong to vhost rather than to virtio-net.
/// VHOST_USER_F_PROTOCOL_FEATURES reuses the reserved virtio bit 30; VHOST_F_LOG_ALL is 26.
inline constexpr uint64_t kFeatureProtocolFeatures = uint64_t{1} << 30;
inline constexpr uint64_t kFeatureLogAll = uint64_t{1} << 26;

// SET_VRING_KICK / CALL / ERR payload: bits 0-7 are the queue index, bit 8 says "no fd in
// the ancillary data" (poll instead); the spec defines no other bit.
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdMask = 0x100;

/// vring address flags: VHOST_VRING_F_LOG (log writes to the used ring).
inline constexpr uint32_t kVringFlagLog = 0x1;

/// Regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS), and so the most fds a
/// front-end attaches to one message; the spec also caps back-end messages at 8 fds.
inline constexpr uint32_t kMaxMemoryRegions = 8;
inline constexpr size_t kMaxFds = 8;
/// Largest device config space access (QEMU's VHOST_USER_MAX_CONFIG_SIZE).
inline constexpr uint32_t kMaxConfigSize = 256;
/// Largest payload the codec accepts. Every request vpd knows is far smaller (the largest
/// is GET/SET_CONFIG at 268 bytes); the slack lets the session drain and refuse a request it
/// does not know instead of dropping the connection. A bigger size ends the connection.
inline constexpr uint32_t kMaxPayloadSize = 4096;

/// The 12-byte header in front of every message.
struct Header {
  uint32_t request = 0;  // a Request code for front-end messages
  uint32_t flags = 0;
  uint32_t size = 0;  // payload bytes that follow
};
inline constexpr size_t kHeaderSize = 12;

/// Vring state description: SET_VRING_NUM/BASE, GET_VRING_BASE, SET_VRING_ENABLE.
struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};

/// Vring address description: SET_VRING_ADDR. Addresses are front-end user addresses
/// (IOVAs with VIRTIO_F_IOMMU_PLATFORM, which vpd does not offer); log is a guest address.
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;
  uint64_t desc_user_addr = 0;
  uint64_t used_user_addr = 0;
  uint64_t avail_user_addr = 0;
  uint64_t log_guest_addr = 0;
};

/// One guest memory region (without XEN_MMAP, which vpd does not offer: that adds 8 bytes).
struct MemoryRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
};

/// Multiple memory regions description: SET_MEM_TABLE. Only the first `nregions` entries
/// travel: the payload is 8 + nregions * 32 bytes.
struct MemoryTable {
  uint32_t nregions = 0;
  uint32_t padding = 0;
  MemoryRegion regions[kMaxMemoryRegions] = {};
};
inline constexpr size_t kMemoryTableHeaderSize = 8;

/// Single memory region description: ADD_MEM_REG, REM_MEM_REG.
struct SingleMemoryRegion {
  uint64_t padding = 0;
  MemoryRegion region;
};

/// Log description: SET_LOG_BASE with LOG_SHMFD (the spec's table says u64, but QEMU and
/// libvhost-user both use this 16-byte form, with the log fd attached).
struct LogDescription {
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
};

/// Virtio device config space access: GET_CONFIG, SET_CONFIG. The payload is the 12-byte
/// head plus `size` bytes of config space.
struct ConfigHead {
  uint32_t offset = 0;
  uint32_t size = 0;
  uint32_t flags = 0;  // 0: writable fields, 1: live migration
};
struct Config {
  ConfigHead head;
  uint8_t data[kMaxConfigSize] = {};
};
inline constexpr size_t kConfigHeadSize = 12;

/// Inflight description: GET_INFLIGHT_FD, SET_INFLIGHT_FD. QEMU sends the C struct, whose
/// natural alignment pads it to 24 bytes; the padding is named here.
struct InflightDescription {
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
  uint16_t num_queues = 0;
  uint16_t queue_size = 0;
  uint32_t padding = 0;
};

// The wire fixes these; a change here breaks every front-end.
static_assert(sizeof(Header) == kHeaderSize);
static_assert(offsetof(Header, request) == 0 && offsetof(Header, flags) == 4 &&
              offsetof(Header, size) == 8);
static_assert(sizeof(VringState) == 8);
static_assert(offsetof(VringState, index) == 0 && offsetof(VringState, num) == 4);
static_assert(sizeof(VringAddr) == 40);
static_assert(offsetof(VringAddr, index) == 0 && offsetof(VringAddr, flags) == 4 &&
              offsetof(VringAddr, desc_user_addr) == 8 &&
              offsetof(VringAddr, used_user_addr) == 16 &&
              offsetof(VringAddr, avail_user_addr) == 24 &&
              offsetof(VringAddr, log_guest_addr) == 32);
static_assert(sizeof(MemoryRegion) == 32);
static_assert(offsetof(MemoryRegion, guest_phys_addr) == 0 &&
              offsetof(MemoryRegion, memory_size) == 8 &&
              offsetof(MemoryRegion, userspace_addr) == 16 &&
              offsetof(MemoryRegion, mmap_offset) == 24);
static_assert(sizeof(MemoryTable) == kMemoryTableHeaderSize + kMaxMemoryRegions * 32);
static_assert(offsetof(MemoryTable, nregions) == 0 && offsetof(MemoryTable, padding) == 4 &&
              offsetof(MemoryTable, regions) == kMemoryTableHeaderSize);
static_assert(sizeof(SingleMemoryRegion) == 40);
static_assert(offsetof(SingleMemoryRegion, region) == 8);
static_assert(sizeof(LogDescription) == 16);
static_assert(offsetof(LogDescription, mmap_offset) == 8);
static_assert(sizeof(ConfigHead) == kConfigHeadSize);
static_assert(offsetof(ConfigHead, offset) == 0 && offsetof(ConfigHead, size) == 4 &&
              offsetof(ConfigHead, flags) == 8);
static_assert(sizeof(Config) == kConfigHeadSize + kMaxConfigSize);
static_assert(offsetof(Config, data) == kConfigHeadSize);
static_assert(sizeof(InflightDescription) == 24);
static_assert(offsetof(InflightDescription, num_queues) == 16 &&
              offsetof(InflightDescription, queue_size) == 18);

/// A type whose bytes are exactly its wire image.
template <class T>
concept WireType = std::is_trivially_copyable_v<T> && std::has_unique_object_representations_v<T>;

static_assert(WireType<Header> && WireType<VringState> && WireType<VringAddr> &&
              WireType<MemoryRegion> && WireType<MemoryTable> && WireType<SingleMemoryRegion> &&
              WireType<LogDescription> && WireType<ConfigHead> && WireType<Config> &&
              WireType<InflightDescription> && WireType<uint64_t>);

/// The wire bytes of `value` (a view: `value` must outlive it).
template <WireType T>
std::span<const std::byte, sizeof(T)> wire_bytes(const T& value) noexcept {
  return std::as_bytes(std::span<const T, 1>(&value, 1));
}

}  // namespace vp::vhost
