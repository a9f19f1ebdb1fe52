#include "control/protocol.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "unit_expect.hpp"

namespace vp::control {
namespace {

using nlohmann::json;
using unit::fails_with;
using unit::succeeded;

// ---- requests ----------------------------------------------------------------------------

TEST(Request, set_with_endpoint_and_args_round_trips) {
  const Request r{1, "set", "vp0", {"mtu=9000", "up", "-tso4"}};
  const std::string line = encode(r);
  auto back = decode_request(line);
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, r);
}

TEST(Request, list_without_endpoint_or_args_round_trips) {
  const Request r{1, "list", "", {}};
  auto back = decode_request(encode(r));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, r);
}

TEST(Request, every_op_round_trips) {
  for (std::string_view name :
       {op::kHello, op::kList, op::kShow, op::kCreate, op::kSet, op::kDestroy}) {
    const Request r{1, std::string(name), "vp1", {}};
    auto back = decode_request(encode(r));
    ASSERT_TRUE(succeeded(back)) << name;
    EXPECT_EQ(*back, r) << name;
  }
}

// What a read-only control socket (control-ro.sock) answers: the ops that change nothing.
TEST(ReadOnlyOps, hello_list_show_and_monitor_are_read_only) {
  for (std::string_view name : {op::kHello, op::kList, op::kShow, op::kMonitor}) {
    EXPECT_TRUE(op::is_read_only(name)) << name;
  }
}

TEST(ReadOnlyOps, create_set_destroy_and_unknown_ops_are_not) {
  for (std::string_view name : {op::kCreate, op::kSet, op::kDestroy}) {
    EXPECT_FALSE(op::is_read_only(name)) << name;
  }
  // An op this build does not know (a newer vpctl's) counts as a change.
  for (std::string_view name : {"reload", "", "LIST", "list "}) {
    EXPECT_FALSE(op::is_read_only(name)) << '"' << name << '"';
  }
}

TEST(ReadOnlyOps, every_known_op_is_classified_as_documented) {
  // decode_request knows exactly these; each is either read-only or a change.
  const std::vector<std::pair<std::string_view, bool>> all{
      {op::kHello, true},   {op::kList, true}, {op::kShow, true},    {op::kMonitor, true},
      {op::kCreate, false}, {op::kSet, false}, {op::kDestroy, false}};
  for (const auto& [name, read_only] : all) {
    ASSERT_TRUE(succeeded(decode_request(encode(Request{1, std::string(name), "vp0", {}}))))
        << name;
    EXPECT_EQ(op::is_read_only(name), read_only) << name;
  }
  auto unknown = decode_request(R"({"version":1,"op":"reload"})");
  EXPECT_TRUE(fails_with(unknown, "bad-request"));
}

TEST(Request, args_with_quotes_and_unicode_round_trip) {
  const Request r{1, "set", "vp0", {"bind=/run/a \"b\".sock", "bridge=br\u00e9", "x\ny"}};
  auto back = decode_request(encode(r));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, r);
}

TEST(Request, encoding_is_one_line_of_json) {
  const std::string line = encode(Request{1, "set", "vp0", {"mtu=9000"}});
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  const json j = json::parse(line);
  EXPECT_EQ(j.at("version"), 1);
  EXPECT_EQ(j.at("op"), "set");
  EXPECT_EQ(j.at("endpoint"), "vp0");
  EXPECT_EQ(j.at("args"), json{"mtu=9000"});
}

TEST(Request, empty_endpoint_and_args_are_left_out) {
  const json j = json::parse(encode(Request{1, "list", "", {}}));
  EXPECT_FALSE(j.contains("endpoint"));
  EXPECT_FALSE(j.contains("args"));
}

TEST(Request, documented_example_decodes) {
  auto r = decode_request(R"({"version":1,"op":"set","endpoint":"vp0","args":["mtu=9000","up"]})");
  ASSERT_TRUE(succeeded(r));
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(r->op, "set");
  EXPECT_EQ(r->endpoint, "vp0");
  EXPECT_EQ(r->args, (std::vector<std::string>{"mtu=9000", "up"}));
}

