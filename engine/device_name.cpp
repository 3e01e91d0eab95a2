// Device names ("cpu", "cuda:1") on their own: the config parser uses them, and the fuzzers
// build that parser without the rest of the engine (CMakeLists.txt, CPETS_FUZZ).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/tensor.h"

namespace cpets {

Device Device::parse(const std::string& text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  const std::string digits = text.rfind("cuda:", 0) == 0 ? text.substr(5) : std::string();
  if (!digits.empty() && digits.size() <= 3 && std::all_of(digits.begin(), digits.end(), [](char c) {
        return c >= '0' && c <= '9';
      }))
    return cuda(std::stoi(digits));
  throw std::invalid_argument("device \"" + text + "\": use cpu, cuda or cuda:N (N: the GPU's index, 0 first)");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

}  // namespace cpets
