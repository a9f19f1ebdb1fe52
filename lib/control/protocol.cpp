#include "control/protocol.hpp"

#include <algorithm>
#include <array>

#include "sys/str.hpp"
#include "vp/version.hpp"

namespace vp::control {

using nlohmann::json;

namespace {

constexpr std::array<std::string_view, 7> kOps{op::kHello, op::kList,    op::kShow,   op::kCreate,
                                               op::kSet,   op::kDestroy, op::kMonitor};

Result<json> parse_object(std::string_view line, std::string_view what, const char* code) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return fail(code, str("the ", what, " is not valid JSON"));
  }
  if (!j.is_object()) return fail(code, str("the ", what, " must be a JSON object"));
  return j;
}

}  // namespace

bool op::is_read_only(std::string_view name) {
  return name == kHello || name == kList || name == kShow || name == kMonitor;
}

std::string encode(const Request& r) {
  json j{{"version", r.version}, {"op", r.op}};
  if (!r.endpoint.empty()) j["endpoint"] = r.endpoint;
  if (!r.args.empty()) j["args"] = r.args;
  return j.dump() + "\n";
}

Result<Request> decode_request(std::string_view line) {
  auto j = parse_object(line, "request", "bad-request");
  if (!j) return std::unexpected(j.error());
  Request r;
  auto version = j->find("version");
  if (version == j->end() || !version->is_number_integer()) {
    return fail("bad-request", "the request has no integer \"version\" field");
  }
  if (version->get<int64_t>() != kProtocolVersion) {
    return fail("unsupported-version",
                str("this vpd speaks protocol version ", kProtocolVersion, ", not ",
                    version->get<int64_t>(), "; use a vpctl of the same release"));
  }
  r.version = kProtocolVersion;
  auto op = j->find("op");
  if (op == j->end() || !op->is_string()) {
    return fail("bad-request", "the request has no string \"op\" field");
  }
  r.op = op->get<std::string>();
  if (std::find(kOps.begin(), kOps.end(), r.op) == kOps.end()) {
    return fail("bad-request", str("unknown op \"", r.op,
                                   "\"; known: hello list show create set destroy monitor"));
  }
  if (auto e = j->find("endpoint"); e != j->end()) {
    if (!e->is_string()) return fail("bad-request", "\"endpoint\" must be a string");
    r.endpoint = e->get<std::string>();
  }
  if (auto a = j->find("args"); a != j->end()) {
    if (!a->is_array()) return fail("bad-request", "\"args\" must be a list of strings");
    for (const auto& arg : *a) {
      if (!arg.is_string()) return fail("bad-request", "\"args\" must be a list of strings");
      r.args.push_back(arg.get<std::string>());
    }
  }
  for (const auto& [key, value] : j->items()) {
    if (key != "version" && key != "op" && key != "endpoint" && key != "args") {
      return fail("bad-request", str("unknown request field \"", key, "\""));
    }
  }
  return r;
}

std::string encode(const Response& r) {
  json j{{"version", kProtocolVersion}, {"ok", r.ok}};
  if (r.ok) {
    j["result"] = r.result;
  } else {
    j["error"] = {{"code", r.error.code}, {"message", r.error.message}};
  }
  if (!r.warnings.empty()) j["warnings"] = r.warnings;
  return j.dump() + "\n";
}

Result<Response> decode_response(std::string_view line) {
  auto j = parse_object(line, "response", "bad-response");
  if (!j) return std::unexpected(j.error());
  Response r;
  auto ok = j->find("ok");
  if (ok == j->end() || !ok->is_boolean()) {
    return fail("bad-response", "the response has no boolean \"ok\" field");
  }
  r.ok = ok->get<bool>();
  if (r.ok) {
    if (auto res = j->find("result"); res != j->end()) r.result = *res;
  } else {
    auto e = j->find("error");
    if (e == j->end() || !e->is_object() || !e->contains("code") || !e->contains("message") ||
        !(*e)["code"].is_string() || !(*e)["message"].is_string()) {
      return fail("bad-response", "the error response has no code and message");
    }
    r.error = {(*e)["code"].get<std::string>(), (*e)["message"].get<std::string>()};
  }
  if (auto w = j->find("warnings"); w != j->end() && w->is_array()) {
    for (const auto& s : *w) {
      if (s.is_string()) r.warnings.push_back(s.get<std::string>());
    }
  }
  return r;
}

Response error_response(Error error) {
  Response r;
  r.ok = false;
  r.error = std::move(error);
  return r;
}

}  // namespace vp::control
