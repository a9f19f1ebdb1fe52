// QEMU stream framing (lib/stream/codec): a 4-byte big-endian length, then the frame, from
// a peer vpd does not control. The same byte stream is decoded twice: whole, with decode()
// frame after frame (the reference), and as a socket would deliver it, in chunks of
// input-chosen sizes through the Reassembler (with an unget() now and then, as when the TAP
// is full). Both must see the same frames, runts and broken length in the same order, and
// the Reassembler must always have room for the rest of a frame. complete_checksum() runs on
// every frame with input-chosen offsets and must refuse a field outside it.
//
// Input: u16 csum start, u16 csum offset, u8 chunk count, u16 chunk sizes..., then the
// stream.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz_check.hpp"
#include "fuzz_input.hpp"
#include "stream/codec.hpp"

namespace {

using namespace vp::stream;

struct Event {
  Decode status;
  std::vector<std::byte> frame;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static auto reassembler = std::make_unique<Reassembler>();
  vp::fuzz::Input in(data, size);
  const uint16_t csum_start = in.u16();
  const uint16_t csum_offset = in.u16();
  std::vector<size_t> chunks;
  const uint8_t count = in.u8() % 8;
  for (uint8_t i = 0; i < count; ++i) chunks.push_back(in.u16());
  if (chunks.empty()) chunks.push_back(1 << 16);
  const auto raw = in.bytes(in.left());
  const std::span<const std::byte> stream = std::as_bytes(raw);

  // The reference: the whole stream at once.
  std::vector<Event> reference;
  size_t pos = 0;
  for (;;) {
    const Decoded d = decode(stream.subspan(pos));
    if (d.status == Decode::kNeedMore) break;
    reference.push_back({d.status, {d.frame.begin(), d.frame.end()}});
    if (d.status == Decode::kBadLength) break;
    FUZZ_CHECK(d.consumed > 0 && d.consumed <= stream.size() - pos);
    if (d.status == Decode::kFrame) {
      FUZZ_CHECK(d.frame.size() == d.length && d.length >= kMinFrame && d.length <= kMaxFrame);
      FUZZ_CHECK(d.consumed == kLengthSize + d.length);
    }
    pos += d.consumed;
  }

  // The same stream in chunks.
  Reassembler& r = *reassembler;
  r.clear();
  size_t fed = 0;
  size_t seen = 0;
  size_t chunk = 0;
  bool broken = false;
  while (fed < stream.size() && !broken) {
    std::span<std::byte> space = r.space();
    FUZZ_CHECK(!space.empty());
    const size_t want = std::max<size_t>(chunks[chunk++ % chunks.size()], 1);
    const size_t n = std::min({want, space.size(), stream.size() - fed});
    std::memcpy(space.data(), stream.data() + fed, n);
    r.commit(n);
    fed += n;
    for (;;) {
      Decoded d = r.next();
      if (d.status == Decode::kNeedMore) break;
      if (d.status == Decode::kFrame && (d.length & 1)) {  // the TAP was full: try again
        r.unget(d);
        const Decoded again = r.next();
        FUZZ_CHECK(again.status == d.status && again.frame.size() == d.frame.size());
        FUZZ_CHECK(std::equal(again.frame.begin(), again.frame.end(), d.frame.begin()));
        d = again;
      }
      FUZZ_CHECK(seen < reference.size());
      FUZZ_CHECK(reference[seen].status == d.status);
      FUZZ_CHECK(std::equal(d.frame.begin(), d.frame.end(), reference[seen].frame.begin(),
                            reference[seen].frame.end()));
      ++seen;
      if (d.status == Decode::kBadLength) {
        broken = true;
        break;
      }
      if (d.status == Decode::kFrame) {
        std::vector<std::byte> frame(d.frame.begin(), d.frame.end());
        const bool inside = uint64_t{csum_start} + csum_offset + 2 <= frame.size();
        FUZZ_CHECK(complete_checksum(frame, csum_start, csum_offset) == inside);
      }
    }
    if (!broken) r.compact();
  }
  FUZZ_CHECK(seen == reference.size());
  if (!broken) FUZZ_CHECK(r.pending() == stream.size() - pos);
  return 0;
}
