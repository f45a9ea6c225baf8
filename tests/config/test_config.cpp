// Config loading: YAML + flags + DeepSpeed JSON, LLaMA-Factory forms, and error messages.
#include "test_data_util.h"
#include "zlora/config/load.h"
#include "zlora/core/error.h"

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
