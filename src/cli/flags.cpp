#include "cli/flags.h"

#include <cstdio>

#include "cli/cli.h"
#include "cli/io.h"

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

absl::StatusOr<KmsCommandFlags> ParseKmsCommandFlags(Flags& flags,
                                                     const std::string& positional_error,
                                                     const std::string& mode_flag,
                                                     const std::string& mode_default) {
  if (!flags.positional().empty()) {
    for (auto& p : flags.mutable_positional()) WipeString(p);
    return absl::InvalidArgumentError(positional_error);
  }
  KmsCommandFlags out;
  out.socket = flags.get("socket");
  if (out.socket.empty()) return absl::InvalidArgumentError("--socket PATH is required");
  out.api = flags.get("api", "v2");
  if (out.api != "v2" && out.api != "v1beta1") {
    return absl::InvalidArgumentError("--api must be v2 or v1beta1");
  }
  out.mode = flags.get(mode_flag, mode_default);
  if (flags.has("raw")) {
    if (flags.has(mode_flag) && out.mode != "raw") {
      return absl::InvalidArgumentError("--raw contradicts --" + mode_flag);
    }
    out.mode = "raw";
  }
  return out;
}

}  // namespace trousseau::cli
