// The checkpoint protocol in one process (no HostGroup): layout, manifest, discovery of the newest
// complete checkpoint, partial checkpoints, pruning, stale cleanup, a writer killed by SIGKILL, the
// output-directory descriptor (pitfall 3) and the preemption flag.
#include "test_util.h"
#include "zlora/ckpt/checkpoint.h"
#include "zlora/ckpt/payload.h"
#include "zlora/ckpt/preempt.h"
#include "zlora/ckpt/run_descriptor.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <thread>

using namespace zlora::ckpt;
using nlohmann::json;
using zlora::test::read_file;
using zlora::test::TempDir;
using zlora::test::write_file;
namespace stdfs = std::filesystem;

using zlora::test::expect_error;

namespace {

// FIPS 180-2 test vector: SHA-256("abc").
constexpr const char* kShaAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

stdfs::path save(const stdfs::path& out, long long step, const std::string& payload,
                 std::optional<long long> limit = std::nullopt) {
  SaveRequest r;
  r.step = step;
  r.payload = payload;
  r.rank0_files = [](const stdfs::path& dir) { write_file(dir / "adapter_config.json", "{\"r\": 8}"); };
  r.trainer_state_json = json{{"global_step", step}}.dump();
  r.save_total_limit = limit;
  return save_checkpoint(out, r, nullptr);
}

}  // namespace

TEST(Checkpoint, LayoutManifestAndLatest) {
  TempDir out;
  stdfs::path dir = save(out.path(), 20, "abc");
  EXPECT_EQ(dir, out / "checkpoint-20");
  for (const char* f : {"rank-00000.bin", "adapter_config.json", "trainer_state.json", "manifest.json"})
    EXPECT_TRUE(stdfs::is_regular_file(dir / f)) << f;
  EXPECT_FALSE(stdfs::exists(out / "checkpoint-20.tmp"));
  EXPECT_EQ(read_file(out / "latest"), "checkpoint-20\n");
  EXPECT_EQ(read_latest_pointer(out.path()).value_or(""), "checkpoint-20");
  EXPECT_EQ(read_file(dir / "rank-00000.bin"), "abc");
  json m = json::parse(read_file(dir / "manifest.json"));
  EXPECT_EQ(m["step"], 20);
  EXPECT_EQ(m["world_size"], 1);
  ASSERT_EQ(m["rank_files"].size(), 1u);
  EXPECT_EQ(m["rank_files"][0]["name"], "rank-00000.bin");
  EXPECT_EQ(m["rank_files"][0]["size"], 3);
  EXPECT_EQ(m["rank_files"][0]["sha256"], kShaAbc);
  // rank 0's other files are listed too (sorted), so a damaged adapter is caught as well.
  ASSERT_EQ(m["files"].size(), 2u);
  EXPECT_EQ(m["files"][0]["name"], "adapter_config.json");
  EXPECT_EQ(m["files"][1]["name"], "trainer_state.json");
  EXPECT_EQ(json::parse(read_file(dir / "trainer_state.json"))["global_step"], 20);
  auto info = find_latest_checkpoint(out.path());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->step(), 20);
  ResumePayloads p = read_payloads(*info, 0, 1);
  EXPECT_TRUE(p.same_world);
  ASSERT_EQ(p.payloads.size(), 1u);
  EXPECT_EQ(p.payloads[0], "abc");
}

TEST(Checkpoint, CheckpointNames) {
  EXPECT_EQ(checkpoint_dir_name(7), "checkpoint-7");
  EXPECT_EQ(rank_file_name(12), "rank-00012.bin");
  EXPECT_EQ(parse_checkpoint_step("checkpoint-120"), 120);
  EXPECT_FALSE(parse_checkpoint_step("checkpoint-120.tmp"));
  EXPECT_FALSE(parse_checkpoint_step("checkpoint-007"));
  EXPECT_FALSE(parse_checkpoint_step("checkpoint-"));
  EXPECT_FALSE(parse_checkpoint_step("global_step120"));
}

