#include "zlora/config/schema.h"

#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <cmath>

namespace zlora::config {

std::string kind_name(ValueKind k) {
  switch (k) {
    case ValueKind::Bool:
      return "bool";
    case ValueKind::Int:
      return "int";
    case ValueKind::Float:
      return "float";
    case ValueKind::String:
      return "str";
    case ValueKind::List:
      return "list";
  }
  return "?";
}

std::string format_double(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.1f}", v);
  return fmt::format("{}", v);
}

void check_range(const std::string& name, double v, const std::optional<double>& lo, const std::optional<double>& hi,
                 const Origin& origin) {
  if ((lo && v < *lo) || (hi && v > *hi)) {
    std::string range = lo && hi ? fmt::format("between {:g} and {:g}", *lo, *hi)
                        : lo     ? fmt::format("at least {:g}", *lo)
                                 : fmt::format("at most {:g}", *hi);
    fail("option '{}' ({}) is {:g}, but it must be {}", name, origin.where, v, range);
  }
}

bool parse_bool_value(const std::string& name, const std::string& raw, const Origin& origin) {
  bool v;
  if (!text::parse_bool(raw, v))
    fail("option '{}' ({}) expects a boolean (true/false, True/False, yes/no, 1/0), got '{}'", name, origin.where,
         text::printable(raw));
  return v;
}

long long parse_int_value(const std::string& name, const std::string& raw, const Origin& origin) {
  long long v;
  if (!text::parse_int64(raw, v))
    fail("option '{}' ({}) expects an integer, got '{}'", name, origin.where, text::printable(raw));
  return v;
}

double parse_float_value(const std::string& name, const std::string& raw, const Origin& origin) {
  double v;
  if (!text::parse_double(raw, v))
    fail("option '{}' ({}) expects a number, got '{}'", name, origin.where, text::printable(raw));
  return v;
}

void check_choice(const std::string& name, const std::string& value, const std::vector<std::string>& choices,
                  const Origin& origin) {
  if (choices.empty()) return;
  for (const auto& c : choices)
    if (c == value) return;
  fail("option '{}' ({}) has value '{}'{}; valid values: {}", name, origin.where, text::printable(value),
       text::did_you_mean(value, choices), text::join(choices, ", "));
}

void refuse_unsupported_choice(const std::string& name, const std::string& value, const std::string& why,
                               const std::vector<std::string>& choices, const Origin& origin) {
  fail("option '{}' ({}) is '{}': {} is a LLaMA-Factory feature zlora does not support; valid values here: {}", name,
       origin.where, value, why, text::join(choices, ", "));
}

std::vector<std::string> split_option_list(const std::string& raw) { return text::split(raw, ','); }

std::string join_option_list(const std::vector<std::string>& items) { return text::join(items, ","); }

}  // namespace zlora::config
