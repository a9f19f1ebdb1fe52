#pragma once

// The end-to-end tier's guest: Debian's QEMU (TCG) booting Debian's kernel with the busybox
// initramfs from tests/e2e/make_initramfs.sh, whose /init pings vp.peer from vp.ip and
// prints "VP-E2E-RESULT: ok" or "... fail" on the serial console.

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace vp::test {

struct GuestOptions {
  std::string image_dir;  // holds vmlinuz and initramfs.cpio.gz
  std::string ip;         // e.g. 10.99.0.2/24
  std::string peer;       // address the guest pings
  int count = 3;
  int linger = 0;    // seconds the guest stays up after its result line
  int pingloop = 0;  // pings after the result line, one "VP-E2E-PING: ok|fail N" line each
  /// A TCP port the guest listens on (0: none) for a stream of numbered lines, which it
  /// checks once the stream ends: one "VP-E2E-STREAM: lines N bad B end E" line.
  int stream_port = 0;
  std::string mac = "52:54:00:00:00:02";
  /// QEMU options that give the guest its NIC, e.g. -chardev/-netdev/-device.
  std::vector<std::string> nic;
  /// vhost-user needs the guest memory shared with the backend.
  bool shared_memory = false;
};

/// The directory holding the guest image: $VPD_E2E_IMAGE_DIR.
std::string guest_image_dir();

class Guest {
 public:
  explicit Guest(std::string console_path) : console_path_(std::move(console_path)) {}
  ~Guest();
  Guest(const Guest&) = delete;
  Guest& operator=(const Guest&) = delete;

  /// Starts QEMU; returns "" or why not.
  std::string start(const GuestOptions& options);
  /// Waits until the serial console shows `needle` (or QEMU exits).
  bool wait_for(const std::string& needle, std::chrono::seconds timeout);
  /// The serial console and, after it, QEMU's own messages (for failure output).
  std::string console() const;
  /// The serial console alone: it only grows, so an offset into it marks a point in time.
  std::string serial() const;
  /// Waits for QEMU to exit (killing it after `timeout`); returns its status.
  int wait_exit(std::chrono::seconds timeout);
  pid_t pid() const { return pid_; }

 private:
  std::string console_path_;
  pid_t pid_ = -1;
};

}  // namespace vp::test