TEST(Checkpoint, PartialCheckpointIsNeverLatest) {
  struct Damage {
    const char* what;
    std::function<void(const stdfs::path&)> apply;
    const char* reason;
  };
  std::vector<Damage> cases = {
      {"rank file missing", [](const stdfs::path& d) { stdfs::remove(d / "rank-00000.bin"); }, "is missing"},
      {"manifest missing", [](const stdfs::path& d) { stdfs::remove(d / "manifest.json"); }, "has no manifest.json"},
      {"sha mismatch", [](const stdfs::path& d) { write_file(d / "rank-00000.bin", "xyz-step-30"); }, "is damaged"},
      {"size mismatch", [](const stdfs::path& d) { write_file(d / "rank-00000.bin", "short"); },
       "bytes, the manifest says"},
      {"adapter damaged", [](const stdfs::path& d) { write_file(d / "adapter_config.json", "{\"r\": 9}"); },
       "is damaged"},
      {"manifest garbage", [](const stdfs::path& d) { write_file(d / "manifest.json", "{"); }, "manifest.json"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    TempDir out;
    save(out.path(), 10, "payload-step-10");
    stdfs::path newest = save(out.path(), 30, "abc-step-30");
    c.apply(newest);
    auto info = find_latest_checkpoint(out.path());
    ASSERT_TRUE(info);
    EXPECT_EQ(info->step(), 10);
    EXPECT_EQ(read_payloads(*info, 0, 1).payloads[0], "payload-step-10");
    // Named explicitly: refused with the reason, nothing moved.
    std::string msg = expect_error([&] { resolve_resume(out.path(), newest.string()); });
    EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
    EXPECT_NE(msg.find("--resume_from_checkpoint latest"), std::string::npos) << msg;
    EXPECT_TRUE(stdfs::is_directory(newest));
    // `latest`: the damaged one is moved aside (kept as evidence, out of any later save's way), `latest`
    // names the one resumed from.
    EXPECT_EQ(resolve_resume(out.path(), "latest").step(), 10);
    EXPECT_FALSE(stdfs::exists(newest));
    EXPECT_TRUE(stdfs::is_directory(out / "checkpoint-30.damaged"));
    EXPECT_EQ(read_latest_pointer(out.path()).value_or(""), "checkpoint-10");
    ASSERT_EQ(list_checkpoint_dirs(out.path()).size(), 1u);
    // A second damage of the same step is moved aside under another name.
    stdfs::path again = save(out.path(), 30, "abc-step-30");
    c.apply(again);
    EXPECT_EQ(resolve_resume(out.path(), "latest").step(), 10);
    EXPECT_TRUE(stdfs::is_directory(out / "checkpoint-30.damaged-2"));
  }
}

TEST(Checkpoint, ResumeWithoutAnyCompleteCheckpointSaysSo) {
  TempDir out;
  stdfs::path d = save(out.path(), 5, "x");
  stdfs::remove(d / "manifest.json");
  std::string msg = expect_error([&] { resolve_resume(out.path(), "latest"); });
  EXPECT_NE(msg.find("no complete checkpoint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("checkpoint-5 (moved to checkpoint-5.damaged: "), std::string::npos) << msg;
  EXPECT_NE(msg.find("has no manifest.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite_output_dir true"), std::string::npos) << msg;
  EXPECT_TRUE(stdfs::is_directory(out / "checkpoint-5.damaged"));
  msg = expect_error([&] { resolve_resume(out.path(), (out / "checkpoint-99").string()); });
  EXPECT_NE(msg.find("is not a directory"), std::string::npos) << msg;
}

TEST(Checkpoint, PayloadChangedAfterVerificationIsRefused) {
  TempDir out;
  stdfs::path d = save(out.path(), 1, "abc");
  auto info = find_latest_checkpoint(out.path());
  ASSERT_TRUE(info);
  write_file(d / "rank-00000.bin", "abd");
  std::string msg = expect_error([&] { read_payloads(*info, 0, 1); });
  EXPECT_NE(msg.find("changed since the checkpoint was written"), std::string::npos) << msg;
}

TEST(Checkpoint, PruningKeepsTheNewestComplete) {
  TempDir out;
  for (long long s = 1; s <= 5; ++s) save(out.path(), s, "p" + std::to_string(s), 2);
  std::vector<std::string> names;
  for (const auto& d : list_checkpoint_dirs(out.path())) names.push_back(d.filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"checkpoint-4", "checkpoint-5"}));
  // A newer but incomplete checkpoint does not count: limit 1 keeps checkpoint-5 and leaves checkpoint-6
  // for inspection.
  stdfs::path six = save(out.path(), 6, "p6");
  stdfs::remove(six / "manifest.json");
  auto removed = prune_checkpoints(out.path(), 1);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].filename(), "checkpoint-4");
  EXPECT_TRUE(stdfs::exists(out / "checkpoint-5"));
  EXPECT_TRUE(stdfs::exists(out / "checkpoint-6"));
  EXPECT_EQ(find_latest_checkpoint(out.path())->step(), 5);
  EXPECT_THROW(prune_checkpoints(out.path(), 0), zlora::Error);
}

