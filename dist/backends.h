// The communicator implementations behind dist::connect (dist-internal). Each file builds in
// every configuration: without its library, connect_* throws naming the CMake switch.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace cpets::dist {

constexpr bool kHaveMpi =
#if CPETS_HAVE_MPI
    true;
#else
    false;
#endif
constexpr bool kHaveNccl =
#if CPETS_HAVE_NCCL
    true;
#else
    false;
#endif

std::unique_ptr<Communicator> connect_mpi(const LaunchInfo& launch);   // dist/mpi_communicator.cpp
std::unique_ptr<Communicator> connect_nccl(const LaunchInfo& launch);  // dist/nccl_communicator.cpp

}  // namespace cpets::dist
