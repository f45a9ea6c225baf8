// A schema binds option names (LLaMA-Factory's argument names) to typed fields of a config struct.
// One schema per command serves every source of values — YAML file, DeepSpeed JSON, command-line
// flags — and `--help`, `--print_config` and docs/config-reference.md, so each option's name, type,
// default, range and help text are written exactly once.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace zlora::config {

// Where a value came from, for error messages and --print_config ("flag --cutoff_len", "a.yaml:3:1").
struct Origin {
  std::string where;
};

enum class ValueKind { Bool, Int, Float, String, List };

template <typename Root>
class Schema;

// One option. Built through Schema::add and refined with the chained setters below.
template <typename Root>
struct Field {
  std::string name;
  std::string group;
  std::string help;
  ValueKind kind = ValueKind::String;
  bool optional = false;             // may be unset (prints as "null")
  std::vector<std::string> choices;  // String: allowed values, when non-empty
  // String: LLaMA-Factory's values that zlora refuses as a feature it does not support, and what they are
  // (stage dpo, finetuning_type full): a clearer message than "valid values: ..." with a wrong suggestion.
  std::vector<std::string> unsupported_choices;
  std::string unsupported_why;
  std::optional<double> min, max;  // Int/Float: inclusive range
  bool accepted_only = false;      // accepted for compatibility; see `help` for what it does
  // Parses `raw`, checks it against this field's type/range/choices and stores it into the root.
  std::function<void(const Field&, Root&, const std::string&, const Origin&)> set;
  std::function<std::string(const Root&)> get;  // render for --print_config
  std::function<void(Root&)> reset;             // back to unset (optional fields)

  Field& range(double lo, double hi) {
    min = lo, max = hi;
    return *this;
  }
  Field& at_least(double lo) {
    min = lo;
    return *this;
  }
  Field& one_of(std::vector<std::string> allowed) {
    choices = std::move(allowed);
    return *this;
  }
  Field& refuses(std::vector<std::string> values, std::string why) {
    unsupported_choices = std::move(values);
    unsupported_why = std::move(why);
    return *this;
  }
  void apply(Root& root, const std::string& raw, const Origin& origin) const { set(*this, root, raw, origin); }

  Field& compat() {
    accepted_only = true;
    return *this;
  }
};

std::string kind_name(ValueKind k);

// Checks a parsed number against a field's range; throws zlora::Error naming the key and origin.
void check_range(const std::string& name, double v, const std::optional<double>& lo, const std::optional<double>& hi,
                 const Origin& origin);
// Parses one value of the given kind; throws zlora::Error naming the key, the origin and the type.
bool parse_bool_value(const std::string& name, const std::string& raw, const Origin& origin);
long long parse_int_value(const std::string& name, const std::string& raw, const Origin& origin);
double parse_float_value(const std::string& name, const std::string& raw, const Origin& origin);
void check_choice(const std::string& name, const std::string& value, const std::vector<std::string>& choices,
                  const Origin& origin);
// The same, first refusing LLaMA-Factory's values zlora does not support (Field::refuses).
template <typename Root>
void check_choice(const Field<Root>& f, const std::string& value, const Origin& origin);
std::string format_double(double v);
// Lists are written "a,b,c" on the command line and as YAML sequences in files.
std::vector<std::string> split_option_list(const std::string& raw);
std::string join_option_list(const std::vector<std::string>& items);

void refuse_unsupported_choice(const std::string& name, const std::string& value, const std::string& why,
                               const std::vector<std::string>& choices, const Origin& origin);

template <typename Root>
void check_choice(const Field<Root>& f, const std::string& value, const Origin& origin) {
  for (const auto& u : f.unsupported_choices)
    if (u == value) refuse_unsupported_choice(f.name, value, f.unsupported_why, f.choices, origin);
  check_choice(f.name, value, f.choices, origin);
}

template <typename Root>
class Schema {
 public:
  explicit Schema(std::string command) : command_(std::move(command)) {}

  const std::string& command() const { return command_; }
  const std::vector<Field<Root>>& fields() const { return fields_; }

