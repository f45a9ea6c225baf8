// The last line of defence of a collective's deadline. poll_until() checks the deadline between
// completion tests, which covers every peer that stops answering, but not this rank getting stuck
// inside one test: after a peer's TCP connection breaks, an MPI library may block in its own error path
// (seen with OpenMPI 4.1 when a rank is SIGKILLed mid-transfer), and nothing on the main thread runs
// again. A Watchdog is a thread of its own that ends the process when an armed wait outlives its limit,
// printing the message the wait would have printed: the job still ends with a diagnosis, not a hang
// until Slurm's time limit.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace zlora::dist {

class Watchdog {
 public:
  // `rank` and `size` prefix the message as MpiRuntime::fail_job does ("zlora: error (rank r of n): ...").
  Watchdog(int rank, int size);
  ~Watchdog();  // stops and joins the thread
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Disarms on destruction. Guards nest: an inner arm while one is armed keeps the outer (earlier)
  // limit and message.
  class Guard {
   public:
    Guard(Guard&& other) noexcept : dog_(other.dog_), armed_(other.armed_) { other.armed_ = false; }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    Guard& operator=(Guard&&) = delete;
    ~Guard() { release(); }
    // Disarms now (before the wait ends the job itself, so that only one message is printed).
    void release();

   private:
    friend class Watchdog;
    Guard(Watchdog* dog, bool armed) : dog_(dog), armed_(armed) {}
    Watchdog* dog_;
    bool armed_;
  };

  // Until the guard is released: when `limit_s` seconds pass, the thread prints `message()` (called on
  // the watchdog thread, so it must touch nothing the stuck thread holds: no MPI) and ends the process
  // with `code` (std::_Exit: no destructor may run while the main thread is inside MPI).
  [[nodiscard]] Guard arm(double limit_s, std::function<std::string()> message, int code);

  // The limit poll_until's callers arm for a wait of `timeout_s`: the timeout plus a grace that lets
  // the wait's own deadline (and its orderly MPI_Abort) win whenever the main thread still runs.
  static double limit_for(double timeout_s);

 private:
  void run();
  void disarm();

  const int rank_;
  const int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool armed_ = false;
  std::chrono::steady_clock::time_point deadline_{};
  std::function<std::string()> message_;
  int code_ = 3;
  std::thread thread_;  // last: started once the state above exists
};

}  // namespace zlora::dist
