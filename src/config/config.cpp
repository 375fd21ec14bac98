// Config loader: YAML text -> one fully validated Config.
// Every rule lives here so that nothing downstream has to re-check a value. The schema is
// documented in docs/configuration.md; keep the two in step.
#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/evp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <concepts>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace trousseau::config {
namespace {

using std::chrono::milliseconds;

constexpr size_t kMaxFileBytes = size_t{1} << 20;
// sockaddr_un.sun_path is 108 bytes and needs its terminating NUL.
constexpr size_t kMaxSocketPath = 107;
// Values quoted in messages are cut here so a pasted blob cannot flood the log.
constexpr size_t kMaxQuoted = 200;
// (uid_t)-1 / (gid_t)-1 mean "leave unchanged" to setresuid/setresgid: never a real id.
constexpr uint64_t kMaxId = 4294967294u;
constexpr std::string_view kDefaultKubernetesJwt =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";

// ---- messages -------------------------------------------------------------------------------

// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0),
// so absl::StrCat rejects std::string_view: concatenate with the standard library instead.
void Append(std::string& out, std::string_view s) { out += s; }
template <std::integral T>
  requires(!std::same_as<T, char> && !std::same_as<T, bool>)
void Append(std::string& out, T value) {
  out += std::to_string(value);
}

template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::string out;
  (Append(out, parts), ...);
  return out;
}

// Messages must stay on one line and be safe to print on a terminal, whatever bytes the YAML
// held: escape everything outside printable ASCII.
std::string Escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  // Bounded by what is written, not what is read: an escaped byte takes four characters.
  for (unsigned char c : s) {
    if (out.size() >= kMaxQuoted) {
      out += "...";
      return out;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string Quote(std::string_view s) { return Cat("\"", Escape(s), "\""); }

absl::Status Error(std::string_view message) {
  return absl::InvalidArgumentError(Cat("config: ", message));
}

absl::Status KeyError(std::string_view key, std::string_view what) {
  return Error(Cat(key, ": ", what));
}

std::string_view TypeName(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return node.Tag() == "?" ? "a plain scalar" : "a quoted string";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

absl::Status WrongType(std::string_view key, std::string_view expected, const YAML::Node& node) {
  return KeyError(key, Cat("expected ", expected, ", got ", TypeName(node)));
}

std::string FormatDuration(milliseconds d) {
  const int64_t ms = d.count();
  if (ms != 0 && ms % 3600000 == 0) return Cat(ms / 3600000, "h");
  if (ms != 0 && ms % 60000 == 0) return Cat(ms / 60000, "m");
  if (ms != 0 && ms % 1000 == 0) return Cat(ms / 1000, "s");
  return Cat(ms, "ms");
}

std::string ErrnoText(int err) { return std::generic_category().message(err); }

// ---- small lexical checks -------------------------------------------------------------------

bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAsciiAlnum(char c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsAsciiDigit);
}
bool HasControlChar(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// Decimal only: no sign, no hex, no leading zero (YAML 1.1 reads "010" as octal 8, so refuse
// anything that two YAML readers could disagree on).
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (!AllDigits(s) || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return value;
}

// One segment of a Vault path or a transit key name. "." and ".." would be path traversal once
// the value is put into a URL.
bool IsSimpleName(std::string_view s, std::string_view extra_chars = "_.-") {
  if (s.empty() || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return IsAsciiAlnum(c) || extra_chars.find(c) != std::string_view::npos;
  });
}

// "a", "a/b": segments joined by single slashes, none leading or trailing.
bool IsMountPath(std::string_view s) {
  if (s.empty()) return false;
  size_t start = 0;
  while (true) {
    const size_t slash = s.find('/', start);
    const std::string_view segment = s.substr(start, slash == s.npos ? s.npos : slash - start);
    if (!IsSimpleName(segment)) return false;
    if (slash == s.npos) return true;
    start = slash + 1;
  }
}

absl::Status CheckMountPath(std::string_view key, const std::string& value) {
  if (IsMountPath(value)) return absl::OkStatus();
  return KeyError(key, Cat("must be segments of [A-Za-z0-9_.-] joined by \"/\", got ",
                           Quote(value)));
}

// Vault role names also allow "@" (framework.GenericNameWithAtRegex).
bool IsRoleName(std::string_view s) { return IsSimpleName(s, "_.-@"); }

bool IsHostnameLabel(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  return std::all_of(label.begin(), label.end(),
                     [](char c) { return IsAsciiAlnum(c) || c == '-'; });
}

bool IsIpv4Literal(const std::string& s) {
  in_addr addr{};
  return inet_pton(AF_INET, s.c_str(), &addr) == 1;
}

bool IsIpv6Literal(const std::string& s) {
  in6_addr addr{};
  return inet_pton(AF_INET6, s.c_str(), &addr) == 1;
}

// RFC 1123 host name, or a dotted IPv4 literal (an all-digit last label can only be one).
bool IsValidHostname(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  std::string_view last;
  size_t start = 0;
  while (true) {
    const size_t dot = host.find('.', start);
    last = host.substr(start, dot == host.npos ? host.npos : dot - start);
    if (!IsHostnameLabel(last)) return false;
    if (dot == host.npos) break;
    start = dot + 1;
  }
  return !AllDigits(last) || IsIpv4Literal(std::string(host));
}

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  });
  return out;
}

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && AsciiLower(s.substr(0, prefix.size())) == prefix;
}

// ---- YAML mapping access --------------------------------------------------------------------

// One YAML mapping, checked for unknown and duplicate keys, with its dotted path for messages.
struct Section {
  std::string path;
  std::map<std::string, YAML::Node, std::less<>> fields;

  std::string Key(std::string_view name) const {
    return path.empty() ? std::string(name) : Cat(path, ".", name);
  }
  const YAML::Node* Find(std::string_view name) const {
    auto it = fields.find(name);
    return it == fields.end() ? nullptr : &it->second;
  }
};

absl::Status OpenSection(const YAML::Node& node, const std::string& path,
                         std::initializer_list<std::string_view> allowed, Section& out) {
  if (!node.IsMap()) return WrongType(path, "a mapping", node);
  out.path = path;
  out.fields.clear();
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      return KeyError(path.empty() ? "top level" : path, "every key must be a plain string");
    }
    const std::string& name = kv.first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      return Error(Cat("unknown key ", Quote(out.Key(name))));
    }
    // yaml-cpp keeps both copies of a repeated key; which one wins would be an accident.
    if (!out.fields.emplace(name, kv.second).second) {
      return Error(Cat("duplicate key ", Quote(out.Key(name))));
    }
  }
  return absl::OkStatus();
}

// A missing section reads as an empty one, so that defaults and "is required" messages apply.
absl::Status SubSection(const Section& parent, std::string_view name,
                        std::initializer_list<std::string_view> allowed, Section& out) {
  out = Section{parent.Key(name), {}};
  const YAML::Node* node = parent.Find(name);
  if (node == nullptr) return absl::OkStatus();
  return OpenSection(*node, parent.Key(name), allowed, out);
}

