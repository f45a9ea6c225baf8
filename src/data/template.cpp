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

namespace {

// One element of a formatted message: text (tokenized on its own) or a bos/eos token.
struct Piece {
  enum Kind { Text, Bos, Eos } kind;
  std::string text;
};
using Pieces = std::vector<Piece>;

const std::string kContent = "{{content}}";

// StringFormatter.apply: the first "{{content}}" of an element is replaced.
std::string fill(const std::string& element, const std::string& content) {
  const size_t pos = element.find(kContent);
  if (pos == std::string::npos) return element;
  std::string s = element;
  s.replace(pos, kContent.size(), content);
  return s;
}

// _convert_elements_to_ids' input: empty strings are dropped.
void append(const Slot& slot, const std::string& content, Pieces& out) {
  for (const std::string& element : slot) {
    if (element == "{{bos_token}}") {
      out.push_back({Piece::Bos, {}});
    } else if (element == "{{eos_token}}") {
      out.push_back({Piece::Eos, {}});
    } else {
      std::string s = fill(element, content);
      if (!s.empty()) out.push_back({Piece::Text, std::move(s)});
    }
  }
}

// Llama2Template: format_system.apply(content=system)[0], a string.
std::string llama2_system_text(const TemplateSpec& spec, const std::string& system) {
  ZLORA_REQUIRE(!spec.system.empty() && spec.system[0] != "{{bos_token}}" && spec.system[0] != "{{eos_token}}",
                "template '{}': a Llama2-style template needs a text system slot", spec.name);
  return fill(spec.system[0], system);
}

// Template._encode and Llama2Template._encode: one piece list per message.
std::vector<Pieces> encode_messages(const TemplateSpec& spec, const std::vector<Message>& messages,
                                    const std::string& system) {
  std::vector<Pieces> encoded;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    Pieces p;
    std::string system_text;  // Llama2: fused into the first user message
    if (i == 0) {
      append(spec.prefix, "", p);
      if (!system.empty()) {
        if (spec.kind == TemplateKind::Llama2)
          system_text = llama2_system_text(spec, system);
        else
          append(spec.system, system, p);
      }
    }
    switch (m.role) {
      case Role::User:
        append(spec.user, system_text + m.content, p);
        break;
      case Role::Assistant:
        append(spec.assistant, m.content, p);
        break;
      case Role::Observation:
        append(spec.observation, m.content, p);
        break;
      default:
        fail(
            "template '{}': {} turns (tool calls) are not supported by zlora yet; remove them or map them to "
            "assistant turns",
            spec.name, role_name(m.role));
    }
    encoded.push_back(std::move(p));
  }
  return encoded;
}

// ReasoningTemplate.remove_thought: re.sub(t0 (.*?) t1, "", DOTALL), then lstrip("\n").
std::string remove_thought(const std::string& content, const std::pair<std::string, std::string>& words) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t open = content.find(words.first, pos);
    if (open == std::string::npos) break;
    const size_t close = content.find(words.second, open + words.first.size());
    if (close == std::string::npos) break;
    out.append(content, pos, open - pos);
    pos = close + words.second.size();
  }
  out.append(content, pos, std::string::npos);
  const size_t first = out.find_first_not_of('\n');
  return first == std::string::npos ? std::string() : out.substr(first);
}

// Python's str.strip() (ASCII whitespace).
std::string strip(const std::string& s) {
  static const char* kSpace = " \t\n\r\f\v";
  const size_t a = s.find_first_not_of(kSpace);
  if (a == std::string::npos) return {};
  return s.substr(a, s.find_last_not_of(kSpace) - a + 1);
}

// The test before adding an empty thought: neither stripped thought word occurs in the answer.
bool has_thought(const std::string& content, const std::pair<std::string, std::string>& words) {
  return content.find(strip(words.first)) != std::string::npos ||
         content.find(strip(words.second)) != std::string::npos;
}

using PiecePairs = std::vector<std::pair<Pieces, Pieces>>;

