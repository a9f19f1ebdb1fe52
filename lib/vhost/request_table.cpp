#include "vhost/request_table.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "sys/str.hpp"

namespace vp::vhost {
namespace {

struct SizeRange {
  uint32_t min;
  uint32_t max;
};

constexpr SizeRange size_range(Payload payload) {
  switch (payload) {
    case Payload::kEmpty:
      return {0, 0};
    case Payload::kU64:
    case Payload::kVringFile:
      return {sizeof(uint64_t), sizeof(uint64_t)};
    case Payload::kVringState:
      return {sizeof(VringState), sizeof(VringState)};
    case Payload::kVringAddr:
      return {sizeof(VringAddr), sizeof(VringAddr)};
    case Payload::kMemoryTable:
      return {kMemoryTableHeaderSize, sizeof(MemoryTable)};
    case Payload::kSingleRegion:
      return {sizeof(SingleMemoryRegion), sizeof(SingleMemoryRegion)};
    case Payload::kLog:
      return {sizeof(LogDescription), sizeof(LogDescription)};
    case Payload::kConfig:
      return {kConfigHeadSize, sizeof(Config)};
    case Payload::kInflight:
      return {sizeof(InflightDescription), sizeof(InflightDescription)};
  }
  return {0, 0};
}

constexpr RequestRule handled(Request request, std::string_view name, Payload payload, FdRule fds,
                              QueueIndexAt queue_index, Reply reply,
                              std::optional<ProtocolFeature> gate = std::nullopt) {
  const SizeRange range = size_range(payload);
  return RequestRule{request,   name, true,        payload, range.min,
                     range.max, fds,  queue_index, reply,   gate};
}

// Known to the spec, refused by vpd: shape fields unused; `reply` still says whether the
// front-end waits for an answer.
constexpr RequestRule refused(Request request, std::string_view name, Reply reply) {
  return RequestRule{request, name,        false,         Payload::kEmpty,
                     0,       0,           FdRule::kNoFd, QueueIndexAt::kNoQueue,
                     reply,   std::nullopt};
}

using enum Payload;
using enum FdRule;
using enum QueueIndexAt;
using enum Reply;
using PF = ProtocolFeature;
using R = Request;

// SPEC: QEMU docs/interop/vhost-user.rst "Front-end message types"; one row per code, in
// code order (checked below).
constexpr std::array<RequestRule, kRequestLimit - 1> kRules = {{
    handled(R::kGetFeatures, "GET_FEATURES", kEmpty, kNoFd, kNoQueue, kAlways),
    handled(R::kSetFeatures, "SET_FEATURES", kU64, kNoFd, kNoQueue, kOnAck),
    handled(R::kSetOwner, "SET_OWNER", kEmpty, kNoFd, kNoQueue, kOnAck),
    handled(R::kResetOwner, "RESET_OWNER", kEmpty, kNoFd, kNoQueue, kOnAck),
    handled(R::kSetMemTable, "SET_MEM_TABLE", kMemoryTable, kOneFdPerRegion, kNoQueue, kOnAck),
    // vpd takes the log only as shared memory (LOG_SHMFD): 16-byte description + its fd,
    // answered with a u64.
    handled(R::kSetLogBase, "SET_LOG_BASE", kLog, kOneFd, kNoQueue, kAlways, PF::kLogShmfd),
    handled(R::kSetLogFd, "SET_LOG_FD", kEmpty, kOneFd, kNoQueue, kOnAck),
    handled(R::kSetVringNum, "SET_VRING_NUM", kVringState, kNoFd, kFirstU32, kOnAck),
    handled(R::kSetVringAddr, "SET_VRING_ADDR", kVringAddr, kNoFd, kFirstU32, kOnAck),
    handled(R::kSetVringBase, "SET_VRING_BASE", kVringState, kNoFd, kFirstU32, kOnAck),
    handled(R::kGetVringBase, "GET_VRING_BASE", kVringState, kNoFd, kFirstU32, kAlways),
    handled(R::kSetVringKick, "SET_VRING_KICK", kVringFile, kOneFdUnlessNoFdBit, kU64LowByte,
            kOnAck),
    handled(R::kSetVringCall, "SET_VRING_CALL", kVringFile, kOneFdUnlessNoFdBit, kU64LowByte,
            kOnAck),
    handled(R::kSetVringErr, "SET_VRING_ERR", kVringFile, kOneFdUnlessNoFdBit, kU64LowByte, kOnAck),
    handled(R::kGetProtocolFeatures, "GET_PROTOCOL_FEATURES", kEmpty, kNoFd, kNoQueue, kAlways),
    handled(R::kSetProtocolFeatures, "SET_PROTOCOL_FEATURES", kU64, kNoFd, kNoQueue, kOnAck),
    handled(R::kGetQueueNum, "GET_QUEUE_NUM", kEmpty, kNoFd, kNoQueue, kAlways, PF::kMq),
    handled(R::kSetVringEnable, "SET_VRING_ENABLE", kVringState, kNoFd, kFirstU32, kOnAck),
    handled(R::kSendRarp, "SEND_RARP", kU64, kNoFd, kNoQueue, kOnAck, PF::kRarp),
    handled(R::kNetSetMtu, "NET_SET_MTU", kU64, kNoFd, kNoQueue, kOnAck, PF::kNetMtu),
    handled(R::kSetBackendReqFd, "SET_BACKEND_REQ_FD", kEmpty, kOneFd, kNoQueue, kOnAck,
            PF::kBackendReq),
    refused(R::kIotlbMsg, "IOTLB_MSG", kAlways),
    refused(R::kSetVringEndian, "SET_VRING_ENDIAN", kOnAck),
    handled(R::kGetConfig, "GET_CONFIG", kConfig, kNoFd, kNoQueue, kAlways, PF::kConfig),
    handled(R::kSetConfig, "SET_CONFIG", kConfig, kNoFd, kNoQueue, kOnAck, PF::kConfig),
    refused(R::kCreateCryptoSession, "CREATE_CRYPTO_SESSION", kAlways),
    refused(R::kCloseCryptoSession, "CLOSE_CRYPTO_SESSION", kOnAck),
    refused(R::kPostcopyAdvise, "POSTCOPY_ADVISE", kAlways),
    refused(R::kPostcopyListen, "POSTCOPY_LISTEN", kOnAck),
    refused(R::kPostcopyEnd, "POSTCOPY_END", kAlways),
    handled(R::kGetInflightFd, "GET_INFLIGHT_FD", kInflight, kNoFd, kNoQueue, kAlways,
            PF::kInflightShmfd),
    handled(R::kSetInflightFd, "SET_INFLIGHT_FD", kInflight, kOneFd, kNoQueue, kOnAck,
            PF::kInflightShmfd),
    refused(R::kGpuSetSocket, "GPU_SET_SOCKET", kOnAck),
    handled(R::kResetDevice, "RESET_DEVICE", kEmpty, kNoFd, kNoQueue, kOnAck, PF::kResetDevice),
    refused(R::kVringKick, "VRING_KICK", kOnAck),
    handled(R::kGetMaxMemSlots, "GET_MAX_MEM_SLOTS", kEmpty, kNoFd, kNoQueue, kAlways,
            PF::kConfigureMemSlots),
    handled(R::kAddMemReg, "ADD_MEM_REG", kSingleRegion, kOneFd, kNoQueue, kOnAck,
            PF::kConfigureMemSlots),
    handled(R::kRemMemReg, "REM_MEM_REG", kSingleRegion, kAtMostOneFd, kNoQueue, kOnAck,
            PF::kConfigureMemSlots),
    handled(R::kSetStatus, "SET_STATUS", kU64, kNoFd, kNoQueue, kOnAck, PF::kStatus),
    handled(R::kGetStatus, "GET_STATUS", kEmpty, kNoFd, kNoQueue, kAlways, PF::kStatus),
    refused(R::kGetSharedObject, "GET_SHARED_OBJECT", kAlways),
    refused(R::kSetDeviceStateFd, "SET_DEVICE_STATE_FD", kAlways),
    refused(R::kCheckDeviceState, "CHECK_DEVICE_STATE", kAlways),
}};

constexpr bool rules_in_code_order() {
  for (size_t i = 0; i < kRules.size(); ++i) {
    if (code(kRules[i].request) != i + 1) return false;
  }
  return true;
}
static_assert(rules_in_code_order(), "kRules must list codes 1, 2, 3, ... without gaps");

constexpr bool rules_fit_the_codec() {
  for (const RequestRule& rule : kRules) {
    if (rule.min_size > rule.max_size || rule.max_size > kMaxPayloadSize) return false;
  }
  return true;
}
static_assert(rules_fit_the_codec(), "every payload must fit the codec's buffer");

constexpr std::array<std::string_view, 20> kProtocolFeatureNames = {
    "MQ",
    "LOG_SHMFD",
    "RARP",
    "REPLY_ACK",
    "NET_MTU",
    "BACKEND_REQ",
    "CROSS_ENDIAN",
    "CRYPTO_SESSION",
    "PAGEFAULT",
    "CONFIG",
    "BACKEND_SEND_FD",
    "HOST_NOTIFIER",
    "INFLIGHT_SHMFD",
    "RESET_DEVICE",
    "INBAND_NOTIFICATIONS",
    "CONFIGURE_MEM_SLOTS",
    "STATUS",
    "XEN_MMAP",
    "SHARED_OBJECT",
    "DEVICE_STATE",
};

std::string count_of(uint64_t n, std::string_view one, std::string_view many) {
  return str(n, ' ', n == 1 ? one : many);
}

// Copies a T out of the payload at `offset`. Callers have checked the size; a short
// payload still never reads past its end (the missing bytes read as zero).
template <WireType T>
T load(std::span<const std::byte> payload, size_t offset = 0) noexcept {
  T value{};
  if (offset < payload.size()) {
    std::memcpy(&value, payload.data() + offset, std::min(sizeof(T), payload.size() - offset));
  }
  return value;
}

std::unexpected<Error> refuse(std::string_view code, std::string message) {
  return fail(std::string(code), std::move(message));
}

bool wraps(uint64_t start, uint64_t size) {
  uint64_t end = 0;
  return __builtin_add_overflow(start, size, &end);
}

// A region's ranges must be non-empty and end inside the 64-bit space, so later code can
// compute `start + size` without overflow. Overlaps and mapping are the guest memory
// code's business.
Result<void> check_region(std::string_view name, std::string_view which, const MemoryRegion& region,
                          bool uses_mmap_offset) {
  // GUEST: memory_size, guest_phys_addr, userspace_addr and mmap_offset come from the
  // front-end; bounded here before any handler adds them.
  if (region.memory_size == 0)
    return refuse(error::kBadPayload, str(name, ": ", which, " has size 0"));
  if (wraps(region.guest_phys_addr, region.memory_size)) {
    return refuse(error::kBadPayload,
                  str(name, ": ", which, " guest range ", hex(region.guest_phys_addr), " + ",
                      hex(region.memory_size), " wraps past the end of the address space"));
  }
  if (wraps(region.userspace_addr, region.memory_size)) {
    return refuse(error::kBadPayload,
                  str(name, ": ", which, " user range ", hex(region.userspace_addr), " + ",
                      hex(region.memory_size), " wraps past the end of the address space"));
  }
  if (uses_mmap_offset && wraps(region.mmap_offset, region.memory_size)) {
    return refuse(error::kBadPayload,
                  str(name, ": ", which, " mmap offset ", hex(region.mmap_offset), " + ",
                      hex(region.memory_size), " wraps past the end of the file"));
  }
  return {};
}

// Shape checks beyond the size range, per payload layout.
Result<void> check_shape(const RequestRule& rule, std::span<const std::byte> payload) {
  const std::string_view name = rule.name;
  switch (rule.payload) {
    case kMemoryTable: {
      // GUEST: nregions bounds the region loop and the fd count; checked against the
      // table's capacity and against the bytes that actually arrived.
      const auto nregions = load<uint32_t>(payload);
      if (nregions > kMaxMemoryRegions) {
        return refuse(error::kBadPayload,
                      str(name, ": ", count_of(nregions, "memory region", "memory regions"),
                          ", at most ", kMaxMemoryRegions));
      }
      const size_t expected = kMemoryTableHeaderSize + size_t{nregions} * sizeof(MemoryRegion);
      if (payload.size() != expected) {
        return refuse(
            error::kBadSize,
            str(name, ": payload is ", payload.size(), " bytes, but ",
                count_of(nregions, "memory region needs ", "memory regions need "), expected));
      }
      for (uint32_t i = 0; i < nregions; ++i) {
        const auto region =
            load<MemoryRegion>(payload, kMemoryTableHeaderSize + i * sizeof(MemoryRegion));
        if (auto ok = check_region(name, str("region ", i), region, true); !ok) return ok;
      }
      return {};
    }
    case kSingleRegion: {
      const auto single = load<SingleMemoryRegion>(payload);
      // REM_MEM_REG identifies the region by its addresses and size; its mmap offset is
      // ignored by the spec, so it is not judged either.
      return check_region(name, "the region", single.region, rule.request != Request::kRemMemReg);
    }
    case kConfig: {
      // GUEST: offset and size index the device's config space; both bounded by the 256
      // bytes a config access may cover, and size must match the bytes that arrived.
      const auto head = load<ConfigHead>(payload);
      const size_t data_bytes = payload.size() - kConfigHeadSize;
      if (head.size != data_bytes) {
        return refuse(error::kBadSize,
                      str(name, ": config size ", head.size, " does not match the ", data_bytes,
                          " bytes after the config head"));
      }
      if (head.offset > kMaxConfigSize || head.size > kMaxConfigSize - head.offset) {
        return refuse(error::kBadPayload,
                      str(name, ": offset ", head.offset, " + size ", head.size, " is past the ",
                          kMaxConfigSize, "-byte config space"));
      }
      return {};
    }
    case kVringFile: {
      // GUEST: only the queue index (bits 0-7) and NOFD (bit 8) are defined.
      const auto value = load<uint64_t>(payload);
      const uint64_t undefined = value & ~(kVringIndexMask | kVringNoFdMask);
      if (undefined != 0) {
        return refuse(error::kBadPayload,
                      str(name, ": payload ", hex(value), " sets undefined bits ", hex(undefined)));
      }
      return {};
    }
    case kEmpty:
    case kU64:
    case kVringState:
    case kVringAddr:
    case kLog:
    case kInflight:
      return {};
  }
  return {};
}

Result<void> check_fds(const RequestRule& rule, std::span<const std::byte> payload,
                       size_t fd_count) {
  const std::string_view name = rule.name;
  const std::string carries = str(name, ": carries ", count_of(fd_count, "fd", "fds"));
  switch (rule.fds) {
    case kNoFd:
      if (fd_count != 0) return refuse(error::kBadFds, str(carries, ", takes none"));
      return {};
    case kOneFd:
      if (fd_count != 1) return refuse(error::kBadFds, str(carries, ", takes exactly 1"));
      return {};
    case kAtMostOneFd:
      if (fd_count > 1) return refuse(error::kBadFds, str(carries, ", takes at most 1"));
      return {};
    case kOneFdUnlessNoFdBit: {
      const bool no_fd = (load<uint64_t>(payload) & kVringNoFdMask) != 0;
      if (no_fd && fd_count != 0) {
        return refuse(error::kBadFds, str(carries, " but its NOFD bit (", hex(kVringNoFdMask),
                                          ") says it has none"));
      }
      if (!no_fd && fd_count != 1) {
        return refuse(error::kBadFds, str(carries, " and its NOFD bit (", hex(kVringNoFdMask),
                                          ") is clear: expected exactly 1"));
      }
      return {};
    }
    case kOneFdPerRegion: {
      const auto nregions = load<uint32_t>(payload);  // bounded by check_shape
      if (fd_count != nregions) {
        return refuse(error::kBadFds,
                      str(carries, " for ", count_of(nregions, "memory region", "memory regions"),
                          ": expected one fd per region"));
      }
      return {};
    }
  }
  return {};
}

}  // namespace

const RequestRule* find_rule(uint32_t request) noexcept {
  if (request == 0 || request >= kRequestLimit) return nullptr;
  return &kRules[request - 1];
}

std::span<const RequestRule> request_rules() noexcept { return kRules; }

std::string_view request_name(uint32_t request) noexcept {
  const RequestRule* rule = find_rule(request);
  return rule != nullptr ? rule->name : std::string_view("UNKNOWN");
}

std::string_view protocol_feature_name(ProtocolFeature feature) noexcept {
  const auto index = static_cast<uint32_t>(feature);
  return index < kProtocolFeatureNames.size() ? kProtocolFeatureNames[index]
                                              : std::string_view("UNKNOWN");
}

Result<ValidRequest> validate(const Header& header, std::span<const std::byte> payload,
                              std::span<const Fd> fds, uint32_t num_queues) {
  // GUEST: every header field comes from the front-end.
  const RequestRule* rule = find_rule(header.request);
  if (rule == nullptr)
    return refuse(error::kUnknownRequest, str("unknown request ", header.request));
  const std::string_view name = rule->name;

  const uint32_t version = header.flags & kFlagVersionMask;
  if (version != kVersion) {
    return refuse(error::kBadFlags,
                  str(name, ": flags ", hex(header.flags), " carry protocol version ", version,
                      "; vpd speaks version ", kVersion));
  }
  if ((header.flags & kFlagReply) != 0) {
    return refuse(error::kBadFlags, str(name, ": the REPLY flag is set on a request"));
  }
  if (const uint32_t undefined = header.flags & ~kFlagsDefined; undefined != 0) {
    return refuse(error::kBadFlags,
                  str(name, ": flags ", hex(header.flags), " set undefined bits ", hex(undefined)));
  }
  if (!rule->handled) {
    return refuse(error::kUnsupportedRequest,
                  str(name, " (request ", header.request, ") is not supported by vpd"));
  }

  // GUEST: the payload size bounds every read below.
  if (header.size != payload.size()) {
    return refuse(error::kBadSize, str(name, ": header says ", header.size, " payload bytes, ",
                                       payload.size(), " arrived"));
  }
  if (payload.size() < rule->min_size || payload.size() > rule->max_size) {
    if (rule->min_size == rule->max_size) {
      return refuse(error::kBadSize, str(name, ": payload is ", payload.size(), " bytes, expected ",
                                         rule->min_size));
    }
    return refuse(error::kBadSize, str(name, ": payload is ", payload.size(), " bytes, expected ",
                                       rule->min_size, " to ", rule->max_size));
  }
  if (auto ok = check_shape(*rule, payload); !ok) return std::unexpected(std::move(ok.error()));
  if (auto ok = check_fds(*rule, payload, fds.size()); !ok) {
    return std::unexpected(std::move(ok.error()));
  }

  std::optional<uint32_t> queue_index;
  switch (rule->queue_index) {
    case kNoQueue:
      break;
    case kFirstU32:
      queue_index = load<uint32_t>(payload);
      break;
    case kU64LowByte:
      queue_index = static_cast<uint32_t>(load<uint64_t>(payload) & kVringIndexMask);
      break;
  }
  // GUEST: the queue index selects an entry of the session's queue array.
  if (queue_index && *queue_index >= num_queues) {
    return refuse(error::kBadQueue, str(name, ": queue index ", *queue_index, " is out of range (",
                                        count_of(num_queues, "queue", "queues"), ")"));
  }
  return ValidRequest{rule, queue_index};
}

bool expects_reply(const Header& header, bool reply_ack_negotiated) noexcept {
  const RequestRule* rule = find_rule(header.request);
  if (rule != nullptr && rule->reply == kAlways) return true;
  return reply_ack_negotiated && (header.flags & kFlagNeedReply) != 0;
}

Result<void> check_negotiated(const RequestRule& rule, uint64_t acked_protocol_features) {
  if (!rule.gate || (acked_protocol_features & bit(*rule.gate)) != 0) return {};
  return refuse(error::kNotNegotiated,
                str(rule.name, " needs protocol feature ", protocol_feature_name(*rule.gate),
                    " (bit ", static_cast<uint32_t>(*rule.gate), "), which was not negotiated"));
}

}  // namespace vp::vhost
