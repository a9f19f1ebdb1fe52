#include "vhost/codec.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "unit_expect.hpp"
#include "vhost/request_table.hpp"

namespace vp::vhost {
namespace {

using unit::contains;
using unit::fails_with;
using unit::succeeded;

struct SocketPair {
  Fd a;  // the back-end's end (vpd reads here)
  Fd b;  // the front-end's end (the test writes here)
};

SocketPair socket_pair(int extra_flags = 0) {
  int fds[2] = {-1, -1};
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra_flags, 0, fds), 0)
      << std::strerror(errno);
  return {Fd(fds[0]), Fd(fds[1])};
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  ASSERT_EQ(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), 0);
}

size_t open_fd_count() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

Fd make_memfd(const char* name, std::string_view content = {}) {
  Fd fd(::memfd_create(name, MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid()) << std::strerror(errno);
  if (!content.empty()) {
    EXPECT_EQ(::write(fd.get(), content.data(), content.size()),
              static_cast<ssize_t>(content.size()));
  }
  return fd;
}

std::vector<Fd> make_eventfds(size_t n) {
  std::vector<Fd> fds;
  for (size_t i = 0; i < n; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  return fds;
}

std::vector<int> raw(const std::vector<Fd>& fds) {
  std::vector<int> out;
  for (const Fd& fd : fds) out.push_back(fd.get());
  return out;
}

std::vector<std::byte> bytes_of(const Header& header, std::span<const std::byte> payload = {}) {
  std::vector<std::byte> out(kHeaderSize + payload.size());
  std::memcpy(out.data(), &header, kHeaderSize);
  if (!payload.empty()) std::memcpy(out.data() + kHeaderSize, payload.data(), payload.size());
  return out;
}

// Sends bytes with any number of fds in one SCM_RIGHTS cmsg, bypassing the writer's limits
// (a hostile front-end).
void raw_send(int socket, std::span<const std::byte> bytes, std::span<const int> fds = {}) {
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<unsigned char> control(CMSG_SPACE(fds.size() * sizeof(int)) + sizeof(cmsghdr));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), fds.data(), fds.size() * sizeof(int));
  }
  ASSERT_EQ(::sendmsg(socket, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()))
      << std::strerror(errno);
}

Header request_header(Request request, size_t size, uint32_t extra_flags = 0) {
  return Header{code(request), kVersion | extra_flags, static_cast<uint32_t>(size)};
}

template <WireType T>
Result<void> send(int socket, Request request, const T& payload, std::span<const int> fds = {}) {
  return write_message(socket, request_header(request, sizeof(T)), wire_bytes(payload), fds);
}

Result<void> send_empty(int socket, Request request, std::span<const int> fds = {}) {
  return write_message(socket, request_header(request, 0), {}, fds);
}

// A SET_MEM_TABLE payload of `n` valid regions (8 + n * 32 bytes).
std::vector<std::byte> mem_table_payload(uint32_t n) {
  MemoryTable table;
  table.nregions = n;
  for (uint32_t i = 0; i < n; ++i) {
    table.regions[i] =
        MemoryRegion{uint64_t{i} << 32, 0x100000, 0x7f0000000000 + (uint64_t{i} << 32), 0};
  }
  const auto all = wire_bytes(table);
  return {all.begin(),
          all.begin() + static_cast<ptrdiff_t>(kMemoryTableHeaderSize + n * sizeof(MemoryRegion))};
}

std::string read_all(int fd) {
  char buffer[64] = {};
  const ssize_t n = ::pread(fd, buffer, sizeof buffer, 0);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
}

TEST(VhostCodec, round_trip_of_three_requests_without_fds_keeps_them_apart) {
  SocketPair s = socket_pair();
  ASSERT_TRUE(succeeded(send_empty(s.b.get(), Request::kGetFeatures)));
  ASSERT_TRUE(succeeded(send(s.b.get(), Request::kSetFeatures, uint64_t{0x140000000})));
  ASSERT_TRUE(succeeded(send(s.b.get(), Request::kSetVringNum, VringState{1, 256})));

  MessageReader reader;
  auto status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().request(), code(Request::kGetFeatures));
  EXPECT_EQ(reader.message().header().flags, kVersion);
  EXPECT_TRUE(reader.message().payload().empty());
  EXPECT_EQ(reader.message().fd_count(), 0u);

  status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().request(), code(Request::kSetFeatures));
  EXPECT_EQ(reader.message().payload().size(), 8u);
  EXPECT_EQ(reader.message().payload_as<uint64_t>(), uint64_t{0x140000000});

  status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().request(), code(Request::kSetVringNum));
  const auto state = reader.message().payload_as<VringState>();
  EXPECT_EQ(state.index, 1u);
  EXPECT_EQ(state.num, 256u);
}

