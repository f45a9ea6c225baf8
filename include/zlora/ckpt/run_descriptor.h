// Output-directory safety (the seed's pitfall 3): a run records what it trains in
// output_dir/zlora_run.json, and a new run refuses an output_dir that already holds another run's
// checkpoints or outputs, printing both descriptions, unless --overwrite_output_dir (the old outputs are
// removed) or a resume is asked for. Both at once: the resume wins and nothing is removed. Damaged
// checkpoints moved aside (checkpoint-STEP.damaged) are never removed. LLaMA-Factory instead silently
// resumes from the last checkpoint.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace zlora::ckpt {

inline constexpr const char* kRunDescriptorName = "zlora_run.json";

struct RunDescriptor {
  std::string model_path;
  std::string model_config_sha256;  // sha256 of the model's config.json
  long long lora_rank = 0;
  double lora_alpha = 0;
  std::vector<std::string> lora_target;
  bool use_rslora = false;
  std::string data_hash;  // the token store's content hash (data module)
  std::string template_name;

  nlohmann::json to_json() const;
  static RunDescriptor from_json(const nlohmann::json& j);  // throws zlora::Error
  std::string describe() const;                             // one line for messages
  bool operator==(const RunDescriptor& o) const;
  bool operator!=(const RunDescriptor& o) const { return !(*this == o); }
};

struct OutputDirResult {
  bool previous_outputs = false;          // the directory held checkpoints or outputs of a run
  bool overwritten = false;               // ... and they were removed (--overwrite_output_dir)
  std::optional<RunDescriptor> previous;  // zlora_run.json found there, if any
  std::string warning;                    // non-empty: say it (a resume whose descriptor differs)
  std::vector<std::string> notes;         // say each (e.g. overwrite_output_dir ignored for a resume)
  std::vector<std::filesystem::path> removed;
};

// Rank 0, before training: creates output_dir if needed, applies the rules above, and writes this run's
// zlora_run.json. Throws zlora::Error with both descriptions when refusing.
OutputDirResult prepare_output_dir(const std::filesystem::path& output_dir, const RunDescriptor& run,
                                   bool overwrite_output_dir, bool resume);

}  // namespace zlora::ckpt
