// A token store's provenance (data/provenance.h): what a run's data settings describe, how they are
// compared with a store's, and what a difference says. The CLI's reuse/rebuild/refuse decision on top of
// it is tested end to end in tests/cli/test_train_store.cpp.
#include "test_data_util.h"

#include "zlora/core/sha256.h"
#include "zlora/data/dataset.h"
#include "zlora/data/provenance.h"

#include <chrono>
#include <thread>

namespace zlora::data {
namespace {

using test::TempDir;

config::DataArgs args_for(const TempDir& dir, std::vector<std::string> datasets = {"gen"}) {
  config::DataArgs a;
  a.dataset = std::move(datasets);
  a.dataset_dir = dir.path().string();
  a.template_name = "qwen";
  a.cutoff_len = 1024;
  return a;
}

// The provenance prepare records for `a` (as cmd_prepare builds it, tokenizer hashes aside).
StoreMeta made_from(const config::DataArgs& a) {
  StoreMeta m = describe_options(a);
  m.sources = load_datasets(a).sources;
  m.made_by = kMadeByPrepare;
  return m;
}

std::vector<std::string> fields(const std::vector<ProvenanceDiff>& diffs) {
  std::vector<std::string> out;
  for (const auto& d : diffs) out.push_back(d.field);
  return out;
}

// What a run describes without reading its data equals what loading the data records: an unchanged
// run finds no difference.
TEST(Provenance, DescribedRunEqualsWhatLoadingRecords) {
  TempDir dir;
  test::write_alpaca_dataset(dir.path(), 40);
  const config::DataArgs a = args_for(dir);
  const StoreMeta store = made_from(a);
  const StoreMeta run = describe_data(a, dir / "no-tokenizer");
  ASSERT_EQ(run.sources.size(), 1u);
  EXPECT_EQ(run.sources[0].name, "gen");
  EXPECT_EQ(run.sources[0].files, std::vector<std::string>{"gen.json"});
  EXPECT_EQ(run.sources[0].sha256s, store.sources[0].sha256s);
  EXPECT_EQ(run.sources[0].sha256s[0], sha256_file((dir / "gen.json").string()));
  EXPECT_EQ(run.sources[0].sizes, store.sources[0].sizes);
  EXPECT_EQ(run.sources[0].dataset_info, R"({"file_name":"gen.json"})");
  EXPECT_EQ(store.sources[0].rows, 40);
  EXPECT_TRUE(compare_provenance(store, run).empty()) << describe_diffs(compare_provenance(store, run));
  // A missing tokenizer is "not known for this run", not a difference.
  EXPECT_EQ(run.tokenizer_sha256, "");
}

// Each data option that changes the tokens is its own named difference, with both values.
TEST(Provenance, EveryDataOptionIsComparedAndNamed) {
  TempDir dir;
  test::write_alpaca_dataset(dir.path(), 40);
  const StoreMeta store = made_from(args_for(dir));
  config::DataArgs b = args_for(dir);
  b.template_name = "llama3";
  b.default_system = "你是甄嬛。";
  b.cutoff_len = 512;
  b.max_samples = 16;
  b.train_on_prompt = true;
  b.mask_history = true;
  const auto diffs = compare_provenance(store, describe_data(b, dir / "none"));
  EXPECT_EQ(fields(diffs), (std::vector<std::string>{"template", "default_system", "cutoff_len", "max_samples",
                                                     "train_on_prompt", "mask_history"}));
  const std::string text = describe_diffs(diffs, {{"cutoff_len", "flag --cutoff_len"}});
  EXPECT_TRUE(test::contains(text, "template is qwen in the store but llama3 in this run")) << text;
  EXPECT_TRUE(test::contains(text, "default_system is unset in the store but \"你是甄嬛。\" in this run")) << text;
  EXPECT_TRUE(test::contains(text, "cutoff_len is 1024 in the store but 512 in this run (flag --cutoff_len)")) << text;
  EXPECT_TRUE(test::contains(text, "max_samples is unset in the store but 16 in this run")) << text;
  EXPECT_TRUE(test::contains(text, "train_on_prompt is false in the store but true in this run")) << text;
  // The filter keeps only the options asked about.
  EXPECT_EQ(fields(compare_provenance(store, describe_data(b, dir / "none"), {"cutoff_len"})),
            std::vector<std::string>{"cutoff_len"});
  // An unknown template for the run (none given) is not a difference.
  config::DataArgs no_template = args_for(dir);
  no_template.template_name.reset();
  EXPECT_TRUE(compare_provenance(store, describe_data(no_template, dir / "none")).empty());
}

// Another dataset, another dataset_info.json entry for the same name, or other bytes in its file.
TEST(Provenance, DatasetsTheirEntriesAndTheirFilesAreCompared) {
  TempDir dir;
  test::write_alpaca_dataset(dir.path(), 40);
  test::write_file(dir / "other.json", test::alpaca_json(test::generated_alpaca_rows(8)));
  test::write_file(dir / "dataset_info.json",
                   R"({"gen": {"file_name": "gen.json"}, "other": {"file_name": "other.json"}})");
  const StoreMeta store = made_from(args_for(dir));

  auto diffs = compare_provenance(store, describe_data(args_for(dir, {"other"}), dir / "none"));
  ASSERT_EQ(fields(diffs), std::vector<std::string>{"dataset"});
  EXPECT_EQ(diffs[0].store_value, "gen");
  EXPECT_EQ(diffs[0].run_value, "other");
  diffs = compare_provenance(store, describe_data(args_for(dir, {"gen", "other"}), dir / "none"));
  ASSERT_EQ(fields(diffs), std::vector<std::string>{"dataset"});
  EXPECT_EQ(diffs[0].run_value, "gen,other");

  // The entry now maps columns differently: the same file gives other samples.
  test::write_file(dir / "dataset_info.json",
                   R"({"gen": {"file_name": "gen.json", "columns": {"prompt": "input", "response": "output"}}})");
  diffs = compare_provenance(store, describe_data(args_for(dir), dir / "none"));
  ASSERT_EQ(fields(diffs), std::vector<std::string>{"dataset 'gen': its dataset_info.json entry"});
  EXPECT_TRUE(test::contains(diffs[0].run_value, R"("columns":{"prompt":"input","response":"output"})"))
      << diffs[0].run_value;

  // The same size, other bytes: the hash tells.
  test::write_file(dir / "dataset_info.json", R"({"gen": {"file_name": "gen.json"}})");
  std::string body = test::read_file(dir / "gen.json");
  body[body.find("row 1)")] = 'R';
  test::write_file(dir / "gen.json", body);
  diffs = compare_provenance(store, describe_data(args_for(dir), dir / "none"));
  ASSERT_EQ(fields(diffs), std::vector<std::string>{"dataset 'gen': file gen.json"});
  EXPECT_TRUE(test::contains(diffs[0].store_value, store.sources[0].sha256s[0])) << diffs[0].store_value;
  EXPECT_TRUE(test::contains(diffs[0].run_value, sha256_file((dir / "gen.json").string()))) << diffs[0].run_value;

  // A folder of files: the file list is compared by the names the entry gives them.
  std::filesystem::create_directories(dir / "parts");
  test::write_file(dir / "parts/a.json", test::alpaca_json(test::generated_alpaca_rows(3)));
  test::write_file(dir / "dataset_info.json", R"({"gen": {"file_name": "parts"}})");
  const StoreMeta folder = made_from(args_for(dir));
  EXPECT_EQ(folder.sources[0].files, std::vector<std::string>{"parts/a.json"});
  test::write_file(dir / "parts/b.json", test::alpaca_json(test::generated_alpaca_rows(2)));
  diffs = compare_provenance(folder, describe_data(args_for(dir), dir / "none"));
  ASSERT_EQ(fields(diffs), std::vector<std::string>{"dataset 'gen': files"});
  EXPECT_EQ(diffs[0].store_value, "[parts/a.json]");
  EXPECT_EQ(diffs[0].run_value, "[parts/a.json, parts/b.json]");
}

// A file whose size and mtime equal the store's record keeps the store's hash unread (the check at every
// start must not re-hash gigabytes); a touched file is hashed again.
TEST(Provenance, UnchangedFilesAreNotRehashed) {
  TempDir dir;
  test::write_alpaca_dataset(dir.path(), 10);
  const config::DataArgs a = args_for(dir);
  StoreMeta store = made_from(a);
  store.sources[0].sha256s[0] = std::string(64, 'f');  // what the store says, not what the file holds
  EXPECT_EQ(describe_sources(a, &store)[0].sha256s[0], std::string(64, 'f'));
  EXPECT_NE(describe_sources(a, nullptr)[0].sha256s[0], std::string(64, 'f'));
  std::filesystem::last_write_time(dir / "gen.json",
                                   std::filesystem::last_write_time(dir / "gen.json") + std::chrono::seconds(5));
  EXPECT_EQ(describe_sources(a, &store)[0].sha256s[0], sha256_file((dir / "gen.json").string()));
}

// A format-1 store recorded no default_system, max_samples, tokenizer config or dataset entries: each is
// a difference "unknown" when compared, and a dataset named by the run too.
TEST(Provenance, FormatOneStoresHaveUnknownProvenance) {
  TempDir dir;
  test::write_alpaca_dataset(dir.path(), 10);
  StoreMeta old = made_from(args_for(dir));
  old.format_version = 1;
  test::write_file(dir / "tok/tokenizer.json", "{}");
  const StoreMeta run = describe_data(args_for(dir), dir / "tok");
  old.tokenizer_sha256 = run.tokenizer_sha256;
  const auto diffs = compare_provenance(old, run);
  EXPECT_EQ(fields(diffs), (std::vector<std::string>{"dataset", "default_system",
                                                     "tokenizer (tokenizer_config.json sha256)", "max_samples"}));
  for (const auto& d : diffs) EXPECT_TRUE(test::contains(d.store_value, "unknown (format-1 store")) << d.store_value;
  // Asked only about what a format-1 store did record, it can match.
  EXPECT_TRUE(compare_provenance(old, run, {"template", "cutoff_len", "tokenizer"}).size() == 1u);
  EXPECT_TRUE(compare_provenance(old, run, {"template", "cutoff_len"}).empty());
}

// The tokenizer's files are hashed as Tokenizer::load reads them: tokenizer.json and the
// tokenizer_config.json beside it, from a model directory or the file itself.
TEST(Provenance, TokenizerHashesCoverItsConfig) {
  TempDir dir;
  test::write_file(dir / "m/tokenizer.json", "{\"model\": {}}");
  StoreMeta m;
  describe_tokenizer(dir / "m", m);
  EXPECT_EQ(m.tokenizer_sha256, sha256_hex("{\"model\": {}}"));
  EXPECT_EQ(m.tokenizer_config_sha256, "");
  test::write_file(dir / "m/tokenizer_config.json", "{\"eos_token\": \"<|im_end|>\"}");
  describe_tokenizer(dir / "m/tokenizer.json", m);
  EXPECT_EQ(m.tokenizer_config_sha256, sha256_hex("{\"eos_token\": \"<|im_end|>\"}"));
  StoreMeta store = m;
  store.format_version = kTokenStoreFormatVersion;
  StoreMeta run = m;
  run.tokenizer_config_sha256 = "";
  const auto diffs = compare_provenance(store, run, {"tokenizer"});
  ASSERT_EQ(diffs.size(), 1u);
  EXPECT_EQ(diffs[0].field, "tokenizer (tokenizer_config.json sha256)");
  EXPECT_EQ(diffs[0].run_value, "none");
}

// Values read from files are quoted escaped: a dataset name or system prompt holding terminal escapes
// cannot reach the terminal through a difference.
TEST(Provenance, DifferencesQuoteFileContentsPrintably) {
  StoreMeta store, run;
  store.default_system = "a\x1b[2Jb";
  run.default_system = "ok";
  const std::string text = describe_diffs(compare_provenance(store, run, {"default_system"}));
  EXPECT_TRUE(test::contains(text, "\"a\\x1B[2Jb\"")) << text;
  EXPECT_FALSE(test::contains(text, "\x1b")) << text;
}

}  // namespace
}  // namespace zlora::data