// Template.encode_multiturn / ReasoningTemplate.encode_multiturn (discarding_history_cot =
// mask_history and not preserve_thinking, as supervised.py passes it).
PiecePairs multiturn_pieces(const TemplateSpec& spec, const Conversation& c, const SampleOptions& opt) {
  const std::string& system = c.system.empty() ? spec.default_system : c.system;
  std::vector<Message> messages = c.messages;
  const size_t n = messages.size();
  const bool reasoning = spec.kind == TemplateKind::Reasoning;
  const bool discarding = reasoning && opt.mask_history && !opt.preserve_thinking;
  if (reasoning && !opt.enable_thinking)  // remove all cot
    for (size_t i = 1; i < n; i += 2) messages[i].content = remove_thought(messages[i].content, spec.thought_words);
  if (discarding)  // preserve the last cot
    for (size_t i = 1; i + 2 < n; i += 2) messages[i].content = remove_thought(messages[i].content, spec.thought_words);
  std::vector<Pieces> encoded = encode_messages(spec, messages, system);
  if (reasoning) {
    std::vector<size_t> turns;
    if (discarding) {
      if (n >= 2) turns.push_back(n - 2);
    } else {
      for (size_t i = 0; i + 1 < n; i += 2) turns.push_back(i);
    }
    const Piece thought{Piece::Text, spec.empty_thought_text()};
    for (size_t i : turns) {
      if (has_thought(messages[i + 1].content, spec.thought_words)) continue;
      if (!opt.enable_thinking)  // do not compute loss
        encoded[i].push_back(thought);
      else  // do compute loss
        encoded[i + 1].insert(encoded[i + 1].begin(), thought);
    }
  }
  PiecePairs pairs;
  for (size_t i = 0; i + 1 < encoded.size(); i += 2)
    pairs.emplace_back(std::move(encoded[i]), std::move(encoded[i + 1]));
  return pairs;
}

// Template.encode_oneturn / ReasoningTemplate.encode_oneturn: all messages but the last are the prompt.
std::pair<Pieces, Pieces> oneturn_pieces(const TemplateSpec& spec, const Conversation& c, const SampleOptions& opt) {
  ZLORA_REQUIRE(!c.messages.empty(), "template '{}': a conversation without messages", spec.name);
  const std::string& system = c.system.empty() ? spec.default_system : c.system;
  std::vector<Message> messages = c.messages;
  const size_t n = messages.size();
  const bool reasoning = spec.kind == TemplateKind::Reasoning;
  if (reasoning && !opt.preserve_thinking)
    for (size_t i = 1; i + 2 < n; i += 2) messages[i].content = remove_thought(messages[i].content, spec.thought_words);
  if (reasoning && !opt.enable_thinking)
    messages[n - 1].content = remove_thought(messages[n - 1].content, spec.thought_words);
  std::vector<Pieces> encoded = encode_messages(spec, messages, system);
  std::pair<Pieces, Pieces> out;
  for (size_t i = 0; i + 1 < n; ++i) out.first.insert(out.first.end(), encoded[i].begin(), encoded[i].end());
  out.second = std::move(encoded[n - 1]);
  if (reasoning && !has_thought(messages[n - 1].content, spec.thought_words)) {
    const Piece thought{Piece::Text, spec.empty_thought_text()};
    if (!opt.enable_thinking)
      out.first.push_back(thought);
    else
      out.second.insert(out.second.begin(), thought);
  }
  return out;
}

std::string pieces_text(const Pieces& pieces, const std::string& bos, const std::string& eos) {
  std::string s;
  for (const Piece& p : pieces) s += p.kind == Piece::Text ? p.text : p.kind == Piece::Bos ? bos : eos;
  return s;
}

std::string text_eos(const TemplateSpec& spec, const TextTokens& tokens) {
  return eos_token_for(spec, tokens.eos.empty() ? std::nullopt : std::optional<std::string>(tokens.eos));
}

bool slots_use(const TemplateSpec& spec, const std::string& element) {
  for (const Slot* slot : {&spec.prefix, &spec.system, &spec.user, &spec.assistant, &spec.observation})
    for (const std::string& e : *slot)
      if (e == element) return true;
  return false;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> render_multiturn(const TemplateSpec& spec, const Conversation& c,
                                                                  const TextTokens& tokens, const SampleOptions& opt) {
  const std::string eos = text_eos(spec, tokens);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [source, target] : multiturn_pieces(spec, c, opt))
    out.emplace_back(pieces_text(source, tokens.bos, eos), pieces_text(target, tokens.bos, eos));
  return out;
}

std::pair<std::string, std::string> render_oneturn(const TemplateSpec& spec, const Conversation& c,
                                                   const TextTokens& tokens, const SampleOptions& opt) {
  const std::string eos = text_eos(spec, tokens);
  auto [prompt, response] = oneturn_pieces(spec, c, opt);
  return {pieces_text(prompt, tokens.bos, eos), pieces_text(response, tokens.bos, eos)};
}

std::string render_text(const TemplateSpec& spec, const Conversation& c, const TextTokens& tokens,
                        const SampleOptions& opt) {
  std::string s;
  for (const auto& [source, target] : render_multiturn(spec, c, tokens, opt)) s += source + target;
  return s;
}

std::optional<std::string> replaced_eos(const TemplateSpec& spec) {
  if (spec.replace_eos && !spec.stop_words.empty()) return spec.stop_words[0];
  return std::nullopt;
}

