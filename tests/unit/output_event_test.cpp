// `vpctl monitor`'s text form: one line per event, TIME ENDPOINT TYPE: MESSAGE.

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "ctl/output.hpp"

namespace vp::ctl {
namespace {

using nlohmann::json;

TEST(OutputEvent, connected_event_is_time_endpoint_type_and_sentence_on_one_line) {
  const json event{{"time", "2026-12-04T06:40:01.125Z"},
                   {"endpoint", "vp0"},
                   {"type", "frontend-connected"},
                   {"message", "a frontend connected on /run/vpd/vp0.sock (uid 0 pid 42)"},
                   {"frontend", {{"pid", 42}, {"uid", 0}}}};
  EXPECT_EQ(format_event(event),
            "2026-12-04T06:40:01.125Z vp0 frontend-connected: a frontend connected on "
            "/run/vpd/vp0.sock (uid 0 pid 42)\n");
}

TEST(OutputEvent, lost_event_without_endpoint_shows_a_dash) {
  const json event{{"time", "2026-12-04T06:40:01.125Z"},
                   {"endpoint", ""},
                   {"type", "lost"},
                   {"message", "3 events were not sent"},
                   {"count", 3}};
  EXPECT_EQ(format_event(event), "2026-12-04T06:40:01.125Z - lost: 3 events were not sent\n");
}

TEST(OutputEvent, newline_in_a_vm_name_stays_on_the_events_line) {
  const json event{{"time", "2026-12-04T06:40:01.125Z"},
                   {"endpoint", "vp0"},
                   {"type", "frontend-connected"},
                   {"message", "a frontend connected (VM evil\nfake line\x1b[2J)"}};
  const std::string line = format_event(event);
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
  EXPECT_NE(line.find("VM evil?fake line?[2J)"), std::string::npos) << line;
}

TEST(OutputEvent, event_missing_fields_still_makes_a_line) {
  EXPECT_EQ(format_event(json::object()), "? - ?: \n");
}

}  // namespace
}  // namespace vp::ctl
