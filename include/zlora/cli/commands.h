// The `zlora` subcommands. Each lives in its own file under src/cli/ and receives the arguments after
// its name; it returns the process exit code or throws zlora::Error.
#pragma once

#include "zlora/config/args.h"
#include "zlora/dist/mpi_runtime.h"

#include <memory>
#include <string>
#include <vector>

namespace zlora::cli {

using Args = std::vector<std::string>;

// What a command may ask of the process: MPI is started by the commands that need it, after their
// configuration is validated, so a config error under `mpirun -np 8` is printed once and ends cleanly.
class Session {
 public:
  Session(int* argc, char*** argv) : argc_(argc), argv_(argv) {}
  dist::MpiRuntime& start_mpi();
  dist::MpiRuntime* mpi() { return mpi_.get(); }

 private:
  int* argc_;
  char*** argv_;
  std::unique_ptr<dist::MpiRuntime> mpi_;
};

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Args& args, Session& session);
  bool hidden;
};

// Exit codes.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;

const std::vector<Command>& commands();

int run_prepare(const Args& args, Session& session);
int run_train(const Args& args, Session& session);
int run_export(const Args& args, Session& session);
int run_generate(const Args& args, Session& session);
int run_info(const Args& args, Session& session);
int run_tokenize(const Args& args, Session& session);
int run_plot(const Args& args, Session& session);
int run_config_reference(const Args& args, Session& session);
int run_init_model(const Args& args, Session& session);

// Tokenizes cfg's datasets into the HDF5 store cfg.output, all MPI ranks in parallel (starts MPI).
// Shared by `zlora prepare` and `zlora train` (which prepares a missing store first); `made_by`
// (data::kMadeByPrepare or kMadeByTrain) is recorded in the store.
int prepare_store(const config::PrepareConfig& cfg, Session& session, const char* made_by);

// Prints the configuration's warnings (ignored DeepSpeed keys, deprecated names, ...) and notes
// (LLaMA-Factory options accepted with no effect) once per job: every rank loads the same
// configuration, so only the launcher's rank 0 prints them.
void print_config_messages(const std::vector<std::string>& warnings, const std::vector<std::string>& notes);

// True when `args` asks for help (-h / --help anywhere).
bool wants_help(const Args& args);

// Entry point shared by main() and the tests: dispatches argv, prints errors once, returns the exit code.
int main(int argc, char** argv);

}  // namespace zlora::cli
