// trousseau decrypt --socket PATH: unwraps a ciphertext read from stdin through the plugin and
// writes the plaintext to stdout, for debugging a node by hand.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/flags.h"
#include "cli/io.h"
#include "cli/kms_client.h"
#include "common/base64.h"
#include "hardening/secret_buffer.h"
#include "kms_v1beta1.grpc.pb.h"
#include "kms_v2.grpc.pb.h"

namespace trousseau::cli {
namespace {

constexpr const char* kHelp =
    "Usage: trousseau decrypt --socket PATH [--api v2|v1beta1] [--key-id ID] [--uid UID]\n"
    "                         [--input auto|base64|raw|json] [--raw] [--output raw|base64]\n"
    "                         [--timeout 5s] < CIPHERTEXT\n"
    "\n"
    "Reads a ciphertext from stdin, calls Decrypt on the plugin's socket and writes the\n"
    "plaintext bytes to stdout (nothing else goes to stdout).\n"
    "\n"
    "  trousseau encrypt --socket S --output json < seed | trousseau decrypt --socket S\n"
    "\n"
    "Flags:\n"
    "  --socket PATH     the plugin's socket.path (required)\n"
    "  --api API         v2 (default) or v1beta1\n"
    "  --key-id ID       the key_id Encrypt returned (v2; taken from --input json if absent)\n"
    "  --uid UID         the request uid written in the plugin's audit record (v2 only;\n"
    "                    default cli-<pid>)\n"
    "  --input FORMAT    auto (default): JSON from `encrypt --output json` if it starts with\n"
    "                    '{', the raw ciphertext if it starts with \"vault:\", else base64;\n"
    "                    or force base64, raw (bytes exactly as read) or json\n"
    "  --raw             same as --input raw\n"
    "  --output FORMAT   raw (default): the plaintext bytes; base64: one base64 line\n"
    "  --timeout D       call deadline (default 5s)\n"
    "\n"
    "Exit codes: 0 decrypted, 1 the call failed (CODE: message and a hint on stderr),\n"
    "2 usage or input error (nothing was sent).\n";

constexpr size_t kMaxInputBytes = 512 * 1024;  // a 128 KiB v1beta1 ciphertext, base64, in JSON

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\r' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct Input {
  std::string ciphertext;
  std::string key_id;
  std::map<std::string, std::string> annotations;
  bool has_key_id = false;
};

absl::StatusOr<Input> ParseInput(std::string_view text, std::string mode) {
  Input in;
  if (mode == "auto") {
    const std::string_view t = Trim(text);
    mode = !t.empty() && t.front() == '{' ? "json" : t.rfind("vault:", 0) == 0 ? "vault" : "base64";
  }
  if (mode == "raw") {
    in.ciphertext.assign(text);
  } else if (mode == "vault") {
    in.ciphertext.assign(Trim(text));  // the Transit format has no whitespace
  } else if (mode == "base64") {
    auto d = base64::Decode(Trim(text));
    if (!d.ok()) {
      return absl::InvalidArgumentError("stdin is not base64 (" + std::string(d.status().message()) +
                                        "): give what `trousseau encrypt` printed, or --raw");
    }
    in.ciphertext = std::move(*d);
  } else {  // json
    auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ciphertext") || !j["ciphertext"].is_string()) {
      return absl::InvalidArgumentError("stdin is not the JSON `trousseau encrypt --output json` "
                                        "prints (an object with a base64 \"ciphertext\")");
    }
    auto d = base64::Decode(j["ciphertext"].get<std::string>());
    if (!d.ok()) return absl::InvalidArgumentError("JSON \"ciphertext\" is not base64");
    in.ciphertext = std::move(*d);
    if (j.contains("key_id") && j["key_id"].is_string()) {
      in.key_id = j["key_id"].get<std::string>();
      in.has_key_id = true;
    }
    if (j.contains("annotations") && j["annotations"].is_object()) {
      for (const auto& [k, v] : j["annotations"].items()) {
        if (!v.is_string()) return absl::InvalidArgumentError("JSON annotation " + k.substr(0, 64) + " is not a string");
        auto dv = base64::Decode(v.get<std::string>());
        if (!dv.ok()) return absl::InvalidArgumentError("JSON annotation " + k.substr(0, 64) + " is not base64");
        in.annotations[k] = std::move(*dv);
      }
    }
  }
  if (in.ciphertext.empty()) return absl::InvalidArgumentError("the ciphertext on stdin is empty");
  return in;
}

}  // namespace

