// Templates and sample construction against LLaMA-Factory's documented behaviour (its own test vectors
// for infer_seqlen and tests/data/test_template.py's renderings), every built-in template rendered by
// hand from data/template.py, and the dataset registry's conversions and errors.
#include "data_test_util.h"
#include "test_data_util.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"
#include "zlora/data/dataset.h"
#include "zlora/data/template.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <set>

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
// Every template, as text. LLaMA-Factory's line numbers are of src/llamafactory/data/template.py at
// hiyouga/LLaMA-Factory ff6d4d12 (Template._encode at 131, Llama2Template._encode at 384,
// ReasoningTemplate.encode_multiturn at 482; register_template defaults at 577-605).

// tests/data/test_template.py's MESSAGES and MESSAGES_WITH_THOUGHT.
Conversation lf_messages(std::string system = "") {
  return {std::move(system),
          {{Role::User, "How are you"},
           {Role::Assistant, "I am fine!"},
           {Role::User, "你好"},
           {Role::Assistant, "很高兴认识你！"}}};
}
Conversation lf_messages_with_thought() {
  return {"",
          {{Role::User, "How are you"},
           {Role::Assistant, "<think>\nModel thought here\n</think>\n\nI am fine!"},
           {Role::User, "你好"},
           {Role::Assistant, "<think>\n模型思考内容\n</think>\n\n很高兴认识你！"}}};
}

// The conversation every template is rendered with: a system prompt and two turns.
Conversation two_turns() {
  return {"SYS", {{Role::User, "Q1"}, {Role::Assistant, "A1"}, {Role::User, "Q2"}, {Role::Assistant, "A2"}}};
}

const TextTokens kSentencePiece{"<s>", "</s>"};  // bos/eos the table below renders with

// render_text(two_turns()) per template, derived by hand from the register_template call named (bos
// "<s>", eos "</s>" unless replace_eos makes it stop_words[0]). Plain templates: turn 0 = prefix +
// system slot + user slot (_encode 131-152). Llama2 ones: the system slot's text + the first user
// message inside the user slot (384-405). Reasoning ones: "<think>\n\n</think>\n\n" (thought_words
// joined, add_thought 101) opens every answer that has no thought (encode_multiturn 505-513).
const std::string kChatml =
    "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
    "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n";
const std::string kChatmlThink =
    "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    "A1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n";
const std::string kGemma =
    "<s><start_of_turn>user\nSYS\n\nQ1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
    "<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\nA2<end_of_turn>\n";
const std::string kLlama2 = "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nQ1 [/INST]A1</s><s>[INST] Q2 [/INST]A2</s>";
const std::string kGlm4Think =
    "[gMASK]<sop><|system|>\nSYS<|user|>\nQ1<|assistant|><think>\n\n</think>\n\n\nA1<|user|>\nQ2<|assistant|>"
    "<think>\n\n</think>\n\n\nA2";
const std::string kGranite =
    "<|start_of_role|>system<|end_of_role|>SYS<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Q1<|end_of_text|>\n"
    "<|start_of_role|>assistant<|end_of_role|>A1<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Q2<|end_of_text|>"
    "\n<|start_of_role|>assistant<|end_of_role|>A2<|end_of_text|>\n";
const std::string kGptOssThought = "<|channel|>analysis<|message|><|end|><|start|>assistant<|channel|>final<|message|>";

