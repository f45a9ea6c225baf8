// zlora's Jinja chat_template against LLaMA-Factory's own: literal strings printed by its
// data/template.py (Template._get_jinja_template / Llama2Template._get_jinja_template after
// fix_special_tokens, at ff6d4d12) for stand-in tokenizers, and chat_template_golden.json
// (tools/golden/chat_template/make_golden.py) for every template zlora has. Torch-free.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "zlora/data/template.h"
#include "zlora/export/chat_template.h"
#include "zlora/export/modelfile.h"

namespace {

namespace ze = zlora::exporter;
namespace zd = zlora::data;
using nlohmann::json;

// The tokens of a tokenizer naming `bos`/`eos` in its tokenizer_config.json (nullopt: none), as export
// resolves them without a vocabulary.
ze::JinjaTokens tokens_for(const zd::TemplateSpec& spec, const std::optional<std::string>& bos,
                           const std::optional<std::string>& eos) {
  json c = json::object();
  if (bos) c["bos_token"] = *bos;
  if (eos) c["eos_token"] = *eos;
  return ze::jinja_tokens(spec, ze::token_info_without_vocab(spec, c.dump()));
}

std::string jinja_for(const std::string& name, const std::optional<std::string>& bos,
                      const std::optional<std::string>& eos) {
  const zd::TemplateSpec& spec = zd::find_template(name);
  return ze::jinja_chat_template(spec, tokens_for(spec, bos, eos));
}

}  // namespace