TEST(VhostCodec, memfds_arrive_as_distinct_open_close_on_exec_fds_of_the_same_files) {
  SocketPair s = socket_pair();
  Fd first = make_memfd("region0", "first region");
  Fd second = make_memfd("region1", "second region");
  const std::vector<int> sent = {first.get(), second.get()};
  const auto payload = mem_table_payload(2);
  ASSERT_TRUE(succeeded(write_message(
      s.b.get(), request_header(Request::kSetMemTable, payload.size()), payload, sent)));

  MessageReader reader;
  auto status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  Message& message = reader.message();
  ASSERT_EQ(message.fd_count(), 2u);
  const int got0 = message.fds()[0].get();
  const int got1 = message.fds()[1].get();
  EXPECT_GE(got0, 0);
  EXPECT_GE(got1, 0);
  EXPECT_NE(got0, got1);
  EXPECT_NE(got0, first.get());
  EXPECT_NE(got1, second.get());
  EXPECT_NE(::fcntl(got0, F_GETFD) & FD_CLOEXEC, 0);
  struct stat sent_stat {
  }, got_stat{};
  ASSERT_EQ(::fstat(first.get(), &sent_stat), 0);
  ASSERT_EQ(::fstat(got0, &got_stat), 0);
  EXPECT_EQ(sent_stat.st_ino, got_stat.st_ino);
  EXPECT_EQ(read_all(got0), "first region");
  EXPECT_EQ(read_all(got1), "second region");

  const auto table = message.payload_as<MemoryTable>();
  EXPECT_EQ(table.nregions, 2u);
  EXPECT_EQ(table.regions[1].guest_phys_addr, uint64_t{1} << 32);
  EXPECT_EQ(table.regions[2].memory_size, 0u) << "bytes that were not sent read as zero";

  EXPECT_TRUE(succeeded(validate(message.header(), message.payload(), message.fds(), 2)));

  // Taking an fd hands over ownership; the message no longer closes it.
  Fd taken = message.take_fd(1);
  EXPECT_EQ(taken.get(), got1);
  EXPECT_FALSE(message.fds()[1].valid());
  message.clear();
  EXPECT_EQ(::fcntl(got0, F_GETFD), -1) << "clear() closes fds not taken";
  EXPECT_NE(::fcntl(taken.get(), F_GETFD), -1);
}

TEST(VhostCodec, message_split_across_several_writes_is_assembled_without_blocking) {
  SocketPair s = socket_pair();
  set_nonblocking(s.a.get());
  Fd kick(::eventfd(0, EFD_CLOEXEC));
  const uint64_t value = 1;
  const auto bytes = bytes_of(request_header(Request::kSetVringKick, 8), wire_bytes(value));
  const std::span<const std::byte> all(bytes);
  const int kick_fd = kick.get();

  MessageReader reader;
  auto status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, ReadStatus::kWouldBlock);
  EXPECT_FALSE(reader.mid_message());

  raw_send(s.b.get(), all.subspan(0, 5), std::span(&kick_fd, 1));
  status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, ReadStatus::kWouldBlock);
  EXPECT_TRUE(reader.mid_message());
  EXPECT_EQ(reader.describe_partial(), "5 of the 12 header bytes of a message (with 1 fd)");
  EXPECT_EQ(reader.completed(), 0u);

  raw_send(s.b.get(), all.subspan(5, 7));  // rest of the header
  status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, ReadStatus::kWouldBlock);

  raw_send(s.b.get(), all.subspan(12, 3));
  status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, ReadStatus::kWouldBlock);
  EXPECT_EQ(reader.describe_partial(),
            "the 12-byte header of SET_VRING_KICK and 3 of the 8 payload bytes it announces "
            "(with 1 fd)");

  raw_send(s.b.get(), all.subspan(15));
  status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_FALSE(reader.mid_message());
  EXPECT_EQ(reader.completed(), 1u);
  EXPECT_EQ(reader.message().request(), code(Request::kSetVringKick));
  EXPECT_EQ(reader.message().payload_as<uint64_t>(), 1u);
  EXPECT_EQ(reader.message().fd_count(), 1u);
  EXPECT_TRUE(succeeded(
      validate(reader.message().header(), reader.message().payload(), reader.message().fds(), 2)));
}

