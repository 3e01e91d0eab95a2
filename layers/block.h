// A module with one input and one output, so a network can hold a list of mixed blocks
// (ResnetBlock, AEResBlock, Upsample…) and run them in order.
#pragma once
#include "engine/module.h"

namespace cpets::layers {

class Block : public Module {
 public:
  virtual Tensor forward(const Tensor& x) const = 0;
};

}  // namespace cpets::layers
