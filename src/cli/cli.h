// Operator commands that run beside `serve`: each one is a function taking the arguments after
// the command name and returning the process exit code. docs/cli.md documents them.
#pragma once

#include <string>
#include <vector>

namespace trousseau::cli {

// Exit codes shared by the commands (docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;  // the check failed, the plugin is unhealthy/unreachable,
                                       // or a call returned an error
inline constexpr int kExitUsage = 2;   // bad flags or bad input; nothing was called

int StatusCommand(const std::vector<std::string>& args);   // status.cpp
int EncryptCommand(const std::vector<std::string>& args);  // encrypt.cpp
int DecryptCommand(const std::vector<std::string>& args);  // decrypt.cpp
int AuditCommand(const std::vector<std::string>& args);    // audit.cpp

// One line per command for the top-level usage.
struct CommandSummary {
  const char* usage;
  const char* what;
};
const std::vector<CommandSummary>& Summaries();

}  // namespace trousseau::cli