TEST(DecodeRequest, not_json) {
  EXPECT_TRUE(fails_with(decode_request("hello vpd"), "bad-request", {"not valid JSON"}));
  EXPECT_TRUE(fails_with(decode_request("{\"version\":1,"), "bad-request", {"not valid JSON"}));
  EXPECT_TRUE(fails_with(decode_request(""), "bad-request", {"not valid JSON"}));
}

TEST(DecodeRequest, array_instead_of_object) {
  EXPECT_TRUE(fails_with(decode_request(R"([1,"list"])"), "bad-request", {"JSON object"}));
}

TEST(DecodeRequest, scalar_instead_of_object) {
  EXPECT_TRUE(fails_with(decode_request("1"), "bad-request", {"JSON object"}));
  EXPECT_TRUE(fails_with(decode_request("\"list\""), "bad-request", {"JSON object"}));
}

TEST(DecodeRequest, missing_version) {
  EXPECT_TRUE(fails_with(decode_request(R"({"op":"list"})"), "bad-request", {"\"version\""}));
}

TEST(DecodeRequest, version_as_string) {
  EXPECT_TRUE(
      fails_with(decode_request(R"({"version":"1","op":"list"})"), "bad-request", {"version"}));
}

TEST(DecodeRequest, version_as_fraction) {
  EXPECT_TRUE(
      fails_with(decode_request(R"({"version":1.5,"op":"list"})"), "bad-request", {"version"}));
}

TEST(DecodeRequest, version_2_is_unsupported) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":2,"op":"list"})"), "unsupported-version",
                         {"version 1", "not 2"}));
}

TEST(DecodeRequest, version_0_is_unsupported) {
  EXPECT_TRUE(
      fails_with(decode_request(R"({"version":0,"op":"list"})"), "unsupported-version", {"not 0"}));
}

TEST(DecodeRequest, missing_op) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1})"), "bad-request", {"\"op\""}));
}

TEST(DecodeRequest, op_not_a_string) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":3})"), "bad-request", {"\"op\""}));
}

TEST(DecodeRequest, unknown_op) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":"reboot"})"), "bad-request",
                         {"unknown op \"reboot\"", "hello list show create set destroy"}));
}

TEST(DecodeRequest, op_is_case_sensitive) {
  EXPECT_TRUE(
      fails_with(decode_request(R"({"version":1,"op":"LIST"})"), "bad-request", {"unknown op"}));
}

TEST(DecodeRequest, endpoint_not_a_string) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":"show","endpoint":0})"), "bad-request",
                         {"\"endpoint\" must be a string"}));
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":"show","endpoint":null})"),
                         "bad-request", {"\"endpoint\""}));
}

TEST(DecodeRequest, args_not_a_list) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":"set","args":"up"})"), "bad-request",
                         {"\"args\" must be a list of strings"}));
}

TEST(DecodeRequest, args_with_a_non_string) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":"set","args":["up",9000]})"),
                         "bad-request", {"\"args\" must be a list of strings"}));
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":"set","args":[["up"]]})"),
                         "bad-request", {"\"args\""}));
}

TEST(DecodeRequest, unknown_field) {
  EXPECT_TRUE(fails_with(decode_request(R"({"version":1,"op":"list","force":true})"), "bad-request",
                         {"unknown request field \"force\""}));
}

TEST(DecodeRequest, empty_args_list_is_accepted) {
  auto r = decode_request(R"({"version":1,"op":"set","endpoint":"vp0","args":[]})");
  ASSERT_TRUE(succeeded(r));
  EXPECT_TRUE(r->args.empty());
}

// ---- responses ---------------------------------------------------------------------------

TEST(Response, ok_with_result_and_warnings_round_trips) {
  Response r;
  r.ok = true;
  r.result = json{{"name", "vp0"}, {"mtu", 9000}, {"addresses", {"10.0.0.1/8"}}};
  r.warnings = {"address 10.0.0.1 has no prefix length; using 10.0.0.1/8", "second"};
  auto back = decode_response(encode(r));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, r);
  EXPECT_EQ(back->result.at("mtu"), 9000);
  EXPECT_EQ(back->warnings.size(), 2u);
}

