// Gradient synchronisation for data-parallel training, overlapped with the backward pass.
//
// The parameters are grouped into buckets of about `bucket_bytes` (the first ≤ 1 MiB) in a fixed
// order — from the last parameter to the first, the order in which a backward pass finishes their gradients. A
// hook on each parameter (engine's post-accumulate hook) marks it ready; once every parameter of
// the next bucket in order is ready, its gradients are copied into the bucket's flat buffer and
// handed to the reducer's thread, which all-reduces it while the backward pass goes on. Buckets
// are reduced strictly in bucket order on every rank, so the collectives always match. finish()
// reduces what is left (parameters the pass gave no gradient are zeros in the buffer and keep no
// gradient), waits, and writes back the average over ranks.
//
// The same buckets, order and reduction every step: with a fixed world size the gradients are the
// same bits run to run.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "engine/module.h"

namespace cpets::dist {

struct ReducerStats {
  int64_t steps = 0;
  int64_t buckets_in_backward = 0, buckets_after = 0;  // launched during the backward pass / by finish()
  double reduce_seconds = 0;   // time spent inside the collectives (the reducer's thread)
  double exposed_seconds = 0;  // time finish() waited after the backward pass had ended
  // The share of the all-reduce time hidden behind the backward pass.
  double hidden_fraction() const { return reduce_seconds > 0 ? std::max(0.0, 1.0 - exposed_seconds / reduce_seconds) : 1.0; }
};

class GradientReducer {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25ll << 20;  // 25 MiB, as PyTorch's DDP
  static constexpr int64_t kFirstBucketBytes = 1ll << 20;     // the first bucket's cap

  // Hooks go on the parameters now and come off in the destructor. With `overlap` false every
  // bucket waits for finish() (for measuring what the overlap buys).
  GradientReducer(Communicator& comm, NamedTensors params, int64_t bucket_bytes = kDefaultBucketBytes, bool overlap = true);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  void begin();   // before the backward pass
  void finish();  // after it: every rank holds the average of the ranks' gradients
  // Waits until the buckets launched so far are reduced, so that the caller's thread may run a
  // collective of its own (synchronised BatchNorm's statistics mid-backward) without two threads
  // in the communicator at once; the order stays the same on every rank.
  void quiesce();

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // The parameter names of bucket b, in the bucket's order.
  std::vector<std::string> bucket_names(int64_t b) const;
  const ReducerStats& stats() const { return stats_; }

  // Rank 0's values of these tensors everywhere (parameters at the start; buffers such as
  // BatchNorm's running statistics before every step, as PyTorch's DDP does).
  static void broadcast_from_root(Communicator& comm, const NamedTensors& tensors);

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    std::vector<int64_t> offsets;
    int64_t numel = 0;
    Tensor buffer;
    int64_t pending = 0;  // parameters not yet ready this pass
  };
  void on_ready(size_t param);
  void launch_ready();  // launches buckets in order while the next one is complete
  void launch(size_t b);
  void worker_loop();

  Communicator& comm_;
  NamedTensors params_;
  std::vector<size_t> bucket_of_;
  std::vector<Bucket> buckets_;
  bool overlap_;
  bool active_ = false;
  size_t next_launch_ = 0;
  ReducerStats stats_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<size_t> queue_;
  size_t done_ = 0;  // buckets reduced this pass
  bool stop_ = false;
  std::string error_;
  std::thread worker_;
};

}  // namespace cpets::dist
