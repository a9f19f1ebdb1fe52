// The vhost-user message stream through the real session state machine (lib/vhost: codec,
// request table, Backend). The fuzzer is the front-end: any request code, flags, header size
// (honest or not), payload and 0-15 fds of any kind (memfds of guest RAM, small memfds,
// eventfds, pipes, /dev/null, sockets) on a real socketpair, interleaved with guest writes to
// the memory it shares. A fake device plays the data plane on every ring the engine starts
// (pop, touch every byte, give back), so a ring configured from hostile addresses is walked.
// Checked: no crash or sanitizer report, started rings keep the engine's promises, and no fd
// is left open once the session is gone (DPDK CVE-2019-14818 leaked them).
//
// Input: u8 guest RAM pages, u16 image length + image, then steps until the input ends:
//   u8 kind; kind % 8 == 7: guest write (u16 offset, u8 length, bytes);
//            kind % 8 == 6: the data plane runs every started ring once;
//            otherwise a message: u32 request, u32 flags, u16 payload length, u8 fd count
//            (low 4 bits), one u8 kind per fd, payload bytes; kind bit 7 set: a u32 header
//            size follows the fd kinds and replaces the honest one.

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"
#include "sys/fd.hpp"
#include "sys/log.hpp"
#include "vhost/backend.hpp"

namespace {

using namespace vp;
using namespace vp::vhost;

constexpr uint64_t kNetCsum = 1ull << 0;
constexpr uint64_t kNetGuestCsum = 1ull << 1;
constexpr uint64_t kNetMtu = 1ull << 3;
constexpr uint64_t kNetMac = 1ull << 5;
constexpr uint64_t kNetMrgRxbuf = 1ull << 15;
constexpr uint64_t kNetStatus = 1ull << 16;
constexpr uint64_t kNetMq = 1ull << 22;
constexpr uint64_t kOffer = virtio::kFeatureVersion1 | virtio::kFeatureEventIdx |
                            virtio::kFeatureIndirectDesc | virtio::kFeatureRingPacked | kNetCsum |
                            kNetGuestCsum | kNetMtu | kNetMac | kNetMrgRxbuf | kNetStatus | kNetMq;

volatile uint8_t sink;

class FuzzDevice final : public Device {
 public:
  uint64_t features() const override { return kOffer; }
  uint64_t protocol_features() const override { return ~uint64_t{0}; }
  uint32_t num_queues() const override { return 4; }
  Result<void> on_features(uint64_t acked) override {
    if (acked & ~kOffer) return fail("bad-features", "not offered");
    return {};
  }
  std::span<const std::byte> config() const override { return std::as_bytes(std::span(config_)); }
  void on_queue_started(uint32_t index) override {
    FUZZ_CHECK(index < backend->num_queues());
    Vring& vring = backend->vring(index);
    // The engine's promise (backend.hpp): a started ring has a kick fd and a ready queue.
    FUZZ_CHECK(vring.started && vring.kick.valid());
    FUZZ_CHECK(std::visit([](const auto& q) { return q.ready(); }, vring.queue));
    FUZZ_CHECK(!running[index]);
    running[index] = true;
    run(index);
  }
  void on_queue_stopped(uint32_t index) override {
    FUZZ_CHECK(index < backend->num_queues() && running[index]);
    running[index] = false;
  }
  Result<void> on_mtu(uint32_t mtu) override {
    if (mtu < 68 || mtu > 65535) return fail("bad-value", "mtu");
    return {};
  }
  void on_rarp(const uint8_t (&mac)[6]) override { sink = mac[5]; }
  void on_status(uint8_t status) override { sink = status; }

  // The data plane's turn on ring `index`: pop what the guest offers, touch it, give it back.
  void run(uint32_t index) {
    Vring& vring = backend->vring(index);
    const auto& regions = backend->memory().regions();
    auto inside = [&](const iovec& v) {
      for (const auto& r : regions) {
        const auto* p = static_cast<const std::byte*>(v.iov_base);
        if (p >= r.host && p <= r.host + r.size && v.iov_len <= size_t(r.host + r.size - p)) {
          return true;
        }
      }
      return false;
    };
    std::visit(
        [&](auto& q) {
          std::array<iovec, 32> iov{};
          for (int i = 0; i < 8; ++i) {
            auto chain = q.pop(iov);
            if (!chain) break;
            for (const iovec& v : chain->readable) {
              FUZZ_CHECK(inside(v));
              const auto* p = static_cast<const uint8_t*>(v.iov_base);
              for (size_t k = 0; k < v.iov_len; ++k) sink = p[k];
            }
            for (const iovec& v : chain->writable) {
              FUZZ_CHECK(inside(v));
              std::memset(v.iov_base, 0x5a, v.iov_len);
            }
            FUZZ_CHECK(q.push_used(chain->head, chain->writable_bytes));
          }
          q.publish_used();
          (void)q.needs_notification();
          (void)q.enable_notifications();
        },
        vring.queue);
  }