const std::map<std::string, std::string>& expected_renderings() {
  static const std::map<std::string, std::string> m = {
      {"qwen", kChatml},             // 2042: system "SYS" replaces the default
      {"chatml", kChatml},           // 779
      {"chatml_de", kChatml},        // 792
      {"qwen3_nothink", kChatml},    // 2076
      {"yi", kChatml},               // 2393
      {"smollm", kChatml},           // 2313
      {"smollm2", kChatml},          // 2322
      {"lfm2", kChatml},             // 1423
      {"intern2", "<s>" + kChatml},  // 1348: prefix bos
      {"qwen3", kChatmlThink},       // 2059, ReasoningTemplate
      {"mimo", kChatmlThink},        // 1737, ReasoningTemplate
      {"llama3",                     // 1482
       "<s><|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
       "Q1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|><|start_header_id|>user"
       "<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>"},
      {"llama4",  // 1510
       "<s><|header_start|>system<|header_end|>\n\nSYS<|eot|><|header_start|>user<|header_end|>\n\nQ1<|eot|>"
       "<|header_start|>assistant<|header_end|>\n\nA1<|eot|><|header_start|>user<|header_end|>\n\nQ2<|eot|>"
       "<|header_start|>assistant<|header_end|>\n\nA2<|eot|>"},
      {"default", "System: SYS</s>\nHuman: Q1</s>\nAssistant:A1</s>\nHuman: Q2</s>\nAssistant:A2</s>\n"},  // 910
      {"alpaca",  // 717: system slot is the bare default formatter
       "SYS### Instruction:\nQ1\n\n### Response:\nA1</s>\n\n### Instruction:\nQ2\n\n### Response:\nA2</s>\n\n"},
      {"empty", "SYSQ1A1Q2A2"},  // 936
      {"llama2", kLlama2},       // 1464, Llama2Template: bos is inside the user slot
      {"llama2_zh", kLlama2},    // 1473
      {"mistral", "<s>[INST] SYS\n\nQ1[/INST] A1</s>[INST] Q2[/INST] A2</s>"},  // 1878, Llama2Template
      {"ministral", "<s>[INST]SYS\n\nQ1[/INST]A1</s>[INST]Q2[/INST]A2</s>"},    // 1865, Llama2Template
      {"mistral_small",  // 1892: a plain Template, the system prompt is its own block
       "<s>[SYSTEM_PROMPT]SYS[/SYSTEM_PROMPT][INST]Q1[/INST]A1</s>[INST]Q2[/INST]A2</s>"},
      {"gemma", kGemma},   // 1013, Llama2Template
      {"gemma2", kGemma},  // 1029: efficient_eos adds its one eos in build_sample, not here
      {"gemma3", kGemma},  // 1045
      {"deepseek", "<s>SYS\n\nUser: Q1\n\nAssistant:A1</s>User: Q2\n\nAssistant:A2</s>"},         // 859
      {"deepseek3", "<s>SYS<｜User｜>Q1<｜Assistant｜>A1</s><｜User｜>Q2<｜Assistant｜>A2</s>"},  // 867
      {"deepseekr1",  // 875, ReasoningTemplate
       "<s>SYS<｜User｜>Q1<｜Assistant｜><think>\n\n</think>\n\nA1</s><｜User｜>Q2<｜Assistant｜><think>\n\n</"
       "think>\n\n"
       "A2</s>"},
      {"deepseekcoder",  // 896
       "<s>SYS### Instruction:\nQ1\n### Response:\nA1\n<|EOT|>\n### Instruction:\nQ2\n### Response:\nA2\n<|EOT|>\n"},
      {"phi",  // 1983
       "<|system|>\nSYS<|end|>\n<|user|>\nQ1<|end|>\n<|assistant|>\nA1<|end|>\n<|user|>\nQ2<|end|>\n<|assistant|>\n"
       "A2<|end|>\n"},
      {"phi4",  // 2004
       "<|im_start|>system<|im_sep|>SYS<|im_end|><|im_start|>user<|im_sep|>Q1<|im_end|><|im_start|>assistant<|im_sep|>"
       "A1<|im_end|><|im_start|>user<|im_sep|>Q2<|im_end|><|im_start|>assistant<|im_sep|>A2<|im_end|>"},
      {"phi4_mini",
       "<|system|>SYS<|end|><|user|>Q1<|end|><|assistant|>A1<|end|><|user|>Q2<|end|><|assistant|>A2<|end|>"},
      {"glm4", "[gMASK]<sop><|system|>\nSYS<|user|>\nQ1<|assistant|>\nA1<|user|>\nQ2<|assistant|>\nA2"},  // 1128
      {"glm4_moe", kGlm4Think},  // 1143, ReasoningTemplate
      {"glmz1", kGlm4Think},     // 1226, ReasoningTemplate
      {"glm4_7",                 // 1209, Glm47ReasoningTemplate.add_thought (468): "" -> thought_words[1]
       "[gMASK]<sop><|system|>\nSYS<|user|>\nQ1<|assistant|></think>\nA1<|user|>\nQ2<|assistant|></think>\nA2"},
      {"vicuna", "SYSUSER: Q1 ASSISTANT:A1</s>USER: Q2 ASSISTANT:A2</s>"},  // 2359
      {"zephyr",
       "<|system|>\nSYS</s><|user|>\nQ1</s><|assistant|>\nA1</s><|user|>\nQ2</s><|assistant|>\nA2</s>"},  // 2455
      {"cohere",                                                                                          // 805
       "<s><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>SYS<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Q1"
       "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>A1</s><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Q2"
       "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>A2</s>"},
      {"ernie_nothink",  // 954
       "<|begin_of_sentence|>SYS\nUser: Q1\nAssistant: A1<|end_of_sentence|>User: Q2\nAssistant: "
       "A2<|end_of_sentence|>"},
      {"exaone",
       "[|system|]SYS[|endofturn|]\n[|user|]Q1\n[|assistant|]A1</s>\n[|user|]Q2\n[|assistant|]A2</s>\n"},  // 977
      {"falcon", "SYSUser: Q1\nFalcon:A1\nUser: Q2\nFalcon:A2\n"},  // 985, efficient_eos
      {"gpt_oss",                                                   // 1241, ReasoningTemplate, own thought_words
       "<|start|>system<|message|>SYS<|end|><|start|>user<|message|>Q1<|end|><|start|>assistant" + kGptOssThought +
           "A1<|start|>user<|message|>Q2<|end|><|start|>assistant" + kGptOssThought + "A2"},
      {"granite3", kGranite},                                                                 // 1253
      {"granite4", kGranite},                                                                 // 1277
      {"olmo", "</s>SYS<|user|>\nQ1<|assistant|>\nA1</s><|user|>\nQ2<|assistant|>\nA2</s>"},  // 1917: prefix eos
      {"openchat",                                                                            // 1924
       "<s>SYSGPT4 Correct User: Q1</s>GPT4 Correct Assistant:A1</s>GPT4 Correct User: Q2</s>GPT4 Correct Assistant:A2"
       "</s>"},
      {"seed_coder",
       "<s>system\nSYS</s><s>user\nQ1</s><s>assistant\nA1</s><s>user\nQ2</s><s>assistant\nA2</s>"},             // 2285
      {"solar", "### System:\nSYS\n\n### User:\nQ1\n\n### Assistant:\nA1### User:\nQ2\n\n### Assistant:\nA2"},  // 2332
      {"starchat",                                                                                              // 2340
       "<|system|>\nSYS<|end|>\n<|user|>\nQ1<|end|>\n<|assistant|>A1<|end|>\n<|user|>\nQ2<|end|>\n<|assistant|>A2<|end|"
       ">"
       "\n"},
  };
  return m;
}