int DecryptCommand(const std::vector<std::string>& args) {
  const std::string cmd = "decrypt";
  auto flags = Flags::Parse(cmd, args,
                            {{"socket", true}, {"api", true}, {"key-id", true}, {"uid", true},
                             {"input", true}, {"raw", false}, {"output", true}, {"timeout", true}});
  if (!flags.ok()) return UsageError(cmd, std::string(flags.status().message()));
  if (flags->help()) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  auto common = ParseKmsCommandFlags(
      *flags,
      "the ciphertext is read from stdin only, never from an argument: "
      "trousseau decrypt --socket PATH < ciphertext",
      "input", "auto");
  if (!common.ok()) return UsageError(cmd, std::string(common.status().message()));
  const std::string& socket = common->socket;
  const std::string& api = common->api;
  const std::string& input_mode = common->mode;
  if (input_mode != "auto" && input_mode != "base64" && input_mode != "raw" && input_mode != "json") {
    return UsageError(cmd, "--input must be auto, base64, raw or json");
  }
  const std::string output = flags->get("output", "raw");
  if (output != "raw" && output != "base64") return UsageError(cmd, "--output must be raw or base64");
  if (api == "v1beta1" && (flags->has("uid") || flags->has("key-id"))) {
    return UsageError(cmd, "--uid and --key-id are v2 fields");
  }
  auto timeout = ParseTimeout(flags->get("timeout", "5s"));
  if (!timeout.ok()) return UsageError(cmd, std::string(timeout.status().message()));

  SecretBuffer raw;
  if (absl::Status st = ReadStdin(kMaxInputBytes, raw); !st.ok()) {
    return UsageError(cmd, std::string(st.message()));
  }
  auto in = ParseInput(raw.view(), input_mode);
  if (!in.ok()) return UsageError(cmd, std::string(in.status().message()));
  if (flags->has("key-id")) in->key_id = flags->get("key-id");

  auto channel = DialSocket(socket);
  if (!channel.ok()) {
    std::fprintf(stderr, "trousseau decrypt: %s\n", std::string(channel.status().message()).c_str());
    return kExitFailed;
  }
  grpc::ClientContext ctx;
  SetTimeout(ctx, *timeout);
  grpc::Status st;
  SecretBuffer plaintext;
  if (api == "v2") {
    ::v2::DecryptRequest req;
    req.set_ciphertext(in->ciphertext);
    req.set_key_id(in->key_id);
    req.set_uid(flags->get("uid", "cli-" + std::to_string(::getpid())));
    for (const auto& [k, v] : in->annotations) (*req.mutable_annotations())[k] = v;
    ::v2::DecryptResponse resp;
    st = ::v2::KeyManagementService::NewStub(*channel)->Decrypt(&ctx, req, &resp);
    if (st.ok()) plaintext = SecretBuffer::CopyOf(resp.plaintext());
    WipeString(*resp.mutable_plaintext());
  } else {
    ::v1beta1::DecryptRequest req;
    req.set_version("v1beta1");
    req.set_cipher(in->ciphertext);
    ::v1beta1::DecryptResponse resp;
    st = ::v1beta1::KeyManagementService::NewStub(*channel)->Decrypt(&ctx, req, &resp);
    if (st.ok()) plaintext = SecretBuffer::CopyOf(resp.plain());
    WipeString(*resp.mutable_plain());
  }
  if (!st.ok()) {
    PrintCallError(cmd, api + " Decrypt", st, socket);
    return kExitFailed;
  }
  absl::Status wst;
  if (output == "raw") {
    wst = WriteStdout(plaintext.view());
  } else {
    SecretBuffer b64(base64::EncodedLength(plaintext.size()) + 2);
    b64.resize(base64::EncodedLength(plaintext.size()) + 1);
    base64::EncodeInto(plaintext.data(), plaintext.size(), b64.chars());
    b64.chars()[b64.size() - 1] = '\n';
    wst = WriteStdout(b64.view());
  }
  if (!wst.ok()) {
    std::fprintf(stderr, "trousseau decrypt: %s\n", std::string(wst.message()).c_str());
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace trousseau::cli
