// The engine's differentiable op set, one header per family. Every op dispatches on the device
// to a kernel in kernels/<backend>/ and records its backward with `record` (autograd.h).
#pragma once
#include "engine/ops_attention.h"
#include "engine/ops_conv.h"
#include "engine/ops_elementwise.h"
#include "engine/ops_linalg.h"
#include "engine/ops_loss.h"
#include "engine/ops_norm.h"
#include "engine/ops_reduce.h"
#include "engine/ops_shape.h"
