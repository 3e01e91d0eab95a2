#include "train/progress.h"

#include <cmath>
#include <cstdio>
#include <ostream>

namespace cpets::train {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  char buf[32];
  const long long s = std::llround(seconds);
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  return buf;
}

ProgressLine::ProgressLine(std::ostream& os, int64_t first_step, int64_t total_steps, bool live, int64_t log_every)
    : os_(os), first_step_(first_step), total_(total_steps), log_every_(log_every < 1 ? 1 : log_every),
      last_step_(first_step), live_(live), start_(std::chrono::steady_clock::now()) {}

double ProgressLine::steps_per_second() const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const int64_t done = last_step_ - first_step_;
  return done > 0 && elapsed > 0 ? done / elapsed : 0.0;
}

std::string ProgressLine::line(int64_t step, const std::string& text) const {
  const double rate = steps_per_second();
  char head[96];
  const int width = static_cast<int>(std::to_string(total_).size());
  std::snprintf(head, sizeof head, "step %*lld/%lld", width, static_cast<long long>(step), static_cast<long long>(total_));
  char tail[96];
  if (rate > 0)
    std::snprintf(tail, sizeof tail, "%.3g steps/s, ETA %s", rate, format_duration((total_ - step) / rate).c_str());
  else
    std::snprintf(tail, sizeof tail, "-- steps/s");
  return std::string(head) + "  " + text + "  " + tail;
}

void ProgressLine::update(int64_t step, const std::string& text) {
  last_step_ = step;
  last_text_ = text;
  if (live_) {
    os_ << "\r\033[K" << line(step, text) << std::flush;
    drawn_ = true;
  } else if (step % log_every_ == 0 || step == total_) {
    os_ << line(step, text) << "\n" << std::flush;
  }
}

void ProgressLine::message(const std::string& text) {
  if (live_ && drawn_) os_ << "\r\033[K";
  os_ << text << "\n";
  if (live_ && drawn_) os_ << line(last_step_, last_text_);
  os_ << std::flush;
}

void ProgressLine::finish() {
  if (live_ && drawn_) os_ << "\n" << std::flush;
  drawn_ = false;
}

}  // namespace cpets::train