  // Binds `name` to the field reached through `ref` (a lambda returning a reference into Root).
  template <typename Ref>
  Field<Root>& add(std::string name, std::string group, Ref ref, std::string help) {
    using T = std::remove_reference_t<decltype(ref(std::declval<Root&>()))>;
    Field<Root> f;
    f.name = std::move(name);
    f.group = std::move(group);
    f.help = std::move(help);
    bind<T>(f, ref);
    fields_.push_back(std::move(f));
    index_[fields_.back().name] = fields_.size() - 1;
    return fields_.back();
  }

  const Field<Root>* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &fields_[it->second];
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& f : fields_) out.push_back(f.name);
    return out;
  }

 private:
  template <typename T, typename Ref>
  static void bind(Field<Root>& f, Ref ref) {
    using F = Field<Root>;
    if constexpr (std::is_same_v<T, bool>) {
      f.kind = ValueKind::Bool;
      f.set = [ref](const F& self, Root& r, const std::string& raw, const Origin& o) {
        ref(r) = parse_bool_value(self.name, raw, o);
      };
      f.get = [ref](const Root& r) { return std::string(ref(const_cast<Root&>(r)) ? "true" : "false"); };
    } else if constexpr (std::is_same_v<T, long long> || std::is_same_v<T, int>) {
      f.kind = ValueKind::Int;
      f.set = [ref](const F& self, Root& r, const std::string& raw, const Origin& o) {
        long long v = parse_int_value(self.name, raw, o);
        check_range(self.name, static_cast<double>(v), self.min, self.max, o);
        ref(r) = static_cast<T>(v);
      };
      f.get = [ref](const Root& r) { return std::to_string(ref(const_cast<Root&>(r))); };
    } else if constexpr (std::is_same_v<T, double>) {
      f.kind = ValueKind::Float;
      f.set = [ref](const F& self, Root& r, const std::string& raw, const Origin& o) {
        double v = parse_float_value(self.name, raw, o);
        check_range(self.name, v, self.min, self.max, o);
        ref(r) = v;
      };
      f.get = [ref](const Root& r) { return format_double(ref(const_cast<Root&>(r))); };
    } else if constexpr (std::is_same_v<T, std::string>) {
      f.kind = ValueKind::String;
      f.set = [ref](const F& self, Root& r, const std::string& raw, const Origin& o) {
        check_choice(self, raw, o);
        ref(r) = raw;
      };
      f.get = [ref](const Root& r) { return ref(const_cast<Root&>(r)); };
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      f.kind = ValueKind::List;
      f.set = [ref](const F& self, Root& r, const std::string& raw, const Origin& o) {
        std::vector<std::string> items = split_option_list(raw);
        for (const auto& item : items) check_choice(self, item, o);
        ref(r) = std::move(items);
      };
      f.get = [ref](const Root& r) { return join_option_list(ref(const_cast<Root&>(r))); };
    } else if constexpr (is_optional<T>::value) {
      using V = typename T::value_type;
      bind<V>(f, [ref](Root& r) -> V& {
        auto& opt = ref(r);
        if (!opt) opt.emplace();
        return *opt;
      });
      f.optional = true;
      f.set = [ref, inner_set = f.set](const F& self, Root& r, const std::string& raw, const Origin& o) {
        // "null"/"None"/"~" unset an optional value, as in YAML and LLaMA-Factory's CLI.
        if (raw == "null" || raw == "None" || raw == "none" || raw == "~") {
          ref(r).reset();
          return;
        }
        std::optional<V> saved = ref(r);
        try {
          inner_set(self, r, raw, o);
        } catch (...) {
          ref(r) = saved;
          throw;
        }
      };
      f.get = [ref, inner_get = f.get](const Root& r) {
        const auto& opt = ref(const_cast<Root&>(r));
        return opt ? inner_get(r) : std::string("null");
      };
      f.reset = [ref](Root& r) { ref(r).reset(); };
    } else {
      static_assert(sizeof(T) == 0, "unsupported option type");
    }
  }

  template <typename T>
  struct is_optional : std::false_type {};
  template <typename T>
  struct is_optional<std::optional<T>> : std::true_type {};

  std::string command_;
  std::vector<Field<Root>> fields_;
  std::map<std::string, size_t> index_;
};

}  // namespace zlora::config