// Leaves `out` unchanged when the key is absent, so callers pre-set the default.
absl::Status GetString(const Section& s, std::string_view name, std::string& out) {
  const YAML::Node* node = s.Find(name);
  if (node == nullptr) return absl::OkStatus();
  if (!node->IsScalar()) return WrongType(s.Key(name), "a string", *node);
  out = node->Scalar();
  return absl::OkStatus();
}

absl::Status GetUint(const Section& s, std::string_view name, uint64_t& out) {
  const YAML::Node* node = s.Find(name);
  if (node == nullptr) return absl::OkStatus();
  // A quoted "4096" is a string in YAML; accepting it would hide a type mistake.
  if (!node->IsScalar() || node->Tag() != "?") return WrongType(s.Key(name), "an integer", *node);
  const std::optional<uint64_t> value = ParseDecimal(node->Scalar());
  if (!value) {
    return KeyError(s.Key(name), Cat("expected a decimal integer without sign or leading "
                                     "zero, got ", Quote(node->Scalar())));
  }
  out = *value;
  return absl::OkStatus();
}

absl::Status GetDuration(const Section& s, std::string_view name, milliseconds& out) {
  const YAML::Node* node = s.Find(name);
  if (node == nullptr) return absl::OkStatus();
  if (!node->IsScalar()) return WrongType(s.Key(name), "a duration such as \"15s\"", *node);
  absl::StatusOr<milliseconds> parsed = ParseDuration(node->Scalar());
  if (!parsed.ok()) return KeyError(s.Key(name), std::string(parsed.status().message()));
  out = *parsed;
  return absl::OkStatus();
}

absl::Status CheckRange(std::string_view key, milliseconds value, milliseconds lo,
                        milliseconds hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return KeyError(key, Cat("must be between ", FormatDuration(lo), " and ",
                           FormatDuration(hi), ", got ", FormatDuration(value)));
}

absl::Status CheckRange(std::string_view key, uint64_t value, uint64_t lo, uint64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return KeyError(key, Cat("must be between ", lo, " and ", hi, ", got ", value));
}

template <typename E>
using EnumTable = std::initializer_list<std::pair<std::string_view, E>>;

template <typename E>
absl::Status GetEnum(const Section& s, std::string_view name, EnumTable<E> table, E& out) {
  std::string text;
  bool present = s.Find(name) != nullptr;
  if (absl::Status st = GetString(s, name, text); !st.ok()) return st;
  if (!present) return absl::OkStatus();
  std::string choices;
  for (const auto& [word, value] : table) {
    if (word == text) {
      out = value;
      return absl::OkStatus();
    }
    if (!choices.empty()) choices += ", ";
    choices += word;
  }
  return KeyError(s.Key(name), Cat("must be one of ", choices, "; got ", Quote(text)));
}

absl::Status CheckAbsolutePath(std::string_view key, const std::string& path) {
  if (path.empty()) return KeyError(key, "must not be empty");
  // C APIs would silently cut the path at an embedded NUL and open another file; other control
  // characters are never intended and would garble logs.
  if (HasControlChar(path)) return KeyError(key, "must not contain control characters or NUL");
  if (path.front() != '/') {
    return KeyError(key, Cat("must be an absolute path, got ", Quote(path)));
  }
  return absl::OkStatus();
}

// Optional path: "" (or absent) means not set.
absl::Status GetOptionalPath(const Section& s, std::string_view name, std::string& out) {
  if (absl::Status st = GetString(s, name, out); !st.ok()) return st;
  if (out.empty()) return absl::OkStatus();
  return CheckAbsolutePath(s.Key(name), out);
}

absl::Status GetRequiredPath(const Section& s, std::string_view name, std::string_view why,
                             std::string& out) {
  if (absl::Status st = GetString(s, name, out); !st.ok()) return st;
  if (out.empty()) return Error(Cat(s.Key(name), " is required", why));
  return CheckAbsolutePath(s.Key(name), out);
}

// ---- user and group names -------------------------------------------------------------------

// getpwnam_r/getgrnam_r need a caller buffer whose size is only known by trying. Only the
// numeric id is copied out, so the buffer may die with this call.
template <typename Entry, typename Lookup, typename IdOf>
int LookupId(Lookup lookup, const std::string& name, IdOf id_of, std::optional<uint32_t>& id) {
  constexpr size_t kMaxBuffer = size_t{1} << 20;
  std::vector<char> buffer(16384);
  while (true) {
    Entry entry{};
    Entry* result = nullptr;
    const int rc = lookup(name.c_str(), &entry, buffer.data(), buffer.size(), &result);
    if (rc == ERANGE && buffer.size() < kMaxBuffer) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    id.reset();
    if (rc == 0 && result != nullptr) id = id_of(entry);
    // "Not found" is reported as 0 or as one of these, depending on the NSS module.
    if (rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM) return 0;
    return rc;
  }
}

enum class IdKind { kUser, kGroup };

absl::Status ResolveName(std::string_view key, const std::string& name, IdKind kind,
                         uint32_t& out) {
  std::optional<uint32_t> id;
  const int rc = kind == IdKind::kUser
      ? LookupId<passwd>(getpwnam_r, name, [](const passwd& p) { return p.pw_uid; }, id)
      : LookupId<group>(getgrnam_r, name, [](const group& g) { return g.gr_gid; }, id);
  const std::string_view what = kind == IdKind::kUser ? "user" : "group";
  if (rc != 0) {
    return KeyError(key, Cat("looking up ", what, " ", Quote(name), " failed: ",
                             ErrnoText(rc)));
  }
  if (!id) return KeyError(key, Cat("no ", what, " named ", Quote(name)));
  out = *id;
  return absl::OkStatus();
}

// A numeric id or a user/group name resolved through NSS.
absl::Status GetId(const Section& s, std::string_view name, IdKind kind, uint32_t& out) {
  const YAML::Node* node = s.Find(name);
  if (node == nullptr) return absl::OkStatus();
  const std::string key = s.Key(name);
  if (!node->IsScalar()) return WrongType(key, "a name or a numeric id", *node);
  const std::string& text = node->Scalar();
  if (text.empty()) return KeyError(key, "must not be empty");
  if (HasControlChar(text)) return KeyError(key, "must not contain control characters");
  if (AllDigits(text)) {
    const std::optional<uint64_t> value = ParseDecimal(text);
    if (!value || *value > kMaxId) {
      return KeyError(key, Cat("numeric id must be between 0 and ", kMaxId,
                               " without leading zero, got ", Quote(text)));
    }
    out = static_cast<uint32_t>(*value);
    return absl::OkStatus();
  }
  return ResolveName(key, text, kind, out);
}

// ---- sections -------------------------------------------------------------------------------

absl::Status ParseSocketMode(const Section& s, uint32_t& mode) {
  const YAML::Node* node = s.Find("mode");
  if (node == nullptr) return absl::OkStatus();
  const std::string key = s.Key("mode");
  if (!node->IsScalar()) return WrongType(key, "the string \"0600\" or \"0660\"", *node);
  // Unquoted 0600 is 600 for YAML 1.2 and 384 for YAML 1.1: demand the quotes, no guessing.
  if (node->Tag() == "?") {
    return KeyError(key, "must be quoted, \"0600\" or \"0660\" (unquoted it is a YAML number)");
  }
  const std::string& text = node->Scalar();
  if (text == "0600") {
    mode = 0600;
  } else if (text == "0660") {
    mode = 0660;
  } else {
    return KeyError(key, Cat("must be \"0600\" or \"0660\", got ", Quote(text)));
  }
  return absl::OkStatus();
}

