// MNIST-style data sets from IDX image and label files (the reader is mpsim/idx.h).
#include <filesystem>

#include "mpsim/data.h"
#include "src/data/pixels.h"

namespace mpsim {

namespace {

std::string dims_text(const std::vector<std::size_t>& dims) { return to_string(Shape(dims.begin(), dims.end())); }

// The standard file name in `dir`, plain if present, else with ".gz".
std::string find_file(const std::string& dir, const std::string& base) {
  const std::filesystem::path plain = std::filesystem::path(dir) / base;
  std::filesystem::path gz = plain;
  gz += ".gz";
  std::error_code ec;
  if (std::filesystem::exists(plain, ec)) return plain.string();
  if (std::filesystem::exists(gz, ec)) return gz.string();
  throw DataError("IDX data set in '" + dir + "': missing file '" + plain.string() + "' (nor '" + gz.string() +
                  "' exists)");
}

Dataset load_standard(const std::string& dir, Split split, const std::string& kind) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  return load_idx(find_file(dir, prefix + "-images-idx3-ubyte"), find_file(dir, prefix + "-labels-idx1-ubyte"), 10,
                  kind + "/" + to_string(split));
}

}  // namespace

Dataset load_idx(const std::string& images_path, const std::string& labels_path, std::size_t num_classes,
                 const std::string& name) {
  const IdxArray img = read_idx(images_path);
  if (img.dims.size() != 3 && img.dims.size() != 4) {
    throw DataError("IDX file '" + images_path + "': expected images [N, H, W] or [N, C, H, W], got dimensions " +
                    dims_text(img.dims));
  }
  const IdxArray lab = read_idx(labels_path);
  if (lab.dims.size() != 1) {
    throw DataError("IDX file '" + labels_path + "': expected labels [N], got dimensions " + dims_text(lab.dims));
  }
  const std::size_t n = img.dims[0];
  if (lab.dims[0] != n) {
    throw DataError("IDX files '" + images_path + "' and '" + labels_path + "': " + std::to_string(n) +
                    " images but " + std::to_string(lab.dims[0]) + " labels");
  }
  const std::size_t c = img.dims.size() == 4 ? img.dims[1] : 1;
  const std::size_t h = img.dims[img.dims.size() - 2], w = img.dims.back();
  if (c == 0 || h == 0 || w == 0) {
    throw DataError("IDX file '" + images_path + "': empty images, dimensions " + dims_text(img.dims));
  }
  Dataset out;
  out.name = name;
  out.num_classes = num_classes;
  out.labels.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t l = lab.data[i];
    if (l >= num_classes) {
      throw DataError("IDX file '" + labels_path + "': label " + std::to_string(l) + " of sample " + std::to_string(i) +
                      " is out of range for " + std::to_string(num_classes) + " classes");
    }
    out.labels[i] = l;
  }
  out.images = Tensor({n, c, h, w});
  detail::bytes_to_unit(img.data.data(), out.images.data(), img.data.size());
  return out;
}

Dataset load_mnist(const std::string& dir, Split split) { return load_standard(dir, split, "mnist"); }

Dataset load_fashion_mnist(const std::string& dir, Split split) { return load_standard(dir, split, "fashion-mnist"); }

Dataset load_fashion_mnist(Split split) { return load_fashion_mnist(kDefaultFashionMnistDir, split); }

}  // namespace mpsim
