// The chat templates, as data: one table each, transcribed from LLaMA-Factory's data/template.py
// (register_template calls). Fields left empty take register_template's defaults, applied in
// builtin_templates(): user "{{content}}", assistant "{{content}}" + eos (no eos with efficient_eos),
// system "{{content}}", observation = the template's user slot.
#include "zlora/data/template.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

namespace zlora::data {

namespace {

TemplateSpec qwen() {
  TemplateSpec t;
  t.name = "qwen";
  t.system = {"<|im_start|>system\n{{content}}<|im_end|>\n"};
  t.user = {"<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"};
  t.assistant = {"{{content}}<|im_end|>\n"};
  t.observation = {
      "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"};
  t.default_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
  t.stop_words = {"<|im_end|>"};
  t.replace_eos = true;
  return t;
}

TemplateSpec chatml() {
  TemplateSpec t;
  t.name = "chatml";
  t.system = {"<|im_start|>system\n{{content}}<|im_end|>\n"};
  t.user = {"<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"};
  t.assistant = {"{{content}}<|im_end|>\n"};
  t.observation = {"<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n"};
  t.stop_words = {"<|im_end|>", "<|im_start|>"};
  t.replace_eos = true;
  return t;
}

TemplateSpec llama3() {
  TemplateSpec t;
  t.name = "llama3";
  t.prefix = {"{{bos_token}}"};
  t.system = {"<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>"};
  t.user = {
      "<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
      "\n\n"};
  t.assistant = {"{{content}}<|eot_id|>"};
  t.observation = {
      "<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_id|>assistant<|end_header_id|"
      ">\n\n"};
  t.stop_words = {"<|eot_id|>", "<|eom_id|>"};
  t.replace_eos = true;
  return t;
}

TemplateSpec default_() {
  TemplateSpec t;
  t.name = "default";
  t.user = {"Human: {{content}}", "{{eos_token}}", "\nAssistant:"};
  t.assistant = {"{{content}}", "{{eos_token}}", "\n"};
  t.system = {"System: {{content}}", "{{eos_token}}", "\n"};
  return t;
}

TemplateSpec alpaca() {
  TemplateSpec t;
  t.name = "alpaca";
  t.user = {"### Instruction:\n{{content}}\n\n### Response:\n"};
  t.assistant = {"{{content}}", "{{eos_token}}", "\n\n"};
  t.default_system =
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n";
  return t;
}

TemplateSpec empty() {
  TemplateSpec t;
  t.name = "empty";
  t.assistant = {"{{content}}"};
  return t;
}

// register_template's defaults for slots a table leaves empty.
TemplateSpec with_defaults(TemplateSpec t) {
  if (t.user.empty()) t.user = {"{{content}}"};
  if (t.assistant.empty()) t.assistant = t.efficient_eos ? Slot{"{{content}}"} : Slot{"{{content}}", "{{eos_token}}"};
  if (t.system.empty()) t.system = {"{{content}}"};  // the bare default user formatter, not this template's user slot
  if (t.observation.empty()) t.observation = t.user;
  return t;
}

}  // namespace

const std::vector<TemplateSpec>& builtin_templates() {
  static const std::vector<TemplateSpec> all = [] {
    std::vector<TemplateSpec> v;
    for (auto t : {qwen(), chatml(), llama3(), default_(), alpaca(), empty()}) v.push_back(with_defaults(t));
    return v;
  }();
  return all;
}

const TemplateSpec& find_template(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& t : builtin_templates()) {
    if (t.name == name) return t;
    names.push_back(t.name);
  }
  fail("template '{}' does not exist{} (valid: {})", name, text::did_you_mean(name, names), text::join(names, ", "));
}

}  // namespace zlora::data