absl::Status ParseSocketGroup(const Section& s, SocketConfig& socket) {
  const YAML::Node* node = s.Find("group");
  // The documented default is group: "" (unset).
  const bool set = node != nullptr && !(node->IsScalar() && node->Scalar().empty());
  if (socket.mode == 0660 && !set) return Error("socket.group is required with mode 0660");
  if (socket.mode != 0660 && set) return Error("socket.group is only used with mode 0660");
  if (!set) return absl::OkStatus();
  uint32_t gid = 0;
  if (absl::Status st = GetId(s, "group", IdKind::kGroup, gid); !st.ok()) return st;
  socket.gid = gid;
  return absl::OkStatus();
}

absl::Status ParseSocket(const Section& root, SocketConfig& socket) {
  Section s;
  if (absl::Status st = SubSection(root, "socket", {"path", "mode", "group"}, s); !st.ok()) {
    return st;
  }
  if (absl::Status st = GetString(s, "path", socket.path); !st.ok()) return st;
  if (absl::Status st = CheckAbsolutePath("socket.path", socket.path); !st.ok()) return st;
  if (socket.path.size() > kMaxSocketPath) {
    return KeyError("socket.path", Cat("is ", socket.path.size(), " bytes; a Unix socket "
                                       "path holds at most ", kMaxSocketPath));
  }
  if (absl::Status st = ParseSocketMode(s, socket.mode); !st.ok()) return st;
  return ParseSocketGroup(s, socket);
}

// Authority must be host[:port] or [ipv6][:port].
absl::Status CheckAuthority(std::string_view key, std::string_view raw,
                            std::string_view authority) {
  std::string host;
  std::optional<std::string_view> port;
  const bool ipv6 = !authority.empty() && authority.front() == '[';
  if (ipv6) {
    const size_t close = authority.find(']');
    if (close == authority.npos) {
      return KeyError(key, Cat("unclosed \"[\" in ", Quote(raw)));
    }
    host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') {
      return KeyError(key, Cat("unexpected text after \"]\" in ", Quote(raw)));
    }
    if (!after.empty()) port = after.substr(1);
  } else {
    const size_t colon = authority.find(':');
    if (colon != authority.npos && authority.find(':', colon + 1) != authority.npos) {
      return KeyError(key, Cat("an IPv6 address must be in brackets: ", Quote(raw)));
    }
    host = std::string(authority.substr(0, colon));
    if (colon != authority.npos) port = authority.substr(colon + 1);
  }
  if (host.empty()) return KeyError(key, Cat("has no host: ", Quote(raw)));
  if (ipv6 ? !IsIpv6Literal(host) : !IsValidHostname(host)) {
    return KeyError(key, Cat("invalid host in ", Quote(raw)));
  }
  if (port) {
    const std::optional<uint64_t> value = ParseDecimal(*port);
    if (!value || *value < 1 || *value > 65535) {
      return KeyError(key, Cat("port must be 1..65535 in ", Quote(raw)));
    }
  }
  return absl::OkStatus();
}

// https://host[:port][/] -> "https://host[:port]" (lower case, no trailing slash).
absl::Status NormalizeAddress(std::string_view key, std::string_view raw, std::string& out) {
  // Checked first and never echoed: "user:password@" would put a credential in the log.
  if (raw.find('@') != raw.npos) {
    return KeyError(key, "must not contain \"@\" (no user info; credentials belong in files)");
  }
  if (StartsWithNoCase(raw, "http://")) {
    return KeyError(key, Cat("plain http is refused, TLS is required (use https://): ",
                             Quote(raw)));
  }
  if (!StartsWithNoCase(raw, "https://")) {
    return KeyError(key, Cat("must start with https://, got ", Quote(raw)));
  }
  const std::string_view rest = raw.substr(8);
  const size_t end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, end);
  const std::string_view tail = end == rest.npos ? std::string_view() : rest.substr(end);
  if (tail.find('?') != tail.npos) {
    return KeyError(key, Cat("must not have a query: ", Quote(raw)));
  }
  if (tail.find('#') != tail.npos) {
    return KeyError(key, Cat("must not have a fragment: ", Quote(raw)));
  }
  if (!tail.empty() && tail != "/") {
    return KeyError(key, Cat("must not have a path (trousseau adds /v1/...): ",
                             Quote(raw)));
  }
  if (absl::Status st = CheckAuthority(key, raw, authority); !st.ok()) return st;
  out = Cat("https://", AsciiLower(authority));
  return absl::OkStatus();
}

absl::Status ParseAddresses(const Section& vault, std::vector<std::string>& out) {
  const YAML::Node* node = vault.Find("addresses");
  if (node == nullptr) return Error(Cat(vault.Key("addresses"), " is required"));
  if (!node->IsSequence()) return WrongType(vault.Key("addresses"), "a list of https:// URLs", *node);
  if (node->size() == 0) return Error(Cat(vault.Key("addresses"), " must list at least one https:// URL"));
  out.clear();
  for (size_t i = 0; i < node->size(); ++i) {
    const std::string key = Cat(vault.Key("addresses"), "[", i, "]");
    const YAML::Node item = (*node)[i];
    if (!item.IsScalar()) return WrongType(key, "a string", item);
    std::string address;
    if (absl::Status st = NormalizeAddress(key, item.Scalar(), address); !st.ok()) return st;
    if (std::find(out.begin(), out.end(), address) != out.end()) {
      return KeyError(key, Cat("duplicate address ", Quote(address)));
    }
    out.push_back(std::move(address));
  }
  return absl::OkStatus();
}

absl::Status ParseTransit(const Section& vault, VaultConfig& config) {
  Section s;
  if (absl::Status st = SubSection(vault, "transit", {"mount", "key"}, s); !st.ok()) return st;
  if (absl::Status st = GetString(s, "mount", config.transit_mount); !st.ok()) return st;
  if (absl::Status st = CheckMountPath(s.Key("mount"), config.transit_mount); !st.ok()) {
    return st;
  }
  if (absl::Status st = GetString(s, "key", config.transit_key); !st.ok()) return st;
  if (config.transit_key.empty()) return Error(Cat(s.Key("key"), " is required"));
  if (!IsSimpleName(config.transit_key)) {
    return KeyError(s.Key("key"), Cat("must match [A-Za-z0-9_.-]+, got ",
                                             Quote(config.transit_key)));
  }
  return absl::OkStatus();
}

