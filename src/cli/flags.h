// A small flag parser for the operator commands: `--name value`, `--name=value`, boolean
// `--name`, `-h`/`--help`, and positional arguments. Unknown flags are errors naming the flag.
#pragma once

#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace trousseau::cli {

struct FlagSpec {
  const char* name;      // without the leading "--"
  bool takes_value;
};

class Flags {
 public:
  // `command` names the command in error messages ("unknown flag --x for trousseau status").
  static absl::StatusOr<Flags> Parse(const std::string& command,
                                     const std::vector<std::string>& args,
                                     std::initializer_list<FlagSpec> spec);

  bool help() const { return help_; }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::vector<std::string>& mutable_positional() { return positional_; }

 private:
  bool help_ = false;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// What encrypt and decrypt share after parsing: no positional argument (it may be a secret, so
// it is wiped before the error), --socket required, --api v2|v1beta1, and --raw as shorthand
// for `--<mode_flag> raw` (contradicting an explicit other value is an error).
struct KmsCommandFlags {
  std::string socket;
  std::string api;   // "v2" or "v1beta1"
  std::string mode;  // the value of --<mode_flag> (or "raw" from --raw), else mode_default
};
// `positional_error` is the message for a positional argument. Errors are InvalidArgument with
// the text UsageError prints.
absl::StatusOr<KmsCommandFlags> ParseKmsCommandFlags(Flags& flags,
                                                     const std::string& positional_error,
                                                     const std::string& mode_flag,
                                                     const std::string& mode_default);

// Prints "trousseau <command>: <message>" and a pointer to --help on stderr; returns kExitUsage.
int UsageError(const std::string& command, const std::string& message);

}  // namespace trousseau::cli
