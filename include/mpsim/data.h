// Data sets for training: images as float32 [N, C, H, W] in [0, 1] with integer labels, the
// loaders for the standard binary files (IDX: MNIST, Fashion-MNIST; CIFAR-10/100 binary),
// per-channel normalization, deterministic shuffling and augmentation, and batching.
//
// Determinism: every random choice (the order of an epoch, a sample's crop offset and flip)
// is a pure function of (seed, epoch, sample index) through the counter-based Philox
// generator (mpsim/rng.h), so a run resumed at any step sees the same batches, and the result
// is the same for any thread count. The recipes are spelled out below, so
// another implementation can reproduce them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mpsim/idx.h"  // DataError: every loader failure (the message names the file)
#include "mpsim/round.h"
#include "mpsim/tensor.h"

namespace mpsim {

// Where Debian's fashion-mnist package installs the four gzip IDX files.
inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

enum class Split { train, test };
const char* to_string(Split split);

struct Dataset {
  std::string name;                  // "fashion-mnist/train", "cifar10/test[:1000]", ...
  Tensor images;                     // [N, C, H, W], byte / 255 in float32
  std::vector<std::uint32_t> labels; // N labels, each < num_classes
  std::size_t num_classes = 0;

  std::size_t size() const { return labels.size(); }
  std::size_t channels() const { return images.dim(1); }
  std::size_t height() const { return images.dim(2); }
  std::size_t width() const { return images.dim(3); }
  // C * H * W, the number of floats of one image.
  std::size_t image_size() const;
  const float* image(std::size_t i) const { return images.data() + i * image_size(); }
  // Samples per class, indexed by label.
  std::vector<std::size_t> class_counts() const;
  // Throws std::invalid_argument naming the data set when the shapes or labels are
  // inconsistent (rank != 4, N != labels, a label >= num_classes).
  void validate() const;
};

// ---- loaders (all throw DataError naming the file and the fault) ------------------------

// An IDX image file [N, H, W] (or [N, C, H, W]) and an IDX label file [N], plain or gzip.
// Errors: those of read_idx, the wrong rank, N differing between the two files, a label
// >= num_classes (with its index).
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 std::size_t num_classes, const std::string& name);

// MNIST and Fashion-MNIST under their standard names in `dir`:
// {train,t10k}-{images-idx3,labels-idx1}-ubyte, each plain or with ".gz" (plain is tried
// first). 10 classes.
Dataset load_mnist(const std::string& dir, Split split);
Dataset load_fashion_mnist(const std::string& dir, Split split);
Dataset load_fashion_mnist(Split split);  // from kDefaultFashionMnistDir

// CIFAR-10 binary version ("cifar-10-batches-bin"): data_batch_1.bin .. data_batch_5.bin for
// train, test_batch.bin for test; records of 1 label byte + 3072 pixel bytes (the R, G and B
// planes of a 32x32 image, row-major). Errors: a missing file, a size that is not a multiple
// of the record size (truncated), a label >= 10 (with its record number).
Dataset load_cifar10(const std::string& dir, Split split);

// CIFAR-100 binary version ("cifar-100-binary"): train.bin / test.bin, records of a coarse
// label byte (20 superclasses), a fine label byte (100 classes) and 3072 pixel bytes.
enum class CifarLabels { fine, coarse };
Dataset load_cifar100(const std::string& dir, Split split, CifarLabels labels = CifarLabels::fine);

// By name: "mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse". An empty dir
// means the default location (only Fashion-MNIST has one). Throws std::invalid_argument for an
// unknown name or a missing dir where there is no default.
Dataset load_dataset(const std::string& kind, const std::string& dir, Split split);

// ---- reshaping a data set --------------------------------------------------------------

enum class SubsetMode {
  first,       // the first `count` samples in file order
  stratified,  // per class c the first q_c samples of class c in file order, kept in file
               // order, q_c = floor(count / K) + (c < count mod K ? 1 : 0) for K classes
};
// Throws std::invalid_argument when count > size(), or (stratified) a class has fewer than q_c
// samples. count == size() with `first` is a copy.
Dataset subset(const Dataset& data, std::size_t count, SubsetMode mode = SubsetMode::first);
// The samples at `indices`, in that order; throws std::out_of_range for an index past the end.
Dataset subset(const Dataset& data, std::span<const std::size_t> indices);

// Zero-pads every image to height x width, centred (the extra row/column of an odd difference
// goes to the bottom/right): 28x28 -> 32x32 for VGG. Throws std::invalid_argument when the
// target is smaller than the images.
Dataset pad_images(const Dataset& data, std::size_t height, std::size_t width);

// ---- normalization ---------------------------------------------------------------------

// Per-channel mean and standard deviation. Applied like torchvision's Normalize:
// y = (x - float(mean[c])) / float(std[c]) in float32, after augmentation (so the padding of a
// random crop is 0 in pixel space, as with RandomCrop before ToTensor/Normalize).
struct Normalization {
  std::vector<double> mean;
  std::vector<double> std;
};
// The statistics of `data` over all samples and pixels of each channel, summed in double in
// sample order (two passes: the mean, then the mean squared deviation). `std` is the
// population deviation (divides by the count, numpy's default), not the unbiased one.
Normalization channel_statistics(const Dataset& data);
// Normalizes a [B, C, H, W] tensor in place (parallel over samples; threads 0: OpenMP's
// default); throws std::invalid_argument when the channel count differs or a std is not
// positive.
void normalize(Tensor& images, const Normalization& norm, int threads = 0);

