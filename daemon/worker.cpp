#include "daemon/worker.hpp"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>

#include "daemon/port.hpp"
#include "daemon/queue_runner.hpp"
#include "sys/log.hpp"
#include "sys/str.hpp"

namespace vp::daemon {

// Interest ----------------------------------------------------------------------------------

Interest& Interest::operator=(Interest&& other) noexcept {
  if (this == &other) return *this;
  clear();
  epoll_ = other.epoll_;
  fd_ = other.fd_;
  tag_ = other.tag_;
  keep_ = other.keep_;
  registered_ = std::exchange(other.registered_, false);
  mask_ = std::exchange(other.mask_, 0);
  return *this;
}

void Interest::ctl(int op, uint32_t mask) noexcept {
  epoll_event ev{};
  ev.events = mask;
  ev.data.u64 = tag_;
  ::epoll_ctl(epoll_, op, fd_, op == EPOLL_CTL_DEL ? nullptr : &ev);
}

void Interest::set(uint32_t mask) noexcept {
  if (fd_ < 0) return;
  if (!registered_) {
    if (mask == 0 && !keep_) return;
    ctl(EPOLL_CTL_ADD, mask);
    registered_ = true;
  } else if (mask == 0 && !keep_) {
    ctl(EPOLL_CTL_DEL, 0);
    registered_ = false;
  } else if (mask != mask_) {
    ctl(EPOLL_CTL_MOD, mask);
  }
  mask_ = mask;
}

void Interest::clear() noexcept {
  if (registered_) ctl(EPOLL_CTL_DEL, 0);
  registered_ = false;
  mask_ = 0;
}

// OneShotTimer ------------------------------------------------------------------------------

OneShotTimer& OneShotTimer::operator=(OneShotTimer&& other) noexcept {
  if (this == &other) return *this;
  close();
  epoll_ = other.epoll_;
  tag_ = other.tag_;
  fd_ = std::move(other.fd_);
  armed_ = std::exchange(other.armed_, false);
  failed_ = std::exchange(other.failed_, false);
  return *this;
}

Result<void> OneShotTimer::open() {
  if (fd_) return {};
  fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!fd_) return sys_fail("timerfd_create", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tag_;
  if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd_.get(), &ev) < 0) {
    const int err = errno;
    fd_.reset();
    return sys_fail("epoll_ctl EPOLL_CTL_ADD of a timerfd", err);
  }
  return {};
}

Result<bool> OneShotTimer::arm(std::chrono::nanoseconds after) {
  if (auto opened = open(); !opened) {
    if (std::exchange(failed_, true)) return false;
    return std::unexpected(std::move(opened.error()));
  }
  // A zero it_value would disarm the timer: the earliest deadline is 1 ns from now.
  const int64_t ns = std::max<int64_t>(after.count(), 1);
  itimerspec t{};
  t.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  t.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  ::timerfd_settime(fd_.get(), 0, &t, nullptr);
  armed_ = true;
  return true;
}

void OneShotTimer::disarm() noexcept {
  if (!armed_) return;
  const itimerspec off{};
  ::timerfd_settime(fd_.get(), 0, &off, nullptr);
  armed_ = false;
}

uint64_t OneShotTimer::consume() noexcept {
  uint64_t expirations = 0;
  if (!fd_ || ::read(fd_.get(), &expirations, sizeof expirations) != sizeof expirations) return 0;
  armed_ = false;
  return expirations;
}

void OneShotTimer::close() noexcept {
  if (fd_) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd_.get(), nullptr);
  fd_.reset();
  armed_ = false;
  failed_ = false;
}

// Worker ------------------------------------------------------------------------------------

Worker::Worker(unsigned index, bool io_uring, EventQueue* events,
               std::chrono::seconds message_timeout)
    : index_(index),
      io_uring_(io_uring),
      events_(events),
      message_timeout_(message_timeout),
      epoll_(::epoll_create1(EPOLL_CLOEXEC)),
      wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      peer_wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = EventTag::kWake;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
  ev.data.u64 = EventTag::kPeerWake;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, peer_wake_.get(), &ev);
  thread_ = std::thread([this] { run(); });
}

Worker::~Worker() {
  call([this] {
    pending_.clear();
    by_id_.clear();
    ports_.clear();
    stop_ = true;
  });
  thread_.join();
}

