#pragma once

// A fuzz input read front to back in fixed-size little pieces. Past the end everything
// reads as zero, so every input is a valid program. The layout is plain enough for
// make_seeds.py to write meaningful seeds.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace vp::fuzz {

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool empty() const noexcept { return at_ >= size_; }
  size_t left() const noexcept { return empty() ? 0 : size_ - at_; }

  template <class T>
  T take() noexcept {
    T value{};
    const size_t n = sizeof(T) < left() ? sizeof(T) : left();
    if (n > 0) std::memcpy(&value, data_ + at_, n);
    at_ += sizeof(T);
    return value;
  }
  uint8_t u8() noexcept { return take<uint8_t>(); }
  uint16_t u16() noexcept { return take<uint16_t>(); }
  uint32_t u32() noexcept { return take<uint32_t>(); }
  uint64_t u64() noexcept { return take<uint64_t>(); }

  /// Up to `n` bytes (fewer at the end of the input).
  std::span<const uint8_t> bytes(size_t n) noexcept {
    const size_t k = n < left() ? n : left();
    std::span<const uint8_t> out(data_ + (empty() ? size_ : at_), k);
    at_ += k;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

}  // namespace vp::fuzz
