#include "tools/cli/args.h"

namespace sendense::cli {

std::optional<std::string> Args::value(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end()) return std::nullopt;
  return it->second;
}

std::string Args::value_or(const std::string& name, const std::string& fallback) const {
  return value(name).value_or(fallback);
}

std::string Args::required(const std::string& name) const {
  auto v = value(name);
  if (!v) throw UsageError("missing " + name);
  return *v;
}

std::vector<std::string> Args::all(const std::string& name) const {
  auto it = repeated.find(name);
  if (it != repeated.end()) return it->second;
  if (auto v = value(name)) return {*v};
  return {};
}

Args parse_args(int argc, char** argv, int first, const std::set<std::string>& value_options,
                const std::set<std::string>& flag_options, const std::set<std::string>& repeatable) {
  Args args;
  bool options_done = false;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (options_done || a.size() < 2 || a[0] != '-') {
      args.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    std::string name = a;
    std::optional<std::string> inline_value;
    if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
      name = a.substr(0, eq);
      inline_value = a.substr(eq + 1);
    }
    if (value_options.contains(name)) {
      if (args.values.contains(name) && !repeatable.contains(name)) throw UsageError(name + " given twice");
      std::string v;
      if (inline_value) {
        v = *inline_value;
      } else {
        if (i + 1 >= argc) throw UsageError(name + " needs a value");
        v = argv[++i];
      }
      args.values.emplace(name, v);  // the first value
      if (repeatable.contains(name)) args.repeated[name].push_back(std::move(v));
    } else if (flag_options.contains(name)) {
      if (inline_value) throw UsageError(name + " takes no value");
      args.flags.insert(name);
    } else {
      throw UsageError("unknown option " + name);
    }
  }
  return args;
}

void expect_positionals(const Args& args, const std::vector<std::string>& names) {
  if (args.positional.size() < names.size()) throw UsageError("missing " + names[args.positional.size()]);
  if (args.positional.size() > names.size())
    throw UsageError("unexpected argument '" + args.positional[names.size()] + "'");
}

std::optional<std::string> format_option(const Args& args) {
  auto f = args.value("--format");
  if (f && *f != "qcow2" && *f != "raw" && *f != "vmdk" && *f != "vhdx")
    throw UsageError("--format must be qcow2, raw, vmdk or vhdx, not '" + *f + "'");
  return f;
}

}  // namespace sendense::cli
