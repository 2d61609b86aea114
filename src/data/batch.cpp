// Batches: gather, augment and normalize the samples of one step; the epoch loader.
#include <omp.h>

#include <algorithm>
#include <stdexcept>

#include "mpsim/data.h"

namespace mpsim {

Batch make_batch(const Dataset& data, std::span<const std::size_t> indices, const BatchOptions& options,
                 std::uint64_t epoch) {
  // Only the shape: a full validate() scans every label, too slow to repeat for every batch
  // (the loader validates once).
  if (data.images.rank() != 4 || data.images.dim(0) != data.labels.size()) data.validate();
  const std::size_t b = indices.size(), ch = data.channels(), h = data.height(), w = data.width();
  const std::size_t sz = data.image_size();
  Batch out;
  out.images = Tensor({b, ch, h, w});
  out.labels.resize(b);
  out.indices.assign(indices.begin(), indices.end());
  // Everything that can throw is checked here, before the parallel loop (an exception must not
  // leave an OpenMP region).
  for (const std::size_t i : indices) {
    if (i >= data.size()) {
      throw std::out_of_range("batch of data set '" + data.name + "': index " + std::to_string(i) +
                              " is past its " + std::to_string(data.size()) + " samples");
    }
    (void)data_random_index(epoch, i);
  }
  const Augment& aug = options.augment;
  if (aug.enabled()) (void)augment_draw(aug, options.seed, epoch, 0);  // validates the options
  const int threads = options.threads > 0 ? options.threads : omp_get_max_threads();
  const auto count = static_cast<std::ptrdiff_t>(b);
  // Samples are independent: each thread writes whole images, so results cannot depend on
  // the thread count.
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::ptrdiff_t k = 0; k < count; ++k) {
    const auto s = static_cast<std::size_t>(k);
    const std::size_t i = indices[s];
    float* dst = out.images.data() + s * sz;
    if (aug.enabled()) {
      augment_image(data.image(i), dst, ch, h, w, aug.crop_padding, augment_draw(aug, options.seed, epoch, i));
    } else {
      std::copy(data.image(i), data.image(i) + sz, dst);
    }
    out.labels[s] = data.labels[i];
  }
  if (options.normalization) normalize(out.images, *options.normalization, options.threads);
  return out;
}

DataLoader::DataLoader(const Dataset& data, LoaderOptions options) : data_(data), options_(std::move(options)) {
  if (options_.batch_size == 0) throw std::invalid_argument("data loader for '" + data.name + "': batch size 0");
  data_.validate();
}

std::size_t DataLoader::batches_per_epoch() const {
  const std::size_t n = data_.size(), bs = options_.batch_size;
  return options_.drop_last ? n / bs : (n + bs - 1) / bs;
}

const std::vector<std::size_t>& DataLoader::order(std::uint64_t epoch) {
  if (cached_epoch_ != epoch) {
    if (options_.shuffle) {
      order_ = shuffled_order(data_.size(), options_.batch.seed, epoch);
    } else {
      order_.resize(data_.size());
      for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    }
    cached_epoch_ = epoch;
  }
  return order_;
}

Batch DataLoader::batch(std::uint64_t epoch, std::size_t b) {
  const std::size_t nb = batches_per_epoch();
  if (b >= nb) {
    throw std::out_of_range("data loader for '" + data_.name + "': batch " + std::to_string(b) + " of an epoch of " +
                            std::to_string(nb) + " batches");
  }
  const std::vector<std::size_t>& ord = order(epoch);
  const std::size_t begin = b * options_.batch_size;
  const std::size_t end = std::min(begin + options_.batch_size, ord.size());
  return make_batch(data_, std::span<const std::size_t>(ord).subspan(begin, end - begin), options_.batch, epoch);
}

}  // namespace mpsim
