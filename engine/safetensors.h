// safetensors checkpoints (https://github.com/huggingface/safetensors format), so weights move
// between cpets and PyTorch in both directions.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {string: string}, name: {"dtype", "shape", "data_offsets": [begin, end]}, …}
// then the tensor bytes, offsets relative to the end of the header.
//
// Writing: always F32 (our only dtype), in the Python package's canonical layout — tensors sorted
// by name, header keys in data order with "__metadata__" first (omitted when empty), metadata keys
// sorted, compact JSON, header padded with spaces to a multiple of 8 — so for the same tensors and
// a single metadata entry the bytes equal `safetensors.torch.save_file`'s. (The Python package
// writes several metadata entries in hash order, so with more than one only the content agrees.)
// The file is written to a temporary in the same folder and renamed, so a crash never leaves a
// half-written checkpoint under the final name.
//
// Reading: F32, F64, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8 and BOOL, all converted to
// float32 (integers above 2^24 lose precision; F64 is rounded). Tensors are returned in file
// (data offset) order. Every inconsistency — truncated file, header length beyond the file, bad
// JSON, unknown dtype, shape/byte-count mismatch, offsets out of range or overlapping — throws
// std::runtime_error naming the file and the offending entry.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace cpets {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;  // also declared in module.h
using SafetensorsMetadata = std::map<std::string, std::string>;

struct SafetensorsFile {
  NamedTensors tensors;          // in file order
  SafetensorsMetadata metadata;  // the "__metadata__" object; empty if absent
  std::map<std::string, std::string> source_dtypes;  // name → dtype as stored in the file ("F16", …)
};

void save_safetensors(const std::string& path, const NamedTensors& tensors, const SafetensorsMetadata& metadata = {});
SafetensorsFile load_safetensors(const std::string& path);

// The in-memory forms of the two above (the file functions are thin wrappers).
std::string serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata = {});
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source_name = "<memory>");

}  // namespace cpets