TEST(VhostCodec, fd_sent_with_the_payload_part_belongs_to_the_message) {
  SocketPair s = socket_pair();
  Fd call(::eventfd(0, EFD_CLOEXEC));
  const int call_fd = call.get();
  const uint64_t value = 0;
  raw_send(s.b.get(), wire_bytes(request_header(Request::kSetVringCall, 8)));
  raw_send(s.b.get(), wire_bytes(value), std::span(&call_fd, 1));

  MessageReader reader;
  auto status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().fd_count(), 1u);
}

TEST(VhostCodec, blocking_socket_read_waits_for_the_rest_of_a_message) {
  SocketPair s = socket_pair();
  const auto bytes =
      bytes_of(request_header(Request::kSetVringNum, 8), wire_bytes(VringState{0, 64}));
  const std::span<const std::byte> all(bytes);
  raw_send(s.b.get(), all.subspan(0, 10));
  std::thread late_writer([&] { raw_send(s.b.get(), all.subspan(10)); });

  MessageReader reader;
  auto status = reader.read(s.a.get());  // blocks until the thread's bytes arrive
  late_writer.join();
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().payload_as<VringState>().num, 64u);
}

TEST(VhostCodec, eof_between_messages_is_a_clean_close) {
  SocketPair s = socket_pair();
  ASSERT_TRUE(succeeded(send_empty(s.b.get(), Request::kSetOwner)));
  s.b.reset();

  MessageReader reader;
  auto status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, ReadStatus::kMessage);
  status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(*status, ReadStatus::kClosed);
}

TEST(VhostCodec, truncated_message_then_eof_ends_the_connection_and_closes_its_fd) {
  const size_t baseline = open_fd_count();
  {
    SocketPair s = socket_pair();
    const size_t with_sockets = open_fd_count();
    {
      Fd kick(::eventfd(0, EFD_CLOEXEC));
      const int kick_fd = kick.get();
      const auto bytes = bytes_of(request_header(Request::kSetVringKick, 8));
      const std::byte partial[3] = {};
      raw_send(s.b.get(), bytes, std::span(&kick_fd, 1));
      raw_send(s.b.get(), partial);
    }
    s.b.reset();

    MessageReader reader;
    auto status = reader.read(s.a.get());
    EXPECT_TRUE(
        fails_with(status, kErrorFraming, {"closed the connection inside a message", "15 bytes"}));
    EXPECT_FALSE(reader.mid_message());
    EXPECT_EQ(open_fd_count(), with_sockets - 1) << "the kick fd that arrived was closed";
  }
  EXPECT_EQ(open_fd_count(), baseline);
}

TEST(VhostCodec, eof_inside_the_header_ends_the_connection) {
  SocketPair s = socket_pair();
  const auto bytes = bytes_of(request_header(Request::kGetFeatures, 0));
  raw_send(s.b.get(), std::span<const std::byte>(bytes).subspan(0, 7));
  s.b.reset();
  MessageReader reader;
  EXPECT_TRUE(fails_with(reader.read(s.a.get()), kErrorFraming, {"inside a message", "7 bytes"}));
}

TEST(VhostCodec, payload_over_the_bound_is_refused_before_it_is_read) {
  SocketPair s = socket_pair();
  set_nonblocking(s.a.get());  // a regression reads and waits instead of hanging the test
  const std::vector<std::byte> tail(100);
  raw_send(s.b.get(), wire_bytes(Header{code(Request::kSetConfig), kVersion, kMaxPayloadSize + 1}));
  raw_send(s.b.get(), tail);

  MessageReader reader;
  EXPECT_TRUE(fails_with(reader.read(s.a.get()), kErrorFraming,
                         {"request 25", "4097-byte payload", "4096"}));
  int unread = 0;
  ASSERT_EQ(::ioctl(s.a.get(), FIONREAD, &unread), 0);
  EXPECT_EQ(unread, 100) << "not one payload byte was consumed";
}