TEST(Checkpoint, StaleTemporariesAreCleaned) {
  TempDir out;
  save(out.path(), 3, "x");
  stdfs::create_directories(out / "checkpoint-4.tmp");
  write_file(out / "checkpoint-4.tmp" / "rank-00000.bin", "half");
  write_file(out / "latest.tmp.12345", "checkpoint-4\n");
  write_file(out / "notes.txt", "mine");
  auto removed = clean_stale(out.path());
  EXPECT_EQ(removed.size(), 2u);
  EXPECT_FALSE(stdfs::exists(out / "checkpoint-4.tmp"));
  EXPECT_FALSE(stdfs::exists(out / "latest.tmp.12345"));
  EXPECT_TRUE(stdfs::exists(out / "notes.txt"));
  EXPECT_TRUE(stdfs::exists(out / "checkpoint-3"));
}

TEST(Checkpoint, FailingRank0WriterLeavesLatestAlone) {
  TempDir out;
  save(out.path(), 1, "one");
  SaveRequest r;
  r.step = 2;
  r.payload = "two";
  r.rank0_files = [](const stdfs::path&) { zlora::fail("disk full (simulated)"); };
  std::string msg = expect_error([&] { save_checkpoint(out.path(), r, nullptr); });
  EXPECT_NE(msg.find("disk full"), std::string::npos);
  EXPECT_EQ(read_file(out / "latest"), "checkpoint-1\n");
  EXPECT_EQ(find_latest_checkpoint(out.path())->step(), 1);
  EXPECT_FALSE(stdfs::exists(out / "checkpoint-2"));
}

// A writer killed by SIGKILL at a chosen point inside the save, and at arbitrary points of a large save:
// the previous checkpoint stays `latest` and loadable; whatever `latest` names is complete.
TEST(Checkpoint, WriterKilledMidSaveLeavesPreviousLatest) {
  TempDir out;
  save(out.path(), 10, "the-previous-payload");
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    SaveRequest r;
    r.step = 20;
    std::string big(1 << 20, 'z');
    r.payload = big;
    r.rank0_files = [](const stdfs::path& dir) {
      std::FILE* f = std::fopen((dir / "adapter_model.safetensors").c_str(), "w");
      std::fputs("half an adapter", f);
      std::fflush(f);
      raise(SIGKILL);
    };
    try {
      save_checkpoint(out.path(), r, nullptr);
    } catch (...) {
    }
    _exit(3);  // not reached
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_TRUE(stdfs::exists(out / "checkpoint-20.tmp"));
  EXPECT_FALSE(stdfs::exists(out / "checkpoint-20"));
  EXPECT_EQ(read_file(out / "latest"), "checkpoint-10\n");
  auto info = find_latest_checkpoint(out.path());
  ASSERT_TRUE(info);
  EXPECT_EQ(info->step(), 10);
  EXPECT_EQ(read_payloads(*info, 0, 1).payloads[0], "the-previous-payload");
  clean_stale(out.path());
  EXPECT_FALSE(stdfs::exists(out / "checkpoint-20.tmp"));

  // Kills at arbitrary moments of a 32 MiB save.
  for (int delay_ms : {1, 5, 20, 60}) {
    SCOPED_TRACE(delay_ms);
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      std::string big(32 << 20, char('a' + delay_ms % 26));
      SaveRequest r;
      r.step = 100 + delay_ms;
      r.payload = big;
      try {
        save_checkpoint(out.path(), r, nullptr);
      } catch (...) {
      }
      _exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(child, SIGKILL);
    ASSERT_EQ(waitpid(child, &status, 0), child);
    auto pointer = read_latest_pointer(out.path());
    ASSERT_TRUE(pointer);
    auto named = verify_checkpoint(out / *pointer, true);
    EXPECT_TRUE(named) << "latest names an incomplete checkpoint: " << *pointer;
    auto newest = find_latest_checkpoint(out.path());
    ASSERT_TRUE(newest);
    EXPECT_TRUE(newest->step() == 10 || newest->step() == 100 + delay_ms) << newest->step();
    clean_stale(out.path());
  }
}

namespace {
RunDescriptor descriptor(long long rank = 8, const std::string& data = "d41d8cd98f00b204e9800998ecf8427e") {
  RunDescriptor d;
  d.model_path = "/models/Qwen2.5-0.5B-Instruct";
  d.model_config_sha256 = "0123456789abcdef0123456789abcdef";
  d.lora_rank = rank;
  d.lora_alpha = 2.0 * double(rank);
  d.lora_target = {"all"};
  d.data_hash = data;
  d.template_name = "qwen";
  return d;
}
}  // namespace

