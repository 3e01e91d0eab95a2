// libFuzzer target: the cohort CSV reader, then pairing, the split and the range fit on whatever
// it accepted. Inputs must be read or refused with an exception; crashes, hangs and sanitizer
// reports are bugs, and so is a pairing that does not keep the 6-month rule.
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "fuzz_common.h"
#include "io/cohort.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cpets::fuzz::scratch_file(".csv", data, size);
  std::ostringstream warnings;
  try {
    const cpets::io::Cohort c = cpets::io::read_cohort(path, cpets::io::MissingPolicy::skip_row, &warnings);
    cpets::io::Pairing p = cpets::io::pair_sessions(c);
    for (const auto& r : p.paired)
      if (std::llabs(r.pet_date - r.t1_date) >= cpets::io::kSixMonthsDays ||
          std::llabs(r.pet_date - r.csf_date) >= cpets::io::kSixMonthsDays)
        __builtin_trap();
    cpets::io::assign_splits(p.paired, 100);
    (void)cpets::io::fit_ranges(p.paired);
  } catch (const std::exception&) {
  }
  return 0;
}
