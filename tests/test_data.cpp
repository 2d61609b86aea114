// Data sets: loaders on files the tests write (IDX plain and gzip, CIFAR-10/100 binary) and on
// broken variants of them (each error must name the file and the fault); shuffling (a uniform
// permutation, reproduced from the documented recipe and the raw Philox block); augmentation
// (against a padded-image oracle); batching (1 vs 2 threads bit for bit); subsets, padding,
// statistics; the real Fashion-MNIST files when the Debian package is installed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "mpsim/data.h"
#include "mpsim/rng.h"

namespace fs = std::filesystem;
using mpsim::Dataset;
using mpsim::DataError;
using mpsim::IdxArray;
using mpsim::Split;

namespace {

// Bytes with variety, from a fixed LCG.
std::vector<std::uint8_t> some_bytes(std::size_t n, std::uint32_t seed) {
  std::vector<std::uint8_t> out(n);
  std::uint32_t x = seed;
  for (auto& b : out) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<std::uint8_t>(x >> 24);
  }
  return out;
}

void write_bytes(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// byte / 255 rounded once to float (a double quotient rounded to float is the correctly
// rounded float quotient: 53 >= 2 * 24 + 2).
float unit(std::uint8_t b) { return static_cast<float>(b / 255.0); }

// EXPECT that `fn` throws E whose message contains every one of `parts`.
template <typename E, typename F>
void expect_error(F fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning '" << parts.front() << "'";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

class DataFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mpsim_test_data_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// ---- IDX -----------------------------------------------------------------------------------

IdxArray idx_images(std::size_t n, std::size_t h, std::size_t w, std::uint32_t seed) {
  IdxArray a;
  a.dims = {n, h, w};
  a.data = some_bytes(n * h * w, seed);
  return a;
}

IdxArray idx_labels(std::vector<std::uint8_t> labels) {
  IdxArray a;
  a.dims = {labels.size()};
  a.data = std::move(labels);
  return a;
}

TEST_F(DataFiles, IdxPlainAndGzipLoadTheSameImages) {
  const IdxArray img = idx_images(5, 4, 3, 7);
  const IdxArray lab = idx_labels({3, 0, 9, 9, 1});
  mpsim::write_idx(path("img"), img, false);
  mpsim::write_idx(path("lab"), lab, false);
  mpsim::write_idx(path("img.gz"), img, true);
  mpsim::write_idx(path("lab.gz"), lab, true);
  const Dataset plain = mpsim::load_idx(path("img"), path("lab"), 10, "plain");
  const Dataset gz = mpsim::load_idx(path("img.gz"), path("lab.gz"), 10, "gz");
  for (const Dataset* d : {&plain, &gz}) {
    EXPECT_EQ(d->images.shape(), (mpsim::Shape{5, 1, 4, 3}));
    EXPECT_EQ(d->labels, (std::vector<std::uint32_t>{3, 0, 9, 9, 1}));
    EXPECT_EQ(d->num_classes, 10u);
    for (std::size_t i = 0; i < img.data.size(); ++i) ASSERT_EQ(d->images[i], unit(img.data[i])) << i;
  }
  EXPECT_EQ(plain.name, "plain");
  EXPECT_EQ(plain.class_counts(), (std::vector<std::size_t>{1, 1, 0, 1, 0, 0, 0, 0, 0, 2}));
}

TEST_F(DataFiles, MnistStandardNamesPlainOrGzip) {
  mpsim::write_idx(path("train-images-idx3-ubyte"), idx_images(6, 28, 28, 1), false);
  mpsim::write_idx(path("train-labels-idx1-ubyte.gz"), idx_labels({0, 1, 2, 3, 4, 5}), true);
  mpsim::write_idx(path("t10k-images-idx3-ubyte.gz"), idx_images(2, 28, 28, 2), true);
  mpsim::write_idx(path("t10k-labels-idx1-ubyte.gz"), idx_labels({7, 8}), true);
  const Dataset train = mpsim::load_fashion_mnist(dir_.string(), Split::train);
  const Dataset test = mpsim::load_mnist(dir_.string(), Split::test);
  EXPECT_EQ(train.size(), 6u);
  EXPECT_EQ(train.name, "fashion-mnist/train");
  EXPECT_EQ(test.labels, (std::vector<std::uint32_t>{7, 8}));
  EXPECT_EQ(test.name, "mnist/test");
  EXPECT_EQ(mpsim::load_dataset("mnist", dir_.string(), Split::test).size(), 2u);
  fs::remove(path("t10k-labels-idx1-ubyte.gz"));
  expect_error<DataError>([&] { mpsim::load_mnist(dir_.string(), Split::test); },
                          {"missing", "t10k-labels-idx1-ubyte"});
}

TEST_F(DataFiles, IdxErrorsNameFileAndFault) {
  mpsim::write_idx(path("img"), idx_images(5, 4, 3, 7), false);
  mpsim::write_idx(path("lab4"), idx_labels({1, 2, 3, 4}), false);
  mpsim::write_idx(path("lab_bad"), idx_labels({1, 2, 3, 10, 4}), false);
  IdxArray lab2d;
  lab2d.dims = {5, 1};
  lab2d.data = {1, 2, 3, 4, 5};
  mpsim::write_idx(path("lab2d"), lab2d, false);
  IdxArray img1d = idx_labels({1, 2, 3});
  mpsim::write_idx(path("img1d"), img1d, false);

  expect_error<DataError>([&] { mpsim::load_idx(path("img"), path("lab4"), 10, "x"); },
                          {path("img"), path("lab4"), "5 images but 4 labels"});
  expect_error<DataError>([&] { mpsim::load_idx(path("img"), path("lab_bad"), 10, "x"); },
                          {path("lab_bad"), "label 10", "sample 3", "10 classes"});
  expect_error<DataError>([&] { mpsim::load_idx(path("img"), path("lab2d"), 10, "x"); },
                          {path("lab2d"), "expected labels [N]"});
  expect_error<DataError>([&] { mpsim::load_idx(path("img1d"), path("lab4"), 10, "x"); },
                          {path("img1d"), "expected images"});
  expect_error<DataError>([&] { mpsim::load_idx(path("nope"), path("lab4"), 10, "x"); }, {path("nope")});

  // A truncated gzip file: the IDX reader's error, naming the file.
  mpsim::write_idx(path("img.gz"), idx_images(50, 28, 28, 3), true);
  const auto size = fs::file_size(path("img.gz"));
  fs::resize_file(path("img.gz"), size / 2);
  expect_error<DataError>([&] { mpsim::load_idx(path("img.gz"), path("lab4"), 10, "x"); }, {path("img.gz")});
}

// ---- CIFAR ---------------------------------------------------------------------------------

// CIFAR records: label bytes then 3072 pixel bytes; the pixel byte of (c, y, x) in record r is
// a function of (r, c, y, x) so a misplaced plane or row shows.
std::uint8_t cifar_pixel(std::size_t r, std::size_t c, std::size_t y, std::size_t x) {
  return static_cast<std::uint8_t>((r * 131 + c * 71 + y * 13 + x * 7) & 0xFF);
}

std::vector<std::uint8_t> cifar_records(std::size_t first, const std::vector<std::vector<std::uint8_t>>& labels) {
  std::vector<std::uint8_t> out;
  for (std::size_t k = 0; k < labels.size(); ++k) {
    out.insert(out.end(), labels[k].begin(), labels[k].end());
    for (std::size_t c = 0; c < 3; ++c) {
      for (std::size_t y = 0; y < 32; ++y) {
        for (std::size_t x = 0; x < 32; ++x) out.push_back(cifar_pixel(first + k, c, y, x));
      }
    }
  }
  return out;
}

void check_cifar_pixels(const Dataset& d) {
  ASSERT_EQ(d.images.shape(), (mpsim::Shape{d.size(), 3, 32, 32}));
  for (std::size_t r = 0; r < d.size(); ++r) {
    for (std::size_t c = 0; c < 3; ++c) {
      for (std::size_t y = 0; y < 32; ++y) {
        for (std::size_t x = 0; x < 32; ++x) {
          ASSERT_EQ(d.image(r)[(c * 32 + y) * 32 + x], unit(cifar_pixel(r, c, y, x))) << r << " " << c << " " << y << " " << x;
        }
      }
    }
  }
}

TEST_F(DataFiles, Cifar10LoadsBatchesInOrder) {
  // Batch b holds records 2b-2 and 2b-1 (labels 2b-2 and 2b-1 mod 10).
  for (std::size_t b = 1; b <= 5; ++b) {
    const std::size_t r = 2 * (b - 1);
    write_bytes(path("data_batch_" + std::to_string(b) + ".bin"),
                cifar_records(r, {{static_cast<std::uint8_t>(r % 10)}, {static_cast<std::uint8_t>((r + 1) % 10)}}));
  }
  write_bytes(path("test_batch.bin"), cifar_records(0, {{9}, {0}, {4}}));
  const Dataset train = mpsim::load_cifar10(dir_.string(), Split::train);
  EXPECT_EQ(train.size(), 10u);
  EXPECT_EQ(train.labels, (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(train.num_classes, 10u);
  EXPECT_EQ(train.name, "cifar10/train");
  check_cifar_pixels(train);
  const Dataset test = mpsim::load_dataset("cifar10", dir_.string(), Split::test);
  EXPECT_EQ(test.labels, (std::vector<std::uint32_t>{9, 0, 4}));
  check_cifar_pixels(test);
}

TEST_F(DataFiles, Cifar10ErrorsNameFileAndFault) {
  for (std::size_t b = 1; b <= 5; ++b) write_bytes(path("data_batch_" + std::to_string(b) + ".bin"), cifar_records(0, {{1}}));
  // Truncated: one byte short of two records.
  std::vector<std::uint8_t> t = cifar_records(0, {{1}, {2}});
  t.pop_back();
  write_bytes(path("test_batch.bin"), t);
  expect_error<DataError>([&] { mpsim::load_cifar10(dir_.string(), Split::test); },
                          {"CIFAR-10", path("test_batch.bin"), "6145 bytes", "not a multiple of the 3073-byte record",
                           "truncated"});
  write_bytes(path("test_batch.bin"), {});
  expect_error<DataError>([&] { mpsim::load_cifar10(dir_.string(), Split::test); }, {path("test_batch.bin"), "empty"});
  write_bytes(path("test_batch.bin"), cifar_records(0, {{1}, {10}}));
  expect_error<DataError>([&] { mpsim::load_cifar10(dir_.string(), Split::test); },
                          {path("test_batch.bin"), "label 10", "record 1"});
  fs::remove(path("data_batch_3.bin"));
  expect_error<DataError>([&] { mpsim::load_cifar10(dir_.string(), Split::train); },
                          {path("data_batch_3.bin"), "cannot open"});
}

TEST_F(DataFiles, Cifar100FineOrCoarseLabels) {
  write_bytes(path("train.bin"), cifar_records(0, {{3, 77}, {19, 99}, {0, 0}}));
  write_bytes(path("test.bin"), cifar_records(0, {{5, 12}}));
  const Dataset fine = mpsim::load_cifar100(dir_.string(), Split::train);
  EXPECT_EQ(fine.labels, (std::vector<std::uint32_t>{77, 99, 0}));
  EXPECT_EQ(fine.num_classes, 100u);
  check_cifar_pixels(fine);
  const Dataset coarse = mpsim::load_dataset("cifar100-coarse", dir_.string(), Split::train);
  EXPECT_EQ(coarse.labels, (std::vector<std::uint32_t>{3, 19, 0}));
  EXPECT_EQ(coarse.num_classes, 20u);
  EXPECT_EQ(mpsim::load_cifar100(dir_.string(), Split::test).labels, (std::vector<std::uint32_t>{12}));

  // A coarse label out of range is corruption even when the fine labels are used.
  write_bytes(path("train.bin"), cifar_records(0, {{3, 77}, {20, 5}}));
  expect_error<DataError>([&] { mpsim::load_cifar100(dir_.string(), Split::train); },
                          {"CIFAR-100", path("train.bin"), "label 20", "record 1", "20 classes"});
  write_bytes(path("train.bin"), cifar_records(0, {{3, 100}}));
  expect_error<DataError>([&] { mpsim::load_cifar100(dir_.string(), Split::train, mpsim::CifarLabels::coarse); },
                          {path("train.bin"), "label 100", "100 classes"});
  std::vector<std::uint8_t> t = cifar_records(0, {{1, 1}});
  t.resize(3073);  // a CIFAR-10-sized record in a CIFAR-100 file
  write_bytes(path("test.bin"), t);
  expect_error<DataError>([&] { mpsim::load_cifar100(dir_.string(), Split::test); },
                          {path("test.bin"), "3074-byte record"});
}

TEST(LoadDataset, UnknownNameOrMissingDirectory) {
  expect_error<std::invalid_argument>([] { mpsim::load_dataset("imagenet", "/tmp", Split::train); }, {"imagenet"});
  expect_error<std::invalid_argument>([] { mpsim::load_dataset("cifar10", "", Split::train); },
                                      {"cifar10", "no default location"});
}

// ---- shuffling ---------------------------------------------------------------------------

// The documented recipe, rebuilt from the raw Philox block (mpsim/rng.h: counter (g lo, g hi,
// stream, word), key (seed lo, seed hi), output word index mod 4) and Lemire's method.
std::uint32_t philox_word(std::uint64_t seed, std::uint32_t stream, std::uint64_t index, std::uint32_t word) {
  const std::uint64_t g = index / 4;
  const auto block = mpsim::philox4x32_10(
      {static_cast<std::uint32_t>(g), static_cast<std::uint32_t>(g >> 32), stream, word},
      {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
  return block[index % 4];
}

std::vector<std::size_t> oracle_shuffle(std::size_t n, std::uint64_t seed, std::uint64_t epoch) {
  std::vector<std::size_t> p(n);
  std::iota(p.begin(), p.end(), 0);
  for (std::size_t i = n; i-- > 1;) {
    const std::uint64_t range = i + 1;
    const std::uint64_t index = epoch * 4294967296ull + i;
    std::uint64_t j = 0;
    for (std::uint32_t w = 0;; ++w) {
      const std::uint64_t m = std::uint64_t{philox_word(seed, 0xDA7A0001u, index, w)} * range;
      if (m % 4294967296ull >= 4294967296ull % range) {  // 2^32 mod range words are rejected
        j = m / 4294967296ull;
        break;
      }
    }
    std::swap(p[i], p[j]);
  }
  return p;
}

TEST(Shuffle, MatchesTheDocumentedRecipe) {
  for (const std::uint64_t seed : {0ull, 42ull, 0x123456789abcdefull}) {
    for (const std::uint64_t epoch : {0ull, 1ull, 7ull}) {
      EXPECT_EQ(mpsim::shuffled_order(1000, seed, epoch), oracle_shuffle(1000, seed, epoch)) << seed << " " << epoch;
    }
  }
}

TEST(Shuffle, IsAPermutationDeterministicAndVaries) {
  const std::size_t n = 5000;
  const auto a = mpsim::shuffled_order(n, 7, 3);
  std::vector<std::size_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(a, mpsim::shuffled_order(n, 7, 3));
  const auto other_epoch = mpsim::shuffled_order(n, 7, 4);
  const auto other_seed = mpsim::shuffled_order(n, 8, 3);
  std::size_t same_e = 0, same_s = 0, fixed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    same_e += a[i] == other_epoch[i];
    same_s += a[i] == other_seed[i];
    fixed += a[i] == i;
  }
  // Two independent uniform permutations agree in about one position (Poisson(1)).
  EXPECT_LT(same_e, 10u);
  EXPECT_LT(same_s, 10u);
  EXPECT_LT(fixed, 10u);
  EXPECT_TRUE(mpsim::shuffled_order(0, 1, 1).empty());
  EXPECT_EQ(mpsim::shuffled_order(1, 1, 1), std::vector<std::size_t>{0});
}

// All 24 orders of 4 elements, over 12000 epochs: a chi-square test of uniformity. With 23
// degrees of freedom, P(chi2 > 60) < 1e-4; a biased shuffle (j drawn from [0, n) instead of
// [0, i]) gives chi2 in the hundreds.
TEST(Shuffle, AllOrdersEquallyLikely) {
  std::map<std::vector<std::size_t>, int> counts;
  const int trials = 12000;
  for (int e = 0; e < trials; ++e) ++counts[mpsim::shuffled_order(4, 99, static_cast<std::uint64_t>(e))];
  ASSERT_EQ(counts.size(), 24u);
  const double expected = trials / 24.0;
  double chi2 = 0;
  for (const auto& [order, c] : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 60.0);
}

TEST(Shuffle, UniformBelowRangeAndArguments) {
  const mpsim::RandomKey key{5, 77};
  std::array<int, 7> hist{};
  for (std::uint64_t i = 0; i < 7000; ++i) {
    const std::uint64_t v = mpsim::uniform_below(key, i, 7);
    ASSERT_LT(v, 7u);
    ++hist[v];
  }
  for (const int h : hist) EXPECT_NEAR(h, 1000, 150);  // ~5 sigma
  // A range near 2^32 rejects about a quarter of the words (2^32 mod 3 * 2^30 = 2^30): compare
  // with the method rebuilt from the raw Philox block, rejections included.
  const std::uint64_t big = 3ull << 30;
  int rejected = 0;
  for (std::uint64_t i = 0; i < 2000; ++i) {
    std::uint64_t want = 0;
    for (std::uint32_t w = 0;; ++w) {
      const std::uint64_t m = std::uint64_t{philox_word(5, 77, i, w)} * big;
      if (m % 4294967296ull >= 4294967296ull % big) {
        want = m / 4294967296ull;
        break;
      }
      ++rejected;
    }
    ASSERT_EQ(mpsim::uniform_below(key, i, big), want) << i;
  }
  EXPECT_GT(rejected, 300);
  EXPECT_EQ(mpsim::uniform_below(key, 3, 1), 0u);
  // n = 2^32 accepts every word: the draw is the word itself.
  EXPECT_EQ(mpsim::uniform_below(key, 3, 4294967296ull), mpsim::random_word(key, 3, 0));
  EXPECT_THROW(mpsim::uniform_below(key, 3, 0), std::invalid_argument);
  EXPECT_THROW(mpsim::uniform_below(key, 3, 4294967297ull), std::invalid_argument);
  EXPECT_THROW(mpsim::data_random_index(4294967296ull, 0), std::out_of_range);
  EXPECT_THROW(mpsim::data_random_index(0, 4294967296ull), std::out_of_range);
  EXPECT_EQ(mpsim::data_random_index(3, 5), 3 * 4294967296ull + 5);
}

// ---- augmentation ------------------------------------------------------------------------

// A C x H x W image of distinct positive values.
std::vector<float> ramp_image(std::size_t c, std::size_t h, std::size_t w) {
  std::vector<float> img(c * h * w);
  for (std::size_t i = 0; i < img.size(); ++i) img[i] = 1.0f + static_cast<float>(i);
  return img;
}

// The definition: pad by P zeros, take the H x W window at (dy, dx), mirror it if flipping.
std::vector<float> oracle_augment(const std::vector<float>& src, std::size_t ch, std::size_t h, std::size_t w,
                                  std::size_t pad, const mpsim::AugmentDraw& d) {
  const std::size_t ph = h + 2 * pad, pw = w + 2 * pad;
  std::vector<float> padded(ch * ph * pw, 0.0f);
  for (std::size_t c = 0; c < ch; ++c) {
    for (std::size_t y = 0; y < h; ++y) {
      for (std::size_t x = 0; x < w; ++x) padded[(c * ph + y + pad) * pw + x + pad] = src[(c * h + y) * w + x];
    }
  }
  std::vector<float> out(ch * h * w);
  for (std::size_t c = 0; c < ch; ++c) {
    for (std::size_t y = 0; y < h; ++y) {
      for (std::size_t x = 0; x < w; ++x) {
        const float v = padded[(c * ph + y + d.dy) * pw + x + d.dx];
        out[(c * h + y) * w + (d.flip ? w - 1 - x : x)] = v;
      }
    }
  }
  return out;
}

TEST(Augment, CropAndFlipEqualThePaddedWindow) {
  const std::size_t ch = 2, h = 5, w = 7;
  const auto src = ramp_image(ch, h, w);
  std::vector<float> dst(src.size());
  for (const std::size_t pad : {std::size_t{0}, std::size_t{1}, std::size_t{3}}) {
    for (std::size_t dy = 0; dy <= 2 * pad; ++dy) {
      for (std::size_t dx = 0; dx <= 2 * pad; ++dx) {
        for (const bool flip : {false, true}) {
          const mpsim::AugmentDraw d{dy, dx, flip};
          mpsim::augment_image(src.data(), dst.data(), ch, h, w, pad, d);
          ASSERT_EQ(dst, oracle_augment(src, ch, h, w, pad, d)) << pad << " " << dy << " " << dx << " " << flip;
        }
      }
    }
  }
  // The centre window without flip is the identity.
  mpsim::augment_image(src.data(), dst.data(), ch, h, w, 2, {2, 2, false});
  EXPECT_EQ(dst, src);
  EXPECT_THROW(mpsim::augment_image(src.data(), dst.data(), ch, h, w, 2, {5, 0, false}), std::invalid_argument);
}

TEST(Augment, FlipTwiceIsIdentity) {
  const std::size_t ch = 3, h = 4, w = 5;
  const auto src = ramp_image(ch, h, w);
  std::vector<float> once(src.size()), twice(src.size());
  mpsim::augment_image(src.data(), once.data(), ch, h, w, 0, {0, 0, true});
  EXPECT_NE(once, src);
  EXPECT_EQ(once[0], src[w - 1]);
  mpsim::augment_image(once.data(), twice.data(), ch, h, w, 0, {0, 0, true});
  EXPECT_EQ(twice, src);
}

TEST(Augment, DrawsCoverTheRangeAndFlipAtTheStatedRate) {
  const mpsim::Augment aug{.crop_padding = 4, .flip_probability = 0.5};
  const std::size_t n = 20000;
  std::array<std::size_t, 9> ys{}, xs{};
  std::size_t flips = 0, differs_next_epoch = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto d = mpsim::augment_draw(aug, 11, 2, i);
    ASSERT_LE(d.dy, 8u);
    ASSERT_LE(d.dx, 8u);
    ++ys[d.dy];
    ++xs[d.dx];
    flips += d.flip;
    const auto again = mpsim::augment_draw(aug, 11, 2, i);
    ASSERT_TRUE(again.dy == d.dy && again.dx == d.dx && again.flip == d.flip);  // a pure function
    const auto next = mpsim::augment_draw(aug, 11, 3, i);
    differs_next_epoch += next.dy != d.dy || next.dx != d.dx || next.flip != d.flip;
  }
  // Each offset has probability 1/9: 2222 expected, sigma about 44; 5 sigma bounds.
  for (std::size_t k = 0; k < 9; ++k) {
    EXPECT_NEAR(static_cast<double>(ys[k]), n / 9.0, 225.0) << k;
    EXPECT_NEAR(static_cast<double>(xs[k]), n / 9.0, 225.0) << k;
  }
  // Flip rate 0.5, sigma = sqrt(0.25 / n) = 0.0035: within 5 sigma.
  EXPECT_NEAR(static_cast<double>(flips) / n, 0.5, 0.018);
  // A new epoch re-draws: the same triple again has probability 1/162.
  EXPECT_GT(differs_next_epoch, n * 9 / 10);

  std::size_t rare = 0;
  for (std::size_t i = 0; i < n; ++i) rare += mpsim::augment_draw({.flip_probability = 0.1}, 5, 0, i).flip;
  EXPECT_NEAR(static_cast<double>(rare) / n, 0.1, 0.011);  // sigma 0.0021
  EXPECT_TRUE(mpsim::augment_draw({.flip_probability = 1.0}, 5, 0, 17).flip);
  EXPECT_FALSE(mpsim::augment_draw({.crop_padding = 2}, 5, 0, 17).flip);
  EXPECT_THROW(mpsim::augment_draw({.flip_probability = 1.5}, 5, 0, 0), std::invalid_argument);
}

// ---- data sets in memory: batches, loader, subsets, padding, statistics --------------------

Dataset synthetic(std::size_t n, std::size_t ch, std::size_t h, std::size_t w, std::size_t classes) {
  Dataset d;
  d.name = "synthetic";
  d.num_classes = classes;
  d.images = mpsim::Tensor({n, ch, h, w});
  const auto bytes = some_bytes(d.images.size(), 3);
  for (std::size_t i = 0; i < bytes.size(); ++i) d.images[i] = unit(bytes[i]);
  for (std::size_t i = 0; i < n; ++i) d.labels.push_back(static_cast<std::uint32_t>((i * 7 + i / 3) % classes));
  return d;
}

TEST(Batch, GathersAugmentsAndNormalizes) {
  const Dataset d = synthetic(20, 3, 6, 6, 4);
  const std::vector<std::size_t> idx{5, 0, 19, 5};
  mpsim::BatchOptions plain;
  const mpsim::Batch b = mpsim::make_batch(d, idx, plain, 0);
  EXPECT_EQ(b.images.shape(), (mpsim::Shape{4, 3, 6, 6}));
  EXPECT_EQ(b.indices, idx);
  for (std::size_t k = 0; k < idx.size(); ++k) {
    EXPECT_EQ(b.labels[k], d.labels[idx[k]]);
    EXPECT_EQ(std::memcmp(b.images.data() + k * 108, d.image(idx[k]), 108 * sizeof(float)), 0) << k;
  }

  mpsim::BatchOptions aug{.augment = {.crop_padding = 2, .flip_probability = 0.5},
                          .normalization = mpsim::Normalization{{0.5, 0.25, 0.125}, {0.5, 2.0, 0.3}},
                          .seed = 9};
  const mpsim::Batch a = mpsim::make_batch(d, idx, aug, 4);
  for (std::size_t k = 0; k < idx.size(); ++k) {
    const auto draw = mpsim::augment_draw(aug.augment, 9, 4, idx[k]);
    const std::vector<float> src(d.image(idx[k]), d.image(idx[k]) + 108);
    const auto want = oracle_augment(src, 3, 6, 6, 2, draw);
    for (std::size_t q = 0; q < 108; ++q) {
      const std::size_t c = q / 36;
      const float m = static_cast<float>(aug.normalization->mean[c]), s = static_cast<float>(aug.normalization->std[c]);
      ASSERT_EQ(a.images[k * 108 + q], (want[q] - m) / s) << k << " " << q;
    }
  }
  // The same sample at two batch positions gets the same augmentation (keyed by its index).
  EXPECT_EQ(std::memcmp(a.images.data(), a.images.data() + 3 * 108, 108 * sizeof(float)), 0);

  const std::vector<std::size_t> bad{20};
  EXPECT_THROW(mpsim::make_batch(d, bad, plain, 0), std::out_of_range);
  mpsim::BatchOptions wrong{.normalization = mpsim::Normalization{{0.5}, {0.5}}};
  EXPECT_THROW(mpsim::make_batch(d, idx, wrong, 0), std::invalid_argument);
}

TEST(Batch, OneAndTwoThreadsGiveTheSameBits) {
  const Dataset d = synthetic(300, 3, 12, 12, 10);
  mpsim::LoaderOptions o{.batch_size = 128,
                         .batch = {.augment = {.crop_padding = 3, .flip_probability = 0.5},
                                   .normalization = mpsim::channel_statistics(d),
                                   .seed = 1234}};
  o.batch.threads = 1;
  mpsim::DataLoader one(d, o);
  o.batch.threads = 2;
  mpsim::DataLoader two(d, o);
  for (std::uint64_t epoch = 0; epoch < 2; ++epoch) {
    for (std::size_t b = 0; b < one.batches_per_epoch(); ++b) {
      const mpsim::Batch x = one.batch(epoch, b), y = two.batch(epoch, b);
      ASSERT_EQ(x.images.shape(), y.images.shape());
      EXPECT_EQ(std::memcmp(x.images.data(), y.images.data(), x.images.size() * sizeof(float)), 0) << epoch << " " << b;
      EXPECT_EQ(x.labels, y.labels);
    }
  }
}

TEST(Loader, EpochCoversEverySampleOnce) {
  const Dataset d = synthetic(10, 1, 2, 2, 3);
  mpsim::DataLoader keep(d, {.batch_size = 4, .shuffle = true, .drop_last = false, .batch = {.seed = 3}});
  EXPECT_EQ(keep.batches_per_epoch(), 3u);
  std::vector<std::size_t> seen;
  for (std::size_t b = 0; b < 3; ++b) {
    const auto batch = keep.batch(1, b);
    EXPECT_EQ(batch.labels.size(), b < 2 ? 4u : 2u);
    seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
  }
  EXPECT_EQ(seen, mpsim::shuffled_order(10, 3, 1));
  std::sort(seen.begin(), seen.end());
  for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_THROW(keep.batch(1, 3), std::out_of_range);
  // Asking for an earlier epoch again gives its batches again.
  const auto e0 = keep.batch(0, 1).indices;
  (void)keep.batch(5, 0);
  EXPECT_EQ(keep.batch(0, 1).indices, e0);

  mpsim::DataLoader drop(d, {.batch_size = 4, .shuffle = false, .drop_last = true});
  EXPECT_EQ(drop.batches_per_epoch(), 2u);
  EXPECT_EQ(drop.batch(0, 1).indices, (std::vector<std::size_t>{4, 5, 6, 7}));
  EXPECT_THROW(mpsim::DataLoader(d, {.batch_size = 0}), std::invalid_argument);
}

TEST(Subset, FirstAndStratified) {
  const Dataset d = synthetic(100, 1, 2, 2, 10);
  const Dataset first = mpsim::subset(d, 7);
  EXPECT_EQ(first.size(), 7u);
  EXPECT_EQ(std::vector<std::uint32_t>(d.labels.begin(), d.labels.begin() + 7), first.labels);
  EXPECT_EQ(std::memcmp(first.images.data(), d.images.data(), 7 * 4 * sizeof(float)), 0);

  const Dataset s = mpsim::subset(d, 25, mpsim::SubsetMode::stratified);
  EXPECT_EQ(s.class_counts(), (std::vector<std::size_t>{3, 3, 3, 3, 3, 2, 2, 2, 2, 2}));
  // The first samples of each class, in file order: recompute the selection independently.
  std::vector<std::size_t> want;
  std::vector<std::size_t> taken(10, 0);
  for (std::size_t i = 0; i < d.size(); ++i) {
    const std::uint32_t c = d.labels[i];
    if (taken[c] < (c < 5 ? 3u : 2u)) {
      ++taken[c];
      want.push_back(i);
    }
  }
  ASSERT_EQ(want.size(), 25u);
  for (std::size_t k = 0; k < 25; ++k) {
    EXPECT_EQ(s.labels[k], d.labels[want[k]]);
    EXPECT_EQ(s.image(k)[0], d.image(want[k])[0]);
  }
  EXPECT_THROW(mpsim::subset(d, 101), std::invalid_argument);
  Dataset skewed = synthetic(10, 1, 2, 2, 2);
  std::fill(skewed.labels.begin(), skewed.labels.end(), 0u);
  skewed.labels[0] = 1;
  expect_error<std::invalid_argument>([&] { mpsim::subset(skewed, 4, mpsim::SubsetMode::stratified); },
                                      {"class 1 has 1 samples, needs 2"});
  const std::vector<std::size_t> pick{9, 2};
  EXPECT_EQ(mpsim::subset(d, pick).labels, (std::vector<std::uint32_t>{d.labels[9], d.labels[2]}));
}

TEST(Pad, CentresTheImage) {
  const Dataset d = synthetic(3, 2, 28, 28, 10);
  const Dataset p = mpsim::pad_images(d, 32, 32);
  EXPECT_EQ(p.images.shape(), (mpsim::Shape{3, 2, 32, 32}));
  EXPECT_EQ(p.labels, d.labels);
  for (std::size_t n = 0; n < 3; ++n) {
    for (std::size_t c = 0; c < 2; ++c) {
      for (std::size_t y = 0; y < 32; ++y) {
        for (std::size_t x = 0; x < 32; ++x) {
          const bool inside = y >= 2 && y < 30 && x >= 2 && x < 30;
          const float want = inside ? d.image(n)[(c * 28 + y - 2) * 28 + x - 2] : 0.0f;
          ASSERT_EQ(p.image(n)[(c * 32 + y) * 32 + x], want);
        }
      }
    }
  }
  EXPECT_THROW(mpsim::pad_images(d, 27, 32), std::invalid_argument);
}

TEST(Statistics, KnownMeanAndDeviation) {
  Dataset d = synthetic(4, 2, 2, 2, 2);
  // Channel 0: all 0.5 (std 0). Channel 1: 0 and 1 alternately (mean 0.5, population std 0.5).
  for (std::size_t n = 0; n < 4; ++n) {
    for (std::size_t k = 0; k < 4; ++k) {
      d.images[n * 8 + k] = 0.5f;
      d.images[n * 8 + 4 + k] = static_cast<float>(k % 2);
    }
  }
  const auto s = mpsim::channel_statistics(d);
  EXPECT_EQ(s.mean, (std::vector<double>{0.5, 0.5}));
  EXPECT_EQ(s.std, (std::vector<double>{0.0, 0.5}));
  // A zero deviation cannot normalize.
  mpsim::Tensor t({1, 2, 2, 2});
  EXPECT_THROW(mpsim::normalize(t, s), std::invalid_argument);
}

// ---- the real Fashion-MNIST (Debian's fashion-mnist package) ---------------------------

TEST(FashionMnist, RealFilesWhenInstalled) {
  if (!fs::exists(mpsim::kDefaultFashionMnistDir)) GTEST_SKIP() << mpsim::kDefaultFashionMnistDir << " not installed";
  const Dataset train = mpsim::load_fashion_mnist(Split::train);
  const Dataset test = mpsim::load_fashion_mnist(Split::test);
  EXPECT_EQ(train.images.shape(), (mpsim::Shape{60000, 1, 28, 28}));
  EXPECT_EQ(test.images.shape(), (mpsim::Shape{10000, 1, 28, 28}));
  EXPECT_EQ(train.num_classes, 10u);
  EXPECT_EQ(train.class_counts(), std::vector<std::size_t>(10, 6000));
  EXPECT_EQ(test.class_counts(), std::vector<std::size_t>(10, 1000));
  const auto [lo, hi] = std::minmax_element(train.images.values().begin(), train.images.values().end());
  EXPECT_EQ(*lo, 0.0f);
  EXPECT_EQ(*hi, 1.0f);
  // The widely quoted statistics of the training images: mean 0.2860, std 0.3530.
  const auto s = mpsim::channel_statistics(train);
  EXPECT_NEAR(s.mean[0], 0.2860, 5e-4);
  EXPECT_NEAR(s.std[0], 0.3530, 5e-4);
}

}  // namespace
