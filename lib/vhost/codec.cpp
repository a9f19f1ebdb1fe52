#include "vhost/codec.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <string>

#include "sys/str.hpp"
#include "vhost/request_table.hpp"

namespace vp::vhost {
namespace {

// Room for kMaxFds fds: the kernel installs at most this many per recvmsg and flags
// MSG_CTRUNC (closing the rest itself) if the sender attached more.
constexpr size_t kControlSize = CMSG_SPACE(kMaxFds * sizeof(int));

std::unexpected<Error> framing(std::string message) {
  return fail(std::string(kErrorFraming), std::move(message));
}

}  // namespace

void Message::clear() noexcept {
  for (size_t i = 0; i < fd_count_; ++i) fds_[i].reset();
  fd_count_ = 0;
  header_ = Header{};
}

void MessageReader::reset() noexcept {
  message_.clear();
  have_ = 0;
  complete_ = false;
}

bool MessageReader::take_fds(msghdr& msg) noexcept {
  bool fit = true;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(cmsg);
    for (size_t i = 0; i < count; ++i) {
      int raw = -1;
      std::memcpy(&raw, data + i * sizeof(int), sizeof raw);
      Fd fd(raw);  // owned from here on, whatever happens next
      if (message_.fd_count_ < kMaxFds) {
        message_.fds_[message_.fd_count_++] = std::move(fd);
      } else {
        fit = false;  // `fd` closes at the end of this iteration
      }
    }
  }
  return fit;
}

Result<ReadStatus> MessageReader::read(int socket) {
  if (complete_) reset();
  for (;;) {
    // Never ask for more than the current message still needs: the next message's bytes
    // (and the fds that travel with its first byte) stay in the socket.
    std::byte* target = nullptr;
    size_t want = 0;
    if (have_ < kHeaderSize) {
      target = header_bytes_.data() + have_;
      want = kHeaderSize - have_;
    } else {
      const size_t payload_have = have_ - kHeaderSize;
      target = message_.payload_.data() + payload_have;
      want = message_.header_.size - payload_have;
    }

    iovec iov{target, want};
    alignas(cmsghdr) unsigned char control[kControlSize];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return ReadStatus::kWouldBlock;
      const int err = errno;
      reset();
      return sys_fail("recvmsg on vhost-user socket", err);
    }

    // Wrap before judging anything, so every path below closes them.
    const bool fds_fit = take_fds(msg);
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      reset();
      return framing(str("a message carried more than ", kMaxFds,
                         " fds (ancillary data truncated); the ones received were closed"));
    }
    if (!fds_fit) {
      reset();
      return framing(
          str("a message carried more than ", kMaxFds, " fds across its parts; all were closed"));
    }
    if (n == 0) {
      if (have_ == 0 && message_.fd_count_ == 0) return ReadStatus::kClosed;
      const size_t had = have_;
      reset();
      return framing(str("the front-end closed the connection inside a message (", had,
                         " bytes of it received)"));
    }

    const bool in_header = have_ < kHeaderSize;
    have_ += static_cast<size_t>(n);
    if (in_header && have_ == kHeaderSize) {
      std::memcpy(&message_.header_, header_bytes_.data(), kHeaderSize);
      // GUEST: size comes from the front-end; bounded before a single payload byte is read.
      if (message_.header_.size > kMaxPayloadSize) {
        const uint32_t size = message_.header_.size;
        const uint32_t request = message_.header_.request;
        reset();
        return framing(str("request ", request, " announces a ", size,
                           "-byte payload, more than the ", kMaxPayloadSize,
                           " bytes any request may carry"));
      }
    }
    if (have_ >= kHeaderSize && have_ == kHeaderSize + message_.header_.size) {
      complete_ = true;
      ++completed_;
      return ReadStatus::kMessage;
    }
  }
}

