// output_dir/zlora.lock (ckpt/output_lock.h): one run per output_dir. The holders here are real
// processes (forked children), alive, exited without releasing (SIGKILL-like: _exit skips destructors),
// or zombies; holders on other hosts and of earlier Slurm attempts are lock files written as such runs
// would have written them.
#include "test_util.h"
#include "zlora/ckpt/output_lock.h"
#include "zlora/core/error.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <string>

using namespace zlora::ckpt;
using nlohmann::json;
using zlora::test::read_file;
using zlora::test::TempDir;
using zlora::test::write_file;
namespace stdfs = std::filesystem;

using zlora::test::expect_error;

namespace {

// A child process that takes the lock, tells the parent, and then either holds it until killed
// (`hold`) or exits at once without releasing it (as a SIGKILLed run would leave it).
struct LockingChild {
  pid_t pid = -1;
  LockingChild(const stdfs::path& dir, bool hold) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid = fork();
    if (pid == 0) {
      close(fds[0]);
      try {
        auto* lock = new OutputDirLock(OutputDirLock::acquire(dir));  // never destroyed: no release
        (void)lock;
      } catch (...) {
        _exit(3);
      }
      char ok = 'k';
      (void)!write(fds[1], &ok, 1);
      if (hold) pause();
      _exit(0);
    }
    close(fds[1]);
    char c = 0;
    EXPECT_EQ(read(fds[0], &c, 1), 1) << "the child could not take the lock";
    close(fds[0]);
  }
  void reap() {
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ~LockingChild() { reap(); }
};

// A lock file as another run would have written it.
void write_lock(const stdfs::path& dir, const LockOwner& o) { write_file(dir / kLockName, o.to_json().dump() + "\n"); }

struct EnvGuard {
  std::string name;
  EnvGuard(const char* n, const std::string& v) : name(n) { setenv(n, v.c_str(), 1); }
  ~EnvGuard() { unsetenv(name.c_str()); }
};

}  // namespace

TEST(OutputLock, TakenAndReleasedWithTheOwnerRecorded) {
  TempDir tmp;
  const stdfs::path out = tmp / "run";  // created by acquire
  {
    OutputDirLock lock = OutputDirLock::acquire(out);
    EXPECT_TRUE(lock.took_over().empty());
    const LockOwner o = LockOwner::from_json(json::parse(read_file(out / kLockName)));
    EXPECT_EQ(o.pid, getpid());
    EXPECT_EQ(o.host, LockOwner::self().host);
    EXPECT_GT(o.start_ticks, 0);
    EXPECT_FALSE(o.boot_id.empty());
    // Only the lock itself is left in the directory (the private file it was linked from is gone).
    int files = 0;
    for (const auto& e : stdfs::directory_iterator(out)) files += e.path().filename() != kLockName;
    EXPECT_EQ(files, 0);
  }
  EXPECT_FALSE(stdfs::exists(out / kLockName));
}

TEST(OutputLock, ALiveHolderIsRefusedWithWhoHoldsIt) {
  TempDir tmp;
  LockingChild holder(tmp.path(), /*hold=*/true);
  const std::string msg = expect_error([&] { OutputDirLock::acquire(tmp.path()); });
  EXPECT_NE(msg.find("is in use by another zlora run: pid " + std::to_string(holder.pid) + " on host "),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("whatever its flags"), std::string::npos) << msg;
  EXPECT_NE(msg.find((tmp / kLockName).string()), std::string::npos) << msg;
  // Refusing changed nothing: the holder's lock is as it wrote it.
  EXPECT_EQ(LockOwner::from_json(json::parse(read_file(tmp / kLockName))).pid, holder.pid);
}

TEST(OutputLock, ADeadHoldersLockIsTakenOver) {
  TempDir tmp;
  LockingChild holder(tmp.path(), /*hold=*/false);
  const pid_t dead = holder.pid;
  holder.reap();  // exited without releasing, and reaped: the pid is gone
  OutputDirLock lock = OutputDirLock::acquire(tmp.path());
  EXPECT_NE(lock.took_over().find("pid " + std::to_string(dead)), std::string::npos) << lock.took_over();
  EXPECT_NE(lock.took_over().find("no process " + std::to_string(dead) + " runs on this host"), std::string::npos)
      << lock.took_over();
  EXPECT_EQ(LockOwner::from_json(json::parse(read_file(tmp / kLockName))).pid, getpid());
}

TEST(OutputLock, AZombieHolderCountsAsDead) {
  // A SIGKILLed rank stays a zombie, /proc entry and start time included, until it is reaped; a requeued
  // run must not wait for that.
  TempDir tmp;
  LockingChild holder(tmp.path(), /*hold=*/false);
  // Not reaped: wait until it is a zombie.
  for (int i = 0; i < 500; ++i) {
    const std::string stat = read_file("/proc/" + std::to_string(holder.pid) + "/stat");
    if (stat.find(") Z ") != std::string::npos) break;
    usleep(10000);
  }
  ASSERT_NE(read_file("/proc/" + std::to_string(holder.pid) + "/stat").find(") Z "), std::string::npos);
  OutputDirLock lock = OutputDirLock::acquire(tmp.path());
  EXPECT_NE(lock.took_over().find("no process"), std::string::npos) << lock.took_over();
}

