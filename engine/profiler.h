// A per-op time profile for `cpets-bench train` and anyone asking "which ops take the time?".
//
// Off by default (one relaxed atomic load per op). When on:
//   - forward: every op calls autograd's `record` right after its kernel ran, so the wall time
//     since the previous op finished (or since `mark()`) is charged to that op. Work done between
//     ops by the caller (model glue) lands on the next op; the step's total is exact.
//   - backward: each node's closure is timed exactly, under the op's name.
//   - Scope: explicit ranges for what is not an op (optimiser steps, data loading).
// Times are host wall-clock; a device backend must synchronise before they mean anything.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cpets::profiler {

void enable(bool on);
bool enabled();
void reset();  // clears the table and marks now
void mark();   // the next forward op's time starts here

struct Entry {
  std::string name;
  double forward_seconds = 0, backward_seconds = 0, other_seconds = 0;
  int64_t forward_calls = 0, backward_calls = 0, other_calls = 0;
  double total() const { return forward_seconds + backward_seconds + other_seconds; }
};
// Sorted by total time, largest first.
std::vector<Entry> entries();

// Hooks for autograd (not for general use).
void forward_op_done(const char* name);
void backward_op(const char* name, double seconds);

// Times a range that is not an op; also re-marks the forward clock when it ends, so the range is
// not charged again to the next op.
class Scope {
 public:
  explicit Scope(const char* name);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  double start_ = 0;
};

}  // namespace cpets::profiler
