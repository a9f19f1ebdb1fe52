#pragma once

// vhost-user message codec over a Unix stream socket with SCM_RIGHTS.
//
// Reading is an incremental state machine (MessageReader): each read() call takes whatever
// bytes the socket has, keeps its place inside the current message (header, then exactly
// `size` payload bytes) and returns kWouldBlock when a non-blocking socket runs dry, so a
// worker never waits on a slow or stalled front-end. On a blocking socket the same call
// simply returns once the message is complete. fds that arrive by SCM_RIGHTS are wrapped
// in vp::Fd by the recvmsg that brought them, before anything is judged, so every error
// path closes them.
//
// Two kinds of errors, reported by different functions:
//  - MessageReader::read() / MessageWriter::flush() fail only when the connection must
//    end: the stream lost its framing (EOF inside a message, a size over kMaxPayloadSize,
//    more fds than one message may carry, truncated ancillary data) — code
//    kErrorFraming — or the socket failed (code "system").
//  - validate() (request_table.hpp) judges one complete message; its errors are answered
//    and the session goes on.

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "sys/error.hpp"
#include "sys/fd.hpp"
#include "vhost/messages.hpp"

namespace vp::vhost {

/// The connection's byte stream cannot be trusted any more: close it.
inline constexpr std::string_view kErrorFraming = "vhost-framing";

/// One complete message: header, payload and the fds that came with it (owned).
class Message {
 public:
  const Header& header() const noexcept { return header_; }
  uint32_t request() const noexcept { return header_.request; }
  std::span<const std::byte> payload() const noexcept { return {payload_.data(), header_.size}; }

  /// The payload copied into a T. Bytes the front-end did not send read as zero, so this
  /// never reads past the payload; call it after validate() has checked the size.
  template <WireType T>
  T payload_as() const noexcept {
    T value{};
    std::memcpy(&value, payload_.data(), std::min<size_t>(sizeof(T), header_.size));
    return value;
  }

  size_t fd_count() const noexcept { return fd_count_; }
  std::span<const Fd> fds() const noexcept { return {fds_.data(), fd_count_}; }
  std::span<Fd> fds() noexcept { return {fds_.data(), fd_count_}; }
  /// Takes ownership of fd `i` (an empty Fd if out of range or already taken). fds not
  /// taken are closed when the message is cleared or the next one is read.
  Fd take_fd(size_t i) noexcept { return i < fd_count_ ? std::move(fds_[i]) : Fd(); }

  /// Closes the fds not taken and forgets the message.
  void clear() noexcept;

 private:
  friend class MessageReader;

  Header header_{};
  alignas(8) std::array<std::byte, kMaxPayloadSize> payload_{};
  std::array<Fd, kMaxFds> fds_{};
  size_t fd_count_ = 0;
};

enum class ReadStatus {
  kMessage,     // message() holds one complete message
  kWouldBlock,  // non-blocking socket ran dry; call read() again when it is readable
  kClosed,      // the peer closed the connection between messages
};

/// Reads one message at a time from a Unix stream socket, blocking or non-blocking.
/// No allocation per message: the payload buffer is part of the reader.
class MessageReader {
 public:
  /// Continues the current message with whatever the socket has. A message that was
  /// complete is cleared first (its fds not taken are closed). With epoll edge-triggered,
  /// call until kWouldBlock: several messages may be queued. Handles EINTR. On error the
  /// reader is reset (partial fds closed) and the connection must be closed: codes
  /// kErrorFraming or "system".
  Result<ReadStatus> read(int socket);

  /// The message of the last kMessage, valid until the next read() or reset().
  Message& message() noexcept { return message_; }
  const Message& message() const noexcept { return message_; }

  /// Some bytes or fds of a message have arrived but not all (for a stall timeout).
  bool mid_message() const noexcept { return !complete_ && (have_ > 0 || message_.fd_count_ > 0); }
  /// Messages completed so far: with mid_message(), tells a message that stays incomplete
  /// from a new one that began after the last completed.
  uint64_t completed() const noexcept { return completed_; }
  /// What has arrived of the incomplete message, for a log line: "7 of the 12 header bytes
  /// of a message", "the 12-byte header of SET_FEATURES and 3 of the 8 payload bytes it
  /// announces", "5 of the 12 header bytes of a message (with 1 fd)".
  std::string describe_partial() const;

  /// Drops any partial or complete message, closing its fds.
  void reset() noexcept;

 private:
  // Wraps every fd in the control data, closing those over capacity; false if any were.
  bool take_fds(::msghdr& msg) noexcept;

  Message message_;
  alignas(Header) std::array<std::byte, kHeaderSize> header_bytes_{};
  size_t have_ = 0;  // bytes of the current message so far, header included
  bool complete_ = false;
  uint64_t completed_ = 0;
};

enum class WriteStatus {
  kDone,        // the whole message is on the socket
  kWouldBlock,  // part (maybe none) is still queued; flush() again on EPOLLOUT
};

/// Sends one message at a time; keeps the unsent rest when a non-blocking socket is full
/// (EAGAIN means keep the rest and wait for EPOLLOUT: never spin, never drop).
class MessageWriter {
 public:
  /// Queues a message. The fds are duplicated (close-on-exec): the caller keeps its own,
  /// and the writer's copies are closed once sent, on reset(), or on destruction. Fails
  /// with "bad-value" if a message is still pending or the payload/fds exceed
  /// kMaxPayloadSize/kMaxFds, or "system" if dup fails; nothing is queued then.
  Result<void> start(const Header& header, std::span<const std::byte> payload,
                     std::span<const int> fds = {});
  /// Queues the reply to `request`: same code, flags = version | REPLY, size of `payload`.
  Result<void> start_reply(const Header& request, std::span<const std::byte> payload,
                           std::span<const int> fds = {});

  /// Sends what is queued. The fds go with the first byte. Handles EINTR; never raises
  /// SIGPIPE. On error (code "system", e.g. EPIPE) the writer is reset and the connection
  /// must be closed.
  Result<WriteStatus> flush(int socket);

  bool pending() const noexcept { return sent_ < size_; }
  void reset() noexcept;

 private:
  std::array<std::byte, kHeaderSize + kMaxPayloadSize> buffer_{};
  size_t size_ = 0;
  size_t sent_ = 0;
  std::array<Fd, kMaxFds> fds_{};
  size_t fd_count_ = 0;
};

/// The header of the reply to `request` carrying `payload_size` bytes.
constexpr Header reply_header(const Header& request, uint32_t payload_size) noexcept {
  return Header{request.request, kVersion | kFlagReply, payload_size};
}

/// Writes a whole message on a blocking socket (tests, simple clients). On a non-blocking
/// socket that fills up it fails with kErrorFraming, since part may have been sent; use
/// MessageWriter there.
Result<void> write_message(int socket, const Header& header, std::span<const std::byte> payload,
                           std::span<const int> fds = {});
/// write_message() of the reply to `request`.
Result<void> write_reply(int socket, const Header& request, std::span<const std::byte> payload,
                         std::span<const int> fds = {});

}  // namespace vp::vhost
