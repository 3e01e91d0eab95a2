#include "kernels/cpu/parallel.h"

#include <omp.h>

namespace cpets::kernels::cpu {

int num_threads() { return omp_get_max_threads(); }

}  // namespace cpets::kernels::cpu
