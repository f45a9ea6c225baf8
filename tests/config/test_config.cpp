// Config loading: YAML + flags + DeepSpeed JSON, LLaMA-Factory forms, and error messages.
#include "test_data_util.h"
#include "zlora/config/foreign.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <map>
#include <regex>

using namespace zlora;
using namespace zlora::config;
using zlora::test::TempDir;
using zlora::test::write_file;

namespace {

std::vector<std::string> base_args() { return {"--model_name_or_path", "/models/m", "--dataset", "d"}; }

std::vector<std::string> with_base(std::vector<std::string> extra) {
  auto a = base_args();
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The seed's launch lines: everything after `src/train.py`, continuation lines joined.
std::vector<std::vector<std::string>> seed_command_lines() {
  std::string body = zlora::test::read_file(zlora::test::shared_dir() / "seed" / "train_commands.sh");
  std::vector<std::vector<std::string>> out;
  std::string joined;
  std::istringstream in(body);
  std::string line;
  std::vector<std::string> commands;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '#') continue;
    bool cont = !line.empty() && line.back() == '\\';
    if (cont) line.pop_back();
    joined += line + " ";
    if (!cont) {
      if (joined.find("src/train.py") != std::string::npos) commands.push_back(joined);
      joined.clear();
    }
  }
  for (const auto& c : commands) {
    std::istringstream words(c.substr(c.find("src/train.py") + 12));
    std::vector<std::string> args;
    std::string w;
    while (words >> w) {
      if (w.size() > 5 && w.substr(w.size() - 5) == ".json")  // the DeepSpeed JSON lives in shared/seed/
        w = (zlora::test::shared_dir() / "seed" / w).string();
      args.push_back(w);
    }
    out.push_back(args);
  }
  return out;
}

}  // namespace

TEST(Config, DefaultsFollowLlamaFactory) {
  auto r = load_train_config(base_args());
  EXPECT_EQ(r.cfg.data.cutoff_len, 2048);
  EXPECT_EQ(r.cfg.lora.lora_rank, 8);
  EXPECT_DOUBLE_EQ(*r.cfg.lora.lora_alpha, 16.0);  // 2 x rank when unset
  EXPECT_EQ(r.cfg.lora.lora_target, std::vector<std::string>{"all"});
  EXPECT_DOUBLE_EQ(r.cfg.training.learning_rate, 5e-5);
  EXPECT_EQ(r.cfg.training.lr_scheduler_type, "linear");
  EXPECT_EQ(r.cfg.training.per_device_train_batch_size, 8);
  EXPECT_EQ(r.cfg.training.seed, 42);
  EXPECT_EQ(r.cfg.dist.zero_stage, 0);
}

TEST(Config, BooleanFormsAndLastValueWins) {
  auto r = load_train_config(with_base({"--bf16", "--plot_loss", "True", "--disable_shuffling", "false"}));
  EXPECT_TRUE(r.cfg.training.bf16);
  EXPECT_TRUE(r.cfg.training.plot_loss);
  EXPECT_FALSE(r.cfg.training.disable_shuffling);
  r = load_train_config(with_base({"--bf16", "--cutoff_len", "512", "--bf16", "False", "--cutoff_len=1024"}));
  EXPECT_FALSE(r.cfg.training.bf16);
  EXPECT_EQ(r.cfg.data.cutoff_len, 1024);
  EXPECT_EQ(r.origins.at("cutoff_len").where, "flag --cutoff_len");
}

