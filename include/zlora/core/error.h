// The one exception type of zlora. Its message is written for the user: what is wrong, where (file,
// line, flag, rank), and what the valid choices are. `main` prints it once and exits non-zero.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace zlora {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws zlora::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Checks a condition that depends on user input; on failure throws zlora::Error.
#define ZLORA_REQUIRE(cond, ...)             \
  do {                                       \
    if (!(cond)) ::zlora::fail(__VA_ARGS__); \
  } while (0)

}  // namespace zlora
