#include "vhost/request_table.hpp"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "sys/str.hpp"
#include "unit_expect.hpp"

namespace vp::vhost {
namespace {

using unit::fails_with;
using unit::succeeded;

constexpr uint32_t kQueues = 2;  // one queue pair

std::vector<Fd> make_fds(size_t n) {
  std::vector<Fd> fds;
  for (size_t i = 0; i < n; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  return fds;
}

// One request as it would arrive: header, payload bytes, fd count.
struct Sample {
  Header header;
  std::vector<std::byte> payload;
  size_t fds = 0;

  Result<ValidRequest> check(uint32_t num_queues = kQueues) const {
    const std::vector<Fd> owned = make_fds(fds);
    return validate(header, payload, owned, num_queues);
  }
  void resize(size_t size) {
    payload.resize(size);
    header.size = static_cast<uint32_t>(size);
  }
  template <WireType T>
  void put(const T& value, size_t offset = 0) {
    if (payload.size() < offset + sizeof(T)) resize(offset + sizeof(T));
    std::memcpy(payload.data() + offset, &value, sizeof(T));
  }
};

Sample sample_of(Request request) {
  Sample s;
  s.header = Header{code(request), kVersion, 0};
  return s;
}

MemoryRegion region(uint64_t n) {
  return MemoryRegion{n << 32, 0x40000000, 0x7f0000000000 + (n << 32), 0x1000};
}

Sample mem_table(uint32_t nregions, uint32_t regions_sent, size_t fds) {
  Sample s = sample_of(Request::kSetMemTable);
  s.put(nregions);
  s.put(uint32_t{0}, 4);
  for (uint32_t i = 0; i < regions_sent; ++i) {
    s.put(region(i), kMemoryTableHeaderSize + i * sizeof(MemoryRegion));
  }
  s.fds = fds;
  return s;
}

Sample vring_file(Request request, uint64_t value, size_t fds) {
  Sample s = sample_of(request);
  s.put(value);
  s.fds = fds;
  return s;
}

Sample config(Request request, uint32_t offset, uint32_t size, size_t data_bytes) {
  Sample s = sample_of(request);
  s.put(ConfigHead{offset, size, 0});
  s.resize(kConfigHeadSize + data_bytes);
  return s;
}

// A correct message for every request the table handles; queue 1 where one is named.
Sample good(const RequestRule& rule) {
  Sample s = sample_of(rule.request);
  switch (rule.payload) {
    case Payload::kEmpty:
      break;
    case Payload::kU64:
      s.put(uint64_t{1} << 30);
      break;
    case Payload::kVringState:
      s.put(VringState{1, 256});
      break;
    case Payload::kVringAddr:
      s.put(VringAddr{1, 0, 0x7f0000001000, 0x7f0000002000, 0x7f0000003000, 0});
      break;
    case Payload::kVringFile:
      s.put(uint64_t{1});
      break;
    case Payload::kMemoryTable:
      return mem_table(2, 2, 2);
    case Payload::kSingleRegion:
      s.put(SingleMemoryRegion{0, region(1)});
      break;
    case Payload::kLog:
      s.put(LogDescription{0x10000, 0});
      break;
    case Payload::kConfig:
      return config(rule.request, 0, 8, 8);
    case Payload::kInflight:
      s.put(InflightDescription{0, 0, 2, 256, 0});
      break;
  }
  switch (rule.fds) {
    case FdRule::kNoFd:
    case FdRule::kAtMostOneFd:
      s.fds = 0;
      break;
    case FdRule::kOneFd:
    case FdRule::kOneFdUnlessNoFdBit:
      s.fds = 1;
      break;
    case FdRule::kOneFdPerRegion:
      break;  // set above
  }
  return s;
}

std::vector<const RequestRule*> handled_rules() {
  std::vector<const RequestRule*> out;
  for (const RequestRule& rule : request_rules()) {
    if (rule.handled) out.push_back(&rule);
  }
  return out;
}

TEST(VhostRequestTable, rows_cover_every_spec_code_in_order_with_unique_names) {
  const auto rules = request_rules();
  ASSERT_EQ(rules.size(), kRequestLimit - 1);
  std::set<std::string_view> names;
  for (size_t i = 0; i < rules.size(); ++i) {
    EXPECT_EQ(code(rules[i].request), i + 1);
    EXPECT_EQ(find_rule(static_cast<uint32_t>(i + 1)), &rules[i]);
    EXPECT_TRUE(names.insert(rules[i].name).second) << rules[i].name;
    EXPECT_LE(rules[i].max_size, kMaxPayloadSize) << rules[i].name;
  }
  EXPECT_EQ(find_rule(0), nullptr);
  EXPECT_EQ(find_rule(kRequestLimit), nullptr);
  EXPECT_EQ(request_name(36), "GET_MAX_MEM_SLOTS");
  EXPECT_EQ(request_name(40), "GET_STATUS");
  EXPECT_EQ(request_name(99), "UNKNOWN");
  EXPECT_EQ(protocol_feature_name(ProtocolFeature::kConfigureMemSlots), "CONFIGURE_MEM_SLOTS");
  EXPECT_EQ(protocol_feature_name(ProtocolFeature::kStatus), "STATUS");
}

TEST(VhostRequestTable, every_handled_request_with_a_correct_payload_passes) {
  for (const RequestRule* rule : handled_rules()) {
    SCOPED_TRACE(rule->name);
    const Sample s = good(*rule);
    auto valid = s.check();
    ASSERT_TRUE(succeeded(valid));
    EXPECT_EQ(valid->rule, rule);
    if (rule->queue_index == QueueIndexAt::kNoQueue) {
      EXPECT_FALSE(valid->queue_index.has_value());
    } else {
      EXPECT_EQ(valid->queue_index, 1u);
    }
  }
}

TEST(VhostRequestTable, every_handled_request_with_a_wrong_size_fails_with_its_name) {
  for (const RequestRule* rule : handled_rules()) {
    SCOPED_TRACE(rule->name);
    Sample longer = good(*rule);
    longer.resize(longer.payload.size() + 1);
    const std::string name_colon = str(rule->name, ":");
    EXPECT_TRUE(fails_with(longer.check(), error::kBadSize, {name_colon}));
    if (rule->min_size == rule->max_size) {
      EXPECT_TRUE(fails_with(longer.check(), error::kBadSize,
                             {str(name_colon, " payload is ", rule->max_size + 1,
                                  " bytes, expected ", rule->max_size)}));
    }
    if (rule->min_size > 0) {
      Sample shorter = good(*rule);
      shorter.resize(rule->min_size - 1);
      EXPECT_TRUE(fails_with(shorter.check(), error::kBadSize,
                             {str(name_colon, " payload is ", rule->min_size - 1, " bytes")}));
    }
  }
}

TEST(VhostRequestTable, every_handled_request_with_a_wrong_fd_count_fails_with_its_name) {
  for (const RequestRule* rule : handled_rules()) {
    SCOPED_TRACE(rule->name);
    Sample more = good(*rule);
    more.fds += rule->fds == FdRule::kAtMostOneFd ? 2 : 1;
    EXPECT_TRUE(
        fails_with(more.check(), error::kBadFds,
                   {str(rule->name, ": carries ", more.fds, more.fds == 1 ? " fd" : " fds")}));
    Sample fewer = good(*rule);
    if (fewer.fds > 0) {
      fewer.fds -= 1;
      EXPECT_TRUE(fails_with(fewer.check(), error::kBadFds, {str(rule->name, ": carries ")}));
    }
  }
}

TEST(VhostRequestTable, every_queue_index_out_of_range_is_refused_before_a_handler_runs) {
  int with_queue = 0;
  for (const RequestRule* rule : handled_rules()) {
    if (rule->queue_index == QueueIndexAt::kNoQueue) continue;
    ++with_queue;
    SCOPED_TRACE(rule->name);
    Sample s = good(*rule);
    s.put(uint32_t{9});  // index field (or low byte of the u64) = 9
    EXPECT_TRUE(fails_with(s.check(), error::kBadQueue,
                           {str(rule->name, ": queue index 9 is out of range (2 queues)")}));
    s.put(uint32_t{kQueues - 1});
    EXPECT_TRUE(succeeded(s.check()));
    EXPECT_TRUE(fails_with(s.check(1), error::kBadQueue,
                           {str(rule->name, ": queue index 1 is out of range (1 queue)")}));
  }
  EXPECT_EQ(with_queue, 8);  // NUM ADDR BASE GET_BASE KICK CALL ERR ENABLE
}

TEST(VhostRequestTable, set_vring_num_queue_index_is_a_full_u32) {
  Sample s = sample_of(Request::kSetVringNum);
  s.put(VringState{0xffffffff, 256});
  EXPECT_TRUE(fails_with(s.check(), error::kBadQueue,
                         {"SET_VRING_NUM: queue index 4294967295 is out of range (2 queues)"}));
}

TEST(VhostRequestTable, set_vring_kick_with_the_nofd_bit_and_no_fd_passes) {
  auto valid = vring_file(Request::kSetVringKick, kVringNoFdMask | 1, 0).check();
  ASSERT_TRUE(succeeded(valid));
  EXPECT_EQ(valid->queue_index, 1u);
}

TEST(VhostRequestTable, set_vring_kick_without_the_nofd_bit_and_no_fd_fails) {
  EXPECT_TRUE(fails_with(vring_file(Request::kSetVringKick, 1, 0).check(), error::kBadFds,
                         {"SET_VRING_KICK: carries 0 fds and its NOFD bit (0x100) is clear: "
                          "expected exactly 1"}));
}

TEST(VhostRequestTable, set_vring_call_with_the_nofd_bit_and_an_fd_fails) {
  EXPECT_TRUE(
      fails_with(vring_file(Request::kSetVringCall, kVringNoFdMask, 1).check(), error::kBadFds,
                 {"SET_VRING_CALL: carries 1 fd but its NOFD bit (0x100) says it has none"}));
}

TEST(VhostRequestTable, set_vring_err_with_undefined_bits_fails) {
  EXPECT_TRUE(fails_with(vring_file(Request::kSetVringErr, 0x201, 1).check(), error::kBadPayload,
                         {"SET_VRING_ERR: payload 0x201 sets undefined bits 0x200"}));
}

TEST(VhostRequestTable, set_vring_kick_queue_index_lives_in_the_low_byte) {
  EXPECT_TRUE(fails_with(vring_file(Request::kSetVringKick, 0xff, 1).check(), error::kBadQueue,
                         {"SET_VRING_KICK: queue index 255 is out of range (2 queues)"}));
}

TEST(VhostRequestTable, set_mem_table_with_nine_regions_fails) {
  // Nine regions' worth of bytes is over the size bound ...
  EXPECT_TRUE(fails_with(mem_table(9, 9, 8).check(), error::kBadSize,
                         {"SET_MEM_TABLE: payload is 296 bytes, expected 8 to 264"}));
  // ... and a count of nine in a payload that fits is refused by the count itself.
  EXPECT_TRUE(fails_with(mem_table(9, 8, 8).check(), error::kBadPayload,
                         {"SET_MEM_TABLE: 9 memory regions, at most 8"}));
}

TEST(VhostRequestTable, set_mem_table_whose_size_does_not_match_nregions_fails) {
  EXPECT_TRUE(fails_with(mem_table(2, 3, 2).check(), error::kBadSize,
                         {"SET_MEM_TABLE: payload is 104 bytes, but 2 memory regions need 72"}));
  EXPECT_TRUE(fails_with(mem_table(3, 2, 3).check(), error::kBadSize,
                         {"SET_MEM_TABLE: payload is 72 bytes, but 3 memory regions need 104"}));
}

TEST(VhostRequestTable, set_mem_table_with_fewer_fds_than_regions_fails) {
  EXPECT_TRUE(fails_with(mem_table(3, 3, 2).check(), error::kBadFds,
                         {"SET_MEM_TABLE: carries 2 fds for 3 memory regions"}));
  EXPECT_TRUE(fails_with(mem_table(1, 1, 0).check(), error::kBadFds,
                         {"SET_MEM_TABLE: carries 0 fds for 1 memory region"}));
}

TEST(VhostRequestTable, set_mem_table_with_eight_regions_or_none_passes) {
  EXPECT_TRUE(succeeded(mem_table(8, 8, 8).check()));
  EXPECT_TRUE(succeeded(mem_table(0, 0, 0).check()));
}

TEST(VhostRequestTable, memory_region_of_size_zero_or_wrapping_fails) {
  Sample empty = mem_table(2, 2, 2);
  MemoryRegion r = region(1);
  r.memory_size = 0;
  empty.put(r, kMemoryTableHeaderSize + sizeof(MemoryRegion));
  EXPECT_TRUE(
      fails_with(empty.check(), error::kBadPayload, {"SET_MEM_TABLE: region 1 has size 0"}));

  Sample wraps = mem_table(1, 1, 1);
  r = region(0);
  r.guest_phys_addr = 0xfffffffffffff000;
  r.memory_size = 0x2000;
  wraps.put(r, kMemoryTableHeaderSize);
  EXPECT_TRUE(
      fails_with(wraps.check(), error::kBadPayload,
                 {"SET_MEM_TABLE: region 0 guest range 0xfffffffffffff000 + 0x2000 wraps"}));

  Sample add = sample_of(Request::kAddMemReg);
  r = region(0);
  r.mmap_offset = 0xffffffffffffff00;
  add.put(SingleMemoryRegion{0, r});
  add.fds = 1;
  EXPECT_TRUE(fails_with(add.check(), error::kBadPayload, {"ADD_MEM_REG: the region mmap offset"}));

  // REM_MEM_REG ignores the mmap offset, as the spec says; an fd is tolerated and closed
  // by the caller.
  Sample rem = sample_of(Request::kRemMemReg);
  rem.put(SingleMemoryRegion{0, r});
  rem.fds = 1;
  EXPECT_TRUE(succeeded(rem.check()));
}

TEST(VhostRequestTable, config_size_must_match_and_stay_inside_the_config_space) {
  EXPECT_TRUE(succeeded(config(Request::kSetConfig, 248, 8, 8).check()));
  EXPECT_TRUE(
      fails_with(config(Request::kGetConfig, 0, 8, 4).check(), error::kBadSize,
                 {"GET_CONFIG: config size 8 does not match the 4 bytes after the config head"}));
  EXPECT_TRUE(fails_with(config(Request::kSetConfig, 250, 8, 8).check(), error::kBadPayload,
                         {"SET_CONFIG: offset 250 + size 8 is past the 256-byte config space"}));
  EXPECT_TRUE(fails_with(config(Request::kGetConfig, 0, 257, 257).check(), error::kBadSize,
                         {"GET_CONFIG: payload is 269 bytes, expected 12 to 268"}));
}

TEST(VhostRequestTable, unknown_request_codes_are_refused_by_number) {
  for (uint32_t request : {0u, kRequestLimit, 99u, 0xffffffffu}) {
    Sample s;
    s.header = Header{request, kVersion, 0};
    EXPECT_TRUE(fails_with(s.check(), error::kUnknownRequest, {str("unknown request ", request)}));
  }
}

TEST(VhostRequestTable, spec_requests_vpd_does_not_serve_are_refused_as_unsupported) {
  Sample iotlb = sample_of(Request::kIotlbMsg);
  iotlb.resize(32);
  EXPECT_TRUE(fails_with(iotlb.check(), error::kUnsupportedRequest,
                         {"IOTLB_MSG (request 22) is not supported by vpd"}));
  Sample gpu = sample_of(Request::kGpuSetSocket);
  gpu.fds = 1;
  EXPECT_TRUE(fails_with(gpu.check(), error::kUnsupportedRequest, {"GPU_SET_SOCKET"}));
}

TEST(VhostRequestTable, header_flags_must_be_version_one_without_reply_or_undefined_bits) {
  Sample s = sample_of(Request::kGetFeatures);
  s.header.flags = 0;
  EXPECT_TRUE(
      fails_with(s.check(), error::kBadFlags,
                 {"GET_FEATURES: flags 0x0 carry protocol version 0; vpd speaks version 1"}));
  s.header.flags = kVersion | kFlagReply;
  EXPECT_TRUE(fails_with(s.check(), error::kBadFlags,
                         {"GET_FEATURES: the REPLY flag is set on a request"}));
  s.header.flags = kVersion | 0x10;
  EXPECT_TRUE(fails_with(s.check(), error::kBadFlags,
                         {"GET_FEATURES: flags 0x11 set undefined bits 0x10"}));
  s.header.flags = kVersion | kFlagNeedReply;
  EXPECT_TRUE(succeeded(s.check()));
}

TEST(VhostRequestTable, header_size_must_match_the_payload_given) {
  Sample s = sample_of(Request::kSetFeatures);
  s.put(uint64_t{0});
  s.header.size = 16;
  EXPECT_TRUE(fails_with(s.check(), error::kBadSize,
                         {"SET_FEATURES: header says 16 payload bytes, 8 arrived"}));
}

TEST(VhostRequestTable, get_requests_always_expect_a_reply_others_only_when_acked) {
  const Header get_features{code(Request::kGetFeatures), kVersion, 0};
  const Header get_vring_base{code(Request::kGetVringBase), kVersion, 8};
  const Header set_log_base{code(Request::kSetLogBase), kVersion, 16};
  const Header set_features{code(Request::kSetFeatures), kVersion, 8};
  const Header set_features_need{code(Request::kSetFeatures), kVersion | kFlagNeedReply, 8};
  const Header unknown_need{99, kVersion | kFlagNeedReply, 0};

  EXPECT_TRUE(expects_reply(get_features, false));
  EXPECT_TRUE(expects_reply(get_vring_base, false));
  EXPECT_TRUE(expects_reply(set_log_base, false));
  EXPECT_FALSE(expects_reply(set_features, true));
  EXPECT_FALSE(expects_reply(set_features_need, false));
  EXPECT_TRUE(expects_reply(set_features_need, true));
  EXPECT_TRUE(expects_reply(unknown_need, true));
  EXPECT_FALSE(expects_reply(Header{99, kVersion, 0}, true));
  for (const RequestRule& rule : request_rules()) {
    if (rule.name.starts_with("GET_")) {
      EXPECT_EQ(rule.reply, Reply::kAlways) << rule.name;
    }
  }
}

TEST(VhostRequestTable, gated_requests_need_their_protocol_feature) {
  const RequestRule& queue_num = *find_rule(code(Request::kGetQueueNum));
  EXPECT_TRUE(fails_with(
      check_negotiated(queue_num, bit(ProtocolFeature::kReplyAck)), error::kNotNegotiated,
      {"GET_QUEUE_NUM needs protocol feature MQ (bit 0), which was not negotiated"}));
  EXPECT_TRUE(succeeded(check_negotiated(queue_num, bit(ProtocolFeature::kMq))));
  EXPECT_TRUE(succeeded(check_negotiated(*find_rule(code(Request::kSetVringNum)), 0)));
  EXPECT_EQ(find_rule(code(Request::kAddMemReg))->gate, ProtocolFeature::kConfigureMemSlots);
  EXPECT_EQ(find_rule(code(Request::kSetStatus))->gate, ProtocolFeature::kStatus);
}

TEST(VhostRequestTable, validate_reads_no_further_than_a_short_payload) {
  // A truncated SET_MEM_TABLE head: the size check refuses it before nregions is read.
  Sample s = sample_of(Request::kSetMemTable);
  s.resize(3);
  EXPECT_TRUE(fails_with(s.check(), error::kBadSize,
                         {"SET_MEM_TABLE: payload is 3 bytes, expected 8 to 264"}));
}

}  // namespace
}  // namespace vp::vhost