  Backend* backend = nullptr;
  std::array<bool, 4> running{};
  std::array<uint8_t, 12> config_ = {0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 1, 0, 2, 0, 0xdc, 0x05};
};

// The lowest free fd number: the same before and after a session, or an fd leaked.
int lowest_free_fd() {
  const int fd = ::dup(2);
  ::close(fd);
  return fd;
}

Fd make_fd(uint8_t kind, const Fd& ram) {
  switch (kind % 8) {
    case 0:
    case 1:
      return Fd(::fcntl(ram.get(), F_DUPFD_CLOEXEC, 0));  // guest RAM
    case 2: {
      Fd small(::memfd_create("fuzz-small", MFD_CLOEXEC));
      (void)::ftruncate(small.get(), 4096);
      return small;
    }
    case 3:
    case 4:
      return Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    case 5: {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return Fd();
      ::close(p[1]);
      return Fd(p[0]);
    }
    case 6:
      return Fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
    default: {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return Fd();
      ::close(sv[1]);
      return Fd(sv[0]);
    }
  }
}

// Reads and discards every reply (closing any fds that come with them).
void drain(int fd) {
  for (;;) {
    std::array<std::byte, 8192> buf;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n <= 0) return;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int received;
          std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof received);
          ::close(received);
        }
      }
    }
  }
}

bool send_message(int fd, const Header& header, std::span<const uint8_t> payload,
                  const std::vector<Fd>& fds) {
  std::vector<uint8_t> bytes(sizeof header + payload.size());
  std::memcpy(bytes.data(), &header, sizeof header);
  if (!payload.empty()) std::memcpy(bytes.data() + sizeof header, payload.data(), payload.size());
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)] = {};
  iovec iov{bytes.data(), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    for (size_t i = 0; i < fds.size(); ++i) {
      const int raw = fds[i].get();
      std::memcpy(CMSG_DATA(c) + i * sizeof(int), &raw, sizeof raw);
    }
  }
  return ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) == static_cast<ssize_t>(bytes.size());
}

void run_session(fuzz::Input& in) {
  const size_t ram_size = (1 + in.u8() % 16) * size_t{4096};
  Fd ram(::memfd_create("fuzz-ram", MFD_CLOEXEC));
  FUZZ_CHECK(ram.valid() && ::ftruncate(ram.get(), static_cast<off_t>(ram_size)) == 0);
  const auto image = in.bytes(in.u16());
  if (!image.empty()) {
    (void)::pwrite(ram.get(), image.data(), std::min(image.size(), ram_size), 0);
  }

  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  Fd frontend(sv[1]);
  FuzzDevice device;
  auto backend = std::make_unique<Backend>(device, Fd(sv[0]), "fuzz");
  device.backend = backend.get();

  while (!in.empty() && !backend->closed()) {
    const uint8_t kind = in.u8();
    if (kind % 8 == 7) {
      const uint16_t offset = in.u16();
      const auto bytes = in.bytes(in.u8());
      (void)::pwrite(ram.get(), bytes.data(), bytes.size(), offset % ram_size);
      continue;
    }
    if (kind % 8 == 6) {
      for (uint32_t i = 0; i < backend->num_queues(); ++i) {
        if (backend->vring(i).started) device.run(i);
      }
      continue;
    }
    Header header;
    header.request = in.u32();
    header.flags = in.u32();
    const uint16_t payload_len = in.u16() % 4200;
    const uint8_t fd_count = in.u8() & 0x0f;
    std::vector<Fd> fds;
    for (uint8_t i = 0; i < fd_count; ++i) fds.push_back(make_fd(in.u8(), ram));
    const uint32_t forced_size = (kind & 0x80) ? in.u32() : 0;
    const auto payload = in.bytes(payload_len);
    header.size = (kind & 0x80) ? forced_size : static_cast<uint32_t>(payload.size());
    for (const Fd& f : fds) FUZZ_CHECK(f.valid());
    if (!send_message(frontend.get(), header, payload, fds)) break;
    fds.clear();  // the backend has its own copies now (or the socket does)

    auto status = backend->on_readable();
    while (status && *status == Backend::Status::kOpen && backend->wants_write()) {
      drain(frontend.get());
      status = backend->on_writable();
    }
    drain(frontend.get());
    if (!status || *status == Backend::Status::kClosed) break;
  }
  backend.reset();
  for (bool r : device.running) FUZZ_CHECK(!r);  // every started ring was stopped
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  vp::log::set_threshold(static_cast<vp::log::Level>(0));  // refusals are the point: no logs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Per input, not once: libFuzzer and the sanitizers open fds of their own between inputs
  // (the symbolizer's pipes), never during one.
  const int baseline = lowest_free_fd();
  vp::fuzz::Input in(data, size);
  run_session(in);
  if (lowest_free_fd() != baseline) {  // an fd outlived the session: say which
    for (int fd = baseline; fd < baseline + 32; ++fd) {
      char path[64];
      char target[256] = {};
      std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
      if (::readlink(path, target, sizeof target - 1) > 0) std::fprintf(stderr, "open fd %d: %s\n", fd, target);
    }
    FUZZ_CHECK(lowest_free_fd() == baseline);
  }
  return 0;
}
