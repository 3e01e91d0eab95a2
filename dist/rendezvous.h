// The bootstrap of torchrun-style launches (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): rank 0
// listens on MASTER_PORT, every other rank connects, and rank 0 hands them a few bytes (the
// NCCL unique id). Only the bootstrap travels this way — collectives go over NCCL.
#pragma once
#include <string>

#include "dist/communicator.h"

namespace cpets::dist {

// Returns rank 0's `blob` on every rank. Ranks that do not join within `timeout_s` (a peer that
// cannot reach rank 0, or rank 0 still missing some peers) make every rank that is there throw,
// naming the missing ranks or the address, and the fix.
std::string rendezvous_broadcast(const LaunchInfo& launch, const std::string& blob, double timeout_s);

// CPETS_DIST_TIMEOUT (seconds, default 300): how long ranks wait for each other at start.
double join_timeout_seconds();

}  // namespace cpets::dist
