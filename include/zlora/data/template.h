// Chat templates as data, and LLaMA-Factory's supervised sample construction (data/template.py,
// data/processor/supervised.py, processor_utils.py::infer_seqlen).
//
// A template is a table of slots. Each slot is a list of elements; an element is a string in which
// "{{content}}" is replaced by the message, or exactly "{{bos_token}}" / "{{eos_token}}", which insert
// the tokenizer's id. Every string element is tokenized on its own (add_special_tokens=False) and the
// pieces are concatenated, as LLaMA-Factory does, so BPE merges never cross element boundaries.
// Adding a template is adding a table to src/data/templates.cpp.
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

struct TemplateSpec {
  std::string name;
  Slot prefix;  // before the system block of turn 0
  Slot system;  // "{{content}}" = system prompt
  Slot user;
  Slot assistant;
  Slot observation;  // tool results (sharegpt `observation` turns)
  std::string default_system;
  std::vector<std::string> stop_words;
  bool efficient_eos = false;  // eos once at the end instead of after each assistant turn
  bool replace_eos = false;    // the eos becomes stop_words[0]
};

// The built-in templates, and lookup by name (unknown names list the valid ones).
const std::vector<TemplateSpec>& builtin_templates();
const TemplateSpec& find_template(const std::string& name);

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
};

// A template bound to a tokenizer: element ids resolved, eos/bos checked once.
class ChatTemplate {
 public:
  ChatTemplate(const TemplateSpec& spec, const Tokenizer& tokenizer, std::optional<std::string> default_system = {});

  // (source ids, target ids) per assistant turn: LLaMA-Factory's encode_multiturn.
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> encode_multiturn(const Conversation& c,
                                                                                      BpeCache& cache) const;
  // input_ids + labels of one conversation, truncated to cutoff_len as LLaMA-Factory does.
  Sample build_sample(const Conversation& c, const SampleOptions& opt, BpeCache& cache) const;

  const TemplateSpec& spec() const { return spec_; }
  int32_t eos_id() const;  // throws when the tokenizer has no eos and the template needs one

 private:
  void append_slot(const Slot& slot, const std::string& content, std::vector<int32_t>& out, BpeCache& cache) const;
  TemplateSpec spec_;
  const Tokenizer* tok_;
  std::optional<int32_t> bos_, eos_;
  std::string eos_problem_, bos_problem_;
};

}  // namespace zlora::data
