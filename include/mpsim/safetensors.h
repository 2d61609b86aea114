// safetensors files: the checkpoint format of mpsim and of its PyTorch golden values, readable
// by PyTorch users (safetensors.torch.load_file) without mpsim.
//
// Layout: an 8-byte little-endian header length N, N bytes of a JSON object
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"<key>": "<string>", ...}}            (the metadata entry is optional)
// then the data section: each tensor's elements, row-major, little-endian, at
// [begin, end) relative to the start of the data section. The tensors must tile the data
// section exactly: no gaps, no overlap, nothing after the last one.
//
// The subset supported (docs/training.md, "The safetensors subset"): tensors are float32 in memory, so
//   - reading converts F32, F16 and BF16 always (every value is exact in float32), and F64,
//     I64, I32, I16, I8, U8 and BOOL when every element converts exactly (PyTorch stores
//     BatchNorm's num_batches_tracked as I64); an element that would round is an error, never
//     a silent change;
//   - writing produces F32 only.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpsim/tensor.h"

namespace mpsim {

// A safetensors file that cannot be read or written: missing, truncated, a malformed header,
// an unsupported dtype, offsets that do not tile the data section, an element not exact in
// float32. The message names the file and what is wrong.
struct SafetensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TensorFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // the header's "__metadata__" (string values)
};

// Reads the file at `path`; throws SafetensorsError naming it.
TensorFile read_safetensors(const std::string& path);

// Writes `file` to `path` with every tensor as F32, atomically: the bytes go to a temporary
// file in the same directory, which is flushed to disk and then renamed over `path`, so `path`
// never holds a partial file. Throws SafetensorsError for a tensor name that is empty or
// "__metadata__", a tensor whose element count does not match its shape, or an I/O failure
// (the temporary file is removed).
void write_safetensors(const std::string& path, const TensorFile& file);

// The same, in memory. `what` names the source in error messages (a file name).
TensorFile parse_safetensors(std::span<const std::uint8_t> bytes, const std::string& what = "<memory>");
std::vector<std::uint8_t> serialize_safetensors(const TensorFile& file);

}  // namespace mpsim