std::string MessageReader::describe_partial() const {
  const size_t n = message_.fd_count_;
  const std::string fds = n == 0 ? std::string() : str(" (with ", n, n == 1 ? " fd)" : " fds)");
  if (have_ == 0) return str(n, n == 1 ? " fd" : " fds", " but no byte of a message");
  if (have_ < kHeaderSize) {
    return str(have_, " of the ", kHeaderSize, " header bytes of a message", fds);
  }
  const uint32_t request = message_.header_.request;
  const std::string_view name = request_name(request);
  return str("the ", kHeaderSize, "-byte header of ",
             name == "UNKNOWN" ? str("request ", request) : std::string(name), " and ",
             have_ - kHeaderSize, " of the ", message_.header_.size, " payload bytes it announces",
             fds);
}

void MessageWriter::reset() noexcept {
  for (size_t i = 0; i < fd_count_; ++i) fds_[i].reset();
  fd_count_ = 0;
  size_ = 0;
  sent_ = 0;
}

Result<void> MessageWriter::start(const Header& header, std::span<const std::byte> payload,
                                  std::span<const int> fds) {
  if (pending()) return fail("bad-value", "a vhost-user message is still being sent");
  if (payload.size() > kMaxPayloadSize || header.size != payload.size()) {
    return fail("bad-value",
                str("vhost-user message payload of ", payload.size(), " bytes (header says ",
                    header.size, ", limit ", kMaxPayloadSize, ")"));
  }
  if (fds.size() > kMaxFds) {
    return fail("bad-value",
                str("a vhost-user message carries at most ", kMaxFds, " fds, not ", fds.size()));
  }
  reset();
  for (int fd : fds) {
    Fd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!copy) {
      const int err = errno;
      reset();
      return sys_fail("dup fd for vhost-user message", err);
    }
    fds_[fd_count_++] = std::move(copy);
  }
  std::memcpy(buffer_.data(), &header, kHeaderSize);
  if (!payload.empty()) std::memcpy(buffer_.data() + kHeaderSize, payload.data(), payload.size());
  size_ = kHeaderSize + payload.size();
  sent_ = 0;
  return {};
}

Result<void> MessageWriter::start_reply(const Header& request, std::span<const std::byte> payload,
                                        std::span<const int> fds) {
  return start(reply_header(request, static_cast<uint32_t>(payload.size())), payload, fds);
}

Result<WriteStatus> MessageWriter::flush(int socket) {
  while (pending()) {
    iovec iov{buffer_.data() + sent_, size_ - sent_};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) unsigned char control[kControlSize] = {};
    if (sent_ == 0 && fd_count_ > 0) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(fd_count_ * sizeof(int));
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(fd_count_ * sizeof(int));
      for (size_t i = 0; i < fd_count_; ++i) {
        const int raw = fds_[i].get();
        std::memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &raw, sizeof raw);
      }
    }
    const ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return WriteStatus::kWouldBlock;
      const int err = errno;
      reset();
      return sys_fail("sendmsg on vhost-user socket", err);
    }
    if (n == 0) {
      reset();
      return framing("sendmsg on vhost-user socket wrote nothing");
    }
    if (sent_ == 0) {
      // The fds went with the first byte; the peer has its own copies now.
      for (size_t i = 0; i < fd_count_; ++i) fds_[i].reset();
      fd_count_ = 0;
    }
    sent_ += static_cast<size_t>(n);
  }
  reset();
  return WriteStatus::kDone;
}

Result<void> write_message(int socket, const Header& header, std::span<const std::byte> payload,
                           std::span<const int> fds) {
  MessageWriter writer;
  if (auto started = writer.start(header, payload, fds); !started) return started;
  auto status = writer.flush(socket);
  if (!status) return std::unexpected(std::move(status.error()));
  if (*status == WriteStatus::kWouldBlock) {
    return framing("the vhost-user socket is full; write_message() is for blocking sockets");
  }
  return {};
}

Result<void> write_reply(int socket, const Header& request, std::span<const std::byte> payload,
                         std::span<const int> fds) {
  return write_message(socket, reply_header(request, static_cast<uint32_t>(payload.size())),
                       payload, fds);
}

}  // namespace vp::vhost
