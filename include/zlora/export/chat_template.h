// The Jinja chat_template that `zlora export` writes into tokenizer_config.json, exactly as LLaMA-Factory's
// data/template.py makes it (torch-free):
//   * Template._get_jinja_template / _convert_slots_to_jinja / _jinja_escape for Plain and Reasoning
//     templates (ReasoningTemplate has no override: the Jinja adds no empty thought block);
//   * Llama2Template._get_jinja_template for Llama2 templates (the system slot folded into the first
//     message's content);
//   * fix_jinja_template's rule: the tokenizer's own chat_template is replaced only when the template sets
//     replace_jinja_template (alpaca, chatml, chatml_de, default, vicuna among zlora's templates) or when
//     the tokenizer has none; otherwise it is kept.
//
// bos/eos elements become the token text quoted as a Jinja string (not `{{ eos_token }}`, which a
// replaced eos would change), after LLaMA-Factory's fix_special_tokens: under replace_eos the eos is
// stop_words[0]; a tokenizer without an eos gets "<|endoftext|>"; a bos without an id is left out.
// Like LLaMA-Factory, only single quotes are escaped (a backslash in a slot is written as is).
#pragma once

#include <optional>
#include <string>

#include "zlora/data/template.h"
#include "zlora/export/modelfile.h"

namespace zlora::exporter {

// The token texts the Jinja inserts for "{{bos_token}}" / "{{eos_token}}" elements (nullopt: left out).
struct JinjaTokens {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
};

// The bos/eos of a tokenizer after fix_special_tokens, from what the Modelfile already resolved.
JinjaTokens jinja_tokens(const data::TemplateSpec& spec, const TokenInfo& tokens);

// Template._jinja_escape: ' becomes \'.
std::string jinja_escape(const std::string& text);

// Template._convert_slots_to_jinja: Jinja string literals and `placeholder`, joined with " + ".
std::string slots_to_jinja(const data::Slot& slot, const JinjaTokens& tokens, const std::string& placeholder);

// _get_jinja_template of the template's class (Llama2 kind: Llama2Template's; others: Template's).
// `spec.default_system` is the one it sets (apply --default_system first, as LLaMA-Factory does).
std::string jinja_chat_template(const data::TemplateSpec& spec, const JinjaTokens& tokens);

// The template's replace_jinja_template flag (register_template(..., replace_jinja_template=True)).
bool replaces_chat_template(const data::TemplateSpec& spec);

// fix_jinja_template's decision for a tokenizer that has (or has no) chat_template of its own.
struct ChatTemplateFix {
  bool write = false;  // false: the tokenizer's chat_template is kept
  std::string jinja;   // the generated template (set in both cases)
  std::string reason;  // one sentence for the log
};
ChatTemplateFix fix_chat_template(const data::TemplateSpec& spec, const JinjaTokens& tokens,
                                  bool tokenizer_has_chat_template);

}  // namespace zlora::exporter
