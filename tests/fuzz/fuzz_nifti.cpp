// libFuzzer target: the NIfTI-1/2 and Analyze reader with its header validation. Any input must be
// read or refused with an exception; a crash, a hang, a sanitizer report or an accepted volume whose
// data do not match its shape is a bug.
#include <stdexcept>

#include "fuzz_common.h"
#include "io/nifti.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // gzip's magic decides the suffix, as a user's file name would.
  const bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const std::string path = cpets::fuzz::scratch_file(gz ? ".nii.gz" : ".nii", data, size);
  try {
    const cpets::io::Volume v = cpets::io::read_nifti(path);
    if (int64_t(v.data.size()) != v.numel() || v.numel() <= 0) __builtin_trap();
  } catch (const std::exception&) {
  }
  return 0;
}
