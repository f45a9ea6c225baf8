// The chat templates, as data: one table each, transcribed from LLaMA-Factory's data/template.py
// (register_template calls; the line numbers cited are of its source at commit ff6d4d12 of
// hiyouga/LLaMA-Factory). Fields left empty take register_template's defaults, applied in
// builtin_templates(): user "{{content}}", assistant "{{content}}" + eos (no eos with efficient_eos),
// system "{{content}}", observation = the template's user slot. Tool formats (format_tools,
// format_function) and multimodal plugins are not carried: zlora has no tool or image turns.
#include "zlora/data/template.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

namespace zlora::data {

namespace {

TemplateSpec qwen() {
  TemplateSpec t;
  t.name = "qwen";
  t.description = "Qwen1.5, Qwen2, Qwen2.5 chat (ChatML; default system \"You are Qwen, ...\")";
  t.special_tokens = {"<|im_start|>"};
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
  t.description = "generic ChatML (<|im_start|>role ... <|im_end|>), no default system";
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
  t.description = "Llama 3, 3.1, 3.2, 3.3 Instruct";
  t.special_tokens = {"<|start_header_id|>", "<|end_header_id|>"};
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
  t.description = "LLaMA-Factory's generic \"Human: ... Assistant:\" format with the tokenizer's eos";
  t.user = {"Human: {{content}}", "{{eos_token}}", "\nAssistant:"};
  t.assistant = {"{{content}}", "{{eos_token}}", "\n"};
  t.system = {"System: {{content}}", "{{eos_token}}", "\n"};
  return t;
}

TemplateSpec alpaca() {
  TemplateSpec t;
  t.name = "alpaca";
  t.description = "Alpaca instruction format (### Instruction / ### Response)";
  t.user = {"### Instruction:\n{{content}}\n\n### Response:\n"};
  t.assistant = {"{{content}}", "{{eos_token}}", "\n\n"};
  t.default_system =
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n";
  return t;
}

TemplateSpec empty() {
  TemplateSpec t;
  t.name = "empty";
  t.description = "no formatting: the prompt and the answer as they are (base models, pretraining-style text)";
  t.assistant = {"{{content}}"};
  return t;
}

// ---------------------------------------------------------------------------------------------------
// More of LLaMA-Factory's text templates, alphabetical; each cites its register_template call.

const char* const kImSystem = "<|im_start|>system\n{{content}}<|im_end|>\n";
const char* const kImUser = "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n";
const char* const kImAssistant = "{{content}}<|im_end|>\n";
const char* const kImToolObservation = "<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n";
const char* const kQwenObservation =
    "<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n";

TemplateSpec named(const char* name, const char* description) {
  TemplateSpec t;
  t.name = name;
  t.description = description;
  return t;
}

// template.py:792
TemplateSpec chatml_de() {
  TemplateSpec t = named("chatml_de", "German ChatML models (default system in German)");
  t.system = {kImSystem};
  t.user = {kImUser};
  t.assistant = {kImAssistant};
  t.observation = {kImToolObservation};
  t.default_system = "Du bist ein freundlicher und hilfsbereiter KI-Assistent.";
  t.stop_words = {"<|im_end|>", "<|im_start|>"};
  t.replace_eos = true;
  return t;
}

// template.py:805
TemplateSpec cohere() {
  TemplateSpec t = named("cohere", "Cohere Command R, Command R+, Aya");
  t.prefix = {"{{bos_token}}"};
  t.user = {
      "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"};
  t.system = {"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>"};
  t.special_tokens = {"<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>"};
  return t;
}

// template.py:859
TemplateSpec deepseek() {
  TemplateSpec t = named("deepseek", "DeepSeek LLM chat, DeepSeek-V2 / V2.5 chat");
  t.prefix = {"{{bos_token}}"};
  t.user = {"User: {{content}}\n\nAssistant:"};
  t.system = {"{{content}}\n\n"};
  return t;
}

// template.py:867
TemplateSpec deepseek3() {
  TemplateSpec t = named("deepseek3", "DeepSeek-V3, V3.1 (non-thinking)");
  t.prefix = {"{{bos_token}}"};
  t.user = {"<｜User｜>{{content}}<｜Assistant｜>"};
  t.special_tokens = {"<｜User｜>", "<｜Assistant｜>"};
  return t;
}

// template.py:875
TemplateSpec deepseekr1() {
  TemplateSpec t = named("deepseekr1", "DeepSeek-R1 and its distills (reasoning: adds an empty <think> block)");
  t.prefix = {"{{bos_token}}"};
  t.user = {"<｜User｜>{{content}}<｜Assistant｜>"};
  t.kind = TemplateKind::Reasoning;
  t.special_tokens = {"<｜User｜>", "<｜Assistant｜>"};
  return t;
}

// template.py:896
TemplateSpec deepseekcoder() {
  TemplateSpec t = named("deepseekcoder", "DeepSeek Coder instruct (1.3B-33B)");
  t.prefix = {"{{bos_token}}"};
  t.user = {"### Instruction:\n{{content}}\n### Response:"};
  t.assistant = {"\n{{content}}\n<|EOT|>\n"};
  t.default_system =
      "You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by DeepSeek Company, and "
      "you only answer questions related to computer science. For politically sensitive questions, security and "
      "privacy issues, and other non-computer science questions, you will refuse to answer.\n";
  return t;
}

// template.py:954
TemplateSpec ernie_nothink() {
  TemplateSpec t = named("ernie_nothink", "ERNIE 4.5 text models (no thinking)");
  t.prefix = {"<|begin_of_sentence|>"};
  t.user = {"User: {{content}}\nAssistant: "};
  t.assistant = {"{{content}}<|end_of_sentence|>"};
  t.system = {"{{content}}\n"};
  t.stop_words = {"<|end_of_sentence|>"};
  return t;
}

// template.py:977
TemplateSpec exaone() {
  TemplateSpec t = named("exaone", "LG EXAONE 3.0, 3.5");
  t.user = {"[|user|]{{content}}\n[|assistant|]"};
  t.assistant = {"{{content}}", "{{eos_token}}", "\n"};
  t.system = {"[|system|]{{content}}[|endofturn|]\n"};
  return t;
}

// template.py:985
TemplateSpec falcon() {
  TemplateSpec t = named("falcon", "Falcon instruct (7B, 40B, 180B chat)");
  t.user = {"User: {{content}}\nFalcon:"};
  t.assistant = {"{{content}}\n"};
  t.efficient_eos = true;
  return t;
}

// The gemma family (template.py:1013, 1029, 1045): Llama2-style, the system prompt + "\n\n" opens the
// first user turn.
TemplateSpec gemma_like(const char* name, const char* description) {
  TemplateSpec t = named(name, description);
  t.prefix = {"{{bos_token}}"};
  t.user = {"<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n"};
  t.assistant = {"{{content}}<end_of_turn>\n"};
  t.system = {"{{content}}\n\n"};
  t.observation = {"<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n"};
  t.stop_words = {"<end_of_turn>"};
  t.replace_eos = true;
  t.kind = TemplateKind::Llama2;
  t.special_tokens = {"<start_of_turn>"};
  return t;
}

TemplateSpec gemma() { return gemma_like("gemma", "Gemma, CodeGemma (system prompt folded into the first user turn)"); }

TemplateSpec gemma2() {
  TemplateSpec t =
      gemma_like("gemma2", "Gemma 2 (one eos at the end of the sample; system folded into the first user turn)");
  t.stop_words = {"<eos>", "<end_of_turn>"};
  t.replace_eos = false;
  t.efficient_eos = true;
  return t;
}

TemplateSpec gemma3() {
  return gemma_like("gemma3", "Gemma 3 text (images are not supported; system folded into the first user turn)");
}

// The GLM-4 family (template.py:1128, 1143, 1209, 1226): one eos at the end of the sample.
TemplateSpec glm4_like(const char* name, const char* description) {
  TemplateSpec t = named(name, description);
  t.prefix = {"[gMASK]<sop>"};
  t.user = {"<|user|>\n{{content}}<|assistant|>"};
  t.assistant = {"\n{{content}}"};
  t.system = {"<|system|>\n{{content}}"};
  t.observation = {"<|observation|>\n{{content}}<|assistant|>"};
  t.stop_words = {"<|user|>", "<|observation|>"};
  t.efficient_eos = true;
  t.special_tokens = {"[gMASK]", "<sop>", "<|assistant|>", "<|system|>"};
  return t;
}

TemplateSpec glm4() { return glm4_like("glm4", "GLM-4 9B chat, GLM-4-0414"); }

TemplateSpec glm4_moe() {
  TemplateSpec t = glm4_like("glm4_moe", "GLM-4.5, GLM-4.6 (reasoning: adds an empty <think> block)");
  t.kind = TemplateKind::Reasoning;
  return t;
}

// Glm47ReasoningTemplate.add_thought: an empty thought is the closing word alone.
TemplateSpec glm4_7() {
  TemplateSpec t = glm4_like("glm4_7", "GLM-4.7 (reasoning: an empty thought is a bare </think>)");
  t.kind = TemplateKind::Reasoning;
  t.thought_words = {"<think>", "</think>"};
  t.empty_thought = "</think>";
  return t;
}

TemplateSpec glmz1() {
  TemplateSpec t = glm4_like("glmz1", "GLM-Z1 (reasoning: adds an empty <think> block)");
  t.kind = TemplateKind::Reasoning;
  return t;
}

// template.py:1241
TemplateSpec gpt_oss() {
  TemplateSpec t = named("gpt_oss", "OpenAI gpt-oss (reasoning: an empty analysis channel)");
  t.user = {"<|start|>user<|message|>{{content}}<|end|><|start|>assistant"};
  t.assistant = {"{{content}}"};
  t.system = {"<|start|>system<|message|>{{content}}<|end|>"};
  t.default_system = "You are ChatGPT, a large language model trained by OpenAI.";
  t.thought_words = {"<|channel|>analysis<|message|>", "<|end|><|start|>assistant<|channel|>final<|message|>"};
  t.efficient_eos = true;
  t.kind = TemplateKind::Reasoning;
  t.special_tokens = {"<|start|>", "<|message|>", "<|end|>", "<|channel|>"};
  return t;
}

// template.py:1253
TemplateSpec granite3() {
  TemplateSpec t = named("granite3", "IBM Granite 3.0-3.3 instruct");
  t.user = {
      "<|start_of_role|>user<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"};
  t.assistant = {"{{content}}<|end_of_text|>\n"};
  t.system = {"<|start_of_role|>system<|end_of_role|>{{content}}<|end_of_text|>\n"};
  t.special_tokens = {"<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"};
  return t;
}

// template.py:1277
TemplateSpec granite4() {
  TemplateSpec t = named("granite4", "IBM Granite 4.0");
  t.user = {
      "<|start_of_role|>user<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>"};
  t.assistant = {"{{content}}<|end_of_text|>\n"};
  t.system = {"<|start_of_role|>system<|end_of_role|>{{content}}<|end_of_text|>\n"};
  t.observation = {"<|start_of_role|>tool<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|>assistant\n"};
  t.stop_words = {"<|end_of_text|>"};
  t.default_system = "You are Granite, developed by IBM. You are a helpful AI assistant.";
  t.special_tokens = {"<|start_of_role|>", "<|end_of_role|>"};
  return t;
}

// template.py:1348
TemplateSpec intern2() {
  TemplateSpec t = named("intern2", "InternLM2, InternLM2.5, InternLM3 chat");
  t.prefix = {"{{bos_token}}"};
  t.user = {kImUser};
  t.assistant = {kImAssistant};
  t.system = {kImSystem};
  t.default_system =
      "You are an AI assistant whose name is InternLM (书生·浦语).\n"
      "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI Laboratory "
      "(上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
      "- InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the user such as "
      "English and 中文.";
  t.stop_words = {"<|im_end|>"};
  t.special_tokens = {"<|im_start|>"};
  return t;
}

// template.py:1423
TemplateSpec lfm2() {
  TemplateSpec t = named("lfm2", "Liquid AI LFM2 text models");
  t.user = {kImUser};
  t.assistant = {kImAssistant};
  t.system = {kImSystem};
  t.observation = {
      "<|im_start|>tool\n<|tool_response_start|>{{content}}<|tool_response_end|><|im_end|>\n<|im_start|>assistant\n"};
  t.default_system = "You are a helpful AI assistant.";
  t.stop_words = {"<|im_end|>"};
  t.replace_eos = true;
  t.special_tokens = {"<|im_start|>"};
  return t;
}

// template.py:1464, 1473: Llama2-style, "<<SYS>>" block inside the first [INST].
TemplateSpec llama2() {
  TemplateSpec t = named("llama2", "Llama 2 chat (system in <<SYS>> inside the first [INST])");
  t.user = {"{{bos_token}}", "[INST] {{content}} [/INST]"};
  t.system = {"<<SYS>>\n{{content}}\n<</SYS>>\n\n"};
  t.kind = TemplateKind::Llama2;
  return t;
}

TemplateSpec llama2_zh() {
  TemplateSpec t = llama2();
  t.name = "llama2_zh";
  t.description = "Chinese Llama 2 chat (Llama2-Chinese, Chinese-Alpaca-2; bilingual default system)";
  t.default_system = "You are a helpful assistant. 你是一个乐于助人的助手。";
  return t;
}

// template.py:1510
TemplateSpec llama4() {
  TemplateSpec t = named("llama4", "Llama 4 Scout, Maverick (text)");
  t.prefix = {"{{bos_token}}"};
  t.user = {"<|header_start|>user<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n"};
  t.assistant = {"{{content}}<|eot|>"};
  t.system = {"<|header_start|>system<|header_end|>\n\n{{content}}<|eot|>"};
  t.observation = {
      "<|header_start|>ipython<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistant<|header_end|>\n\n"};
  t.stop_words = {"<|eot|>", "<|eom|>"};
  t.replace_eos = true;
  t.special_tokens = {"<|header_start|>", "<|header_end|>"};
  return t;
}

// template.py:1737
TemplateSpec mimo() {
  TemplateSpec t = named("mimo", "Xiaomi MiMo (reasoning: adds an empty <think> block)");
  t.user = {kImUser};
  t.assistant = {kImAssistant};
  t.system = {kImSystem};
  t.observation = {kQwenObservation};
  t.default_system = "You are a helpful assistant.";
  t.stop_words = {"<|im_end|>"};
  t.replace_eos = true;
  t.kind = TemplateKind::Reasoning;
  t.special_tokens = {"<|im_start|>"};
  return t;
}

// template.py:1865
TemplateSpec ministral() {
  TemplateSpec t =
      named("ministral", "Ministral 8B, Mistral NeMo (tekken tokenizer; system folded into the first [INST])");
  t.prefix = {"{{bos_token}}"};
  t.user = {"[INST]{{content}}[/INST]"};
  t.system = {"{{content}}\n\n"};
  t.observation = {"[TOOL_RESULTS]{\"content\": {{content}}}[/TOOL_RESULTS]"};
  t.kind = TemplateKind::Llama2;
  return t;
}

// template.py:1878
TemplateSpec mistral() {
  TemplateSpec t = named("mistral", "Mistral 7B Instruct v0.1-v0.3, Mixtral (system folded into the first [INST])");
  t.prefix = {"{{bos_token}}"};
  t.user = {"[INST] {{content}}[/INST]"};
  t.assistant = {" {{content}}", "{{eos_token}}"};
  t.system = {"{{content}}\n\n"};
  t.observation = {"[TOOL_RESULTS] {\"content\": {{content}}}[/TOOL_RESULTS]"};
  t.kind = TemplateKind::Llama2;
  return t;
}

// template.py:1892
TemplateSpec mistral_small() {
  TemplateSpec t = named("mistral_small", "Mistral Small 3, 3.1, 3.2 text ([SYSTEM_PROMPT] block)");
  t.prefix = {"{{bos_token}}"};
  t.user = {"[INST]{{content}}[/INST]"};
  t.system = {"[SYSTEM_PROMPT]{{content}}[/SYSTEM_PROMPT]"};
  t.observation = {"[TOOL_RESULTS]{\"content\": {{content}}}[/TOOL_RESULTS]"};
  return t;
}

// template.py:1917
TemplateSpec olmo() {
  TemplateSpec t = named("olmo", "OLMo instruct (the sample starts with eos)");
  t.prefix = {"{{eos_token}}"};
  t.user = {"<|user|>\n{{content}}<|assistant|>\n"};
  return t;
}

// template.py:1924
TemplateSpec openchat() {
  TemplateSpec t = named("openchat", "OpenChat 3.5");
  t.prefix = {"{{bos_token}}"};
  t.user = {"GPT4 Correct User: {{content}}", "{{eos_token}}", "GPT4 Correct Assistant:"};
  return t;
}

// template.py:1983
TemplateSpec phi() {
  TemplateSpec t = named("phi", "Phi-3, Phi-3.5 mini/medium");
  t.user = {"<|user|>\n{{content}}<|end|>\n<|assistant|>\n"};
  t.assistant = {"{{content}}<|end|>\n"};
  t.system = {"<|system|>\n{{content}}<|end|>\n"};
  t.stop_words = {"<|end|>"};
  t.replace_eos = true;
  t.special_tokens = {"<|user|>", "<|assistant|>"};
  return t;
}

// template.py:2004
TemplateSpec phi4() {
  TemplateSpec t = named("phi4", "Phi-4 (14B)");
  t.user = {"<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>"};
  t.assistant = {"{{content}}<|im_end|>"};
  t.system = {"<|im_start|>system<|im_sep|>{{content}}<|im_end|>"};
  t.stop_words = {"<|im_end|>"};
  t.replace_eos = true;
  t.special_tokens = {"<|im_start|>", "<|im_sep|>"};
  return t;
}

// template.py:2016
TemplateSpec phi4_mini() {
  TemplateSpec t = named("phi4_mini", "Phi-4-mini");
  t.user = {"<|user|>{{content}}<|end|><|assistant|>"};
  t.assistant = {"{{content}}<|end|>"};
  t.system = {"<|system|>{{content}}<|end|>"};
  t.stop_words = {"<|end|>"};
  t.replace_eos = true;
  t.special_tokens = {"<|user|>", "<|assistant|>", "<|system|>"};
  return t;
}

// template.py:2059, 2076
TemplateSpec qwen3() {
  TemplateSpec t = named("qwen3", "Qwen3 hybrid thinking models (reasoning: adds an empty <think> block)");
  t.user = {kImUser};
  t.assistant = {kImAssistant};
  t.system = {kImSystem};
  t.observation = {kQwenObservation};
  t.stop_words = {"<|im_end|>"};
  t.replace_eos = true;
  t.kind = TemplateKind::Reasoning;
  t.special_tokens = {"<|im_start|>"};
  return t;
}

TemplateSpec qwen3_nothink() {
  TemplateSpec t = qwen3();
  t.name = "qwen3_nothink";
  t.description = "Qwen3 without thinking, Qwen3-Instruct-2507 (plain ChatML, no default system)";
  t.kind = TemplateKind::Plain;
  return t;
}

// template.py:2285
TemplateSpec seed_coder() {
  TemplateSpec t = named("seed_coder", "ByteDance Seed-Coder instruct");
  t.user = {"{{bos_token}}", "user\n{{content}}", "{{eos_token}}", "{{bos_token}}", "assistant\n"};
  t.system = {"{{bos_token}}", "system\n{{content}}", "{{eos_token}}"};
  t.default_system =
      "You are an AI programming assistant, utilizing the Seed-Coder model, developed by ByteDance Seed, and you only "
      "answer questions related to computer science. For politically sensitive questions, security and privacy "
      "issues, and other non-computer science questions, you will refuse to answer.\n\n";
  return t;
}

// template.py:2313, 2322
TemplateSpec smollm() {
  TemplateSpec t = named("smollm", "SmolLM instruct");
  t.user = {kImUser};
  t.assistant = {kImAssistant};
  t.system = {kImSystem};
  t.stop_words = {"<|im_end|>"};
  t.special_tokens = {"<|im_start|>"};
  return t;
}

TemplateSpec smollm2() {
  TemplateSpec t = smollm();
  t.name = "smollm2";
  t.description = "SmolLM2 instruct";
  t.default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face.";
  return t;
}

// template.py:2332
TemplateSpec solar() {
  TemplateSpec t = named("solar", "Upstage SOLAR 10.7B instruct");
  t.user = {"### User:\n{{content}}\n\n### Assistant:\n"};
  t.system = {"### System:\n{{content}}\n\n"};
  t.efficient_eos = true;
  return t;
}

// template.py:2340
TemplateSpec starchat() {
  TemplateSpec t = named("starchat", "StarChat (StarCoder chat)");
  t.user = {"<|user|>\n{{content}}<|end|>\n<|assistant|>"};
  t.assistant = {"{{content}}<|end|>\n"};
  t.system = {"<|system|>\n{{content}}<|end|>\n"};
  t.stop_words = {"<|end|>"};
  t.special_tokens = {"<|user|>", "<|assistant|>", "<|system|>"};
  return t;
}

// template.py:2359
TemplateSpec vicuna() {
  TemplateSpec t = named("vicuna", "Vicuna v1.1-v1.5 (USER: ... ASSISTANT:)");
  t.user = {"USER: {{content}} ASSISTANT:"};
  t.default_system =
      "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
      "and polite answers to the user's questions.";
  return t;
}

// template.py:2393
TemplateSpec yi() {
  TemplateSpec t = named("yi", "Yi, Yi-1.5 chat (ChatML with the tokenizer's eos)");
  t.user = {kImUser};
  t.assistant = {kImAssistant};
  t.system = {kImSystem};
  t.stop_words = {"<|im_end|>"};
  t.special_tokens = {"<|im_start|>"};
  return t;
}

// template.py:2455
TemplateSpec zephyr() {
  TemplateSpec t = named("zephyr", "Zephyr 7B (<|user|> ... eos)");
  t.user = {"<|user|>\n{{content}}", "{{eos_token}}", "<|assistant|>\n"};
  t.system = {"<|system|>\n{{content}}", "{{eos_token}}"};
  t.default_system = "You are Zephyr, a helpful assistant.";
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
    // The first six keep their historical order (error messages list the names in this order).
    for (auto t : {qwen(),      chatml(),        llama3(),        default_(),      alpaca(),  empty(),
                   qwen3(),     qwen3_nothink(), llama2(),        llama2_zh(),     llama4(),  mistral(),
                   ministral(), mistral_small(), gemma(),         gemma2(),        gemma3(),  deepseek(),
                   deepseek3(), deepseekr1(),    deepseekcoder(), phi(),           phi4(),    phi4_mini(),
                   glm4(),      glm4_moe(),      glm4_7(),        glmz1(),         yi(),      vicuna(),
                   zephyr(),    chatml_de(),     cohere(),        ernie_nothink(), exaone(),  falcon(),
                   gpt_oss(),   granite3(),      granite4(),      intern2(),       lfm2(),    mimo(),
                   olmo(),      openchat(),      seed_coder(),    smollm(),        smollm2(), solar(),
                   starchat()})
      v.push_back(with_defaults(t));
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

std::vector<TemplateInfo> list_templates() {
  std::vector<TemplateInfo> out;
  for (const auto& t : builtin_templates()) out.push_back({t.name, t.description});
  return out;
}

}  // namespace zlora::data
