#include "zlora/ckpt/run_descriptor.h"

#include "zlora/ckpt/checkpoint.h"
#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"

#include <fmt/format.h>

#include <algorithm>

namespace zlora::ckpt {

namespace stdfs = std::filesystem;
using nlohmann::json;

namespace {

// Files a zlora (or LLaMA-Factory) run leaves at the top of output_dir. --overwrite_output_dir removes
// exactly these and the checkpoints; anything else the user keeps there is left alone. profile.json is
// written by profile_steps (train/sft.cpp).
const std::vector<std::string>& run_output_files() {
  static const std::vector<std::string> names = {kRunDescriptorName,
                                                 kLatestName,
                                                 "trainer_log.jsonl",
                                                 "trainer_state.json",
                                                 "train_results.json",
                                                 "all_results.json",
                                                 "training_loss.svg",
                                                 "training_loss.png",
                                                 "adapter_model.safetensors",
                                                 "adapter_config.json",
                                                 "profile.json",
                                                 "eval_results.json",
                                                 "training_eval_loss.svg",
                                                 "training_eval_loss.png"};
  return names;
}

bool is_checkpoint_like(const std::string& name) { return text::starts_with(name, "checkpoint-"); }

std::string short_hash(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) : h; }

}  // namespace

json RunDescriptor::to_json() const {
  return json{{"model_path", model_path},   {"model_config_sha256", model_config_sha256},
              {"lora_rank", lora_rank},     {"lora_alpha", lora_alpha},
              {"lora_target", lora_target}, {"use_rslora", use_rslora},
              {"data_hash", data_hash},     {"template", template_name}};
}

RunDescriptor RunDescriptor::from_json(const json& j) {
  RunDescriptor d;
  try {
    d.model_path = j.at("model_path").get<std::string>();
    d.model_config_sha256 = j.at("model_config_sha256").get<std::string>();
    d.lora_rank = j.at("lora_rank").get<long long>();
    d.lora_alpha = j.at("lora_alpha").get<double>();
    d.lora_target = j.at("lora_target").get<std::vector<std::string>>();
    d.use_rslora = j.value("use_rslora", false);
    d.data_hash = j.at("data_hash").get<std::string>();
    d.template_name = j.at("template").get<std::string>();
  } catch (const json::exception& e) {
    fail("malformed {}: {}", kRunDescriptorName, e.what());
  }
  return d;
}

std::string RunDescriptor::describe() const {
  return fmt::format("model {} (config.json sha256 {}), LoRA r={} alpha={}{} targets={}, data {}, template {}",
                     model_path, short_hash(model_config_sha256), lora_rank, lora_alpha, use_rslora ? " rsLoRA" : "",
                     text::join(lora_target, ","), short_hash(data_hash),
                     template_name.empty() ? "(none)" : template_name);
}

bool RunDescriptor::operator==(const RunDescriptor& o) const { return to_json() == o.to_json(); }

OutputDirResult prepare_output_dir(const stdfs::path& output_dir, const RunDescriptor& run, bool overwrite_output_dir,
                                   bool resume) {
  OutputDirResult res;
  ZLORA_REQUIRE(!stdfs::exists(output_dir) || stdfs::is_directory(output_dir),
                "output_dir '{}' exists and is not a directory", output_dir.string());
  std::error_code mk;
  stdfs::create_directories(output_dir, mk);
  if (mk) fail("cannot create output_dir '{}': {}", output_dir.string(), fs::errno_message(mk.value()));
  const stdfs::path desc_path = output_dir / kRunDescriptorName;
  if (stdfs::is_regular_file(desc_path)) {
    json j = json::parse(fs::read_file(desc_path), nullptr, false);
    ZLORA_REQUIRE(!j.is_discarded(), "'{}' is not valid JSON; remove it or use --overwrite_output_dir",
                  desc_path.string());
    res.previous = RunDescriptor::from_json(j);
  }
  std::vector<stdfs::path> outputs;
  for (const auto& e : stdfs::directory_iterator(output_dir)) {
    std::string name = e.path().filename().string();
    bool known = std::find(run_output_files().begin(), run_output_files().end(), name) != run_output_files().end();
    // Damaged checkpoints moved aside are evidence, kept even by --overwrite_output_dir.
    if (e.is_directory() && is_damaged_dir_name(name)) continue;
    if ((e.is_directory() && is_checkpoint_like(name)) || (known && name != kRunDescriptorName))
      outputs.push_back(e.path());
  }
  res.previous_outputs = !outputs.empty();

  if (overwrite_output_dir && resume) {
    // Deleting the checkpoints the same command resumes from would lose the run: resuming wins, as in
    // the HF Trainer (whose overwrite_output_dir never removes checkpoints), and nothing is removed.
    res.notes.push_back(fmt::format(
        "--overwrite_output_dir is ignored: --resume_from_checkpoint is set, and resuming needs what '{}' holds",
        output_dir.string()));
  }
  if (overwrite_output_dir && !resume) {
    for (const auto& p : outputs) fs::remove_tree(p);
    res.removed = outputs;
    res.overwritten = res.previous_outputs;
  } else if (resume) {
    if (res.previous && *res.previous != run)
      res.warning = fmt::format(
          "resuming in '{}', whose previous run differs:\n  previous: {}\n  this run: {}\nthe checkpoint's LoRA "
          "shapes must still match this run's",
          output_dir.string(), res.previous->describe(), run.describe());
  } else if (res.previous_outputs) {
    std::string existing;
    if (!res.previous)
      existing = "an unknown run (no " + std::string(kRunDescriptorName) + "; LLaMA-Factory's or an older zlora's?)";
    else if (*res.previous == run)
      existing = "this same run: " + res.previous->describe();
    else
      existing = "another run: " + res.previous->describe();
    fail(
        "output_dir '{}' already holds checkpoints or outputs of {}\n  this run: {}\nUse "
        "--resume_from_checkpoint latest to continue it, --overwrite_output_dir true to delete its checkpoints "
        "and logs, or choose another --output_dir.",
        output_dir.string(), existing, run.describe());
  }
  fs::write_file_atomic(desc_path, run.to_json().dump(2) + "\n");
  return res;
}

}  // namespace zlora::ckpt