// "sha256//" + standard base64 of a 32-byte SHA-256, in its one canonical spelling (pins are
// compared as text elsewhere, so two spellings of one hash must not both pass).
bool IsValidPin(const std::string& pin) {
  constexpr std::string_view kPrefix = "sha256//";
  constexpr size_t kHashBytes = 32;
  constexpr size_t kBase64Chars = 4 * ((kHashBytes + 2) / 3);
  if (pin.size() != kPrefix.size() + kBase64Chars || pin.compare(0, kPrefix.size(), kPrefix) != 0) {
    return false;
  }
  const std::string_view b64 = std::string_view(pin).substr(kPrefix.size());
  std::array<unsigned char, 3 * kBase64Chars / 4> decoded{};
  const int n = EVP_DecodeBlock(decoded.data(), reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  // EVP_DecodeBlock counts padding as zero bytes; drop them.
  const size_t last_data = b64.find_last_not_of('=');
  if (last_data == b64.npos) return false;
  const size_t padding = b64.size() - last_data - 1;
  if (n < 0 || padding > 2 || static_cast<size_t>(n) != decoded.size() ||
      decoded.size() - padding != kHashBytes) {
    return false;
  }
  // EVP_DecodeBlock is lenient (whitespace, "=" mid-string, non-zero spare bits): the
  // re-encoding must give back exactly the input.
  std::array<unsigned char, kBase64Chars + 1> encoded{};
  const int m = EVP_EncodeBlock(encoded.data(), decoded.data(), static_cast<int>(kHashBytes));
  return m == static_cast<int>(kBase64Chars) &&
         b64 == std::string_view(reinterpret_cast<const char*>(encoded.data()), kBase64Chars);
}

absl::Status ParsePins(const Section& tls, std::vector<std::string>& pins) {
  const YAML::Node* node = tls.Find("spki_pins");
  if (node == nullptr) return absl::OkStatus();
  if (!node->IsSequence()) return WrongType(tls.Key("spki_pins"), "a list", *node);
  for (size_t i = 0; i < node->size(); ++i) {
    const std::string key = Cat(tls.Key("spki_pins"), "[", i, "]");
    const YAML::Node item = (*node)[i];
    if (!item.IsScalar()) return WrongType(key, "a string", item);
    const std::string& pin = item.Scalar();
    if (!IsValidPin(pin)) {
      return KeyError(key, Cat("must be \"sha256//\" + standard base64 of 32 bytes, got ",
                               Quote(pin)));
    }
    if (std::find(pins.begin(), pins.end(), pin) != pins.end()) {
      return KeyError(key, Cat("duplicate pin ", Quote(pin)));
    }
    pins.push_back(pin);
  }
  return absl::OkStatus();
}

absl::Status ParseTls(const Section& vault, TlsConfig& tls) {
  Section s;
  if (absl::Status st = SubSection(vault, "tls", {"ca_file", "client_cert_file", "client_key_file",
                                                  "spki_pins", "server_name"}, s);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = GetRequiredPath(s, "ca_file", " (the only trusted CA)", tls.ca_file);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = GetOptionalPath(s, "client_cert_file", tls.client_cert_file); !st.ok()) {
    return st;
  }
  if (absl::Status st = GetOptionalPath(s, "client_key_file", tls.client_key_file); !st.ok()) {
    return st;
  }
  if (!tls.client_cert_file.empty() && tls.client_key_file.empty()) {
    return Error(Cat(s.Key("client_key_file"), " is required when ", s.Key("client_cert_file"), " is set"));
  }
  if (tls.client_cert_file.empty() && !tls.client_key_file.empty()) {
    return Error(Cat(s.Key("client_cert_file"), " is required when ", s.Key("client_key_file"), " is set"));
  }
  if (absl::Status st = ParsePins(s, tls.spki_pins); !st.ok()) return st;
  if (absl::Status st = GetString(s, "server_name", tls.server_name); !st.ok()) return st;
  if (!tls.server_name.empty() && !IsValidHostname(tls.server_name)) {
    return KeyError(s.Key("server_name"),
                    Cat("must be a host name, got ", Quote(tls.server_name)));
  }
  return absl::OkStatus();
}

// Which keys each auth method reads; a key of another method is an error, not silently unused.
struct MethodSpec {
  std::string_view name;
  AuthMethod method;
  std::string_view default_mount;
  std::array<std::string_view, 3> keys;
};

constexpr std::array<MethodSpec, 5> kMethods = {{
    {"token", AuthMethod::kToken, "", {"token_file", "renew"}},
    {"approle", AuthMethod::kAppRole, "approle", {"mount", "role_id_file", "secret_id_file"}},
    {"cert", AuthMethod::kCert, "cert", {"mount", "name"}},
    {"jwt", AuthMethod::kJwt, "jwt", {"mount", "role", "jwt_file"}},
    {"kubernetes", AuthMethod::kKubernetes, "kubernetes", {"mount", "role", "jwt_file"}},
}};

absl::Status FindMethod(const Section& s, const MethodSpec*& spec) {
  std::string name;
  if (absl::Status st = GetString(s, "method", name); !st.ok()) return st;
  if (name.empty()) {
    return Error(Cat(s.Key("method"), " is required (token, approle, cert, jwt or kubernetes)"));
  }
  for (const MethodSpec& m : kMethods) {
    if (m.name == name) {
      spec = &m;
      return absl::OkStatus();
    }
  }
  return KeyError(s.Key("method"), Cat("must be one of token, approle, cert, jwt, "
                                           "kubernetes; got ", Quote(name)));
}

absl::Status CheckKeysForMethod(const Section& s, const MethodSpec& spec) {
  for (const auto& [name, node] : s.fields) {
    if (name == "method") continue;
    if (std::find(spec.keys.begin(), spec.keys.end(), name) == spec.keys.end()) {
      return Error(Cat(s.Key(name), " is not used by method ", spec.name));
    }
  }
  return absl::OkStatus();
}

absl::Status GetRole(const Section& s, std::string_view name, const MethodSpec& spec,
                     bool required, std::string& out) {
  if (absl::Status st = GetString(s, name, out); !st.ok()) return st;
  if (out.empty()) {
    if (!required) return absl::OkStatus();
    return Error(Cat(s.Key(name), " is required for method ", spec.name));
  }
  if (!IsRoleName(out)) {
    return KeyError(s.Key(name), Cat("must match [A-Za-z0-9_.@-]+, got ", Quote(out)));
  }
  return absl::OkStatus();
}

absl::Status ParseMethodFields(const Section& s, const MethodSpec& spec, AuthConfig& auth) {
  const std::string kReq = Cat(" for method ", spec.name);
  switch (spec.method) {
    case AuthMethod::kToken: {
      if (absl::Status st = GetRequiredPath(s, "token_file", kReq, auth.token_file); !st.ok()) {
        return st;
      }
      enum class Flag { kOff, kOn };
      Flag f = auth.renew_token ? Flag::kOn : Flag::kOff;
      if (absl::Status st = GetEnum<Flag>(s, "renew", {{"true", Flag::kOn}, {"false", Flag::kOff}}, f);
          !st.ok()) {
        return st;
      }
      auth.renew_token = f == Flag::kOn;
      return absl::OkStatus();
    }
    case AuthMethod::kAppRole:
      if (absl::Status st = GetRequiredPath(s, "role_id_file", kReq, auth.role_id_file); !st.ok()) {
        return st;
      }
      return GetRequiredPath(s, "secret_id_file", kReq, auth.secret_id_file);
    case AuthMethod::kCert:
      return GetRole(s, "name", spec, /*required=*/false, auth.cert_role);
    case AuthMethod::kJwt:
    case AuthMethod::kKubernetes:
      if (absl::Status st = GetRole(s, "role", spec, /*required=*/true, auth.role); !st.ok()) {
        return st;
      }
      // Inside a pod the projected service-account token is always here.
      if (spec.method == AuthMethod::kKubernetes) {
        auth.jwt_file = std::string(kDefaultKubernetesJwt);
      }
      return GetRequiredPath(s, "jwt_file", kReq, auth.jwt_file);
  }
  return absl::OkStatus();
}

absl::Status ParseAuth(const Section& vault, const TlsConfig& tls, AuthConfig& auth) {
  Section s;
  if (absl::Status st = SubSection(vault, "auth",
                                  {"method", "mount", "token_file", "renew", "role_id_file",
                                   "secret_id_file", "role", "jwt_file", "name"},
                                  s);
      !st.ok()) {
    return st;
  }
  const MethodSpec* spec = nullptr;
  if (absl::Status st = FindMethod(s, spec); !st.ok()) return st;
  if (absl::Status st = CheckKeysForMethod(s, *spec); !st.ok()) return st;
  auth.method = spec->method;
  auth.mount = std::string(spec->default_mount);
  if (absl::Status st = GetString(s, "mount", auth.mount); !st.ok()) return st;
  if (spec->method != AuthMethod::kToken) {
    if (absl::Status st = CheckMountPath(s.Key("mount"), auth.mount); !st.ok()) return st;
  }
  if (absl::Status st = ParseMethodFields(s, *spec, auth); !st.ok()) return st;
  if (spec->method == AuthMethod::kCert && tls.client_cert_file.empty()) {
    return Error(Cat(s.Key("method"), " cert needs ", vault.Key("tls.client_cert_file"), " and ",
                     vault.Key("tls.client_key_file")));
  }
  return absl::OkStatus();
}

absl::Status ParseTimeouts(const Section& vault, VaultConfig& config) {
  Section s;
  if (absl::Status st = SubSection(vault, "timeouts", {"connect", "request"}, s); !st.ok()) {
    return st;
  }
  using namespace std::chrono_literals;
  if (absl::Status st = GetDuration(s, "connect", config.connect_timeout); !st.ok()) return st;
  if (absl::Status st = CheckRange(s.Key("connect"), config.connect_timeout, 100ms, 60s);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = GetDuration(s, "request", config.request_timeout); !st.ok()) return st;
  return CheckRange(s.Key("request"), config.request_timeout, 100ms, 5min);
}

// The fields of one Vault cluster: `vault` itself, and `vault.secondary` (docs/secondary.md).
absl::Status ParseVaultFields(const Section& s, VaultConfig& config) {
  if (absl::Status st = ParseAddresses(s, config.addresses); !st.ok()) return st;
  if (absl::Status st = GetString(s, "namespace", config.namespace_); !st.ok()) return st;
  if (!config.namespace_.empty()) {
    if (absl::Status st = CheckMountPath(s.Key("namespace"), config.namespace_); !st.ok()) {
      return st;
    }
  }
  if (absl::Status st = ParseTransit(s, config); !st.ok()) return st;
  if (absl::Status st = ParseTls(s, config.tls); !st.ok()) return st;
  if (absl::Status st = ParseAuth(s, config.tls, config.auth); !st.ok()) return st;
  if (absl::Status st = ParseTimeouts(s, config); !st.ok()) return st;
  if (absl::Status st = GetUint(s, "max_response_bytes", config.max_response_bytes); !st.ok()) {
    return st;
  }
  return CheckRange(s.Key("max_response_bytes"), config.max_response_bytes, 4096, 67108864);
}

// vault.secondary: a second, independent Vault cluster (docs/secondary.md). Absent: none.
absl::Status ParseSecondary(const Section& vault, const VaultConfig& primary,
                            std::optional<SecondaryConfig>& out) {
  out.reset();
  if (vault.Find("secondary") == nullptr) return absl::OkStatus();
  Section s;
  if (absl::Status st = SubSection(vault, "secondary",
                                  {"addresses", "namespace", "transit", "tls", "auth", "timeouts",
                                   "max_response_bytes", "policy", "decrypt_order"},
                                  s);
      !st.ok()) {
    return st;
  }
  SecondaryConfig sc;
  if (absl::Status st = ParseVaultFields(s, sc.vault); !st.ok()) return st;
  // No default: `required` stops Encrypt during a secondary outage, `best_effort` accepts seeds
  // only the primary can open; an operator has to choose.
  if (s.Find("policy") == nullptr) {
    return Error(Cat(s.Key("policy"), " is required (required or best_effort; docs/secondary.md)"));
  }
  if (absl::Status st = GetEnum<SecondaryPolicy>(
          s, "policy", {{"required", SecondaryPolicy::kRequired},
                        {"best_effort", SecondaryPolicy::kBestEffort}}, sc.policy);
      !st.ok()) {
    return st;
  }
  enum class Order { kPrimary, kSecondary };
  Order order = Order::kPrimary;
  if (absl::Status st = GetEnum<Order>(s, "decrypt_order", {{"primary_first", Order::kPrimary},
                                                           {"secondary_first", Order::kSecondary}},
                                       order);
      !st.ok()) {
    return st;
  }
  sc.secondary_first = order == Order::kSecondary;
  // One cluster twice is no redundancy: an address in both lists is a configuration mistake.
  for (size_t i = 0; i < sc.vault.addresses.size(); ++i) {
    if (std::find(primary.addresses.begin(), primary.addresses.end(), sc.vault.addresses[i]) !=
        primary.addresses.end()) {
      return KeyError(Cat(s.Key("addresses"), "[", i, "]"),
                      Cat(Quote(sc.vault.addresses[i]), " is also in ", vault.Key("addresses"),
                          "; the secondary must be another Vault cluster"));
    }
  }
  out = std::move(sc);
  return absl::OkStatus();
}

absl::Status ParseVault(const Section& root, VaultConfig& config,
                        std::optional<SecondaryConfig>& secondary) {
  Section s;
  if (absl::Status st = SubSection(root, "vault", {"addresses", "namespace", "transit", "tls",
                                                   "auth", "timeouts", "max_response_bytes",
                                                   "secondary"}, s);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = ParseVaultFields(s, config); !st.ok()) return st;
  return ParseSecondary(s, config, secondary);
}

absl::Status ParseStatus(const Section& root, StatusConfig& status) {
  Section s;
  if (absl::Status st = SubSection(root, "status", {"refresh_period", "stale_after"}, s);
      !st.ok()) {
    return st;
  }
  using namespace std::chrono_literals;
  if (absl::Status st = GetDuration(s, "refresh_period", status.refresh_period); !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckRange("status.refresh_period", status.refresh_period, 1s, 5min);
      !st.ok()) {
    return st;
  }
  // Three missed refreshes before healthz turns: one slow Vault answer is not an outage.
  status.stale_after = 3 * status.refresh_period;
  if (absl::Status st = GetDuration(s, "stale_after", status.stale_after); !st.ok()) return st;
  if (status.stale_after <= status.refresh_period) {
    return KeyError("status.stale_after",
                    Cat("must be longer than status.refresh_period (",
                        FormatDuration(status.refresh_period), "), got ",
                        FormatDuration(status.stale_after)));
  }
  return absl::OkStatus();
}

absl::Status ParseLimits(const Section& root, LimitsConfig& limits) {
  Section s, m;
  if (absl::Status st = SubSection(root, "limits", {"max_in_flight"}, s); !st.ok()) return st;
  if (absl::Status st = SubSection(s, "max_in_flight", {"encrypt", "decrypt"}, m); !st.ok()) {
    return st;
  }
  // At least 1 (0 would refuse every call); at most 4096, past which the server's thread
  // budget (one thread per call in flight) stops being a bound.
  if (absl::Status st = GetUint(m, "encrypt", limits.max_in_flight_encrypt); !st.ok()) return st;
  if (absl::Status st = CheckRange("limits.max_in_flight.encrypt", limits.max_in_flight_encrypt, 1, 4096);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = GetUint(m, "decrypt", limits.max_in_flight_decrypt); !st.ok()) return st;
  return CheckRange("limits.max_in_flight.decrypt", limits.max_in_flight_decrypt, 1, 4096);
}

absl::Status ParseLog(const Section& root, LogLevel& level, uint64_t& queue_lines) {
  Section s;
  if (absl::Status st = SubSection(root, "log", {"level", "queue_lines"}, s); !st.ok()) return st;
  if (absl::Status st = GetEnum<LogLevel>(s, "level",
                                          {{"debug", LogLevel::kDebug}, {"info", LogLevel::kInfo},
                                           {"warn", LogLevel::kWarn}, {"error", LogLevel::kError}},
                                          level);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = GetUint(s, "queue_lines", queue_lines); !st.ok()) return st;
  return CheckRange("log.queue_lines", queue_lines, 16, 1048576);
}

absl::Status ParsePrivileges(const Section& root, PrivilegesConfig& privileges) {
  Section s;
  if (absl::Status st = SubSection(root, "privileges", {"user", "group"}, s); !st.ok()) return st;
  if (absl::Status st = GetId(s, "user", IdKind::kUser, privileges.uid); !st.ok()) return st;
  // Dropping to root is not dropping anything.
  if (privileges.uid == 0) return Error("privileges.user must not be root");
  if (absl::Status st = GetId(s, "group", IdKind::kGroup, privileges.gid); !st.ok()) return st;
  if (privileges.gid == 0) return Error("privileges.group must not be root (gid 0)");
  return absl::OkStatus();
}

absl::Status ParseSeccomp(const Section& root, SeccompMode& mode) {
  Section s;
  if (absl::Status st = SubSection(root, "seccomp", {"mode"}, s); !st.ok()) return st;
  return GetEnum<SeccompMode>(s, "mode",
                              {{"enforce", SeccompMode::kEnforce}, {"log", SeccompMode::kLog},
                               {"disabled", SeccompMode::kDisabled}},
                              mode);
}

absl::Status ParseHttp(const Section& root, HttpConfig& http) {
  Section s;
  if (absl::Status st = SubSection(root, "http", {"listen"}, s); !st.ok()) return st;
  std::string listen = http.listen;
  if (absl::Status st = GetString(s, "listen", listen); !st.ok()) return st;
  absl::StatusOr<HttpConfig> parsed = ParseHttpListen(listen);
  if (!parsed.ok()) return parsed.status();
  http = *parsed;
  return absl::OkStatus();
}

absl::Status ParseHygiene(const Section& root, bool& wipe_freed_memory) {
  Section s;
  if (absl::Status st = SubSection(root, "hygiene", {"wipe_freed_memory"}, s); !st.ok()) return st;
  enum class Flag { kOff, kOn };
  Flag f = wipe_freed_memory ? Flag::kOn : Flag::kOff;
  if (absl::Status st = GetEnum<Flag>(s, "wipe_freed_memory", {{"true", Flag::kOn}, {"false", Flag::kOff}}, f);
      !st.ok()) {
    return st;
  }
  wipe_freed_memory = f == Flag::kOn;
  return absl::OkStatus();
}

// ---- binding (docs/binding.md) ----------------------------------------------------------------

absl::Status GetBool(const Section& s, std::string_view name, bool& out) {
  enum class Flag { kOff, kOn };
  Flag f = out ? Flag::kOn : Flag::kOff;
  if (absl::Status st = GetEnum<Flag>(s, name, {{"true", Flag::kOn}, {"false", Flag::kOff}}, f); !st.ok()) {
    return st;
  }
  out = f == Flag::kOn;
  return absl::OkStatus();
}

absl::Status ParseBinding(const Section& root, BindingConfig& binding) {
  Section s;
  if (absl::Status st = SubSection(root, "binding", {"cluster_id", "write", "strict"}, s); !st.ok()) {
    return st;
  }
  if (absl::Status st = GetString(s, "cluster_id", binding.cluster_id); !st.ok()) return st;
  if (absl::Status st = GetBool(s, "write", binding.write); !st.ok()) return st;
  if (absl::Status st = GetBool(s, "strict", binding.strict); !st.ok()) return st;
  const std::string& id = binding.cluster_id;
  if (s.Find("cluster_id") != nullptr && id.empty()) {
    return KeyError("binding.cluster_id", "is empty; remove it to turn binding off");
  }
  if (id.size() > 128) {
    return KeyError("binding.cluster_id", Cat("is ", id.size(), " characters; the limit is 128"));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return KeyError("binding.cluster_id", "may hold only A-Z a-z 0-9 . _ : -");
  }
  if (binding.strict && id.empty()) {
    return KeyError("binding.strict", "requires binding.cluster_id (strict refuses unbound seeds)");
  }
  if (binding.strict && !binding.write) {
    return KeyError("binding.strict", "cannot be true with binding.write false (it would refuse "
                                      "the seeds it writes)");
  }
  return absl::OkStatus();
}

// ---- state (docs/rollback.md) ----------------------------------------------------------------

absl::Status ParseStateSection(const Section& root, StateConfig& state) {
  Section s;
  if (absl::Status st = SubSection(root, "state", {"file"}, s); !st.ok()) return st;
  if (absl::Status st = GetOptionalPath(s, "file", state.file); !st.ok()) return st;
  if (s.Find("file") != nullptr && state.file.empty()) {
    return KeyError("state.file", "is empty; remove it to keep the rollback mark in memory only");
  }
  if (!state.file.empty() && state.file.back() == '/') {
    return KeyError("state.file", "must name a file, not a directory");
  }
  return absl::OkStatus();
}

// ---- performance ----------------------------------------------------------------------------

std::string FormatMicros(std::chrono::microseconds d) {
  if (d.count() != 0 && d.count() % 1000 == 0) return FormatDuration(milliseconds(d.count() / 1000));
  return Cat(static_cast<int64_t>(d.count()), "us");
}

absl::Status ParsePerformance(const Section& root, PerformanceConfig& perf) {
  Section s;
  if (absl::Status st = SubSection(root, "performance",
                                   {"coalesce_decrypts", "batch_max_items", "batch_max_wait",
                                    "status_thread_realtime_priority", "max_idle_threads"},
                                   s);
      !st.ok()) {
    return st;
  }
  enum class Flag { kOff, kOn };
  Flag f = perf.coalesce_decrypts ? Flag::kOn : Flag::kOff;
  if (absl::Status st = GetEnum<Flag>(s, "coalesce_decrypts", {{"true", Flag::kOn}, {"false", Flag::kOff}}, f);
      !st.ok()) {
    return st;
  }
  perf.coalesce_decrypts = f == Flag::kOn;
  // At most 128: OpenBao refuses a request body of more than 1000 JSON strings by default
  // (listener max_request_json_strings), about 140 items of ours.
  if (absl::Status st = GetUint(s, "batch_max_items", perf.batch_max_items); !st.ok()) return st;
  if (absl::Status st = CheckRange("performance.batch_max_items", perf.batch_max_items, 1, 128);
      !st.ok()) {
    return st;
  }
  if (const YAML::Node* node = s.Find("batch_max_wait"); node != nullptr) {
    if (!node->IsScalar()) return WrongType(s.Key("batch_max_wait"), "a duration such as \"200us\"", *node);
    absl::StatusOr<std::chrono::microseconds> parsed = ParseFineDuration(node->Scalar());
    if (!parsed.ok()) return KeyError(s.Key("batch_max_wait"), std::string(parsed.status().message()));
    perf.batch_max_wait = *parsed;
  }
  // 0 (off) or a SCHED_FIFO priority (1..99, sched_get_priority_min/max on Linux).
  if (absl::Status st = GetUint(s, "status_thread_realtime_priority",
                                perf.status_thread_realtime_priority);
      !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckRange("performance.status_thread_realtime_priority",
                                   perf.status_thread_realtime_priority, 0, 99);
      !st.ok()) {
    return st;
  }
  // The limits bound it anyway (no more threads than limits.max_in_flight.encrypt + .decrypt
  // are ever kept); 8192 is what those two allow at most.
  if (absl::Status st = GetUint(s, "max_idle_threads", perf.max_idle_threads); !st.ok()) return st;
  if (absl::Status st = CheckRange("performance.max_idle_threads", perf.max_idle_threads, 0, 8192);
      !st.ok()) {
    return st;
  }
  // Well under a Vault round trip: a batch that waits longer costs more than it saves.
  constexpr std::chrono::microseconds kMaxWait{5000};
  if (perf.batch_max_wait > kMaxWait) {
    return KeyError("performance.batch_max_wait",
                    Cat("must be between 0us and ", FormatMicros(kMaxWait), ", got ",
                        FormatMicros(perf.batch_max_wait)));
  }
  return absl::OkStatus();
}

absl::Status CheckDocuments(const std::vector<YAML::Node>& docs) {
  if (docs.empty() || (docs.size() == 1 && docs[0].IsNull())) {
    return Error("the file is empty; see docs/configuration.md");
  }
  if (docs.size() > 1) {
    return Error(Cat("the file holds ", docs.size(), " YAML documents; one is expected"));
  }
  // The value itself is never echoed: a wrong --config might point at a secret file.
  if (!docs[0].IsMap()) {
    return Error(Cat("the top level must be a mapping of sections (socket, vault, ...), "
                     "got ", TypeName(docs[0])));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HttpConfig> ParseHttpListen(const std::string& value) {
  constexpr std::string_view kKey = "http.listen";
  constexpr std::string_view kForm =
      "expected \"IPv4:port\" or \"[IPv6]:port\" (e.g. \"127.0.0.1:8787\"), or \"off\"";
  HttpConfig http;
  if (value.empty() || value == "off") {
    http.enabled = false;
    http.listen.clear();
    http.host.clear();
    http.port = 0;
    return http;
  }
  const size_t colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) return KeyError(kKey, Cat(kForm, ", got ", Quote(value)));
  std::string host = value.substr(0, colon);
  const std::string port_text = value.substr(colon + 1);
  bool v6 = false;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return KeyError(kKey, Cat(kForm, ", got ", Quote(value)));
    host = host.substr(1, host.size() - 2);
    if (!IsIpv6Literal(host)) {
      return KeyError(kKey, Cat("not an IPv6 address: ", Quote(host), " (", kForm, ")"));
    }
    v6 = true;
  } else if (!IsIpv4Literal(host) || std::count(host.begin(), host.end(), '.') != 3) {
    // A literal only: a host name would need a resolver at start and could change meaning.
    return KeyError(kKey, Cat("not an IPv4 address: ", Quote(host), " (", kForm, ")"));
  }
  const std::optional<uint64_t> port = ParseDecimal(port_text);
  if (!port || *port == 0 || *port > 65535) {
    return KeyError(kKey, Cat("the port must be a number from 1 to 65535, got ", Quote(port_text)));
  }
  http.enabled = true;
  http.host = host;
  http.port = static_cast<uint16_t>(*port);
  http.listen = v6 ? Cat("[", host, "]:", *port) : Cat(host, ":", *port);
  if (v6) {
    in6_addr a{};
    inet_pton(AF_INET6, host.c_str(), &a);
    http.loopback = IN6_IS_ADDR_LOOPBACK(&a);
  } else {
    in_addr a{};
    inet_pton(AF_INET, host.c_str(), &a);
    http.loopback = (ntohl(a.s_addr) >> 24) == 127;
  }
  return http;
}

namespace {

absl::StatusOr<Config> ParseDocuments(const std::vector<YAML::Node>& docs) {
  if (absl::Status st = CheckDocuments(docs); !st.ok()) return st;
  Section root;
  if (absl::Status st = OpenSection(docs[0], "", {"socket", "vault", "status", "limits", "log",
                                                  "privileges", "seccomp", "hygiene", "http",
                                                  "binding", "performance", "state"},
                                  root);
      !st.ok()) {
    return st;
  }
  Config config;
  if (absl::Status st = ParseSocket(root, config.socket); !st.ok()) return st;
  if (absl::Status st = ParseVault(root, config.vault, config.secondary); !st.ok()) return st;
  if (absl::Status st = ParseStatus(root, config.status); !st.ok()) return st;
  if (absl::Status st = ParseLimits(root, config.limits); !st.ok()) return st;
  if (absl::Status st = ParseLog(root, config.log_level, config.log_queue_lines); !st.ok()) return st;
  if (absl::Status st = ParsePrivileges(root, config.privileges); !st.ok()) return st;
  if (absl::Status st = ParseSeccomp(root, config.seccomp); !st.ok()) return st;
  if (absl::Status st = ParseHygiene(root, config.wipe_freed_memory); !st.ok()) return st;
  if (absl::Status st = ParseHttp(root, config.http); !st.ok()) return st;
  if (absl::Status st = ParseBinding(root, config.binding); !st.ok()) return st;
  if (absl::Status st = ParsePerformance(root, config.performance); !st.ok()) return st;
  if (absl::Status st = ParseStateSection(root, config.state); !st.ok()) return st;
  return config;
}

// ---- durations ------------------------------------------------------------------------------

struct DurationUnit {
  std::string_view name;
  int64_t ms;
};
// Largest first: units must appear in this order, each at most once ("1m30s", not "30s1m").
// Nothing below a millisecond: no timer here is that fine, and "1us" would round to zero.
constexpr std::array<DurationUnit, 4> kUnits = {{{"h", 3600000}, {"m", 60000}, {"s", 1000},
                                                 {"ms", 1}}};

// Index in kUnits, or kUnits.size() when unknown.
size_t FindUnit(std::string_view name) {
  size_t u = 0;
  while (u < kUnits.size() && kUnits[u].name != name) ++u;
  return u;
}

// ---- file reading ---------------------------------------------------------------------------

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() { close(fd_); }

 private:
  int fd_;
};

absl::Status IoError(std::string_view what, const std::string& path, int err) {
  return Error(Cat(what, " ", Quote(path), ": ", ErrnoText(err)));
}

absl::Status TooLarge(const std::string& path) {
  return Error(Cat(Quote(path), " is larger than 1 MiB; refusing to read it"));
}

absl::Status ReadSmallFile(const std::string& path, std::string& out) {
  if (path.empty()) return Error("no configuration file given");
  if (path.find('\0') != std::string::npos) return Error("the file name contains a NUL byte");
  // O_NONBLOCK: a FIFO must not hang the start; it is refused below anyway.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return IoError("cannot open", path, errno);
  FdCloser closer(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0) return IoError("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) return Error(Cat(Quote(path), " is not a regular file"));
  if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes) return TooLarge(path);
  // Read one byte past the limit: the file may have grown since fstat.
  out.assign(kMaxFileBytes + 1, '\0');
  size_t total = 0;
  while (total < out.size()) {
    const ssize_t n = read(fd, out.data() + total, out.size() - total);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("cannot read", path, errno);
    if (n == 0) break;
    total += static_cast<size_t>(n);
  }
  if (total > kMaxFileBytes) return TooLarge(path);
  out.resize(total);
  return absl::OkStatus();
}

}  // namespace

