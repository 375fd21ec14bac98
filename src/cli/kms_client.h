// Dialling the plugin's socket the way kube-apiserver does, and turning gRPC errors into one
// line an operator can act on. Shared by status, encrypt and decrypt.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace trousseau::cli {

inline constexpr std::chrono::milliseconds kDefaultCallTimeout{3000};

// "unix:PATH" with authority "localhost", as kube-apiserver's KMS client dials. Fails (with a
// message saying what to check) when PATH does not exist or is not a socket.
absl::StatusOr<std::shared_ptr<grpc::Channel>> DialSocket(const std::string& path);

// Parses --timeout ("3s", "500ms"); between 100ms and 5m.
absl::StatusOr<std::chrono::milliseconds> ParseTimeout(const std::string& text);

// "UNAVAILABLE: <message>" (the message cut to 500 printable characters).
std::string CodeAndMessage(const grpc::Status& st);
// What to do next about this error, one sentence ("" if nothing useful to say).
std::string Hint(const grpc::Status& st, const std::string& socket);
// "trousseau <command>: CODE: message\n  hint: ...\n" on stderr.
void PrintCallError(const std::string& command, const std::string& call, const grpc::Status& st,
                    const std::string& socket);

// The code's name as in the audit records ("OK", "UNAVAILABLE", ...).
const char* CodeName(grpc::StatusCode code);

// A grpc::ClientContext deadline `timeout` from now.
void SetTimeout(grpc::ClientContext& ctx, std::chrono::milliseconds timeout);

}  // namespace trousseau::cli
