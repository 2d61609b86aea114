// Counter-based random bits (Philox4x32-10, Salmon et al., SC'11): the value of every random
// word is a pure function of (seed, stream, index, word number), so results never depend on
// thread count, vector width or how a call is chunked.
#pragma once

#include <array>
#include <cstdint>

#include "mpsim/round.h"

namespace mpsim {

// One Philox4x32 block with 10 rounds.
std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter,
                                           std::array<std::uint32_t, 2> key);

// Random word `word` (0, 1, 2, ...) of element `index` under `key`. Words 4j..4j+3 are the
// Philox block with counter (index lo, index hi, stream, j) and key (seed lo, seed hi).
// The words, read in order, are the binary expansion of the element's uniform U in [0, 1).
std::uint32_t random_word(const RandomKey& key, std::uint64_t index, std::uint32_t word);

}  // namespace mpsim