TEST(Response, ok_without_result_round_trips) {
  Response r;
  auto back = decode_response(encode(r));
  ASSERT_TRUE(succeeded(back));
  EXPECT_TRUE(back->ok);
  EXPECT_TRUE(back->result.is_null());
  EXPECT_TRUE(back->warnings.empty());
  EXPECT_EQ(*back, r);
}

TEST(Response, error_round_trips) {
  const Response r =
      error_response(Error{"invalid-mac", "mac=zz is not a usable MAC address: ..."});
  EXPECT_FALSE(r.ok);
  auto back = decode_response(encode(r));
  ASSERT_TRUE(succeeded(back));
  EXPECT_FALSE(back->ok);
  EXPECT_EQ(back->error.code, "invalid-mac");
  EXPECT_EQ(back->error.message, "mac=zz is not a usable MAC address: ...");
  EXPECT_EQ(*back, r);
}

TEST(Response, error_with_warnings_round_trips) {
  Response r = error_response(Error{"conflicting-settings", "up and down cannot be given"});
  r.warnings = {"w"};
  auto back = decode_response(encode(r));
  ASSERT_TRUE(succeeded(back));
  EXPECT_EQ(*back, r);
}

TEST(Response, encoding_is_one_line_with_version) {
  const std::string ok_line = encode(Response{});
  const std::string err_line = encode(error_response(Error{"x", "y"}));
  for (const std::string& line : {ok_line, err_line}) {
    ASSERT_FALSE(line.empty());
    EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
    EXPECT_EQ(json::parse(line).at("version"), 1) << line;
  }
  const json err = json::parse(err_line);
  EXPECT_EQ(err.at("ok"), false);
  EXPECT_EQ(err.at("error"), (json{{"code", "x"}, {"message", "y"}}));
  EXPECT_FALSE(err.contains("result"));
  EXPECT_FALSE(json::parse(ok_line).contains("warnings"));
}

TEST(DecodeResponse, not_json) {
  auto r = decode_response("<html>");
  ASSERT_FALSE(r);
  EXPECT_TRUE(unit::contains(r.error().message, "response is not valid JSON"));
}

TEST(DecodeResponse, array_instead_of_object) {
  auto r = decode_response("[true]");
  ASSERT_FALSE(r);
  EXPECT_TRUE(unit::contains(r.error().message, "JSON object"));
}

TEST(DecodeResponse, missing_ok) {
  EXPECT_TRUE(
      fails_with(decode_response(R"({"version":1,"result":{}})"), "bad-response", {"\"ok\""}));
}

TEST(DecodeResponse, ok_not_a_boolean) {
  EXPECT_TRUE(
      fails_with(decode_response(R"({"version":1,"ok":"yes"})"), "bad-response", {"\"ok\""}));
  EXPECT_TRUE(fails_with(decode_response(R"({"version":1,"ok":1})"), "bad-response"));
}

TEST(DecodeResponse, error_without_error_object) {
  EXPECT_TRUE(fails_with(decode_response(R"({"version":1,"ok":false})"), "bad-response",
                         {"code and message"}));
  EXPECT_TRUE(
      fails_with(decode_response(R"({"version":1,"ok":false,"error":"boom"})"), "bad-response"));
}

TEST(DecodeResponse, error_without_message) {
  EXPECT_TRUE(fails_with(decode_response(R"({"version":1,"ok":false,"error":{"code":"x"}})"),
                         "bad-response"));
}

TEST(DecodeResponse, error_with_non_string_code) {
  EXPECT_TRUE(
      fails_with(decode_response(R"({"version":1,"ok":false,"error":{"code":7,"message":"m"}})"),
                 "bad-response"));
}

TEST(DecodeResponse, non_string_warnings_are_skipped) {
  auto r = decode_response(R"({"version":1,"ok":true,"warnings":["a",3,"b"]})");
  ASSERT_TRUE(succeeded(r));
  EXPECT_EQ(r->warnings, (std::vector<std::string>{"a", "b"}));
}

}  // namespace
}  // namespace vp::control
