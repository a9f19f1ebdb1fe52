// Packed virtqueue descriptor walking (lib/virtio/packed_queue) against a hostile guest.
#include "queue_fuzz.hpp"
#include "virtio/packed_queue.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vp::fuzz::run_queue<vp::virtio::PackedQueue>(data, size, /*packed=*/true);
  return 0;
}
