// Split virtqueue descriptor walking (lib/virtio/split_queue) against a hostile guest.
#include "queue_fuzz.hpp"
#include "virtio/split_queue.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  vp::fuzz::run_queue<vp::virtio::SplitQueue>(data, size, /*packed=*/false);
  return 0;
}