TEST(OutputLock, TheRulesForHoldersThatLeftNoProcessHere) {
  const LockOwner me = LockOwner::self();
  // A reused pid: this host, this boot, a live process that started at another time.
  LockOwner reused = me;
  reused.pid = getppid();
  reused.start_ticks = 1;
  auto why = lock_holder_dead(reused, me);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("pid reused"), std::string::npos) << *why;
  // This host rebooted since.
  LockOwner before_boot = me;
  before_boot.boot_id = "00000000-0000-0000-0000-000000000000";
  why = lock_holder_dead(before_boot, me);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("rebooted"), std::string::npos) << *why;
  // Another host, no Slurm: may be alive.
  LockOwner elsewhere = me;
  elsewhere.host = "node-that-is-not-this-one";
  EXPECT_FALSE(lock_holder_dead(elsewhere, me));
  // An earlier attempt of this Slurm job on another node: dead (Slurm runs one attempt at a time).
  LockOwner me_slurm = me;
  me_slurm.slurm_job_id = "4242";
  me_slurm.slurm_restart_count = 2;
  LockOwner attempt1 = elsewhere;
  attempt1.slurm_job_id = "4242";
  attempt1.slurm_restart_count = 1;
  why = lock_holder_dead(attempt1, me_slurm);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("attempt 1 of this Slurm job, which is now at attempt 2"), std::string::npos) << *why;
  // The same attempt elsewhere (another step of this job), or another job: may be alive.
  attempt1.slurm_restart_count = 2;
  EXPECT_FALSE(lock_holder_dead(attempt1, me_slurm));
  attempt1.slurm_job_id = "4243";
  attempt1.slurm_restart_count = 0;
  EXPECT_FALSE(lock_holder_dead(attempt1, me_slurm));
}

TEST(OutputLock, ForeignHostIsRefusedAndAnEarlierSlurmAttemptTakenOver) {
  TempDir tmp;
  LockOwner other = LockOwner::self();
  other.host = "n7";
  other.pid = 999999;
  other.slurm_job_id = "77";
  other.slurm_restart_count = 0;
  write_lock(tmp.path(), other);
  {
    const std::string msg = expect_error([&] { OutputDirLock::acquire(tmp.path()); });
    EXPECT_NE(msg.find("pid 999999 on host n7 (Slurm job 77, attempt 0)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("remove " + (tmp / kLockName).string()), std::string::npos) << msg;
  }
  // The same job requeued (SLURM_RESTART_COUNT 1) on this node takes it over.
  EnvGuard job("SLURM_JOB_ID", "77"), attempt("SLURM_RESTART_COUNT", "1");
  OutputDirLock lock = OutputDirLock::acquire(tmp.path());
  EXPECT_NE(lock.took_over().find("attempt 0 of this Slurm job"), std::string::npos) << lock.took_over();
  const LockOwner now = LockOwner::from_json(json::parse(read_file(tmp / kLockName)));
  EXPECT_EQ(now.slurm_job_id, "77");
  EXPECT_EQ(now.slurm_restart_count, 1);
}

TEST(OutputLock, NotAZloraLockIsRefusedAndQuotedSafely) {
  TempDir tmp;
  write_file(tmp / kLockName, "\x1b[31mgarbage\x01\xff");
  const std::string msg = expect_error([&] { OutputDirLock::acquire(tmp.path()); });
  EXPECT_NE(msg.find("which is not a zlora lock file"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\x1b'), std::string::npos) << "a terminal escape reached the message";
  EXPECT_EQ(msg.find('\x01'), std::string::npos);
  EXPECT_EQ(read_file(tmp / kLockName), "\x1b[31mgarbage\x01\xff");  // left as found
}

TEST(OutputLock, ALockReplacedByAnotherRunIsNotReleased) {
  // Someone removed our lock by hand and another run took it: ours must not delete theirs on exit.
  TempDir tmp;
  LockOwner other = LockOwner::self();
  other.host = "n2";
  {
    OutputDirLock lock = OutputDirLock::acquire(tmp.path());
    write_lock(tmp.path(), other);
  }
  ASSERT_TRUE(stdfs::exists(tmp / kLockName));
  EXPECT_EQ(LockOwner::from_json(json::parse(read_file(tmp / kLockName))).host, "n2");
}

TEST(OutputLock, OutputDirThatIsAFileIsRefused) {
  TempDir tmp;
  write_file(tmp / "f", "x");
  const std::string msg = expect_error([&] { OutputDirLock::acquire(tmp / "f"); });
  EXPECT_NE(msg.find("exists and is not a directory"), std::string::npos) << msg;
}
