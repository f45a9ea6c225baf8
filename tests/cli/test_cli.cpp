// The zlora executable: help, dispatch, error reporting, and the generated config reference.
#include "test_util.h"

using zlora::test::run_zlora;

TEST(Cli, HelpListsSubcommands) {
  auto r = run_zlora("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* c : {"prepare", "train", "export", "generate", "info", "tokenize", "plot"})
    EXPECT_NE(r.output.find(std::string("  ") + c + " "), std::string::npos) << c << "\n" << r.output;
}

TEST(Cli, CommandHelpListsRealOptions) {
  auto r = run_zlora("train --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* o : {"--model_name_or_path", "--lora_target", "--deepspeed", "--zero_stage", "--offload_optimizer",
                        "--neftune_noise_alpha", "--resume_from_checkpoint"})
    EXPECT_NE(r.output.find(o), std::string::npos) << o;
  for (const char* c : {"prepare", "export", "generate", "info", "tokenize", "plot"}) {
    auto h = run_zlora(std::string(c) + " --help");
    EXPECT_EQ(h.exit_code, 0) << c << ": " << h.output;
    EXPECT_NE(h.output.find("usage: zlora " + std::string(c)), std::string::npos) << h.output;
  }
}

TEST(Cli, UnknownCommandSuggests) {
  auto r = run_zlora("trian");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("unknown command 'trian', did you mean 'train'?"), std::string::npos) << r.output;
}

TEST(Cli, ConfigErrorIsOneLineAndNonZero) {
  auto r = run_zlora("train --model_name_or_path m --dataset d --lora_rnak 4");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("zlora: error: unknown option 'lora_rnak'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("did you mean 'lora_rank'?"), std::string::npos) << r.output;
}

TEST(Cli, PrintConfig) {
  auto r = run_zlora("train --model_name_or_path m --dataset d --print_config --lora_rank 4");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("lora_rank: 4  # flag --lora_rank"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lora_alpha: 8.0"), std::string::npos) << r.output;
}

TEST(Cli, ConfigErrorUnderMpirunPrintedOnce) {
  auto r = zlora::test::run_command("mpiexec -n 2 --oversubscribe " + zlora::test::zlora_bin().string() +
                                    " train --model_name_or_path m --dataset d --cutoff_len x");
  EXPECT_NE(r.exit_code, 0);
  size_t first = r.output.find("expects an integer");
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("expects an integer", first + 1), std::string::npos) << r.output;
}

// Every rank loads the same configuration: its warnings (here a DeepSpeed key zlora ignores) and
// --print_config's output come once per job, from rank 0, not once per rank.
TEST(Cli, ConfigWarningsUnderMpirunPrintedOnce) {
  zlora::test::TempDir dir;
  const auto ds = dir / "ds.json";
  zlora::test::write_file(ds, R"({"zero_optimization": {"stage": 2, "round_robin_gradients": true}})");
  auto r =
      zlora::test::run_command("mpiexec -n 2 --oversubscribe " + zlora::test::zlora_bin().string() +
                               " train --model_name_or_path m --dataset d --print_config --deepspeed " + ds.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string warning = "'zero_optimization.round_robin_gradients' is not implemented and is ignored";
  size_t first = r.output.find(warning);
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find(warning, first + 1), std::string::npos) << r.output;
  first = r.output.find("zero_stage: 2");
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("zero_stage: 2", first + 1), std::string::npos) << r.output;
}

TEST(Cli, ConfigReferenceDocIsCurrent) {
  auto r = run_zlora("config-reference");
  ASSERT_EQ(r.exit_code, 0);
  std::string doc = zlora::test::read_file(zlora::test::source_dir() / "docs" / "config-reference.md");
  const std::string begin = "<!-- BEGIN GENERATED: zlora config-reference -->\n";
  const std::string end = "<!-- END GENERATED -->";
  size_t b = doc.find(begin), e = doc.find(end);
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  EXPECT_EQ(doc.substr(b + begin.size(), e - b - begin.size()), r.output)
      << "docs/config-reference.md is stale: run tools/update-config-reference.sh";
}
