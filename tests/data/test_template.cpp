// Templates and sample construction against LLaMA-Factory's documented behaviour (its own test vectors
// for infer_seqlen and the qwen2.5 template), and the dataset registry's conversions and errors.
#include "data_test_util.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"
#include "zlora/data/dataset.h"
#include "zlora/data/template.h"

#include <functional>

namespace zlora::data {
namespace {

using test::TempDir;
using test::write_file;

std::vector<int32_t> cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_HAS(haystack, needle) EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

TEST(Template, InferSeqlenMatchesLlamaFactoryVectors) {
  // tests/data/processor/test_processor_utils.py
  EXPECT_EQ(infer_seqlen(3000, 2000, 1000), (std::pair<int64_t, int64_t>{600, 400}));
  EXPECT_EQ(infer_seqlen(2000, 3000, 1000), (std::pair<int64_t, int64_t>{400, 600}));
  EXPECT_EQ(infer_seqlen(1000, 100, 1000), (std::pair<int64_t, int64_t>{900, 100}));
  EXPECT_EQ(infer_seqlen(100, 1000, 1000), (std::pair<int64_t, int64_t>{100, 900}));
}

TEST(Template, QwenFirstTurnIsLlamaFactorysFormat) {
  const Tokenizer& tok = test::qwen_tokenizer();
  ChatTemplate t(find_template("qwen"), tok);
  Conversation c{"",
                 {{Role::User, "How are you"},
                  {Role::Assistant, "I am fine!"},
                  {Role::User, "你好"},
                  {Role::Assistant, "很高兴认识你！"}}};
  BpeCache cache;
  auto pairs = t.encode_multiturn(c, cache);
  ASSERT_EQ(pairs.size(), 2u);
  // tests/data/test_template.py::test_qwen2_5_template
  EXPECT_EQ(pairs[0].first,
            tok.encode("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                       "assistant.<|im_end|>\n<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\n"));
  EXPECT_EQ(pairs[0].second, tok.encode("I am fine!<|im_end|>\n"));
  EXPECT_EQ(pairs[1].first, tok.encode("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"));
  EXPECT_EQ(pairs[1].second, tok.encode("很高兴认识你！<|im_end|>\n"));

  Sample s = t.build_sample(c, SampleOptions{}, cache);
  std::vector<int32_t> masked0(pairs[0].first.size(), kIgnoreIndex), masked1(pairs[1].first.size(), kIgnoreIndex);
  EXPECT_EQ(s.input_ids, cat(cat(cat(pairs[0].first, pairs[0].second), pairs[1].first), pairs[1].second));
  EXPECT_EQ(s.labels, cat(cat(cat(masked0, pairs[0].second), masked1), pairs[1].second));

  SampleOptions on_prompt;
  on_prompt.train_on_prompt = true;
  EXPECT_EQ(t.build_sample(c, on_prompt, cache).labels, s.input_ids);

  SampleOptions history;
  history.mask_history = true;
  std::vector<int32_t> masked_t0(pairs[0].second.size(), kIgnoreIndex);
  EXPECT_EQ(t.build_sample(c, history, cache).labels, cat(cat(cat(masked0, masked_t0), masked1), pairs[1].second));

  // A data-supplied system prompt replaces the default; --default_system too.
  Conversation own{"Be brief.", {{Role::User, "hi"}, {Role::Assistant, "ok"}}};
  EXPECT_EQ(
      t.encode_multiturn(own, cache)[0].first,
      tok.encode("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
  ChatTemplate no_system(find_template("qwen"), tok, std::string());
  Conversation plain{"", {{Role::User, "hi"}, {Role::Assistant, "ok"}}};
  EXPECT_EQ(no_system.encode_multiturn(plain, cache)[0].first,
            tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
}

TEST(Template, TruncationFollowsInferSeqlenPerTurn) {
  const Tokenizer& tok = test::qwen_tokenizer();
  ChatTemplate t(find_template("qwen"), tok);
  std::string long_answer(3000, 'x');
  for (int i = 0; i < 500; ++i) long_answer += " word";
  Conversation c{"", {{Role::User, "q1"}, {Role::Assistant, long_answer}, {Role::User, "q2"}, {Role::Assistant, "a2"}}};
  BpeCache cache;
  auto pairs = t.encode_multiturn(c, cache);
  SampleOptions opt;
  opt.cutoff_len = 100;
  Sample s = t.build_sample(c, opt, cache);
  auto [sl, tl] = infer_seqlen(int64_t(pairs[0].first.size()), int64_t(pairs[0].second.size()), 100);
  ASSERT_EQ(sl + tl, 100);  // the first turn uses the whole budget, the second is dropped
  EXPECT_EQ(s.input_ids.size(), 100u);
  EXPECT_EQ(std::vector<int32_t>(s.input_ids.begin(), s.input_ids.begin() + sl),
            std::vector<int32_t>(pairs[0].first.begin(), pairs[0].first.begin() + sl));
  EXPECT_EQ(std::vector<int32_t>(s.input_ids.begin() + sl, s.input_ids.end()),
            std::vector<int32_t>(pairs[0].second.begin(), pairs[0].second.begin() + tl));
  // mask_history gives the last turn the budget first and keeps it whole here.
  opt.mask_history = true;
  Sample h = t.build_sample(c, opt, cache);
  EXPECT_EQ(
      std::vector<int32_t>(h.input_ids.end() - long(pairs[1].first.size() + pairs[1].second.size()), h.input_ids.end()),
      cat(pairs[1].first, pairs[1].second));
  EXPECT_EQ(h.input_ids.size(), 100u);
}

TEST(Template, DefaultAndAlpacaTokenizeEachElementSeparately) {
  const Tokenizer& tok = test::qwen_tokenizer();
  int32_t eos = *tok.token_to_id("<|im_end|>");  // tokenizer_config.json's eos_token (not replaced)
  BpeCache cache;
  Conversation c{"", {{Role::User, "hi"}, {Role::Assistant, "yo"}}};
  ChatTemplate d(find_template("default"), tok);
  auto p = d.encode_multiturn(c, cache);
  EXPECT_EQ(p[0].first, cat(cat(tok.encode("Human: hi"), {eos}), tok.encode("\nAssistant:")));
  EXPECT_EQ(p[0].second, cat(cat(tok.encode("yo"), {eos}), tok.encode("\n")));
  ChatTemplate a(find_template("alpaca"), tok);
  p = a.encode_multiturn(c, cache);
  EXPECT_EQ(p[0].first, cat(tok.encode("Below is an instruction that describes a task. Write a response that "
                                       "appropriately completes the request.\n\n"),
                            tok.encode("### Instruction:\nhi\n\n### Response:\n")));
  EXPECT_EQ(p[0].second, cat(cat(tok.encode("yo"), {eos}), tok.encode("\n\n")));
  ChatTemplate e(find_template("empty"), tok);
  p = e.encode_multiturn(c, cache);
  EXPECT_EQ(p[0].first, tok.encode("hi"));
  EXPECT_EQ(p[0].second, tok.encode("yo"));
  ChatTemplate chatml(find_template("chatml"), tok);
  EXPECT_EQ(chatml.encode_multiturn(c, cache)[0].first,
            tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
}

TEST(Template, Errors) {
  const Tokenizer& tok = test::qwen_tokenizer();
  EXPECT_HAS(error_of([] { find_template("qwenn"); }), "template 'qwenn' does not exist, did you mean 'qwen'?");
  EXPECT_HAS(error_of([] { find_template("nope"); }), "valid: qwen, chatml, llama3, default, alpaca, empty");
  EXPECT_HAS(error_of([&] { ChatTemplate(find_template("llama3"), tok); }), "stop word '<|eot_id|>' is not a token");
}

// ---------------------------------------------------------------------------------------------------
// Registry

config::DataArgs args_for(const TempDir& dir, const std::string& datasets) {
  config::DataArgs a;
  a.dataset_dir = dir.path().string();
  a.dataset = text::split(datasets, ',');
  return a;
}

TEST(Registry, AlpacaJsonAndJsonlWithColumnsAndMaxSamples) {
  TempDir dir;
  write_file(dir / "dataset_info.json", R"({
    "a": {"file_name": "a.json"},
    "b": {"file_name": "b.jsonl", "columns": {"prompt": "q", "response": "r", "system": "sys", "history": "h"}}
  })");
  write_file(dir / "a.json", R"([{"instruction": "I1", "input": "in1", "output": "O1"},
                                 {"instruction": "I2", "input": "", "output": "O2"},
                                 {"instruction": "I3", "output": "O3"}])");
  write_file(
      dir / "b.jsonl",
      "{\"q\": \"Q\", \"r\": \"R\", \"sys\": \"S\", \"h\": [[\"h1\", \"a1\"]]}\n\n{\"q\": \"Q2\", \"r\": \"R2\"}\n");
  auto args = args_for(dir, "a,b");
  LoadedData d = load_datasets(args);
  ASSERT_EQ(d.rows.size(), 5u);
  EXPECT_EQ(d.rows[0].messages[0].content, "I1\nin1");
  EXPECT_EQ(d.rows[1].messages[0].content, "I2");
  EXPECT_EQ(d.rows[3].system, "S");
  ASSERT_EQ(d.rows[3].messages.size(), 4u);
  EXPECT_EQ(d.rows[3].messages[0].content, "h1");
  EXPECT_EQ(d.rows[3].messages[1].role, Role::Assistant);
  EXPECT_EQ(d.rows[3].messages[3].content, "R");
  ASSERT_EQ(d.sources.size(), 2u);
  EXPECT_EQ(d.sources[0].sha256s[0].size(), 64u);
  args.max_samples = 2;
  d = load_datasets(args);
  EXPECT_EQ(d.rows.size(), 4u);
  EXPECT_EQ(d.sources[0].rows, 2);
}

TEST(Registry, SharegptTagsSystemAndAbnormalRows) {
  TempDir dir;
  write_file(dir / "dataset_info.json", R"({
    "s": {"file_name": "s.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
          "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                   "system_tag": "system"}},
    "g": {"file_name": "g.json", "formatting": "sharegpt"}
  })");
  write_file(dir / "s.json", R"([
    {"messages": [{"role": "system", "content": "SYS"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
                  {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]},
    {"messages": [{"role": "assistant", "content": "wrong order"}, {"role": "user", "content": "x"}]},
    {"messages": [{"role": "user", "content": "odd count"}]}
  ])");
  write_file(dir / "g.json",
             R"([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}])");
  LoadedData d = load_datasets(args_for(dir, "s,g"));
  ASSERT_EQ(d.rows.size(), 2u);
  EXPECT_EQ(d.rows[0].system, "SYS");
  EXPECT_EQ(d.rows[0].messages.size(), 4u);
  EXPECT_EQ(d.rows[1].messages[1].content, "yo");
  EXPECT_EQ(d.sources[0].invalid, 2);
  EXPECT_EQ(d.sources[0].rows, 3);
}

TEST(Registry, Errors) {
  TempDir dir;
  write_file(dir / "dataset_info.json", R"({"identity": {"file_name": "id.json"}, "bad": {"file_name": "bad.json"},
    "cols": {"file_name": "id.json", "columns": {"prompt": "question"}}, "none": {"file_name": "none.json"},
    "gone": {"file_name": "gone.json"}, "csv": {"file_name": "x.csv"}})");
  write_file(dir / "id.json", R"([{"instruction": "hi", "output": "yo"}])");
  write_file(dir / "bad.json", "[\n  {\"instruction\": \"hi\",\n   \"output\": \"yo\" \"x\"}\n]");
  write_file(dir / "none.json", R"([{"instruction": "hi", "output": null}])");
  write_file(dir / "x.csv", "a,b\n");
  std::string e = error_of([&] { load_datasets(args_for(dir, "identiy")); });
  EXPECT_HAS(e, "undefined dataset 'identiy'");
  EXPECT_HAS(e, (dir / "dataset_info.json").string());
  EXPECT_HAS(e, "defined: bad, cols, csv, gone, identity, none");
  EXPECT_HAS(e, "did you mean 'identity'?");
  e = error_of([&] { load_datasets(args_for(dir, "bad")); });
  EXPECT_HAS(e, (dir / "bad.json").string() + ":3:");
  EXPECT_HAS(e, "malformed JSON");
  e = error_of([&] { load_datasets(args_for(dir, "cols")); });
  EXPECT_HAS(e, "column 'question' (prompt) is missing");
  EXPECT_HAS(e, "mapping in use: alpaca {prompt=question, query=input, response=output}");
  e = error_of([&] { load_datasets(args_for(dir, "none")); });
  EXPECT_HAS(e, "cannot find valid samples");
  EXPECT_HAS(error_of([&] { load_datasets(args_for(dir, "gone")); }), "gone.json not found");
  EXPECT_HAS(error_of([&] { load_datasets(args_for(dir, "csv")); }), "allowed file types: json, jsonl");
  // Names read from dataset_info.json and from the data are quoted escaped.
  write_file(dir / "dataset_info.json", R"({"esc\u001b[2J": {"file_name": "id.json", "formatting": "alpaca\u0007"},)"
                                        R"( "cols2": {"file_name": "id.json", "columns": {"prompt": "q\u009b"}}})");
  e = error_of([&] { load_datasets(args_for(dir, "esc\x1b[2J")); });
  EXPECT_HAS(e, "dataset 'esc\\x1B[2J': formatting 'alpaca\\x07' is not supported");
  EXPECT_EQ(e.find('\x1b'), std::string::npos) << e;
  write_file(dir / "dataset_info.json", R"({"cols2": {"file_name": "id.json", "columns": {"prompt": "q\u009b"}}})");
  e = error_of([&] { load_datasets(args_for(dir, "cols2")); });
  EXPECT_HAS(e, "column 'q\\u{009B}' (prompt) is missing");
  EXPECT_HAS(e, "mapping in use: alpaca {prompt=q\\u{009B}");
  TempDir empty;
  EXPECT_HAS(error_of([&] { load_datasets(args_for(empty, "x")); }), "dataset_info.json: no such file");
  write_file(empty / "dataset_info.json", "{\"x\": {\"file_name\": \"x.json\"},\n \"y\": }");
  EXPECT_HAS(error_of([&] { load_datasets(args_for(empty, "x")); }), "dataset_info.json:2:");
}

// LLaMA-Factory's own data/dataset_info.json defines hub datasets, preference sets, the openai
// formatting and tools columns beside local alpaca files: a run that names only the local ones reads
// them; naming one of the others is an error about that entry alone.
TEST(Registry, OnlyTheNamedDatasetsAreValidated) {
  TempDir dir;
  write_file(dir / "dataset_info.json", R"({
    "identity": {"file_name": "id.json"},
    "alpaca_en": {"hf_hub_url": "llamafactory/alpaca_en"},
    "glaive_toolcall_en_demo": {"file_name": "glaive.json", "formatting": "openai",
                                "columns": {"messages": "messages", "tools": "tools"}},
    "dpo_en_demo": {"file_name": "dpo.json", "ranking": true, "formatting": "sharegpt"},
    "broken": 42})");
  write_file(dir / "id.json", R"([{"instruction": "hi", "output": "yo"}])");
  LoadedData d = load_datasets(args_for(dir, "identity"));
  ASSERT_EQ(d.rows.size(), 1u);
  EXPECT_EQ(d.sources[0].name, "identity");
  EXPECT_EQ(describe_sources(args_for(dir, "identity"), nullptr).size(), 1u);
  std::string e = error_of([&] { load_datasets(args_for(dir, "identity,alpaca_en")); });
  EXPECT_HAS(e, "dataset 'alpaca_en': 'hf_hub_url' sources (downloaded from a hub) are a LLaMA-Factory feature");
  e = error_of([&] { load_datasets(args_for(dir, "glaive_toolcall_en_demo")); });
  EXPECT_HAS(e, "formatting 'openai' is not supported (supported: alpaca, sharegpt)");
  EXPECT_HAS(error_of([&] { load_datasets(args_for(dir, "dpo_en_demo")); }), "ranking datasets are for preference");
  EXPECT_HAS(error_of([&] { load_datasets(args_for(dir, "broken")); }), "dataset 'broken': entry must be an object");
  // The list of defined names still includes every entry.
  EXPECT_HAS(error_of([&] { load_datasets(args_for(dir, "identiti")); }),
             "defined: alpaca_en, broken, dpo_en_demo, glaive_toolcall_en_demo, identity");
}

}  // namespace
}  // namespace zlora::data
