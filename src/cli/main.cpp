#include "zlora/cli/commands.h"

int main(int argc, char** argv) { return zlora::cli::main(argc, argv); }
