#pragma once

// The one validation table for front-end requests: a request is checked against its row
// (name, payload size, fd count, queue index, handler) or not at all. Every request that
// arrives is checked here — flags, payload size, payload shape, fd count, queue index —
// before any handler sees it, so a handler may index its queue array with the index this
// returns and read its payload struct without checking again.
//
// Errors returned by validate() concern one message: the framing of the stream is intact,
// the session refuses the request (answers it with an error when an answer is expected)
// and goes on. Errors that end the connection come from the codec (codec.hpp).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "sys/error.hpp"
#include "sys/fd.hpp"
#include "vhost/messages.hpp"

namespace vp::vhost {

/// Payload layouts; each fixes the size range and any shape check beyond size.
enum class Payload : uint8_t {
  kEmpty,         // 0 bytes
  kU64,           // 8 bytes
  kVringState,    // 8 bytes, queue index in .index
  kVringAddr,     // 40 bytes, queue index in .index
  kVringFile,     // 8 bytes (u64): queue index in bits 0-7, NOFD flag in bit 8, rest zero
  kMemoryTable,   // 8 + nregions * 32 bytes, nregions <= 8
  kSingleRegion,  // 40 bytes
  kLog,           // 16 bytes
  kConfig,        // 12 + size bytes, size <= 256, offset + size <= 256
  kInflight,      // 24 bytes
};

/// How many fds a request carries.
enum class FdRule : uint8_t {
  kNoFd,                // exactly 0
  kOneFd,               // exactly 1
  kOneFdUnlessNoFdBit,  // 0 if the payload's NOFD bit is set, else exactly 1 (KICK/CALL/ERR)
  kOneFdPerRegion,      // exactly nregions (SET_MEM_TABLE)
  kAtMostOneFd,         // 0 or 1: REM_MEM_REG, where old front-ends attach an fd to be closed
};

/// Where the queue index lives, if the request names a queue.
enum class QueueIndexAt : uint8_t {
  kNoQueue,
  kFirstU32,    // VringState::index / VringAddr::index
  kU64LowByte,  // bits 0-7 of the u64 (KICK/CALL/ERR)
};

/// When the back-end answers.
enum class Reply : uint8_t {
  kAlways,  // the request has a reply body (GET_*, SET_LOG_BASE with its fd, ...)
  kOnAck,   // only when NEED_REPLY is set and REPLY_ACK was negotiated (a u64 status)
};

/// One row of the table.
struct RequestRule {
  Request request;
  std::string_view name;  // the spec's name without the VHOST_USER_ prefix
  bool handled;           // false: the spec defines it, vpd refuses it
  Payload payload;
  uint32_t min_size;
  uint32_t max_size;
  FdRule fds;
  QueueIndexAt queue_index;
  Reply reply;
  std::optional<ProtocolFeature> gate;  // protocol feature the spec requires, if any
};

/// What validate() hands to a handler: its row, and the queue index when the request
/// names a queue (already checked against the session's queue count).
struct ValidRequest {
  const RequestRule* rule;
  std::optional<uint32_t> queue_index;
};

/// Stable error codes of validate(); all are per-message (the stream stays in sync).
namespace error {
inline constexpr std::string_view kUnknownRequest = "vhost-unknown-request";
inline constexpr std::string_view kUnsupportedRequest = "vhost-unsupported-request";
inline constexpr std::string_view kBadFlags = "vhost-bad-flags";
inline constexpr std::string_view kBadSize = "vhost-bad-size";
inline constexpr std::string_view kBadPayload = "vhost-bad-payload";
inline constexpr std::string_view kBadFds = "vhost-bad-fds";
inline constexpr std::string_view kBadQueue = "vhost-bad-queue";
inline constexpr std::string_view kNotNegotiated = "vhost-not-negotiated";
}  // namespace error

/// The row for `request`, or nullptr when the spec defines no such front-end request.
const RequestRule* find_rule(uint32_t request) noexcept;

/// Every row, ordered by request code (codes 1 .. kRequestLimit-1, no gaps).
std::span<const RequestRule> request_rules() noexcept;

/// "SET_VRING_NUM" for a known code, "UNKNOWN" otherwise. Never fails.
std::string_view request_name(uint32_t request) noexcept;

/// "REPLY_ACK" for a known protocol feature bit, "UNKNOWN" otherwise. Never fails.
std::string_view protocol_feature_name(ProtocolFeature feature) noexcept;

/// Checks one received message against its row: header flags (version 1, no REPLY bit, no
/// undefined bit), the header size against the payload given, payload size and shape, fd
/// count, and the queue index against `num_queues` (virtqueues, not pairs). Reads only
/// `payload` (never past its end) and only counts `fds`; does not close or keep them.
/// Fails with one of the error:: codes and a sentence naming the request.
Result<ValidRequest> validate(const Header& header, std::span<const std::byte> payload,
                              std::span<const Fd> fds, uint32_t num_queues);

/// Whether the front-end waits for an answer to this request: always for requests with a
/// reply body; for the others only with NEED_REPLY set and REPLY_ACK negotiated. Unknown
/// requests follow the REPLY_ACK rule (the front-end asked; it will wait).
bool expects_reply(const Header& header, bool reply_ack_negotiated) noexcept;

/// Refuses (code vhost-not-negotiated) a request whose protocol feature gate is not in
/// `acked_protocol_features`. Separate from validate(): the table does not know the
/// session's negotiation state.
Result<void> check_negotiated(const RequestRule& rule, uint64_t acked_protocol_features);

}  // namespace vp::vhost