// ---- deterministic randomness ----------------------------------------------------------

// The Philox streams of the data pipeline, one per purpose, far from the streams of the model
// (parameter init uses streams 0, 1, ...; layers use 4*layer+role and 0x80000000|layer).
namespace data_stream {
inline constexpr std::uint32_t shuffle = 0xDA7A0001u;
inline constexpr std::uint32_t crop_y = 0xDA7A0002u;
inline constexpr std::uint32_t crop_x = 0xDA7A0003u;
inline constexpr std::uint32_t flip = 0xDA7A0004u;
}  // namespace data_stream

// The Philox element index of sample (or position) i at `epoch`: epoch * 2^32 + i. Throws
// std::out_of_range when i or epoch does not fit in 32 bits.
std::uint64_t data_random_index(std::uint64_t epoch, std::uint64_t i);

// A uniform integer in [0, n), n >= 1, without bias: Lemire's multiply-and-shift with
// rejection (x * n >> 32 for a 32-bit word x; a draw whose low half is below 2^32 mod n is
// rejected). Attempt k reads random_word(key, index, k), so each draw stays a pure function of
// (key, index). Throws std::invalid_argument for n == 0 or n > 2^32.
std::uint64_t uniform_below(const RandomKey& key, std::uint64_t index, std::uint64_t n);

// The order of the samples in `epoch`: a permutation of [0, n) by Fisher-Yates, for
// i = n-1 down to 1: swap(p[i], p[uniform_below({seed, shuffle}, data_random_index(epoch, i),
// i + 1)]), starting from the identity. Identical on every machine and thread count.
std::vector<std::size_t> shuffled_order(std::size_t n, std::uint64_t seed, std::uint64_t epoch);

// ---- augmentation ----------------------------------------------------------------------

struct Augment {
  std::size_t crop_padding = 0;  // P: pad by P zeros on every side, crop back to H x W (0: off)
  double flip_probability = 0;   // horizontal flip with this probability (0: off; 0.5 usual)
  bool enabled() const { return crop_padding > 0 || flip_probability > 0; }
};

// The random choices for one sample. The crop window's top-left corner in the padded image is
// (dy, dx), each in [0, 2P]; (P, P) is the identity crop.
struct AugmentDraw {
  std::size_t dy = 0, dx = 0;
  bool flip = false;
};
// For sample `index` (its index in the data set, not its batch position) at `epoch`:
// dy = uniform_below({seed, crop_y}, r, 2P+1), dx likewise with crop_x,
// flip = word 0 of {seed, flip} at r < flip_probability * 2^32, r = data_random_index(epoch, index).
AugmentDraw augment_draw(const Augment& aug, std::uint64_t seed, std::uint64_t epoch, std::uint64_t index);
// dst[c, y, x] = src[c, y + dy - P, x' + dx - P] (0 outside the image) with x' = W-1-x when
// flipping, else x: crop first, then flip. src and dst are C*H*W floats and must not overlap.
void augment_image(const float* src, float* dst, std::size_t channels, std::size_t height,
                   std::size_t width, std::size_t padding, const AugmentDraw& draw);

// ---- batches ---------------------------------------------------------------------------

struct BatchOptions {
  Augment augment{};                           // off by default (evaluation)
  std::optional<Normalization> normalization{};  // applied after augmentation
  std::uint64_t seed = 0;                      // the run's seed
  int threads = 0;                             // 0: OpenMP's default; never changes results
};

struct Batch {
  Tensor images;                      // [B, C, H, W]
  std::vector<std::uint32_t> labels;  // B
  std::vector<std::size_t> indices;   // the data set index of each sample
};

// The samples at `indices` (augmented for `epoch`, then normalized), in that order. Parallel
// over samples; every sample's values depend only on (seed, epoch, its index).
Batch make_batch(const Dataset& data, std::span<const std::size_t> indices,
                 const BatchOptions& options, std::uint64_t epoch);

struct LoaderOptions {
  std::size_t batch_size = 128;
  bool shuffle = true;     // shuffled_order(n, batch.seed, epoch); else file order
  bool drop_last = false;  // drop a last batch smaller than batch_size
  BatchOptions batch{};
};

// Batches of one epoch: batch b holds positions [b*B, min((b+1)*B, N)) of the epoch's order.
// batch(epoch, b) is a pure function of its arguments, so a resumed run picks up at any step.
// Keeps a reference to `data`, which must outlive the loader. Not thread-safe (it caches the
// order of the last epoch it was asked for).
class DataLoader {
 public:
  // Throws std::invalid_argument for batch_size 0.
  DataLoader(const Dataset& data, LoaderOptions options);

  const Dataset& dataset() const { return data_; }
  const LoaderOptions& options() const { return options_; }
  std::size_t batches_per_epoch() const;
  // Throws std::out_of_range for b >= batches_per_epoch().
  Batch batch(std::uint64_t epoch, std::size_t b);
  const std::vector<std::size_t>& order(std::uint64_t epoch);

 private:
  const Dataset& data_;
  LoaderOptions options_;
  std::optional<std::uint64_t> cached_epoch_;
  std::vector<std::size_t> order_;
};

}  // namespace mpsim
