// `zlora prepare`, `info` and `tokenize` end to end against the node reference: LLaMA-Factory's qwen
// rendering of alpaca data re-implemented in JavaScript (tools/golden/tokenizer/reference.mjs) with
// @lenml/tokenizers' ids. Node or the reference missing is a failure, never a skip. The data are
// generated (test_data_util.h), except for one test of the seed's whole huanhuan.json, which is skipped
// when ../shared is absent.
#include "data_test_util.h"
#include "test_data_util.h"

#include <nlohmann/json.hpp>

namespace zlora::data {
namespace {

using nlohmann::json;
using test::TempDir;

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::string tokenizer_dir() { return test::qwen_tokenizer_json().parent_path().string(); }

// A dataset_dir holding dataset "hh": `n` generated rows.
std::filesystem::path generated_dir(const TempDir& dir, size_t n) {
  return test::write_alpaca_dataset(dir.path(), n, "hh");
}

// A dataset_dir holding dataset "hh": the seed's whole huanhuan.json (the caller skips without ../shared).
std::filesystem::path huanhuan_dir(const TempDir& dir) {
  test::write_file(dir / "hh.json", test::read_file(test::shared_dir() / "data/huanhuan.json"));
  test::write_file(dir / "dataset_info.json", R"({"hh": {"file_name": "hh.json"}})");
  return dir / "hh.json";
}

std::string prepare_args(const TempDir& dir, const std::string& out, int cutoff) {
  return "prepare --dataset hh --dataset_dir " + dir.path().string() + " --template qwen --tokenizer " +
         tokenizer_dir() + " --cutoff_len " + std::to_string(cutoff) + " --output " + (dir / out).string();
}

// Prepares dataset "hh" of `dir` (`n` rows; 0: the count is not checked) and compares every sample with
// the node reference.
void expect_store_equals_reference(const TempDir& dir, const std::filesystem::path& data, size_t n, int cutoff) {
  auto r = test::run_zlora(prepare_args(dir, "s.h5", cutoff));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto info = test::run_zlora("info " + (dir / "s.h5").string() + " --samples 0: --json");
  ASSERT_EQ(info.exit_code, 0) << info.output.substr(0, 2000);
  std::vector<json> got = json_lines(info.output);
  std::vector<json> want =
      json_lines(test::run_node("sft_reference.mjs " + data.string() + " " + std::to_string(cutoff)));
  ASSERT_EQ(got.size(), want.size());
  if (n) {
    EXPECT_EQ(got.size(), n);
  }
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ < 3)
      ADD_FAILURE() << "sample " << i << "\n got: " << got[i] << "\nwant: " << want[i];
  EXPECT_EQ(bad, 0u);
}

TEST(DataCli, Prepare64SamplesEqualsNodeReference) {
  TempDir dir;
  expect_store_equals_reference(dir, generated_dir(dir, 64), 64, 1024);
}

// The seed's own dataset, all 3,600-odd rows of real Chinese dialogue: more of the tokenizer's and the
// template's cases than the generated rows hold.
TEST(DataCli, PrepareWholeHuanhuanEqualsNodeReference) {
  ZLORA_SKIP_WITHOUT_SHARED("data/huanhuan.json",
                            "this test compares zlora with the reference on the seed's own "
                            "dataset; the other DataCli tests cover generated data");
  TempDir dir;
  expect_store_equals_reference(dir, huanhuan_dir(dir), 0, 2048);
}

TEST(DataCli, ShortCutoffTruncatesLikeLlamaFactory) {
  TempDir dir;
  expect_store_equals_reference(dir, generated_dir(dir, 200), 200, 48);
}

TEST(DataCli, TwoRanksWriteTheSameStoreAsOne) {
  TempDir dir;
  generated_dir(dir, 300);
  auto one = test::run_zlora(prepare_args(dir, "one.h5", 1024));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto two = test::run_command("mpiexec -n 2 --oversubscribe " + test::zlora_bin().string() + " " +
                               prepare_args(dir, "two.h5", 1024));
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_NE(two.output.find("on 2 rank(s)"), std::string::npos) << two.output;
  auto a = test::run_zlora("info " + (dir / "one.h5").string() + " --samples 0: --json");
  auto b = test::run_zlora("info " + (dir / "two.h5").string() + " --samples 0: --json");
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_EQ(json_lines(a.output).size(), 300u);
  EXPECT_EQ(a.output, b.output);
  // Same attributes too (the first line names the file).
  auto ia = test::run_zlora("info " + (dir / "one.h5").string()),
       ib = test::run_zlora("info " + (dir / "two.h5").string());
  EXPECT_EQ(ia.output.substr(ia.output.find('\n')), ib.output.substr(ib.output.find('\n')));
}

TEST(DataCli, TokenizeAndDecodeMatchReference) {
  TempDir dir;
  std::string in;
  std::vector<json> cases;
  std::istringstream golden(test::read_file(test::source_dir() / "tests/golden/tokenizer/qwen_cases.jsonl"));
  for (std::string line; std::getline(golden, line);)
    if (!line.empty()) {
      cases.push_back(json::parse(line));
      in += cases.back()["text"].dump() + "\n";
    }
  test::write_file(dir / "in.jsonl", in);
  auto r = test::run_zlora("tokenize --tokenizer " + tokenizer_dir() + " < " + (dir / "in.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 1000);
  auto got = json_lines(r.output);
  // The node side re-encodes now (not just the committed goldens) so a changed reference is noticed.
  auto want = json_lines(test::run_node("encode_jsonl.mjs", (dir / "in.jsonl").string()));
  ASSERT_EQ(got.size(), cases.size());
  ASSERT_EQ(want.size(), cases.size());
  std::string ids;
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << cases[i]["name"];
    EXPECT_EQ(got[i], cases[i]["ids"]) << cases[i]["name"];
    ids += got[i].dump() + "\n";
  }
  test::write_file(dir / "ids.jsonl", ids);
  r = test::run_zlora("tokenize --decode --tokenizer " + tokenizer_dir() + " < " + (dir / "ids.jsonl").string());
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 1000);
  auto texts = json_lines(r.output);
  ASSERT_EQ(texts.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(texts[i], cases[i]["decoded"]) << cases[i]["name"];
}

TEST(DataCli, EmbeddedDemoDatasetPrepares) {
  TempDir dir;
  auto r = test::run_zlora("prepare --dataset demo_identity --dataset_dir " +
                           (test::source_dir() / "configs/demo-data").string() + " --template qwen --tokenizer " +
                           tokenizer_dir() + " --cutoff_len 512 --output " + (dir / "demo.h5").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("40 kept, 0 dropped"), std::string::npos) << r.output;
  auto info = test::run_zlora("info " + (dir / "demo.h5").string() + " --samples 0:1 --json");
  ASSERT_EQ(info.exit_code, 0) << info.output;
  json first = json::parse(info.output);
  // Decoding the first sample gives back the qwen rendering of the first demo row.
  std::vector<int32_t> ids = first["input_ids"];
  EXPECT_EQ(test::qwen_tokenizer().decode(ids),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nI am zlora demo assistant, a small "
            "model fine-tuned with zlora to show how LoRA training works on a cluster.<|im_end|>\n");
}

TEST(DataCli, Errors) {
  TempDir dir;
  generated_dir(dir, 4);
  auto r = test::run_zlora("prepare --dataset identity --dataset_dir " + dir.path().string() +
                           " --template qwen --tokenizer " + tokenizer_dir() + " --output " + (dir / "x.h5").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("undefined dataset 'identity' in " + (dir / "dataset_info.json").string()), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("defined: hh"), std::string::npos) << r.output;
  r = test::run_zlora(prepare_args(dir, "x.h5", 1024));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_zlora(prepare_args(dir, "x.h5", 1024));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("already exists; pass --overwrite true"), std::string::npos) << r.output;
  r = test::run_zlora(prepare_args(dir, "missing/x.h5", 1024));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("the folder of --output " + (dir / "missing/x.h5").string() + " does not exist"),
            std::string::npos)
      << r.output;
  r = test::run_zlora("info " + (dir / "hh.json").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not an HDF5 file"), std::string::npos) << r.output;
  r = test::run_zlora("info " + (dir / "x.h5").string() + " --samples 5-9 --json");
  EXPECT_NE(r.output.find("is not a range A:B"), std::string::npos) << r.output;
  test::write_file(dir / "bad.jsonl", "\"ok\"\n[1, 2]\n");
  r = test::run_zlora("tokenize --tokenizer " + tokenizer_dir() + " < " + (dir / "bad.jsonl").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("stdin line 2: expected a JSON string"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace zlora::data
