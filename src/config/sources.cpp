// Reading assignments from YAML/JSON files and from argv.
#include "zlora/config/load.h"

#include "zlora/core/error.h"
#include "zlora/core/fs.h"
#include "zlora/core/text.h"

#include <yaml-cpp/depthguard.h>  // YAML::DeepRecursion
#include <yaml-cpp/yaml.h>

#include <filesystem>

namespace zlora::config {

namespace {

std::string where(const std::string& path, const YAML::Mark& m) {
  return fmt::format("{}:{}:{}", path, m.line + 1, m.column + 1);
}

// The top-level option whose value holds line `line` (0-based) of a config file: the last line at or
// before it that starts in column 1 with `key:`. "" when there is none. For messages about values
// yaml-cpp could not parse (so that no node names the key).
std::string option_at_line(const std::string& text, int line) {
  std::string found;
  size_t begin = 0;
  for (int l = 0; begin <= text.size() && l <= line; ++l) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string_view s(text.data() + begin, end - begin);
    const size_t colon = s.find(':');
    if (!s.empty() && s[0] != ' ' && s[0] != '\t' && s[0] != '#' && s[0] != '-' && s[0] != '[' && s[0] != '{' &&
        colon != std::string_view::npos) {
      found = text::trim(s.substr(0, colon));
      if (found.size() >= 2 && (found.front() == '"' || found.front() == '\'') && found.back() == found.front())
        found = found.substr(1, found.size() - 2);
    }
    begin = end + 1;
  }
  return found;
}

}  // namespace

std::vector<Assignment> read_yaml_assignments(const std::string& path) {
  if (!std::filesystem::exists(path)) fail("config file '{}' does not exist", path);
  if (std::filesystem::is_directory(path)) fail("config file '{}' is a directory, expected a YAML or JSON file", path);
  // Config files are small; a larger one is a mistake (a dataset or weights passed by accident).
  return parse_yaml_assignments(fs::read_file(path, 16u << 20), path);
}

std::vector<Assignment> parse_yaml_assignments(const std::string& text, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own message is only "bad file".
    const std::string key = option_at_line(text, e.mark.line);
    fail(
        "config file {}:{}:{}: {} nested more than {} levels deep; options are flat `key: value` pairs whose "
        "value is a single value or a list of plain values",
        path, e.mark.line + 1, e.mark.column + 1,
        key.empty() ? std::string("a value is") : "the value of option '" + text::printable(key) + "' is",
        e.depth() - 1);
  } catch (const YAML::Exception& e) {
    fail("config file {}:{}:{}: {}", path, e.mark.line + 1, e.mark.column + 1, text::printable(e.msg));
  }
  std::vector<Assignment> out;
  if (root.IsNull()) return out;  // an empty file sets nothing
  if (!root.IsMap())
    fail("config file '{}' must be a mapping of option names to values (key: value lines), found a {}", path,
         root.IsSequence() ? "list" : "single value");
  for (const auto& kv : root) {
    if (!kv.first.IsScalar())
      fail("config file {}: option names must be plain words, found a {} as a key", where(path, kv.first.Mark()),
           kv.first.IsSequence() ? "list"
           : kv.first.IsMap()    ? "mapping"
                                 : "null");
    std::string key = kv.first.as<std::string>();
    if (key.empty() || text::printable(key) != key || key.find(' ') != std::string::npos)
      fail("config file {}: option name '{}' is not a plain word (option names are like learning_rate)",
           where(path, kv.first.Mark()), text::printable(key));
    const YAML::Node& v = kv.second;
    Assignment a;
    a.key = key;
    a.origin.where = where(path, kv.first.Mark());
    if (v.IsNull()) {
      a.value = "null";
    } else if (v.IsScalar()) {
      a.value = v.as<std::string>();
    } else if (v.IsSequence()) {
      std::vector<std::string> items;
      for (const auto& item : v) {
        if (!item.IsScalar())
          fail("option '{}' ({}) must be a list of plain values, found a {} in it", text::printable(key),
               where(path, item.Mark()),
               item.IsMap()        ? "mapping"
               : item.IsSequence() ? "list"
                                   : "null");
        items.push_back(item.as<std::string>());
      }
      a.value = text::join(items, ",");
      a.from_sequence = true;
    } else {
      fail(
          "option '{}' ({}) has a nested mapping as its value; options are flat `key: value` pairs whose value is a "
          "single value or a list of plain values",
          text::printable(key), a.origin.where);
    }
    out.push_back(std::move(a));
  }
  return out;
}

ArgvParts split_argv(const std::vector<std::string>& args, const std::function<bool(const std::string&)>& is_bool) {
  ArgvParts parts;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (text::starts_with(arg, "--")) {
      std::string key = arg.substr(2);
      std::string value;
      bool have_value = false;
      if (auto eq = key.find('='); eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
        have_value = true;
      }
      if (key.empty()) fail("empty option name in argument '{}'", arg);
      Assignment a;
      a.key = key;
      a.origin.where = "flag --" + key;
      if (!have_value) {
        bool next_is_value = i + 1 < args.size() && !text::starts_with(args[i + 1], "--");
        if (is_bool(key)) {
          // `--bf16` alone means true; `--bf16 True` / `--bf16 false` give the value (argparse nargs='?').
          if (next_is_value) {
            value = args[++i];
          } else {
            value = "true";
          }
        } else {
          if (!next_is_value) fail("option '--{}' needs a value", key);
          value = args[++i];
        }
      }
      a.value = value;
      parts.assignments.push_back(std::move(a));
    } else if (i == 0 &&
               (text::ends_with(arg, ".yaml") || text::ends_with(arg, ".yml") || text::ends_with(arg, ".json"))) {
      parts.config_file = arg;
    } else if (auto eq = arg.find('='); eq != std::string::npos && eq > 0) {
      // LLaMA-Factory's OmegaConf-style override after a config file: key=value.
      Assignment a;
      a.key = arg.substr(0, eq);
      a.value = arg.substr(eq + 1);
      a.origin.where = "argument " + arg;
      parts.assignments.push_back(std::move(a));
    } else {
      fail(
          "unexpected argument '{}': expected a config file (.yaml/.yml/.json) first, then --key value or "
          "key=value pairs",
          arg);
    }
  }
  return parts;
}

}  // namespace zlora::config