TEST(ChatTemplateJinja, Qwen) {
  // qwen: tokenizer bos None, eos <|endoftext|> (the Jinja inserts eos <|im_end|>)
  EXPECT_EQ(jinja_for("qwen", std::nullopt, "<|endoftext|>"),
            "{% set system_message = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' %}"
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% if system_message is defined %}"
            "{{ '<|im_start|>system\n' + system_message + '<|im_end|>\n' }}{% endif %}"
            "{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}"
            "{{ '<|im_start|>user\n' + content + '<|im_end|>\n<|im_start|>assistant\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>\n' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Llama3) {
  // llama3: tokenizer bos <|begin_of_text|>, eos <|end_of_text|> (the Jinja inserts eos <|eot_id|>)
  EXPECT_EQ(jinja_for("llama3", "<|begin_of_text|>", "<|end_of_text|>"),
            "{{ '<|begin_of_text|>' }}{% if messages[0]['role'] == 'system' %}"
            "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}"
            "{% set loop_messages = messages %}{% endif %}{% if system_message is defined %}"
            "{{ '<|start_header_id|>system<|end_header_id|>\n\n' + system_message + '<|eot_id|>' }}{% endif %}"
            "{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}"
            "{{ '<|start_header_id|>user<|end_header_id|>\n\n' + content + "
            "'<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '<|eot_id|>' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Chatml) {
  // chatml: tokenizer bos None, eos <|endoftext|> (the Jinja inserts eos <|im_end|>)
  EXPECT_EQ(jinja_for("chatml", std::nullopt, "<|endoftext|>"),
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% if system_message is defined %}"
            "{{ '<|im_start|>system\n' + system_message + '<|im_end|>\n' }}{% endif %}"
            "{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}"
            "{{ '<|im_start|>user\n' + content + '<|im_end|>\n<|im_start|>assistant\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>\n' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Default) {
  // default: tokenizer bos <s>, eos </s> (the Jinja inserts eos </s>)
  EXPECT_EQ(jinja_for("default", "<s>", "</s>"),
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% if system_message is defined %}{{ 'System: ' + system_message + '</s>' + '\n' }}"
            "{% endif %}{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}{{ 'Human: ' + content + '</s>' + '\nAssistant:' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '</s>' + '\n' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Alpaca) {
  // alpaca: tokenizer bos <s>, eos </s> (the Jinja inserts eos </s>)
  EXPECT_EQ(jinja_for("alpaca", "<s>", "</s>"),
            "{% set system_message = 'Below is an instruction that describes a task. Write a response that "
            "appropriately completes the request.\n\n' %}"
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% if system_message is defined %}{{ system_message }}{% endif %}"
            "{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + content + '\n\n### Response:\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '</s>' + '\n\n' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Llama2) {
  // llama2: tokenizer bos <s>, eos </s> (the Jinja inserts eos </s>)
  EXPECT_EQ(jinja_for("llama2", "<s>", "</s>"),
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message is defined %}"
            "{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}"
            "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
            "{{ '<s>' + '[INST] ' + content + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
            "{{ content + '</s>' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Mistral) {
  // mistral: tokenizer bos <s>, eos </s> (the Jinja inserts eos </s>)
  EXPECT_EQ(jinja_for("mistral", "<s>", "</s>"),
            "{{ '<s>' }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message is defined %}"
            "{% set content = system_message + '\n\n' + message['content'] %}{% else %}"
            "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
            "{{ '[INST] ' + content + '[/INST]' }}{% elif message['role'] == 'assistant' %}"
            "{{ ' ' + content + '</s>' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Gemma) {
  // gemma: tokenizer bos <bos>, eos <eos> (the Jinja inserts eos <end_of_turn>)
  EXPECT_EQ(jinja_for("gemma", "<bos>", "<eos>"),
            "{{ '<bos>' }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message is defined %}"
            "{% set content = system_message + '\n\n' + message['content'] %}{% else %}"
            "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
            "{{ '<start_of_turn>user\n' + content + '<end_of_turn>\n<start_of_turn>model\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '<end_of_turn>\n' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Qwen3ReasoningAddsNoThought) {
  // qwen3: tokenizer bos None, eos <|im_end|> (the Jinja inserts eos <|im_end|>)
  EXPECT_EQ(jinja_for("qwen3", std::nullopt, "<|im_end|>"),
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% if system_message is defined %}"
            "{{ '<|im_start|>system\n' + system_message + '<|im_end|>\n' }}{% endif %}"
            "{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}"
            "{{ '<|im_start|>user\n' + content + '<|im_end|>\n<|im_start|>assistant\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>\n' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Qwen3Nothink) {
  // qwen3_nothink: tokenizer bos None, eos <|im_end|> (the Jinja inserts eos <|im_end|>)
  EXPECT_EQ(jinja_for("qwen3_nothink", std::nullopt, "<|im_end|>"),
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% if system_message is defined %}"
            "{{ '<|im_start|>system\n' + system_message + '<|im_end|>\n' }}{% endif %}"
            "{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}"
            "{{ '<|im_start|>user\n' + content + '<|im_end|>\n<|im_start|>assistant\n' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>\n' }}{% endif %}{% endfor %}");
}

TEST(ChatTemplateJinja, Vicuna) {
  // vicuna: tokenizer bos <s>, eos </s> (the Jinja inserts eos </s>)
  EXPECT_EQ(jinja_for("vicuna", "<s>", "</s>"),
            "{% set system_message = 'A chat between a curious user and an artificial intelligence assistant. The "
            "assistant gives helpful, detailed, and polite answers to the user\\'s questions.' %}"
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
            "{% endif %}{% if system_message is defined %}{{ system_message }}{% endif %}"
            "{% for message in loop_messages %}{% set content = message['content'] %}"
            "{% if message['role'] == 'user' %}{{ 'USER: ' + content + ' ASSISTANT:' }}"
            "{% elif message['role'] == 'assistant' %}{{ content + '</s>' }}{% endif %}{% endfor %}");
}

// Every template zlora has, with a tokenizer that has bos "<s>" and eos "</s>" and with one that has
// neither (LLaMA-Factory then adds "<|endoftext|>" as eos), character for character; the class
// (Template / Llama2Template / ReasoningTemplate) and replace_jinja_template agree too.
TEST(ChatTemplateJinja, EveryTemplateMatchesLlamaFactoryGolden) {
  const json g =
      json::parse(zlora::test::read_file(zlora::test::source_dir() / "tests/export/chat_template_golden.json"));
  size_t checked = 0;
  for (const auto& spec : zd::builtin_templates()) {
    SCOPED_TRACE(spec.name);
    ASSERT_TRUE(g["templates"].contains(spec.name)) << "add it to tools/golden/chat_template/make_golden.py and regenerate";
    const json& e = g["templates"][spec.name];
    // Glm47ReasoningTemplate is a ReasoningTemplate (only its empty thought differs; no Jinja override).
    std::string cls = e["class"];
    if (cls == "Glm47ReasoningTemplate") cls = "ReasoningTemplate";
    const char* want_class = spec.kind == zd::TemplateKind::Llama2      ? "Llama2Template"
                             : spec.kind == zd::TemplateKind::Reasoning ? "ReasoningTemplate"
                                                                        : "Template";
    EXPECT_EQ(cls, want_class);
    EXPECT_EQ(ze::replaces_chat_template(spec), e["replace_jinja_template"].get<bool>());
    for (const auto& [tname, t] : g["tokenizers"].items()) {
      SCOPED_TRACE(tname);
      auto opt = [&](const char* k) {
        return t[k].is_null() ? std::nullopt : std::optional<std::string>(t[k].get<std::string>());
      };
      EXPECT_EQ(ze::jinja_chat_template(spec, tokens_for(spec, opt("bos_token"), opt("eos_token"))),
                e[tname].get<std::string>());
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * zd::builtin_templates().size());
  EXPECT_GE(checked, 98u);
}

// _jinja_escape escapes single quotes only; --default_system goes into the template as LLaMA-Factory's
// data_args.default_system does.
TEST(ChatTemplateJinja, DefaultSystemIsEscapedAndOverridable) {
  EXPECT_EQ(ze::jinja_escape("it's a 'test' \\n"), "it\\'s a \\'test\\' \\n");
  zd::TemplateSpec spec = zd::find_template("qwen");
  spec.default_system = "Don't panic.";
  const std::string j = ze::jinja_chat_template(spec, tokens_for(spec, std::nullopt, std::nullopt));
  EXPECT_EQ(j.rfind("{% set system_message = 'Don\\'t panic.' %}{% if messages[0]['role'] == 'system' %}", 0), 0u) << j;
  spec.default_system.clear();
  EXPECT_EQ(ze::jinja_chat_template(spec, tokens_for(spec, std::nullopt, std::nullopt)),
            jinja_for("qwen3_nothink", std::nullopt, std::nullopt));
}

// _convert_slots_to_jinja: bos/eos elements as quoted token text, a bos the tokenizer lacks left out,
// the text after a second "{{content}}" dropped (split()[0..1]).
TEST(ChatTemplateJinja, SlotsToJinja) {
  ze::JinjaTokens t{std::string("<s>"), std::string("</s>")};
  EXPECT_EQ(ze::slots_to_jinja({"{{bos_token}}", "A {{content}} B", "{{eos_token}}"}, t, "content"),
            "'<s>' + 'A ' + content + ' B' + '</s>'");
  EXPECT_EQ(ze::slots_to_jinja({"{{content}}"}, t, "system_message"), "system_message");
  EXPECT_EQ(ze::slots_to_jinja({"x{{content}}y{{content}}z"}, t, "content"), "'x' + content + 'y'");
  EXPECT_EQ(ze::slots_to_jinja({"no placeholder", ""}, t, "content"), "'no placeholder'");
  t.bos_token.reset();
  EXPECT_EQ(ze::slots_to_jinja({"{{bos_token}}", "{{content}}"}, t, "content"), "content");
}

// fix_jinja_template: the generated template replaces the tokenizer's only for replace_jinja_template
// templates; a tokenizer without one always gets it.
TEST(ChatTemplateJinja, WhenTheTokenizersOwnIsKept) {
  for (const char* name : {"chatml", "chatml_de", "default", "alpaca", "vicuna"}) {
    const zd::TemplateSpec& spec = zd::find_template(name);
    EXPECT_TRUE(ze::replaces_chat_template(spec)) << name;
    EXPECT_TRUE(ze::fix_chat_template(spec, tokens_for(spec, "<s>", "</s>"), true).write) << name;
  }
  for (const char* name : {"qwen", "qwen3", "qwen3_nothink", "llama3", "llama2", "mistral", "gemma", "empty"}) {
    const zd::TemplateSpec& spec = zd::find_template(name);
    EXPECT_FALSE(ze::replaces_chat_template(spec)) << name;
    const auto kept = ze::fix_chat_template(spec, tokens_for(spec, "<s>", "</s>"), true);
    EXPECT_FALSE(kept.write) << name;
    EXPECT_NE(kept.reason.find("the tokenizer's own is kept"), std::string::npos) << kept.reason;
    const auto fresh = ze::fix_chat_template(spec, tokens_for(spec, "<s>", "</s>"), false);
    EXPECT_TRUE(fresh.write) << name;
    EXPECT_EQ(fresh.jinja, kept.jinja);
  }
}

// jinja_tokens: the eos after fix_special_tokens.
TEST(ChatTemplateJinja, EosAfterFixSpecialTokens) {
  const zd::TemplateSpec& qwen = zd::find_template("qwen");
  EXPECT_EQ(tokens_for(qwen, std::nullopt, "<|endoftext|>").eos_token, "<|im_end|>");  // replace_eos
  const zd::TemplateSpec& def = zd::find_template("default");
  EXPECT_EQ(tokens_for(def, std::nullopt, "</s>").eos_token, "</s>");
  EXPECT_EQ(tokens_for(def, std::nullopt, std::nullopt).eos_token, "<|endoftext|>");  // added when missing
  // With a vocabulary: an eos the vocabulary lacks has no id, so LLaMA-Factory adds <|endoftext|>.
  ze::TokenInfo info;
  info.has_ids = true;
  info.eos_token = "</s>";
  info.bos_token = "<s>";
  EXPECT_EQ(ze::jinja_tokens(def, info).eos_token, "<|endoftext|>");
  info.ids["</s>"] = 2;
  EXPECT_EQ(ze::jinja_tokens(def, info).eos_token, "</s>");
  EXPECT_EQ(ze::jinja_tokens(def, info).bos_token, "<s>");
}