namespace {

// Counts YAML documents without building them. yaml-cpp 0.7's LoadAll never returns on some
// malformed texts (an endless run of documents, found by fuzzing: it grew to 2 GB in 8 s), so
// the documents are counted with the event parser first, stopping at `cap`.
class DocumentCounter final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// YAML text is UTF-8 (YAML 1.2, 5.2). yaml-cpp passes other bytes through, so a value with them
// would not survive being written back (found by fuzzing); refuse the file instead, naming where.
std::optional<size_t> FirstInvalidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return i;
    i += len;
  }
  return std::nullopt;
}

size_t CountDocuments(const std::string& yaml_text, size_t cap) {
  std::istringstream in(yaml_text);
  YAML::Parser parser(in);
  DocumentCounter counter;
  size_t n = 0;
  while (n < cap && parser.HandleNextDocument(counter)) ++n;
  return n;
}

}  // namespace

absl::StatusOr<Config> ParseConfig(const std::string& yaml_text) {
  // yaml-cpp reports everything by exception; none may leave this function.
  if (const auto bad = FirstInvalidUtf8(yaml_text); bad) {
    return Error(Cat("the file is not valid UTF-8 (byte ", *bad + 1, "); YAML text must be"));
  }
  try {
    const size_t docs = CountDocuments(yaml_text, 2);
    if (docs > 1) return Error("the file holds more than one YAML document; one is expected");
    if (docs == 0) return ParseDocuments({});
    return ParseDocuments({YAML::Load(yaml_text)});
  } catch (const YAML::ParserException& e) {
    if (e.mark.is_null()) return Error(Cat("YAML syntax error: ", Escape(e.msg)));
    return Error(Cat("YAML syntax error at line ", e.mark.line + 1, ", column ",
                     e.mark.column + 1, ": ", Escape(e.msg)));
  } catch (const YAML::Exception& e) {
    return Error(Cat("YAML error: ", Escape(e.msg)));
  } catch (const std::exception& e) {
    return absl::InternalError(Cat("config: unexpected error: ", Escape(e.what())));
  }
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::string text;
  if (absl::Status st = ReadSmallFile(path, text); !st.ok()) return st;
  return ParseConfig(text);
}

