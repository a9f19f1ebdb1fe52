#include "daemon/queue_runner.hpp"

#include <sys/epoll.h>

#include "daemon/port.hpp"
#include "daemon/ring_pass.hpp"

namespace vp::daemon {

QueueRunner::QueueRunner(Worker& owner, uint32_t owner_port, std::shared_ptr<PortStatus> status)
    : owner_(owner), owner_port_(owner_port), status_(std::move(status)) {}

QueueRunner::~QueueRunner() {
  if (lent()) (void)take_back();
}

void QueueRunner::lend(Worker& remote, const LentPair& pair) {
  remote_ = &remote;
  // The peer queue's lock orders the owner's last writes to the pair before the remote's
  // first reads.
  remote.peer_post([this, pair, w = &remote] {
    here_ = w;
    p_ = pair;
    start();
  });
}

LentPair QueueRunner::take_back() {
  Worker* remote = std::exchange(remote_, nullptr);
  LentPair back;
  remote->peer_call(owner_, [this, &back] {
    stop();
    back = p_;
  });
  return back;
}

void QueueRunner::start() {
  Worker& w = *here_;
  id_ = w.add_runner(this);
  const int epoll = w.epoll();
  stop_reported_ = false;
  tap_ = Interest(epoll, p_.tap_fd, EventTag::encode(id_, EventKind::kTap));
  rx_kick_ = Interest(epoll, p_.rx->kick.get(), EventTag::encode(id_, EventKind::kKick, 0));
  tx_kick_ = Interest(epoll, p_.tx->kick.get(), EventTag::encode(id_, EventKind::kKick, 1));
  rx_kick_.set(EPOLLIN);
  tx_kick_.set(EPOLLIN);
  if (p_.uring) {
    uring_ = Interest(epoll, p_.uring->fd(), EventTag::encode(id_, EventKind::kUring));
    uring_.set(p_.uring->in_flight() > 0 ? uint32_t{EPOLLIN} : 0u);
  }
  update_tap();
  // Whatever arrived while the pair moved: both rings once (nothing there costs one look).
  run_tx();
  run_rx();
  publish();
}

void QueueRunner::stop() {
  tap_.clear();
  rx_kick_.clear();
  tx_kick_.clear();
  uring_.clear();
  // The tx io_uring goes home with its writes in flight, as it is on a pair that never left:
  // the owner watches its completions from now on, and drains it only where a ring really
  // stops (on_queue_stopped) or the memory changes. Draining here would cancel writes parked
  // on a full TAP, and drop their frames, on every message of the session.
  // The pair's own flags say what was left for later; the owner carries on with them.
  here_->forget_pending(this);
  pending_marked_ = false;
  here_->remove_runner(id_, this);
  publish();
}

void QueueRunner::on_event(EventKind kind, uint16_t queue, uint32_t events) {
  switch (kind) {
    case EventKind::kKick:
      // The tag's queue: 0 receiveq, 1 transmitq of the pair.
      if (queue == 1) {
        dataplane::consume_kick(p_.tx->kick.get(), local_);
        run_tx();
        break;
      }
      dataplane::consume_kick(p_.rx->kick.get(), local_);
      if (p_.rx_paused) {
        p_.rx_paused = false;
        update_tap();
      }
      run_rx();
      break;
    case EventKind::kTap:
      if ((events & EPOLLOUT) && p_.tx_blocked) {
        p_.tx_blocked = false;
        update_tap();
        run_tx();
      }
      if (events & EPOLLIN) run_rx();
      break;
    case EventKind::kUring:
      run_tx();
      break;
    default:
      break;
  }
  publish();
}

void QueueRunner::continue_work() {
  pending_marked_ = false;
  if (p_.tx_pending) run_tx();
  if (p_.rx_pending) run_rx();
  publish();
}

void QueueRunner::mark_pending() {
  if (pending_marked_) return;
  pending_marked_ = true;
  here_->mark_pending(this);
}

void QueueRunner::update_tap() {
  uint32_t events = 0;
  if (!p_.rx_paused) events |= EPOLLIN;
  if (p_.tx_blocked) events |= EPOLLOUT;
  tap_.set(events);
}

void QueueRunner::publish() {
  status_->add_queue_counts(p_.pair, counts_);
  status_->add_counters(local_);
}

void QueueRunner::report_stopped() {
  if (stop_reported_) return;
  // A broken ring: the owner takes the pair back and shows why (a post, never a wait).
  stop_reported_ = true;
  owner_.post([owner = &owner_, id = owner_port_, pair = p_.pair] {
    owner->runner_stopped(id, static_cast<uint16_t>(pair));
  });
}

void QueueRunner::run_tx() {
  p_.tx_pending = false;
  const ShareCounts share(local_, counts_);
  const WatchCompletions watch(uring_, p_.uring);
  for (int round = 0; round < kRoundsPerWake; ++round) {
    // tx-rate= keeps every pair on its owner: no bucket here.
    const dataplane::ForwardResult r = tx_pass(*p_.tx, p_.tap_fd, /*discard=*/false, p_.uring,
                                               p_.session, here_->scratch(), local_, nullptr);
    if (r.status == dataplane::ForwardStatus::kBudget) continue;
    if (r.status == dataplane::ForwardStatus::kTapFull) {
      p_.tx_blocked = true;
      update_tap();
    }
    if (r.status == dataplane::ForwardStatus::kQueueStopped) report_stopped();
    return;
  }
  p_.tx_pending = true;
  mark_pending();
}

void QueueRunner::run_rx() {
  p_.rx_pending = false;
  const ShareCounts share(local_, counts_);
  for (int round = 0; round < kRoundsPerWake; ++round) {
    const dataplane::ForwardResult r =
        rx_pass(*p_.rx, p_.tap_fd, p_.session, here_->scratch(), local_, p_.hold);
    if (r.status == dataplane::ForwardStatus::kBudget) continue;
    if (r.status == dataplane::ForwardStatus::kNoBuffers) {
      p_.rx_paused = true;
      update_tap();
    }
    if (r.status == dataplane::ForwardStatus::kQueueStopped) report_stopped();
    return;
  }
  p_.rx_pending = true;
  mark_pending();
}

}  // namespace vp::daemon
