// A one-line live progress display for long loops ("step 120/3000 … 2.31 steps/s, ETA 20m46s"),
// redrawn in place on a terminal; in log mode (no terminal, --no-progress) a plain line every
// `log_every` steps instead, so logs stay readable.
#pragma once
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace cpets::train {

std::string format_duration(double seconds);  // "45s", "12m05s", "3h02m"

class ProgressLine {
 public:
  // `first_step` is where this process started (resume), so the rate counts only its own steps.
  ProgressLine(std::ostream& os, int64_t first_step, int64_t total_steps, bool live, int64_t log_every);
  // After step `step` (1-based count of steps done); `text` is the losses part.
  void update(int64_t step, const std::string& text);
  // Prints a message on its own line (the live line is cleared first and redrawn later).
  void message(const std::string& text);
  void finish();  // ends the live line

  double steps_per_second() const;

 private:
  std::string line(int64_t step, const std::string& text) const;
  std::ostream& os_;
  int64_t first_step_, total_, log_every_, last_step_;
  bool live_, drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::string last_text_;
};

}  // namespace cpets::train
