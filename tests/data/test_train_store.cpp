// Which token store `zlora train` trains on (docs/data-format.md, "Which store a run trains on"), end to
// end through the binary: a store made from other data settings than the run's is rebuilt where that is
// safe (zlora train made it at the default path, or --overwrite_cache true) and refused otherwise, naming
// each field that differs; it is never trained on silently. The model is the tiny random Qwen2 of
// configs/models/tiny-qwen2.json with the node reference's Qwen tokenizer; the data are generated.
#include "data_test_util.h"
#include "test_data_util.h"

#include "zlora/core/sha256.h"

namespace zlora::data {
namespace {

using test::TempDir;

struct Fixture {
  TempDir dir;
  std::filesystem::path model = dir / "model";
  std::filesystem::path data = dir / "data";

  Fixture() {
    auto r = test::run_zlora("init-model --config " + (test::source_dir() / "configs/models/tiny-qwen2.json").string() +
                             " --tokenizer " + test::qwen_tokenizer_json().parent_path().string() + " --output " +
                             model.string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    // Two datasets: gen (rows 0-39) and other (rows 40-51).
    test::write_alpaca_dataset(data, 40, "gen");
    std::vector<test::AlpacaRow> rows = test::generated_alpaca_rows(52);
    rows.erase(rows.begin(), rows.begin() + 40);
    test::write_file(data / "other.json", test::alpaca_json(rows));
    test::write_file(data / "dataset_info.json",
                     R"({"gen": {"file_name": "gen.json"}, "other": {"file_name": "other.json"}})");
  }

  // `zlora train` on the tiny model for one step; `extra` adds or overrides flags.
  std::string train_args(const std::filesystem::path& output_dir, const std::string& extra) const {
    return "train --model_name_or_path " + model.string() + " --dataset_dir " + data.string() +
           " --template qwen --cutoff_len 128 --output_dir " + output_dir.string() +
           " --max_steps 1 --per_device_train_batch_size 2 --lora_rank 4 --lora_target q_proj --device cpu "
           "--comm mpi --report_to none " +
           extra;
  }

  std::string prepare_args(const std::filesystem::path& output, const std::string& extra) const {
    return "prepare --dataset gen --dataset_dir " + data.string() + " --template qwen --cutoff_len 128 --tokenizer " +
           model.string() + " --output " + output.string() + " " + extra;
  }
};

// `zlora info` of a store: its provenance lines.
std::string info(const std::filesystem::path& store) {
  auto r = test::run_zlora("info " + store.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return r.output;
}

// A run's own store (<output_dir>/tokenized.h5, made by zlora train) follows the run's data settings: made
// when missing, reused while they are the same, rebuilt when they change (dataset, cutoff_len,
// max_samples, a file's bytes), each rebuild saying which field changed.
TEST(TrainStore, TheRunsOwnStoreIsReusedOrRebuiltToMatchTheRun) {
  Fixture f;
  const auto out = f.dir / "out";
  const auto store = out / "tokenized.h5";
  auto r = test::run_zlora(f.train_args(out, "--dataset gen"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "preparing the token store " + store.string() + " from dataset gen"))
      << r.output;
  std::string i = info(store);
  EXPECT_TRUE(test::contains(i, "made_by: zlora train")) << i;
  EXPECT_TRUE(test::contains(i, "gen: 40 rows")) << i;
  const std::string sha = sha256_file(store.string());

  // The same settings: reused as it is.
  r = test::run_zlora(f.train_args(out, "--dataset gen --overwrite_output_dir true"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(test::contains(r.output, "token store")) << r.output;
  EXPECT_EQ(sha256_file(store.string()), sha);

  // Another dataset.
  r = test::run_zlora(f.train_args(out, "--dataset other --overwrite_output_dir true"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "the token store " + store.string() +
                                           " was made by zlora train from other data settings (dataset is gen in "
                                           "the store but other in this run (flag --dataset)); rebuilding it"))
      << r.output;
  i = info(store);
  EXPECT_TRUE(test::contains(i, "other: 12 rows")) << i;
  EXPECT_FALSE(test::contains(i, "gen: ")) << i;

  // Another cutoff_len and max_samples, named together.
  r = test::run_zlora(
      f.train_args(out, "--dataset other --overwrite_output_dir true --cutoff_len 64 --max_samples 10"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "cutoff_len is 128 in the store but 64 in this run (flag --cutoff_len)"))
      << r.output;
  EXPECT_TRUE(test::contains(r.output, "max_samples is unset in the store but 10 in this run (flag --max_samples)"))
      << r.output;
  i = info(store);
  EXPECT_TRUE(test::contains(i, "cutoff_len: 64")) << i;
  EXPECT_TRUE(test::contains(i, "max_samples: 10")) << i;
  EXPECT_TRUE(test::contains(i, "samples: 10 ")) << i;

  // The data file edited in place (same name): its hash tells, and the store follows.
  std::string body = test::read_file(f.data / "other.json");
  body.replace(body.find("(row 40)"), 8, "(row 4O)");
  test::write_file(f.data / "other.json", body);
  r = test::run_zlora(
      f.train_args(out, "--dataset other --overwrite_output_dir true --cutoff_len 64 --max_samples 10"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "dataset 'other': file other.json is ")) << r.output;
  EXPECT_TRUE(test::contains(r.output, "rebuilding it")) << r.output;
}

// A store the run names with --tokenized_path, or one `zlora prepare` made, is never replaced unasked: a
// run with other data settings is refused before training, naming the store, each differing field with
// both values and where the run's value came from, and the ways out; the store is left as it was.
// --overwrite_cache true rebuilds it.
TEST(TrainStore, AStoreTheRunDidNotMakeIsRefusedNamingTheFieldsOrRebuiltWithOverwriteCache) {
  Fixture f;
  const auto store = f.dir / "a.h5";
  auto r = test::run_zlora(f.prepare_args(store, ""));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string sha = sha256_file(store.string());
  const std::string named = "--tokenized_path " + store.string() + " ";

  r = test::run_zlora(f.train_args(f.dir / "o1", named + "--dataset other"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(test::contains(r.output, "the token store " + store.string() +
                                           " was made from other data settings than this run's: dataset is gen in "
                                           "the store but other in this run (flag --dataset)"))
      << r.output;
  EXPECT_TRUE(test::contains(r.output, "It was made by `zlora prepare` and is named by tokenized_path")) << r.output;
  EXPECT_TRUE(test::contains(r.output, "Pass --overwrite_cache true to rebuild it")) << r.output;
  EXPECT_FALSE(test::contains(r.output, "info: step ")) << r.output;  // refused before training

  r = test::run_zlora(f.train_args(f.dir / "o2", named + "--dataset gen --cutoff_len 64 --max_samples 10"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(test::contains(r.output,
                             "cutoff_len is 128 in the store but 64 in this run (flag --cutoff_len); "
                             "max_samples is unset in the store but 10 in this run (flag --max_samples)"))
      << r.output;

  r = test::run_zlora(f.train_args(f.dir / "o3", named + "--dataset gen --train_on_prompt true"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(test::contains(r.output, "train_on_prompt is false in the store but true in this run")) << r.output;

  // The same settings train on it.
  r = test::run_zlora(f.train_args(f.dir / "o4", named + "--dataset gen"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(test::contains(r.output, "token store")) << r.output;
  EXPECT_EQ(sha256_file(store.string()), sha) << "a refused or reused store must be left as it was";

  // --overwrite_cache true: rebuilt from this run's settings.
  r = test::run_zlora(f.train_args(f.dir / "o5", named + "--dataset other --overwrite_cache true"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(
      r.output, "rebuilding the token store " + store.string() + " from dataset other (overwrite_cache true)"))
      << r.output;
  const std::string i = info(store);
  EXPECT_TRUE(test::contains(i, "other: 12 rows")) << i;
  EXPECT_TRUE(test::contains(i, "made_by: zlora train")) << i;

  // A store `zlora prepare` wrote at the default path is not the run's own either.
  const auto out = f.dir / "o6";
  std::filesystem::create_directories(out);
  r = test::run_zlora(f.prepare_args(out / "tokenized.h5", ""));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_zlora(f.train_args(out, "--dataset other"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(test::contains(r.output, "It was made by `zlora prepare`, so zlora train does not replace it"))
      << r.output;
}

// Without --dataset a run trains on the store as it is (as LLaMA-Factory loads tokenized_path): only the
// data options it sets explicitly are compared, and a difference cannot be rebuilt, so it is refused.
TEST(TrainStore, WithoutDatasetOnlyTheOptionsTheRunSetsAreCompared) {
  Fixture f;
  const auto store = f.dir / "a.h5";
  auto r = test::run_zlora(f.prepare_args(store, ""));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // train_args sets --cutoff_len 128 (the store's) and --template qwen: both agree.
  r = test::run_zlora(f.train_args(f.dir / "o1", "--tokenized_path " + store.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_zlora(f.train_args(f.dir / "o2", "--tokenized_path " + store.string() + " --cutoff_len 256"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(test::contains(r.output,
                             "was made with other data settings than this run sets: cutoff_len is 128 in "
                             "the store but 256 in this run (flag --cutoff_len). Without --dataset it "
                             "cannot be rebuilt"))
      << r.output;
  r = test::run_zlora(f.train_args(f.dir / "o3", "--tokenized_path " + store.string() + " --overwrite_cache true"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(test::contains(r.output, "overwrite_cache is true but no --dataset is given to rebuild")) << r.output;
}

// Rank 0 decides once for every rank: a refusal is printed once and ends every rank; a rebuild runs on
// all ranks and they train on the same store.
TEST(TrainStore, RanksAgreeOnOneDecision) {
  Fixture f;
  const auto store = f.dir / "a.h5";
  auto r = test::run_zlora(f.prepare_args(store, ""));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string mpi = "mpiexec -n 2 --oversubscribe " + test::zlora_bin().string() + " ";
  r = test::run_command(mpi + f.train_args(f.dir / "o1", "--tokenized_path " + store.string() + " --dataset other"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::count_occurrences(r.output, "was made from other data settings than this run's"), 1u) << r.output;
  r = test::run_command(mpi + f.train_args(f.dir / "o2", "--dataset other"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "on 2 rank(s)")) << r.output;
  EXPECT_TRUE(test::contains(info(f.dir / "o2/tokenized.h5"), "other: 12 rows"));
}

}  // namespace
}  // namespace zlora::data
