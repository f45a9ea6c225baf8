// Chat templates as data, and LLaMA-Factory's supervised sample construction (data/template.py,
// data/processor/supervised.py, processor_utils.py::infer_seqlen).
//
// A template is a table of slots. Each slot is a list of elements; an element is a string in which
// "{{content}}" is replaced by the message (its first occurrence, as StringFormatter does), or exactly
// "{{bos_token}}" / "{{eos_token}}", which insert the tokenizer's id. Every string element is tokenized on
// its own (add_special_tokens=False) and the pieces are concatenated, as LLaMA-Factory does, so BPE
// merges never cross element boundaries. Adding a template is adding a table to src/data/templates.cpp.
//
// Three encodings, as LLaMA-Factory's three template classes:
//  * Plain (Template._encode): turn 0 is prefix + system slot + user slot.
//  * Llama2 (Llama2Template._encode): the system slot's first element, formatted, is prepended to the
//    first user message's content inside the user slot; there is no system block of its own.
//  * Reasoning (ReasoningTemplate.encode_multiturn / encode_oneturn): an assistant answer that has no
//    thought block gets an empty one (thought_words joined), tokenized on its own, in the response when
//    enable_thinking is true and at the end of the prompt when it is false; enable_thinking false also
//    removes every thought from the answers; mask_history without preserve_thinking removes the thoughts
//    of all answers but the last and adds the empty thought to the last one only.
#pragma once

#include "zlora/data/dataset.h"
#include "zlora/data/tokenizer.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zlora::data {

using Slot = std::vector<std::string>;

enum class TemplateKind { Plain, Llama2, Reasoning };

struct TemplateSpec {
  std::string name;
  std::string description;  // one line for `zlora templates`: which models use it
  Slot prefix;              // before the system block of turn 0
  Slot system;              // "{{content}}" = system prompt
  Slot user;
  Slot assistant;
  Slot observation;  // tool results (sharegpt `observation` turns)
  std::string default_system;
  std::vector<std::string> stop_words;
  bool efficient_eos = false;  // eos once at the end instead of after each assistant turn
  bool replace_eos = false;    // the eos becomes stop_words[0]
  TemplateKind kind = TemplateKind::Plain;
  // Reasoning templates: the thought block's delimiters, and the text an empty thought adds ("" =
  // thought_words joined; GLM-4.7's Glm47ReasoningTemplate adds only the closing word).
  std::pair<std::string, std::string> thought_words{"<think>\n", "\n</think>\n\n"};
  std::string empty_thought;
  // Tokens written inside the slot text that must be single tokens of the tokenizer (checked by
  // ChatTemplate; stop words are checked too). A tokenizer of another family fails with their name.
  std::vector<std::string> special_tokens;

  std::string empty_thought_text() const {
    return empty_thought.empty() ? thought_words.first + thought_words.second : empty_thought;
  }
};

// The built-in templates, and lookup by name (unknown names list the valid ones).
const std::vector<TemplateSpec>& builtin_templates();
const TemplateSpec& find_template(const std::string& name);

// Name and one-line description of every built-in template, in builtin_templates() order (`zlora templates`).
struct TemplateInfo {
  std::string name;
  std::string description;
};
std::vector<TemplateInfo> list_templates();

// processor_utils.py::infer_seqlen: how many (source, target) tokens survive a budget of `cutoff_len`.
std::pair<int64_t, int64_t> infer_seqlen(int64_t source_len, int64_t target_len, int64_t cutoff_len);

struct Sample {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // -100 where masked; same length as input_ids; not shifted
  int64_t prompt_tokens = 0;    // tokens of the sources kept (for the summary)
  int64_t response_tokens = 0;  // tokens of the targets kept
};

constexpr int32_t kIgnoreIndex = -100;

struct SampleOptions {
  int64_t cutoff_len = 2048;
  bool train_on_prompt = false;
  bool mask_history = false;
  // Reasoning templates only (LLaMA-Factory's data_args.enable_thinking / preserve_thinking).
  bool enable_thinking = true;
  bool preserve_thinking = false;  // keep history thoughts under mask_history (and in encode_oneturn)
};

// The texts bos/eos elements render as (render_*): the tokenizer's bos_token and eos_token before the
// template's fix-up; under replace_eos the eos renders as stop_words[0], as fix_special_tokens makes it.
// An empty bos renders as nothing, as LLaMA-Factory skips a bos the tokenizer lacks.
// LLaMA-Factory's fix_special_tokens for the eos, in one place: a replace_eos template's first stop word
// becomes the eos (replaced_eos; nullopt for the other templates); otherwise the tokenizer's own
// eos_token stays, and a tokenizer without one gets "<|endoftext|>" (eos_token_for).
std::optional<std::string> replaced_eos(const TemplateSpec& spec);
std::string eos_token_for(const TemplateSpec& spec, const std::optional<std::string>& tokenizer_eos);

struct TextTokens {
  std::string bos;
  std::string eos;
};

// A template rendered as text, without a tokenizer: each (prompt, response) pair as LLaMA-Factory's
// encode_multiturn would decode it (special elements as their token strings).
std::vector<std::pair<std::string, std::string>> render_multiturn(const TemplateSpec& spec, const Conversation& c,
                                                                  const TextTokens& tokens,
                                                                  const SampleOptions& opt = {});
// encode_oneturn as text: every message but the last answer is prompt.
std::pair<std::string, std::string> render_oneturn(const TemplateSpec& spec, const Conversation& c,
                                                   const TextTokens& tokens, const SampleOptions& opt = {});
// The whole conversation (render_multiturn's pairs joined).
std::string render_text(const TemplateSpec& spec, const Conversation& c, const TextTokens& tokens,
                        const SampleOptions& opt = {});

// A template bound to a tokenizer: element ids resolved, eos/bos checked once.
class ChatTemplate {
 public:
  ChatTemplate(const TemplateSpec& spec, const Tokenizer& tokenizer, std::optional<std::string> default_system = {});

  // (source ids, target ids) per assistant turn: LLaMA-Factory's encode_multiturn (enable_thinking and,
  // through mask_history && !preserve_thinking, discarding_history_cot taken from `opt`).
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> encode_multiturn(
      const Conversation& c, BpeCache& cache, const SampleOptions& opt = {}) const;
  // (prompt ids, response ids): LLaMA-Factory's encode_oneturn, the prompt of inference.
  std::pair<std::vector<int32_t>, std::vector<int32_t>> encode_oneturn(const Conversation& c, BpeCache& cache,
                                                                       const SampleOptions& opt = {}) const;
  // The text of encode_multiturn, bos/eos as this tokenizer's token strings.
  std::string render_text(const Conversation& c, const SampleOptions& opt = {}) const;
  // input_ids + labels of one conversation, truncated to cutoff_len as LLaMA-Factory does.
  Sample build_sample(const Conversation& c, const SampleOptions& opt, BpeCache& cache) const;

  const TemplateSpec& spec() const { return spec_; }
  int32_t eos_id() const;  // throws when the tokenizer has no eos and the template needs one

 private:
  TemplateSpec spec_;
  const Tokenizer* tok_;
  std::optional<int32_t> bos_, eos_;
  std::string bos_name_, eos_name_;
  std::string eos_problem_, bos_problem_;
};

}  // namespace zlora::data
