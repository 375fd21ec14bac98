#include "cli/flags.h"

#include <cstdio>

#include "cli/cli.h"

namespace trousseau::cli {

absl::StatusOr<Flags> Flags::Parse(const std::string& command,
                                   const std::vector<std::string>& args,
                                   std::initializer_list<FlagSpec> spec) {
  Flags f;
  bool only_positional = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (only_positional || a.size() < 2 || a[0] != '-' ) {
      f.positional_.push_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
      continue;
    }
    if (a == "-h" || a == "--help") {
      f.help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError("unknown flag " + a.substr(0, 64) + " (flags are --name)");
    }
    std::string name = a.substr(2);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const FlagSpec* found = nullptr;
    for (const auto& s : spec) {
      if (name == s.name) found = &s;
    }
    if (found == nullptr) {
      return absl::InvalidArgumentError("unknown flag --" + name.substr(0, 64) + " for trousseau " +
                                        command);
    }
    if (found->takes_value) {
      if (!value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError("--" + name + " needs a value");
        }
        value = args[++i];
      }
      f.values_[name] = *value;
    } else {
      if (value) return absl::InvalidArgumentError("--" + name + " takes no value");
      f.values_[name] = "true";
    }
  }
  return f;
}

std::string Flags::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int UsageError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "trousseau %s: %s\n(see: trousseau %s --help)\n", command.c_str(),
               message.c_str(), command.c_str());
  return kExitUsage;
}

}  // namespace trousseau::cli
