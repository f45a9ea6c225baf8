// Options of LLaMA-Factory and of Hugging Face's (Seq2Seq)TrainingArguments that no zlora schema binds.
// A YAML written for LLaMA-Factory names many of them; each gets a decision instead of "unknown option":
//   Ignored:     accepted whatever the value, with one info line per job saying why it changes nothing
//                here (dataloader_num_workers: zlora reads a prepared HDF5 store, no loader workers).
//   Unsupported: a LLaMA-Factory feature zlora does not implement (quantization_bit, use_galore, ...).
//                Its "off" values (null, false, 0, or the listed ones) are accepted silently, since
//                LLaMA-Factory's examples often spell them out; any other value is refused, naming the
//                feature.
// The table lives in src/config/foreign.cpp; docs/config-reference.md lists it (`zlora config-reference`).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace zlora::config {

enum class ForeignKind { Ignored, Unsupported };

struct ForeignOption {
  std::string_view name;
  ForeignKind kind;
  // Unsupported: comma-separated values that mean "feature off", besides null/false/0/none/"" (which
  // always do). Ignored: unused.
  std::string_view off_values;
  // Ignored: why it has no effect in zlora. Unsupported: what the feature is, and what to use instead.
  std::string_view why;
};

// The whole table, in the order docs/config-reference.md lists it.
const std::vector<ForeignOption>& foreign_options();
// nullptr when `name` is not a known LLaMA-Factory / transformers option.
const ForeignOption* find_foreign_option(std::string_view name);

// What a foreign option with this value does: an info line to print (Ignored), nothing (an Unsupported
// option at an off value; returns ""), or an Error thrown (an Unsupported option switched on).
std::string foreign_option_note(const ForeignOption& opt, const std::string& value, const std::string& where);

// The table as Markdown, for docs/config-reference.md.
std::string foreign_options_markdown();

}  // namespace zlora::config
