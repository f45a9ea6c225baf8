// Ollama's Modelfile and the template's stop tokens, exactly as LLaMA-Factory's
// data/template.py::get_ollama_modelfile writes them (torch-free).
//
// The stop tokens are LLaMA-Factory's `get_stop_token_ids`: the set {eos id} ∪ {ids of the stop words},
// listed in CPython's set iteration order. That order is part of the file, so it is reproduced rather
// than approximated (llama3: eom before eot).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "zlora/data/template.h"
#include "zlora/data/tokenizer.h"

namespace zlora::exporter {

// What the Modelfile needs to know of a tokenizer after the template's fix-up (replace_eos).
struct TokenInfo {
  std::optional<std::string> bos_token;  // tokenizer_config.json's bos_token, when it has an id
  std::optional<std::string> eos_token;  // stop_words[0] under replace_eos, else the tokenizer's eos
  std::map<std::string, int64_t> ids;    // ids of bos, eos and every stop word that the vocabulary has
  bool has_ids = false;                  // false: built without a tokenizer.json (strings only)

  std::optional<int64_t> id(const std::string& token) const;
};

// From a loaded tokenizer: ids resolved, eos replaced as the template says.
TokenInfo token_info(const data::TemplateSpec& spec, const data::Tokenizer& tokenizer);
// Without tokenizer.json (a base holding only tokenizer_config.json, or nothing): token strings only.
// `config_json` is tokenizer_config.json's text or "".
TokenInfo token_info_without_vocab(const data::TemplateSpec& spec, const std::string& config_json);

// CPython's iteration order of a set of small non-negative ints built by inserting `inserted` in order
// (hash(i) == i; setobject.c's probing and resizing).
std::vector<int64_t> python_set_order(const std::vector<int64_t>& inserted);

// Stop tokens as strings in LLaMA-Factory's order (eos ∪ stop words). Without ids: eos first, then the
// stop words, duplicates dropped.
std::vector<std::string> stop_tokens(const data::TemplateSpec& spec, const TokenInfo& tokens);
// Their ids (only those the vocabulary has), same order.
std::vector<int64_t> stop_token_ids(const data::TemplateSpec& spec, const TokenInfo& tokens);

// The Modelfile text. `spec.default_system` is what the SYSTEM line shows (apply --default_system first).
std::string ollama_modelfile(const data::TemplateSpec& spec, const TokenInfo& tokens);

}  // namespace zlora::exporter
