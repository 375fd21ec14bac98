// trousseau encrypt --socket PATH: wraps the plaintext read from stdin through the plugin, as
// kube-apiserver would, for debugging a node by hand. The plaintext is never taken from argv.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/io.h"
#include "cli/kms_client.h"
#include "common/base64.h"
#include "envelope/key_service.h"
#include "hardening/secret_buffer.h"
#include "kms_v1beta1.grpc.pb.h"
#include "kms_v2.grpc.pb.h"

namespace trousseau::cli {
namespace {

constexpr const char* kHelp =
    "Usage: trousseau encrypt --socket PATH [--api v2|v1beta1] [--uid UID]\n"
    "                         [--output base64|raw|json] [--raw] [--timeout 5s] < PLAINTEXT\n"
    "\n"
    "Reads the plaintext from stdin (never from the command line, where ps and shell history\n"
    "would keep it), calls Encrypt on the plugin's socket and prints the ciphertext.\n"
    "The bytes are sent exactly as read: `echo` adds a newline, `printf %s` or a file does not.\n"
    "\n"
    "  head -c 32 /dev/urandom | trousseau encrypt --socket /run/trousseau/kms.sock\n"
    "\n"
    "Flags:\n"
    "  --socket PATH     the plugin's socket.path (required)\n"
    "  --api API         v2 (default) or v1beta1\n"
    "  --uid UID         the request uid written in the plugin's audit record (v2 only;\n"
    "                    default cli-<pid>)\n"
    "  --output FORMAT   base64 (default): the ciphertext as one base64 line on stdout, key_id\n"
    "                    on stderr; raw: the ciphertext bytes on stdout; json: {\"ciphertext\"\n"
    "                    (base64), \"key_id\", \"annotations\"} on stdout, which `trousseau\n"
    "                    decrypt` reads back whole\n"
    "  --raw             same as --output raw\n"
    "  --timeout D       call deadline (default 5s)\n"
    "\n"
    "Exit codes: 0 encrypted, 1 the call failed (CODE: message and a hint on stderr),\n"
    "2 usage or input error (nothing was sent).\n";

}  // namespace

int EncryptCommand(const std::vector<std::string>& args) {
  const std::string cmd = "encrypt";
  auto flags = Flags::Parse(cmd, args,
                            {{"socket", true}, {"api", true}, {"uid", true}, {"output", true},
                             {"raw", false}, {"timeout", true}});
  if (!flags.ok()) return UsageError(cmd, std::string(flags.status().message()));
  if (flags->help()) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  auto common = ParseKmsCommandFlags(
      *flags,
      "the plaintext is read from stdin only, never from an argument (arguments show in ps and "
      "shell history): printf %s \"$DATA\" | trousseau encrypt --socket PATH",
      "output", "base64");
  if (!common.ok()) return UsageError(cmd, std::string(common.status().message()));
  const std::string& socket = common->socket;
  const std::string& api = common->api;
  const std::string& output = common->mode;
  if (output != "base64" && output != "raw" && output != "json") {
    return UsageError(cmd, "--output must be base64, raw or json");
  }
  if (api == "v1beta1" && flags->has("uid")) return UsageError(cmd, "--uid is a v2 field");
  auto timeout = ParseTimeout(flags->get("timeout", "5s"));
  if (!timeout.ok()) return UsageError(cmd, std::string(timeout.status().message()));

  SecretBuffer plaintext;
  if (absl::Status st = ReadStdin(envelope::kMaxPlaintextBytes, plaintext); !st.ok()) {
    return UsageError(cmd, std::string(st.message()));
  }
  if (plaintext.empty()) {
    return UsageError(cmd, "stdin is empty: pipe the plaintext in, e.g. head -c 32 /dev/urandom | "
                           "trousseau encrypt --socket PATH");
  }
  auto channel = DialSocket(socket);
  if (!channel.ok()) {
    std::fprintf(stderr, "trousseau encrypt: %s\n", std::string(channel.status().message()).c_str());
    return kExitFailed;
  }

  std::string ciphertext, key_id;
  nlohmann::ordered_json annotations = nlohmann::ordered_json::object();
  grpc::Status st;
  grpc::ClientContext ctx;
  SetTimeout(ctx, *timeout);
  if (api == "v2") {
    ::v2::EncryptRequest req;
    req.set_plaintext(plaintext.chars(), plaintext.size());
    req.set_uid(flags->get("uid", "cli-" + std::to_string(::getpid())));
    ::v2::EncryptResponse resp;
    st = ::v2::KeyManagementService::NewStub(*channel)->Encrypt(&ctx, req, &resp);
    WipeString(*req.mutable_plaintext());
    if (st.ok()) {
      ciphertext = resp.ciphertext();
      key_id = resp.key_id();
      for (const auto& [k, v] : resp.annotations()) annotations[k] = base64::Encode(v);
    }
  } else {
    ::v1beta1::EncryptRequest req;
    req.set_version("v1beta1");
    req.set_plain(plaintext.chars(), plaintext.size());
    ::v1beta1::EncryptResponse resp;
    st = ::v1beta1::KeyManagementService::NewStub(*channel)->Encrypt(&ctx, req, &resp);
    WipeString(*req.mutable_plain());
    if (st.ok()) ciphertext = resp.cipher();
  }
  plaintext.clear();
  if (!st.ok()) {
    PrintCallError(cmd, api + " Encrypt", st, socket);
    return kExitFailed;
  }

  absl::Status wst;
  if (output == "raw") {
    wst = WriteStdout(ciphertext);
  } else if (output == "base64") {
    wst = WriteStdout(base64::Encode(ciphertext) + "\n");
  } else {
    nlohmann::ordered_json j = {{"api", api}, {"ciphertext", base64::Encode(ciphertext)}};
    if (api == "v2") {
      j["key_id"] = key_id;
      j["annotations"] = annotations;
    }
    wst = WriteStdout(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  }
  if (!wst.ok()) {
    std::fprintf(stderr, "trousseau encrypt: %s\n", std::string(wst.message()).c_str());
    return kExitFailed;
  }
  if (output != "json" && api == "v2") {
    std::fprintf(stderr, "key_id: %s\n", key_id.c_str());
    for (const auto& [k, v] : annotations.items()) {
      std::fprintf(stderr, "annotation %s: %s (base64)\n", k.c_str(), v.get<std::string>().c_str());
    }
  }
  return kExitOk;
}

}  // namespace trousseau::cli
