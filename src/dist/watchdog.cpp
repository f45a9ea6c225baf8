#include "zlora/dist/watchdog.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace zlora::dist {

Watchdog::Watchdog(int rank, int size) : rank_(rank), size_(size), thread_([this] { run(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

double Watchdog::limit_for(double timeout_s) { return timeout_s + std::clamp(0.25 * timeout_s, 5.0, 60.0); }

Watchdog::Guard Watchdog::arm(double limit_s, std::function<std::string()> message, int code) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (armed_) return Guard(this, false);  // nested: the outer wait's limit stands
    armed_ = true;
    deadline_ = std::chrono::steady_clock::now() +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(limit_s));
    message_ = std::move(message);
    code_ = code;
  }
  // No notify: the thread looks every kTick, so that arming (once per collective wait) costs a lock,
  // not a wake-up of another thread.
  return Guard(this, true);
}

void Watchdog::Guard::release() {
  if (armed_) dog_->disarm();
  armed_ = false;
}

void Watchdog::disarm() {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = false;
  message_ = nullptr;
}

void Watchdog::run() {
  constexpr auto kTick = std::chrono::milliseconds(250);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait_for(lock, kTick, [this] { return stop_; });
    if (stop_) return;
    if (!armed_ || std::chrono::steady_clock::now() < deadline_) continue;
    // Fired: the armed thread is still inside its wait past the limit. The message is formed here
    // (the diagnosis probes the peers over plain sockets), then the process ends without unwinding.
    const std::function<std::string()> message = message_;
    const int code = code_;
    lock.unlock();
    const std::string text = message ? message() : std::string("a wait outlived its limit");
    std::fprintf(stderr,
                 "zlora: error (rank %d of %d): %s (this rank was stuck inside the communication library past "
                 "the deadline, so it ends itself; the launcher ends the other ranks)\n",
                 rank_, size_, text.c_str());
    std::fflush(stderr);
    std::_Exit(code);
  }
}

}  // namespace zlora::dist
