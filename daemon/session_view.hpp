#pragma once

// What the data path shows the control thread of an endpoint's guest side.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "control/endpoint.hpp"
#include "dataplane/net_counters.hpp"
#include "sys/unix_socket.hpp"

namespace vp::daemon {

/// Where an endpoint's front-end session stands.
enum class SessionState : uint8_t {
  kStopped,    ///< neither bind= nor peer=: nothing to serve
  kListening,  ///< waiting on the bind= socket for a frontend
  kDialing,    ///< peer=: trying to reach the frontend (backing off while it is absent)
  kConnected,  ///< a frontend session runs
};

constexpr std::string_view session_state_name(SessionState s) noexcept {
  switch (s) {
    case SessionState::kStopped:
      return "stopped";
    case SessionState::kListening:
      return "listening";
    case SessionState::kDialing:
      return "dialing";
    case SessionState::kConnected:
      return "connected";
  }
  return "unknown";
}

/// What vpctl shows of an endpoint's guest side.
struct SessionView {
  SessionState state = SessionState::kStopped;
  std::string socket;
  uint64_t features = 0;  // acked virtio features (0 before SET_FEATURES)
  bool packed = false;
  uint32_t queues_running = 0;  // virtqueues started (both of a pair when it runs)
  uint32_t queues = 0;          // virtqueues served: 2 per queue pair
  uint32_t hdr_len = 0;
  unsigned tun_offloads = 0;
  uint64_t sessions = 0;       // frontends served since vpd started
  uint64_t refused_peers = 0;  // connections turned away by allow=
  uint64_t refused_messages = 0;
  bool dirty_logging = false;              // live migration: LOG_ALL acked and a log set
  bool carrier = false;                    // vpd gave the TAP carrier (the guest's queues run)
  std::vector<std::string> broken_queues;  // "rx0: avail-index-jump"
  /// vhost-user: the data-path worker serving each queue pair while both its rings run (-1:
  /// the pair does not run). Pair 0 is always the endpoint's own worker.
  std::vector<int> queue_workers;
  std::string tx_path;  // vhost-user: "io_uring" or "writev" (guest→host TAP writes)
  /// The process of the running session (kConnected only), as it was when it connected.
  std::optional<PeerProcess> frontend;
  dataplane::NetCounters counters;
  /// Each queue pair's share of `counters` (vhost-user; pairs the endpoint never had are 0).
  std::array<dataplane::QueueCounts, control::kMaxQueuePairs> queue_counts{};
};

}  // namespace vp::daemon