TEST(Template, EveryTemplateRendersAsDerivedFromLlamaFactory) {
  const auto& expected = expected_renderings();
  std::set<std::string> seen;
  for (const TemplateSpec& t : builtin_templates()) {
    seen.insert(t.name);
    auto it = expected.find(t.name);
    ASSERT_NE(it, expected.end()) << "template '" << t.name << "' has no expected rendering in this test";
    EXPECT_EQ(render_text(t, two_turns(), kSentencePiece), it->second) << "template " << t.name;
  }
  EXPECT_EQ(seen.size(), expected.size());
  EXPECT_GE(builtin_templates().size(), 20u);
  for (const char* name : {"qwen3", "qwen3_nothink", "llama2", "mistral", "gemma", "gemma2", "gemma3", "deepseek3",
                           "phi4", "glm4", "yi", "vicuna", "zephyr"})
    EXPECT_TRUE(seen.count(name)) << name;
}

TEST(Template, PairsSplitAtEachAnswer) {
  // Llama2-style: the second user turn has no system; the first source holds it.
  auto p = render_multiturn(find_template("llama2"), two_turns(), kSentencePiece);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].first, "<s>[INST] <<SYS>>\nSYS\n<</SYS>>\n\nQ1 [/INST]");
  EXPECT_EQ(p[0].second, "A1</s>");
  EXPECT_EQ(p[1].first, "<s>[INST] Q2 [/INST]");
  EXPECT_EQ(p[1].second, "A2</s>");
  // Without a system prompt (and no default) the user slot holds the message alone; llama2_zh's default
  // system is fused the same way.
  Conversation plain = two_turns();
  plain.system.clear();
  EXPECT_EQ(render_text(find_template("llama2"), plain, kSentencePiece),
            "<s>[INST] Q1 [/INST]A1</s><s>[INST] Q2 [/INST]A2</s>");
  EXPECT_EQ(render_multiturn(find_template("llama2_zh"), plain, kSentencePiece)[0].first,
            "<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\nQ1 [/INST]");
  EXPECT_EQ(render_multiturn(find_template("gemma"), plain, kSentencePiece)[0].first,
            "<s><start_of_turn>user\nQ1<end_of_turn>\n<start_of_turn>model\n");
  // The reasoning thought is in the response (trained), not the prompt.
  p = render_multiturn(find_template("qwen3"), two_turns(), kSentencePiece);
  EXPECT_EQ(p[1].first, "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(p[1].second, "<think>\n\n</think>\n\nA2<|im_end|>\n");
  // Only the first "{{content}}" of a slot is a placeholder, and message text is never re-substituted.
  Conversation odd{"", {{Role::User, "{{content}}"}, {Role::Assistant, "x"}}};
  EXPECT_EQ(render_text(find_template("vicuna"), odd, kSentencePiece),
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions.USER: {{content}} ASSISTANT:x</s>");
  // Without a tokenizer eos, fix_special_tokens' "<|endoftext|>" renders; without a bos, nothing.
  EXPECT_EQ(render_text(find_template("deepseek3"), plain, TextTokens{}),
            "<｜User｜>Q1<｜Assistant｜>A1<|endoftext|><｜User｜>Q2<｜Assistant｜>A2<|endoftext|>");
}

// tests/data/test_template.py's _check_template cases (encode_oneturn, no system prompt), verbatim.
TEST(Template, LlamaFactoryRenderingsVerbatim) {
  struct Case {
    const char* name;
    TextTokens tokens;
    std::string prompt, answer;
  };
  const std::vector<Case> cases = {
      {"gemma",
       {"<bos>", "<eos>"},  // test_gemma_template
       "<bos><start_of_turn>user\nHow are you<end_of_turn>\n<start_of_turn>model\nI am fine!<end_of_turn>\n"
       "<start_of_turn>user\n你好<end_of_turn>\n<start_of_turn>model\n",
       "很高兴认识你！<end_of_turn>\n"},
      {"gemma2",
       {"<bos>", "<eos>"},  // test_gemma2_template
       "<bos><start_of_turn>user\nHow are you<end_of_turn>\n<start_of_turn>model\nI am fine!<end_of_turn>\n"
       "<start_of_turn>user\n你好<end_of_turn>\n<start_of_turn>model\n",
       "很高兴认识你！<end_of_turn>\n"},
      {"llama3",
       {"<|begin_of_text|>", "<|end_of_text|>"},  // test_llama3_template, test_encode_oneturn
       "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHow are you<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\nI am fine!<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\n你好<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\n",
       "很高兴认识你！<|eot_id|>"},
      {"llama4",
       {"<|begin_of_text|>", "<|end_of_text|>"},  // test_llama4_template
       "<|begin_of_text|><|header_start|>user<|header_end|>\n\nHow are you<|eot|>"
       "<|header_start|>assistant<|header_end|>\n\nI am fine!<|eot|>"
       "<|header_start|>user<|header_end|>\n\n你好<|eot|>"
       "<|header_start|>assistant<|header_end|>\n\n",
       "很高兴认识你！<|eot|>"},
      {"phi4",
       {"", "<|endoftext|>"},  // test_phi4_template
       "<|im_start|>user<|im_sep|>How are you<|im_end|><|im_start|>assistant<|im_sep|>I am fine!<|im_end|>"
       "<|im_start|>user<|im_sep|>你好<|im_end|><|im_start|>assistant<|im_sep|>",
       "很高兴认识你！<|im_end|>"},
      {"qwen",
       {"", "<|endoftext|>"},  // test_qwen2_5_template
       "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
       "<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\nI am fine!<|im_end|>\n"
       "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n",
       "很高兴认识你！<|im_end|>\n"},
      {"qwen3",
       {"", "<|im_end|>"},  // test_qwen3_template, cot_messages=False
       "<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\nI am fine!<|im_end|>\n"
       "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n",
       "<think>\n\n</think>\n\n很高兴认识你！<|im_end|>\n"},
  };
  for (const Case& c : cases) {
    auto [prompt, answer] = render_oneturn(find_template(c.name), lf_messages(), c.tokens);
    EXPECT_EQ(prompt, c.prompt) << c.name;
    EXPECT_EQ(answer, c.answer) << c.name;
  }
  // test_qwen3_template, cot_messages=True: the history thought is removed, the last one kept.
  auto [prompt, answer] = render_oneturn(find_template("qwen3"), lf_messages_with_thought(), {"", "<|im_end|>"});
  EXPECT_EQ(prompt, cases.back().prompt);
  EXPECT_EQ(answer, "<think>\n模型思考内容\n</think>\n\n很高兴认识你！<|im_end|>\n");
  // test_encode_multiturn (llama3).
  auto pairs = render_multiturn(find_template("llama3"), lf_messages(), {"<|begin_of_text|>", "<|end_of_text|>"});
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].first,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHow are you<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(pairs[0].second, "I am fine!<|eot_id|>");
  EXPECT_EQ(
      pairs[1].first,
      "<|start_header_id|>user<|end_header_id|>\n\n你好<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(pairs[1].second, "很高兴认识你！<|eot_id|>");
}

const std::string kEmptyThought = "<think>\n\n</think>\n\n";

// test_reasoning_encode_oneturn, for enable_thinking True and False (None is not a zlora value).
TEST(Template, ReasoningOneturnMatchesLlamaFactory) {
  const TemplateSpec& t = find_template("qwen3");
  const TextTokens tokens{"", "<|endoftext|>"};
  const std::string prompt =
      "<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\nI am fine!<|im_end|>\n"
      "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n";
  for (bool cot : {true, false})
    for (bool thinking : {true, false}) {
      SampleOptions opt;
      opt.enable_thinking = thinking;
      auto [p, a] = render_oneturn(t, cot ? lf_messages_with_thought() : lf_messages(), tokens, opt);
      std::string want_p = prompt, want_a = "很高兴认识你！<|im_end|>\n";
      if (!cot || !thinking) {
        if (thinking)
          want_a = kEmptyThought + want_a;
        else
          want_p += kEmptyThought;
      } else {
        want_a = "<think>\n模型思考内容\n</think>\n\n很高兴认识你！<|im_end|>\n";
      }
      EXPECT_EQ(p, want_p) << "cot " << cot << " thinking " << thinking;
      EXPECT_EQ(a, want_a) << "cot " << cot << " thinking " << thinking;
    }
  // preserve_thinking keeps the history thought in the prompt.
  SampleOptions keep;
  keep.preserve_thinking = true;
  EXPECT_EQ(render_oneturn(t, lf_messages_with_thought(), tokens, keep).first,
            "<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\n<think>\nModel thought here\n</think>\n\n"
            "I am fine!<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n");
}

// test_reasoning_encode_multiturn and test_reasoning_encode_multiturn_discarding_history_cot
// (discarding_history_cot = mask_history and not preserve_thinking, supervised.py:66).
TEST(Template, ReasoningMultiturnMatchesLlamaFactory) {
  const TemplateSpec& t = find_template("qwen3");
  const TextTokens tokens{"", "<|endoftext|>"};
  const std::string p1 = "<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\n";
  const std::string p2 = "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n";
  const std::string a1 = "I am fine!<|im_end|>\n", a2 = "很高兴认识你！<|im_end|>\n";
  const std::string a1_cot = "<think>\nModel thought here\n</think>\n\n" + a1;
  const std::string a2_cot = "<think>\n模型思考内容\n</think>\n\n" + a2;
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  for (bool cot : {true, false})
    for (bool thinking : {true, false}) {
      SampleOptions opt;
      opt.enable_thinking = thinking;
      Pairs want;
      if (!cot || !thinking) {
        if (thinking)
          want = {{p1, kEmptyThought + a1}, {p2, kEmptyThought + a2}};
        else
          want = {{p1 + kEmptyThought, a1}, {p2 + kEmptyThought, a2}};
      } else {
        want = {{p1, a1_cot}, {p2, a2_cot}};
      }
      EXPECT_EQ(render_multiturn(t, cot ? lf_messages_with_thought() : lf_messages(), tokens, opt), want)
          << "cot " << cot << " thinking " << thinking;
    }
  for (bool thinking : {true, false})
    for (bool discarding : {true, false}) {
      SampleOptions opt;
      opt.enable_thinking = thinking;
      opt.mask_history = true;
      opt.preserve_thinking = !discarding;
      Pairs want;
      if (!thinking)
        want = discarding ? Pairs{{p1, a1}, {p2 + kEmptyThought, a2}}
                          : Pairs{{p1 + kEmptyThought, a1}, {p2 + kEmptyThought, a2}};
      else
        want = {{p1, discarding ? a1 : a1_cot}, {p2, a2_cot}};
      EXPECT_EQ(render_multiturn(t, lf_messages_with_thought(), tokens, opt), want)
          << "thinking " << thinking << " discarding " << discarding;
    }
  // mask_history without thoughts in the data: only the last answer gets the empty thought.
  SampleOptions masked;
  masked.mask_history = true;
  EXPECT_EQ(render_multiturn(t, lf_messages(), tokens, masked), (Pairs{{p1, a1}, {p2, kEmptyThought + a2}}));
  // remove_thought: every block goes, then leading newlines (re.sub(...).lstrip("\n")); an unclosed
  // block stays; either tag alone counts as a thought (no empty one is added).
  Conversation odd{"",
                   {{Role::User, "u"},
                    {Role::Assistant, "\n<think>\na\n</think>\n\nX<think>\nb\n</think>\n\nY"},
                    {Role::User, "v"},
                    {Role::Assistant, "</think>Z <think>\nopen"}}};
  SampleOptions off;
  off.enable_thinking = false;
  auto r = render_multiturn(t, odd, tokens, off);
  EXPECT_EQ(r[0].second, "XY<|im_end|>\n");
  EXPECT_EQ(r[1].first, "<|im_start|>user\nv<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(r[1].second, "</think>Z <think>\nopen<|im_end|>\n");
}

// A byte-level tokenizer (no merges) with `tokens` as added special tokens, bos "<s>" and eos "</s>".
Tokenizer tiny_tokenizer(const std::set<std::string>& tokens) {
  using nlohmann::json;
  const std::string tok = test::byte_level_tokenizer_json(std::vector<std::string>(tokens.begin(), tokens.end()));
  json config = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  return Tokenizer::from_json(tok, config.dump(), "tiny tokenizer");
}

// The ids path and the text path agree for every template: encode_multiturn's ids decode to
// render_text, bos/eos/special tokens are single ids, and text elements are tokenized one by one.
TEST(Template, EveryTemplateEncodesItsRendering) {
  for (const TemplateSpec& t : builtin_templates()) {
    std::set<std::string> tokens = {"<s>", "</s>"};
    tokens.insert(t.special_tokens.begin(), t.special_tokens.end());
    tokens.insert(t.stop_words.begin(), t.stop_words.end());
    Tokenizer tok = tiny_tokenizer(tokens);
    ChatTemplate ct(t, tok);
    BpeCache cache;
    std::vector<int32_t> all;
    for (const auto& [source, target] : ct.encode_multiturn(two_turns(), cache)) {
      all.insert(all.end(), source.begin(), source.end());
      all.insert(all.end(), target.begin(), target.end());
    }
    const std::string text = render_text(t, two_turns(), kSentencePiece);
    EXPECT_EQ(tok.decode(all), text) << t.name;
    EXPECT_EQ(ct.render_text(two_turns()), text) << t.name;
    for (const std::string& s : t.special_tokens)
      EXPECT_NE(std::find(all.begin(), all.end(), *tok.token_to_id(s)), all.end()) << t.name << " " << s;
    auto [prompt, response] = ct.encode_oneturn(two_turns(), cache);
    auto [prompt_text, response_text] = render_oneturn(t, two_turns(), kSentencePiece);
    EXPECT_EQ(tok.decode(prompt), prompt_text) << t.name;
    EXPECT_EQ(tok.decode(response), response_text) << t.name;
    EXPECT_FALSE(t.description.empty()) << t.name;
  }
}

TEST(Template, ReasoningThoughtIsTokenizedOnItsOwn) {
  const Tokenizer& tok = test::qwen_tokenizer();
  ChatTemplate t(find_template("qwen3"), tok);
  BpeCache cache;
  auto pairs = t.encode_multiturn(lf_messages(), cache);
  ASSERT_EQ(pairs.size(), 2u);
  // get_thought_word_ids: tokenizer.encode(add_thought()) prepended to the answer's own ids.
  EXPECT_EQ(pairs[0].first, tok.encode("<|im_start|>user\nHow are you<|im_end|>\n<|im_start|>assistant\n"));
  EXPECT_EQ(pairs[0].second, cat(tok.encode(kEmptyThought), tok.encode("I am fine!<|im_end|>\n")));
  EXPECT_EQ(pairs[1].second, cat(tok.encode(kEmptyThought), tok.encode("很高兴认识你！<|im_end|>\n")));
  // build_sample trains on it (it is in the target); with enable_thinking false it is masked prompt.
  Sample s = t.build_sample(lf_messages(), SampleOptions{}, cache);
  const auto thought = tok.encode(kEmptyThought);
  const size_t at = pairs[0].first.size();
  EXPECT_EQ(std::vector<int32_t>(s.labels.begin() + long(at), s.labels.begin() + long(at + thought.size())), thought);
  SampleOptions off;
  off.enable_thinking = false;
  auto no = t.encode_multiturn(lf_messages(), cache, off);
  EXPECT_EQ(no[0].first, cat(pairs[0].first, thought));
  EXPECT_EQ(no[0].second, tok.encode("I am fine!<|im_end|>\n"));
  Sample m = t.build_sample(lf_messages(), off, cache);
  EXPECT_EQ(m.labels[at + thought.size() - 1], kIgnoreIndex);
  // qwen3_nothink is plain: no thought anywhere.
  ChatTemplate plain(find_template("qwen3_nothink"), tok);
  EXPECT_EQ(plain.encode_multiturn(lf_messages(), cache)[0].second, tok.encode("I am fine!<|im_end|>\n"));
  // inference prompt (encode_oneturn): the history answer carries no thought.
  auto [prompt, answer] = t.encode_oneturn(lf_messages(), cache);
  EXPECT_EQ(prompt, cat(cat(pairs[0].first, tok.encode("I am fine!<|im_end|>\n")), pairs[1].first));
  EXPECT_EQ(answer, pairs[1].second);
}

TEST(Template, EfficientEosAppendsOneEos) {
  Tokenizer tok = tiny_tokenizer({"<s>", "</s>", "<eos>", "<end_of_turn>", "<start_of_turn>"});
  ChatTemplate t(find_template("gemma2"), tok);
  BpeCache cache;
  auto pairs = t.encode_multiturn(two_turns(), cache);
  Sample s = t.build_sample(two_turns(), SampleOptions{}, cache);
  const int32_t eos = *tok.token_to_id("</s>");  // gemma2 keeps the tokenizer's eos (no replace_eos)
  ASSERT_EQ(s.input_ids.size(),
            pairs[0].first.size() + pairs[0].second.size() + pairs[1].first.size() + pairs[1].second.size() + 1);
  EXPECT_EQ(s.input_ids.back(), eos);
  EXPECT_EQ(s.labels.back(), eos);
  // supervised.py: turns after the first label their first source token with eos.
  const size_t second = pairs[0].first.size() + pairs[0].second.size();
  EXPECT_EQ(s.labels[second], eos);
  EXPECT_EQ(s.labels[second + 1], kIgnoreIndex);
  EXPECT_EQ(s.labels[0], kIgnoreIndex);
  SampleOptions on_prompt;
  on_prompt.train_on_prompt = true;
  EXPECT_HAS(error_of([&] { t.build_sample(two_turns(), on_prompt, cache); }),
             "template 'gemma2' does not support train_on_prompt");
}

TEST(Template, TokensTheTokenizerLacksAreErrors) {
  const Tokenizer& tok = test::qwen_tokenizer();
  EXPECT_HAS(error_of([&] { ChatTemplate(find_template("gemma"), tok); }),
             "template 'gemma': stop word '<end_of_turn>' is not a token");
  // phi4's stop word <|im_end|> is a Qwen token, its <|im_sep|> is not.
  EXPECT_HAS(error_of([&] { ChatTemplate(find_template("phi4"), tok); }),
             "template 'phi4': its special token '<|im_sep|>' is not a single token of");
  // intern2 is ChatML with a bos prefix; the Qwen tokenizer has no bos_token: an error at construction.
  std::string e = error_of([&] { ChatTemplate(find_template("intern2"), tok); });
  EXPECT_HAS(e, "template 'intern2' needs a bos token");
  EXPECT_HAS(e, "names no bos_token");
  Tokenizer no_bos = tiny_tokenizer({"</s>", "<｜User｜>", "<｜Assistant｜>"});
  EXPECT_HAS(error_of([&] { ChatTemplate(find_template("deepseek3"), no_bos); }),
             "the bos token '<s>' is not in the vocabulary of tiny tokenizer");
  Tokenizer no_eos = tiny_tokenizer({"<s>"});
  EXPECT_HAS(error_of([&] { ChatTemplate(find_template("llama2"), no_eos); }),
             "template 'llama2' needs an eos token: the eos token '</s>' is not in the vocabulary");
  EXPECT_HAS(error_of([] { find_template("gemma4"); }), "did you mean 'gemma'?");
}

TEST(Template, ListingNamesEveryTemplate) {
  auto list = list_templates();
  ASSERT_EQ(list.size(), builtin_templates().size());
  for (size_t i = 0; i < list.size(); ++i) {
    EXPECT_EQ(list[i].name, builtin_templates()[i].name);
    EXPECT_FALSE(list[i].description.empty()) << list[i].name;
    EXPECT_EQ(list[i].description.find('\n'), std::string::npos) << list[i].name;
  }
  EXPECT_EQ(list[0].name, "qwen");
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
