// Ollama Modelfile and stop tokens (LLaMA-Factory's data/template.py: _convert_slots_to_ollama,
// _get_ollama_template, get_ollama_modelfile, get_stop_token_ids).
#include "zlora/export/modelfile.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "zlora/core/error.h"

namespace zlora::exporter {

std::optional<int64_t> TokenInfo::id(const std::string& token) const {
  auto it = ids.find(token);
  if (it == ids.end()) return std::nullopt;
  return it->second;
}

namespace {

// LLaMA-Factory's eos after fix_special_tokens (the first stop word under replace_eos); a tokenizer
// without an eos keeps none here.
std::optional<std::string> template_eos(const data::TemplateSpec& spec, std::optional<std::string> tokenizer_eos) {
  if (auto e = data::replaced_eos(spec)) return e;
  return tokenizer_eos;
}

}  // namespace

TokenInfo token_info(const data::TemplateSpec& spec, const data::Tokenizer& tokenizer) {
  TokenInfo t;
  t.has_ids = true;
  auto remember = [&](const std::optional<std::string>& tok) {
    if (!tok) return false;
    auto id = tokenizer.token_to_id(*tok);
    if (id) t.ids[*tok] = *id;
    return id.has_value();
  };
  // A bos the vocabulary lacks has no id, and LLaMA-Factory then leaves it out of the template.
  auto bos = tokenizer.config_token("bos_token");
  if (remember(bos)) t.bos_token = bos;
  t.eos_token = template_eos(spec, tokenizer.config_token("eos_token"));
  remember(t.eos_token);
  for (const auto& w : spec.stop_words) remember(w);
  return t;
}

TokenInfo token_info_without_vocab(const data::TemplateSpec& spec, const std::string& config_json) {
  TokenInfo t;
  std::optional<std::string> bos, eos;
  if (!config_json.empty()) {
    auto c = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
    auto get = [&](const char* key) -> std::optional<std::string> {
      if (!c.is_object() || !c.contains(key)) return std::nullopt;
      const auto& v = c[key];
      if (v.is_string()) return v.get<std::string>();
      if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
      return std::nullopt;
    };
    bos = get("bos_token");
    eos = get("eos_token");
  }
  t.bos_token = bos;
  t.eos_token = template_eos(spec, eos);
  return t;
}

std::vector<int64_t> python_set_order(const std::vector<int64_t>& inserted) {
  // setobject.c (CPython 3.7+): table of 8 slots to start; a probe looks at slot i and, when they fit,
  // the LINEAR_PROBES slots after it, then jumps i = 5i + 1 + (perturb >>= 5); the table grows to the
  // smallest power of two > 4·used once 5·fill >= 3·mask, reinserting in old slot order.
  constexpr size_t kLinearProbes = 9, kPerturbShift = 5;
  using Table = std::vector<std::optional<int64_t>>;
  Table table(8);
  size_t used = 0;
  // Returns the slot holding `key`, or the empty slot where it goes.
  auto probe = [&](const Table& t, int64_t key) {
    const size_t mask = t.size() - 1;
    size_t perturb = size_t(key), i = size_t(key) & mask;
    while (true) {
      const size_t probes = i + kLinearProbes <= mask ? kLinearProbes : 0;
      for (size_t j = 0; j <= probes; ++j)
        if (!t[i + j] || *t[i + j] == key) return i + j;
      perturb >>= kPerturbShift;
      i = (i * 5 + 1 + perturb) & mask;
    }
  };
  for (int64_t key : inserted) {
    if (key < 0) fail("token id {} is negative", key);
    const size_t slot = probe(table, key);
    if (table[slot]) continue;  // already present
    table[slot] = key;
    ++used;
    const size_t mask = table.size() - 1;
    if (used * 5 >= mask * 3) {
      size_t size = 8;
      const size_t min_used = used > 50000 ? used * 2 : used * 4;
      while (size <= min_used) size <<= 1;
      Table grown(size);
      for (const auto& e : table)
        if (e) grown[probe(grown, *e)] = *e;
      table = std::move(grown);
    }
  }
  std::vector<int64_t> order;
  for (const auto& e : table)
    if (e) order.push_back(*e);
  return order;
}

std::vector<std::string> stop_tokens(const data::TemplateSpec& spec, const TokenInfo& tokens) {
  std::vector<std::string> names;
  if (tokens.eos_token) names.push_back(*tokens.eos_token);
  names.insert(names.end(), spec.stop_words.begin(), spec.stop_words.end());
  if (!tokens.has_ids) {
    std::vector<std::string> out;
    for (const auto& n : names)
      if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
    return out;
  }
  std::vector<int64_t> ids;
  std::map<int64_t, std::string> by_id;
  for (const auto& n : names) {
    auto id = tokens.id(n);
    if (!id) continue;  // not in the vocabulary: LLaMA-Factory would have had to add it
    ids.push_back(*id);
    by_id.emplace(*id, n);
  }
  std::vector<std::string> out;
  for (int64_t id : python_set_order(ids)) out.push_back(by_id.at(id));
  return out;
}

std::vector<int64_t> stop_token_ids(const data::TemplateSpec& spec, const TokenInfo& tokens) {
  std::vector<int64_t> out;
  for (const auto& n : stop_tokens(spec, tokens))
    if (auto id = tokens.id(n)) out.push_back(*id);
  return out;
}

namespace {

// _convert_slots_to_ollama: "{{content}}" becomes "{{ .System }}" / "{{ .Content }}" (only the first
// occurrence, as LLaMA-Factory's split()[0..1] does); bos/eos elements become the token text.
std::string slots_to_ollama(const data::Slot& slot, const TokenInfo& tokens, const std::string& placeholder) {
  static const std::string kContent = "{{content}}";
  std::string out;
  for (const auto& element : slot) {
    if (element == "{{bos_token}}") {
      if (tokens.bos_token) out += *tokens.bos_token;
    } else if (element == "{{eos_token}}") {
      if (tokens.eos_token) out += *tokens.eos_token;
    } else {
      const size_t at = element.find(kContent);
      if (at == std::string::npos) {
        out += element;
        continue;
      }
      out += element.substr(0, at);
      out += "{{ " + placeholder + " }}";
      const size_t rest = at + kContent.size();
      const size_t next = element.find(kContent, rest);
      out += element.substr(rest, next == std::string::npos ? std::string::npos : next - rest);
    }
  }
  return out;
}

}  // namespace

std::string ollama_modelfile(const data::TemplateSpec& spec, const TokenInfo& tokens) {
  const std::string prefix = slots_to_ollama(spec.prefix, tokens, "content");
  const std::string system = slots_to_ollama(spec.system, tokens, ".System");
  const std::string user = slots_to_ollama(spec.user, tokens, ".Content");
  const std::string assistant = slots_to_ollama(spec.assistant, tokens, ".Content");
  std::string m = "# ollama modelfile auto-generated by zlora\n\n";
  m += "FROM .\n\n";
  m += "TEMPLATE \"\"\"" + prefix + "{{ if .System }}" + system + "{{ end }}" +
       "{{ range .Messages }}{{ if eq .Role \"user\" }}" + user + "{{ else if eq .Role \"assistant\" }}" + assistant +
       "{{ end }}{{ end }}\"\"\"\n\n";
  if (!spec.default_system.empty()) m += "SYSTEM \"\"\"" + spec.default_system + "\"\"\"\n\n";
  for (const auto& s : stop_tokens(spec, tokens)) m += "PARAMETER stop \"" + s + "\"\n";
  m += "PARAMETER num_ctx 4096\n";
  return m;
}

}  // namespace zlora::exporter
