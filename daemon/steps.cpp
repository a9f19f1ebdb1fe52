#include "daemon/steps.hpp"

#include "sys/log.hpp"

namespace vp::daemon {

bool StepRunner::run(std::span<const Step> steps) {
  for (const Step& step : steps) {
    if (stopped_) return false;
    auto result = step.run();
    if (result) continue;
    log::info(endpoint_, ": step ", step.name, " failed: ", result.error().message);
    failed_steps_.push_back(step.name);
    problems_.push_back(result.error().message);
    if (mode_ == OnFailure::kStop) {
      stopped_by_ = result.error();
      stopped_ = true;
    } else if (step.needed_by_rest) {
      stopped_ = true;  // nothing more can be done without it
    }
  }
  return !stopped_;
}

}  // namespace vp::daemon
