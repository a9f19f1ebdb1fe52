// check_tx_header(): one row per rule, each with the feature that makes it pass and the
// smallest change that makes it fail. Plus the NetCounters field table.

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "dataplane/forward.hpp"
#include "dataplane/net_counters.hpp"
#include "dataplane/net_header.hpp"
#include "dataplane_rings.hpp"
#include "net/offloads.hpp"

namespace vp::dataplane {
namespace {

namespace f = vp::net::feature;
using F = TxHeaderFault;

NetHdr hdr(uint8_t flags, uint8_t gso_type = 0, uint16_t hdr_len = 0, uint16_t gso_size = 0,
           uint16_t csum_start = 0, uint16_t csum_offset = 0) {
  return NetHdr{flags, gso_type, hdr_len, gso_size, csum_start, csum_offset};
}

struct Row {
  const char* what;
  NetHdr h;
  uint32_t frame_len;
  uint64_t features;
  TxHeaderFault want;
};

TEST(DataplaneHeader, tx_header_rules_one_by_one) {
  const uint64_t csum = f::kCsum;
  const Row rows[] = {
      {"plain frame", hdr(0), 60, 0, F::kNone},
      {"DATA_VALID from the driver", hdr(kHdrFDataValid), 60, csum, F::kBadFlags},
      {"RSC_INFO from the driver", hdr(kHdrFRscInfo), 60, csum, F::kBadFlags},
      {"undefined flag bit", hdr(0x80), 60, csum, F::kBadFlags},
      {"NEEDS_CSUM without CSUM", hdr(1, 0, 0, 0, 34, 16), 60, 0, F::kCsumNotNegotiated},
      {"NEEDS_CSUM, field ends at frame end", hdr(1, 0, 0, 0, 34, 24), 60, csum, F::kNone},
      {"NEEDS_CSUM, field one past", hdr(1, 0, 0, 0, 34, 25), 60, csum, F::kBadCsumOffsets},
      {"NEEDS_CSUM, csum_start huge", hdr(1, 0, 0, 0, 0xffff, 0), 60, csum, F::kBadCsumOffsets},
      {"NEEDS_CSUM, both at maximum", hdr(1, 0, 0, 0, 0xffff, 0xffff), kMaxFrameSize, csum,
       F::kBadCsumOffsets},
      {"TSO4 without HOST_TSO4", hdr(1, kGsoTcpv4, 54, 1448, 34, 16), 3000, csum,
       F::kGsoNotNegotiated},
      {"TSO4 with HOST_TSO4", hdr(1, kGsoTcpv4, 54, 1448, 34, 16), 3000, csum | f::kHostTso4,
       F::kNone},
      {"TSO6 with only HOST_TSO4", hdr(1, kGsoTcpv6, 74, 1428, 54, 16), 3000, csum | f::kHostTso4,
       F::kGsoNotNegotiated},
      {"TSO6 with HOST_TSO6", hdr(1, kGsoTcpv6, 74, 1428, 54, 16), 3000, csum | f::kHostTso6,
       F::kNone},
      {"UFO without HOST_UFO", hdr(1, kGsoUdp, 42, 1472, 34, 6), 3000, csum | f::kHostTso4,
       F::kGsoNotNegotiated},
      {"UFO with HOST_UFO", hdr(1, kGsoUdp, 42, 1472, 34, 6), 3000, csum | f::kHostUfo, F::kNone},
      {"USO without HOST_USO", hdr(1, kGsoUdpL4, 42, 1472, 34, 6), 3000, csum | f::kHostUfo,
       F::kGsoNotNegotiated},
      {"USO with HOST_USO", hdr(1, kGsoUdpL4, 42, 1472, 34, 6), 3000, csum | f::kHostUso, F::kNone},
      {"TSO4|ECN without HOST_ECN", hdr(1, kGsoTcpv4 | kGsoEcn, 54, 1448, 34, 16), 3000,
       csum | f::kHostTso4, F::kGsoNotNegotiated},
      {"TSO4|ECN with HOST_ECN", hdr(1, kGsoTcpv4 | kGsoEcn, 54, 1448, 34, 16), 3000,
       csum | f::kHostTso4 | f::kHostEcn, F::kNone},
      {"ECN alone", hdr(0, kGsoEcn), 60, csum | f::kHostTso4 | f::kHostEcn, F::kBadGso},
      {"unknown gso_type 2", hdr(1, 2, 54, 1448, 34, 16), 3000, ~0ull, F::kBadGso},
      {"unknown gso_type 6", hdr(1, 6, 54, 1448, 34, 16), 3000, ~0ull, F::kBadGso},
      {"GSO without NEEDS_CSUM", hdr(0, kGsoTcpv4, 54, 1448), 3000, csum | f::kHostTso4,
       F::kBadGso},
      {"GSO with gso_size 0", hdr(1, kGsoTcpv4, 54, 0, 34, 16), 3000, csum | f::kHostTso4,
       F::kBadGso},
      {"hdr_len = frame", hdr(0, 0, 60), 60, 0, F::kNone},
      {"hdr_len past the frame", hdr(0, 0, 61), 60, 0, F::kHdrLenPastFrame},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(check_tx_header(row.h, row.frame_len, row.features), row.want) << row.what;
  }
}

TEST(DataplaneHeader, decode_reads_little_endian_fields) {
  const test::Bytes b = test::net_hdr(12, 1, 4, 0x1234, 0x5678, 0x9abc, 0xdef0, 7);
  const NetHdr h = decode_net_hdr(b);
  EXPECT_EQ(h.flags, 1);
  EXPECT_EQ(h.gso_type, 4);
  EXPECT_EQ(h.hdr_len, 0x1234);
  EXPECT_EQ(h.gso_size, 0x5678);
  EXPECT_EQ(h.csum_start, 0x9abc);
  EXPECT_EQ(h.csum_offset, 0xdef0);
}

TEST(DataplaneHeader, header_length_and_session_follow_the_features) {
  EXPECT_EQ(net_hdr_len(0), 10u);
  EXPECT_EQ(net_hdr_len(f::kCsum | f::kHostTso4), 10u);
  EXPECT_EQ(net_hdr_len(1ull << 32), 12u);
  EXPECT_EQ(net_hdr_len(kFeatureMrgRxbuf), 12u);
  const NetSession s = make_net_session((1ull << 32) | kFeatureMrgRxbuf | f::kCsum);
  EXPECT_EQ(s.hdr_len, 12u);
  EXPECT_TRUE(s.mrg_rxbuf);
  EXPECT_EQ(s.features, (1ull << 32) | kFeatureMrgRxbuf | f::kCsum);
  EXPECT_FALSE(make_net_session(1ull << 32).mrg_rxbuf);
}

TEST(DataplaneCounters, field_table_names_every_field_once_and_adds) {
  std::set<std::string_view> names;
  NetCounters a;
  uint64_t v = 1;
  for (const NetCounterField& field : kNetCounterFields) {
    EXPECT_TRUE(names.insert(field.name).second) << field.name;
    a.*field.member = v++;
  }
  NetCounters b = a;
  b += a;
  v = 1;
  for (const NetCounterField& field : kNetCounterFields) {
    EXPECT_EQ(b.*field.member, 2 * v) << field.name;
    ++v;
  }
}

}  // namespace
}  // namespace vp::dataplane
