#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sys/error.hpp"

namespace vp::daemon {

/// One named step of making the kernel match an endpoint ("mtu", "bridge", ...).
struct Step {
  std::string name;
  /// The steps after it need what it does (the TAP, the link): when it fails none of them
  /// run, whatever the runner's mode.
  bool needed_by_rest = false;
  std::function<Result<void>()> run;
};

/// What a runner does with a failed step.
enum class OnFailure {
  kStop,           // the set path: the first failure ends the run; the caller undoes
  kRecordAndGoOn,  // restore: record it and go on, so a missing bridge does not cost the addresses
};

/// Runs steps in order and records which one failed. One runner may run several lists (a
/// later list planned from what an earlier one found); once stopped it runs nothing more.
class StepRunner {
 public:
  StepRunner(std::string endpoint, OnFailure mode) : endpoint_(std::move(endpoint)), mode_(mode) {}

  /// Runs `steps`; false when a failure stopped the run (strict mode, or a needed step).
  bool run(std::span<const Step> steps);

  /// The failure that stopped a strict run.
  const std::optional<Error>& stopped_by() const { return stopped_by_; }
  /// Every failure's message, in order (all of them in record-and-go-on mode).
  const std::vector<std::string>& problems() const { return problems_; }
  /// The names of the steps that failed, in order.
  const std::vector<std::string>& failed_steps() const { return failed_steps_; }

 private:
  std::string endpoint_;
  OnFailure mode_;
  bool stopped_ = false;
  std::optional<Error> stopped_by_;
  std::vector<std::string> problems_;
  std::vector<std::string> failed_steps_;
};

}  // namespace vp::daemon
