#include "src/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace mpsim::detail {

namespace fs = std::filesystem;

namespace {

std::string errno_text(int e) { return std::strerror(e); }

// Writes all of `bytes` to fd; returns 0 or the errno of the failing write.
int write_all(int fd, std::string_view bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace

void sync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

void write_file_atomically(const fs::path& path, std::string_view bytes) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  // A hidden name unique to this call (mkstemp), so concurrent writers never share one.
  // (Built with append: GCC 12 reports a false -Wrestrict for "." + std::string.)
  std::string tmp_name(1, '.');
  tmp_name.append(path.filename().string()).append(".tmp-XXXXXX");
  std::string tmp = (dir / tmp_name).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    throw AtomicWriteError("cannot create a temporary file in '" + dir.string() + "': " + errno_text(errno));
  }
  // mkstemp creates the file readable by its owner only; results are ordinary files.
  int err = ::fchmod(fd, 0644) != 0 ? errno : 0;
  if (err == 0) err = write_all(fd, bytes);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    throw AtomicWriteError("cannot write '" + tmp + "': " + errno_text(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    throw AtomicWriteError("cannot rename '" + tmp + "' to '" + path.string() + "': " + errno_text(err));
  }
  sync_directory(dir);
}

}  // namespace mpsim::detail
