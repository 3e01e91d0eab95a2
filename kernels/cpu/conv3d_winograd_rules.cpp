// Which shapes the Winograd kernel takes, and its on/off switch: level-independent, so built once
// (the kernel itself is compiled per instruction-set level, kernels/cpu/conv3d_winograd.cpp).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/conv3d_winograd.h"

namespace cpets::kernels::cpu {
namespace {
std::atomic<bool>& winograd_switch() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("CPETS_CONV_WINOGRAD");
    return !(v && std::strcmp(v, "0") == 0);
  }()};
  return on;
}
}  // namespace

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