namespace {

/// Wakes the epoll that watches eventfd `fd`.
void wake(int fd) noexcept {
  const uint64_t one = 1;
  (void)!::write(fd, &one, sizeof one);
}

/// Queues `fn` under `mutex` and wakes the worker through `fd`.
void enqueue(std::mutex& mutex, std::deque<std::function<void()>>& queue, int fd,
             std::function<void()> fn) {
  {
    std::lock_guard lock(mutex);
    queue.push_back(std::move(fn));
  }
  wake(fd);
}

}  // namespace

void Worker::post(std::function<void()> fn) {
  enqueue(commands_mutex_, commands_, wake_.get(), std::move(fn));
}

void Worker::detach_all() {
  call([this] {
    pending_.clear();
    by_id_.clear();
    ports_.clear();
    apply_priority();
    std::lock_guard lock(status_mutex_);
    status_.clear();
  });
}

void Worker::peer_post(std::function<void()> fn) {
  enqueue(peer_mutex_, peer_commands_, peer_wake_.get(), std::move(fn));
}

void Worker::peer_call(Worker& caller, std::function<void()> fn) {
  // `done` lives on this stack: the command sets it last and then touches only `caller`
  // (a worker, which outlives every port), never this frame.
  std::atomic<bool> done{false};
  peer_post([&fn, &done, w = &caller] {
    fn();
    done.store(true, std::memory_order_release);
    wake(w->peer_wake_.get());
  });
  // The deadlock rule (see the header): only peer commands are served while waiting.
  while (!done.load(std::memory_order_acquire)) {
    pollfd pfd{caller.peer_wake_.get(), POLLIN, 0};
    (void)::poll(&pfd, 1, -1);
    caller.run_peer_commands();
  }
}

void Worker::run_peer_commands() {
  uint64_t count = 0;
  (void)!::read(peer_wake_.get(), &count, sizeof count);
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard lock(peer_mutex_);
    batch.swap(peer_commands_);
  }
  for (auto& fn : batch) fn();
}

uint32_t Worker::add_runner(QueueRunner* runner) {
  const uint32_t id = next_id_++;
  runners_[id] = runner;
  return id;
}

void Worker::remove_runner(uint32_t id, QueueRunner* runner) {
  runners_.erase(id);
  std::erase(pending_runners_, runner);
}

void Worker::runner_stopped(uint32_t id, uint16_t pair) {
  if (auto it = by_id_.find(id); it != by_id_.end()) it->second->runner_stopped(pair);
}

void Worker::call(std::function<void()> fn) {
  std::mutex done_mutex;
  std::condition_variable done_cv;
  bool done = false;
  post([&] {
    fn();
    std::lock_guard done_lock(done_mutex);
    done = true;
    done_cv.notify_one();
  });
  std::unique_lock lock(done_mutex);
  done_cv.wait(lock, [&] { return done; });
}

std::future<void> Worker::probe() {
  // The command owns the promise: a caller that gave up waiting leaves nothing behind that
  // the worker could touch later.
  auto answered = std::make_shared<std::promise<void>>();
  std::future<void> f = answered->get_future();
  post([answered] { answered->set_value(); });
  return f;
}

void Worker::run_commands() {
  uint64_t count = 0;
  (void)!::read(wake_.get(), &count, sizeof count);
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard lock(commands_mutex_);
    batch.swap(commands_);
  }
  for (auto& fn : batch) fn();
}

void Worker::attach(const std::string& name, MakePort make) {
  auto status = std::make_shared<PortStatus>();
  {
    std::lock_guard lock(status_mutex_);
    status_[name] = status;
  }
  call([this, &make, &status] {
    const uint32_t id = next_id_++;
    add(id, make(*this, id, status));
  });
}

void Worker::detach(const std::string& name) {
  call([this, &name] { remove(name); });
}

void Worker::set_priority(const std::string& name, int priority) {
  call([this, &name, priority] {
    if (auto it = ports_.find(name); it != ports_.end()) {
      it->second->set_priority(priority);
      apply_priority();
    }
  });
}

void Worker::set_tx_rate(const std::string& name, const control::Rate& rate) {
  call([this, &name, &rate] {
    if (auto it = ports_.find(name); it != ports_.end()) it->second->set_tx_rate(rate);
  });
}

