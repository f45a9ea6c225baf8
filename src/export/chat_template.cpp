// LLaMA-Factory's Jinja chat template (data/template.py at ff6d4d12: Template._jinja_escape :218,
// _convert_slots_to_jinja :223, _get_jinja_template :245, fix_jinja_template :273,
// Llama2Template._get_jinja_template :419, fix_special_tokens :189). See chat_template.h.
#include "zlora/export/chat_template.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "zlora/core/text.h"

namespace zlora::exporter {

namespace {

const std::string kContent = "{{content}}";

// The templates registered with replace_jinja_template=True that zlora has (LLaMA-Factory also sets it
// for fewshot and ernie_vl, which zlora does not carry). TemplateSpec has no field for it yet.
constexpr std::array<const char*, 5> kReplaceJinja = {"alpaca", "chatml", "chatml_de", "default", "vicuna"};

// Python's str.split(sep): every piece, empty ones included.
std::vector<std::string> split_all(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t at = s.find(sep, start);
    if (at == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, at - start));
    start = at + sep.size();
  }
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// The part of _get_jinja_template before the loop, shared by both classes.
std::string jinja_head(const data::TemplateSpec& spec, const JinjaTokens& tokens) {
  const std::string prefix = slots_to_jinja(spec.prefix, tokens, "content");
  std::string j;
  if (!prefix.empty()) j += "{{ " + prefix + " }}";
  if (!spec.default_system.empty()) j += "{% set system_message = '" + jinja_escape(spec.default_system) + "' %}";
  j += "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
       "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% endif %}";
  return j;
}

}  // namespace

JinjaTokens jinja_tokens(const data::TemplateSpec& spec, const TokenInfo& tokens) {
  JinjaTokens j;
  j.bos_token = tokens.bos_token;  // token_info keeps a bos only when the vocabulary has it
  // A replace_eos stop word is added to the tokenizer if new, so it always has an id; the tokenizer's own
  // eos counts only when its vocabulary has it.
  const bool own_eos = tokens.eos_token && (!tokens.has_ids || tokens.id(*tokens.eos_token));
  j.eos_token = data::eos_token_for(spec, own_eos ? tokens.eos_token : std::nullopt);
  return j;
}

std::string jinja_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\'') out += '\\';
    out += c;
  }
  return out;
}

std::string slots_to_jinja(const data::Slot& slot, const JinjaTokens& tokens, const std::string& placeholder) {
  std::vector<std::string> items;
  for (const std::string& element : slot) {
    if (element == "{{bos_token}}") {
      if (tokens.bos_token) items.push_back(quoted(*tokens.bos_token));
    } else if (element == "{{eos_token}}") {
      if (tokens.eos_token) items.push_back(quoted(*tokens.eos_token));
    } else {
      // Only the text before the first "{{content}}" and between the first and the second is kept, as
      // slot.split("{{content}}")[0..1] keeps.
      const std::vector<std::string> pieces = split_all(element, kContent);
      if (!pieces[0].empty()) items.push_back(quoted(jinja_escape(pieces[0])));
      if (pieces.size() > 1) {
        items.push_back(placeholder);
        if (!pieces[1].empty()) items.push_back(quoted(jinja_escape(pieces[1])));
      }
    }
  }
  return text::join(items, " + ");
}

std::string jinja_chat_template(const data::TemplateSpec& spec, const JinjaTokens& tokens) {
  const std::string system = slots_to_jinja(spec.system, tokens, "system_message");
  const std::string user = slots_to_jinja(spec.user, tokens, "content");
  const std::string assistant = slots_to_jinja(spec.assistant, tokens, "content");
  std::string j = jinja_head(spec, tokens);
  if (spec.kind == data::TemplateKind::Llama2) {
    j += "{% for message in loop_messages %}"
         "{% if loop.index0 == 0 and system_message is defined %}"
         "{% set content = " +
         system +
         " + message['content'] %}"
         "{% else %}{% set content = message['content'] %}{% endif %}";
  } else {
    j += "{% if system_message is defined %}{{ " + system +
         " }}{% endif %}"
         "{% for message in loop_messages %}"
         "{% set content = message['content'] %}";
  }
  j += "{% if message['role'] == 'user' %}{{ " + user + " }}{% elif message['role'] == 'assistant' %}{{ " + assistant +
       " }}{% endif %}{% endfor %}";
  return j;
}

bool replaces_chat_template(const data::TemplateSpec& spec) {
  return std::find(kReplaceJinja.begin(), kReplaceJinja.end(), spec.name) != kReplaceJinja.end();
}

ChatTemplateFix fix_chat_template(const data::TemplateSpec& spec, const JinjaTokens& tokens,
                                  bool tokenizer_has_chat_template) {
  ChatTemplateFix f;
  f.jinja = jinja_chat_template(spec, tokens);
  if (!tokenizer_has_chat_template) {
    f.write = true;
    f.reason = fmt::format(
        "chat_template: the tokenizer has none; writing the one generated from template '{}', as LLaMA-Factory "
        "does",
        spec.name);
  } else if (replaces_chat_template(spec)) {
    f.write = true;
    f.reason = fmt::format(
        "chat_template: replacing the tokenizer's own with the one generated from template '{}' (the template "
        "sets replace_jinja_template, as in LLaMA-Factory)",
        spec.name);
  } else {
    f.reason = fmt::format(
        "chat_template: the tokenizer's own is kept, as LLaMA-Factory keeps it for template '{}' (only templates "
        "with replace_jinja_template, or a tokenizer without one, get the generated template); transformers and "
        "vLLM prompt with it, which may differ from the training prompt (default system, thought blocks)",
        spec.name);
  }
  return f;
}

}  // namespace zlora::exporter
