// Packed codes: arrays of quantized values stored as the format's own bit patterns, `bits` bits
// per element, instead of in a float carrier. The codes are those of encode()/decode()
// (format.h); these are the array forms, through tables built once per call, bit-identical to
// the scalar functions element by element (errors included).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mpsim/format.h"
#include "mpsim/quantize_array.h"

namespace mpsim {

// ---- bit streams --------------------------------------------------------------------------

// n codes of `bits` bits each (1..16), concatenated LSB-first: code i occupies bit positions
// i*bits .. i*bits+bits-1 of the little-endian bit stream (bit k is bit k%8 of byte k/8). The
// result has ceil(n*bits/8) bytes; unused high bits of the last byte are zero.
// Throws FormatError if bits is out of range or a code does not fit in `bits` bits.
std::vector<std::uint8_t> pack_bits(const std::uint16_t* codes, std::size_t n, int bits);

// The inverse: codes[0..n) from the first ceil(n*bits/8) of `nbytes` bytes.
// Throws FormatError if bits is out of range or nbytes is too small for n codes.
void unpack_bits(const std::uint8_t* bytes, std::size_t nbytes, std::size_t n, int bits, std::uint16_t* codes);

// ---- values <-> codes ---------------------------------------------------------------------

// The array forms below look values and codes up in a table of the format, built on first use
// (a millisecond for 16-bit formats) and kept for the most recent formats; any thread may call
// them.
//
// codes[i] = encode(f, values[i]) for formats of at most 16 bits. Every value must already be a
// value of f (a quantize_array result); one that is not, or NaN into a format without a NaN
// code, throws FormatError naming the element, as encode() would throw for it.
void encode_array(const float* values, std::size_t n, const Format& f, std::uint16_t* codes);
void encode_array(const double* values, std::size_t n, const Format& f, std::uint16_t* codes);

// out[i] = decode(f, codes[i]).value for formats of at most 16 bits; a code at or above
// code_count(f) throws FormatError naming the element. fp32: every value of f must be an fp32
// number (Format::require_fits; for integer formats, every decoded value must convert exactly),
// else FormatError.
void decode_array(const std::uint16_t* codes, std::size_t n, const Format& f, float* out);
void decode_array(const std::uint16_t* codes, std::size_t n, const Format& f, double* out);

// ---- quantize and pack in one step --------------------------------------------------------

// An array in packed form: `count` codes of format.bits() bits each, as pack_bits lays them out.
struct PackedCodes {
  Format format;
  std::size_t count = 0;
  std::vector<std::uint8_t> bytes;
};

// quantize_array(in, n, f, options), then encode_array and pack_bits. The format must have at
// most 16 bits. NaN inputs into a format without a NaN code throw FormatError (as encode does).
// fp32 inputs into an integer format are quantized in fp64, whose results are the format's
// values exactly (an fp32 result of int8:scale=0.1 is not), with the same codes.
PackedCodes pack(const float* in, std::size_t n, const Format& f, const QuantizeOptions& options = {});
PackedCodes pack(const double* in, std::size_t n, const Format& f, const QuantizeOptions& options = {});

// out[0..p.count) = the values of the packed codes (unpack_bits, then decode_array).
void unpack(const PackedCodes& p, float* out);
void unpack(const PackedCodes& p, double* out);

}  // namespace mpsim
