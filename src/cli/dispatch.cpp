// Subcommand dispatch and the single place where errors become a message and an exit code.
#include "zlora/cli/commands.h"

#include "zlora/core/error.h"
#include "zlora/core/log.h"
#include "zlora/core/text.h"

#include <cstdio>
#include <iostream>

namespace zlora::cli {

// cmd_scaling_report.cpp, cmd_comm_model.cpp and cmd_templates.cpp (declared here, not in commands.h, so that the other
// commands need no rebuild).
int run_scaling_report(const Args& args, Session& session);
int run_comm_model(const Args& args, Session& session);
int run_templates(const Args& args, Session& session);

const std::vector<Command>& commands() {
  static const std::vector<Command> list = {
      {"prepare", "tokenize datasets through a chat template into an HDF5 token store", run_prepare, false},
      {"train", "LoRA supervised fine-tuning (under mpirun/srun: data parallel with ZeRO 0-3)", run_train, false},
      {"export", "merge a LoRA adapter into the base model; write sharded safetensors + Modelfile", run_export, false},
      {"generate", "generate text with a model (+ adapter) under a chat template", run_generate, false},
      {"templates", "list the chat templates (--template values) and the models they use", run_templates, false},
      {"info", "describe an HDF5 token store; dump samples as JSON", run_info, false},
      {"tokenize", "encode JSON-lines strings to token ids (or decode with --decode)", run_tokenize, false},
      {"plot", "redraw training_loss.svg/.png from an output directory", run_plot, false},
      {"scaling-report", "tables and plot of a benchmarks/scaling_sweep.sh sweep directory", run_scaling_report, false},
      {"comm-model", "bytes each rank sends per step at each ZeRO stage and world size; projected step time",
       run_comm_model, false},
      {"init-model", "write a model directory with random weights for any config.json (tests, benchmarks)",
       run_init_model, false},
      {"config-reference", "print the options of every command as Markdown", run_config_reference, true},
  };
  return list;
}

void print_config_messages(const std::vector<std::string>& warnings, const std::vector<std::string>& notes) {
  if (dist::launcher_rank() != 0) return;
  for (const auto& n : notes) log::info("{}", n);
  for (const auto& w : warnings) log::warn("{}", w);
}

bool wants_help(const Args& args) {
  for (const auto& a : args)
    if (a == "-h" || a == "--help") return true;
  return false;
}

dist::MpiRuntime& Session::start_mpi() {
  if (!mpi_) {
    mpi_ = std::make_unique<dist::MpiRuntime>(argc_, argv_);
    log::init(mpi_->rank(), mpi_->size(), false);
  }
  return *mpi_;
}

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "zlora %s: LoRA fine-tuning for MPI/NCCL clusters (LLaMA-Factory's arguments)\n\n"
               "usage: zlora <command> [CONFIG.yaml] [--option value ...]\n"
               "       mpirun -np N zlora train CONFIG.yaml [--option value ...]\n\ncommands:\n",
               ZLORA_VERSION);
  for (const auto& c : commands())
    if (!c.hidden) std::fprintf(out, "  %-14s %s\n", c.name, c.summary);
  std::fprintf(out, "\n`zlora <command> --help` lists a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  Args all(argv + 1, argv + argc);
  if (all.empty()) {
    print_usage(stderr);
    return kExitError;
  }
  if (all[0] == "-h" || all[0] == "--help" || all[0] == "help") {
    print_usage(stdout);
    return kExitOk;
  }
  if (all[0] == "--version" || all[0] == "version") {
    std::printf("zlora %s\n", ZLORA_VERSION);
    return kExitOk;
  }
  Session session(&argc, &argv);
  log::init(dist::launcher_rank(), 1, false);
  try {
    const Command* cmd = nullptr;
    std::vector<std::string> names;
    for (const auto& c : commands()) {
      if (all[0] == c.name) cmd = &c;
      if (!c.hidden) names.push_back(c.name);
    }
    if (!cmd)
      fail("unknown command '{}'{}; commands: {}", all[0], text::did_you_mean(all[0], names), text::join(names, ", "));
    return cmd->run(Args(all.begin() + 1, all.end()), session);
  } catch (const Error& e) {
    if (dist::MpiRuntime* mpi = session.mpi(); mpi && mpi->size() > 1) mpi->fail_job(e.what(), kExitError);
    if (dist::launcher_rank() == 0) std::fprintf(stderr, "zlora: error: %s\n", e.what());
    return kExitError;
  } catch (const std::exception& e) {
    // Not expected: a library threw something zlora did not translate. Still one clear line.
    std::string msg = std::string("internal error: ") + e.what();
    if (dist::MpiRuntime* mpi = session.mpi(); mpi && mpi->size() > 1) mpi->fail_job(msg, kExitError);
    std::fprintf(stderr, "zlora: %s\n", msg.c_str());
    return kExitError;
  }
}

}  // namespace zlora::cli