TEST(VhostCodec, unknown_request_at_the_payload_bound_is_drained_and_refused_per_message) {
  SocketPair s = socket_pair();
  const std::vector<std::byte> payload(kMaxPayloadSize, std::byte{0x5a});
  ASSERT_TRUE(succeeded(write_message(s.b.get(), Header{99, kVersion, kMaxPayloadSize}, payload)));
  ASSERT_TRUE(succeeded(send_empty(s.b.get(), Request::kGetFeatures)));

  MessageReader reader;
  auto status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().payload().size(), kMaxPayloadSize);
  EXPECT_TRUE(fails_with(
      validate(reader.message().header(), reader.message().payload(), reader.message().fds(), 2),
      error::kUnknownRequest, {"unknown request 99"}));
  status = reader.read(s.a.get());  // the stream is still in step
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().request(), code(Request::kGetFeatures));
}

TEST(VhostCodec, forty_fds_in_one_cmsg_end_the_connection_without_leaking) {
  const size_t baseline = open_fd_count();
  SocketPair s = socket_pair();
  const size_t with_sockets = open_fd_count();
  {
    std::vector<Fd> fds = make_eventfds(40);
    const auto payload = mem_table_payload(8);
    raw_send(s.b.get(), bytes_of(request_header(Request::kSetMemTable, payload.size()), payload),
             raw(fds));
  }  // our copies closed; only the ones in flight remain
  EXPECT_EQ(open_fd_count(), with_sockets);

  MessageReader reader;
  EXPECT_TRUE(fails_with(reader.read(s.a.get()), kErrorFraming, {"more than 8 fds", "truncated"}));
  EXPECT_EQ(open_fd_count(), with_sockets)
      << "the 8 installed were closed, the kernel dropped the rest";
  s = SocketPair{};
  EXPECT_EQ(open_fd_count(), baseline);
}

TEST(VhostCodec, fds_spread_over_the_parts_of_one_message_beyond_the_limit_end_the_connection) {
  SocketPair s = socket_pair();
  const size_t with_sockets = open_fd_count();
  {
    std::vector<Fd> header_fds = make_eventfds(8);
    std::vector<Fd> payload_fds = make_eventfds(8);
    const auto payload = mem_table_payload(8);
    raw_send(s.b.get(), wire_bytes(request_header(Request::kSetMemTable, payload.size())),
             raw(header_fds));
    raw_send(s.b.get(), payload, raw(payload_fds));
  }
  MessageReader reader;
  EXPECT_TRUE(
      fails_with(reader.read(s.a.get()), kErrorFraming, {"more than 8 fds across its parts"}));
  EXPECT_EQ(open_fd_count(), with_sockets);
}

TEST(VhostCodec, forty_fds_over_five_messages_arrive_and_are_all_closed_afterwards) {
  SocketPair s = socket_pair();
  const size_t with_sockets = open_fd_count();
  const auto payload = mem_table_payload(8);
  for (int m = 0; m < 5; ++m) {
    std::vector<Fd> fds;
    for (int i = 0; i < 8; ++i) fds.push_back(make_memfd("slot"));
    ASSERT_TRUE(succeeded(write_message(
        s.b.get(), request_header(Request::kSetMemTable, payload.size()), payload, raw(fds))));
  }
  EXPECT_EQ(open_fd_count(), with_sockets);

  MessageReader reader;
  for (int m = 0; m < 5; ++m) {
    auto status = reader.read(s.a.get());
    ASSERT_TRUE(succeeded(status));
    ASSERT_EQ(*status, ReadStatus::kMessage);
    EXPECT_EQ(reader.message().fd_count(), 8u);
    EXPECT_TRUE(succeeded(validate(reader.message().header(), reader.message().payload(),
                                   reader.message().fds(), 2)));
    EXPECT_EQ(open_fd_count(), with_sockets + 8) << "one message's fds at a time";
  }
  reader.reset();
  EXPECT_EQ(open_fd_count(), with_sockets);
}

