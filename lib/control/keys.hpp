#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "control/endpoint.hpp"
#include "sys/error.hpp"

namespace vp::control {

struct Change;

/// How a key's value is kept in the JSON view and the state file. The state file's tokens
/// (and the config file's) follow from it, so the two cannot disagree.
enum class JsonKind {
  kNone,          // not kept: name= only picks a name at create
  kText,          // "x"; "" is unset and gives no token
  kNullableText,  // "x", or null for unset
  kNumber,        // a whole number
  kFlag,          // true/false; true is the bare key
  kList,          // ["a", "b"]: one key=a per entry
};

/// One endpoint key: everything the grammar, the config and state files, the JSON view, the
/// data plane and vpctl's help and completion know about it. Verbs (create up down destroy),
/// the offload toggles (net/offloads) and bare addresses are not keys.
struct KeyRow {
  std::string_view name = {};     // as typed: "peer", "guest-mac"
  std::string_view value = {};    // what its value is, for help ("PATH"); "" for a flag (no =value)
  std::string_view example = {};  // one valid token, e.g. "mtu=9000" (help, tests)
  bool clearable = false;         // -key puts it back to its default
  bool repeatable = false;        // each mention adds one (address=, allow=)
  bool create_only = false;       // name=: picks a name at create; no setting of the endpoint
  /// rate=: sets other keys' fields (rx-rate and tx-rate); nothing of its own is kept, shown
  /// or saved.
  bool shorthand = false;
  /// A change of it is seen by the guest, so the data plane re-attaches (the guest
  /// reconnects); otherwise it is applied beside a running session.
  bool guest_sees = false;
  /// On vpd's command line (io-pkt style) a second mention starts the next endpoint.
  bool starts_endpoint = false;
  /// key=value (or the bare flag; value ""): the value checked and put in the Change.
  Result<void> (*parse)(Change&, std::string_view value) = nullptr;
  /// -key, set only when clearable.
  void (*clear)(Change&) = nullptr;
  /// -key=VALUE removes one entry of a repeatable key; null when there is no such form.
  Result<void> (*remove)(Change&, std::string_view value) = nullptr;
  /// What the Change asks for, made so in the configuration (null for create_only).
  void (*apply)(EndpointConfig&, const Change&) = nullptr;
  std::string_view json_field = {};  // the field in the JSON view and the state file
  JsonKind json_kind = JsonKind::kNone;
  /// Missing from a state file is an error; false for keys added after the first release
  /// (older state files lack them, and the default applies).
  bool json_required = false;
  /// to_tokens() writes it even at its default (mac=, mtu=), so that a saved line says it.
  bool always_saved = false;
  /// The configuration's value as JSON (json_kind says its shape).
  nlohmann::json (*get)(const EndpointConfig&) = nullptr;
};

/// Every endpoint key, in the order to_tokens() writes them.
std::span<const KeyRow> endpoint_keys();

/// The row of key `name` ("peer"), or nullptr.
const KeyRow* find_key(std::string_view name);

/// "peer=PATH", "address=CIDR...", "legacy": how the key is written, for help text.
std::string key_usage(const KeyRow& row);

/// The vpctl tokens that one row's JSON value stands for ("mtu=1500", "legacy", none for an
/// unset value). Fails with bad-request, naming the field, when the value has the wrong
/// shape; `value` is nullptr when the field is missing.
Result<void> json_to_tokens(const KeyRow& row, const nlohmann::json* value,
                            std::vector<std::string>& tokens);

/// True when `a` and `b` differ in a setting the guest sees (a key with guest_sees, or an
/// offload toggle): the data plane must then re-attach the endpoint.
bool guest_sees_change(const EndpointConfig& a, const EndpointConfig& b);

}  // namespace vp::control
