// Which algorithm a conv3d shape takes — Winograd, im2col + GEMM, or the direct kernels — and
// the on/off switches of the first two: level-independent, so built once (the kernels themselves
// are compiled per instruction-set level, kernels/cpu/conv3d*.cpp).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/conv3d.h"
#include "kernels/cpu/conv3d_winograd.h"

namespace cpets::kernels::cpu {
namespace {
// On unless the environment variable is "0".
bool env_switch(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::strcmp(v, "0") == 0);
}
std::atomic<bool>& winograd_switch() {
  static std::atomic<bool> on{env_switch("CPETS_CONV_WINOGRAD")};
  return on;
}
std::atomic<bool>& im2col_switch() {
  static std::atomic<bool> on{env_switch("CPETS_CONV_IM2COL")};
  return on;
}
}  // namespace

void conv3d_set_im2col_enabled(bool on) { im2col_switch().store(on); }
bool conv3d_im2col_enabled() { return im2col_switch().load(); }

// Output rows under half a vector (8 of 16 lanes) leave the direct kernels mostly idle; a
// reduction of ≥ 256 (Cin·taps) and ≥ 8 output channels keep the GEMM's panels full; the unrolled
// columns of one batch item stay under 16 MB.
bool conv3d_im2col_worthwhile(const Conv3dShape& s) {
  const int64_t reduction = s.in_channels * s.taps();
  return s.out_size(2) < 8 && reduction >= 256 && s.out_channels >= 8 &&
         reduction * s.out_voxels() <= (int64_t(4) << 20);
}

// F(4, 3) along D and H where both have at least 16 outputs; below, the few tile rows (and the
// tasks they make) ran no faster than F(2, 3) (12×16×12: 0.73 vs 0.65 ms).
int conv3d_winograd_tile_rows(const int64_t in[3]) { return in[0] >= 16 && in[1] >= 16 ? 4 : 2; }

void conv3d_set_winograd_enabled(bool on) { winograd_switch().store(on); }
bool conv3d_winograd_enabled() { return winograd_switch().load(); }

bool conv3d_winograd_worthwhile(const Conv3dShape& s, int64_t cin, int64_t cout) {
  if (!conv3d_winograd_supports(s)) return false;
  return cin >= 16 && cout >= 16 && s.in[0] >= 4 && s.in[1] >= 4 && s.in[2] >= 4;
}

bool conv3d_winograd_supports(const Conv3dShape& s) {
  if (s.batch < 1 || s.in_channels < 1 || s.out_channels < 1) return false;
  for (int a = 0; a < 3; ++a)
    if (s.kernel[a] != 3 || s.stride[a] != 1 || s.padding[a] != 1 || s.in[a] < 1) return false;
  return true;
}

}  // namespace cpets::kernels::cpu
