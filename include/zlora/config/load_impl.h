// Template implementations for load.h (included at its end; not for direct use).
#pragma once

#include "zlora/config/foreign.h"
#include "zlora/core/error.h"
#include "zlora/core/text.h"

#include <fmt/format.h>

#include <sstream>

namespace zlora::config {

template <typename T>
void apply(const Schema<T>& schema, Resolved<T>& out, const std::vector<Assignment>& assignments) {
  for (const auto& a : assignments) {
    const Field<T>* f = schema.find(a.key);
    if (!f && find_foreign_option(a.key)) {
      // A LLaMA-Factory / transformers name zlora has decided about (foreign.h): a note, or an error.
      std::string note = foreign_option_note(*find_foreign_option(a.key), a.value, a.origin.where);
      if (!note.empty()) out.notes.push_back(std::move(note));
      continue;
    }
    if (!f) {
      // Suggestions come from every name this command accepts, LLaMA-Factory's unbound ones included.
      std::vector<std::string> names = schema.names();
      for (const auto& o : foreign_options()) names.emplace_back(o.name);
      fail("unknown option '{}' ({}){}\n  `zlora {} --help` lists the options.", a.key, a.origin.where,
           text::did_you_mean(a.key, names), schema.command());
    }
    if (a.from_sequence && f->kind != ValueKind::List)
      fail("option '{}' ({}) takes a single {} value, not a list", a.key, a.origin.where, kind_name(f->kind));
    f->apply(out.cfg, a.value, a.origin);
    out.origins[a.key] = a.origin;
  }
}

template <typename T>
Resolved<T> parse(const Schema<T>& schema, const std::vector<std::string>& args) {
  auto is_bool = [&schema](const std::string& key) {
    const Field<T>* f = schema.find(key);
    return f && f->kind == ValueKind::Bool;
  };
  ArgvParts parts = split_argv(args, is_bool);
  Resolved<T> out;
  out.config_file = parts.config_file;
  if (!parts.config_file.empty()) apply(schema, out, read_yaml_assignments(parts.config_file));
  apply(schema, out, parts.assignments);
  return out;
}

template <typename T>
std::string render(const Schema<T>& schema, const Resolved<T>& r) {
  std::ostringstream os;
  std::string group;
  for (const auto& f : schema.fields()) {
    if (f.group != group) {
      group = f.group;
      os << "### " << group << "\n";
    }
    std::string value = f.get(r.cfg);
    if (f.kind == ValueKind::String && f.optional == false && value.empty()) value = "\"\"";
    auto it = r.origins.find(f.name);
    os << f.name << ": " << value;
    os << "  # " << (it == r.origins.end() ? std::string("default") : it->second.where) << "\n";
  }
  return os.str();
}

template <typename T>
std::string help_text(const Schema<T>& schema, const std::string& usage) {
  T defaults{};
  std::ostringstream os;
  os << usage << "\n";
  std::string group;
  for (const auto& f : schema.fields()) {
    if (f.group != group) {
      group = f.group;
      os << "\n" << group << ":\n";
    }
    std::string head = "  --" + f.name + " " + kind_name(f.kind);
    if (head.size() < 40)
      head.resize(40, ' ');
    else
      head += "\n" + std::string(40, ' ');
    os << head << f.help;
    std::string def = f.get(defaults);
    os << " [default: " << (def.empty() ? std::string("\"\"") : def) << "]";
    if (!f.choices.empty()) os << " {" << text::join(f.choices, "|") << "}";
    os << "\n";
  }
  return os.str();
}

template <typename T>
std::string reference_markdown(const Schema<T>& schema) {
  T defaults{};
  std::ostringstream os;
  std::string group;
  for (const auto& f : schema.fields()) {
    if (f.group != group) {
      group = f.group;
      os << "\n#### " << group << "\n\n| option | type | default | meaning |\n| --- | --- | --- | --- |\n";
    }
    std::string def = f.get(defaults);
    std::string meaning = f.help;
    if (!f.choices.empty()) meaning += " One of: `" + text::join(f.choices, "`, `") + "`.";
    if (f.min || f.max) {
      meaning += " Range: ";
      meaning += f.min ? fmt::format("{:g}", *f.min) : std::string("-inf");
      meaning += " to ";
      meaning += f.max ? fmt::format("{:g}", *f.max) : std::string("inf");
      meaning += ".";
    }
    os << "| `" << f.name << "` | " << kind_name(f.kind) << " | `" << (def.empty() ? "\"\"" : def) << "` | " << meaning
       << " |\n";
  }
  return os.str();
}

}  // namespace zlora::config
