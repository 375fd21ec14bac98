#include "cli/cli.h"

namespace trousseau::cli {

const std::vector<CommandSummary>& Summaries() {
  static const std::vector<CommandSummary> list = {
      {"status --socket PATH", "Status and Version as kube-apiserver calls them; exit 0 if healthy"},
      {"encrypt --socket PATH < PLAINTEXT", "encrypt stdin through the plugin (debugging)"},
      {"decrypt --socket PATH < CIPHERTEXT", "decrypt stdin through the plugin (debugging)"},
      {"audit [FILE...]", "review audit records (raw JSON lines or kubelet CRI logs)"},
      {"doctor --config FILE", "preflight checks of a node before kube-apiserver depends on it"},
  };
  return list;
}

}  // namespace trousseau::cli