absl::StatusOr<milliseconds> ParseDuration(const std::string& text) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(Cat("invalid duration ", Quote(text), ": ", why));
  };
  if (text.empty()) return bad("empty");
  if (text[0] == '-') return bad("negative durations are not allowed");
  int64_t total = 0;
  size_t next_unit = 0;  // index into kUnits of the smallest unit still allowed
  size_t i = 0;
  while (i < text.size()) {
    const size_t digits_end = text.find_first_not_of("0123456789", i);
    if (digits_end == i) return bad("expected a number followed by a unit (h, m, s or ms)");
    if (digits_end == text.npos) return bad("missing unit (h, m, s or ms) after the number");
    if (text[digits_end] == '.') return bad("fractions are not supported; use a smaller unit "
                                            "(1500ms, not 1.5s)");
    uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data() + i, text.data() + digits_end, value);
    if (ec != std::errc() || ptr != text.data() + digits_end) return bad("number too large");
    const size_t unit_end = std::min(text.find_first_of("0123456789.", digits_end), text.size());
    const std::string_view unit = std::string_view(text).substr(digits_end, unit_end - digits_end);
    const size_t u = FindUnit(unit);
    if (u == kUnits.size()) return bad(Cat("unknown unit ", Quote(unit), "; use h, m, s or ms"));
    if (u < next_unit) return bad("units must go from largest to smallest, each at most once");
    next_unit = u + 1;
    const uint64_t room = static_cast<uint64_t>(std::numeric_limits<int64_t>::max() - total);
    if (value > room / static_cast<uint64_t>(kUnits[u].ms)) return bad("too large");
    total += static_cast<int64_t>(value) * kUnits[u].ms;
    i = unit_end;
  }
  return milliseconds(total);
}

