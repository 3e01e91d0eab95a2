// A run-time count turned into a template argument, for register-blocked micro-kernels whose
// block sizes must be compile-time constants: with_static_count<Max>(n, f) calls
// f(std::integral_constant<int, k>{}) with k = n clamped to [1, Max].
#pragma once
#include <type_traits>
#include <utility>

namespace cpets::kernels::cpu {

template <int Max, int K = 1, class F>
inline void with_static_count(int n, F&& f) {
  if constexpr (K >= Max) {
    f(std::integral_constant<int, Max>{});
  } else {
    if (n <= K) return f(std::integral_constant<int, K>{});
    with_static_count<Max, K + 1>(n, std::forward<F>(f));
  }
}

}  // namespace cpets::kernels::cpu