TEST(VhostCodec, fds_on_a_request_that_takes_none_are_refused_and_closed) {
  SocketPair s = socket_pair();
  const size_t with_sockets = open_fd_count();
  {
    std::vector<Fd> fds = make_eventfds(2);
    ASSERT_TRUE(succeeded(send_empty(s.b.get(), Request::kSetOwner, raw(fds))));
  }
  ASSERT_TRUE(succeeded(send_empty(s.b.get(), Request::kGetFeatures)));

  MessageReader reader;
  auto status = reader.read(s.a.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(open_fd_count(), with_sockets + 2);
  const Message& message = reader.message();
  EXPECT_TRUE(fails_with(validate(message.header(), message.payload(), message.fds(), 2),
                         error::kBadFds, {"SET_OWNER: carries 2 fds, takes none"}));

  status = reader.read(s.a.get());  // the next message replaces the refused one
  ASSERT_TRUE(succeeded(status));
  EXPECT_EQ(reader.message().request(), code(Request::kGetFeatures));
  EXPECT_EQ(open_fd_count(), with_sockets);
}

TEST(VhostCodec, reply_has_the_reply_flag_the_request_code_its_payload_and_fd) {
  SocketPair s = socket_pair();
  const Header request =
      request_header(Request::kGetInflightFd, sizeof(InflightDescription), kFlagNeedReply);
  Fd shared = make_memfd("inflight", "inflight area");
  const int shared_fd = shared.get();
  const InflightDescription answer{4096, 0, 2, 256, 0};
  ASSERT_TRUE(
      succeeded(write_reply(s.a.get(), request, wire_bytes(answer), std::span(&shared_fd, 1))));

  MessageReader reader;  // reading the reply as a front-end would
  auto status = reader.read(s.b.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().request(), code(Request::kGetInflightFd));
  EXPECT_EQ(reader.message().header().flags, kVersion | kFlagReply);
  EXPECT_EQ(reader.message().header().size, sizeof(InflightDescription));
  EXPECT_EQ(reader.message().payload_as<InflightDescription>().queue_size, 256u);
  ASSERT_EQ(reader.message().fd_count(), 1u);
  EXPECT_EQ(read_all(reader.message().fds()[0].get()), "inflight area");
  EXPECT_NE(::fcntl(shared_fd, F_GETFD), -1) << "the caller keeps its own fd";
}

TEST(VhostCodec, writer_waits_for_room_on_a_full_nonblocking_socket_and_loses_nothing) {
  SocketPair s = socket_pair();
  set_nonblocking(s.a.get());
  set_nonblocking(s.b.get());
  const size_t with_sockets = open_fd_count();

  // Fill the socket until the kernel refuses more.
  const std::vector<std::byte> junk(1024, std::byte{0xee});
  size_t junk_bytes = 0;
  for (;;) {
    const ssize_t n = ::send(s.a.get(), junk.data(), junk.size(), MSG_NOSIGNAL);
    if (n < 0) {
      ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << std::strerror(errno);
      break;
    }
    junk_bytes += static_cast<size_t>(n);
  }

  std::vector<std::byte> config(kConfigHeadSize + 200, std::byte{0x11});
  const ConfigHead head{0, 200, 0};
  std::memcpy(config.data(), &head, sizeof head);
  MessageWriter writer;
  {
    Fd extra(::eventfd(0, EFD_CLOEXEC));
    const int extra_fd = extra.get();
    ASSERT_TRUE(succeeded(writer.start_reply(request_header(Request::kGetConfig, config.size()),
                                             config, std::span(&extra_fd, 1))));
  }
  EXPECT_TRUE(writer.pending());
  auto flushed = writer.flush(s.a.get());
  ASSERT_TRUE(succeeded(flushed));
  EXPECT_EQ(*flushed, WriteStatus::kWouldBlock);
  EXPECT_TRUE(writer.pending());
  EXPECT_TRUE(fails_with(writer.start(request_header(Request::kGetFeatures, 0), {}), "bad-value",
                         {"still being sent"}));

  // The front-end drains the junk; the rest of the reply then goes out.
  std::vector<std::byte> sink(junk_bytes);
  size_t drained = 0;
  while (drained < junk_bytes) {
    const ssize_t n = ::recv(s.b.get(), sink.data() + drained, junk_bytes - drained, 0);
    ASSERT_GT(n, 0) << std::strerror(errno);
    drained += static_cast<size_t>(n);
  }
  flushed = writer.flush(s.a.get());
  ASSERT_TRUE(succeeded(flushed));
  EXPECT_EQ(*flushed, WriteStatus::kDone);
  EXPECT_FALSE(writer.pending());

  MessageReader reader;
  auto status = reader.read(s.b.get());
  ASSERT_TRUE(succeeded(status));
  ASSERT_EQ(*status, ReadStatus::kMessage);
  EXPECT_EQ(reader.message().header().flags, kVersion | kFlagReply);
  EXPECT_EQ(reader.message().payload().size(), config.size());
  EXPECT_EQ(reader.message().payload_as<ConfigHead>().size, 200u);
  EXPECT_EQ(std::to_integer<int>(reader.message().payload().back()), 0x11);
  EXPECT_EQ(reader.message().fd_count(), 1u);
  reader.reset();
  EXPECT_EQ(open_fd_count(), with_sockets) << "the writer's duplicate was closed once sent";
}

TEST(VhostCodec, large_message_sent_in_pieces_through_a_full_socket_keeps_its_one_fd) {
  SocketPair s = socket_pair(SOCK_NONBLOCK);
  const int small = 4096;  // the kernel doubles it; one skb then holds less than a message
  ASSERT_EQ(::setsockopt(s.a.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  const size_t with_sockets = open_fd_count();

  // Fill the socket with whole GET_FEATURES requests until the kernel refuses more.
  const auto filler = bytes_of(request_header(Request::kGetFeatures, 0));
  int fillers = 0;
  while (::send(s.a.get(), filler.data(), filler.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(filler.size())) {
    ++fillers;
  }
  ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << std::strerror(errno);

  std::vector<std::byte> payload(kMaxPayloadSize);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>(i * 7);
  MessageWriter writer;
  {
    Fd shared = make_memfd("shared", "one fd only");
    const int shared_fd = shared.get();
    ASSERT_TRUE(succeeded(
        writer.start(Header{99, kVersion, kMaxPayloadSize}, payload, std::span(&shared_fd, 1))));
  }

  // Both state machines make progress in turns, as two epoll loops would.
  MessageReader reader;
  int write_waits = 0;
  int fillers_read = 0;
  bool received = false;
  for (int turn = 0; turn < 100000 && !received; ++turn) {
    if (writer.pending()) {
      auto flushed = writer.flush(s.a.get());
      ASSERT_TRUE(succeeded(flushed));
      if (*flushed == WriteStatus::kWouldBlock) ++write_waits;
    }
    auto status = reader.read(s.b.get());
    ASSERT_TRUE(succeeded(status));
    if (*status != ReadStatus::kMessage) continue;
    if (reader.message().request() == code(Request::kGetFeatures)) {
      EXPECT_EQ(reader.message().fd_count(), 0u);
      ++fillers_read;
    } else {
      received = true;
    }
  }
  ASSERT_TRUE(received);
  EXPECT_EQ(fillers_read, fillers);
  EXPECT_GT(write_waits, 0) << "the socket was full when the writer started";
  EXPECT_FALSE(writer.pending());
  const Message& message = reader.message();
  EXPECT_EQ(message.request(), 99u);
  ASSERT_EQ(message.payload().size(), payload.size());
  EXPECT_EQ(std::memcmp(message.payload().data(), payload.data(), payload.size()), 0);
  ASSERT_EQ(message.fd_count(), 1u) << "the fd travels once, with the first byte";
  EXPECT_EQ(read_all(message.fds()[0].get()), "one fd only");
  reader.reset();
  EXPECT_EQ(open_fd_count(), with_sockets);
}

TEST(VhostCodec, writer_refuses_oversized_payloads_and_too_many_fds) {
  MessageWriter writer;
  const std::vector<std::byte> big(kMaxPayloadSize + 1);
  EXPECT_TRUE(fails_with(writer.start(Header{99, kVersion, kMaxPayloadSize + 1}, big), "bad-value",
                         {"4097"}));
  const std::vector<Fd> fds = make_eventfds(9);
  EXPECT_TRUE(fails_with(writer.start(request_header(Request::kGetFeatures, 0), {}, raw(fds)),
                         "bad-value", {"at most 8 fds"}));
  EXPECT_TRUE(fails_with(writer.start(Header{1, kVersion, 8}, {}), "bad-value", {"header says 8"}));
  EXPECT_FALSE(writer.pending());
}

TEST(VhostCodec, writing_to_a_closed_peer_fails_without_sigpipe) {
  SocketPair s = socket_pair();
  s.b.reset();
  EXPECT_TRUE(fails_with(send_empty(s.a.get(), Request::kGetFeatures), "system", {"sendmsg"}));
}

}  // namespace
}  // namespace vp::vhost