absl::StatusOr<std::chrono::microseconds> ParseFineDuration(const std::string& text) {
  using std::chrono::microseconds;
  constexpr int64_t kMaxMs = std::numeric_limits<int64_t>::max() / 1000;
  auto from_ms = [&](const std::string& part) -> absl::StatusOr<microseconds> {
    absl::StatusOr<milliseconds> ms = ParseDuration(part);
    if (!ms.ok()) return ms.status();
    if (ms->count() > kMaxMs) {
      return absl::InvalidArgumentError(Cat("invalid duration ", Quote(text), ": too large"));
    }
    return microseconds(ms->count() * 1000);
  };
  if (text.size() < 2 || text.compare(text.size() - 2, 2, "us") != 0) return from_ms(text);
  // A last "<digits>us" part after an optional ParseDuration prefix.
  const size_t end = text.size() - 2;
  size_t start = end;
  while (start > 0 && IsAsciiDigit(text[start - 1])) --start;
  if (start == end) {
    return absl::InvalidArgumentError(
        Cat("invalid duration ", Quote(text), ": expected a number before \"us\""));
  }
  uint64_t us = 0;
  auto [ptr, ec] = std::from_chars(text.data() + start, text.data() + end, us);
  if (ec != std::errc() || ptr != text.data() + end ||
      us > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(Cat("invalid duration ", Quote(text), ": number too large"));
  }
  microseconds total{0};
  if (start > 0) {
    absl::StatusOr<microseconds> head = from_ms(text.substr(0, start));
    if (!head.ok()) return head.status();
    total = *head;
  }
  if (static_cast<int64_t>(us) > std::numeric_limits<int64_t>::max() - total.count()) {
    return absl::InvalidArgumentError(Cat("invalid duration ", Quote(text), ": too large"));
  }
  return total + microseconds(static_cast<int64_t>(us));
}

}  // namespace trousseau::config