TEST(OutputDir, FreshDirectoryGetsADescriptor) {
  TempDir tmp;
  stdfs::path out = tmp / "run";
  OutputDirResult r = prepare_output_dir(out, descriptor(), false, false);
  EXPECT_FALSE(r.previous_outputs);
  json j = json::parse(read_file(out / "zlora_run.json"));
  EXPECT_EQ(RunDescriptor::from_json(j), descriptor());
  EXPECT_EQ(j["lora_rank"], 8);
  EXPECT_EQ(j["template"], "qwen");
  // The same run again with nothing trained yet is fine.
  EXPECT_NO_THROW(prepare_output_dir(out, descriptor(), false, false));
}

TEST(OutputDir, AnotherRunsCheckpointsAreRefusedWithBothDescriptions) {
  TempDir tmp;
  stdfs::path out = tmp / "run";
  prepare_output_dir(out, descriptor(8), false, false);
  save(out, 10, "x");
  write_file(out / "trainer_log.jsonl", "{}\n");
  RunDescriptor other = descriptor(16, "ffffffffffffffffffff");
  std::string msg = expect_error([&] { prepare_output_dir(out, other, false, false); });
  EXPECT_NE(msg.find("already holds checkpoints or outputs of another run: " + descriptor(8).describe()),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("this run: " + other.describe()), std::string::npos) << msg;
  EXPECT_NE(msg.find("LoRA r=8 alpha=16"), std::string::npos) << msg;
  EXPECT_NE(msg.find("LoRA r=16 alpha=32"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--overwrite_output_dir"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--resume_from_checkpoint latest"), std::string::npos) << msg;
  // Refusal changes nothing.
  EXPECT_TRUE(stdfs::exists(out / "checkpoint-10"));
  EXPECT_EQ(RunDescriptor::from_json(json::parse(read_file(out / "zlora_run.json"))), descriptor(8));
  // The same run without resume is refused too: it would clobber the log and checkpoints.
  msg = expect_error([&] { prepare_output_dir(out, descriptor(8), false, false); });
  EXPECT_NE(msg.find("this same run"), std::string::npos) << msg;
}

TEST(OutputDir, UnknownRunsOutputsAreRefused) {
  TempDir tmp;
  stdfs::create_directories(tmp / "checkpoint-500");  // e.g. LLaMA-Factory's output_dir
  std::string msg = expect_error([&] { prepare_output_dir(tmp.path(), descriptor(), false, false); });
  EXPECT_NE(msg.find("unknown run"), std::string::npos) << msg;
}

TEST(OutputDir, OverwriteRemovesOnlyRunOutputs) {
  TempDir tmp;
  stdfs::path out = tmp / "run";
  prepare_output_dir(out, descriptor(8), false, false);
  save(out, 10, "x");
  stdfs::create_directories(out / "checkpoint-20.tmp");
  for (const char* f : {"trainer_log.jsonl", "trainer_state.json", "train_results.json", "training_loss.png",
                        "adapter_model.safetensors", "notes.txt"})
    write_file(out / f, "old");
  OutputDirResult r = prepare_output_dir(out, descriptor(16), true, false);
  EXPECT_TRUE(r.overwritten);
  ASSERT_TRUE(r.previous);
  EXPECT_EQ(*r.previous, descriptor(8));
  for (const char* f : {"checkpoint-10", "checkpoint-20.tmp", "latest", "trainer_log.jsonl", "trainer_state.json",
                        "train_results.json", "training_loss.png", "adapter_model.safetensors"})
    EXPECT_FALSE(stdfs::exists(out / f)) << f;
  EXPECT_EQ(read_file(out / "notes.txt"), "old");  // not ours: kept
  EXPECT_EQ(RunDescriptor::from_json(json::parse(read_file(out / "zlora_run.json"))), descriptor(16));
}

TEST(OutputDir, ResumeIsAllowedAndWarnsWhenTheRunDiffers) {
  TempDir tmp;
  stdfs::path out = tmp / "run";
  prepare_output_dir(out, descriptor(8), false, false);
  save(out, 10, "x");
  OutputDirResult same = prepare_output_dir(out, descriptor(8), false, true);
  EXPECT_TRUE(same.previous_outputs);
  EXPECT_TRUE(same.warning.empty());
  EXPECT_TRUE(stdfs::exists(out / "checkpoint-10"));
  OutputDirResult diff = prepare_output_dir(out, descriptor(8, "0000"), false, true);
  EXPECT_NE(diff.warning.find("previous run differs"), std::string::npos) << diff.warning;
}

