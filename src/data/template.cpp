#include "zlora/data/template.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <algorithm>

namespace zlora::data {

std::pair<int64_t, int64_t> infer_seqlen(int64_t source_len, int64_t target_len, int64_t cutoff_len) {
  int64_t max_target;
  if (target_len * 2 < cutoff_len)  // the target fits with room to spare: only the source is cut
    max_target = cutoff_len;
  else if (source_len * 2 < cutoff_len)  // the source is short: the target takes the rest
    max_target = cutoff_len - source_len;
  else  // both long: split the budget in proportion (Python's int() truncates toward zero)
    max_target = static_cast<int64_t>(double(cutoff_len) * (double(target_len) / double(source_len + target_len)));
  int64_t new_target = std::min(max_target, target_len);
  int64_t new_source = std::min(std::max<int64_t>(cutoff_len - new_target, 0), source_len);
  return {new_source, new_target};
}

ChatTemplate::ChatTemplate(const TemplateSpec& spec, const Tokenizer& tokenizer,
                           std::optional<std::string> default_system)
    : spec_(spec), tok_(&tokenizer) {
  if (default_system) spec_.default_system = *default_system;
  for (const std::string& w : spec_.stop_words)
    ZLORA_REQUIRE(tokenizer.token_to_id(w).has_value(),
                  "template '{}': stop word '{}' is not a token of {}; this template does not fit this model's "
                  "tokenizer (pick the template of the model family)",
                  spec_.name, w, tokenizer.origin());
  // eos: the template's first stop word (replace_eos), else tokenizer_config.json's eos_token, else
  // "<|endoftext|>" (LLaMA-Factory's fix_special_tokens adds it when the tokenizer has none).
  std::string eos_name;
  if (spec_.replace_eos && !spec_.stop_words.empty())
    eos_name = spec_.stop_words[0];
  else if (auto e = tokenizer.config_token("eos_token"))
    eos_name = *e;
  else
    eos_name = "<|endoftext|>";
  if (auto id = tokenizer.token_to_id(eos_name))
    eos_ = *id;
  else
    eos_problem_ =
        fmt::format("the eos token '{}' is not in the vocabulary of {}", text::printable(eos_name), tokenizer.origin());
  if (auto b = tokenizer.config_token("bos_token")) {
    if (auto id = tokenizer.token_to_id(*b))
      bos_ = *id;
    else
      bos_problem_ =
          fmt::format("the bos token '{}' is not in the vocabulary of {}", text::printable(*b), tokenizer.origin());
  } else {
    bos_problem_ =
        fmt::format("{} names no bos_token (tokenizer_config.json beside tokenizer.json)", tokenizer.origin());
  }
}

int32_t ChatTemplate::eos_id() const {
  ZLORA_REQUIRE(eos_.has_value(), "template '{}' needs an eos token: {}", spec_.name, eos_problem_);
  return *eos_;
}

void ChatTemplate::append_slot(const Slot& slot, const std::string& content, std::vector<int32_t>& out,
                               BpeCache& cache) const {
  static const std::string kContent = "{{content}}";
  for (const std::string& element : slot) {
    if (element == "{{eos_token}}") {
      out.push_back(eos_id());
    } else if (element == "{{bos_token}}") {
      ZLORA_REQUIRE(bos_.has_value(), "template '{}' needs a bos token: {}", spec_.name, bos_problem_);
      out.push_back(*bos_);
    } else {
      std::string s = element;
      for (size_t pos = s.find(kContent); pos != std::string::npos; pos = s.find(kContent, pos + content.size()))
        s.replace(pos, kContent.size(), content);
      if (!s.empty()) {
        std::vector<int32_t> ids = tok_->encode(s, &cache);
        out.insert(out.end(), ids.begin(), ids.end());
      }
    }
  }
}

std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> ChatTemplate::encode_multiturn(
    const Conversation& c, BpeCache& cache) const {
  const std::string& system = c.system.empty() ? spec_.default_system : c.system;
  std::vector<std::vector<int32_t>> encoded;
  for (size_t i = 0; i < c.messages.size(); ++i) {
    const Message& m = c.messages[i];
    std::vector<int32_t> ids;
    if (i == 0) {
      append_slot(spec_.prefix, "", ids, cache);
      if (!system.empty()) append_slot(spec_.system, system, ids, cache);
    }
    switch (m.role) {
      case Role::User:
        append_slot(spec_.user, m.content, ids, cache);
        break;
      case Role::Assistant:
        append_slot(spec_.assistant, m.content, ids, cache);
        break;
      case Role::Observation:
        append_slot(spec_.observation, m.content, ids, cache);
        break;
      default:
        fail(
            "template '{}': {} turns (tool calls) are not supported by zlora yet; remove them or map them to "
            "assistant turns",
            spec_.name, role_name(m.role));
    }
    encoded.push_back(std::move(ids));
  }
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pairs;
  for (size_t i = 0; i + 1 < encoded.size(); i += 2)
    pairs.emplace_back(std::move(encoded[i]), std::move(encoded[i + 1]));
  return pairs;
}

Sample ChatTemplate::build_sample(const Conversation& c, const SampleOptions& opt, BpeCache& cache) const {
  auto pairs = encode_multiturn(c, cache);
  Sample s;
  int64_t total = spec_.efficient_eos ? 1 : 0;
  // mask_history trains on the last turn only and gives it the budget first.
  if (opt.mask_history) std::reverse(pairs.begin(), pairs.end());
  for (size_t turn = 0; turn < pairs.size(); ++turn) {
    if (total >= opt.cutoff_len) break;
    auto& [source, target] = pairs[turn];
    auto [source_len, target_len] =
        infer_seqlen(int64_t(source.size()), int64_t(target.size()), opt.cutoff_len - total);
    source.resize(size_t(source_len));  // truncation keeps the head
    target.resize(size_t(target_len));
    total += source_len + target_len;
    std::vector<int32_t> source_label;
    if (opt.train_on_prompt) {
      source_label = source;
    } else if (spec_.efficient_eos && turn != 0) {
      source_label.assign(source.size(), kIgnoreIndex);
      if (!source_label.empty()) source_label[0] = eos_id();
    } else {
      source_label.assign(source.size(), kIgnoreIndex);
    }
    std::vector<int32_t> target_label =
        opt.mask_history && turn != 0 ? std::vector<int32_t>(target.size(), kIgnoreIndex) : target;
    std::vector<int32_t> ids = source, labels = source_label;
    ids.insert(ids.end(), target.begin(), target.end());
    labels.insert(labels.end(), target_label.begin(), target_label.end());
    if (opt.mask_history) {  // turns were reversed: prepend
      ids.insert(ids.end(), s.input_ids.begin(), s.input_ids.end());
      labels.insert(labels.end(), s.labels.begin(), s.labels.end());
      s.input_ids = std::move(ids);
      s.labels = std::move(labels);
    } else {
      s.input_ids.insert(s.input_ids.end(), ids.begin(), ids.end());
      s.labels.insert(s.labels.end(), labels.begin(), labels.end());
    }
    s.prompt_tokens += source_len;
    s.response_tokens += target_len;
  }
  if (spec_.efficient_eos) {
    s.input_ids.push_back(eos_id());
    s.labels.push_back(eos_id());
  }
  return s;
}

}  // namespace zlora::data