std::shared_ptr<PortStatus> Worker::status_of(const std::string& name) const {
  std::lock_guard lock(status_mutex_);
  auto it = status_.find(name);
  return it == status_.end() ? nullptr : it->second;
}

size_t Worker::port_count() const {
  std::lock_guard lock(status_mutex_);
  return status_.size();
}

void Worker::add(uint32_t id, std::unique_ptr<Port> port) {
  by_id_[id] = port.get();
  ports_[port->name()] = std::move(port);
  apply_priority();
}

void Worker::remove(const std::string& name) {
  auto it = ports_.find(name);
  if (it == ports_.end()) return;
  std::erase(pending_, it->second.get());
  for (auto i = by_id_.begin(); i != by_id_.end();) {
    i = i->second == it->second.get() ? by_id_.erase(i) : std::next(i);
  }
  ports_.erase(it);
  apply_priority();
  std::lock_guard lock(status_mutex_);
  status_.erase(name);
}

void Worker::apply_priority() {
  // priority=N puts the data-path thread in SCHED_FIFO at N; a worker serving several
  // endpoints runs at the highest of theirs. 0 everywhere: normal scheduling.
  int wanted = 0;
  for (const auto& [name, port] : ports_) wanted = std::max(wanted, port->priority());
  if (wanted == priority_) return;
  sched_param param{};
  param.sched_priority = wanted;
  const int rc =
      ::pthread_setschedparam(::pthread_self(), wanted ? SCHED_FIFO : SCHED_OTHER, &param);
  if (rc != 0) {
    log::warning("data-path worker ", index_, ": cannot set SCHED_FIFO priority ", wanted, ": ",
                 std::strerror(rc), " (vpd needs CAP_SYS_NICE)");
    return;
  }
  priority_ = wanted;
  log::info("data-path worker ", index_, ": scheduling ",
            wanted ? str("SCHED_FIFO priority ", wanted) : std::string("normal"));
}

void Worker::dispatch(uint64_t tag, uint32_t events) {
  if (tag == EventTag::kWake) {
    run_commands();
    return;
  }
  if (tag == EventTag::kPeerWake) {
    run_peer_commands();
    return;
  }
  const EventTag t = EventTag::decode(tag);
  if (auto it = by_id_.find(t.port); it != by_id_.end()) {
    it->second->on_event(t.kind, t.queue, events);
    return;
  }
  // A pair lent to this worker (or nothing: it went away earlier in this batch).
  if (auto it = runners_.find(t.port); it != runners_.end()) {
    it->second->on_event(t.kind, t.queue, events);
  }
}

void Worker::run() {
  // "vpd-worker0": what ps -L, top -H and /proc/PID/task/TID/comm show for this thread.
  const std::string thread_name = str("vpd-worker", index_);
  ::pthread_setname_np(::pthread_self(), thread_name.c_str());
  log::info("data-path worker ", index_, " running");
  epoll_event events[64];
  while (!stop_) {
    const bool idle = pending_.empty() && pending_runners_.empty();
    const int n = ::epoll_wait(epoll_.get(), events, 64, idle ? -1 : 0);
    if (n < 0 && errno != EINTR) {
      log::error("data-path worker ", index_, ": epoll_wait: ", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) dispatch(events[i].data.u64, events[i].events);
    if (n <= 0 && !pending_.empty()) {
      // Swapped with a member, not a local: no allocation once both have grown.
      running_.swap(pending_);
      for (Port* p : running_) p->continue_work();
      running_.clear();
    }
    if (n <= 0 && !pending_runners_.empty()) {
      // A runner never takes a pair back or lends one, so none leaves while this runs.
      running_runners_.swap(pending_runners_);
      for (QueueRunner* r : running_runners_) r->continue_work();
      running_runners_.clear();
    }
  }
}

bool all_responsive(std::span<Worker* const> workers, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::future<void>> answers;
  answers.reserve(workers.size());
  for (Worker* w : workers) answers.push_back(w->probe());
  for (auto& answer : answers) {
    if (answer.wait_until(deadline) != std::future_status::ready) return false;
    try {
      answer.get();
    } catch (const std::future_error&) {
      return false;  // the worker stopped before it ran the probe
    }
  }
  return true;
}

}  // namespace vp::daemon