std::string eos_token_for(const TemplateSpec& spec, const std::optional<std::string>& tokenizer_eos) {
  if (auto e = replaced_eos(spec)) return *e;
  return tokenizer_eos.value_or("<|endoftext|>");
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
  for (const std::string& t : spec_.special_tokens) {
    auto id = tokenizer.token_to_id(t);
    ZLORA_REQUIRE(id.has_value() && tokenizer.encode(t) == std::vector<int32_t>{*id},
                  "template '{}': its special token '{}' is not a single token of {}; this template does not fit "
                  "this model's tokenizer (pick the template of the model family)",
                  spec_.name, t, tokenizer.origin());
  }
  // eos: the template's first stop word (replace_eos), else tokenizer_config.json's eos_token, else
  // "<|endoftext|>".
  eos_name_ = eos_token_for(spec_, tokenizer.config_token("eos_token"));
  if (auto id = tokenizer.token_to_id(eos_name_))
    eos_ = *id;
  else
    eos_problem_ = fmt::format("the eos token '{}' is not in the vocabulary of {}", text::printable(eos_name_),
                               tokenizer.origin());
  if (auto b = tokenizer.config_token("bos_token")) {
    bos_name_ = *b;
    if (auto id = tokenizer.token_to_id(*b))
      bos_ = *id;
    else
      bos_problem_ =
          fmt::format("the bos token '{}' is not in the vocabulary of {}", text::printable(*b), tokenizer.origin());
  } else {
    bos_problem_ =
        fmt::format("{} names no bos_token (tokenizer_config.json beside tokenizer.json)", tokenizer.origin());
  }
  // A template that inserts bos/eos fails here, before any data is read, when the tokenizer lacks them.
  if (slots_use(spec_, "{{bos_token}}"))
    ZLORA_REQUIRE(bos_.has_value(), "template '{}' needs a bos token: {}", spec_.name, bos_problem_);
  if (spec_.efficient_eos || slots_use(spec_, "{{eos_token}}")) eos_id();
}

int32_t ChatTemplate::eos_id() const {
  ZLORA_REQUIRE(eos_.has_value(), "template '{}' needs an eos token: {}", spec_.name, eos_problem_);
  return *eos_;
}

namespace {

// _convert_elements_to_ids. The constructor made sure a template's bos/eos exist when it uses them.
std::vector<int32_t> ids_of(const Pieces& pieces, const Tokenizer& tok, BpeCache& cache, std::optional<int32_t> bos,
                            std::optional<int32_t> eos) {
  std::vector<int32_t> out;
  for (const Piece& p : pieces) {
    if (p.kind == Piece::Text) {
      std::vector<int32_t> ids = tok.encode(p.text, &cache);
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      const std::optional<int32_t>& id = p.kind == Piece::Bos ? bos : eos;
      ZLORA_REQUIRE(id.has_value(), "internal: a {} token without an id", p.kind == Piece::Bos ? "bos" : "eos");
      out.push_back(*id);
    }
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> ChatTemplate::encode_multiturn(
    const Conversation& c, BpeCache& cache, const SampleOptions& opt) const {
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pairs;
  for (const auto& [source, target] : multiturn_pieces(spec_, c, opt))
    pairs.emplace_back(ids_of(source, *tok_, cache, bos_, eos_), ids_of(target, *tok_, cache, bos_, eos_));
  return pairs;
}

std::pair<std::vector<int32_t>, std::vector<int32_t>> ChatTemplate::encode_oneturn(const Conversation& c,
                                                                                   BpeCache& cache,
                                                                                   const SampleOptions& opt) const {
  auto [prompt, response] = oneturn_pieces(spec_, c, opt);
  return {ids_of(prompt, *tok_, cache, bos_, eos_), ids_of(response, *tok_, cache, bos_, eos_)};
}

std::string ChatTemplate::render_text(const Conversation& c, const SampleOptions& opt) const {
  std::string s;
  for (const auto& [source, target] : multiturn_pieces(spec_, c, opt))
    s += pieces_text(source, bos_name_, eos_name_) + pieces_text(target, bos_name_, eos_name_);
  return s;
}

Sample ChatTemplate::build_sample(const Conversation& c, const SampleOptions& opt, BpeCache& cache) const {
  // get_template_and_fix_tokenizer: "Current template does not support `train_on_prompt`."
  ZLORA_REQUIRE(!(opt.train_on_prompt && spec_.efficient_eos),
                "template '{}' does not support train_on_prompt (it appends one eos at the end of the sample instead "
                "of one per answer, as LLaMA-Factory's efficient_eos templates do); set train_on_prompt: false",
                spec_.name);
  auto pairs = encode_multiturn(c, cache, opt);
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
