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

// Random word `word` (0, 1, 2, ...) of element `index` under `key`: output word (index mod 4)
// of the Philox block with counter (g lo, g hi, stream, word), g = floor(index / 4), and key
// (seed lo, seed hi). Four neighbouring elements share a block, so the common case (word 0
// only) costs one block per four elements; every (element, word) pair still has its own
// output word. The words, read in order, are the binary expansion of the element's uniform U
// in [0, 1).
std::uint32_t random_word(const RandomKey& key, std::uint64_t index, std::uint32_t word);

}  // namespace mpsim