TEST(OutputDir, OverwriteWithResumeKeepsTheCheckpoints) {
  // configs/demo.yaml sets overwrite_output_dir; a requeue adds --resume_from_checkpoint latest
  // (jobs/resume_args.sh). The resume wins: nothing is removed, and the run says why.
  TempDir tmp;
  stdfs::path out = tmp / "run";
  prepare_output_dir(out, descriptor(8), false, false);
  save(out, 10, "x");
  write_file(out / "trainer_log.jsonl", "{}\n");
  OutputDirResult r = prepare_output_dir(out, descriptor(8), true, true);
  EXPECT_FALSE(r.overwritten);
  EXPECT_TRUE(r.removed.empty());
  EXPECT_TRUE(stdfs::exists(out / "checkpoint-10"));
  EXPECT_TRUE(stdfs::exists(out / "trainer_log.jsonl"));
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("overwrite_output_dir"), std::string::npos) << r.notes[0];
  EXPECT_NE(r.notes[0].find("resume"), std::string::npos) << r.notes[0];
}

TEST(OutputDir, OverwriteKeepsDamagedCheckpointsMovedAside) {
  TempDir tmp;
  stdfs::path out = tmp / "run";
  prepare_output_dir(out, descriptor(8), false, false);
  save(out, 10, "x");
  stdfs::path d = save(out, 20, "y");
  stdfs::remove(d / "rank-00000.bin");
  EXPECT_EQ(resolve_resume(out, "latest").step(), 10);
  ASSERT_TRUE(stdfs::is_directory(out / "checkpoint-20.damaged"));
  OutputDirResult r = prepare_output_dir(out, descriptor(8), true, false);
  EXPECT_TRUE(r.overwritten);
  EXPECT_FALSE(stdfs::exists(out / "checkpoint-10"));
  EXPECT_TRUE(stdfs::is_directory(out / "checkpoint-20.damaged")) << "evidence of damage must survive an overwrite";
}

TEST(OutputDir, BadInputs) {
  TempDir tmp;
  write_file(tmp / "file", "x");
  EXPECT_THROW(prepare_output_dir(tmp / "file", descriptor(), false, false), zlora::Error);
  write_file(tmp / "run" / "zlora_run.json", "{not json");
  EXPECT_THROW(prepare_output_dir(tmp / "run", descriptor(), false, false), zlora::Error);
  write_file(tmp / "run2" / "zlora_run.json", "{\"model_path\": 3}");
  EXPECT_THROW(prepare_output_dir(tmp / "run2", descriptor(), false, false), zlora::Error);
}

TEST(Preemption, SignalsSetTheFlagAndHandlersAreRestored) {
  EXPECT_EQ(kExitPreempted, 75);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGUSR1, &ignore, nullptr);
  clear_preempt();
  {
    PreemptionGuard guard;
    EXPECT_FALSE(preempt_requested());
    EXPECT_FALSE(agree_preempt(nullptr));
    raise(SIGUSR1);
    EXPECT_TRUE(preempt_requested());
    EXPECT_EQ(preempt_signal(), SIGUSR1);
    EXPECT_TRUE(agree_preempt(nullptr));
    clear_preempt();
    raise(SIGTERM);  // handled: the process is still here
    EXPECT_EQ(preempt_signal(), SIGTERM);
    clear_preempt();
  }
  struct sigaction now {};
  sigaction(SIGUSR1, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_IGN);
  sigaction(SIGTERM, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
}

TEST(Payload, SectionsRoundTripInTheDocumentedFormat) {
  Payload p;
  p.set("sampler", "{\"epoch\": 1}");
  p.set("rng", std::string("\0\1\2", 3));
  std::string blob = p.serialize();
  // "ZLPAYLD1", count 2, then sections in name order: "rng" (3 bytes) first.
  std::string expect("ZLPAYLD1", 8);
  auto u64 = [](uint64_t v) {
    std::string s;
    for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
    return s;
  };
  expect +=
      u64(2) + u64(3) + "rng" + u64(3) + std::string("\0\1\2", 3) + u64(7) + "sampler" + u64(12) + "{\"epoch\": 1}";
  EXPECT_EQ(blob, expect);
  Payload back = Payload::parse(blob);
  EXPECT_EQ(back.get("rng"), std::string("\0\1\2", 3));
  EXPECT_EQ(back.get("sampler"), "{\"epoch\": 1}");
  std::string msg = expect_error([&] { back.get("zero"); });
  EXPECT_NE(msg.find("no section 'zero' (present: rng, sampler)"), std::string::npos) << msg;
  EXPECT_THROW(Payload::parse(blob.substr(0, blob.size() - 1)), zlora::Error);
  EXPECT_THROW(Payload::parse(blob + "x"), zlora::Error);
  EXPECT_THROW(Payload::parse("not a payload at all"), zlora::Error);
}
