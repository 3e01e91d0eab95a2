#include "dist/reducer.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/dispatch.h"

namespace cpets::dist {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// dst[0, n) = scale · src[0, n) on one device (host memcpy-speed on the CPU).
void copy_scaled(Device d, const float* src, float* dst, int64_t n, float scale) {
  dispatch::broadcast_to(d, src, {n}, dst, {n}, scale);
}

}  // namespace

GradientReducer::GradientReducer(Communicator& comm, NamedTensors params, int64_t bucket_bytes, bool overlap)
    : comm_(comm), params_(std::move(params)), bucket_of_(params_.size()), overlap_(overlap) {
  if (bucket_bytes < 1) throw std::invalid_argument("GradientReducer: bucket size must be positive, got " + std::to_string(bucket_bytes));
  // Last parameter first: a backward pass finishes the gradients of the last layers first. The
  // first bucket is at most 1 MiB (as PyTorch's DDP), so the first all-reduce starts early.
  Bucket current;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k].second;
    const int64_t cap = buckets_.empty() ? std::min<int64_t>(bucket_bytes, kFirstBucketBytes) : bucket_bytes;
    if (current.numel > 0 && (current.numel + p.numel()) * 4 > cap) {
      buckets_.push_back(std::move(current));
      current = Bucket{};
    }
    bucket_of_[k] = buckets_.size();
    current.params.push_back(k);
    current.offsets.push_back(current.numel);
    current.numel += p.numel();
  }
  if (!current.params.empty()) buckets_.push_back(std::move(current));
  const Device d = comm_.buffer_device();
  for (Bucket& b : buckets_) b.buffer = Tensor::empty({b.numel}, d);
  for (size_t k = 0; k < params_.size(); ++k)
    set_post_accumulate_grad_hook(params_[k].second, [this, k] { on_ready(k); });
  if (comm_.world() > 1) worker_ = std::thread([this] { worker_loop(); });
}

GradientReducer::~GradientReducer() {
  for (auto& [name, p] : params_) set_post_accumulate_grad_hook(p, nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::vector<std::string> GradientReducer::bucket_names(int64_t b) const {
  std::vector<std::string> names;
  for (size_t k : buckets_.at(static_cast<size_t>(b)).params) names.push_back(params_[k].first);
  return names;
}

void GradientReducer::begin() {
  if (comm_.world() == 1) return;
  for (Bucket& b : buckets_) b.pending = static_cast<int64_t>(b.params.size());
  next_launch_ = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = 0;
    error_.clear();
  }
  active_ = true;
}

void GradientReducer::on_ready(size_t param) {
  if (!active_) return;
  --buckets_[bucket_of_[param]].pending;
  if (overlap_) launch_ready();
}

void GradientReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    launch(next_launch_++);
    ++stats_.buckets_in_backward;
  }
}

void GradientReducer::launch(size_t b) {
  Bucket& bucket = buckets_[b];
  const Device d = comm_.buffer_device();
  for (size_t i = 0; i < bucket.params.size(); ++i) {
    const Tensor g = params_[bucket.params[i]].second.grad();
    float* dst = bucket.buffer.data() + bucket.offsets[i];
    const int64_t n = params_[bucket.params[i]].second.numel();
    if (g.defined()) copy_scaled(d, g.data(), dst, n, 1.f);
    else dispatch::fill(d, dst, n, 0.f);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(b);
  }
  cv_.notify_all();
}

void GradientReducer::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_
    const size_t b = queue_.front();
    queue_.pop_front();
    lock.unlock();
    const auto t0 = Clock::now();
    std::string error;
    try {
      comm_.all_reduce_sum(buckets_[b].buffer.data(), buckets_[b].numel, DType::F32);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const double seconds = since(t0);
    lock.lock();
    stats_.reduce_seconds += seconds;
    if (!error.empty() && error_.empty()) error_ = error;
    ++done_;
    cv_.notify_all();
  }
}

void GradientReducer::quiesce() {
  if (comm_.world() == 1 || !active_) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_ == next_launch_; });
}

void GradientReducer::finish() {
  if (comm_.world() == 1) return;
  if (!active_) throw std::logic_error("GradientReducer::finish without begin");
  active_ = false;
  while (next_launch_ < buckets_.size()) {  // in order, complete or not
    launch(next_launch_++);
    ++stats_.buckets_after;
  }
  const auto t0 = Clock::now();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ == buckets_.size(); });
    stats_.exposed_seconds += since(t0);
    ++stats_.steps;
    if (!error_.empty()) throw std::runtime_error("gradient all-reduce: " + error_);
  }
  const float inverse = 1.f / static_cast<float>(comm_.world());
  const Device d = comm_.buffer_device();
  for (const Bucket& bucket : buckets_)
    for (size_t i = 0; i < bucket.params.size(); ++i) {
      Tensor p = params_[bucket.params[i]].second;
      Tensor g = p.grad();
      if (!g.defined()) continue;  // no rank's pass reached it (the ranks run the same graph)
      copy_scaled(d, bucket.buffer.data() + bucket.offsets[i], g.data(), p.numel(), inverse);
    }
}

void GradientReducer::broadcast_from_root(Communicator& comm, const NamedTensors& params) {
  if (comm.world() == 1) return;
  for (const auto& [name, p] : params) {
    Tensor t = p;
    if (p.device() == comm.buffer_device()) {
      comm.broadcast(t.data(), t.numel() * 4, 0);
    } else {
      Tensor staged = p.to(comm.buffer_device());
      comm.broadcast(staged.data(), staged.numel() * 4, 0);
      t.copy_from(staged);
    }
  }
}

}  // namespace cpets::dist