TEST(Config, YamlThenFlagsThenKeyValueOverrides) {
  TempDir dir;
  write_file(dir / "c.yaml",
             "model_name_or_path: /m\ndataset: [a, b]\ncutoff_len: 512\nlora_target: q_proj,v_proj\nbf16: true\n");
  auto r = load_train_config({(dir / "c.yaml").string(), "--cutoff_len", "256", "lora_rank=16"});
  EXPECT_EQ(r.cfg.data.dataset, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(r.cfg.data.cutoff_len, 256);
  EXPECT_EQ(r.cfg.lora.lora_rank, 16);
  EXPECT_DOUBLE_EQ(*r.cfg.lora.lora_alpha, 32.0);
  EXPECT_EQ(r.cfg.lora.lora_target, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_TRUE(r.cfg.training.bf16);
  EXPECT_NE(r.origins.at("bf16").where.find("c.yaml:5:1"), std::string::npos);
}

TEST(Config, TypoInYamlNamesKeyFileAndSuggestion) {
  TempDir dir;
  write_file(dir / "c.yaml", "model_name_or_path: /m\ndataset: a\nlearning_rat: 1e-4\n");
  std::string msg = error_of([&] { load_train_config({(dir / "c.yaml").string()}); });
  EXPECT_NE(msg.find("unknown option 'learning_rat'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("c.yaml:3:1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'learning_rate'?"), std::string::npos) << msg;
}

TEST(Config, TypoInFlagSuggests) {
  std::string msg = error_of([&] { load_train_config(with_base({"--lora_rnk", "4"})); });
  EXPECT_NE(msg.find("unknown option 'lora_rnk' (flag --lora_rnk)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'lora_rank'?"), std::string::npos) << msg;
}

TEST(Config, WrongTypeAndRangeAndChoiceErrors) {
  std::string msg = error_of([&] { load_train_config(with_base({"--cutoff_len", "abc"})); });
  EXPECT_NE(msg.find("'cutoff_len' (flag --cutoff_len) expects an integer, got 'abc'"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--lora_dropout", "1.5"})); });
  EXPECT_NE(msg.find("must be between 0 and 0.999"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--lr_scheduler_type", "cosin"})); });
  EXPECT_NE(msg.find("did you mean 'cosine'?"), std::string::npos) << msg;
  EXPECT_NE(msg.find("valid values: linear, cosine"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--bf16", "maybe"})); });
  EXPECT_NE(msg.find("expects a boolean"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--bf16", "--fp16"})); });
  EXPECT_NE(msg.find("bf16 (flag --bf16) and fp16 (flag --fp16) are both true"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config({"--dataset", "d"}); });
  EXPECT_NE(msg.find("model_name_or_path is not set"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config({"--model_name_or_path", "m"}); });
  EXPECT_NE(msg.find("no training data"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--stage", "dpo"})); });
  EXPECT_NE(msg.find("option 'stage' (flag --stage) is 'dpo': pre-training, reward modelling and the preference/RL "
                     "stages (LLaMA-Factory's pt, rm, ppo, dpo, kto) is a LLaMA-Factory feature zlora does not "
                     "support; valid values here: sft"),
            std::string::npos)
      << msg;
  msg = error_of([&] { load_train_config(with_base({"--stage", "sfx"})); });
  EXPECT_NE(msg.find("valid values: sft"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--offload_optimizer", "cpu"})); });
  EXPECT_NE(msg.find("needs zero_stage 1, 2 or 3"), std::string::npos) << msg;
}

TEST(Config, MalformedYamlNamesLine) {
  TempDir dir;
  write_file(dir / "c.yaml", "model_name_or_path: /m\ndataset: [a, b\n");
  std::string msg = error_of([&] { load_train_config({(dir / "c.yaml").string()}); });
  EXPECT_NE(msg.find("c.yaml:"), std::string::npos) << msg;
  write_file(dir / "n.yaml", "model_name_or_path:\n  nested: 1\n");
  msg = error_of([&] { load_train_config({(dir / "n.yaml").string()}); });
  EXPECT_NE(msg.find("nested mapping"), std::string::npos) << msg;
}

// adam_epsilon 0 used to be accepted (the schema's range is [0, 1]) and then reported as "loss
// diverged": refused at once with the valid range, from a flag, a YAML file or a DeepSpeed JSON.
TEST(Config, AdamEpsilonMustBeAboveZero) {
  std::string msg = error_of([&] { load_train_config(with_base({"--adam_epsilon", "0"})); });
  EXPECT_NE(msg.find("adam_epsilon 0.0 (flag --adam_epsilon) must be above 0 and at most 1 (the range is (0, 1]"),
            std::string::npos)
      << msg;
  msg = error_of([&] { load_train_config(with_base({"--adam_epsilon", "-1e-8"})); });
  EXPECT_NE(msg.find("'adam_epsilon' (flag --adam_epsilon) is -1e-08, but it must be between 0 and 1"),
            std::string::npos)
      << msg;
  TempDir dir;
  write_file(dir / "c.yaml", "model_name_or_path: /m\ndataset: a\nadam_epsilon: 0.0\n");
  msg = error_of([&] { load_train_config({(dir / "c.yaml").string()}); });
  EXPECT_NE(msg.find("adam_epsilon 0.0 (" + (dir / "c.yaml").string() + ":3:1) must be above 0"), std::string::npos)
      << msg;
  write_file(dir / "ds.json", R"({"optimizer": {"type": "AdamW", "params": {"eps": 0}}})");
  msg = error_of([&] { load_train_config(with_base({"--deepspeed", (dir / "ds.json").string()})); });
  EXPECT_NE(msg.find("adam_epsilon 0.0 (" + (dir / "ds.json").string() + ": optimizer.params.eps) must be above 0"),
            std::string::npos)
      << msg;
  EXPECT_EQ(load_train_config(with_base({"--adam_epsilon", "1e-6"})).cfg.training.adam_epsilon, 1e-6);
}

// A mapping where an option's value should be, or nesting deeper than yaml-cpp's limit (whose own message
// is "bad file"), names the option and the file.
TEST(Config, NestedYamlNamesTheOptionAndFile) {
  TempDir dir;
  const std::string path = (dir / "c.yaml").string();
  write_file(path, "model_name_or_path: /m\ndataset: a\nlearning_rate: {value: 1e-4}\n");
  std::string msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("option 'learning_rate' (" + path + ":3:1) has a nested mapping as its value"), std::string::npos)
      << msg;
  write_file(path, "model_name_or_path: /m\ndataset:\n  - a\n  - {name: b}\n");
  msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("option 'dataset' (" + path + ":4:5) must be a list of plain values, found a mapping in it"),
            std::string::npos)
      << msg;
  // 5000 levels of flow lists, 3000 of flow mappings, a block mapping 300 deep: no crash, the option named.
  write_file(path, "model_name_or_path: /m\nlora_target: " + std::string(5000, '[') + std::string(5000, ']') + "\n");
  msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("config file " + path + ":2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("the value of option 'lora_target' is nested more than "), std::string::npos) << msg;
  std::string deep = "model_name_or_path: /m\n\nlearning_rate: ";
  for (int i = 0; i < 3000; ++i) deep += "{a: ";
  write_file(path, deep + "1" + std::string(3000, '}') + "\n");
  msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("the value of option 'learning_rate' is nested more than"), std::string::npos) << msg;
  std::string block = "dataset: a\nlearning_rate:\n";
  for (int i = 1; i <= 300; ++i) block += std::string(2 * size_t(i), ' ') + "k" + std::to_string(i) + ":\n";
  write_file(path, block + std::string(602, ' ') + "v: 1\n");
  msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("option 'learning_rate' (" + path + ":2:1) has a nested mapping"), std::string::npos) << msg;
  std::string lists;  // a file that is one list nested 3000 deep: no option to name
  for (int i = 0; i < 3000; ++i) lists += "- ";
  write_file(path, lists + "x\n");
  msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("a value is nested more than"), std::string::npos) << msg;
}

// Keys and values read from a config file are quoted escaped in errors.
TEST(Config, ErrorsQuoteFileContentsPrintably) {
  TempDir dir;
  const std::string path = (dir / "c.yaml").string();
  write_file(path, "model_name_or_path: /m\n\"lr\\e[2J\": 1\n");
  std::string msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("config file " + path + ":2:1: option name 'lr\\x1B[2J' is not a plain word"), std::string::npos)
      << msg;
  EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
  write_file(path, "model_name_or_path: /m\ndataset: a\nlearning_rate: \"1e-4\\e]0;x\\a\"\n");
  msg = error_of([&] { load_train_config({path}); });
  EXPECT_NE(msg.find("expects a number, got '1e-4\\x1B]0;x\\x07'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\x1b'), std::string::npos) << msg;
}

TEST(Config, SeedDeepSpeedFilesLoad) {
  ZLORA_SKIP_WITHOUT_SHARED("seed/ds_config_zero1.json", "this test loads the seed's own DeepSpeed files");
  auto seed = zlora::test::shared_dir() / "seed";
  auto z1 = load_train_config(with_base({"--deepspeed", (seed / "ds_config_zero1.json").string(),
                                         "--gradient_accumulation_steps", "4", "--learning_rate", "5e-5"}));
  EXPECT_EQ(z1.cfg.dist.zero_stage, 1);
  EXPECT_EQ(z1.cfg.dist.offload_optimizer, "none");
  EXPECT_EQ(z1.cfg.training.lr_scheduler_type, "ds_warmup_lr");  // its scheduler block, as under HF Trainer
  EXPECT_EQ(z1.cfg.training.gradient_accumulation_steps, 4);

  auto z2 = load_train_config(
      with_base({"--deepspeed", (seed / "ds_config_zero2.json").string(), "--lr_scheduler_type", "cosine"}));
  EXPECT_EQ(z2.cfg.dist.zero_stage, 2);
  EXPECT_EQ(z2.cfg.dist.offload_optimizer, "cpu");
  EXPECT_EQ(z2.cfg.training.lr_scheduler_type, "cosine");     // no scheduler block
  EXPECT_EQ(z2.cfg.training.gradient_accumulation_steps, 4);  // explicit in the JSON

  auto z3 = load_train_config(with_base({"--deepspeed", (seed / "ds_config_zero3.json").string()}));
  EXPECT_EQ(z3.cfg.dist.zero_stage, 3);
  // Keys zlora does not implement are reported, each once.
  bool warned_sub_group = false;
  for (const auto& w : z3.warnings) warned_sub_group |= w.find("sub_group_size") != std::string::npos;
  EXPECT_TRUE(warned_sub_group);
  std::set<std::string> unique(z3.warnings.begin(), z3.warnings.end());
  EXPECT_EQ(unique.size(), z3.warnings.size());
}

TEST(Config, DeepSpeedConflictWithFlagIsAnError) {
  TempDir dir;
  write_file(dir / "ds.json", R"({"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": 4})");
  std::string msg = error_of([&] {
    load_train_config(with_base({"--deepspeed", (dir / "ds.json").string(), "--gradient_accumulation_steps", "8"}));
  });
  EXPECT_NE(msg.find("gradient_accumulation_steps"), std::string::npos) << msg;
  EXPECT_NE(msg.find("make them agree"), std::string::npos) << msg;
  msg = error_of([&] {
    load_train_config(with_base(
        {"--deepspeed", (zlora::test::source_dir() / "configs/deepspeed/ds_z1.json").string(), "--zero_stage", "2"}));
  });
  EXPECT_NE(msg.find("zero_optimization.stage"), std::string::npos) << msg;
}

TEST(Config, MalformedDeepSpeedJsonNamesLineAndColumn) {
  TempDir dir;
  write_file(dir / "ds.json", "{\n  \"zero_optimization\": {\"stage\": 2,}\n}\n");
  std::string msg = error_of([&] { load_train_config(with_base({"--deepspeed", (dir / "ds.json").string()})); });
  EXPECT_NE(msg.find("ds.json:2:"), std::string::npos) << msg;
  write_file(dir / "ds2.json", "{\"zero_optimization\": {\"stage\": 5}}");
  msg = error_of([&] { load_train_config(with_base({"--deepspeed", (dir / "ds2.json").string()})); });
  EXPECT_NE(msg.find("between 0 and 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("zero_optimization.stage"), std::string::npos) << msg;
  write_file(dir / "ds3.json", "{\"optimizer\": {\"type\": \"Lamb\"}}");
  msg = error_of([&] { load_train_config(with_base({"--deepspeed", (dir / "ds3.json").string()})); });
  EXPECT_NE(msg.find("optimizer type 'Lamb' is not supported"), std::string::npos) << msg;
}

TEST(Config, SeedCommandLinesParseUnchanged) {
  ZLORA_SKIP_WITHOUT_SHARED("seed/train_commands.sh", "this test parses the seed's own launch lines");
  auto lines = seed_command_lines();
  ASSERT_EQ(lines.size(), 2u);
  auto z1 = load_train_config(lines[0]);
  EXPECT_EQ(z1.cfg.dist.zero_stage, 1);
  EXPECT_EQ(z1.cfg.data.cutoff_len, 1024);
  EXPECT_EQ(z1.cfg.data.dataset, std::vector<std::string>{"identity"});
  EXPECT_DOUBLE_EQ(z1.cfg.training.num_train_epochs, 30);
  EXPECT_DOUBLE_EQ(*z1.cfg.lora.lora_alpha, 32);
  EXPECT_DOUBLE_EQ(z1.cfg.lora.lora_dropout, 0.1);
  EXPECT_EQ(z1.cfg.lora.lora_target.size(), 7u);
  EXPECT_TRUE(z1.cfg.training.bf16);
  EXPECT_TRUE(z1.cfg.training.plot_loss);
  EXPECT_DOUBLE_EQ(*z1.cfg.lora.neftune_noise_alpha, 0.0);
  EXPECT_DOUBLE_EQ(z1.cfg.training.warmup_steps, 10);

  auto z3 = load_train_config(lines[1]);  // repeats --lr_scheduler_type
  EXPECT_EQ(z3.cfg.dist.zero_stage, 3);
  EXPECT_DOUBLE_EQ(z3.cfg.training.learning_rate, 5e-4);
  EXPECT_EQ(z3.cfg.training.lr_scheduler_type, "ds_warmup_lr");
}

TEST(Config, PrintConfigRendersOrigins) {
  auto r = load_train_config(with_base({"--lora_rank", "4"}));
  std::string out = render(train_schema(), r);
  EXPECT_NE(out.find("lora_rank: 4  # flag --lora_rank"), std::string::npos) << out;
  EXPECT_NE(out.find("cutoff_len: 2048  # default"), std::string::npos) << out;
}

TEST(Config, ExportConfigSeedYaml) {
  std::string msg = error_of([&] {
    load_export_config({"--model_name_or_path", "m", "--export_dir", "o", "--export_legacy_format", "true"});
  });
  EXPECT_NE(msg.find("pickle"), std::string::npos) << msg;
  ZLORA_SKIP_WITHOUT_SHARED("seed/llama3_lora_sft_qwen.yaml", "the rest of this test loads the seed's own export YAML");
  auto r = load_export_config({(zlora::test::shared_dir() / "seed" / "llama3_lora_sft_qwen.yaml").string()});
  EXPECT_EQ(r.cfg.export_dir, "output/llama3_lora_sft_qwen");
  EXPECT_EQ(r.cfg.export_size, 5);
  EXPECT_EQ(*r.cfg.template_name, "qwen");
  EXPECT_FALSE(r.cfg.export_legacy_format);
  bool noted = false;
  for (const auto& w : r.warnings) noted |= w.find("never runs code") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(Config, ShippedConfigsLoad) {
  auto root = zlora::test::source_dir() / "configs";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    if (e.path().extension() != ".yaml") continue;
    for (const char* ds : {"ds_z0.json", "ds_z1.json", "ds_z2.json", "ds_z2_offload.json", "ds_z3.json"}) {
      auto r = load_train_config({e.path().string(), "--deepspeed", (root / "deepspeed" / ds).string()});
      EXPECT_FALSE(r.cfg.model.model_name_or_path.empty()) << e.path();
      ++n;
    }
  }
  EXPECT_GE(n, 10);
}

// LLaMA-Factory's own example YAMLs (tests/config/llamafactory/README.md): each loads, or is refused as
// a LLaMA-Factory feature zlora does not support; none meets "unknown option".
TEST(Config, LlamaFactoryExamplesLoadOrNameTheFeature) {
  const auto dir = zlora::test::source_dir() / "tests" / "config" / "llamafactory";
  // The examples zlora runs as they are (train, export, generate), and the feature each other one needs.
  const std::map<std::string, std::string> refused = {
      {"train_lora_qwen3_lora_dpo.yaml", "option 'stage'"},
      {"train_lora_qwen3_lora_kto.yaml", "option 'stage'"},
      {"train_lora_qwen3_lora_pretrain.yaml", "option 'stage'"},
      {"train_lora_qwen3_lora_reward.yaml", "option 'stage'"},
      {"train_full_qwen3_full_sft.yaml", "option 'finetuning_type'"},
      {"extras_galore_llama3_full_sft.yaml", "option 'finetuning_type'"},
      {"extras_badam_llama3_full_sft.yaml", "option 'finetuning_type'"},
      {"extras_loraplus_llama3_lora_sft.yaml", "option 'loraplus_lr_ratio'"},
      {"extras_pissa_llama3_lora_sft.yaml", "option 'pissa_init'"},
      {"extras_fsdp_qlora_llama3_lora_sft.yaml", "option 'quantization_bit'"},
      {"extras_nlg_eval_llama3_lora_predict.yaml", "option 'do_predict'"},
      {"extras_mod_llama3_full_sft.yaml", "option 'finetuning_type'"},
      {"extras_llama_pro_llama3_freeze_sft.yaml", "option 'finetuning_type'"},
      {"extras_fp8_llama3_fp8_deepspeed_sft.yaml", "option 'finetuning_type'"},
  };
  int loaded = 0, checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".yaml") continue;
    const std::string name = e.path().filename().string();
    ++checked;
    std::string msg;
    std::vector<std::string> notes;
    try {
      if (zlora::text::starts_with(name, "merge_lora_")) {
        notes = load_export_config({e.path().string()}).notes;
      } else if (zlora::text::starts_with(name, "inference_")) {
        notes = load_generate_config({e.path().string()}).notes;
      } else {
        notes = load_train_config({e.path().string()}).notes;
      }
    } catch (const Error& err) {
      msg = err.what();
    }
    EXPECT_EQ(msg.find("unknown option"), std::string::npos) << name << ": " << msg;
    auto it = refused.find(name);
    if (it == refused.end()) {
      EXPECT_EQ(msg, "") << name;
      ++loaded;
    } else {
      EXPECT_NE(msg.find(it->second), std::string::npos) << name << ": " << msg;
      EXPECT_NE(msg.find("a LLaMA-Factory feature zlora does not support"), std::string::npos) << name << ": " << msg;
    }
    if (name == "train_lora_qwen3_lora_sft.yaml") {
      // dataloader_num_workers and save_only_model false: accepted, the first with one info line.
      ASSERT_EQ(notes.size(), 1u) << zlora::text::join(notes, "\n");
      EXPECT_NE(notes[0].find("option 'dataloader_num_workers'"), std::string::npos) << notes[0];
      EXPECT_NE(notes[0].find("is accepted and has no effect: zlora reads batches from its prepared HDF5"),
                std::string::npos)
          << notes[0];
    }
  }
  EXPECT_EQ(checked, 17);
  EXPECT_EQ(loaded, 3);  // the LoRA SFT example, its merge and its inference
}

TEST(Config, ForeignOptionsAreNotedOrRefusedOnlyWhenOn) {
  // Ignored whatever the value: one note each, naming where it was set.
  auto r = load_train_config(with_base({"--dataloader_pin_memory", "true", "--ddp_find_unused_parameters", "false"}));
  ASSERT_EQ(r.notes.size(), 2u);
  EXPECT_NE(r.notes[0].find("option 'dataloader_pin_memory' (flag --dataloader_pin_memory) is accepted"),
            std::string::npos)
      << r.notes[0];
  // Unsupported but off (LLaMA-Factory's examples spell these out): silent.
  r = load_train_config(
      with_base({"--quantization_bit", "null", "--use_dora", "false", "--packing", "False", "--mix_strategy", "concat",
                 "--double_quantization", "true", "--save_only_model", "false", "--infer_backend", "huggingface"}));
  EXPECT_TRUE(r.notes.empty()) << zlora::text::join(r.notes, "\n");
  // Switched on: refused, naming the option, where, the feature and how to turn it off.
  std::string msg = error_of([&] { load_train_config(with_base({"--quantization_bit", "4"})); });
  EXPECT_NE(msg.find("option 'quantization_bit' (flag --quantization_bit) is 4: quantized base weights"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("is a LLaMA-Factory feature zlora does not support. Remove the option (or set it to null/false)"),
            std::string::npos)
      << msg;
  msg = error_of([&] { load_train_config(with_base({"--mix_strategy", "interleave_under"})); });
  EXPECT_NE(msg.find("or set it to null/false or concat"), std::string::npos) << msg;
  // Names that used to get a wrong suggestion.
  msg = error_of([&] { load_train_config(with_base({"--local_rank", "0"})); });
  EXPECT_EQ(msg, "");
  msg = error_of([&] { load_train_config(with_base({"--finetuning_type", "freeze"})); });
  EXPECT_NE(msg.find("full-parameter, freeze and OFT tuning is a LLaMA-Factory feature"), std::string::npos) << msg;
  // A real typo still gets "unknown option" with a suggestion.
  msg = error_of([&] { load_train_config(with_base({"--dataloader_num_worker", "2"})); });
  EXPECT_NE(msg.find("unknown option 'dataloader_num_worker'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean"), std::string::npos) << msg;
  // Every table entry is unbound by every schema (one place per option).
  for (const auto& o : foreign_options()) {
    const std::string n(o.name);
    EXPECT_EQ(train_schema().find(n), nullptr) << n;
    EXPECT_EQ(export_schema().find(n), nullptr) << n;
    EXPECT_EQ(generate_schema().find(n), nullptr) << n;
    EXPECT_EQ(prepare_schema().find(n), nullptr) << n;
    EXPECT_FALSE(o.why.empty()) << n;
  }
}

TEST(Config, TransformersNamesMapOntoZlorasOptions) {
  auto r = load_train_config(with_base({"--use_cpu", "true", "--ddp_backend", "mpi"}));
  EXPECT_EQ(r.cfg.training.device, "cpu");
  EXPECT_EQ(r.cfg.dist.comm, "mpi");
  std::string msg = error_of([&] { load_train_config(with_base({"--ddp_backend", "gloo"})); });
  EXPECT_NE(msg.find("PyTorch's gloo"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--ddp_backend", "nccl", "--comm", "mpi"})); });
  EXPECT_NE(msg.find("ddp_backend nccl (flag --ddp_backend) and comm mpi (flag --comm) disagree"), std::string::npos)
      << msg;
  msg = error_of([&] { load_train_config(with_base({"--use_cpu", "true", "--device", "cuda"})); });
  EXPECT_NE(msg.find("use_cpu is true"), std::string::npos) << msg;
}

TEST(Config, EvaluationOptionsFollowLlamaFactoryAndHf) {
  // eval_strategy other than no sets do_eval (HF); eval_steps stays unset (logging_steps at run time).
  auto r = load_train_config(with_base({"--val_size", "0.1", "--eval_strategy", "steps"}));
  EXPECT_TRUE(r.cfg.training.do_eval);
  EXPECT_FALSE(r.cfg.training.eval_steps.has_value());
  EXPECT_TRUE(r.warnings.empty());
  std::string msg = error_of([&] { load_train_config(with_base({"--val_size", "0.1", "--eval_dataset", "e"})); });
  EXPECT_NE(msg.find("val_size 0.1 (flag --val_size) and eval_dataset e (flag --eval_dataset) are both set"),
            std::string::npos)
      << msg;
  msg = error_of([&] { load_train_config(with_base({"--eval_strategy", "steps"})); });
  EXPECT_NE(msg.find("eval_strategy is steps (flag --eval_strategy) but there is no evaluation data"),
            std::string::npos)
      << msg;
  msg = error_of([&] { load_train_config(with_base({"--do_eval", "true"})); });
  EXPECT_NE(msg.find("do_eval is true (flag --do_eval) but there is no evaluation data"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--val_size", "2.5"})); });
  EXPECT_NE(msg.find("must be a fraction of the samples (at most 1) or a whole number"), std::string::npos) << msg;
  msg = error_of([&] { load_train_config(with_base({"--eval_strategy", "step"})); });
  EXPECT_NE(msg.find("did you mean 'steps'?"), std::string::npos) << msg;
  r = load_train_config(with_base({"--val_size", "100"}));
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].find("val_size is set but nothing evaluates on it"), std::string::npos) << r.warnings[0];
}
